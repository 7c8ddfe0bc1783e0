//! The ringway data plane as a library: the `ringway` binary (`main.rs`) is its CLI, and the
//! benchmarks in `bench/` measure its parts (the deadline heap, the slab) directly.
//!
//! One part per job: `worker` (the loop), `conn` (one connection's completions and intents),
//! `socket` (the per-socket sans-IO machine), `relay` (forwarding and the pool share), `session`
//! (WebSocket tunnel, later L4), `transport` (plain, later TLS), `origin` (connect and
//! reconnect), `slab` (generational slots), `timers` (deadline heap), `token` (ring tags),
//! `config` and `echo` (the built-in echo origin).
#![forbid(unsafe_code)]

pub mod access;
pub mod balance;
pub mod config;
pub mod conn;
pub mod control;
pub mod echo;
pub mod health;
pub mod metrics;
pub mod origin;
pub mod polling;
pub mod pools;
pub mod relay;
pub mod session;
pub mod slab;
pub mod socket;
pub mod splice;
pub mod stats;
pub mod timers;
pub mod tls;
pub mod token;
pub mod transport;
pub mod tune;
pub mod warm;
pub mod worker;
