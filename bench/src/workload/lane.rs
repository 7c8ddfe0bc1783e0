//! One load thread's own state ([`Lane`]) and the steps every load thread takes with it: creating
//! its poll and its [`Dialer`] (for TLS, the thread's own client config and session cache), opening its share of the connections up front ([`Lane::dial_all`]), waiting for
//! readiness ([`wait`]) and checking what a connection read back ([`check_echo`]).
//!
//! Invariants: every error a thread meets is counted once in its tally; errors on connections
//! ([`Lane::fail`]) also show in the progress line, errors of the thread's own setup
//! ([`Lane::set_up`]) do not. A failed connection is never reopened here.

use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::Share;
use crate::client::tls::TlsClient;
use crate::client::{Dial, Dialer, Io, Stream};
use crate::pattern;
use crate::progress::Progress;
use crate::stats::{ErrorKind, Tally};
use crate::target::Target;

/// How long opening the connections of latency, rate and bulk may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// One load thread: where and how it connects, which connections it runs, what it has counted,
/// its I/O scratch, and the run's progress counters it adds to.
pub struct Lane<'a> {
    pub dialer: Dialer<'a>,
    pub share: Share,
    pub tally: Tally,
    pub io: Io,
    pub progress: &'a Progress,
}

impl<'a> Lane<'a> {
    /// `tls` is required for tls:// and wss:// targets.
    pub fn new(
        target: &'a Target,
        tls: Option<&TlsClient>,
        share: Share,
        progress: &'a Progress,
    ) -> Lane<'a> {
        Lane {
            dialer: Dialer::new(target, tls),
            share,
            tally: Tally::default(),
            io: Io::new(),
            progress,
        }
    }

    /// The thread's poll; `None` (counted as `epoll_create: …`) if it cannot be created.
    pub fn open_poll(&mut self) -> Option<Poll> {
        self.set_up("epoll_create", Poll::new())
    }

    /// The result of one step of the thread's own setup; a failure is counted as the I/O error
    /// `what: …` and gives `None`, after which the thread gives up.
    pub fn set_up<T>(&mut self, what: &str, result: std::io::Result<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.tally
                    .errors
                    .add(&ErrorKind::Io(format!("{what}: {e}")));
                None
            }
        }
    }

    /// Starts opening local connection `i` on `poll`.
    pub fn dial(&mut self, poll: &Poll, i: usize) -> Result<Dial, ErrorKind> {
        self.dialer
            .dial(poll.registry(), Token(i), &mut self.io.rng)
    }

    /// Notes the TLS session of an open connection, if it is the thread's first.
    pub fn note_session(&mut self, s: &Stream) {
        if self.tally.tls_session.is_none() {
            self.tally.tls_session = s.tls_session();
        }
    }

    /// Counts a connection's failure, in the tally and in the progress line.
    pub fn fail(&mut self, e: &ErrorKind) {
        self.tally.errors.add(e);
        self.progress.error();
    }

    /// Opens this thread's share of the connections concurrently on `poll`, local connection `i`
    /// under `Token(i)` with the pattern seed of its global index, each message `msg_len` bytes.
    /// Failures are counted; their slots are `None`.
    pub fn dial_all(&mut self, poll: &mut Poll, msg_len: usize) -> Vec<Option<Stream>> {
        let count = self.share.count();
        let mut dials: Vec<Option<Dial>> = (0..count)
            .map(|i| match self.dial(poll, i) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.fail(&e);
                    None
                }
            })
            .collect();
        let mut streams: Vec<Option<Stream>> = (0..count).map(|_| None).collect();
        let mut waiting = dials.iter().flatten().count();
        let deadline = Instant::now() + DIAL_TIMEOUT;
        let mut events = Events::with_capacity(1024);
        while waiting > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if let Err(e) = wait(poll, &mut events, deadline - now) {
                self.fail(&e);
                break;
            }
            for ev in events.iter() {
                let i = ev.token().0;
                let Some(Some(dial)) = dials.get_mut(i) else {
                    continue;
                };
                match dial.advance(&mut self.io) {
                    Ok(false) => continue,
                    Ok(true) => {
                        if let Some(d) = dials[i].take() {
                            let seed = pattern::seed(self.share.global(i));
                            let s = d.into_stream(msg_len, seed);
                            self.note_session(&s);
                            streams[i] = Some(s);
                        }
                    }
                    Err(e) => {
                        self.fail(&e);
                        dials[i] = None;
                    }
                }
                waiting -= 1;
            }
        }
        for _ in dials.iter().flatten() {
            self.fail(&ErrorKind::Timeout("connect and upgrade"));
        }
        streams
    }
}

/// Waits up to `timeout` for readiness on `poll`. An interrupted wait is not a failure (the
/// caller goes on with whatever `events` holds); any other failure is returned as an
/// `epoll_wait` error, and the caller's loop ends.
pub fn wait(poll: &mut Poll, events: &mut Events, timeout: Duration) -> Result<(), ErrorKind> {
    match poll.poll(events, Some(timeout)) {
        Err(e) if e.kind() != std::io::ErrorKind::Interrupted => {
            Err(ErrorKind::Io(format!("epoll_wait: {e}")))
        }
        _ => Ok(()),
    }
}

/// Fails if `s` has read back more bytes than it sent. (Each byte read is compared with the byte
/// sent at its offset as it arrives, in [`Stream::read`].)
pub fn check_echo(s: &Stream) -> Result<(), ErrorKind> {
    if s.received() > s.queued() {
        return Err(ErrorKind::EchoMismatch { offset: s.queued() });
    }
    Ok(())
}

/// [`check_echo`], and fails if the peer has closed a connection the workload still uses.
pub fn check_echo_open(s: &Stream) -> Result<(), ErrorKind> {
    check_echo(s)?;
    if s.peer_closed() {
        return Err(ErrorKind::UnexpectedClose(format!(
            "peer closed the connection ({})",
            s.close_reason()
        )));
    }
    Ok(())
}
