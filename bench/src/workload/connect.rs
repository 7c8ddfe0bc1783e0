//! `connect`: K concurrent loops, each doing full setups back to back: TCP connect, upgrade (ws),
//! one 64-byte round trip, orderly close, then the next setup at once.
//!
//! Who closes ([`CloseBy`]):
//! - `client` (default): ws sends Close and reads the peer's Close (RFC 6455 §5.5.1); tcp shuts
//!   down its write side and reads EOF.
//! - `origin`: the origin ends the connection after the echo (`ringbench origin --mode
//!   echo-close`). ws reads the proxy's Close (which must carry 1000), answers it with a Close
//!   and reads EOF, since the server closes the TCP connection first (§7.1.1); tcp reads the echo
//!   and then EOF. Either way the client closes its socket after the EOF.
//!
//! A setup's latency runs from just before `connect()` to the end of the close; its close phase,
//! reported apart (`close_p50_us`, ...), from reading the echo's last byte to the end of the
//! close. Setups finishing inside the window are counted. A failed setup is counted as an error
//! and its loop pauses `BACKOFF` before the next one, so a refusing target shows up as a bounded
//! error count rather than a busy loop. Setups still running `STUCK` after they began when the
//! run ends are counted as timeouts (e.g. `--close origin` against an origin that never closes).
//!
//! Over TLS a setup also does the TLS handshake (after the connect, before the upgrade). Each
//! thread has one client config, so with resumption on (the default) a setup offers a session an
//! earlier setup of the thread received, and counted setups whose handshake resumed are reported
//! (`tls_resumed`); with `--no-resume` every handshake is a full one.

use std::str::FromStr;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::{check_echo, run_load, wait, Common, Lane, ThreadGate};
use crate::client::{Dial, Io, Stream};
use crate::pattern;
use crate::report::{Params, Report};
use crate::stats::ErrorKind;

/// Payload bytes of the round trip.
pub const ROUND_TRIP_BYTES: usize = 64;
const BACKOFF: Duration = Duration::from_millis(10);
const STUCK: Duration = Duration::from_secs(2);

/// Which side ends each setup's connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CloseBy {
    /// The client starts the close after the echo.
    #[default]
    Client,
    /// The origin closes after the echo; the client answers and waits for EOF.
    Origin,
}

impl CloseBy {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseBy::Client => "client",
            CloseBy::Origin => "origin",
        }
    }
}

impl FromStr for CloseBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "client" => Ok(CloseBy::Client),
            "origin" => Ok(CloseBy::Origin),
            _ => Err(format!("{s:?}: expected client or origin")),
        }
    }
}

/// `connect` parameters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Connect {
    pub concurrency: usize,
    pub close: CloseBy,
}

pub fn run(common: &Common, args: Connect) -> Report {
    let params = Params {
        concurrency: Some(args.concurrency as u64),
        size: Some(ROUND_TRIP_BYTES as u64),
        close: Some(args.close.as_str()),
        resume: common.tls.as_ref().map(|t| t.resume()),
        ..common.params()
    };
    let (mut r, m) = run_load(
        common,
        "connect",
        params,
        args.concurrency,
        "setups",
        |lane, gate| thread(lane, gate, args.close),
    );
    r.set_setups(&m.tally, m.window_secs);
    if common.tls.is_some() {
        r.tls_resumed = Some(m.tally.tls_resumed);
        r.tls_resumed_percent =
            Some(m.tally.tls_resumed as f64 * 100.0 / m.tally.completed.max(1) as f64);
    }
    let h = &m.tally.close_latency;
    if !h.is_empty() {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        r.close_p50_us = Some(us(0.50));
        r.close_p90_us = Some(us(0.90));
        r.close_p99_us = Some(us(0.99));
    }
    r
}

/// Where one loop is.
enum Slot {
    /// Paused after an error until the instant.
    Backoff(Instant),
    Dialing(Dial),
    /// Open; the round trip is in flight. Holds when the setup began.
    RoundTrip(Stream, Instant),
    /// Close sent; waiting for the peer's. Holds when the setup began and when the echo was in.
    Closing(Stream, Times),
    /// Echo back; waiting for the origin's close (ws: the Close frame, answered, then EOF).
    AwaitClose(Stream, Times),
}

/// When a setup began and when its echo was complete; whether its TLS handshake resumed.
#[derive(Clone, Copy, Debug)]
struct Times {
    started: Instant,
    echoed: Instant,
    resumed: bool,
}

