//! `latency`: C connections, each ping-ponging one S-byte message in a closed loop.
//!
//! A connection sends its next message the moment the previous one is fully back (S payload
//! bytes, checked against the pattern), so exactly one message per connection is in flight and
//! its latency is the time from queueing it to reading its last byte. Messages completed inside
//! the window are counted; messages/s = that count / window length.

use std::time::{Duration, Instant};

use mio::Events;

use super::{check_echo_open, run_load, wait, Common, Lane, ThreadGate};
use crate::client::{Io, Stream};
use crate::report::{Params, Report};
use crate::stats::ErrorKind;

/// `latency` parameters.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub connections: usize,
    pub size: usize,
}

pub fn run(common: &Common, args: Latency) -> Report {
    let params = Params {
        connections: Some(args.connections as u64),
        size: Some(args.size as u64),
        ..common.params()
    };
    let body = |lane: &mut Lane<'_>, gate: &ThreadGate<'_>| thread(args, lane, gate);
    let (mut r, m) = run_load(common, "latency", params, args.connections, "msg", body);
    r.set_messages(&m.tally, m.window_secs);
    r
}

fn thread(args: Latency, lane: &mut Lane<'_>, gate: &ThreadGate<'_>) {
    let Some(mut poll) = lane.open_poll() else {
        return;
    };
    let mut streams = lane.dial_all(&mut poll, args.size.max(1));
    let w = gate.ready();
    let mut sent_at = vec![w.start; streams.len()];
    for slot in streams.iter_mut() {
        if let Some(s) = slot {
            s.queue_messages(1);
            if let Err(e) = s.flush(&mut lane.io) {
                lane.fail(&e);
                *slot = None;
            }
        }
    }
    let mut events = Events::with_capacity(1024);
    loop {
        let now = Instant::now();
        if now >= w.end {
            break;
        }
        if let Err(e) = wait(&mut poll, &mut events, w.end - now) {
            lane.tally.errors.add(&e);
            break;
        }
        let mut done = 0;
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(Some(s)) = streams.get_mut(i) else {
                continue;
            };
            match step(s, &mut lane.io, &mut sent_at[i]) {
                Ok(None) => {}
                Ok(Some((at, latency))) => {
                    done += 1;
                    if w.contains(at) {
                        lane.tally.record(latency);
                        lane.tally.completed += 1;
                    }
                }
                Err(e) => {
                    lane.fail(&e);
                    streams[i] = None;
                }
            }
        }
        lane.progress.add(done, 0, 0);
    }
    lane.tally.connections_up = streams.iter().flatten().count() as u64;
}

/// Handles readiness on one connection. When the message in flight is fully back, returns the
/// completion time and its latency, and queues the next message (sent from `sent_at` = now).
fn step(
    s: &mut Stream,
    io: &mut Io,
    sent_at: &mut Instant,
) -> Result<Option<(Instant, Duration)>, ErrorKind> {
    s.read(io)?;
    check_echo_open(s)?;
    let mut completed = None;
    if s.received() == s.queued() {
        let now = Instant::now();
        completed = Some((now, now - *sent_at));
        *sent_at = now;
        s.queue_messages(1);
    }
    s.flush(io)?;
    Ok(completed)
}
