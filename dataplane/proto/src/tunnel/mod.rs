//! The tunnel state machine: one per client connection, tying a WebSocket client to a TCP origin.
//!
//! Phases, each its own type: [`AwaitUpgrade`] → [`AwaitOrigin`] → [`Relaying`] → [`Closing`] →
//! `Closed`. A transition consumes the old phase.
//!
//! Call order (quinn style): feed every event with a `handle_*` call, passing `now`; after each
//! call, first act on its return value (a range of bytes to forward), then drain
//! [`Tunnel::poll_intent`] until it returns `None`, then re-read [`Tunnel::poll_timeout`].
//! Intents are ordered after the bytes the same call returned, so a driver that keeps one FIFO per
//! direction preserves "data before Close".
//!
//! Invariants:
//! - the origin is connected before the 101 is sent, and no client byte reaches the origin before
//!   the 101 (bytes pipelined behind the upgrade request are held and forwarded after it);
//! - every close path records which side caused it ([`CloseRecord`]);
//! - a data frame is never buffered whole: payload is unmasked in the caller's buffer and
//!   forwarded from there.

mod flow;
mod phase;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use flow::Flow;
pub use phase::{AwaitOrigin, AwaitUpgrade, Closing, Relaying};

use crate::route::RouteTable;
use crate::ws::decoder::{Decoder, DecoderLimits, Event};
use crate::ws::encoder;
use crate::ws::frame::{CloseCode, Opcode};
use crate::ws::handshake;

/// Limits and timeouts a tunnel runs with.
#[derive(Clone, Copy, Debug)]
pub struct TunnelConfig {
    /// Largest upgrade request head (431 above it).
    pub max_header_bytes: usize,
    /// Largest frame payload a client may send (close 1009 above it).
    pub max_payload: u64,
    /// The client must finish its upgrade request within this.
    pub handshake_timeout: Duration,
    /// The origin must accept the connection within this (504 after it).
    pub connect_timeout: Duration,
    /// How long a closing handshake may wait for the peer's Close.
    pub close_timeout: Duration,
}

impl Default for TunnelConfig {
    fn default() -> TunnelConfig {
        TunnelConfig {
            max_header_bytes: 8 * 1024,
            max_payload: 64 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(2),
        }
    }
}

/// Which side caused a close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The WebSocket client.
    Client,
    /// The TCP origin.
    Origin,
    /// Ringway itself (timeouts, shutdown).
    Server,
}

/// Why a tunnel closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a Close frame (its code, if any).
    ClientClose(Option<u16>),
    /// The client's TCP connection ended without a Close frame.
    ClientEof,
    /// The client's socket failed (errno).
    ClientError(i32),
    /// The client's TLS session failed (handshake refused, bad record); the driver logs why.
    ClientTls,
    /// The client broke RFC 6455; we closed with this code.
    Protocol(u16),
    /// The upgrade was refused with this HTTP status.
    Refused(u16),
    /// The client did not finish the upgrade request in time.
    HandshakeTimeout,
    /// The origin refused or failed the connection (errno).
    ConnectFailed(i32),
    /// The origin did not accept in time.
    ConnectTimeout,
    /// The origin socket could not be created here (errno: out of descriptors or memory).
    OriginSocket(i32),
    /// The route or every origin of its pool is at its connection limit (503, Retry-After).
    OverLimit,
    /// The origin ended its stream.
    OriginEof,
    /// The origin's socket failed (errno).
    OriginError(i32),
    /// No bytes moved for the route's idle timeout.
    IdleTimeout,
    /// Ringway is shutting down.
    Shutdown,
    /// An operator closed this tunnel (`ringctl tunnels close`).
    Operator,
    /// The client stopped reading: bytes queued to it made no progress for the send-stall
    /// timeout (closed with 1008).
    ClientStalled,
    /// The origin stopped reading: bytes queued to it made no progress for the send-stall
    /// timeout (closed with 1011).
    OriginStalled,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Origin => "origin",
            Side::Server => "ringway",
        })
    }
}

