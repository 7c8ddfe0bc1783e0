//! `hold`: open N idle tunnels, measure what they cost the server, keep them, close them.
//!
//! A tunnel counts as open after its TCP connect, its upgrade (ws) and one 1-byte round trip, which
//! proves bytes flow end to end. Tunnels are opened with at most `batch` setups in flight (spread
//! over the threads), so the ramp does not overrun the server's accept queue. With `--pid`, the
//! server's VmRSS is read from `/proc/PID/status` before the first tunnel and again `settle` after
//! the last one is up; growth / tunnels open is the per-tunnel cost. Held tunnels keep being
//! polled, so pings are answered and a tunnel the server drops is counted as an error.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Events;

use super::{check_echo, wait, Lane, Share};
use crate::client::tls::TlsClient;
use crate::client::{Dial, Stream};
use crate::pattern;
use crate::progress::{Printer, Progress};
use crate::report::{Params, Report};
use crate::stats::{ErrorKind, Tally};
use crate::target::Target;

/// Longest the ramp may take before unfinished setups count as timeouts.
const RAMP_TIMEOUT: Duration = Duration::from_secs(120);

/// `hold` parameters.
#[derive(Clone, Copy, Debug)]
pub struct Hold {
    pub tunnels: usize,
    pub pid: Option<u32>,
    pub hold: Duration,
    /// Most setups in flight at once.
    pub batch: usize,
    /// Pause between the last tunnel up and the second RSS reading.
    pub settle: Duration,
    pub threads: usize,
}

/// VmRSS of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `tls` is required for tls:// and wss:// targets.
pub fn run(target: &Target, tls: Option<&TlsClient>, args: Hold) -> Report {
    let threads = args.threads.clamp(1, args.tunnels.max(1));
    let progress = Arc::new(Progress::default());
    let ramp_done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let rss_before = args.pid.and_then(rss_bytes);
    // The ramp's length is not known up front: print once the run has taken 3 s.
    let printer = Printer::start_after(progress.clone(), Duration::from_secs(3), "tunnels");
    let started = Instant::now();
    let mut ramp_secs = 0.0;
    let mut rss_after = None;
    let mut tally = Tally::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (progress, ramp_done, stop) = (&progress, &ramp_done, &stop);
                scope.spawn(move || {
                    let mut signal = RampSignal {
                        done: ramp_done,
                        sent: false,
                    };
                    let share = Share {
                        total: args.tunnels,
                        threads,
                        thread: t,
                    };
                    let mut lane = Lane::new(target, tls, share, progress);
                    thread(args, &mut lane, &mut signal, stop);
                    lane.tally
                })
            })
            .collect();
        while ramp_done.load(Ordering::SeqCst) < threads {
            std::thread::sleep(Duration::from_millis(10));
        }
        ramp_secs = started.elapsed().as_secs_f64();
        std::thread::sleep(args.settle);
        rss_after = args.pid.and_then(rss_bytes);
        std::thread::sleep(args.hold);
        stop.store(true, Ordering::SeqCst);
        for h in handles {
            match h.join() {
                Ok(t) => tally.merge(t),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
    });
    drop(printer);
    let params = Params {
        tunnels: Some(args.tunnels as u64),
        pid: args.pid,
        hold_secs: Some(args.hold.as_secs_f64()),
        concurrency: Some(args.batch as u64),
        duration_secs: 0.0,
        warmup_secs: args.settle.as_secs_f64(),
        threads,
        ..Params::default()
    };
    let mut r = Report::new("hold", target.to_string(), params, &tally);
    r.elapsed_secs = ramp_secs;
    r.requested = Some(args.tunnels as u64);
    r.succeeded = Some(tally.completed);
    r.setups_per_sec = Some(tally.completed as f64 / ramp_secs.max(1e-9));
    r.rss_before_bytes = rss_before;
    r.rss_after_bytes = rss_after;
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        if tally.completed > 0 {
            let per = (after as f64 - before as f64) / tally.completed as f64;
            r.rss_per_tunnel_bytes = Some(per);
            r.rss_per_tunnel_kib = Some(per / 1024.0);
        }
    }
    if args.pid.is_some() && (rss_before.is_none() || rss_after.is_none()) {
        tally
            .errors
            .add(&ErrorKind::Io("cannot read VmRSS of --pid".into()));
        r.errors = tally.errors.counts.clone();
        r.error_total = tally.errors.total();
        r.error_details = tally.errors.first.clone();
    }
    r
}

