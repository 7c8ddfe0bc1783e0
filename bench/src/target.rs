//! The `--target` URL: `tcp://HOST:PORT` (raw bytes), `ws://HOST:PORT/PATH` (WebSocket), and the
//! same two over TLS: `tls://HOST:PORT` and `wss://HOST:PORT/PATH`.
//!
//! The host is resolved once, up front; workloads then connect to the resolved address. For ws the
//! `Host` header carries `HOST:PORT` exactly as given and the request target is `/PATH` (with any
//! query string), `/` when the URL has no path. For TLS the server name checked against the
//! certificate (and sent as SNI when it is a DNS name) is `HOST` without its port or brackets.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// How bytes travel to the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Payload bytes written to the socket as they are.
    Tcp,
    /// A WebSocket upgrade, then one masked binary frame per message.
    Ws,
    /// [`Scheme::Tcp`] inside a TLS session.
    Tls,
    /// [`Scheme::Ws`] inside a TLS session.
    Wss,
}

impl Scheme {
    fn prefix(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp://",
            Scheme::Ws => "ws://",
            Scheme::Tls => "tls://",
            Scheme::Wss => "wss://",
        }
    }
}

/// A parsed and resolved `--target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    pub addr: SocketAddr,
    /// `HOST:PORT` as written in the URL (the ws `Host` header).
    pub authority: String,
    /// Request target for the ws upgrade, starting with `/`.
    pub path: String,
}

impl Target {
    /// Parses and resolves `url`.
    pub fn parse(url: &str) -> Result<Target, String> {
        let found = [Scheme::Tcp, Scheme::Ws, Scheme::Tls, Scheme::Wss]
            .into_iter()
            .find_map(|s| url.strip_prefix(s.prefix()).map(|rest| (s, rest)));
        let Some((scheme, rest)) = found else {
            return Err(format!(
                "{url}: expected tcp://HOST:PORT, ws://HOST:PORT/PATH, tls://HOST:PORT or \
                 wss://HOST:PORT/PATH"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if matches!(scheme, Scheme::Tcp | Scheme::Tls) && path != "/" {
            return Err(format!("{url}: a {} target has no path", scheme.prefix()));
        }
        let addr = authority
            .to_socket_addrs()
            .map_err(|e| format!("{url}: cannot resolve {authority:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: {authority:?} resolves to no address"))?;
        Ok(Target {
            scheme,
            addr,
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    /// WebSocket framing (ws or wss).
    pub fn is_ws(&self) -> bool {
        matches!(self.scheme, Scheme::Ws | Scheme::Wss)
    }

    /// Inside a TLS session (tls or wss).
    pub fn is_tls(&self) -> bool {
        matches!(self.scheme, Scheme::Tls | Scheme::Wss)
    }

    /// The host as the certificate names it: the authority without its port, an IPv6 address
    /// without its brackets.
    pub fn host(&self) -> &str {
        let host = match self.authority.rfind(':') {
            Some(i) if !self.authority[i..].contains(']') => &self.authority[..i],
            _ => &self.authority,
        };
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.scheme.prefix(), self.authority)?;
        if self.is_ws() {
            f.write_str(&self.path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        let t = Target::parse("tcp://127.0.0.1:5000").unwrap();
        assert_eq!(
            (t.scheme, t.addr.port(), t.path.as_str()),
            (Scheme::Tcp, 5000, "/")
        );
        assert!(!t.is_ws() && !t.is_tls());
        let w = Target::parse("ws://127.0.0.1:8080/echo?x=1").unwrap();
        assert_eq!((w.scheme, w.path.as_str()), (Scheme::Ws, "/echo?x=1"));
        assert_eq!(w.authority, "127.0.0.1:8080");
        assert_eq!(w.to_string(), "ws://127.0.0.1:8080/echo?x=1");
        assert_eq!(Target::parse("ws://127.0.0.1:1").unwrap().path, "/");
        let s = Target::parse("wss://localhost:8443/db").unwrap();
        assert!(s.is_ws() && s.is_tls());
        assert_eq!((s.host(), s.path.as_str()), ("localhost", "/db"));
        assert_eq!(s.to_string(), "wss://localhost:8443/db");
        let l = Target::parse("tls://127.0.0.1:8443").unwrap();
        assert!(!l.is_ws() && l.is_tls());
        assert_eq!(
            (l.host(), l.to_string().as_str()),
            ("127.0.0.1", "tls://127.0.0.1:8443")
        );
        assert_eq!(Target::parse("wss://[::1]:1/").unwrap().host(), "::1");
    }

    #[test]
    fn rejects_the_rest() {
        for bad in [
            "http://127.0.0.1:1",
            "https://127.0.0.1:1/",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:1/x",
            "tls://127.0.0.1:1/x",
            "wss://127.0.0.1/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
