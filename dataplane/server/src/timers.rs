//! Each connection's next deadline, in a min-heap: a tick pops only what is due, so its cost is
//! proportional to what expires, not to how many connections exist (an idle tunnel without an
//! idle timeout has no entry at all).
//!
//! Entries are never updated in place. A connection records the instant it is scheduled at;
//! the worker pushes a new entry only when the connection's next deadline moves earlier than
//! that (or it has none). An entry that pops for a connection that is gone, or that is not the
//! connection's recorded instant, is stale and skipped; a due entry whose connection finds
//! nothing expired (activity moved an idle deadline later) is re-pushed at the real deadline.
//! Every entry therefore pops at most once, and the heap never holds more than one live entry
//! per connection plus the stale ones still due to pop.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::slab::Key;

#[derive(Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, Key)>>,
}

impl Deadlines {
    pub fn push(&mut self, at: Instant, key: Key) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest entry due at `now`, removed.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Key)> {
        let Reverse((at, _)) = self.heap.peek()?;
        if *at > now {
            return None;
        }
        self.heap.pop().map(|Reverse(e)| e)
    }

    /// The earliest entry's instant (perhaps a stale entry's).
    pub fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn pops_only_what_is_due_in_order() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        let k = |i| Key { idx: i, gen: 0 };
        for i in 0..10_000u32 {
            // Most far in the future (idle tunnels), three due.
            let at = if i % 5000 == 7 || i == 1 {
                t0 + Duration::from_millis(i as u64)
            } else {
                t0 + Duration::from_secs(3600)
            };
            d.push(at, k(i));
        }
        let now = t0 + Duration::from_secs(10);
        let due: Vec<u32> = std::iter::from_fn(|| d.pop_due(now))
            .map(|e| e.1.idx)
            .collect();
        assert_eq!(due, vec![1, 7, 5007]);
        assert_eq!(d.len(), 9_997, "nothing else was touched");
    }
}
