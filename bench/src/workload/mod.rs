//! The load workloads and what they share: the run harness ([`run_load`] over [`run_threads`]),
//! the measurement window, each thread's [`Share`] of the connections and its [`Lane`] (opening
//! them all up front, counting errors), and the client's own CPU use.
//!
//! Timeline of a run: every thread opens its connections, all threads meet at a barrier, the main
//! thread fixes one [`Window`] (`start`, `measure_from = start + warmup`, `end = measure_from +
//! duration`) and hands it to all threads, which then load until `end`. Only what completes
//! inside `[measure_from, end)` is counted; connections that fail are counted as errors and not
//! reopened (except in `connect`, whose unit of work is the setup itself).

pub mod bulk;
pub mod connect;
pub mod hold;
mod lane;
pub mod latency;
pub mod rate;

pub use lane::{check_echo, check_echo_open, wait, Lane, DIAL_TIMEOUT};

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use crate::client::tls::TlsClient;
use crate::progress::{Printer, Progress};
use crate::report::{Params, Report};
use crate::stats::Tally;
use crate::target::Target;

/// Settings every load workload takes.
#[derive(Clone, Debug)]
pub struct Common {
    pub target: Target,
    /// Required for tls:// and wss:// targets.
    pub tls: Option<TlsClient>,
    pub warmup: Duration,
    pub duration: Duration,
    pub threads: usize,
    /// The proxy under test, whose CPU over the window is reported.
    pub server_pid: Option<u32>,
}

impl Common {
    /// Whether progress lines are printed (runs longer than 3 s).
    pub fn show_progress(&self) -> bool {
        self.warmup + self.duration > Duration::from_secs(3)
    }

    pub fn params(&self) -> Params {
        Params {
            duration_secs: self.duration.as_secs_f64(),
            warmup_secs: self.warmup.as_secs_f64(),
            threads: self.threads,
            ..Params::default()
        }
    }
}

/// The measurement window.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub start: Instant,
    pub measure_from: Instant,
    pub end: Instant,
}

impl Window {
    pub fn contains(&self, t: Instant) -> bool {
        t >= self.measure_from && t < self.end
    }
}

/// Where threads wait for each other before the window starts.
struct Gate {
    barrier: Barrier,
    window: OnceLock<Window>,
}

/// One thread's view of the gate.
pub struct ThreadGate<'a> {
    gate: &'a Gate,
    passed: Cell<bool>,
}

impl ThreadGate<'_> {
    /// Waits until every thread has opened its connections; returns the window. Call once.
    pub fn ready(&self) -> Window {
        if !self.passed.replace(true) {
            self.gate.barrier.wait();
            self.gate.barrier.wait();
        }
        *self
            .gate
            .window
            .get()
            .expect("the main thread sets the window between the waits")
    }
}

/// What a whole run measured.
pub struct Measured {
    pub tally: Tally,
    pub window_secs: f64,
    pub client_cpu_percent: Option<f64>,
    pub server_cpu_percent: Option<f64>,
}

/// Runs the load workload `workload`, whose `total` connections (or loops) are shared out over
/// `common.threads` threads (never more threads than connections): `body(lane, gate)` runs on
/// every thread with its [`Lane`], as in [`run_threads`], and progress lines count in `unit`s.
/// Returns the report with what every load workload reports filled in (`params` plus the thread
/// count, latency, errors, `elapsed_secs` = the window, client CPU), and the measurement for the
/// workload's own figures.
pub fn run_load(
    common: &Common,
    workload: &'static str,
    mut params: Params,
    total: usize,
    unit: &'static str,
    body: impl Fn(&mut Lane<'_>, &ThreadGate<'_>) + Sync,
) -> (Report, Measured) {
    let threads = common.threads.clamp(1, total.max(1));
    let progress = Arc::new(Progress::default());
    let printer = Printer::start(progress.clone(), common.show_progress(), unit);
    let m = run_threads(common, threads, |thread, gate| {
        let share = Share {
            total,
            threads,
            thread,
        };
        let mut lane = Lane::new(&common.target, common.tls.as_ref(), share, &progress);
        body(&mut lane, gate);
        lane.tally
    });
    drop(printer);
    params.threads = threads;
    let mut r = Report::new(workload, common.target.to_string(), params, &m.tally);
    r.elapsed_secs = m.window_secs;
    r.client_cpu_percent = m.client_cpu_percent;
    r.server_cpu_percent = m.server_cpu_percent;
    (r, m)
}

