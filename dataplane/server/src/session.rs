//! What runs on a connection between its client socket and its origin socket. Today a
//! connection is a WebSocket tunnel (`ringway_proto::tunnel::Tunnel`); a plain TCP (L4) relay
//! will be a second variant behind the same calls, so the worker's dispatch and the socket
//! machines stay as they are.
//!
//! The seam is sans-IO like the tunnel: bytes and `now` in through `handle_*`, intents out
//! through [`Session::poll_intent`], the next deadline from [`Session::poll_timeout`].

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use ringway_proto::access::{AccessConfig, AccessTunnel};
use ringway_proto::route::RouteTable;
use ringway_proto::tcp::{TcpConfig, TcpRelay};
use ringway_proto::tunnel::{
    CloseReason, CloseRecord, Intent, Refusal, Tunnel, TunnelConfig, TunnelStats,
};

pub enum Session {
    /// RFC 6455 tunnel: upgrade, route, origin connect, frames both ways.
    WebSocket(Tunnel),
    /// `ringway access`: a local TCP connection (the client side) carried to the edge over a
    /// WebSocket this side opens (the origin side).
    Access(AccessTunnel),
    /// A `mode = "tcp"` listener's connection: bytes unchanged both ways to its origin; the
    /// name is the listener's route name in logs and figures.
    Tcp(TcpRelay, Arc<str>),
}

impl Session {
    pub fn websocket(config: Arc<TunnelConfig>, now: Instant) -> Session {
        Session::WebSocket(Tunnel::new(config, now))
    }

    pub fn access(
        config: Arc<AccessConfig>,
        nonce: [u8; 16],
        seed: [u8; 32],
        now: Instant,
    ) -> Session {
        Session::Access(AccessTunnel::new(config, nonce, seed, now))
    }

    pub fn tcp(config: TcpConfig, name: Arc<str>, now: Instant) -> Session {
        Session::Tcp(TcpRelay::new(config, now), name)
    }

    /// An L4 connection's route name (its listener's).
    pub fn l4_name(&self) -> Option<&str> {
        match self {
            Session::Tcp(_, name) => Some(name),
            _ => None,
        }
    }

    /// The WebSocket is up (101 seen or sent, no Close yet).
    pub fn is_relaying(&self) -> bool {
        match self {
            Session::WebSocket(t) => t.is_relaying(),
            Session::Access(t) => t.is_relaying(),
            Session::Tcp(t, _) => t.is_relaying(),
        }
    }

    /// Who ended the connection and why, in words, for its close line. `tls_error`: the detail
    /// of a failed TLS session, if any.
    pub fn close_account(&self, tls_error: Option<&str>) -> Option<(String, String)> {
        match self {
            Session::WebSocket(t) => t.close_record().map(|r| {
                let why = match tls_error {
                    Some(tls) => format!("{}: {tls}", r.reason),
                    None => r.reason.to_string(),
                };
                (r.by.to_string(), why)
            }),
            // The access tunnel's own account already holds what the edge or TLS said.
            Session::Access(t) => t.close_account().map(|(by, why)| (by.to_string(), why)),
            Session::Tcp(t, _) => t
                .close_record()
                .map(|r| (r.by.to_string(), r.reason.to_string())),
        }
    }

    /// Bytes received from the origin (`from_origin`) or the client, at `slot[payload]`,
    /// transformed in place; returns the range of `slot` to forward to the other side.
    /// Headroom in front of `payload` lets a frame header be written there (server frames
    /// toward a WebSocket client, masked frames toward an access edge).
    pub fn handle_bytes(
        &mut self,
        from_origin: bool,
        slot: &mut [u8],
        payload: Range<usize>,
        routes: &RouteTable,
        now: Instant,
    ) -> Range<usize> {
        let within = |r: Range<usize>| (payload.start + r.start)..(payload.start + r.end);
        match self {
            Session::WebSocket(t) if from_origin => t.handle_origin_bytes(slot, payload, now),
            Session::WebSocket(t) => {
                within(t.handle_client_bytes(&mut slot[payload.clone()], routes, now))
            }
            Session::Access(t) if from_origin => {
                within(t.handle_origin_bytes(&mut slot[payload.clone()], now))
            }
            Session::Access(t) => t.handle_client_bytes(slot, payload, now),
            Session::Tcp(t, _) if from_origin => {
                t.handle_origin_bytes(payload.len(), now);
                payload
            }
            Session::Tcp(t, _) => {
                t.handle_client_bytes(payload.len(), now);
                payload
            }
        }
    }

