//! `connect`: K concurrent loops, each doing full setups back to back: TCP connect, upgrade (ws),
//! one 64-byte round trip, orderly close (ws: Close sent and Close received, RFC 6455 §5.5.1;
//! tcp: write side shut down and EOF read), then the next setup at once.
//!
//! A setup's latency runs from just before `connect()` to the end of the close. Setups finishing
//! inside the window are counted. A failed setup is counted as an error and its loop pauses
//! `BACKOFF` before the next one, so a refusing target shows up as a bounded error count rather
//! than a busy loop. Setups still running `STUCK` after they began when the run ends are counted
//! as timeouts.

use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::{check_echo, run_load, wait, Common, Lane, ThreadGate};
use crate::client::{Dial, Io, Stream};
use crate::pattern;
use crate::report::{Params, Report};
use crate::stats::ErrorKind;

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
    let params = Params {
        concurrency: Some(args.concurrency as u64),
        size: Some(ROUND_TRIP_BYTES as u64),
        ..common.params()
    };
    let (mut r, m) = run_load(
        common,
        "connect",
        params,
        args.concurrency,
        "setups",
        thread,
    );
    r.setups = Some(m.tally.completed);
    r.setups_per_sec = Some(m.tally.completed as f64 / m.window_secs);
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

fn thread(lane: &mut Lane<'_>, gate: &ThreadGate<'_>) {
    let Some(mut poll) = lane.open_poll() else {
        return;
    };
    let k = lane.share.count();
    let w = gate.ready();
    let mut slots: Vec<Slot> = (0..k).map(|i| begin(&poll, lane, i)).collect();
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
                    *slot = begin(&poll, lane, i);
                } else {
                    wake = wake.min(until);
                }
            }
        }
        if let Err(e) = wait(&mut poll, &mut events, wake.saturating_duration_since(now)) {
            lane.tally.errors.add(&e);
            break;
        }
        let mut done = 0;
        for ev in events.iter() {
            let i = ev.token().0;
            if i >= k {
                continue;
            }
            let slot = std::mem::replace(&mut slots[i], Slot::Backoff(now));
            slots[i] = match advance(slot, &mut lane.io, lane.share.global(i)) {
                Ok(Outcome::Pending(slot)) => slot,
                Ok(Outcome::Done(started)) => {
                    let end = Instant::now();
                    done += 1;
                    if w.contains(end) {
                        lane.tally.record(end - started);
                        lane.tally.completed += 1;
                    }
                    begin(&poll, lane, i)
                }
                Err(e) => {
                    lane.fail(&e);
                    Slot::Backoff(Instant::now() + BACKOFF)
                }
            };
        }
        lane.progress.add(done, 0, 0);
    }
    let end = Instant::now();
    for slot in &slots {
        let started = match slot {
            Slot::Backoff(_) => continue,
            Slot::Dialing(d) => d.started,
            Slot::RoundTrip(_, s) | Slot::Closing(_, s) => *s,
        };
        if end.saturating_duration_since(started) > STUCK {
            lane.tally.errors.add(&ErrorKind::Timeout("setup"));
        }
    }
    lane.tally.connections_up = k as u64;
}

/// Starts loop `i`'s next setup, or after a failure to start, its backoff.
fn begin(poll: &Poll, lane: &mut Lane<'_>, i: usize) -> Slot {
    match Dial::start(lane.target, poll.registry(), Token(i), &mut lane.io.rng) {
        Ok(d) => Slot::Dialing(d),
        Err(e) => {
            lane.fail(&e);
            Slot::Backoff(Instant::now() + BACKOFF)
        }
    }
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
