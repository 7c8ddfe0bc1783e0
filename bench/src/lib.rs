//! `ringbench`: Ringway's load generator and test origin.
//!
//! One event loop per thread (mio over epoll, edge-triggered), connections spread round-robin over
//! the threads, buffers allocated once per thread or per connection and reused for every message.
//! Every payload byte is a deterministic pattern ([`pattern`]) and every echoed byte is compared
//! with it, so a corrupted or misrouted byte is an error, never a silent pass. Errors are counted
//! by kind ([`stats::ErrorKind`]) and never retried behind the caller's back.
//!
//! - [`origin`]: the TCP origin (echo, sink, source) the workloads run against.
//! - [`workload`]: latency, rate, bulk, connect and hold.
//! - [`client`]: dialling (TCP connect, WebSocket upgrade) and the open stream both speak.
//! - [`ws`]: the client side of RFC 6455 on top of `ringway_proto`'s frame header and mask.
//! - [`report`]: the human table and the JSON object.
//! - [`summary`]: BENCHMARKS.md and the latency plot from the reports of one `bench/compare`.
#![forbid(unsafe_code)]

pub mod client;
pub mod origin;
pub mod pattern;
pub mod progress;
pub mod report;
pub mod stats;
pub mod summary;
pub mod target;
pub mod timer;
pub mod workload;
pub mod ws;