    /// `n` bytes from the origin (`from_origin`) or the client went into a pipe unchanged, to be
    /// spliced on (only an L4 relay's bytes, which need no transformation, are spliced).
    pub fn handle_spliced(&mut self, from_origin: bool, n: usize, now: Instant) {
        match self {
            Session::Tcp(t, _) if from_origin => t.handle_origin_bytes(n, now),
            Session::Tcp(t, _) => t.handle_client_bytes(n, now),
            Session::WebSocket(_) | Session::Access(_) => {}
        }
    }

    /// Whether bytes from `from_origin`'s side may be spliced on: `Some(false)` as they are (an
    /// L4 relay), `Some(true)` behind a frame header ([`Session::frame_spliced`]: a relaying
    /// WebSocket tunnel's origin bytes), `None` not at all (they are transformed here).
    pub fn splices(&self, from_origin: bool) -> Option<bool> {
        match self {
            Session::Tcp(..) => Some(false),
            Session::WebSocket(t) if from_origin && t.is_relaying() => Some(true),
            Session::WebSocket(_) | Session::Access(_) => None,
        }
    }

    /// `n` origin bytes spliced toward a WebSocket client: counted, and the header of the frame
    /// that carries them (`None`: drop them, the tunnel no longer relays).
    pub fn frame_spliced(&mut self, n: usize, now: Instant) -> Option<([u8; 10], usize)> {
        match self {
            Session::WebSocket(t) => t.frame_origin_bytes(n, now),
            Session::Access(_) | Session::Tcp(..) => None,
        }
    }

    pub fn handle_origin_connected(&mut self, now: Instant) {
        match self {
            Session::WebSocket(t) => t.handle_origin_connected(now),
            Session::Access(t) => t.handle_origin_connected(now),
            Session::Tcp(t, _) => t.handle_origin_connected(now),
        }
    }

    pub fn handle_origin_connect_failed(&mut self, errno: i32, now: Instant) {
        match self {
            Session::WebSocket(t) => t.handle_origin_connect_failed(errno, now),
            Session::Access(t) => t.handle_origin_connect_failed(errno, now),
            Session::Tcp(t, _) => t.handle_origin_connect_failed(errno, now),
        }
    }

    pub fn handle_eof(&mut self, from_origin: bool, now: Instant) {
        match self {
            Session::WebSocket(t) if from_origin => t.handle_origin_eof(now),
            Session::WebSocket(t) => t.handle_client_eof(now),
            Session::Access(t) if from_origin => t.handle_origin_eof(now),
            Session::Access(t) => t.handle_client_eof(now),
            Session::Tcp(t, _) if from_origin => t.handle_origin_eof(now),
            Session::Tcp(t, _) => t.handle_client_eof(now),
        }
    }

    pub fn handle_error(&mut self, from_origin: bool, errno: i32, now: Instant) {
        match self {
            Session::WebSocket(t) if from_origin => t.handle_origin_error(errno, now),
            Session::WebSocket(t) => t.handle_client_error(errno, now),
            Session::Access(t) if from_origin => t.handle_origin_error(errno, now),
            Session::Access(t) => t.handle_client_error(errno, now),
            Session::Tcp(t, _) if from_origin => t.handle_origin_error(errno, now),
            Session::Tcp(t, _) => t.handle_client_error(errno, now),
        }
    }

