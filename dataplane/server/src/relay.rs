//! How received bytes are forwarded without letting one tunnel take the worker's receive pool.
//!
//! Bytes arrive in a slot of the worker's shared pool (`buffers` × `buffer_size`). Forwarding
//! them from that slot costs no copy, but the slot stays lent until the send completes, and a
//! peer that reads slowly (or never) could pin every slot with a few bytes each: the kernel then
//! has no buffer for anyone's receive and the whole worker stalls. So a destination socket may
//! hold at most `slot_share` pool slots, and only while more than `reserve` slots are free;
//! otherwise the bytes are copied into the socket's own queue (coalesced into one owned buffer
//! per burst, counted against its backpressure cap like any queued byte) and the slot goes back
//! to the kernel at once. The pool therefore always has `reserve` slots (less what one batch of
//! completions takes) for the tunnels that are moving, and a tunnel's memory is its
//! backpressure cap plus at most `slot_share` slots per direction.

use std::ops::Range;
use std::time::Instant;

use ringway_uring::{PoolBuf, Ring, TxBuf};
use tracing::error;

use crate::socket::Socket;
use crate::transport::Transport;

/// The share of the receive pool one socket may hold.
#[derive(Clone, Copy, Debug)]
pub struct Pool {
    /// Pool slots one destination socket may hold queued or in flight.
    pub slot_share: u32,
    /// Below this many free slots, nothing more is held: every payload is copied out.
    pub reserve: usize,
}

impl Pool {
    pub fn new(buffers: usize) -> Pool {
        Pool {
            slot_share: (buffers / 64).clamp(2, 16) as u32,
            reserve: buffers / 4,
        }
    }

    /// May `dest` keep one more pool slot?
    fn may_keep(&self, ring: &Ring, dest: &Socket) -> bool {
        dest.pool_slots() < self.slot_share && ring.buffers_free() > self.reserve
    }

    /// Enough buffers are free to re-arm a recv that ended for lack of them.
    pub fn may_rearm(&self, ring: &Ring) -> bool {
        ring.buffers_free() > self.reserve / 2
    }
}

/// Queues `buf`'s slot bytes `range` to `dest`: sealed by `dest`'s transport `through` under TLS
/// (the slot goes back at once), else from the slot or as a copy (module doc); an empty range,
/// or a destination that takes no more bytes, gives the buffer back.
pub fn forward(
    ring: &mut Ring,
    pool: &Pool,
    dest: &mut Socket,
    through: &mut Transport,
    buf: PoolBuf,
    range: Range<usize>,
    now: Instant,
) {
    if range.is_empty() || !dest.takes_bytes() {
        ring.recycle(buf);
        return;
    }
    if let Some(tls) = through.tls_mut() {
        // Sealing is the copy: the slot goes back at once.
        match ring.slot(&buf).get(range) {
            Some(bytes) => {
                let sealed = tls.seal(bytes);
                if let Err(tx) = dest.queue_sealed(sealed, now) {
                    ring.recycle_tx(tx);
                }
            }
            None => error!("forward range outside the received bytes"),
        }
        ring.recycle(buf);
        return;
    }
    if pool.may_keep(ring, dest) {
        match TxBuf::pool(buf, range) {
            Ok(tx) => {
                if let Err(tx) = dest.queue(tx, now) {
                    ring.recycle_tx(tx);
                }
            }
            Err(e) => {
                // A session bug, not peer input: drop the bytes rather than send others'.
                error!("{e}");
                ring.recycle(e.buf);
            }
        }
        return;
    }
    match ring.slot(&buf).get(range) {
        Some(bytes) => dest.queue_copy(bytes, now),
        None => error!("forward range outside the received bytes"),
    }
    ring.recycle(buf);
}
