//! The control protocol between the `ringway` dataplane and `ringctl`, and a blocking client.
//!
//! A Unix stream socket (mode 0600) carries one request per line and one reply per line, each
//! a JSON object with a `v` field: this protocol's [`VERSION`]. A request names its command in
//! `cmd`; a reply names its kind in `reply`, and failures are `{"v":1,"reply":"error",
//! "error":"..."}`. A request of another version, or one that does not parse, gets an error
//! reply that says so, and the dataplane goes on serving.
//!
//! Routes travel as [`RouteSpec`]s, the config file's `[[route]]` keys as written (the origin
//! unresolved), so `ringctl routes list` prints what an operator wrote and the dataplane
//! validates a change with the same rules as its config file.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

/// The longest line either side accepts (a route file of some thousands of routes).
pub const MAX_LINE: usize = 4 << 20;

/// A request, as `{"v":1,"cmd":"routes-list"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// The route table every worker serves now.
    RoutesList,
    /// Adds one route to the current table.
    RoutesAdd { route: Box<RouteSpec> },
    /// Removes the route with this name (as `routes list` shows it).
    RoutesRemove { name: String },
    /// Replaces the whole table with the `[[route]]`s of `text` (a config file; `source` names
    /// it in errors). `dry_run`: validate and diff only.
    RoutesApply {
        text: String,
        source: String,
        #[serde(default)]
        dry_run: bool,
    },
    /// Open tunnels, on one route or all.
    Tunnels {
        #[serde(default)]
        route: Option<String>,
    },
    /// Ends one tunnel cleanly: Close 1001 to the client after its queued bytes, the origin
    /// half-closed.
    TunnelsClose { id: String },
    /// Counters and latency histograms per worker and route.
    Stats {
        #[serde(default)]
        route: Option<String>,
    },
}

/// A reply, as `{"v":1,"reply":"routes",...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    /// The table every worker serves now.
    Routes {
        version: u64,
        routes: Vec<RouteSpec>,
    },
    /// A change: what it changed and, unless `dry_run`, the version every worker now serves.
    /// `apply_us`: from the request's arrival until the last worker took the new table
    /// (validation and the state file's write and fsync included); `propagate_us`: from the
    /// table's hand-over to the workers until the last one took it.
    Applied {
        version: u64,
        changes: Vec<Change>,
        workers: usize,
        apply_us: u64,
        #[serde(default)]
        propagate_us: u64,
        dry_run: bool,
    },
    /// Open tunnels, oldest first.
    Tunnels { tunnels: Vec<TunnelInfo> },
    /// The tunnel is closing.
    TunnelClosed { id: String },
    /// Per worker, per route: what each worker recorded (merge with [`merge`]); and per worker,
    /// per pooled origin, what it knows of the origin (merge with [`merge_origins`]).
    Stats {
        workers: Vec<Vec<RouteReport>>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        origins: Vec<Vec<OriginReport>>,
    },
    /// The request failed; nothing was changed.
    Error { error: String },
}

/// One open tunnel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelInfo {
    /// `W-SLOT-GEN`: worker, slot and generation (never reused while the process runs).
    pub id: String,
    pub route: String,
    pub client: String,
    pub origin: String,
    pub age_ms: u64,
    /// Payload bytes each way so far.
    pub to_origin: u64,
    pub to_client: u64,
    /// `upgrading`, `connecting`, `relaying` or `closing`.
    pub state: String,
    /// The CPU its worker is pinned to, if pinned.
    #[serde(default)]
    pub worker_cpu: Option<u32>,
    /// The CPU that last processed the client socket's incoming packets (SO_INCOMING_CPU).
    #[serde(default)]
    pub incoming_cpu: Option<u32>,
    /// The NIC receive queue (NAPI id) that last delivered to it (SO_INCOMING_NAPI_ID; 0: none,
    /// as on loopback).
    #[serde(default)]
    pub napi_id: Option<u32>,
}

/// The latency phases, in the order `ringctl stats` prints them, with what each measures.
pub const PHASES: [(&str, &str); 7] = [
    ("setup", "accept to 101 sent"),
    ("tls", "accept to TLS handshake done (wss://)"),
    ("upgrade", "accept (or TLS done) to upgrade request parsed"),
    ("connect", "origin connect"),
    ("first-byte", "accept to the first origin byte received"),
    (
        "relay-to-origin",
        "client bytes received to sent on to the origin",
    ),
    (
        "relay-to-client",
        "origin bytes received to sent on to the client",
    ),
];

