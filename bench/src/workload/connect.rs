//! `connect`: K concurrent loops, each doing full setups back to back: TCP connect, upgrade (ws),
//! one 64-byte round trip, orderly close (ws: Close sent and Close received, RFC 6455 §5.5.1;
//! tcp: write side shut down and EOF read), then the next setup at once.
//!
//! A setup's latency runs from just before `connect()` to the end of the close. Setups finishing
//! inside the window are counted. A failed setup is counted as an error and its loop pauses
//! `BACKOFF` before the next one, so a refusing target shows up as a bounded error count rather
//! than a busy loop. Setups still running `STUCK` after they began when the run ends are counted
//! as timeouts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::{run_threads, Common, Share, ThreadGate};
use crate::client::{Dial, Io, Stream};
use crate::pattern;
use crate::progress::{Printer, Progress};
use crate::report::Report;
use crate::stats::{ErrorKind, Tally};

/// Payload bytes of the round trip.
pub const ROUND_TRIP_BYTES: usize = 64;
const BACKOFF: Duration = Duration::from_millis(10);
const STUCK: Duration = Duration::from_secs(2);

/// `connect` parameters.
#[derive(Clone, Copy, Debug)]
pub struct Connect {
    pub concurrency: usize,
}

pub fn run(common: &Common, args: Connect) -> Report {
    let threads = common.threads.clamp(1, args.concurrency.max(1));
    let progress = Arc::new(Progress::default());
    let printer = Printer::start(progress.clone(), common.show_progress(), "setups");
    let m = run_threads(common, threads, |t, gate| {
        thread(common, args, threads, t, gate, &progress)
    });
    drop(printer);
    let mut params = common.params();
    params.threads = threads;
    params.concurrency = Some(args.concurrency as u64);
    params.size = Some(ROUND_TRIP_BYTES as u64);
    let mut r = Report::new("connect", common.target.to_string(), params, &m.tally);
    r.elapsed_secs = m.window_secs;
    r.setups = Some(m.tally.completed);
    r.setups_per_sec = Some(m.tally.completed as f64 / m.window_secs);
    r.client_cpu_percent = m.client_cpu_percent;
    r
}

/// Where one loop is.
enum Slot {
    /// Paused after an error until the instant.
    Backoff(Instant),
    Dialing(Dial),
    /// Open; the round trip is in flight. Holds when the setup began.
    RoundTrip(Stream, Instant),
    /// Close sent; waiting for the peer's.
    Closing(Stream, Instant),
}

fn thread(
    common: &Common,
    args: Connect,
    threads: usize,
    t: usize,
    gate: &ThreadGate<'_>,
    progress: &Progress,
) -> Tally {
    let mut tally = Tally::default();
    let mut io = Io::new();
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            tally
                .errors
                .add(&ErrorKind::Io(format!("epoll_create: {e}")));
            return tally;
        }
    };
    let share = Share {
        total: args.concurrency,
        threads,
        thread: t,
    };
    let k = share.count();
    let w = gate.ready();
    let begin = |poll: &Poll, io: &mut Io, i: usize, tally: &mut Tally| -> Slot {
        match Dial::start(&common.target, poll.registry(), Token(i), &mut io.rng) {
            Ok(d) => Slot::Dialing(d),
            Err(e) => {
                tally.errors.add(&e);
                progress.error();
                Slot::Backoff(Instant::now() + BACKOFF)
            }
        }
    };
    let mut slots: Vec<Slot> = (0..k)
        .map(|i| begin(&poll, &mut io, i, &mut tally))
        .collect();
    let mut events = Events::with_capacity(1024);
    loop {
        let now = Instant::now();
        if now >= w.end {
            break;
        }
        let mut wake = w.end;
        for (i, slot) in slots.iter_mut().enumerate() {
            if let Slot::Backoff(until) = *slot {
                if until <= now {
                    *slot = begin(&poll, &mut io, i, &mut tally);
                } else {
                    wake = wake.min(until);
                }
            }
        }
        if let Err(e) = poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tally.errors.add(&ErrorKind::Io(format!("epoll_wait: {e}")));
                break;
            }
        }
        let mut done = 0;
        for ev in events.iter() {
            let i = ev.token().0;
            if i >= k {
                continue;
            }
            let slot = std::mem::replace(&mut slots[i], Slot::Backoff(now));
            slots[i] = match advance(slot, &mut io, share.global(i)) {
                Ok(Outcome::Pending(slot)) => slot,
                Ok(Outcome::Done(started)) => {
                    let end = Instant::now();
                    done += 1;
                    if w.contains(end) {
                        tally.record(end - started);
                        tally.completed += 1;
                    }
                    begin(&poll, &mut io, i, &mut tally)
                }
                Err(e) => {
                    tally.errors.add(&e);
                    progress.error();
                    Slot::Backoff(Instant::now() + BACKOFF)
                }
            };
        }
        progress.add(done, 0, 0);
    }
    let end = Instant::now();
    for slot in &slots {
        let started = match slot {
            Slot::Backoff(_) => continue,
            Slot::Dialing(d) => d.started,
            Slot::RoundTrip(_, s) | Slot::Closing(_, s) => *s,
        };
        if end.saturating_duration_since(started) > STUCK {
            tally.errors.add(&ErrorKind::Timeout("setup"));
        }
    }
    tally.connections_up = k as u64;
    tally
}

enum Outcome {
    Pending(Slot),
    /// The setup that began at this instant is complete.
    Done(Instant),
}

/// Moves one loop on after readiness on its socket (or a stale event, which changes nothing).
fn advance(slot: Slot, io: &mut Io, global: usize) -> Result<Outcome, ErrorKind> {
    match slot {
        Slot::Backoff(until) => Ok(Outcome::Pending(Slot::Backoff(until))),
        Slot::Dialing(mut d) => {
            if !d.advance()? {
                return Ok(Outcome::Pending(Slot::Dialing(d)));
            }
            let started = d.started;
            let mut s = d.into_stream(ROUND_TRIP_BYTES, pattern::seed(global));
            s.queue_messages(1);
            s.flush(io)?;
            Ok(Outcome::Pending(Slot::RoundTrip(s, started)))
        }
        Slot::RoundTrip(mut s, started) => {
            s.read(io)?;
            check_echo(&s)?;
            if s.received() == s.queued() {
                s.start_close(io)?;
                return Ok(Outcome::Pending(Slot::Closing(s, started)));
            }
            if s.peer_closed() {
                return Err(ErrorKind::UnexpectedClose(format!(
                    "peer closed before the echo ({})",
                    s.close_reason()
                )));
            }
            s.flush(io)?;
            Ok(Outcome::Pending(Slot::RoundTrip(s, started)))
        }
        Slot::Closing(mut s, started) => {
            s.read(io)?;
            check_echo(&s)?;
            if s.is_ws() && s.peer_closed() && !s.got_close_frame() {
                return Err(ErrorKind::UnexpectedClose(
                    "EOF instead of a Close frame".into(),
                ));
            }
            if s.peer_closed() {
                return Ok(Outcome::Done(started));
            }
            s.flush(io)?;
            Ok(Outcome::Pending(Slot::Closing(s, started)))
        }
    }
}

fn check_echo(s: &Stream) -> Result<(), ErrorKind> {
    if s.received() > s.queued() {
        return Err(ErrorKind::EchoMismatch { offset: s.queued() });
    }
    Ok(())
}
