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

use ringway_proto::route::RouteTable;
use ringway_proto::tunnel::{CloseRecord, Intent, Refusal, Tunnel, TunnelConfig, TunnelStats};

pub enum Session {
    /// RFC 6455 tunnel: upgrade, route, origin connect, frames both ways.
    WebSocket(Tunnel),
}

impl Session {
    pub fn websocket(config: Arc<TunnelConfig>, now: Instant) -> Session {
        Session::WebSocket(Tunnel::new(config, now))
    }

    /// Client bytes in `buf` (transformed in place); the range to forward to the origin.
    pub fn handle_client_bytes(
        &mut self,
        buf: &mut [u8],
        routes: &RouteTable,
        now: Instant,
    ) -> Range<usize> {
        match self {
            Session::WebSocket(t) => t.handle_client_bytes(buf, routes, now),
        }
    }

    /// Origin bytes at `slot[payload]`; the range of `slot` to send to the client.
    pub fn handle_origin_bytes(
        &mut self,
        slot: &mut [u8],
        payload: Range<usize>,
        now: Instant,
    ) -> Range<usize> {
        match self {
            Session::WebSocket(t) => t.handle_origin_bytes(slot, payload, now),
        }
    }

    pub fn handle_origin_connected(&mut self, now: Instant) {
        match self {
            Session::WebSocket(t) => t.handle_origin_connected(now),
        }
    }

    pub fn handle_origin_connect_failed(&mut self, errno: i32, now: Instant) {
        match self {
            Session::WebSocket(t) => t.handle_origin_connect_failed(errno, now),
        }
    }

    pub fn handle_eof(&mut self, from_origin: bool, now: Instant) {
        match self {
            Session::WebSocket(t) if from_origin => t.handle_origin_eof(now),
            Session::WebSocket(t) => t.handle_client_eof(now),
        }
    }

    pub fn handle_error(&mut self, from_origin: bool, errno: i32, now: Instant) {
        match self {
            Session::WebSocket(t) if from_origin => t.handle_origin_error(errno, now),
            Session::WebSocket(t) => t.handle_client_error(errno, now),
        }
    }

    /// The socket toward `origin` (or the client) stopped taking bytes for the stall timeout.
    pub fn handle_stalled(&mut self, origin: bool, now: Instant) {
        match self {
            Session::WebSocket(t) if origin => t.handle_origin_stalled(now),
            Session::WebSocket(t) => t.handle_client_stalled(now),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self {
            Session::WebSocket(t) => t.handle_timeout(now),
        }
    }

    pub fn handle_shutdown(&mut self, now: Instant) {
        match self {
            Session::WebSocket(t) => t.handle_shutdown(now),
        }
    }

    pub fn poll_intent(&mut self) -> Option<Intent> {
        match self {
            Session::WebSocket(t) => t.poll_intent(),
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Session::WebSocket(t) => t.poll_timeout(),
        }
    }

    /// The client must not be read before this (it sent more frame overhead than allowed).
    pub fn client_paused_until(&self) -> Option<Instant> {
        match self {
            Session::WebSocket(t) => t.client_paused_until(),
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Session::WebSocket(t) => t.is_closed(),
        }
    }

    pub fn route(&self) -> Option<usize> {
        match self {
            Session::WebSocket(t) => t.route(),
        }
    }

    /// The TLS server name of the client's connection, before its upgrade request is routed.
    pub fn set_server_name(&mut self, name: &str) {
        match self {
            Session::WebSocket(t) => t.set_server_name(name),
        }
    }

    /// The client's TLS session failed (the alert is already queued).
    pub fn handle_client_tls_failed(&mut self, now: Instant) {
        match self {
            Session::WebSocket(t) => t.handle_client_tls_failed(now),
        }
    }

    /// The origin socket could not be created (out of descriptors or memory).
    pub fn handle_origin_socket_failed(&mut self, errno: i32, now: Instant) {
        match self {
            Session::WebSocket(t) => t.handle_origin_socket_failed(errno, now),
        }
    }

    /// The HTTP error the client was answered with, if it was refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Session::WebSocket(t) => t.refusal(),
        }
    }

    pub fn close_record(&self) -> Option<CloseRecord> {
        match self {
            Session::WebSocket(t) => t.close_record(),
        }
    }

    pub fn stats(&self) -> TunnelStats {
        match self {
            Session::WebSocket(t) => t.stats(),
        }
    }
}