/// Counters of one route on one worker (or merged).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCounters {
    /// Tunnels upgraded and not yet ended.
    pub open: u64,
    /// Tunnels upgraded since the start.
    pub total: u64,
    /// Payload bytes each way, ended and open tunnels.
    pub to_origin: u64,
    pub to_client: u64,
    /// Bytes moved with splice(2), never copied through user space (WebSocket frame headers
    /// included).
    #[serde(default)]
    pub spliced: u64,
    /// Ended tunnels by who ended them and how (`client: Close 1000`, `origin: EOF`, ...).
    pub closes: BTreeMap<String, u64>,
    /// Refused upgrades by HTTP status (`"404"`: JSON object keys are strings).
    pub refusals: BTreeMap<String, u64>,
}

impl RouteCounters {
    pub fn add(&mut self, o: &RouteCounters) {
        self.open += o.open;
        self.total += o.total;
        self.to_origin += o.to_origin;
        self.to_client += o.to_client;
        self.spliced += o.spliced;
        for (k, v) in &o.closes {
            *self.closes.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.refusals {
            *self.refusals.entry(k.clone()).or_default() += v;
        }
    }
}

/// One route's figures from one worker: counters, and per phase a histogram of microseconds
/// in HdrHistogram's V2 serialization, base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteReport {
    pub route: String,
    #[serde(flatten)]
    pub counters: RouteCounters,
    pub histograms: BTreeMap<String, String>,
}

/// What one worker knows of one origin of a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginReport {
    pub origin: String,
    /// Tunnels open to it (connects in flight included).
    pub open: u64,
    /// Out of rotation on this worker now.
    pub ejected: bool,
    pub ejections: u64,
    /// Connects that completed, and that failed or timed out.
    pub connects: u64,
    pub connect_failures: u64,
    /// Warm connections ready (or connecting) on this worker, and tunnels that were given one.
    #[serde(default)]
    pub warm: u64,
    #[serde(default)]
    pub warm_used: u64,
    /// Connect times of the connects that completed, microseconds ([`encode_histogram`]);
    /// empty before the first.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub connect_time: String,
}

/// An origin's figures over every worker.
#[derive(Clone, Debug)]
pub struct MergedOrigin {
    pub origin: String,
    pub open: u64,
    /// Workers that have it ejected now, of `workers` that know it.
    pub ejected_on: u64,
    pub workers: u64,
    pub ejections: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub warm: u64,
    pub warm_used: u64,
    pub connect_time: Option<Histogram<u64>>,
}

/// Every worker's origin reports merged per origin, in first-seen order.
pub fn merge_origins(workers: &[Vec<OriginReport>]) -> Result<Vec<MergedOrigin>, String> {
    let mut out: Vec<MergedOrigin> = Vec::new();
    for reports in workers {
        for r in reports {
            let i = match out.iter().position(|m| m.origin == r.origin) {
                Some(i) => i,
                None => {
                    out.push(MergedOrigin {
                        origin: r.origin.clone(),
                        open: 0,
                        ejected_on: 0,
                        workers: 0,
                        ejections: 0,
                        connects: 0,
                        connect_failures: 0,
                        warm: 0,
                        warm_used: 0,
                        connect_time: None,
                    });
                    out.len() - 1
                }
            };
            let m = &mut out[i];
            m.open += r.open;
            m.ejected_on += u64::from(r.ejected);
            m.workers += 1;
            m.ejections += r.ejections;
            m.connects += r.connects;
            m.connect_failures += r.connect_failures;
            m.warm += r.warm;
            m.warm_used += r.warm_used;
            if !r.connect_time.is_empty() {
                let h = decode_histogram(&r.connect_time)?;
                match m.connect_time.as_mut() {
                    Some(acc) => acc
                        .add(&h)
                        .map_err(|e| format!("connect times do not add: {e:?}"))?,
                    None => m.connect_time = Some(h),
                }
            }
        }
    }
    Ok(out)
}

/// A route's figures over every worker.
#[derive(Clone, Debug)]
pub struct Merged {
    pub route: String,
    pub counters: RouteCounters,
    /// Per phase (only phases with samples), microseconds.
    pub histograms: BTreeMap<String, Histogram<u64>>,
}

/// `h` in V2 serialization, base64.
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    let _ = V2Serializer::new().serialize(h, &mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The inverse of [`encode_histogram`].
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram does not deserialize: {e:?}"))
}

