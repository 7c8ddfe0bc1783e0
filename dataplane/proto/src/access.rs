//! The client role of a tunnel, for `ringway access`: a local TCP connection (the "client"
//! side) carried to the edge over a WebSocket it opens (the "origin" side, usually behind TLS,
//! which the driver handles).
//!
//! Phases: `Connecting` (the TCP connect to the edge) → `AwaitResponse` (request sent) →
//! `Relaying` → `Closing` (our Close sent, waiting for the edge's) → `Closed`. Local bytes are
//! framed in place into masked binary frames (a fresh key each, RFC 6455 §5.3); the edge's
//! frames are decoded in place. Local bytes that arrive before the 101 are held (bounded) and
//! sent right after it.
//!
//! The intents are the server tunnel's ([`Intent`]), with the sides as the driver sees them:
//! `SendOrigin` carries the request and control frames to the edge, `SendClient` bytes to the
//! local connection.
//!
//! Invariants: nothing reaches the edge before its 101 but the request; every frame to the
//! edge is masked; a refused upgrade ends the local connection without a byte, and the reason
//! (status, phrase, body) is kept for the log ([`AccessTunnel::failure`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

use crate::tunnel::{CloseReason, CloseRecord, Intent, Side, TunnelStats};
use crate::ws::client::{
    mask_in_place, masked_control, parse_response, write_request, ClientRequest, ResponseError,
    CLIENT_HEADROOM,
};
use crate::ws::decoder::{Decoder, DecoderLimits, Event};
use crate::ws::frame::{CloseCode, Opcode};

/// What every access tunnel of a process shares.
#[derive(Clone, Debug)]
pub struct AccessConfig {
    /// The edge's address (resolved once at start).
    pub edge: SocketAddr,
    /// The Host header (`host[:port]`).
    pub host: String,
    /// The request target (path and query).
    pub path: String,
    /// Extra request headers (`Authorization: ...`).
    pub headers: Vec<(String, String)>,
    pub connect_timeout: Duration,
    /// The edge must answer the upgrade (TLS included) within this.
    pub handshake_timeout: Duration,
    pub close_timeout: Duration,
    /// Largest frame payload accepted from the edge.
    pub max_payload: u64,
    /// Local bytes held until the upgrade completes; more ends the connection.
    pub max_pending: usize,
}

/// Largest upgrade response head accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

enum Phase {
    Connecting { deadline: Instant },
    AwaitResponse { deadline: Instant, head: Vec<u8> },
    Relaying,
    Closing { deadline: Instant },
    Closed,
}

/// One local connection's tunnel to the edge.
pub struct AccessTunnel {
    phase: Phase,
    config: Arc<AccessConfig>,
    intents: VecDeque<Intent>,
    record: Option<CloseRecord>,
    failure: Option<String>,
    stats: TunnelStats,
    nonce: [u8; 16],
    key: [u8; 24],
    decoder: Decoder,
    /// Local bytes that arrived before the 101.
    pending: Vec<u8>,
    local_eof: bool,
    /// Masking keys: a ChaCha12 stream seeded from the caller's random source, so no key tells
    /// anything about the next (RFC 6455 §5.3). Boxed: a session enum holds this tunnel inline.
    keys: Box<ChaCha12Rng>,
}

impl AccessTunnel {
    /// A tunnel for a freshly accepted local connection. `nonce` (the Sec-WebSocket-Key) and
    /// `seed` (of the masking keys' stream) come from the caller's strong random source.
    pub fn new(config: Arc<AccessConfig>, nonce: [u8; 16], seed: [u8; 32], now: Instant) -> Self {
        let mut intents = VecDeque::new();
        intents.push_back(Intent::ConnectOrigin(config.edge));
        AccessTunnel {
            phase: Phase::Connecting {
                deadline: now + config.connect_timeout,
            },
            decoder: Decoder::for_server_frames(DecoderLimits {
                max_payload: config.max_payload,
            }),
            config,
            intents,
            record: None,
            failure: None,
            stats: TunnelStats::default(),
            nonce,
            key: [0; 24],
            pending: Vec::new(),
            local_eof: false,
            keys: Box::new(ChaCha12Rng::from_seed(seed)),
        }
    }