/// In words, for logs: `client sent Close 1000 (normal closure)`,
/// `origin connect failed: Connection refused (os error 111)`.
impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = |e: i32| std::io::Error::from_raw_os_error(e);
        match *self {
            CloseReason::ClientClose(Some(code)) => {
                write!(f, "client sent Close {code} ({})", CloseCode(code).name())
            }
            CloseReason::ClientClose(None) => f.write_str("client sent Close without a code"),
            CloseReason::ClientEof => f.write_str("client closed TCP without a Close frame"),
            CloseReason::ClientError(e) => write!(f, "client connection failed: {}", os(e)),
            CloseReason::ClientTls => f.write_str("client TLS session failed"),
            CloseReason::Protocol(code) => write!(
                f,
                "client broke the WebSocket protocol, closed with {code} ({})",
                CloseCode(code).name()
            ),
            CloseReason::Refused(status) => write!(
                f,
                "upgrade refused with {status} {}",
                handshake::reason_phrase(status)
            ),
            CloseReason::HandshakeTimeout => {
                f.write_str("client did not finish the upgrade request in time")
            }
            CloseReason::ConnectFailed(e) => write!(f, "origin connect failed: {}", os(e)),
            CloseReason::ConnectTimeout => f.write_str("origin did not accept in time"),
            CloseReason::OriginSocket(e) => {
                write!(f, "cannot create a socket to the origin: {}", os(e))
            }
            CloseReason::OverLimit => {
                f.write_str("the route or its origins are at their connection limit (503)")
            }
            CloseReason::OriginEof => f.write_str("origin closed the connection"),
            CloseReason::OriginError(e) => write!(f, "origin connection failed: {}", os(e)),
            CloseReason::IdleTimeout => f.write_str("no bytes moved for the idle timeout"),
            CloseReason::Shutdown => f.write_str("ringway is shutting down"),
            CloseReason::Operator => f.write_str("closed by an operator (ringctl tunnels close)"),
            CloseReason::ClientStalled => {
                f.write_str("client stopped reading for the send-stall timeout (Close 1008)")
            }
            CloseReason::OriginStalled => {
                f.write_str("origin stopped reading for the send-stall timeout (Close 1011)")
            }
        }
    }
}

/// An upgrade answered with an HTTP error instead of 101: what the client was told, and what it
/// asked for when its request could be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status sent.
    pub status: u16,
    /// The body sent (why, in words).
    pub reason: &'static str,
    /// The request's Host header, if the request parsed and had one.
    pub host: Option<String>,
    /// The request's path, if the request parsed.
    pub path: Option<String>,
}

/// Who closed a tunnel and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseRecord {
    /// The side that caused the close.
    pub by: Side,
    /// What happened.
    pub reason: CloseReason,
}

/// What the driver must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Intent {
    /// Open a TCP connection to the origin.
    ConnectOrigin(SocketAddr),
    /// Queue these bytes to the client (HTTP responses, Close frames).
    SendClient(Vec<u8>),
    /// Queue this Pong frame to the client, replacing one not yet sent (RFC 6455 §5.5.3: an
    /// endpoint may answer only the most recent Ping), so a Ping flood holds one frame at most.
    SendPong(Vec<u8>),
    /// Queue these bytes to the origin (payload pipelined behind the upgrade request).
    SendOrigin(Vec<u8>),
    /// Once the origin queue is empty: half-close (SHUT_WR), discard further input until EOF or
    /// the close timeout, then close the socket.
    CloseOrigin,
    /// The same for the client socket.
    CloseClient,
    /// Stop receiving from the origin and close it at once (a connect that will not complete).
    AbortOrigin,
    /// Once the client queue (ending with our Close frame) is sent, half-close the client
    /// (SHUT_WR: the server closes TCP first, RFC 6455 §7.1.1) but keep reading its frames until
    /// its Close or EOF: the client sees data, Close and FIN in one go.
    ShutClientWrite,
    /// Once the origin queue is empty: shut the origin's write side (SHUT_WR) and keep reading
    /// it (an L4 relay passing on the client's half-close).
    ShutOriginWrite,
    /// The tunnel reached `Closed`; [`Tunnel::close_record`] says why.
    Finished,
}