/// Every worker's reports merged per route: counters summed, histograms added (exact: the
/// same bucket layout everywhere). Routes in first-seen order.
pub fn merge(workers: &[Vec<RouteReport>]) -> Result<Vec<Merged>, String> {
    let mut out: Vec<Merged> = Vec::new();
    for reports in workers {
        for r in reports {
            let i = match out.iter().position(|m| m.route == r.route) {
                Some(i) => i,
                None => {
                    out.push(Merged {
                        route: r.route.clone(),
                        counters: RouteCounters::default(),
                        histograms: BTreeMap::new(),
                    });
                    out.len() - 1
                }
            };
            let m = &mut out[i];
            m.counters.add(&r.counters);
            for (phase, text) in &r.histograms {
                let h = decode_histogram(text)?;
                match m.histograms.get_mut(phase) {
                    Some(acc) => acc
                        .add(&h)
                        .map_err(|e| format!("histograms of {phase} do not add: {e:?}"))?,
                    None => {
                        m.histograms.insert(phase.clone(), h);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// One `[[route]]` as written in a config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    pub path: String,
    /// The one origin (empty when `origins` lists a pool).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    /// A pool of origins, in order of preference for `failover`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<PoolOrigin>,
    /// How a pool's origin is chosen: `failover` (default), `least-connections`,
    /// `power-of-two-choices`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Percent of a pool that may be ejected at once (default 50); past it, health is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejected_percent: Option<u8>,
    /// Connect racing's delay in milliseconds (`0`: off; absent: from the pool's connect times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub race_after_ms: Option<u64>,
    /// Active health checks of the pool's origins: `tcp` or `postgres`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout_ms: Option<u64>,
    /// Connections kept ready to each origin of the pool, over all workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_max_age_ms: Option<u64>,
    /// Tunnels the route may hold at once (past it: 503 with Retry-After).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tunnels: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
}

/// One origin of a pool, as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolOrigin {
    pub addr: String,
    /// Used only when no other origin of the pool is eligible.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backup: bool,
    /// Tunnels open to it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// New connections to it per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_per_second: Option<u32>,
}

impl RouteSpec {
    /// The name logs and `routes list` use: `name`, else host + path (and the SNI name).
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let host = self.host.as_deref().map(str::to_ascii_lowercase);
        let base = format!("{}{}", host.unwrap_or_default(), self.path);
        match &self.sni {
            Some(n) => format!("{base} (sni {})", n.to_ascii_lowercase()),
            None => base,
        }
    }

    /// What makes two routes one: hosts and SNI names ignoring case, paths ignoring a trailing
    /// `/` (the rules of the config file and the route table).
    pub fn key(&self) -> (Option<String>, Option<String>, String) {
        let trimmed = self.path.trim_end_matches('/');
        let path = if trimmed.is_empty() { "/" } else { trimmed };
        (
            self.host.as_deref().map(str::to_ascii_lowercase),
            self.sni.as_deref().map(str::to_ascii_lowercase),
            path.to_string(),
        )
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.display_name(), self.origin)?;
        let list: Vec<String> = self
            .origins
            .iter()
            .map(|o| match o.backup {
                true => format!("{} (backup)", o.addr),
                false => o.addr.clone(),
            })
            .collect();
        if !list.is_empty() {
            write!(f, "[{}]", list.join(", "))?;
        }
        if let Some(p) = &self.policy {
            write!(f, " ({p})")?;
        }
        if let Some(ms) = self.idle_timeout_ms {
            write!(f, " (idle timeout {ms} ms)")?;
        }
        Ok(())
    }
}

/// The routes as a config file's `[[route]]` tables (what the state file holds, and what
/// `routes apply` reads back).
pub fn routes_to_toml(routes: &[RouteSpec]) -> String {
    #[derive(Serialize)]
    struct File<'a> {
        route: &'a [RouteSpec],
    }
    if routes.is_empty() {
        return String::new();
    }
    toml::to_string(&File { route: routes }).unwrap_or_default()
}

/// One difference between two route tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum Change {
    Add {
        route: RouteSpec,
    },
    Remove {
        route: RouteSpec,
    },
    Modify {
        before: Box<RouteSpec>,
        after: Box<RouteSpec>,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Add { route } => write!(f, "+ {route}"),
            Change::Remove { route } => write!(f, "- {route}"),
            Change::Modify { before, after } => write!(f, "~ {before}\n  now {after}"),
        }
    }
}

/// What turns `before` into `after`, routes matched by [`RouteSpec::key`]: removals, then
/// changes and additions in `after`'s order.
pub fn diff(before: &[RouteSpec], after: &[RouteSpec]) -> Vec<Change> {
    let old: HashMap<_, _> = before.iter().map(|r| (r.key(), r)).collect();
    let new: HashMap<_, _> = after.iter().map(|r| (r.key(), r)).collect();
    let mut changes: Vec<Change> = before
        .iter()
        .filter(|r| !new.contains_key(&r.key()))
        .map(|r| Change::Remove { route: r.clone() })
        .collect();
    for r in after {
        match old.get(&r.key()) {
            None => changes.push(Change::Add { route: r.clone() }),
            Some(&b) if b != r => changes.push(Change::Modify {
                before: Box::new(b.clone()),
                after: Box::new(r.clone()),
            }),
            Some(_) => {}
        }
    }
    changes
}

