//! Ringway's sans-IO protocol core.
//!
//! Everything here is deterministic: it takes bytes and the current time in and hands back
//! intents (bytes to send, sockets to connect or close). It never opens a socket, never reads a
//! clock and never spawns a thread, so every path can be tested on virtual time without a kernel.
//!
//! - [`ws`]: RFC 6455 handshake, frame wire format, unmasking, the incremental decoder and the
//!   server-side encoder.
//! - [`tunnel`]: the per-connection state machine that ties a WebSocket client to a TCP origin.
//! - [`route`]: the immutable route table a worker looks routes up in.
//! - [`access`]: the client-role tunnel of `ringway access` (a local TCP connection carried to
//!   the edge over a WebSocket it opens).
//!
//! `fuzz` (hidden) holds the fuzz harnesses, shared by `fuzz/` (cargo-fuzz) and the stable
//! corpus replay in `tests/fuzz_corpus.rs`.
#![forbid(unsafe_code)]

pub mod access;
#[doc(hidden)]
pub mod fuzz;
pub mod route;
pub mod tcp;
pub mod tunnel;
pub mod ws;
