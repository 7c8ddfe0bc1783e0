//! The TOML configuration (`ringway run --config FILE`) and the embedded default.
//!
//! Every error names the key and the line: unknown keys and type errors come from serde with
//! the span toml reports; checks made after parsing use the spans kept with `Spanned`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ringway_proto::route::{Route, RouteTable};
use ringway_proto::tunnel::TunnelConfig;
use serde::Deserialize;
use toml::Spanned;

/// Worker threads: a count, or the CPUs to pin one worker each to.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Workers {
    Count(usize),
    Cpus(Vec<usize>),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "d_max_header")]
    pub max_header_bytes: usize,
    #[serde(default = "d_max_message")]
    pub max_message_bytes: u64,
    /// Unsent bytes one direction of a tunnel may hold before its source is paused.
    #[serde(default = "d_backpressure")]
    pub backpressure_bytes: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "d_handshake")]
    pub handshake_ms: u64,
    #[serde(default = "d_connect")]
    pub connect_ms: u64,
    #[serde(default = "d_close")]
    pub close_ms: u64,
    #[serde(default = "d_shutdown")]
    pub shutdown_ms: u64,
    /// A socket with bytes queued that makes no progress for this long is closed.
    #[serde(default = "d_send_stall")]
    pub send_stall_ms: u64,
}

/// io_uring sizing per worker.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Engine {
    #[serde(default = "d_ring_entries")]
    pub ring_entries: u32,
    /// Provided receive buffers per worker (a power of two, at most 32768).
    #[serde(default = "d_buffers")]
    pub buffers: u16,
    /// Bytes per receive buffer.
    #[serde(default = "d_buffer_size")]
    pub buffer_size: usize,
    /// Accept each connection on the worker of the CPU that received it
    /// (SO_ATTACH_REUSEPORT_CBPF); pair with NIC queue IRQ affinity.
    #[serde(default)]
    pub steer_by_cpu: bool,
    /// Microseconds a worker polls for completions before it sleeps (0: never poll).
    #[serde(default = "d_busy_poll")]
    pub busy_poll_us: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub addr: Spanned<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub path: Spanned<String>,
    #[serde(default)]
    pub host: Option<String>,
    pub origin: Spanned<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub idle_timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    workers: Option<Workers>,
    #[serde(default)]
    limits: Option<Limits>,
    #[serde(default)]
    timeouts: Option<Timeouts>,
    #[serde(default)]
    engine: Option<Engine>,
    #[serde(default)]
    listener: Vec<Listener>,
    #[serde(default)]
    route: Vec<RouteConfig>,
}

fn d_max_header() -> usize {
    8 * 1024
}
fn d_max_message() -> u64 {
    64 * 1024 * 1024
}
fn d_backpressure() -> usize {
    1024 * 1024
}
fn d_handshake() -> u64 {
    10_000
}
fn d_connect() -> u64 {
    5_000
}
fn d_close() -> u64 {
    2_000
}
fn d_send_stall() -> u64 {
    60_000
}
fn d_shutdown() -> u64 {
    5_000
}
fn d_ring_entries() -> u32 {
    1024
}
fn d_buffers() -> u16 {
    1024
}
fn d_busy_poll() -> u64 {
    50
}
fn d_buffer_size() -> usize {
    64 * 1024
}

impl Default for Limits {
    fn default() -> Limits {
        toml::from_str("").expect("all limits have defaults")
    }
}
impl Default for Timeouts {
    fn default() -> Timeouts {
        toml::from_str("").expect("all timeouts have defaults")
    }
}
impl Default for Engine {
    fn default() -> Engine {
        toml::from_str("").expect("all engine keys have defaults")
    }
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// CPUs to pin workers to (`None`: do not pin), one worker each.
    pub cpus: Vec<Option<usize>>,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub engine: Engine,
    pub listeners: Vec<SocketAddr>,
    pub routes: RouteTable,
}