    pub fn poll_intent(&mut self) -> Option<Intent> {
        self.intents.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Connecting { deadline }
            | Phase::AwaitResponse { deadline, .. }
            | Phase::Closing { deadline } => Some(*deadline),
            Phase::Relaying | Phase::Closed => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The WebSocket to the edge is up (101 checked, no Close yet).
    pub fn is_relaying(&self) -> bool {
        matches!(self.phase, Phase::Relaying)
    }

    pub fn close_record(&self) -> Option<CloseRecord> {
        self.record
    }

    /// Why the tunnel could not be opened (the edge's refusal, a bad 101...), in words.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Who ended the tunnel and why, in words, as this side sees it: `local` (the local TCP
    /// client), `edge` or `ringway`; what the edge said when the tunnel could not be opened.
    pub fn close_account(&self) -> Option<(&'static str, String)> {
        let r = self.record?;
        let by = match r.by {
            Side::Client => "local",
            Side::Origin => "edge",
            Side::Server => "ringway",
        };
        let why = match (&self.failure, r.reason) {
            (Some(failure), _) => failure.clone(),
            (None, CloseReason::ClientEof) => "the local client closed the connection".into(),
            (None, CloseReason::ClientClose(Some(code))) => {
                format!("the edge sent Close {code} ({})", CloseCode(code).name())
            }
            (None, CloseReason::ClientClose(None)) => "the edge sent Close without a code".into(),
            (None, reason) => reason.to_string(),
        };
        Some((by, why))
    }

    pub fn stats(&self) -> TunnelStats {
        self.stats
    }

    fn mask_key(&mut self) -> [u8; 4] {
        self.keys.next_u32().to_le_bytes()
    }

    fn control(&mut self, opcode: Opcode, payload: &[u8]) {
        let key = self.mask_key();
        self.intents
            .push_back(Intent::SendOrigin(masked_control(opcode, payload, key)));
    }

    fn finish(&mut self, by: Side, reason: CloseReason) {
        self.record.get_or_insert(CloseRecord { by, reason });
    }

    /// Ends everything at once (nothing to flush to the edge).
    fn fail(&mut self, by: Side, reason: CloseReason, why: Option<String>) {
        self.end(by, reason, why, Intent::AbortOrigin);
    }

    /// Ends everything, the edge socket by `origin` (`AbortOrigin` or `CloseOrigin`).
    fn end(&mut self, by: Side, reason: CloseReason, why: Option<String>, origin: Intent) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        self.finish(by, reason);
        if why.is_some() {
            self.failure = why;
        }
        self.intents.push_back(origin);
        self.intents.push_back(Intent::CloseClient);
        self.intents.push_back(Intent::Finished);
        self.phase = Phase::Closed;
    }