/// Tells the main thread this thread's ramp is over: once, on purpose or when dropped (early
/// return, panic), so the main thread never waits for a thread that is gone.
struct RampSignal<'a> {
    done: &'a AtomicUsize,
    sent: bool,
}

impl RampSignal<'_> {
    fn signal(&mut self) {
        if !std::mem::replace(&mut self.sent, true) {
            self.done.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for RampSignal<'_> {
    fn drop(&mut self) {
        self.signal();
    }
}

enum Slot {
    Idle,
    Dialing(Dial),
    /// Open; the 1-byte round trip is in flight.
    RoundTrip(Stream),
    Held(Stream),
}

fn thread(args: Hold, lane: &mut Lane<'_>, ramp_done: &mut RampSignal<'_>, stop: &AtomicBool) {
    let Some(mut poll) = lane.open_poll() else {
        return;
    };
    let n = lane.share.count();
    let batch = (args.batch / lane.share.threads).max(1);
    let mut slots: Vec<Slot> = (0..n).map(|_| Slot::Idle).collect();
    let (mut next, mut inflight) = (0usize, 0usize);
    let deadline = Instant::now() + RAMP_TIMEOUT;
    let mut events = Events::with_capacity(1024);
    let mut ramping = true;
    loop {
        if ramping {
            while inflight < batch && next < n {
                match lane.dial(&poll, next) {
                    Ok(d) => {
                        slots[next] = Slot::Dialing(d);
                        inflight += 1;
                    }
                    Err(e) => lane.fail(&e),
                }
                next += 1;
            }
            if (next == n && inflight == 0) || Instant::now() >= deadline {
                for slot in slots.iter_mut() {
                    if matches!(slot, Slot::Dialing(_) | Slot::RoundTrip(_)) {
                        lane.fail(&ErrorKind::Timeout("tunnel setup"));
                        *slot = Slot::Idle;
                    }
                }
                ramping = false;
                ramp_done.signal();
            }
        } else if stop.load(Ordering::SeqCst) {
            break;
        }
        if let Err(e) = wait(&mut poll, &mut events, Duration::from_millis(20)) {
            lane.fail(&e);
            break;
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(slot) = slots.get_mut(i) else {
                continue;
            };
            let was_setup = matches!(slot, Slot::Dialing(_) | Slot::RoundTrip(_));
            match advance(std::mem::replace(slot, Slot::Idle), lane, i) {
                Ok(next_slot) => {
                    if was_setup && matches!(next_slot, Slot::Held(_)) {
                        inflight -= 1;
                        lane.tally.completed += 1;
                        lane.progress.open.fetch_add(1, Ordering::Relaxed);
                        lane.progress.add(1, 0, 0);
                    }
                    *slot = next_slot;
                }
                Err(e) => {
                    if was_setup {
                        inflight -= 1;
                    } else {
                        lane.progress.open.fetch_sub(1, Ordering::Relaxed);
                    }
                    lane.fail(&e);
                }
            }
        }
    }
    lane.tally.connections_up = slots.iter().filter(|s| matches!(s, Slot::Held(_))).count() as u64;
}

/// Moves tunnel `i` on after readiness on its socket.
fn advance(slot: Slot, lane: &mut Lane<'_>, i: usize) -> Result<Slot, ErrorKind> {
    let io = &mut lane.io;
    match slot {
        Slot::Idle => Ok(Slot::Idle),
        Slot::Dialing(mut d) => {
            if !d.advance(io)? {
                return Ok(Slot::Dialing(d));
            }
            let mut s = d.into_stream(1, pattern::seed(lane.share.global(i)));
            lane.note_session(&s);
            s.queue_messages(1);
            s.flush(&mut lane.io)?;
            Ok(Slot::RoundTrip(s))
        }
        Slot::RoundTrip(mut s) | Slot::Held(mut s) => {
            s.read(io)?;
            check_echo(&s)?;
            if s.peer_closed() {
                return Err(ErrorKind::UnexpectedClose(format!(
                    "server closed an idle tunnel ({})",
                    s.close_reason()
                )));
            }
            s.flush(io)?;
            Ok(if s.received() == s.queued() {
                Slot::Held(s)
            } else {
                Slot::RoundTrip(s)
            })
        }
    }
}
