//! The TOML configuration (`ringway run --config FILE`) and the embedded default.
//!
//! Every error names the key and the line: unknown keys and type errors come from serde with
//! the span toml reports; checks made after parsing use the spans kept with `Spanned`. Beyond
//! types, a config is refused when part of it could never take effect: a route no request can
//! match (`matchable`), two routes that are one, a CPU this process may not run on. What is
//! legal but probably a mistake (no routes at all) is a warning in [`Config::warnings`].

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use ringctl::RouteSpec;
use ringway_proto::route::{
    CheckKind, HealthCheck, OriginPool, Policy, PoolOrigin, Race, Route, RouteTable,
};
use ringway_proto::tunnel::TunnelConfig;
use serde::de::{Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::tls::{CertFiles, TlsFiles};

mod matchable;
#[cfg(test)]
mod tests;

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
    /// NAPI busy polling on the NIC queues (IORING_REGISTER_NAPI, Linux 6.9+): microseconds a
    /// waiting worker polls the receive queues of its sockets before sleeping (0: off).
    #[serde(default)]
    pub napi_busy_poll_us: u32,
    /// A worker that holds clearly more tunnels than the least-loaded one hands each fresh
    /// connection to it (IORING_OP_MSG_RING); the alternative to `steer_by_cpu`.
    #[serde(default)]
    pub balance: bool,
    /// Microseconds a worker polls for completions before it sleeps (0: never poll).
    #[serde(default = "d_busy_poll")]
    pub busy_poll_us: u64,
    /// An L4 (`mode = "tcp"`) direction whose reads reach this many bytes moves to splice(2)
    /// through a pipe, with no copy through user space (0: never splice).
    #[serde(default = "d_splice_min")]
    pub splice_min_bytes: usize,
    /// Capacity asked of each splice pipe (F_SETPIPE_SZ), at most `/proc/sys/fs/pipe-max-size`.
    #[serde(default = "d_pipe_size")]
    pub pipe_size: usize,
    /// Pipes one worker may hold at once (each lent only while it holds bytes); past it,
    /// connections copy.
    #[serde(default = "d_max_pipes")]
    pub max_pipes: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub addr: Spanned<String>,
    /// `tls = { cert = "...", key = "..." }`, with `[[listener.tls.sni]]` entries for more
    /// certificates chosen by SNI.
    #[serde(default)]
    pub tls: Option<Spanned<TlsConfig>>,
    /// `"websocket"` (default) or `"tcp"`: every connection carried to `origin` as is (L4).
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    /// A `tcp` listener's origin.
    #[serde(default)]
    pub origin: Option<Spanned<String>>,
    /// A `tcp` listener's name in logs and figures (default `tcp ORIGIN`, as written).
    #[serde(default)]
    pub name: Option<String>,
    /// A `tcp` listener's idle timeout (0: none).
    #[serde(default)]
    pub idle_timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: String,
    pub key: String,
    #[serde(default)]
    pub sni: Vec<SniCert>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCert {
    pub names: Vec<String>,
    pub cert: String,
    pub key: String,
}

/// A listener as validated: its address and, for `wss://`, its TLS files (paths relative to the
/// config file's directory are resolved against it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// The line of its `tls` key, for errors about the files.
    pub tls_line: usize,
    /// `mode = "tcp"`: the L4 relay's settings.
    pub tcp: Option<TcpListener>,
}

