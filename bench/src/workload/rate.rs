//! `rate`: an open loop at a fixed total message rate, wrk2 style.
//!
//! Message `n` of a thread is due at `start + n / rate_t` (the thread's share of the rate) and
//! goes to connection `n % C_t`, so connection `j`'s `k`-th message is due at a time computed from
//! `k * C_t + j`, with no per-message state. Latency counts from that due time, not from when the
//! message was actually written: if the system stalls, messages queue up behind the stall and
//! their latency shows it (no coordinated omission). A connection pipelines up to `max_inflight`
//! messages; beyond that, due messages wait (still timed from their due time). A timerfd wakes
//! the loop at the next due time with nanosecond precision. Counted: messages due inside the
//! window that came back before its end; `unfinished`: due inside the window, not back by the end.

use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::{check_echo_open, run_load, wait, Common, Lane, ThreadGate};
use crate::client::{Io, Stream};
use crate::report::{Params, Report};
use crate::stats::ErrorKind;
use crate::timer::Timer;

const TIMER: Token = Token(usize::MAX);

/// Bytes one connection may have in flight.
const MAX_INFLIGHT_BYTES: usize = 4 * 1024 * 1024;

/// `rate` parameters.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub connections: usize,
    pub size: usize,
    /// Messages per second over all connections.
    pub rate: u64,
}

pub fn run(common: &Common, args: Rate) -> Report {
    let params = Params {
        connections: Some(args.connections as u64),
        size: Some(args.size as u64),
        rate: Some(args.rate),
        ..common.params()
    };
    let body = |lane: &mut Lane<'_>, gate: &ThreadGate<'_>| thread(args, lane, gate);
    let (mut r, m) = run_load(common, "rate", params, args.connections, "msg", body);
    r.set_messages(&m.tally, m.window_secs);
    r.unfinished = Some(m.tally.unfinished);
    r
}

/// The due times of one thread's messages.
struct Schedule {
    start: Instant,
    conns: u128,
    /// ns between messages = 1e9 * C / (R * C_t), kept as a fraction to avoid drift.
    num: u128,
    den: u128,
}

impl Schedule {
    /// Due time of thread message `n`.
    fn due(&self, n: u64) -> Instant {
        self.start + Duration::from_nanos((u128::from(n) * self.num / self.den) as u64)
    }

    /// Due time of connection `j`'s `k`-th message.
    fn due_of(&self, j: usize, k: u64) -> Instant {
        self.due(k * self.conns as u64 + j as u64)
    }
}

fn thread(args: Rate, lane: &mut Lane<'_>, gate: &ThreadGate<'_>) {
    let n = lane.share.count();
    let size = args.size.max(1);
    let setup = Poll::new().and_then(|p| Timer::new(p.registry(), TIMER).map(|tm| (p, tm)));
    let Some((mut poll, timer)) = lane.set_up("epoll/timerfd", setup) else {
        return;
    };
    let mut streams = lane.dial_all(&mut poll, size);
    let w = gate.ready();
    if n == 0 || args.rate == 0 {
        return;
    }
    let sched = Schedule {
        start: w.start,
        conns: n as u128,
        num: 1_000_000_000 * args.connections as u128,
        den: u128::from(args.rate) * n as u128,
    };
    let max_inflight = (MAX_INFLIGHT_BYTES / size).max(1) as u64;
    let mut conns: Vec<Conn> = streams
        .drain(..)
        .map(|stream| Conn {
            stream,
            due: 0,
            sent: 0,
            back: 0,
        })
        .collect();
    let mut next = 0u64;
    let mut armed_for = None;
    let mut events = Events::with_capacity(1024);
    loop {
        let now = Instant::now();
        if now >= w.end {
            break;
        }
        // Hand out every message now due; each connection is visited once per pass.
        let first = next;
        while sched.due(next) <= now {
            conns[(next % n as u64) as usize].due += 1;
            next += 1;
        }
        for m in first..next.min(first + n as u64) {
            let c = &mut conns[(m % n as u64) as usize];
            if let Err(e) = c.send_due(max_inflight, &mut lane.io) {
                lane.fail(&e);
                c.stream = None;
            }
        }
        let next_due = sched.due(next);
        if armed_for != Some(next) && next_due < w.end {
            // Re-arming resets the expiry count, so the timer is never read: each expiry is a
            // new edge for epoll.
            if let Err(e) = timer.arm(next_due.saturating_duration_since(Instant::now())) {
                lane.tally
                    .errors
                    .add(&ErrorKind::Io(format!("timerfd_settime: {e}")));
                break;
            }
            armed_for = Some(next);
        }
        let until_end = w.end.saturating_duration_since(Instant::now());
        if let Err(e) = wait(&mut poll, &mut events, until_end) {
            lane.tally.errors.add(&e);
            break;
        }
        let mut done = 0;
        for ev in events.iter() {
            let j = ev.token().0;
            let Some(c) = conns.get_mut(j) else { continue };
            let Some(s) = &mut c.stream else { continue };
            let result = s.read(&mut lane.io).and_then(|_| check_echo_open(s));
            let now = Instant::now();
            let complete = s.received() / size as u64;
            while c.back < complete {
                let due_at = sched.due_of(j, c.back);
                c.back += 1;
                done += 1;
                if w.contains(due_at) {
                    lane.tally.record(now.saturating_duration_since(due_at));
                    lane.tally.completed += 1;
                }
            }
            if let Err(e) = result.and_then(|()| c.send_due(max_inflight, &mut lane.io)) {
                lane.fail(&e);
                c.stream = None;
            }
        }
        lane.progress.add(done, 0, 0);
    }
    for (j, c) in conns.iter().enumerate() {
        lane.tally.unfinished += (c.back..c.due)
            .filter(|&k| w.contains(sched.due_of(j, k)))
            .count() as u64;
    }
    lane.tally.connections_up = conns.iter().filter(|c| c.stream.is_some()).count() as u64;
}

/// One connection of the open loop.
struct Conn {
    stream: Option<Stream>,
    /// Messages assigned so far (due), queued, and back.
    due: u64,
    sent: u64,
    back: u64,
}

impl Conn {
    /// Queues every due message the in-flight cap allows and writes what the socket takes.
    fn send_due(&mut self, max_inflight: u64, io: &mut Io) -> Result<(), ErrorKind> {
        let Some(s) = &mut self.stream else {
            return Ok(());
        };
        let k = self
            .due
            .min(self.back + max_inflight)
            .saturating_sub(self.sent);
        if k > 0 {
            s.queue_messages(k);
            self.sent += k;
        }
        s.flush(io)
    }
}
