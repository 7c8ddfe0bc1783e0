//! Builds the TOML configs the tests hand to `ringway run`: one listener on `127.0.0.1:0`,
//! `workers = 1` unless a test asks otherwise, and the routes and limit/timeout sections it names.
//!
//! Invariant: every listener binds port 0 on 127.0.0.1, so parallel tests never race for a port.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// A ringway config under construction; [`ConfigToml::build`] renders it.
#[derive(Debug, Clone)]
pub struct ConfigToml {
    workers: u32,
    limits: Vec<String>,
    timeouts: Vec<String>,
    routes: Vec<(String, String)>,
    /// `tls = { ... }` of the listener, as TOML.
    tls: Option<String>,
}

impl Default for ConfigToml {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigToml {
    /// One worker, no routes, default limits and timeouts.
    pub fn new() -> Self {
        Self {
            workers: 1,
            limits: Vec::new(),
            timeouts: Vec::new(),
            routes: Vec::new(),
            tls: None,
        }
    }

    /// The common case: `/echo` routed to `origin`.
    pub fn echo(origin: SocketAddr) -> Self {
        Self::new().route("/echo", origin)
    }

    pub fn workers(mut self, n: u32) -> Self {
        self.workers = n;
        self
    }

    /// Adds a `key = value` line to `[limits]`.
    pub fn limit(mut self, key: &str, value: u64) -> Self {
        self.limits.push(format!("{key} = {value}"));
        self
    }

    /// Adds a `key = value` line to `[timeouts]` (milliseconds).
    pub fn timeout(mut self, key: &str, ms: u64) -> Self {
        self.timeouts.push(format!("{key} = {ms}"));
        self
    }

    pub fn route(mut self, path: &str, origin: SocketAddr) -> Self {
        self.routes.push((path.to_owned(), origin.to_string()));
        self
    }

    /// Makes the listener a TLS one: `tls` is the inline table's body, e.g.
    /// `cert = "/tmp/x/cert.pem", key = "/tmp/x/key.pem"`.
    pub fn tls(mut self, tls: &str) -> Self {
        self.tls = Some(tls.to_owned());
        self
    }

    pub fn build(&self) -> String {
        let mut s = format!("workers = {}\n", self.workers);
        for (name, lines) in [("limits", &self.limits), ("timeouts", &self.timeouts)] {
            if !lines.is_empty() {
                let _ = writeln!(s, "[{name}]");
                for line in lines {
                    let _ = writeln!(s, "{line}");
                }
            }
        }
        s.push_str("[[listener]]\naddr = \"127.0.0.1:0\"\n");
        if let Some(tls) = &self.tls {
            let _ = writeln!(s, "tls = {{ {tls} }}");
        }
        for (path, origin) in &self.routes {
            let _ = writeln!(s, "[[route]]\npath = \"{path}\"\norigin = \"{origin}\"");
        }
        s
    }
}