/// A `mode = "tcp"` listener: where its connections go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpListener {
    pub origin: SocketAddr,
    pub name: String,
    pub idle_timeout: Option<Duration>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub path: Spanned<String>,
    #[serde(default)]
    pub host: Option<Spanned<String>>,
    /// Match only connections whose TLS server name is this (wss:// listeners).
    #[serde(default)]
    pub sni: Option<Spanned<String>>,
    /// The one origin; or `origins`, a pool.
    #[serde(default)]
    pub origin: Option<Spanned<String>>,
    /// `origins = [{ addr = "db1:5432" }, { addr = "db2:5432", backup = true }]`.
    #[serde(default)]
    pub origins: Option<Spanned<Vec<ringctl::PoolOrigin>>>,
    /// A pool's policy: `failover` (default), `least-connections`, `power-of-two-choices`.
    #[serde(default)]
    pub policy: Option<Spanned<String>>,
    /// Percent of a pool that may be ejected at once (default 50).
    #[serde(default)]
    pub max_ejected_percent: Option<Spanned<u8>>,
    /// Connect racing: a connect not answered after this many milliseconds starts one to the
    /// next origin; `0` turns racing off; absent, the delay follows the pool's connect times.
    #[serde(default)]
    pub race_after_ms: Option<Spanned<u64>>,
    /// Active health checks of a pool's origins: `"tcp"` or `"postgres"` (absent: none).
    #[serde(default)]
    pub health_check: Option<Spanned<String>>,
    /// How often each worker checks each origin (default 5000).
    #[serde(default)]
    pub health_interval_ms: Option<Spanned<u64>>,
    /// A check that has not passed within this fails (default 1000).
    #[serde(default)]
    pub health_timeout_ms: Option<Spanned<u64>>,
    /// Connections kept ready to each origin of a pool, over all workers (default 0).
    #[serde(default)]
    pub warm_connections: Option<Spanned<u32>>,
    /// A warm connection older than this is replaced (default 30000: under PostgreSQL's
    /// 60 s `authentication_timeout`).
    #[serde(default)]
    pub warm_max_age_ms: Option<Spanned<u64>>,
    /// Tunnels the route may hold at once; past it, 503 with Retry-After.
    #[serde(default)]
    pub max_tunnels: Option<Spanned<u32>>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub idle_timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    workers: Option<Spanned<Workers>>,
    #[serde(default)]
    limits: Option<Limits>,
    #[serde(default)]
    timeouts: Option<Timeouts>,
    #[serde(default)]
    engine: Option<Engine>,
    #[serde(default, deserialize_with = "listener_tables")]
    listener: Vec<Listener>,
    #[serde(default, deserialize_with = "route_tables")]
    route: Vec<RouteConfig>,
    #[serde(default)]
    control: Option<ControlSection>,
    #[serde(default)]
    admin: Option<AdminSection>,
}

/// `[admin]`: the HTTP endpoints served by the control thread.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminSection {
    /// `IP:port` to serve Prometheus `/metrics` on; absent: off.
    #[serde(default)]
    metrics: Option<Spanned<String>>,
    /// Record latency histograms (counters are always kept).
    #[serde(default = "yes")]
    latency_histograms: bool,
}

fn yes() -> bool {
    true
}

/// `[control]`: where `ringctl` reaches this process, and where applied routes are kept.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlSection {
    #[serde(default)]
    socket: Option<String>,
    #[serde(default)]
    state: Option<String>,
    /// How often origin host names are resolved again, in milliseconds (0: only when the routes
    /// are loaded or applied).
    #[serde(default)]
    resolve_ms: Option<u64>,
}

/// The control plane's files, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlFiles {
    /// The control socket: `[control] socket`, else $RINGWAY_CONTROL, else
    /// [`ringctl::default_socket`].
    pub socket: PathBuf,
    /// The state file (the last applied route table): `[control] state`, else `routes.toml`
    /// next to the socket (each instance has its own socket, so its own state). `state = ""`:
    /// none.
    pub state: Option<PathBuf>,
    /// `[control] resolve_ms`: how often the control thread resolves origin host names again
    /// (`None`: only at load and apply). Default 30 s.
    pub resolve_every: Option<Duration>,
}

fn listener_tables<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Listener>, D::Error> {
    d.deserialize_seq(ArrayOfTables("listener", PhantomData))
}

fn route_tables<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RouteConfig>, D::Error> {
    d.deserialize_seq(ArrayOfTables("route", PhantomData))
}