fn thread(lane: &mut Lane<'_>, gate: &ThreadGate<'_>, close: CloseBy) {
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
            slots[i] = match advance(slot, lane, i, close) {
                Ok(Outcome::Pending(slot)) => slot,
                Ok(Outcome::Done(t)) => {
                    let end = Instant::now();
                    done += 1;
                    if w.contains(end) {
                        lane.tally.record(end - t.started);
                        lane.tally.record_close(end - t.echoed);
                        lane.tally.completed += 1;
                        lane.tally.tls_resumed += u64::from(t.resumed);
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
            Slot::RoundTrip(_, s) => *s,
            Slot::Closing(_, t) | Slot::AwaitClose(_, t) => t.started,
        };
        if end.saturating_duration_since(started) > STUCK {
            lane.tally.errors.add(&ErrorKind::Timeout("setup"));
        }
    }
    lane.tally.connections_up = k as u64;
}

/// Starts loop `i`'s next setup, or after a failure to start, its backoff.
fn begin(poll: &Poll, lane: &mut Lane<'_>, i: usize) -> Slot {
    match lane.dial(poll, i) {
        Ok(d) => Slot::Dialing(d),
        Err(e) => {
            lane.fail(&e);
            Slot::Backoff(Instant::now() + BACKOFF)
        }
    }
}

enum Outcome {
    Pending(Slot),
    /// The setup with these times is complete.
    Done(Times),
}

/// Moves loop `i` on after readiness on its socket (or a stale event, which changes nothing).
fn advance(
    slot: Slot,
    lane: &mut Lane<'_>,
    i: usize,
    close: CloseBy,
) -> Result<Outcome, ErrorKind> {
    let io = &mut lane.io;
    match slot {
        Slot::Backoff(until) => Ok(Outcome::Pending(Slot::Backoff(until))),
        Slot::Dialing(mut d) => {
            if !d.advance(io)? {
                return Ok(Outcome::Pending(Slot::Dialing(d)));
            }
            let started = d.started;
            let mut s = d.into_stream(ROUND_TRIP_BYTES, pattern::seed(lane.share.global(i)));
            lane.note_session(&s);
            let io = &mut lane.io;
            if close == CloseBy::Origin {
                // The echo and the origin's close may arrive together.
                s.expect_eof();
            }
            s.queue_messages(1);
            s.flush(io)?;
            Ok(Outcome::Pending(Slot::RoundTrip(s, started)))
        }
        Slot::RoundTrip(mut s, started) => {
            s.read(io)?;
            check_echo(&s)?;
            if s.received() == s.queued() {
                let t = Times {
                    started,
                    echoed: Instant::now(),
                    resumed: s.tls_resumed() == Some(true),
                };
                if close == CloseBy::Origin {
                    return await_close(s, io, t);
                }
                s.start_close(io)?;
                return Ok(Outcome::Pending(Slot::Closing(s, t)));
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
        Slot::Closing(mut s, t) => {
            s.read(io)?;
            check_echo(&s)?;
            if s.is_ws() && s.peer_closed() && !s.got_close_frame() {
                return Err(ErrorKind::UnexpectedClose(
                    "EOF instead of a Close frame".into(),
                ));
            }
            if s.peer_closed() {
                return Ok(Outcome::Done(t));
            }
            s.flush(io)?;
            Ok(Outcome::Pending(Slot::Closing(s, t)))
        }
        Slot::AwaitClose(mut s, t) => {
            s.read(io)?;
            check_echo(&s)?;
            await_close(s, io, t)
        }
    }
}

/// After the echo, with the origin closing: done once EOF is read (ws: after a Close 1000, which
/// [`Stream::read`] has answered); the stream is dropped (closed) on return.
fn await_close(mut s: Stream, io: &mut Io, t: Times) -> Result<Outcome, ErrorKind> {
    if let Some(code) = s.close_code() {
        if code != 1000 {
            return Err(ErrorKind::UnexpectedClose(format!(
                "{} instead of Close 1000",
                s.close_reason()
            )));
        }
    }
    if !s.eof() {
        s.flush(io)?;
        return Ok(Outcome::Pending(Slot::AwaitClose(s, t)));
    }
    if s.is_ws() && !s.got_close_frame() {
        return Err(ErrorKind::UnexpectedClose(
            "EOF instead of a Close frame".into(),
        ));
    }
    if !s.flushed() {
        return Err(ErrorKind::UnexpectedClose(
            "EOF before the Close reply was written".into(),
        ));
    }
    Ok(Outcome::Done(t))
}
