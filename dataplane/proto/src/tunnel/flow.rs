//! Backpressure for one direction of a tunnel: bytes queued for sending but not yet sent.
//!
//! Invariant: once `queued` passes `cap`, the direction's source must stop being read until
//! `queued` falls to `cap / 2` (hysteresis keeps a busy tunnel from flapping between the two).
//! Memory held by a tunnel is therefore bounded by `cap` plus one receive buffer per direction,
//! whatever the peers do.

/// Unsent-byte accounting for one direction.
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    // u32: a direction never holds 4 GiB (the cap is configured far below it), and a tunnel's
    // two flows are part of its idle footprint.
    queued: u32,
    cap: u32,
    paused: bool,
}

impl Flow {
    /// A direction that may hold up to `cap` unsent bytes before its source is paused.
    pub fn new(cap: usize) -> Flow {
        Flow {
            queued: 0,
            cap: u32::try_from(cap).unwrap_or(u32::MAX),
            paused: false,
        }
    }

    /// The cap it was made with.
    pub fn cap(&self) -> usize {
        self.cap as usize
    }

    /// `n` more bytes were queued. Returns true if the source must now be paused.
    pub fn queue(&mut self, n: usize) -> bool {
        self.queued = self
            .queued
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        if !self.paused && self.queued > self.cap {
            self.paused = true;
            return true;
        }
        false
    }

    /// `n` queued bytes were sent (or dropped). Returns true if the source may resume.
    pub fn sent(&mut self, n: usize) -> bool {
        self.queued = self
            .queued
            .saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
        if self.paused && self.queued <= self.cap / 2 {
            self.paused = false;
            return true;
        }
        false
    }

    /// Bytes queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.queued as usize
    }

    /// True while the source must not be read.
    pub fn is_paused(&self) -> bool {
        self.paused
    }
}

#[cfg(test)]
mod tests {
    use super::Flow;

    #[test]
    fn pauses_over_cap_and_resumes_at_half() {
        let mut f = Flow::new(100);
        assert!(!f.queue(100));
        assert!(f.queue(1));
        assert!(f.is_paused());
        assert!(!f.queue(50), "already paused: no second pause signal");
        assert!(!f.sent(100));
        assert!(f.sent(1), "51 -> 50 queued: resume");
        assert!(!f.is_paused());
        assert_eq!(f.queued(), 50);
    }
}