#[derive(Serialize)]
struct Outgoing<'a, T> {
    v: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// `msg` as one protocol line (with the version and the trailing newline).
pub fn encode<T: Serialize>(msg: &T) -> String {
    let mut line = serde_json::to_string(&Outgoing {
        v: VERSION,
        body: msg,
    })
    .unwrap_or_else(|e| format!("{{\"v\":{VERSION},\"reply\":\"error\",\"error\":\"{e}\"}}"));
    line.push('\n');
    line
}

/// Parses one line (without its newline) of this protocol's version; the error is worded for
/// the peer.
pub fn decode<T: serde::de::DeserializeOwned>(line: &str) -> Result<T, String> {
    let mut value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("malformed message (not JSON): {e}"))?;
    let Some(obj) = value.as_object_mut() else {
        return Err("malformed message: not a JSON object".into());
    };
    match obj.remove("v") {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(VERSION)) => {}
        Some(v) => {
            return Err(format!(
                "unsupported control protocol version {v} (this side speaks version {VERSION}; \
                 use the ringctl that came with this ringway)"
            ))
        }
        None => {
            return Err(format!(
                "malformed message: no protocol version field `v` (expected {VERSION})"
            ))
        }
    }
    serde_json::from_value(value).map_err(|e| format!("malformed message: {e}"))
}

/// Where the dataplane listens when the config names no `[control] socket`:
/// `$XDG_RUNTIME_DIR/ringway/control.sock`, else `/run/ringway/control.sock` for root, else
/// `/tmp/ringway-UID/control.sock`.
pub fn default_socket() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("ringway/control.sock");
    }
    let uid = rustix::process::getuid().as_raw();
    if uid == 0 {
        PathBuf::from("/run/ringway/control.sock")
    } else {
        PathBuf::from(format!("/tmp/ringway-{uid}/control.sock"))
    }
}