    /// The socket toward `origin` (or the client) stopped taking bytes for the stall timeout.
    pub fn handle_stalled(&mut self, origin: bool, now: Instant) {
        match self {
            Session::WebSocket(t) if origin => t.handle_origin_stalled(now),
            Session::WebSocket(t) => t.handle_client_stalled(now),
            Session::Access(t) if origin => t.handle_origin_error(libc::ETIMEDOUT, now),
            Session::Access(t) => t.handle_client_error(libc::ETIMEDOUT, now),
            Session::Tcp(t, _) => t.handle_stalled(origin, now),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self {
            Session::WebSocket(t) => t.handle_timeout(now),
            Session::Access(t) => t.handle_timeout(now),
            Session::Tcp(t, _) => t.handle_timeout(now),
        }
    }

    pub fn handle_shutdown(&mut self, now: Instant) {
        match self {
            Session::WebSocket(t) => t.handle_shutdown(now),
            Session::Access(t) => t.handle_shutdown(now),
            Session::Tcp(t, _) => t.handle_shutdown(CloseReason::Shutdown, now),
        }
    }

    /// `ringctl tunnels close`: Close 1001 after the queued bytes, the origin half-closed.
    pub fn handle_operator_close(&mut self, now: Instant) {
        match self {
            Session::WebSocket(t) => t.handle_operator_close(now),
            Session::Access(t) => t.handle_shutdown(now),
            Session::Tcp(t, _) => t.handle_shutdown(CloseReason::Operator, now),
        }
    }

    pub fn poll_intent(&mut self) -> Option<Intent> {
        match self {
            Session::WebSocket(t) => t.poll_intent(),
            Session::Access(t) => t.poll_intent(),
            Session::Tcp(t, _) => t.poll_intent(),
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Session::WebSocket(t) => t.poll_timeout(),
            Session::Access(t) => t.poll_timeout(),
            Session::Tcp(t, _) => t.poll_timeout(),
        }
    }

    /// The client's transport spent `bytes` of its input on framing of its own (TLS records):
    /// charged to a WebSocket client's overhead budget like frame headers.
    pub fn charge_transport_overhead(&mut self, bytes: usize, now: Instant) {
        if let Session::WebSocket(t) = self {
            t.charge_overhead(bytes, now);
        }
    }

    /// Whether the client must not be read at `now`: a WebSocket client that sent more frame
    /// overhead than allowed (until its pause ends), an L4 client before its origin is up
    /// (nothing is buffered for an unconnected origin).
    pub fn client_paused(&self, now: Instant) -> bool {
        match self {
            Session::WebSocket(t) => t.client_paused_until().is_some_and(|t| t > now),
            Session::Access(_) => false,
            Session::Tcp(t, _) => t.client_paused(),
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Session::WebSocket(t) => t.is_closed(),
            Session::Access(t) => t.is_closed(),
            Session::Tcp(t, _) => t.is_closed(),
        }
    }

    pub fn route(&self) -> Option<usize> {
        match self {
            Session::WebSocket(t) => t.route(),
            Session::Access(_) | Session::Tcp(..) => None,
        }
    }

    /// The TLS server name of the client's connection, before its upgrade request is routed.
    pub fn set_server_name(&mut self, name: &str) {
        match self {
            Session::WebSocket(t) => t.set_server_name(name),
            Session::Access(_) | Session::Tcp(..) => {}
        }
    }

    /// The TLS session toward the origin (`from_origin`: an access edge) or the client failed;
    /// `why` in words. An alert, if any, is already queued.
    pub fn handle_tls_failed(&mut self, from_origin: bool, why: &str, now: Instant) {
        match self {
            Session::WebSocket(t) => t.handle_client_tls_failed(now),
            Session::Access(t) if from_origin => {
                t.handle_origin_tls_failed(format!("TLS with the edge failed: {why}"))
            }
            Session::Access(t) => t.handle_client_error(libc::EPROTO, now),
            Session::Tcp(t, _) => t.handle_client_error(libc::EPROTO, now),
        }
    }

    /// The route or its pool is at a connection limit: 503 with Retry-After, before any connect.
    pub fn handle_over_limit(&mut self, retry_after_s: u32, now: Instant) {
        match self {
            Session::WebSocket(t) => t.handle_over_limit(retry_after_s, now),
            // Neither has routes or pools.
            Session::Access(_) | Session::Tcp(..) => {}
        }
    }

    /// The origin socket could not be created (out of descriptors or memory).
    pub fn handle_origin_socket_failed(&mut self, errno: i32, now: Instant) {
        match self {
            Session::WebSocket(t) => t.handle_origin_socket_failed(errno, now),
            Session::Access(t) => t.handle_origin_connect_failed(errno, now),
            Session::Tcp(t, _) => t.handle_origin_socket_failed(errno, now),
        }
    }

    /// The HTTP error the client was answered with, if it was refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Session::WebSocket(t) => t.refusal(),
            Session::Access(_) | Session::Tcp(..) => None,
        }
    }

    pub fn close_record(&self) -> Option<CloseRecord> {
        match self {
            Session::WebSocket(t) => t.close_record(),
            Session::Access(t) => t.close_record(),
            Session::Tcp(t, _) => t.close_record(),
        }
    }

    pub fn stats(&self) -> TunnelStats {
        match self {
            Session::WebSocket(t) => t.stats(),
            Session::Access(t) => t.stats(),
            Session::Tcp(t, _) => t.stats(),
        }
    }
}