/// `[[key]]`: an array of tables. A single `[key]` table, the one-bracket slip, is refused
/// with the fix instead of serde's "invalid type: map, expected a sequence".
struct ArrayOfTables<T>(&'static str, PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ArrayOfTables<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of tables `[[{}]]`", self.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut tables = Vec::new();
        while let Some(t) = seq.next_element()? {
            tables.push(t);
        }
        Ok(tables)
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Vec<T>, A::Error> {
        let key = self.0;
        Err(A::Error::custom(format!(
            "`[{key}]` is a single table; {key}s are an array of tables: write `[[{key}]]`"
        )))
    }
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
fn d_splice_min() -> usize {
    16 * 1024
}
fn d_pipe_size() -> usize {
    256 * 1024
}
fn d_max_pipes() -> usize {
    256
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
    pub listeners: Vec<ListenerConfig>,
    pub routes: RouteTable,
    /// The routes as written (origins unresolved), for `ringctl` and the state file.
    pub route_specs: Vec<RouteSpec>,
    pub control: ControlFiles,
    /// `[admin] metrics`: where Prometheus `/metrics` is served (`None`: off).
    pub metrics: Option<SocketAddr>,
    /// `[admin] latency_histograms`: workers record latencies (default on).
    pub latency_histograms: bool,
    /// What is legal but probably a mistake, worded for the operator (`check` prints these,
    /// `run` logs them).
    pub warnings: Vec<String>,
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

/// The config text and the file name errors are reported under.
struct Source<'a> {
    text: &'a str,
    file: &'a str,
}

impl Source<'_> {
    /// The 1-based line holding byte `offset`.
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// `p` as written in the config: relative paths are relative to the config file's
    /// directory (not for an embedded config, named `<...>`).
    fn relative(&self, p: &str) -> PathBuf {
        let p = PathBuf::from(p);
        match std::path::Path::new(self.file).parent() {
            Some(d) if p.is_relative() && !self.file.starts_with('<') => d.join(p),
            _ => p,
        }
    }

    /// A TOML syntax or shape error, with its line.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let (file, msg) = (self.file, e.message().trim());
        match e.span() {
            Some(s) => ConfigError(format!("{file}: line {}: {msg}", self.line(s.start))),
            None => ConfigError(format!("{file}: {msg}")),
        }
    }

    /// An error about `key` at `span`.
    fn at(&self, span: Range<usize>, key: &str, msg: impl fmt::Display) -> ConfigError {
        let (file, line) = (self.file, self.line(span.start));
        ConfigError(format!("{file}: line {line}: `{key}`: {msg}"))
    }
}