/// A configuration error, already worded for the operator (key and line).
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Config {
    /// Parses and validates `text` (the contents of `file`, named in errors).
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let msg = e.message().trim().to_string();
            match line {
                Some(l) => ConfigError(format!("{file}: line {l}: {msg}")),
                None => ConfigError(format!("{file}: {msg}")),
            }
        })?;
        let at = |span: std::ops::Range<usize>, key: &str, msg: String| {
            ConfigError(format!(
                "{file}: line {}: `{key}`: {msg}",
                line_of(text, span.start)
            ))
        };
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpus = match raw.workers {
            None => (0..ncpu).map(Some).collect(),
            Some(Workers::Count(0)) => {
                return Err(ConfigError(format!("{file}: `workers` must be at least 1")))
            }
            Some(Workers::Count(n)) => (0..n).map(|i| (n <= ncpu).then_some(i)).collect(),
            Some(Workers::Cpus(list)) if list.is_empty() => {
                return Err(ConfigError(format!("{file}: `workers` lists no CPU")))
            }
            Some(Workers::Cpus(list)) => list.into_iter().map(Some).collect(),
        };
        if raw.listener.is_empty() {
            return Err(ConfigError(format!(
                "{file}: missing `[[listener]]` (e.g. addr = \"127.0.0.1:8080\")"
            )));
        }
        let mut listeners = Vec::new();
        for l in &raw.listener {
            let addr = l.addr.get_ref().parse::<SocketAddr>().map_err(|_| {
                at(
                    l.addr.span(),
                    "listener.addr",
                    format!("{:?} is not an IP:port address", l.addr.get_ref()),
                )
            })?;
            listeners.push(addr);
        }
        let mut routes = Vec::new();
        for r in &raw.route {
            let path = r.path.get_ref();
            if !path.starts_with('/') {
                let msg = format!("{path:?} must start with '/'");
                return Err(at(r.path.span(), "route.path", msg));
            }
            let origin = resolve(r.origin.get_ref())
                .map_err(|msg| at(r.origin.span(), "route.origin", msg))?;
            let host = r.host.as_ref().map(|h| h.to_ascii_lowercase());
            let name = r.name.clone().unwrap_or_else(|| match &host {
                Some(h) => format!("{h}{path}"),
                None => path.clone(),
            });
            routes.push(Route {
                name,
                host,
                path: path.clone(),
                origin,
                idle_timeout: (r.idle_timeout_ms > 0)
                    .then(|| Duration::from_millis(r.idle_timeout_ms)),
            });
        }
        let routes = RouteTable::new(1, routes).map_err(|e| ConfigError(format!("{file}: {e}")))?;
        let engine = raw.engine.unwrap_or_default();
        if !engine.buffers.is_power_of_two() || engine.buffers > 32768 {
            return Err(ConfigError(format!(
                "{file}: `engine.buffers` must be a power of two, at most 32768"
            )));
        }
        if engine.buffer_size < 1024 || engine.buffer_size > 1 << 20 {
            return Err(ConfigError(format!(
                "{file}: `engine.buffer_size` must be between 1024 and 1048576"
            )));
        }
        Ok(Config {
            cpus,
            limits: raw.limits.unwrap_or_default(),
            timeouts: raw.timeouts.unwrap_or_default(),
            engine,
            listeners,
            routes,
        })
    }

    /// The per-tunnel settings.
    pub fn tunnel(&self) -> TunnelConfig {
        TunnelConfig {
            max_header_bytes: self.limits.max_header_bytes,
            max_payload: self.limits.max_message_bytes,
            handshake_timeout: Duration::from_millis(self.timeouts.handshake_ms),
            connect_timeout: Duration::from_millis(self.timeouts.connect_ms),
            close_timeout: Duration::from_millis(self.timeouts.close_ms),
        }
    }
}

fn resolve(origin: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = origin.parse::<SocketAddr>() {
        return Ok(a);
    }
    match origin.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("{origin:?} resolves to no address")),
        Err(e) => Err(format!("{origin:?} is not a host:port origin ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_config_parses() {
        let c = Config::parse(
            "[[listener]]\naddr = \"127.0.0.1:8080\"\n\n[[route]]\npath = \"/db\"\norigin = \"127.0.0.1:5432\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.listeners, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(c.routes.routes()[0].origin.port(), 5432);
        assert_eq!(c.tunnel().handshake_timeout, Duration::from_secs(10));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = Config::parse(
            "[[listener]]\naddr = \"127.0.0.1:1\"\nbogus = 1\n",
            "t.toml",
        )
        .unwrap_err()
        .0;
        assert!(e.contains("bogus") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let e = Config::parse("\n[[listener]]\naddr = \"nope\"\n", "t.toml")
            .unwrap_err()
            .0;
        assert!(e.contains("listener.addr") && e.contains("line 3"), "{e}");
        let e = Config::parse(
            "[[listener]]\naddr = \"127.0.0.1:1\"\n[[route]]\npath = \"db\"\norigin = \"127.0.0.1:1\"\n",
            "t.toml",
        )
        .unwrap_err()
        .0;
        assert!(e.contains("route.path") && e.contains("line 4"), "{e}");
        let e = Config::parse("[timeouts]\nhandshake_ms = \"x\"\n", "t.toml")
            .unwrap_err()
            .0;
        assert!(e.contains("line 2"), "{e}");
    }
}
