//! A one-shot timer with nanosecond resolution that wakes a mio `Poll`: a Linux timerfd
//! (through `rustix`, no `unsafe` here) registered for `READABLE`.
//!
//! Why not the poll timeout: epoll_wait takes milliseconds, so an open-loop schedule would send in
//! bursts up to 1 ms late, and since latency counts from the scheduled time that lateness would
//! show up as latency the system under test never caused. A timerfd is an hrtimer without the
//! sleep slack that applies to poll timeouts. The timer is never read: re-arming resets its
//! expiry count, and under edge-triggered epoll every expiry is a new edge.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};

/// A timerfd registered with a poll.
pub struct Timer {
    fd: OwnedFd,
}

impl Timer {
    /// Creates the timer (disarmed) and registers it under `token`.
    pub fn new(registry: &Registry, token: Token) -> io::Result<Timer> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(Timer { fd })
    }

    /// Fires once, `after` from now (at least 1 ns: a zero value would disarm the timer).
    pub fn arm(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: after.as_secs() as i64,
                tv_nsec: i64::from(after.subsec_nanos()),
            },
        };
        timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec)?;
        Ok(())
    }
}