/// Byte counters of one tunnel (payload bytes, not frame overhead).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Payload bytes forwarded client → origin.
    pub to_origin: u64,
    /// Payload bytes forwarded origin → client.
    pub to_client: u64,
}

enum Phase {
    AwaitUpgrade(AwaitUpgrade),
    AwaitOrigin(AwaitOrigin),
    Relaying(Relaying),
    Closing(Closing),
    Closed,
}

/// One client connection's protocol state. See the module doc for the call order.
pub struct Tunnel {
    phase: Phase,
    /// Shared by every tunnel of a worker (one pointer per tunnel, not 64 bytes).
    config: Arc<TunnelConfig>,
    intents: VecDeque<Intent>,
    record: Option<CloseRecord>,
    /// Set when the upgrade was refused (rare: boxed, so a tunnel pays one pointer for it).
    refusal: Option<Box<Refusal>>,
    /// The TLS server name the client asked for (lowercase), for routes that match on it.
    sni: Option<Box<str>>,
    route: Option<u32>,
    idle_timeout: Option<Duration>,
    last_activity: Instant,
    stats: TunnelStats,
    /// Client input that forwarded no payload (frame headers, control frames, empty frames),
    /// in bytes, leaking at [`OVERHEAD_RATE`] since `overhead_at`.
    overhead: u32,
    overhead_at: Instant,
}

/// Bytes per second of client input that forwards no payload (frame headers, pings, pongs,
/// empty frames) a tunnel may send before its reads pause. Payload bytes are throttled by
/// backpressure (the origin's pace); this throttles the rest, so a flood of tiny frames or
/// pings costs the worker a bounded amount of work. Far above what small-message traffic
/// needs (20,000 messages a second carry about 120 KB/s of headers).
pub const OVERHEAD_RATE: u32 = 1 << 20;
/// Overhead bytes a tunnel may send in a burst before the rate applies.
pub const OVERHEAD_BURST: u32 = 256 << 10;

impl Tunnel {
    /// A tunnel for a freshly accepted client connection.
    pub fn new(config: impl Into<Arc<TunnelConfig>>, now: Instant) -> Tunnel {
        let config = config.into();
        Tunnel {
            phase: Phase::AwaitUpgrade(AwaitUpgrade::new(now + config.handshake_timeout)),
            config,
            intents: VecDeque::new(),
            record: None,
            refusal: None,
            sni: None,
            route: None,
            idle_timeout: None,
            last_activity: now,
            stats: TunnelStats::default(),
            overhead: 0,
            overhead_at: now,
        }
    }

    /// The TLS server name (SNI) of the client's connection, before its upgrade request is
    /// routed: routes may match on it.
    pub fn set_server_name(&mut self, name: &str) {
        self.sni = Some(name.to_ascii_lowercase().into_boxed_str());
    }

    /// Index of the route in the table the upgrade was looked up in.
    pub fn route(&self) -> Option<usize> {
        self.route.map(|r| r as usize)
    }

    /// Who closed the tunnel and why, once known.
    pub fn close_record(&self) -> Option<CloseRecord> {
        self.record
    }

