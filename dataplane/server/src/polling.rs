//! When a worker polls its ring before sleeping.
//!
//! Polling for a few tens of microseconds saves the wake-up of a sleeping thread, which
//! dominates a quiet tunnel's round trip, but it only pays while the core it burns is free.
//! On a shared box (the client, the origin and the proxy on the same few cores, as with a
//! database and its pooler) every microsecond polled is taken from the process whose answer
//! the worker waits for: pgbench through two polling proxies ran at half the rate it ran with
//! polling off. So a worker polls only
//! - while it is mostly idle: a busy worker's idle gaps belong to the processes it waits for;
//! - and while polling has not been caught taking a core another task wanted: the ring reports
//!   when the thread was descheduled mid-poll ([`Wait::Preempted`]); polling then stops for a
//!   backoff that doubles while it keeps happening and shrinks after a long run of clean polls.

use std::time::{Duration, Instant};

use ringway_uring::Wait;

/// Exponentially weighted share of loop time spent working rather than waiting.
#[derive(Default)]
struct Duty {
    busy_share: f32,
}

impl Duty {
    /// Below this share of busy time the worker polls before sleeping.
    const IDLE_BELOW: f32 = 0.25;

    fn record(&mut self, busy: Duration, waited: Duration) {
        let total = (busy + waited).as_secs_f32();
        if total > 0.0 {
            let share = busy.as_secs_f32() / total;
            self.busy_share += (share - self.busy_share) / 16.0;
        }
    }

    fn mostly_idle(&self) -> bool {
        self.busy_share < Self::IDLE_BELOW
    }
}

/// The worker's polling policy; see the module documentation.
pub struct Polling {
    spin: Duration,
    duty: Duty,
    off_until: Option<Instant>,
    backoff: Duration,
    clean: u32,
}

impl Polling {
    /// Polling stops for at least this long after a preempted poll...
    pub const MIN_BACKOFF: Duration = Duration::from_millis(10);
    /// ...and at most this long, so a core that frees up is used again within a second.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
    /// Polls without preemption that halve the backoff.
    const CLEAN_TO_SHRINK: u32 = 256;

    /// `spin`: the configured poll budget (`engine.busy_poll_us`); zero never polls.
    pub fn new(spin: Duration) -> Self {
        Polling {
            spin,
            duty: Duty::default(),
            off_until: None,
            backoff: Self::MIN_BACKOFF,
            clean: 0,
        }
    }

    /// How long to poll before sleeping in the wait that starts at `now`.
    pub fn budget(&mut self, now: Instant) -> Duration {
        if let Some(until) = self.off_until {
            if now < until {
                return Duration::ZERO;
            }
            self.off_until = None;
        }
        if self.duty.mostly_idle() {
            self.spin
        } else {
            Duration::ZERO
        }
    }

    /// Records one loop turn: `busy` working, then `waited` in a wait that ended as `wait`
    /// at `now`.
    pub fn record(&mut self, busy: Duration, waited: Duration, wait: Wait, now: Instant) {
        self.duty.record(busy, waited);
        match wait {
            Wait::Preempted => {
                self.off_until = Some(now + self.backoff);
                self.backoff = (self.backoff * 2).min(Self::MAX_BACKOFF);
                self.clean = 0;
            }
            Wait::Polled => {
                self.clean += 1;
                if self.clean >= Self::CLEAN_TO_SHRINK {
                    self.clean = 0;
                    self.backoff = (self.backoff / 2).max(Self::MIN_BACKOFF);
                }
            }
            Wait::Slept => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPIN: Duration = Duration::from_micros(50);
    const US: fn(u64) -> Duration = Duration::from_micros;

    #[test]
    fn duty_polls_only_while_mostly_idle() {
        let t = Instant::now();
        let mut p = Polling::new(SPIN);
        assert_eq!(p.budget(t), SPIN, "a fresh worker may poll");
        for _ in 0..64 {
            p.record(US(5), US(40), Wait::Slept, t); // quiet tunnel: 11 % busy
        }
        assert_eq!(p.budget(t), SPIN);
        for _ in 0..64 {
            p.record(US(80), US(20), Wait::Slept, t); // loaded worker: 80 % busy
        }
        assert_eq!(
            p.budget(t),
            Duration::ZERO,
            "a busy worker leaves its idle gaps to the peers"
        );
        for _ in 0..64 {
            p.record(US(2), US(100), Wait::Slept, t);
        }
        assert_eq!(p.budget(t), SPIN, "load gone: polling comes back");
    }

    #[test]
    fn a_preempted_poll_stops_polling_for_a_growing_backoff() {
        let t0 = Instant::now();
        let mut p = Polling::new(SPIN);
        p.record(US(1), US(60), Wait::Preempted, t0);
        assert_eq!(p.budget(t0), Duration::ZERO);
        assert_eq!(p.budget(t0 + Polling::MIN_BACKOFF - US(1)), Duration::ZERO);
        let t1 = t0 + Polling::MIN_BACKOFF;
        assert_eq!(p.budget(t1), SPIN, "tried again after the backoff");
        p.record(US(1), US(60), Wait::Preempted, t1);
        assert_eq!(
            p.budget(t1 + Polling::MIN_BACKOFF),
            Duration::ZERO,
            "backoff doubled"
        );
        assert_eq!(p.budget(t1 + Polling::MIN_BACKOFF * 2), SPIN);
        // Kept preempted: the backoff stops growing at the cap.
        let mut t = t1;
        for _ in 0..20 {
            p.record(US(1), US(60), Wait::Preempted, t);
            t += Polling::MAX_BACKOFF;
        }
        assert_eq!(p.backoff, Polling::MAX_BACKOFF);
        assert_eq!(p.budget(t - US(1)), Duration::ZERO);
        assert_eq!(p.budget(t), SPIN);
    }

    #[test]
    fn clean_polls_shrink_the_backoff_back() {
        let t = Instant::now();
        let mut p = Polling::new(SPIN);
        for _ in 0..10 {
            p.record(US(1), US(60), Wait::Preempted, t);
        }
        assert_eq!(p.backoff, Polling::MAX_BACKOFF);
        for _ in 0..Polling::CLEAN_TO_SHRINK * 20 {
            p.record(US(1), US(10), Wait::Polled, t);
        }
        assert_eq!(p.backoff, Polling::MIN_BACKOFF);
        // Sleeping without polling neither grows nor shrinks it.
        p.record(US(1), US(60), Wait::Preempted, t);
        for _ in 0..Polling::CLEAN_TO_SHRINK * 4 {
            p.record(US(1), US(60), Wait::Slept, t);
        }
        assert_eq!(p.backoff, Polling::MIN_BACKOFF * 2);
    }

    #[test]
    fn zero_budget_never_polls() {
        let t = Instant::now();
        let mut p = Polling::new(Duration::ZERO);
        assert_eq!(p.budget(t), Duration::ZERO);
    }
}
