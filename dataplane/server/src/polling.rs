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
//!   when the thread was descheduled mid-poll ([`Wait::Preempted`]), and every 100 ms the
//!   worker reads the kernel's CPU pressure (`/proc/pressure/cpu`, the time some runnable task
//!   waited for a CPU). A preempted poll stops polling for a backoff that doubles while
//!   preemption keeps coming back and shrinks after a long run of clean polls; a pressure sample
//!   over [`Polling::CONTENDED_ABOVE`] stops it until a sample is under
//!   [`Polling::UNCONTENDED_BELOW`];
//! - and while polling finds completions: a poll that spends its whole budget with nothing
//!   arriving ([`Wait::Missed`]) is CPU for nothing; when fewer than
//!   [`Polling::MIN_HIT_RATE`] of recent polls found a completion, polling stops for the same
//!   backoff.

use std::fs::File;
use std::io::{Read, Seek};
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

/// The kernel's CPU pressure stall information: cumulative microseconds during which at least
/// one runnable task waited for a CPU. Absent (no PSI in this kernel): never contended.
struct Pressure {
    file: Option<File>,
    last: Option<(Instant, u64)>,
    next: Option<Instant>,
    text: String,
}

impl Pressure {
    const EVERY: Duration = Duration::from_millis(100);

    fn open() -> Self {
        Pressure {
            file: File::open("/proc/pressure/cpu").ok(),
            ..Pressure::none()
        }
    }

    fn none() -> Self {
        Pressure {
            file: None,
            last: None,
            next: None,
            text: String::new(),
        }
    }

    /// The share of wall time since the previous sample during which some task waited for a
    /// CPU; `None` between samples (every [`Pressure::EVERY`]) and without PSI.
    fn sample(&mut self, now: Instant) -> Option<f32> {
        if self.next.is_some_and(|n| now < n) {
            return None;
        }
        self.next = Some(now + Self::EVERY);
        let file = self.file.as_mut()?;
        self.text.clear();
        let read = file
            .rewind()
            .and_then(|_| file.read_to_string(&mut self.text));
        let Some(total) = read.ok().and_then(|_| some_total_us(&self.text)) else {
            self.file = None; // unreadable: stop trying
            return None;
        };
        let share = self.last.and_then(|(t, prev)| {
            let wall = now.duration_since(t).as_micros() as f32;
            (wall > 0.0).then(|| total.saturating_sub(prev) as f32 / wall)
        });
        self.last = Some((now, total));
        share
    }
}

/// `total=` of the `some` line of a PSI file.
fn some_total_us(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let total = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?;
    total.parse().ok()
}

/// The worker's polling policy; see the module documentation.
pub struct Polling {
    spin: Duration,
    duty: Duty,
    pressure: Pressure,
    off_until: Option<Instant>,
    backoff: Duration,
    clean: u32,
    /// Exponentially weighted share of polls that found a completion.
    hit_rate: f32,
    /// The last CPU pressure sample was over [`Polling::CONTENDED_ABOVE`] (and none since has
    /// been under [`Polling::UNCONTENDED_BELOW`]).
    pressured: bool,
}

impl Polling {
    /// Polling stops for at least this long after a preempted poll...
    pub const MIN_BACKOFF: Duration = Duration::from_millis(10);
    /// ...and at most this long, so a core that frees up is used again within a second.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
    /// Polls without preemption that halve the backoff.
    const CLEAN_TO_SHRINK: u32 = 256;
    /// CPU pressure (share of wall time some task waited for a CPU) above which the box has
    /// no core to spare for polling: measured side by side on 2 cores, a lone tunnel's ping-pong
    /// with polling runs at about 0.04–0.13, while 64-connection ping-pong, bulk and connect
    /// loops, which saturate both cores, run at 0.20–0.37 with polling or without.
    pub const CONTENDED_ABOVE: f32 = 0.20;
    /// Polling stopped for pressure resumes once a sample is under this (hysteresis: polling
    /// itself adds to the pressure it is judged by).
    pub const UNCONTENDED_BELOW: f32 = 0.10;
    /// Below this share of polls finding a completion, polling costs more than it saves.
    pub const MIN_HIT_RATE: f32 = 0.3;

    /// `spin`: the configured poll budget (`engine.busy_poll_us`); zero never polls.
    pub fn new(spin: Duration) -> Self {
        Polling {
            spin,
            duty: Duty::default(),
            pressure: if spin.is_zero() {
                Pressure::none()
            } else {
                Pressure::open()
            },
            off_until: None,
            backoff: Self::MIN_BACKOFF,
            clean: 0,
            hit_rate: 1.0,
            pressured: false,
        }
    }