/// Runs `body(thread_index, gate)` on `threads` threads. Each body must call `gate.ready()` once
/// (if it returns or panics without doing so, the harness calls it for it, so no one waits
/// forever), then load until the window ends.
pub fn run_threads(
    common: &Common,
    threads: usize,
    body: impl Fn(usize, &ThreadGate<'_>) -> Tally + Sync,
) -> Measured {
    let gate = Gate {
        barrier: Barrier::new(threads + 1),
        window: OnceLock::new(),
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (gate, body) = (&gate, &body);
                scope.spawn(move || {
                    let mine = ThreadGate {
                        gate,
                        passed: Cell::new(false),
                    };
                    let r = catch_unwind(AssertUnwindSafe(|| body(t, &mine)));
                    mine.ready();
                    r.unwrap_or_else(|p| resume_unwind(p))
                })
            })
            .collect();
        gate.barrier.wait();
        let start = Instant::now();
        let measure_from = start + common.warmup;
        let window = Window {
            start,
            measure_from,
            end: measure_from + common.duration,
        };
        let _ = gate.window.set(window);
        gate.barrier.wait();
        std::thread::sleep(common.warmup);
        let server_stat = common.server_pid.map(|p| format!("/proc/{p}/stat"));
        let server = || server_stat.as_deref().and_then(cpu_secs_of);
        let (cpu0, srv0) = (process_cpu_secs(), server());
        let t0 = Instant::now();
        std::thread::sleep(window.end.saturating_duration_since(Instant::now()));
        let (cpu1, srv1) = (process_cpu_secs(), server());
        let wall = t0.elapsed().as_secs_f64();
        let mut tally = Tally::default();
        for h in handles {
            match h.join() {
                Ok(t) => tally.merge(t),
                Err(p) => resume_unwind(p),
            }
        }
        Measured {
            tally,
            window_secs: common.duration.as_secs_f64(),
            client_cpu_percent: match (cpu0, cpu1) {
                (Some(a), Some(b)) if wall > 0.0 => Some((b - a) / wall * 100.0),
                _ => None,
            },
            server_cpu_percent: match (srv0, srv1) {
                (Some(a), Some(b)) if wall > 0.0 => Some((b - a) / wall * 100.0),
                _ => None,
            },
        }
    })
}

/// The connections thread `thread` of `threads` runs out of `total`: global indices `thread`,
/// `thread + threads`, ...
#[derive(Clone, Copy, Debug)]
pub struct Share {
    pub total: usize,
    pub threads: usize,
    pub thread: usize,
}

impl Share {
    /// How many connections the thread runs.
    pub fn count(&self) -> usize {
        (self.total + self.threads - 1 - self.thread) / self.threads
    }

    /// The global index of the thread's connection `i`.
    pub fn global(&self, i: usize) -> usize {
        i * self.threads + self.thread
    }
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`.
pub fn process_cpu_secs() -> Option<f64> {
    cpu_secs_of("/proc/self/stat")
}

/// CPU seconds (user + system, all threads) of the process whose `stat` file is `path`.
pub fn cpu_secs_of(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3, "state".
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // /proc reports clock ticks in USER_HZ, which is 100 on Linux.
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_covers_every_connection_once() {
        for total in 0..20 {
            for threads in 1..5 {
                let sum: usize = (0..threads)
                    .map(|thread| {
                        let s = Share {
                            total,
                            threads,
                            thread,
                        };
                        s.count()
                    })
                    .sum();
                assert_eq!(sum, total, "{total} over {threads}");
            }
        }
    }

    #[test]
    fn cpu_time_is_readable() {
        assert!(process_cpu_secs().is_some());
    }
}
