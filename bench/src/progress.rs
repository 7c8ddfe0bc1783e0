//! The one-line-per-second progress report on stderr.
//!
//! Worker threads add to relaxed atomic counters once per event-loop pass (never per byte); a
//! printer thread reads the deltas each second. Progress counts everything, warmup included, so
//! a stalled run shows as a stall; the final report counts only the measurement window.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Live counters shared by a run's threads.
#[derive(Debug, Default)]
pub struct Progress {
    pub completed: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub errors: AtomicU64,
    /// Connections currently open (hold).
    pub open: AtomicU64,
}

impl Progress {
    pub fn add(&self, completed: u64, tx: u64, rx: u64) {
        if completed != 0 {
            self.completed.fetch_add(completed, Ordering::Relaxed);
        }
        if tx != 0 {
            self.tx_bytes.fetch_add(tx, Ordering::Relaxed);
        }
        if rx != 0 {
            self.rx_bytes.fetch_add(rx, Ordering::Relaxed);
        }
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Prints progress each second until dropped.
pub struct Printer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Printer {
    /// Starts printing if `enabled`; `unit` names what `completed` counts ("msg", "setups").
    pub fn start(progress: Arc<Progress>, enabled: bool, unit: &'static str) -> Printer {
        let quiet_for = if enabled {
            Duration::ZERO
        } else {
            Duration::MAX
        };
        Printer::start_after(progress, quiet_for, unit)
    }

    /// Starts a printer that stays silent for the first `quiet_for` of the run.
    pub fn start_after(
        progress: Arc<Progress>,
        quiet_for: Duration,
        unit: &'static str,
    ) -> Printer {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = (quiet_for != Duration::MAX).then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || print_loop(&progress, &stop, quiet_for, unit))
        });
        Printer { stop, handle }
    }
}

impl Drop for Printer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn print_loop(p: &Progress, stop: &AtomicBool, quiet_for: Duration, unit: &str) {
    let start = Instant::now();
    let mut last = (0u64, 0u64, 0u64);
    let mut next = start + Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        next += Duration::from_secs(1);
        let cur = (
            p.completed.load(Ordering::Relaxed),
            p.tx_bytes.load(Ordering::Relaxed),
            p.rx_bytes.load(Ordering::Relaxed),
        );
        if start.elapsed() < quiet_for {
            last = cur;
            continue;
        }
        let line = format!(
            "[{:>4.0}s] {:>10} {unit}/s  tx {:>8.1} MB/s  rx {:>8.1} MB/s  open {:>6}  errors {}\n",
            start.elapsed().as_secs_f64(),
            cur.0 - last.0,
            (cur.1 - last.1) as f64 / 1e6,
            (cur.2 - last.2) as f64 / 1e6,
            p.open.load(Ordering::Relaxed),
            p.errors.load(Ordering::Relaxed),
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
        last = cur;
    }
}