    /// The TCP connection to the edge is up (TLS, if any, starts now, in the driver): send the
    /// upgrade request.
    pub fn handle_origin_connected(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Connecting { .. }) {
            return;
        }
        let headers: Vec<(&str, &str)> = self
            .config
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let req = ClientRequest {
            host: &self.config.host,
            path: &self.config.path,
            protocols: &["binary"],
            headers: &headers,
        };
        let mut out = Vec::with_capacity(256);
        self.key = write_request(&req, self.nonce, &mut out);
        self.intents.push_back(Intent::SendOrigin(out));
        self.phase = Phase::AwaitResponse {
            deadline: now + self.config.handshake_timeout,
            head: Vec::new(),
        };
    }

    pub fn handle_origin_connect_failed(&mut self, errno: i32, _now: Instant) {
        let why = format!(
            "cannot reach the edge {}: {}",
            self.config.edge,
            std::io::Error::from_raw_os_error(errno.abs())
        );
        self.fail(
            Side::Origin,
            CloseReason::ConnectFailed(errno.abs()),
            Some(why),
        );
    }

    /// The edge's TLS session failed (verification, handshake): `why` in words.
    /// The alert rustls queued goes out before the FIN (`CloseOrigin`, not an abort), so the
    /// edge learns why the handshake ended rather than meeting a reset.
    pub fn handle_origin_tls_failed(&mut self, why: String) {
        self.end(
            Side::Origin,
            CloseReason::OriginError(libc_eproto()),
            Some(why),
            Intent::CloseOrigin,
        );
    }

    /// Bytes from the local connection at `slot[payload]`, with room for a frame header in
    /// front. Returns the range of `slot` to send to the edge (one masked frame), or empty.
    pub fn handle_client_bytes(
        &mut self,
        slot: &mut [u8],
        payload: Range<usize>,
        _now: Instant,
    ) -> Range<usize> {
        match self.phase {
            Phase::Relaying if !payload.is_empty() => {
                self.stats.to_origin += payload.len() as u64;
                let key = self.mask_key();
                mask_in_place(slot, payload, key)
            }
            Phase::Connecting { .. } | Phase::AwaitResponse { .. } => {
                if self.pending.len() + payload.len() > self.config.max_pending {
                    let why = "the local client sent too much before the tunnel was up".into();
                    self.fail(Side::Client, CloseReason::Refused(413), Some(why));
                } else {
                    self.pending.extend_from_slice(&slot[payload]);
                }
                0..0
            }
            _ => 0..0,
        }
    }

    /// Plaintext from the edge (after TLS). Returns the range of `buf` to send to the local
    /// connection (payload, contiguous), or empty.
    pub fn handle_origin_bytes(&mut self, buf: &mut [u8], now: Instant) -> Range<usize> {
        match &mut self.phase {
            Phase::AwaitResponse { head, .. } => {
                head.extend_from_slice(buf);
                match parse_response(head, &self.key, &["binary"], MAX_RESPONSE_HEAD) {
                    Ok(None) => 0..0,
                    Ok(Some(up)) => {
                        let mut rest = head.split_off(up.head_len);
                        self.phase = Phase::Relaying;
                        self.flush_pending(now);
                        let r = self.decode(&mut rest, now);
                        if !r.is_empty() {
                            self.intents.push_back(Intent::SendClient(rest[r].to_vec()));
                        }
                        0..0
                    }
                    Err(e) => {
                        let reason = match &e {
                            ResponseError::Refused { status, .. } => CloseReason::Refused(*status),
                            _ => CloseReason::OriginError(libc_eproto()),
                        };
                        self.fail(Side::Origin, reason, Some(e.to_string()));
                        0..0
                    }
                }
            }
            Phase::Relaying | Phase::Closing { .. } => self.decode(buf, now),
            _ => 0..0,
        }
    }

    fn flush_pending(&mut self, now: Instant) {
        if !self.pending.is_empty() {
            // One masked frame, built in one buffer: headroom, then the held bytes.
            let mut frame = vec![0u8; CLIENT_HEADROOM];
            frame.append(&mut self.pending);
            self.stats.to_origin += (frame.len() - CLIENT_HEADROOM) as u64;
            let key = self.mask_key();
            let end = frame.len();
            let r = mask_in_place(&mut frame, CLIENT_HEADROOM..end, key);
            frame.drain(..r.start);
            self.intents.push_back(Intent::SendOrigin(frame));
        }
        if self.local_eof {
            self.begin_closing(now);
        }
    }

    fn decode(&mut self, buf: &mut [u8], now: Instant) -> Range<usize> {
        let relaying = matches!(self.phase, Phase::Relaying);
        let all = self.decoder.decode_all(buf, relaying);
        if let (true, Some((ping, n))) = (relaying, all.ping) {
            self.control(Opcode::Pong, &ping[..n]);
        }
        match all.end {
            Some(Event::Close { code }) => self.edge_closed(code, now),
            Some(Event::Error(code)) => {
                self.finish(Side::Origin, CloseReason::Protocol(code.0));
                self.control(Opcode::Close, &code.0.to_be_bytes());
                self.end_both();
            }
            _ => {}
        }
        self.stats.to_client += all.data.len() as u64;
        all.data
    }

    /// The edge sent Close: answer it (unless we sent ours first), then end both sides after
    /// what is queued.
    fn edge_closed(&mut self, code: Option<CloseCode>, _now: Instant) {
        let ours_first = matches!(self.phase, Phase::Closing { .. });
        self.finish(Side::Origin, CloseReason::ClientClose(code.map(|c| c.0)));
        if !ours_first {
            let payload = code.map(|c| c.0.to_be_bytes().to_vec()).unwrap_or_default();
            self.control(Opcode::Close, &payload);
        }
        self.end_both();
    }

    fn end_both(&mut self) {
        self.intents.push_back(Intent::CloseOrigin);
        self.intents.push_back(Intent::CloseClient);
        self.intents.push_back(Intent::Finished);
        self.phase = Phase::Closed;
    }

    fn begin_closing(&mut self, now: Instant) {
        self.finish(Side::Client, CloseReason::ClientEof);
        self.control(Opcode::Close, &CloseCode::NORMAL.0.to_be_bytes());
        self.phase = Phase::Closing {
            deadline: now + self.config.close_timeout,
        };
    }

    /// The local connection ended: Close 1000 to the edge, then wait for its Close.
    pub fn handle_client_eof(&mut self, now: Instant) {
        match self.phase {
            Phase::Relaying => self.begin_closing(now),
            Phase::Connecting { .. } | Phase::AwaitResponse { .. } if !self.pending.is_empty() => {
                // Deliver what was sent, then close, once the tunnel is up.
                self.local_eof = true;
            }
            Phase::Connecting { .. } | Phase::AwaitResponse { .. } => {
                self.fail(Side::Client, CloseReason::ClientEof, None)
            }
            _ => {}
        }
    }

    pub fn handle_client_error(&mut self, errno: i32, _now: Instant) {
        match self.phase {
            Phase::Relaying => {
                self.finish(Side::Client, CloseReason::ClientError(errno.abs()));
                self.control(Opcode::Close, &CloseCode::GOING_AWAY.0.to_be_bytes());
                self.end_both();
            }
            _ => self.fail(Side::Client, CloseReason::ClientError(errno.abs()), None),
        }
    }

    /// The edge's stream ended (after our Close, that is the end; before, an abrupt end).
    pub fn handle_origin_eof(&mut self, _now: Instant) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        if matches!(
            self.phase,
            Phase::AwaitResponse { .. } | Phase::Connecting { .. }
        ) {
            let why = "the edge closed the connection before answering the upgrade".into();
            self.fail(Side::Origin, CloseReason::OriginEof, Some(why));
            return;
        }
        self.finish(Side::Origin, CloseReason::OriginEof);
        self.end_both();
    }

    pub fn handle_origin_error(&mut self, errno: i32, _now: Instant) {
        self.fail(Side::Origin, CloseReason::OriginError(errno.abs()), None);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        match self.phase {
            Phase::Connecting { .. } => {
                let why = format!("the edge {} did not accept in time", self.config.edge);
                self.fail(Side::Origin, CloseReason::ConnectTimeout, Some(why));
            }
            Phase::AwaitResponse { .. } => {
                let why = "the edge did not answer the upgrade in time".into();
                self.fail(Side::Origin, CloseReason::HandshakeTimeout, Some(why));
            }
            Phase::Closing { .. } => self.end_both(),
            _ => {}
        }
    }

    /// Shutdown: Close 1001 to the edge for open tunnels; the rest end at once.
    pub fn handle_shutdown(&mut self, now: Instant) {
        match self.phase {
            Phase::Relaying => {
                self.finish(Side::Server, CloseReason::Shutdown);
                self.control(Opcode::Close, &CloseCode::GOING_AWAY.0.to_be_bytes());
                self.phase = Phase::Closing {
                    deadline: now + self.config.close_timeout,
                };
            }
            Phase::Closing { .. } | Phase::Closed => {}
            _ => self.fail(Side::Server, CloseReason::Shutdown, None),
        }
    }
}

/// EPROTO: a protocol failure with the edge, for records that carry an errno.
fn libc_eproto() -> i32 {
    71
}

#[cfg(test)]
mod tests;