    /// The HTTP error the upgrade was answered with, if it was refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        self.refusal.as_deref()
    }

    /// Payload byte counters.
    pub fn stats(&self) -> TunnelStats {
        self.stats
    }

    /// True once the tunnel has emitted [`Intent::Finished`].
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// True while the WebSocket is up (101 sent, no Close sent or received).
    pub fn is_relaying(&self) -> bool {
        matches!(self.phase, Phase::Relaying(_))
    }

    /// The next thing the driver must do.
    pub fn poll_intent(&mut self) -> Option<Intent> {
        let next = self.intents.pop_front();
        if next.is_none() && self.intents.capacity() > 0 && self.is_relaying() {
            // Setup is over; while relaying, intents are rare (pongs, the close), so an idle
            // tunnel should not keep the queue's memory.
            self.intents = VecDeque::new();
        }
        next
    }

    /// While the client has sent more overhead (frame headers, control frames) than
    /// [`OVERHEAD_RATE`] allows: the instant its reads may resume. The driver must not read
    /// the client before then; [`Tunnel::poll_timeout`] includes it.
    pub fn client_paused_until(&self) -> Option<Instant> {
        if self.overhead <= OVERHEAD_BURST {
            return None;
        }
        let excess = u64::from(self.overhead - OVERHEAD_BURST / 2);
        let wait = Duration::from_nanos(excess * 1_000_000_000 / u64::from(OVERHEAD_RATE));
        Some(self.overhead_at + wait)
    }

    /// Charges `bytes` of client input that carried no payload to the overhead budget: frame
    /// headers and control frames here, and the transport's own framing (TLS record headers
    /// and tags, from the caller), so a flood of tiny records, each costing a decryption,
    /// pauses the client as a flood of tiny frames does.
    pub fn charge_overhead(&mut self, bytes: usize, now: Instant) {
        let elapsed = now.saturating_duration_since(self.overhead_at);
        let leaked = elapsed.as_nanos() * u128::from(OVERHEAD_RATE) / 1_000_000_000;
        let left = u128::from(self.overhead).saturating_sub(leaked) as u32;
        self.overhead = left.saturating_add(u32::try_from(bytes).unwrap_or(u32::MAX));
        self.overhead_at = now;
    }

    /// When [`Tunnel::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::AwaitUpgrade(p) => Some(p.deadline),
            Phase::AwaitOrigin(p) => Some(p.deadline),
            Phase::Relaying(_) => {
                let idle = self.idle_timeout.map(|t| self.last_activity + t);
                match (idle, self.client_paused_until()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Phase::Closing(p) => Some(p.deadline),
            Phase::Closed => None,
        }
    }

    fn finish(&mut self, by: Side, reason: CloseReason) {
        self.record.get_or_insert(CloseRecord { by, reason });
    }

    /// Keeps the Host and path of a request that was routed but is refused (502, 503, 504).
    fn note_target(&mut self, p: AwaitOrigin) {
        self.refusal = Some(Box::new(Refusal {
            status: 0,
            reason: "",
            host: p.request.host,
            path: Some(p.request.path),
        }));
    }

    fn refuse(&mut self, status: u16, reason: &'static str, by: Side, why: CloseReason) {
        let extra: &[(&str, &str)] = if status == 426 {
            &[("Sec-WebSocket-Version", "13")]
        } else {
            &[]
        };
        self.refuse_with(status, reason, extra, by, why);
    }

    fn refuse_with(
        &mut self,
        status: u16,
        reason: &'static str,
        extra: &[(&str, &str)],
        by: Side,
        why: CloseReason,
    ) {
        let refusal = self.refusal.get_or_insert_with(|| {
            Box::new(Refusal {
                status,
                reason,
                host: None,
                path: None,
            })
        });
        refusal.status = status;
        refusal.reason = reason;
        let mut out = Vec::with_capacity(160);
        handshake::write_refusal(status, reason, extra, &mut out);
        self.intents.push_back(Intent::SendClient(out));
        self.intents.push_back(Intent::CloseClient);
        self.intents.push_back(Intent::Finished);
        self.finish(by, why);
        self.phase = Phase::Closed;
    }

    fn send_close(&mut self, code: Option<CloseCode>, reason: &str) {
        let mut frame = [0u8; 127];
        let n = encoder::close_frame(code, reason, &mut frame);
        self.intents
            .push_back(Intent::SendClient(frame[..n].to_vec()));
    }

    /// Bytes received from the client, in the caller's buffer. Returns the range of `buf` to
    /// forward to the origin (unmasked, contiguous); empty when there is nothing to forward.
    pub fn handle_client_bytes(
        &mut self,
        buf: &mut [u8],
        routes: &RouteTable,
        now: Instant,
    ) -> Range<usize> {
        match &mut self.phase {
            Phase::AwaitUpgrade(p) => {
                p.head.extend_from_slice(buf);
                self.try_upgrade(routes, now);
                0..0
            }
            Phase::AwaitOrigin(p) => {
                if p.pipelined.len() + buf.len() > self.config.max_header_bytes + 64 * 1024 {
                    self.intents.push_back(Intent::AbortOrigin);
                    self.refuse(
                        400,
                        "too many bytes sent before the upgrade completed",
                        Side::Client,
                        CloseReason::Refused(400),
                    );
                    return 0..0;
                }
                p.pipelined.extend_from_slice(buf);
                0..0
            }
            Phase::Relaying(r) => {
                self.last_activity = now;
                let (range, end) = decode_frames(&mut r.decoder, buf, &mut self.intents, true);
                self.stats.to_origin += range.len() as u64;
                self.charge_overhead(buf.len() - range.len(), now);
                if let Some(end) = end {
                    self.websocket_ended(end);
                }
                range
            }
            Phase::Closing(c) => {
                // We sent our Close: data is dropped, the client's Close (or an error) ends it.
                let (_, end) = decode_frames(&mut c.decoder, buf, &mut self.intents, false);
                if end.is_some() {
                    self.intents.push_back(Intent::CloseClient);
                    self.intents.push_back(Intent::Finished);
                    self.phase = Phase::Closed;
                }
                0..0
            }
            Phase::Closed => 0..0,
        }
    }

    fn try_upgrade(&mut self, routes: &RouteTable, now: Instant) {
        let Phase::AwaitUpgrade(p) = &self.phase else {
            return;
        };
        match handshake::parse_upgrade(&p.head, self.config.max_header_bytes) {
            Ok(None) => {}
            Err(e) => {
                let status = e.status();
                self.refuse(
                    status,
                    e.reason(),
                    Side::Client,
                    CloseReason::Refused(status),
                );
            }
            Ok(Some((req, head_len))) => {
                let found = routes.lookup_sni(req.host.as_deref(), self.sni.as_deref(), &req.path);
                let Some((idx, route)) = found else {
                    self.refusal = Some(Box::new(Refusal {
                        status: 404,
                        reason: "",
                        host: req.host,
                        path: Some(req.path),
                    }));
                    self.refuse(
                        404,
                        "no route for this path",
                        Side::Client,
                        CloseReason::Refused(404),
                    );
                    return;
                };
                self.route = u32::try_from(idx).ok();
                self.idle_timeout = route.idle_timeout;
                let origin = route.origin;
                let Phase::AwaitUpgrade(p) = std::mem::replace(&mut self.phase, Phase::Closed)
                else {
                    return;
                };
                let next = p.upgraded(req, head_len, now + self.config.connect_timeout);
                self.phase = Phase::AwaitOrigin(next);
                self.intents.push_back(Intent::ConnectOrigin(origin));
            }
        }
    }

    /// The origin accepted the connection: answer 101 and forward any pipelined bytes.
    pub fn handle_origin_connected(&mut self, now: Instant) {
        // In any other phase (a late or repeated completion) this is a no-op: the phase is put
        // back, never dropped.
        let p = match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::AwaitOrigin(p) => p,
            other => {
                self.phase = other;
                return;
            }
        };
        let mut response = Vec::with_capacity(160);
        handshake::write_switching_protocols(&p.request, &mut response);
        self.intents.push_back(Intent::SendClient(response));
        self.last_activity = now;
        let mut decoder = Decoder::new(DecoderLimits {
            max_payload: self.config.max_payload,
        });
        let client_eof = p.client_eof;
        let mut pipelined = p.pipelined;
        let after_101 = self.intents.len();
        let (range, end) = decode_frames(&mut decoder, &mut pipelined, &mut self.intents, true);
        self.stats.to_origin += range.len() as u64;
        if !range.is_empty() {
            pipelined.copy_within(range.clone(), 0);
            pipelined.truncate(range.len());
            // Right behind the 101, before any pong the decode queued.
            self.intents
                .insert(after_101, Intent::SendOrigin(pipelined));
        }
        self.phase = Phase::Relaying(Relaying::new(decoder));
        if let Some(end) = end {
            self.websocket_ended(end);
        }
        if client_eof {
            self.client_ended(CloseReason::ClientEof);
        }
    }

    /// The origin connection failed (negated errno from the kernel, or a positive errno).
    pub fn handle_origin_connect_failed(&mut self, errno: i32, _now: Instant) {
        let why = CloseReason::ConnectFailed(errno.abs());
        self.origin_unreachable(502, "origin refused the connection", Side::Origin, why);
    }

    /// The origin socket could not be created here (out of descriptors or memory): 503, since
    /// this server, not the origin, is out of resources.
    pub fn handle_origin_socket_failed(&mut self, errno: i32, _now: Instant) {
        let reason = "no resources to reach the origin, try again later";
        let why = CloseReason::OriginSocket(errno.abs());
        self.origin_unreachable(503, reason, Side::Server, why);
    }

    /// The route, or every origin its pool could use, is at its connection limit: 503 with
    /// `Retry-After: retry_after_s`, before any origin connect; tunnels already open are untouched.
    pub fn handle_over_limit(&mut self, retry_after_s: u32, _now: Instant) {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::AwaitOrigin(p) => {
                self.note_target(p);
                self.intents.push_back(Intent::AbortOrigin);
                let after = retry_after_s.to_string();
                self.refuse_with(
                    503,
                    "at its connection limit, try again later",
                    &[("Retry-After", &after)],
                    Side::Server,
                    CloseReason::OverLimit,
                );
            }
            other => self.phase = other,
        }
    }

    /// While waiting for the origin: the connect is abandoned and the upgrade refused. In any
    /// other phase (a late or repeated completion) nothing changes.
    fn origin_unreachable(
        &mut self,
        status: u16,
        reason: &'static str,
        by: Side,
        why: CloseReason,
    ) {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::AwaitOrigin(p) => self.refuse_routed(p, status, reason, by, why),
            other => self.phase = other,
        }
    }

    /// Refuses an upgrade that was routed (its Host and path kept for the log) and abandons
    /// the origin connect.
    fn refuse_routed(
        &mut self,
        p: AwaitOrigin,
        status: u16,
        reason: &'static str,
        by: Side,
        why: CloseReason,
    ) {
        self.note_target(p);
        self.intents.push_back(Intent::AbortOrigin);
        self.refuse(status, reason, by, why);
    }

    /// Bytes from the origin at `slot[payload]`; `slot` has at least
    /// [`encoder::HEADROOM`] bytes in front of the payload. Returns the range of the complete
    /// binary frame (header written into the headroom) to send to the client, or an empty range
    /// when the bytes must be dropped (the WebSocket is closing).
    pub fn handle_origin_bytes(
        &mut self,
        slot: &mut [u8],
        payload: Range<usize>,
        now: Instant,
    ) -> Range<usize> {
        if !matches!(self.phase, Phase::Relaying(_)) || payload.is_empty() {
            return 0..0;
        }
        self.last_activity = now;
        self.stats.to_client += payload.len() as u64;
        let start =
            encoder::write_header_before(slot, payload.start, Opcode::Binary, payload.len());
        start..payload.end
    }

    /// `n` origin bytes that reach the client without passing through here (spliced from the
    /// origin's socket): counted like [`Tunnel::handle_origin_bytes`]; returns the header of the
    /// Binary frame that carries them (`header[..len]`), or `None` when they are to be dropped
    /// (the tunnel is no longer relaying).
    pub fn frame_origin_bytes(&mut self, n: usize, now: Instant) -> Option<([u8; 10], usize)> {
        if !matches!(self.phase, Phase::Relaying(_)) || n == 0 {
            return None;
        }
        self.last_activity = now;
        self.stats.to_client += n as u64;
        let mut header = [0u8; 10];
        let len = encoder::server_header_len(n);
        encoder::write_header_before(&mut header, len, Opcode::Binary, n);
        Some((header, len))
    }

    /// The origin ended its stream: Close 1000 after the bytes already queued.
    pub fn handle_origin_eof(&mut self, now: Instant) {
        self.origin_ended(
            CloseReason::OriginEof,
            CloseCode::NORMAL,
            "origin closed",
            now,
        );
    }

    /// The origin's socket failed: Close 1011 after the bytes already queued.
    pub fn handle_origin_error(&mut self, errno: i32, now: Instant) {
        let why = CloseReason::OriginError(errno.abs());
        self.origin_ended(
            why,
            CloseCode::INTERNAL_ERROR,
            "origin connection failed",
            now,
        );
    }

    /// The server starts the closing handshake of a relaying tunnel: its Close after the bytes
    /// already queued, the client's FIN right behind it (reading goes on until the client's
    /// Close), the origin half-closed; then wait for the client's Close up to `close_timeout`.
    fn begin_closing(&mut self, r: Relaying, code: CloseCode, text: &str, now: Instant) {
        self.send_close(Some(code), text);
        self.intents.push_back(Intent::ShutClientWrite);
        self.intents.push_back(Intent::CloseOrigin);
        self.phase = Phase::Closing(Closing::new(
            r.into_decoder(),
            now + self.config.close_timeout,
        ));
    }

    fn origin_ended(&mut self, why: CloseReason, code: CloseCode, text: &str, now: Instant) {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Relaying(r) => {
                self.finish(Side::Origin, why);
                self.begin_closing(r, code, text, now);
            }
            other => self.phase = other,
        }
    }

    /// The client's stream ended without a Close frame (or after ours).
    pub fn handle_client_eof(&mut self, _now: Instant) {
        self.client_ended(CloseReason::ClientEof);
    }

    /// The client's TLS session failed: its connection ends (an alert already went out).
    pub fn handle_client_tls_failed(&mut self, _now: Instant) {
        self.client_ended(CloseReason::ClientTls);
    }

    /// The client's socket failed.
    pub fn handle_client_error(&mut self, errno: i32, _now: Instant) {
        self.client_ended(CloseReason::ClientError(errno.abs()));
    }

    fn client_ended(&mut self, why: CloseReason) {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Closed => {}
            Phase::AwaitOrigin(mut p)
                if why == CloseReason::ClientEof && !p.pipelined.is_empty() =>
            {
                // A client may send its request, its frames and its Close, then half-close:
                // what it pipelined is still delivered once the origin is up.
                p.client_eof = true;
                self.phase = Phase::AwaitOrigin(p);
            }
            Phase::AwaitOrigin(_) => {
                self.finish(Side::Client, why);
                self.intents.push_back(Intent::AbortOrigin);
                self.intents.push_back(Intent::CloseClient);
                self.intents.push_back(Intent::Finished);
            }
            Phase::AwaitUpgrade(_) => {
                self.finish(Side::Client, why);
                self.intents.push_back(Intent::CloseClient);
                self.intents.push_back(Intent::Finished);
            }
            Phase::Relaying(_) => {
                self.finish(Side::Client, why);
                self.intents.push_back(Intent::CloseOrigin);
                self.intents.push_back(Intent::CloseClient);
                self.intents.push_back(Intent::Finished);
            }
            Phase::Closing(_) => {
                self.intents.push_back(Intent::CloseClient);
                self.intents.push_back(Intent::Finished);
            }
        }
    }

    /// A deadline from [`Tunnel::poll_timeout`] passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::AwaitUpgrade(_) => {
                let why = CloseReason::HandshakeTimeout;
                self.refuse(
                    408,
                    "upgrade request not completed in time",
                    Side::Client,
                    why,
                );
            }
            Phase::AwaitOrigin(p) => {
                let why = CloseReason::ConnectTimeout;
                self.refuse_routed(p, 504, "origin did not accept in time", Side::Origin, why);
            }
            Phase::Relaying(r) => {
                let idle = self.idle_timeout.map(|t| self.last_activity + t);
                if idle.is_none_or(|t| t > now) {
                    // Only the overhead pause ended: nothing to do but read again.
                    self.charge_overhead(0, now);
                    self.phase = Phase::Relaying(r);
                    return;
                }
                self.finish(Side::Server, CloseReason::IdleTimeout);
                self.begin_closing(r, CloseCode::GOING_AWAY, "idle timeout", now);
            }
            Phase::Closing(_) => {
                self.intents.push_back(Intent::CloseClient);
                self.intents.push_back(Intent::Finished);
            }
            Phase::Closed => {}
        }
    }

    /// Bytes queued to the client made no progress for the send-stall timeout: the driver has
    /// already dropped them and aborts the client socket; the origin is half-closed.
    pub fn handle_client_stalled(&mut self, _now: Instant) {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Relaying(_) => {
                self.finish(Side::Client, CloseReason::ClientStalled);
                // Best effort: a client that reads again in time still learns why.
                self.send_close(Some(CloseCode::POLICY), "client stopped reading");
                self.intents.push_back(Intent::CloseOrigin);
                self.intents.push_back(Intent::CloseClient);
                self.intents.push_back(Intent::Finished);
            }
            other => {
                self.phase = other;
                self.client_ended(CloseReason::ClientStalled);
            }
        }
    }

    /// Bytes queued to the origin made no progress for the send-stall timeout: the driver
    /// aborts the origin socket; the client gets Close 1011 after its pending bytes.
    pub fn handle_origin_stalled(&mut self, now: Instant) {
        self.origin_ended(
            CloseReason::OriginStalled,
            CloseCode::INTERNAL_ERROR,
            "origin stopped reading",
            now,
        );
    }

    /// Graceful shutdown: open tunnels get Close 1001 after their queued bytes; tunnels not yet
    /// up are refused with 503.
    pub fn handle_shutdown(&mut self, now: Instant) {
        self.going_away(CloseReason::Shutdown, "server shutting down", now);
    }

    /// An operator closes this tunnel: as a shutdown does (Close 1001 after the queued bytes,
    /// origin half-closed; 503 before the upgrade), with its own reason.
    pub fn handle_operator_close(&mut self, now: Instant) {
        self.going_away(CloseReason::Operator, "closed by operator", now);
    }

    fn going_away(&mut self, why: CloseReason, text: &'static str, now: Instant) {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::AwaitUpgrade(_) => self.refuse(503, text, Side::Server, why),
            Phase::AwaitOrigin(p) => self.refuse_routed(p, 503, text, Side::Server, why),
            Phase::Relaying(r) => {
                self.finish(Side::Server, why);
                self.begin_closing(r, CloseCode::GOING_AWAY, text, now);
            }
            other => self.phase = other,
        }
    }

    /// The client's Close or a protocol error ended the WebSocket: echo the peer's code (an
    /// empty Close answers an empty Close) or close with the error's code, after the forwarded
    /// bytes; half-close the origin.
    fn websocket_ended(&mut self, end: Event) {
        match end {
            Event::Close { code } => {
                self.finish(Side::Client, CloseReason::ClientClose(code.map(|c| c.0)));
                self.send_close(code, "");
            }
            Event::Error(code) => {
                self.finish(Side::Client, CloseReason::Protocol(code.0));
                self.send_close(Some(code), protocol_reason(code));
            }
            Event::Ping | Event::Pong => return,
        }
        self.intents.push_back(Intent::CloseOrigin);
        self.intents.push_back(Intent::CloseClient);
        self.intents.push_back(Intent::Finished);
        self.phase = Phase::Closed;
    }
}

/// Decodes client frames in `buf`. With `relaying`, the latest Ping is answered (a Pong
/// intent) and the unmasked payloads, moved together in place, are returned as one contiguous
/// range; without it (closing) data and pings are dropped. Stops at a Close or a protocol
/// error and returns it.
fn decode_frames(
    decoder: &mut Decoder,
    buf: &mut [u8],
    intents: &mut VecDeque<Intent>,
    relaying: bool,
) -> (Range<usize>, Option<Event>) {
    let all = decoder.decode_all(buf, relaying);
    if let (true, Some((ping, n))) = (relaying, all.ping) {
        let mut frame = [0u8; 127];
        let len = encoder::control_frame(Opcode::Pong, &ping[..n], &mut frame);
        intents.push_back(Intent::SendPong(frame[..len].to_vec()));
    }
    (all.data, all.end)
}

fn protocol_reason(code: CloseCode) -> &'static str {
    match code {
        CloseCode::TOO_BIG => "frame too large",
        CloseCode::INVALID_PAYLOAD => "invalid UTF-8 in text message",
        _ => "protocol error",
    }
}