    /// How long to poll before sleeping in the wait that starts at `now`.
    pub fn budget(&mut self, now: Instant) -> Duration {
        if let Some(share) = self.pressure.sample(now) {
            self.on_pressure(share);
        }
        if self.pressured {
            return Duration::ZERO;
        }
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

    /// One CPU pressure sample. Pressure stops polling until a sample says the box has room
    /// again, not for a backoff that clean polls would shrink within milliseconds.
    fn on_pressure(&mut self, share: f32) {
        self.pressured = if self.pressured {
            share >= Self::UNCONTENDED_BELOW
        } else {
            share > Self::CONTENDED_ABOVE
        };
    }

    /// Records one loop turn: `busy` working, then `waited` in a wait that ended as `wait`
    /// at `now`.
    pub fn record(&mut self, busy: Duration, waited: Duration, wait: Wait, now: Instant) {
        self.duty.record(busy, waited);
        match wait {
            Wait::Preempted => self.contended(now),
            Wait::Missed => {
                self.hit_rate -= self.hit_rate / 16.0;
                if self.hit_rate < Self::MIN_HIT_RATE {
                    self.contended(now);
                    self.hit_rate = Self::MIN_HIT_RATE * 2.0; // try again after the backoff
                }
            }
            Wait::Polled => {
                self.hit_rate += (1.0 - self.hit_rate) / 16.0;
                self.clean += 1;
                if self.clean >= Self::CLEAN_TO_SHRINK {
                    self.clean = 0;
                    self.backoff = (self.backoff / 2).max(Self::MIN_BACKOFF);
                }
            }
            Wait::Slept => {}
        }
    }

    /// Polling took, or would take, a core another task wanted: stop for the backoff.
    fn contended(&mut self, now: Instant) {
        if self.off_until.is_some_and(|u| now < u) {
            return; // already off: pressure seen while not polling does not grow the backoff
        }
        self.off_until = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(Self::MAX_BACKOFF);
        self.clean = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPIN: Duration = Duration::from_micros(50);
    const US: fn(u64) -> Duration = Duration::from_micros;

    /// A policy that does not read the box's real CPU pressure.
    fn polling(spin: Duration) -> Polling {
        let mut p = Polling::new(spin);
        p.pressure = Pressure::none();
        p
    }

    #[test]
    fn duty_polls_only_while_mostly_idle() {
        let t = Instant::now();
        let mut p = polling(SPIN);
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
    fn cpu_pressure_stops_polling_until_a_sample_shows_room() {
        let t = Instant::now();
        let mut p = polling(SPIN);
        p.on_pressure(0.13); // a lone tunnel polling on a 2-core box
        assert_eq!(p.budget(t), SPIN);
        p.on_pressure(0.30); // both cores saturated
        assert_eq!(p.budget(t), Duration::ZERO);
        for _ in 0..1024 {
            p.record(US(1), US(10), Wait::Slept, t);
        }
        assert_eq!(
            p.budget(t),
            Duration::ZERO,
            "no number of loop turns ends it"
        );
        p.on_pressure(0.15);
        assert_eq!(
            p.budget(t),
            Duration::ZERO,
            "between the thresholds: still off (polling adds to the pressure)"
        );
        p.on_pressure(0.05);
        assert_eq!(p.budget(t), SPIN, "room again: polling comes back");
    }

    #[test]
    fn a_preempted_poll_stops_polling_for_a_growing_backoff() {
        let t0 = Instant::now();
        let mut p = polling(SPIN);
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
        let mut t = Instant::now();
        let mut p = polling(SPIN);
        p.record(US(1), US(60), Wait::Preempted, t);
        p.record(US(1), US(60), Wait::Preempted, t);
        assert_eq!(
            p.backoff,
            Polling::MIN_BACKOFF * 2,
            "contention seen while polling is off does not grow the backoff"
        );
        for _ in 0..10 {
            t += Polling::MAX_BACKOFF;
            p.record(US(1), US(60), Wait::Preempted, t);
        }
        assert_eq!(p.backoff, Polling::MAX_BACKOFF);
        t += Polling::MAX_BACKOFF;
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
    fn psi_total_is_read_from_the_some_line() {
        let text = "some avg10=17.36 avg60=15.38 avg300=24.71 total=4806721829\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(some_total_us(text), Some(4_806_721_829));
        assert_eq!(some_total_us("full avg10=0.00 total=5\n"), None);
        assert_eq!(some_total_us("some avg10=0.00 total=x\n"), None);
    }

    #[test]
    fn pressure_is_sampled_every_interval_where_the_kernel_has_psi() {
        let mut p = Pressure::open();
        if p.file.is_none() {
            assert!(
                std::fs::metadata("/proc/pressure/cpu").is_err(),
                "PSI exists but could not be opened"
            );
            return; // no PSI in this kernel: polling relies on preemption alone
        }
        let t0 = Instant::now();
        assert_eq!(
            p.sample(t0),
            None,
            "the first sample has nothing to compare with"
        );
        assert_eq!(
            p.sample(t0 + Duration::from_millis(50)),
            None,
            "not yet due"
        );
        std::thread::sleep(Pressure::EVERY);
        let share = p.sample(Instant::now());
        assert!(p.file.is_some(), "the file stays readable");
        let share = share.expect("a share after the interval");
        assert!((0.0..=2.0).contains(&share), "{share}");
    }

    #[test]
    fn polls_that_find_nothing_stop_polling() {
        let t = Instant::now();
        let mut p = polling(SPIN);
        // Mostly hits: polling goes on.
        for i in 0..200 {
            let w = if i % 3 == 0 {
                Wait::Missed
            } else {
                Wait::Polled
            };
            p.record(US(1), US(60), w, t);
        }
        assert_eq!(p.budget(t), SPIN);
        // Then nothing comes while polling: it stops after a few wasted polls.
        let mut n = 0;
        while p.budget(t) == SPIN {
            p.record(US(1), US(60), Wait::Missed, t);
            n += 1;
            assert!(n < 64, "still polling after {n} wasted polls");
        }
        assert_eq!(p.budget(t + Polling::MIN_BACKOFF - US(1)), Duration::ZERO);
        assert_eq!(
            p.budget(t + Polling::MIN_BACKOFF),
            SPIN,
            "tried again after the backoff"
        );
    }

    #[test]
    fn zero_budget_never_polls() {
        let t = Instant::now();
        let mut p = polling(Duration::ZERO);
        assert_eq!(p.budget(t), Duration::ZERO);
    }
}
