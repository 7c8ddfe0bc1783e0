//! Harness for Ringway's end-to-end tests: it runs the real `ringway` binary as a child process and
//! talks to it only over loopback (127.0.0.1), the way a deployment would.
//!
//! The pieces are: [`server::Ringway`] (spawn with a config, learn the port from the
//! `listening on ws://127.0.0.1:PORT` stdout line, SIGTERM, kill on drop), [`origin::Origin`]
//! (in-process TCP origins: echo, echo-then-close, and a refused address), [`raw::RawConn`] (a
//! hand-driven TCP client for hostile requests and frames, RFC 6455 §5.2), [`ws`] (helpers
//! around tokio-tungstenite, the third-party client) and [`attack`] (clients that never read,
//! floods run on their own thread, an origin that counts its connections, the server's RSS).
//!
//! Invariants every test relies on: every wait is bounded by a `tokio::time::timeout` or a
//! deadline, every loop has a bound, a missing binary is a panic telling how to build it (never a
//! silent skip), and no traffic leaves 127.0.0.1.

pub mod attack;
pub mod config;
pub mod origin;
pub mod postgres;
pub mod raw;
pub mod server;
pub mod tls;
pub mod tls_ws;
pub mod ws;

use std::time::Duration;

/// Bound for one network step (connect, one handshake, reading one reply) in the tests.
pub const STEP: Duration = Duration::from_secs(10);

/// Raises this process's open-files soft limit to `want`; panics naming the hard limit when it
/// is lower (a test that needs many sockets fails loudly rather than skipping).
pub fn raise_fd_limit(want: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    let max = lim.maximum.unwrap_or(u64::MAX);
    assert!(
        max >= want,
        "this test needs {want} open files; the hard limit is {max}"
    );
    if lim.current.is_some_and(|c| c < want) {
        lim.current = Some(want);
        setrlimit(Resource::Nofile, lim).expect("raise the open-files soft limit");
    }
}