impl Config {
    /// Parses and validates `text` (the contents of `file`, named in errors).
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let src = Source { text, file };
        let raw: RawConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        let cpus = match &raw.workers {
            None => {
                let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
                (0..ncpu).map(Some).collect()
            }
            Some(w) => cpus(&src, w, available_cpus().as_deref())?,
        };
        if raw.listener.is_empty() {
            return Err(ConfigError(format!(
                "{file}: missing `[[listener]]` (e.g. addr = \"127.0.0.1:8080\")"
            )));
        }
        let mut listeners = Vec::new();
        for l in &raw.listener {
            let addr = l.addr.get_ref().parse::<SocketAddr>().map_err(|_| {
                let msg = format!("{:?} is not an IP:port address", l.addr.get_ref());
                src.at(l.addr.span(), "listener.addr", msg)
            })?;
            let (tls, tls_line) = match &l.tls {
                None => (None, 0),
                Some(t) => (Some(tls_files(&src, t)?), src.line(t.span().start)),
            };
            let tcp = tcp_listener(&src, l)?;
            if tcp.is_some() && tls.is_some() {
                return Err(src.at(
                    l.addr.span(),
                    "listener.tls",
                    "TLS on a `mode = \"tcp\"` listener is not supported yet: terminate TLS \
                     on a WebSocket listener, or let the origin speak TLS itself",
                ));
            }
            listeners.push(ListenerConfig {
                addr,
                tls,
                tls_line,
                tcp,
            });
        }
        let (routes, route_specs) = routes(&src, &raw.route, 1)?;
        let control = control_files(&src, raw.control.unwrap_or_default());
        let metrics = match raw.admin.as_ref().and_then(|a| a.metrics.as_ref()) {
            None => None,
            Some(m) => Some(m.get_ref().parse::<SocketAddr>().map_err(|_| {
                let msg = format!("{:?} is not an IP:port address", m.get_ref());
                src.at(m.span(), "admin.metrics", msg)
            })?),
        };
        let mut warnings = Vec::new();
        if routes.routes().is_empty() {
            warnings.push(format!(
                "{file}: no `[[route]]`: every WebSocket upgrade will be refused with 404"
            ));
        }
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
        if engine.balance && engine.steer_by_cpu {
            return Err(ConfigError(format!(
                "{file}: `engine.balance` and `engine.steer_by_cpu` are alternatives: balancing \
                 moves connections away from the worker their NIC queue chose; pick one"
            )));
        }
        if engine.pipe_size < 4096 || engine.pipe_size > 1 << 20 {
            return Err(ConfigError(format!(
                "{file}: `engine.pipe_size` must be between 4096 and 1048576"
            )));
        }
        Ok(Config {
            cpus,
            limits: raw.limits.unwrap_or_default(),
            timeouts: raw.timeouts.unwrap_or_default(),
            engine,
            listeners,
            routes,
            route_specs,
            control,
            metrics,
            latency_histograms: raw.admin.as_ref().is_none_or(|a| a.latency_histograms),
            warnings,
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

fn tls_files(src: &Source<'_>, t: &Spanned<TlsConfig>) -> Result<TlsFiles, ConfigError> {
    let path = |p: &str| src.relative(p);
    let cfg = t.get_ref();
    let mut sni = Vec::new();
    for entry in &cfg.sni {
        if entry.names.is_empty() {
            return Err(src.at(
                t.span(),
                "listener.tls.sni.names",
                "an SNI certificate needs at least one name",
            ));
        }
        sni.push((
            entry.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
            CertFiles {
                cert: path(&entry.cert),
                key: path(&entry.key),
            },
        ));
    }
    Ok(TlsFiles {
        default: CertFiles {
            cert: path(&cfg.cert),
            key: path(&cfg.key),
        },
        sni,
    })
}

/// The CPUs this process may run on (its affinity mask); `None` if it cannot be read.
fn available_cpus() -> Option<Vec<usize>> {
    core_affinity::get_core_ids().map(|ids| ids.into_iter().map(|c| c.id).collect())
}

/// One pinned worker per CPU; a count `n` pins to CPUs `0..n` when that many exist and
/// leaves the workers unpinned otherwise. A listed CPU must be in `available` (when known).
fn cpus(
    src: &Source<'_>,
    workers: &Spanned<Workers>,
    available: Option<&[usize]>,
) -> Result<Vec<Option<usize>>, ConfigError> {
    let at = |msg: String| src.at(workers.span(), "workers", msg);
    match workers.get_ref() {
        Workers::Count(0) => Err(at("must be at least 1".to_string())),
        Workers::Count(n) => {
            let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
            Ok((0..*n).map(|i| (*n <= ncpu).then_some(i)).collect())
        }
        Workers::Cpus(list) if list.is_empty() => Err(at("lists no CPU".to_string())),
        Workers::Cpus(list) => {
            if let Some(available) = available {
                if let Some(cpu) = list.iter().find(|c| !available.contains(c)) {
                    return Err(at(format!(
                        "CPU {cpu} does not exist or is outside this process's CPU affinity; \
                         available CPUs: {}",
                        cpu_ranges(available)
                    )));
                }
            }
            Ok(list.iter().copied().map(Some).collect())
        }
    }
}

/// `[0, 1, 2, 5, 7, 8]` as `0-2, 5, 7-8`.
fn cpu_ranges(cpus: &[usize]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &c in cpus {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == c => *end = c,
            _ => ranges.push((c, c)),
        }
    }
    let words: Vec<String> = ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    if words.is_empty() {
        "none".to_string()
    } else {
        words.join(", ")
    }
}

/// The route table. Every host and path must be matchable by some request, and no two routes
/// may be one: routes are one when their hosts are equal ignoring case and their paths are
/// equal ignoring a trailing `/` (the normalisation `RouteTable::new` applies).
fn routes(
    src: &Source<'_>,
    raw: &[RouteConfig],
    version: u64,
) -> Result<(RouteTable, Vec<RouteSpec>), ConfigError> {
    let mut routes = Vec::new();
    let mut specs = Vec::new();
    let mut seen: HashMap<(Option<String>, Option<String>, &str), &RouteConfig> = HashMap::new();
    for r in raw {
        let path = r.path.get_ref();
        if let Some(msg) = matchable::path_problem(path) {
            return Err(src.at(r.path.span(), "route.path", msg));
        }
        if let Some(h) = &r.host {
            if let Some(msg) = matchable::host_problem(h.get_ref()) {
                return Err(src.at(h.span(), "route.host", msg));
            }
        }
        if let Some(n) = &r.sni {
            // An SNI name is a host name: the same spelling rules, and never a port.
            if let Some(msg) = matchable::host_problem(n.get_ref()) {
                return Err(src.at(
                    n.span(),
                    "route.sni",
                    msg.replace("Host header", "TLS server name"),
                ));
            }
        }
        let host = r.host.as_ref().map(|h| h.get_ref().to_ascii_lowercase());
        let sni = r.sni.as_ref().map(|n| n.get_ref().to_ascii_lowercase());
        let same = (host.clone(), sni.clone(), normalised(path));
        if let Some(first) = seen.insert(same, r) {
            let (this, that) = (as_written(r), as_written(first));
            let why = if this == that {
                ""
            } else {
                " (paths match without a trailing '/', hosts ignoring case)"
            };
            let line = src.line(first.path.span().start);
            let msg =
                format!("route {this} is the same route as {that} at line {line}{why}; remove one");
            return Err(src.at(r.path.span(), "route.path", msg));
        }
        let (origin, pool) = route_origins(src, r)?;
        let name = r.name.clone().unwrap_or_else(|| {
            let base = match &host {
                Some(h) => format!("{h}{path}"),
                None => path.clone(),
            };
            match &sni {
                Some(n) => format!("{base} (sni {n})"),
                None => base,
            }
        });
        specs.push(RouteSpec {
            name: r.name.clone(),
            host: r.host.as_ref().map(|h| h.get_ref().clone()),
            sni: r.sni.as_ref().map(|n| n.get_ref().clone()),
            path: path.clone(),
            origin: r
                .origin
                .as_ref()
                .map(|o| o.get_ref().clone())
                .unwrap_or_default(),
            origins: r
                .origins
                .as_ref()
                .map(|o| o.get_ref().clone())
                .unwrap_or_default(),
            policy: r.policy.as_ref().map(|p| p.get_ref().clone()),
            max_ejected_percent: r.max_ejected_percent.as_ref().map(|m| *m.get_ref()),
            race_after_ms: r.race_after_ms.as_ref().map(|m| *m.get_ref()),
            health_check: r.health_check.as_ref().map(|m| m.get_ref().clone()),
            health_interval_ms: r.health_interval_ms.as_ref().map(|m| *m.get_ref()),
            health_timeout_ms: r.health_timeout_ms.as_ref().map(|m| *m.get_ref()),
            warm_connections: r.warm_connections.as_ref().map(|m| *m.get_ref()),
            warm_max_age_ms: r.warm_max_age_ms.as_ref().map(|m| *m.get_ref()),
            max_tunnels: r.max_tunnels.as_ref().map(|m| *m.get_ref()),
            idle_timeout_ms: (r.idle_timeout_ms > 0).then_some(r.idle_timeout_ms),
        });
        routes.push(Route {
            name,
            host,
            sni,
            path: path.clone(),
            origin,
            idle_timeout: (r.idle_timeout_ms > 0).then(|| Duration::from_millis(r.idle_timeout_ms)),
            pool,
            max_tunnels: match &r.max_tunnels {
                Some(m) if *m.get_ref() == 0 => {
                    let msg = "must be at least 1 (leave it out for no limit)";
                    return Err(src.at(m.span(), "route.max_tunnels", msg));
                }
                m => m.as_ref().map(|m| *m.get_ref()),
            },
        });
    }
    let table =
        RouteTable::new(version, routes).map_err(|e| ConfigError(format!("{}: {e}", src.file)))?;
    Ok((table, specs))
}

/// Where an optional key was written, with its name (for an error about it).
fn written<T>(v: &Option<Spanned<T>>, key: &'static str) -> Option<(Range<usize>, &'static str)> {
    v.as_ref().map(|m| (m.span(), key))
}

/// A route's origin, and its pool when it lists `origins`: exactly one of `origin` and
/// `origins`, every address resolvable, the policy and ejection share valid.
fn route_origins(
    src: &Source<'_>,
    r: &RouteConfig,
) -> Result<(SocketAddr, Option<OriginPool>), ConfigError> {
    // The keys only a pool has, where they were written.
    let pool_keys = [
        written(&r.policy, "route.policy"),
        written(&r.max_ejected_percent, "route.max_ejected_percent"),
        written(&r.race_after_ms, "route.race_after_ms"),
        written(&r.health_check, "route.health_check"),
        written(&r.health_interval_ms, "route.health_interval_ms"),
        written(&r.health_timeout_ms, "route.health_timeout_ms"),
        written(&r.warm_connections, "route.warm_connections"),
        written(&r.warm_max_age_ms, "route.warm_max_age_ms"),
    ];
    let list = match (&r.origin, &r.origins) {
        (Some(o), None) => {
            if let Some((span, key)) = pool_keys.into_iter().flatten().next() {
                return Err(src.at(span, key, "only a route with `origins` (a pool) has one"));
            }
            let addr = resolve(o.get_ref()).map_err(|msg| src.at(o.span(), "route.origin", msg))?;
            return Ok((addr, None));
        }
        (Some(o), Some(_)) => {
            let msg = "write `origin` (one) or `origins` (a pool), not both";
            return Err(src.at(o.span(), "route.origin", msg));
        }
        (None, None) => {
            let msg = "a route needs `origin = \"host:port\"` or `origins = [{ addr = ... }]`";
            return Err(src.at(r.path.span(), "route.origin", msg));
        }
        (None, Some(list)) => list,
    };
    let span = list.span();
    if list.get_ref().is_empty() {
        return Err(src.at(span, "route.origins", "a pool needs at least one origin"));
    }
    let mut origins = Vec::new();
    for o in list.get_ref() {
        let addr = resolve(&o.addr).map_err(|msg| src.at(span.clone(), "route.origins", msg))?;
        if origins.iter().any(|p: &PoolOrigin| p.addr == addr) {
            let msg = format!("{} is listed twice", o.addr);
            return Err(src.at(span, "route.origins", msg));
        }
        if o.max_connections == Some(0) || o.max_new_per_second == Some(0) {
            let msg = format!(
                "{}: a limit must be at least 1 (leave it out for none)",
                o.addr
            );
            return Err(src.at(span, "route.origins", msg));
        }
        origins.push(PoolOrigin {
            addr,
            backup: o.backup,
            max_connections: o.max_connections,
            max_new_per_second: o.max_new_per_second,
        });
    }
    if origins.iter().all(|o| o.backup) {
        let msg = "every origin is a backup: at least one must not be";
        return Err(src.at(span, "route.origins", msg));
    }
    let policy = match &r.policy {
        None => Policy::Failover,
        Some(p) => Policy::parse(p.get_ref()).ok_or_else(|| {
            let msg = format!(
                "{:?} is not a policy: write \"failover\", \"least-connections\" or \
                 \"power-of-two-choices\"",
                p.get_ref()
            );
            src.at(p.span(), "route.policy", msg)
        })?,
    };
    let max_ejected_percent = match &r.max_ejected_percent {
        None => 50,
        Some(m) if *m.get_ref() <= 100 => *m.get_ref(),
        Some(m) => {
            return Err(src.at(m.span(), "route.max_ejected_percent", "at most 100"));
        }
    };
    let race = match r.race_after_ms.as_ref().map(|m| *m.get_ref()) {
        None => Race::Auto,
        Some(0) => Race::Off,
        Some(ms) => Race::After(Duration::from_millis(ms)),
    };
    let check = health_check(src, r)?;
    let warm = match &r.warm_connections {
        Some(w) if *w.get_ref() > 1000 => {
            return Err(src.at(w.span(), "route.warm_connections", "at most 1000"));
        }
        w => w.as_ref().map_or(0, |w| *w.get_ref()),
    };
    let warm_max_age = match &r.warm_max_age_ms {
        None => Duration::from_secs(30),
        Some(m) if *m.get_ref() >= 100 => Duration::from_millis(*m.get_ref()),
        Some(m) => return Err(src.at(m.span(), "route.warm_max_age_ms", "at least 100")),
    };
    let first = origins[0].addr;
    Ok((
        first,
        Some(OriginPool {
            origins,
            policy,
            max_ejected_percent,
            race,
            check,
            warm,
            warm_max_age,
        }),
    ))
}

/// A pool's active health check, from `health_check`, `health_interval_ms` and
/// `health_timeout_ms`.
fn health_check(src: &Source<'_>, r: &RouteConfig) -> Result<Option<HealthCheck>, ConfigError> {
    let ms = |v: &Option<Spanned<u64>>, key: &'static str, least: u64, default: u64| match v {
        None => Ok(Duration::from_millis(default)),
        Some(m) if (least..=3_600_000).contains(m.get_ref()) => {
            Ok(Duration::from_millis(*m.get_ref()))
        }
        Some(m) => {
            let msg = format!("must be from {least} to 3600000 (an hour)");
            Err(src.at(m.span(), key, msg))
        }
    };
    // Checks start on the workers' 100 ms tick: a shorter interval could not be kept.
    let interval = ms(&r.health_interval_ms, "route.health_interval_ms", 100, 5000)?;
    let timeout = ms(&r.health_timeout_ms, "route.health_timeout_ms", 10, 1000)?;
    let kind = match &r.health_check {
        None => {
            let stray = [
                written(&r.health_interval_ms, "route.health_interval_ms"),
                written(&r.health_timeout_ms, "route.health_timeout_ms"),
            ];
            if let Some((span, key)) = stray.into_iter().flatten().next() {
                let msg = "needs `health_check = \"tcp\"` or `\"postgres\"`";
                return Err(src.at(span, key, msg));
            }
            return Ok(None);
        }
        Some(k) => match k.get_ref().as_str() {
            "tcp" => CheckKind::Tcp,
            "postgres" => CheckKind::Postgres,
            other => {
                let msg = format!("{other:?} is not a check: write \"tcp\" or \"postgres\"");
                return Err(src.at(k.span(), "route.health_check", msg));
            }
        },
    };
    if timeout > interval {
        let span = r
            .health_timeout_ms
            .as_ref()
            .map_or(r.path.span(), |m| m.span());
        return Err(src.at(span, "route.health_timeout_ms", "longer than the interval"));
    }
    Ok(Some(HealthCheck {
        kind,
        interval,
        timeout,
    }))
}

/// A listener's L4 settings: `Some` for `mode = "tcp"` (which needs an `origin`), `None` for a
/// WebSocket listener (which must not have one).
fn tcp_listener(src: &Source<'_>, l: &Listener) -> Result<Option<TcpListener>, ConfigError> {
    let tcp = match &l.mode {
        None => false,
        Some(m) => match m.get_ref().as_str() {
            "websocket" => false,
            "tcp" => true,
            other => {
                let msg = format!("{other:?} is not a mode: write \"websocket\" or \"tcp\"");
                return Err(src.at(m.span(), "listener.mode", msg));
            }
        },
    };
    match (&l.origin, tcp) {
        (Some(o), false) => Err(src.at(
            o.span(),
            "listener.origin",
            "only a `mode = \"tcp\"` listener has an origin; WebSocket listeners use [[route]]s",
        )),
        (None, true) => Err(src.at(
            l.addr.span(),
            "listener.origin",
            "a `mode = \"tcp\"` listener needs `origin = \"host:port\"`",
        )),
        (None, false) => Ok(None),
        (Some(o), true) => {
            let origin =
                resolve(o.get_ref()).map_err(|msg| src.at(o.span(), "listener.origin", msg))?;
            Ok(Some(TcpListener {
                origin,
                name: l
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("tcp {}", o.get_ref())),
                idle_timeout: (l.idle_timeout_ms > 0)
                    .then(|| Duration::from_millis(l.idle_timeout_ms)),
            }))
        }
    }
}