/// A failed call, worded for the operator.
#[derive(Debug)]
pub enum CallError {
    /// The socket could not be reached or the exchange broke off.
    Io(PathBuf, io::Error),
    /// The dataplane's reply did not parse.
    Protocol(String),
    /// The dataplane refused the request.
    Refused(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Io(path, e) if e.kind() == io::ErrorKind::NotFound => write!(
                f,
                "{}: no control socket there (is ringway running? `[control] socket` in its config \
                 names the path; pass it with --socket)",
                path.display()
            ),
            CallError::Io(path, e) if e.kind() == io::ErrorKind::ConnectionRefused => write!(
                f,
                "{}: nobody listens on this control socket (ringway is not running, or it left \
                 the file behind)",
                path.display()
            ),
            CallError::Io(path, e) if e.kind() == io::ErrorKind::PermissionDenied => write!(
                f,
                "{}: permission denied (the control socket is mode 0600: run as the user that \
                 runs ringway)",
                path.display()
            ),
            CallError::Io(path, e) => write!(f, "{}: {e}", path.display()),
            CallError::Protocol(e) => write!(f, "unexpected reply from ringway: {e}"),
            CallError::Refused(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for CallError {}

/// A connection to the dataplane's control socket.
pub struct Client {
    path: PathBuf,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    line: String,
}

impl Client {
    /// How long a call waits for its reply.
    pub const TIMEOUT: Duration = Duration::from_secs(10);

    pub fn connect(path: &Path) -> Result<Client, CallError> {
        let io = |e| CallError::Io(path.to_path_buf(), e);
        let writer = UnixStream::connect(path).map_err(io)?;
        writer.set_read_timeout(Some(Self::TIMEOUT)).map_err(io)?;
        writer.set_write_timeout(Some(Self::TIMEOUT)).map_err(io)?;
        let reader = BufReader::new(writer.try_clone().map_err(io)?);
        Ok(Client {
            path: path.to_path_buf(),
            writer,
            reader,
            line: String::new(),
        })
    }

    /// Sends `req` and returns the reply; an error reply is [`CallError::Refused`].
    pub fn call(&mut self, req: &Request) -> Result<Reply, CallError> {
        let line = encode(req);
        self.call_raw(&line)
    }

    /// Sends one raw line (tests use it to send what a broken client would) and parses the
    /// reply.
    pub fn call_raw(&mut self, line: &str) -> Result<Reply, CallError> {
        let io = |e| CallError::Io(self.path.clone(), e);
        self.writer.write_all(line.as_bytes()).map_err(io)?;
        self.line.clear();
        let n = self.reader.read_line(&mut self.line).map_err(io)?;
        if n == 0 {
            return Err(io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "ringway closed the control connection without a reply",
            )));
        }
        match decode::<Reply>(self.line.trim_end()).map_err(CallError::Protocol)? {
            Reply::Error { error } => Err(CallError::Refused(error)),
            reply => Ok(reply),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, path: &str, origin: &str) -> RouteSpec {
        RouteSpec {
            name: None,
            host: host.map(str::to_string),
            sni: None,
            path: path.into(),
            origin: origin.into(),
            idle_timeout_ms: None,
            ..Default::default()
        }
    }

    #[test]
    fn requests_round_trip_with_their_version() {
        let reqs = [
            Request::RoutesList,
            Request::RoutesAdd {
                route: Box::new(route(Some("db.example"), "/pg", "10.0.0.5:5432")),
            },
            Request::RoutesRemove { name: "/pg".into() },
            Request::RoutesApply {
                text: "[[route]]\npath = \"/a\"\norigin = \"127.0.0.1:1\"\n".into(),
                source: "routes.toml".into(),
                dry_run: true,
            },
        ];
        for r in reqs {
            let line = encode(&r);
            assert!(line.starts_with("{\"v\":1,"), "{line}");
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert_eq!(decode::<Request>(line.trim_end()).unwrap(), r);
        }
        assert_eq!(
            encode(&Request::RoutesList),
            "{\"v\":1,\"cmd\":\"routes-list\"}\n"
        );
    }

    #[test]
    fn other_versions_and_garbage_are_refused_in_words() {
        let e = decode::<Request>(r#"{"v":2,"cmd":"routes-list"}"#).unwrap_err();
        assert!(e.contains("unsupported control protocol version 2"), "{e}");
        let e = decode::<Request>(r#"{"cmd":"routes-list"}"#).unwrap_err();
        assert!(e.contains("no protocol version"), "{e}");
        let e = decode::<Request>("routes list").unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
        let e = decode::<Request>("[1,2]").unwrap_err();
        assert!(e.contains("not a JSON object"), "{e}");
        let e = decode::<Request>(r#"{"v":1,"cmd":"routes-explode"}"#).unwrap_err();
        assert!(e.contains("routes-explode"), "{e}");
        let e = decode::<Request>(r#"{"v":1,"cmd":"routes-remove"}"#).unwrap_err();
        assert!(e.contains("name"), "{e}");
    }

    #[test]
    fn diff_matches_routes_as_the_table_does() {
        let before = vec![
            route(Some("DB.example"), "/pg/", "10.0.0.5:5432"),
            route(None, "/redis", "10.0.0.6:6379"),
            route(None, "/gone", "10.0.0.7:1"),
        ];
        let after = vec![
            route(Some("db.example"), "/pg", "10.0.0.5:5432"), // same route, respelled
            route(None, "/redis", "10.0.0.9:6379"),
            route(None, "/new", "10.0.0.8:1"),
        ];
        let d = diff(&before, &after);
        assert_eq!(d.len(), 4, "{d:?}");
        assert_eq!(
            d[0],
            Change::Remove {
                route: before[2].clone()
            }
        );
        assert_eq!(
            d[1],
            Change::Modify {
                before: Box::new(before[0].clone()),
                after: Box::new(after[0].clone())
            }
        );
        assert_eq!(
            d[2],
            Change::Modify {
                before: Box::new(before[1].clone()),
                after: Box::new(after[1].clone())
            }
        );
        assert_eq!(
            d[3],
            Change::Add {
                route: after[2].clone()
            }
        );
        assert!(diff(&after, &after).is_empty());
        assert_eq!(d[3].to_string(), "+ /new -> 10.0.0.8:1");
    }

    #[test]
    fn routes_print_as_config_tables() {
        let mut r = route(Some("db.example"), "/pg", "db.internal:5432");
        r.idle_timeout_ms = Some(30_000);
        let text = routes_to_toml(&[r.clone(), route(None, "/x", "127.0.0.1:9")]);
        assert!(
            text.starts_with("[[route]]\nhost = \"db.example\"\n"),
            "{text}"
        );
        #[derive(Deserialize)]
        struct F {
            route: Vec<RouteSpec>,
        }
        let back: F = toml::from_str(&text).unwrap();
        assert_eq!(back.route[0], r);
        assert_eq!(back.route.len(), 2);
        assert_eq!(routes_to_toml(&[]), "");
    }
}
