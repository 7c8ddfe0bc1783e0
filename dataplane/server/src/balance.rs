//! `[engine] balance`: long-lived tunnels spread over the workers by load, not by hash.
//!
//! SO_REUSEPORT picks a worker by hashing the connection's addresses, blind to how many tunnels
//! each already holds; database tunnels live for hours, so churn (short connections come and go,
//! long ones stay) can leave one worker with most of them. With balancing on, a worker that
//! accepts a connection while it holds clearly more tunnels than the least-loaded worker
//! (`gap`: at least 8, or an eighth of the smaller count) hands the fresh descriptor to that
//! worker through `IORING_OP_MSG_RING` ([`ringway_uring::Ring::send_fd`]) before reading a byte
//! of it.
//!
//! What is shared: one atomic counter and one ring descriptor per worker, no lock and no queue.
//! Counts move by deltas: a worker adds its own accepts and subtracts its own ends; a handoff is
//! added to its target by the sender when it is sent (so a burst of accepts cannot all pick the
//! same target before it has counted them) and taken back if delivery fails. A worker withdraws
//! its ring when it starts shutting down, so nothing more is handed to it.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

/// The smallest imbalance (in tunnels) that moves a connection.
const GAP_MIN: u32 = 8;

/// Load and ring of every worker.
#[derive(Debug)]
pub struct Balance {
    rings: Vec<AtomicI32>,
    load: Vec<AtomicU32>,
}

impl Balance {
    pub fn new(workers: usize) -> Balance {
        Balance {
            rings: (0..workers).map(|_| AtomicI32::new(-1)).collect(),
            load: (0..workers).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Worker `id` takes handoffs on `ring` from now on.
    pub fn publish(&self, id: usize, ring: RawFd) {
        self.rings[id].store(ring, Ordering::Release);
    }

    /// Worker `id` takes no more handoffs (it is shutting down).
    pub fn withdraw(&self, id: usize) {
        self.rings[id].store(-1, Ordering::Release);
    }

    /// A tunnel started on worker `id`.
    pub fn opened(&self, id: usize) {
        self.load[id].fetch_add(1, Ordering::Relaxed);
    }

    /// A tunnel on worker `id` ended (or a handoff counted there did not arrive).
    pub fn closed(&self, id: usize) {
        let _ = self.load[id].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(1))
        });
    }

    /// Where worker `id` should send a connection it just accepted: the least-loaded worker and
    /// its ring, when `id` holds clearly more than it (the connection is then counted there).
    pub fn pick(&self, id: usize) -> Option<(usize, RawFd)> {
        let mine = self.load[id].load(Ordering::Relaxed);
        let (target, least) = self
            .load
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != id && self.rings[i].load(Ordering::Acquire) >= 0)
            .map(|(i, l)| (i, l.load(Ordering::Relaxed)))
            .min_by_key(|&(_, l)| l)?;
        if mine <= least + GAP_MIN.max(least / 8) {
            return None;
        }
        let ring = self.rings[target].load(Ordering::Acquire);
        if ring < 0 {
            return None;
        }
        self.opened(target);
        Some((target, ring))
    }

    /// Tunnels per worker now.
    #[cfg(test)]
    fn loads(&self) -> Vec<u32> {
        self.load
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_off_only_past_the_gap_and_counts_at_the_target() {
        let b = Balance::new(3);
        for id in 0..3 {
            b.publish(id, 10 + id as i32);
        }
        for _ in 0..8 {
            b.opened(0);
        }
        assert_eq!(b.pick(0), None, "8 against 0 is within the gap");
        b.opened(0);
        assert_eq!(b.pick(0), Some((1, 11)), "9 against 0: to the least loaded");
        assert_eq!(b.loads(), [9, 1, 0]);
        assert_eq!(b.pick(0), Some((2, 12)), "the handoff counted at once");
        b.closed(2); // delivery failed: taken back
        assert_eq!(b.loads(), [9, 1, 0]);
    }

    #[test]
    fn the_gap_grows_with_load_and_a_withdrawn_worker_gets_nothing() {
        let b = Balance::new(2);
        b.publish(0, 3);
        b.publish(1, 4);
        for _ in 0..800 {
            b.opened(1);
        }
        for _ in 0..900 {
            b.opened(0);
        }
        assert_eq!(b.pick(0), None, "900 against 800: within an eighth");
        b.opened(0);
        assert_eq!(b.pick(0), Some((1, 4)), "901 against 800: past it");
        b.withdraw(1);
        for _ in 0..1000 {
            b.opened(0);
        }
        assert_eq!(b.pick(0), None, "nothing goes to a worker shutting down");
        assert_eq!(b.loads(), [1901, 801]);
    }
}
