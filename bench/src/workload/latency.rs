//! `latency`: C connections, each ping-ponging one S-byte message in a closed loop.
//!
//! A connection sends its next message the moment the previous one is fully back (S payload
//! bytes, checked against the pattern), so exactly one message per connection is in flight and
//! its latency is the time from queueing it to reading its last byte. Messages completed inside
//! the window are counted; messages/s = that count / window length.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::{dial_all, run_threads, Common, Share, ThreadGate};
use crate::client::{Io, Stream};
use crate::progress::{Printer, Progress};
use crate::report::Report;
use crate::stats::{ErrorKind, Tally};

/// `latency` parameters.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub connections: usize,
    pub size: usize,
}

pub fn run(common: &Common, args: Latency) -> Report {
    let threads = common.threads.clamp(1, args.connections.max(1));
    let progress = Arc::new(Progress::default());
    let printer = Printer::start(progress.clone(), common.show_progress(), "msg");
    let m = run_threads(common, threads, |t, gate| {
        thread(common, args, threads, t, gate, &progress)
    });
    drop(printer);
    let mut params = common.params();
    params.threads = threads;
    params.connections = Some(args.connections as u64);
    params.size = Some(args.size as u64);
    let mut r = Report::new("latency", common.target.to_string(), params, &m.tally);
    r.elapsed_secs = m.window_secs;
    r.messages = Some(m.tally.completed);
    r.messages_per_sec = Some(m.tally.completed as f64 / m.window_secs);
    r.client_cpu_percent = m.client_cpu_percent;
    r
}

fn thread(
    common: &Common,
    args: Latency,
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
        total: args.connections,
        threads,
        thread: t,
    };
    let n = share.count();
    let size = args.size.max(1);
    let mut streams = dial_all(
        &common.target,
        &mut poll,
        share,
        size,
        &mut io,
        &mut tally,
        progress,
    );
    let w = gate.ready();
    let mut sent_at = vec![w.start; n];
    let fail = |tally: &mut Tally, slot: &mut Option<Stream>, e: ErrorKind| {
        tally.errors.add(&e);
        progress.error();
        *slot = None;
    };
    for slot in streams.iter_mut() {
        if let Some(s) = slot {
            s.queue_messages(1);
            if let Err(e) = s.flush(&mut io) {
                fail(&mut tally, slot, e);
            }
        }
    }
    let mut events = Events::with_capacity(1024);
    loop {
        let now = Instant::now();
        if now >= w.end {
            break;
        }
        if let Err(e) = poll.poll(&mut events, Some(w.end - now)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tally.errors.add(&ErrorKind::Io(format!("epoll_wait: {e}")));
                break;
            }
        }
        let mut done = 0;
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(Some(s)) = streams.get_mut(i) else {
                continue;
            };
            match step(s, &mut io, &mut sent_at[i]) {
                Ok(None) => {}
                Ok(Some((at, latency))) => {
                    done += 1;
                    if w.contains(at) {
                        tally.record(latency);
                        tally.completed += 1;
                    }
                }
                Err(e) => fail(&mut tally, &mut streams[i], e),
            }
        }
        progress.add(done, 0, 0);
    }
    tally.connections_up = streams.iter().flatten().count() as u64;
    tally
}

/// Handles readiness on one connection. When the message in flight is fully back, returns the
/// completion time and its latency, and queues the next message (sent from `sent_at` = now).
fn step(
    s: &mut Stream,
    io: &mut Io,
    sent_at: &mut Instant,
) -> Result<Option<(Instant, Duration)>, ErrorKind> {
    s.read(io)?;
    let mut completed = None;
    if s.received() > s.queued() {
        return Err(ErrorKind::EchoMismatch { offset: s.queued() });
    }
    if s.received() == s.queued() {
        let now = Instant::now();
        completed = Some((now, now - *sent_at));
        *sent_at = now;
        s.queue_messages(1);
    }
    if s.peer_closed() {
        return Err(ErrorKind::UnexpectedClose(format!(
            "peer closed the connection ({})",
            s.close_reason()
        )));
    }
    s.flush(io)?;
    Ok(completed)
}
