//! `bulk`: C connections each streaming F-byte messages (one ws frame each) through an echo
//! origin, writing and reading at the same time.
//!
//! Each connection keeps at least `QUEUE_AHEAD` bytes queued, so its writer only ever stops
//! when the socket is full; its reader checks every echoed byte. TCP flow control is the only
//! throttle. Goodput is payload bytes (ws headers and masks excluded) written (`tx`) and read back
//! (`rx`) inside the window; both are sampled from running totals when the window opens and
//! closes, so no per-byte timestamps are taken.

use std::time::{Duration, Instant};

use mio::Events;

use super::{check_echo_open, run_load, wait, Common, Lane, ThreadGate};
use crate::client::{Io, Stream, IO_CHUNK};
use crate::report::{Params, Report};
use crate::stats::ErrorKind;

/// Payload bytes kept queued ahead of the socket per connection.
const QUEUE_AHEAD: u64 = 4 * IO_CHUNK as u64;

/// `bulk` parameters.
#[derive(Clone, Copy, Debug)]
pub struct Bulk {
    pub connections: usize,
    pub frame: usize,
}

pub fn run(common: &Common, args: Bulk) -> Report {
    let params = Params {
        connections: Some(args.connections as u64),
        frame: Some(args.frame as u64),
        ..common.params()
    };
    let body = |lane: &mut Lane<'_>, gate: &ThreadGate<'_>| thread(args, lane, gate);
    let (mut r, m) = run_load(common, "bulk", params, args.connections, "frames", body);
    r.set_throughput(&m.tally, m.window_secs);
    r.set_messages(&m.tally, m.window_secs);
    r
}

fn thread(args: Bulk, lane: &mut Lane<'_>, gate: &ThreadGate<'_>) {
    let Some(mut poll) = lane.open_poll() else {
        return;
    };
    let frame = args.frame.max(1);
    let mut streams = lane.dial_all(&mut poll, frame);
    let w = gate.ready();
    // Running totals over all of this thread's connections, and their values when the window
    // opened.
    let (mut tx, mut rx) = (0u64, 0u64);
    let mut base: Option<(u64, u64)> = None;
    // Connections whose last turn ended with the socket still writable.
    let mut again: Vec<usize> = (0..streams.len()).collect();
    let mut queued_again = vec![true; streams.len()];
    let mut turns: Vec<(usize, bool)> = Vec::with_capacity(streams.len() + 1024);
    let mut events = Events::with_capacity(1024);
    loop {
        let now = Instant::now();
        if base.is_none() && now >= w.measure_from {
            base = Some((tx, rx));
        }
        if now >= w.end {
            break;
        }
        let until = if base.is_none() {
            w.measure_from
        } else {
            w.end
        };
        let timeout = if again.is_empty() {
            until - now
        } else {
            Duration::ZERO
        };
        if let Err(e) = wait(&mut poll, &mut events, timeout) {
            lane.tally.errors.add(&e);
            break;
        }
        turns.clear();
        for i in again.drain(..) {
            queued_again[i] = false;
            turns.push((i, false));
        }
        for ev in events.iter() {
            let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
            turns.push((ev.token().0, readable));
        }
        let (tx0, rx0) = (tx, rx);
        for &(i, readable) in &turns {
            let Some(Some(s)) = streams.get_mut(i) else {
                continue;
            };
            match pump(s, &mut lane.io, frame, readable) {
                Ok(turn) => {
                    (tx, rx) = (tx + turn.tx, rx + turn.rx);
                    if turn.again && !queued_again[i] {
                        queued_again[i] = true;
                        again.push(i);
                    }
                }
                Err(e) => {
                    lane.fail(&e);
                    streams[i] = None;
                }
            }
        }
        lane.progress
            .add((rx - rx0) / frame as u64, tx - tx0, rx - rx0);
    }
    let (tx_base, rx_base) = base.unwrap_or((tx, rx));
    let tally = &mut lane.tally;
    tally.tx_bytes = tx - tx_base;
    tally.rx_bytes = rx - rx_base;
    tally.completed = tally.rx_bytes / frame as u64;
    tally.connections_up = streams.iter().flatten().count() as u64;
}

/// Most bytes written to one connection per turn before the others get theirs.
const TURN_BYTES: u64 = 8 * IO_CHUNK as u64;

/// What one turn on a connection moved.
struct Turn {
    tx: u64,
    rx: u64,
    /// The turn ended with the socket still taking bytes: no writable edge will come, so the
    /// connection needs another turn without waiting for one.
    again: bool,
}

/// Reads (if `readable`), then writes until the socket is full or the turn is used up.
fn pump(s: &mut Stream, io: &mut Io, frame: usize, readable: bool) -> Result<Turn, ErrorKind> {
    let (tx0, rx0) = (s.sent(), s.received());
    if readable {
        s.read(io)?;
        check_echo_open(s)?;
    }
    loop {
        if s.unsent() < QUEUE_AHEAD {
            s.queue_messages(QUEUE_AHEAD.div_ceil(frame as u64));
        }
        s.flush(io)?;
        // Bytes left unsent after a flush mean the socket is full: a writable edge will follow.
        let full = s.unsent() > 0;
        let used = s.sent() - tx0;
        if full || used >= TURN_BYTES {
            return Ok(Turn {
                tx: used,
                rx: s.received() - rx0,
                again: !full,
            });
        }
    }
}