/// The `[[route]]`s of `text` (a route file or a whole config file, named `file` in errors),
/// validated by the config file's rules and resolved, as table `version`.
pub fn parse_routes(
    text: &str,
    file: &str,
    version: u64,
) -> Result<(RouteTable, Vec<RouteSpec>), ConfigError> {
    let src = Source { text, file };
    // A route file is a config file of which only the `[[route]]` tables are used: its other
    // sections may be present (so a whole config file can be applied) and are checked for shape.
    let raw: RawConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
    routes(&src, &raw.route, version)
}

/// `specs` (from `ringctl routes add`, or a table already validated once) validated and
/// resolved again, as table `version`; errors name the route rather than a line.
pub fn build_routes(specs: &[RouteSpec], version: u64) -> Result<RouteTable, ConfigError> {
    let text = ringctl::routes_to_toml(specs);
    // Line numbers of generated text mean nothing to the operator: name the route instead.
    parse_routes(&text, "", version)
        .map(|(t, _)| t)
        .map_err(|e| {
            let msg = e.0.trim_start_matches(": ");
            let msg = match msg.split_once(": ") {
                Some((line, rest)) if line.starts_with("line ") => rest,
                _ => msg,
            };
            ConfigError(msg.to_string())
        })
}

fn control_files(src: &Source<'_>, c: ControlSection) -> ControlFiles {
    let path = |p: &str| src.relative(p);
    let socket = match &c.socket {
        Some(p) => path(p),
        None => match std::env::var_os("RINGWAY_CONTROL").filter(|v| !v.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => ringctl::default_socket(),
        },
    };
    let state = match c.state.as_deref() {
        Some("") => None,
        Some(p) => Some(path(p)),
        None => Some(socket.with_file_name("routes.toml")),
    };
    let resolve_every = match c.resolve_ms {
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms.max(100))),
        None => Some(Duration::from_secs(30)),
    };
    ControlFiles {
        socket,
        state,
        resolve_every,
    }
}

/// `path` as the route table keys it: without a trailing `/`, except the root.
fn normalised(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/"
    } else {
        trimmed
    }
}

/// A route's host, SNI and path as the file spells them: `host = "A.example", path = "/db/"`.
fn as_written(r: &RouteConfig) -> String {
    let mut out = String::new();
    if let Some(h) = &r.host {
        out.push_str(&format!("host = {:?}, ", h.get_ref()));
    }
    if let Some(n) = &r.sni {
        out.push_str(&format!("sni = {:?}, ", n.get_ref()));
    }
    out.push_str(&format!("path = {:?}", r.path.get_ref()));
    out
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
