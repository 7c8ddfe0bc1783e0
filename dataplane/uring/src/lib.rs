//! Ringway's io_uring driver — the only crate in the workspace with `unsafe` code.
//!
//! It owns a worker's ring, the table of operations in flight and the provided buffer pool, and
//! offers a safe API: push an operation with a caller tag, reap [`Completion`]s. The unsafe
//! contract it keeps:
//!
//! - I1: every pointer in a submitted SQE points into memory owned by that operation's in-flight
//!   entry until its completion has been reaped, cancelled operations included.
//! - I2: a file descriptor named by an SQE stays open until every completion that names it is
//!   reaped (the caller closes an fd only once its operations have completed; see
//!   [`Ring::close`]).
//! - I3: user space touches a provided-buffer slot only between the completion that lends it and
//!   the moment it is handed back ([`PoolBuf`] is the proof of the loan).
//!
//! Soundness of the safe API: operation ids carry a generation, so a stale id never names a
//! newer operation; pool memory is zeroed and lent only up to the bytes received; send ranges
//! are checked when a [`TxBuf`] is built; a [`PoolBuf`] is checked against the ring that lent
//! it; dropping a ring never frees memory an operation in flight may still touch; and a
//! descriptor handed to another ring ([`Ring::send_fd`]) is owned by exactly one side at a time:
//! the target's completion on delivery, the sender's again on failure, nobody (leaked, never
//! closed twice) if the sender's ring closes before it learns which.
//!
//! Every `unsafe` block carries a `// SAFETY:` line naming the invariant it relies on, and
//! `Ring::push` is the one place that writes to the submission queue.
#![deny(clippy::undocumented_unsafe_blocks)]

mod bufpool;
mod ring;
mod sockaddr;
mod steer;
mod txbuf;

pub use bufpool::{PoolBuf, HEADROOM};
pub use ring::{Completion, Features, OpId, Ring, Teardown, Wait, PREEMPTED_GAP};
pub use steer::{incoming_napi_id, steer_to_cpu, unsent_bytes};
pub use txbuf::{RangeError, TxBuf};
