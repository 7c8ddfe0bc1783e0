//! A connection's origin side: the socket toward the TCP origin and its connect. An origin can
//! be connected again after a failed attempt ([`Origin::retire`] hands back the old descriptor
//! to close and leaves a fresh, unconnected socket), which origin pools and failover build on.
//!
//! Connect racing: a second connect, to the next origin of a pool, may run beside the origin's
//! own ([`Origin::begin_race`]); when it wins, its descriptor becomes the origin socket
//! ([`Origin::adopt_racer`]) and the losing connect is cancelled, its descriptor kept until its
//! completion comes back ([`Origin::take_loser`]).
//!
//! Invariant: at most one connect is in flight per descriptor, and its id is kept only while it
//! is, so an abort never cancels an operation that already ended (ring ids carry a generation
//! too). A descriptor a connect names stays open until that connect's completion.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use ringway_uring::OpId;

use crate::socket::{Socket, SocketLimits};

pub struct Origin {
    pub socket: Socket,
    connect: Option<OpId>,
    /// Connect attempts made for this connection.
    attempts: u32,
    /// Where the latest connect went.
    addr: Option<SocketAddr>,
    /// Racing state, allocated by the tunnel's first race and freed once it has settled (most
    /// tunnels never race: it costs them one pointer).
    races: Option<Box<Races>>,
}

#[derive(Default)]
struct Races {
    /// Connects racing the socket's own: at most one not given up; a given-up one keeps its
    /// slot until its completion.
    racers: [Option<Racer>; 2],
    /// The descriptor whose connect lost a race, until that connect's completion.
    loser: Option<OwnedFd>,
}

/// A connect racing the origin socket's (see [`Origin::begin_race`]).
struct Racer {
    fd: OwnedFd,
    addr: SocketAddr,
    started: Instant,
    connect: Option<OpId>,
    /// Given up (the other connect won, or the tunnel ended): its completion only closes it.
    abandoned: bool,
}

/// How a racing connect ended ([`Origin::on_race_completed`]).
#[derive(Debug, PartialEq, Eq)]
pub enum RaceEnd {
    /// It was given up; nothing to account.
    Abandoned,
    /// It failed (its descriptor is closed).
    Failed { addr: SocketAddr, started: Instant },
    /// It connected: [`Origin::adopt_racer`] makes it the origin socket.
    Won { addr: SocketAddr, started: Instant },
}

/// A non-blocking TCP socket (no Nagle delay) for a connect to `addr`.
pub(crate) fn tcp_socket(addr: SocketAddr) -> std::io::Result<OwnedFd> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.nonblocking().cloexec(),
        Some(socket2::Protocol::TCP),
    )?;
    s.set_nodelay(true)?;
    Ok(s.into())
}

impl Origin {
    pub fn new(limits: SocketLimits, now: Instant) -> Origin {
        Origin {
            socket: Socket::new(None, limits, now),
            connect: None,
            attempts: 0,
            addr: None,
            races: None,
        }
    }

    /// Creates the socket for a connect to `addr`; the caller submits the connect on the
    /// returned descriptor and reports its id with [`Origin::connect_submitted`].
    pub fn begin_connect(&mut self, addr: SocketAddr) -> std::io::Result<RawFd> {
        self.addr = Some(addr);
        let fd = tcp_socket(addr)?;
        let raw = fd.as_raw_fd();
        self.socket.attach(fd);
        self.attempts += 1;
        Ok(raw)
    }

    pub fn connect_submitted(&mut self, id: OpId) {
        self.socket.op_submitted();
        self.connect = Some(id);
    }

    /// The in-flight connect, if any (to cancel it).
    pub fn pending_connect(&self) -> Option<OpId> {
        self.connect
    }

    pub fn on_connected(&mut self) {
        self.connect = None;
        self.socket.on_connected();
    }

    /// The connect failed; the descriptor is kept until [`Origin::retire`] or the teardown.
    pub fn on_connect_failed(&mut self) {
        self.connect = None;
        self.socket.op_done();
    }

    /// Starts over after a failed connect: returns the old descriptor (no operation names it)
    /// for the caller to close and leaves a fresh socket to connect again.
    pub fn retire(&mut self, limits: SocketLimits, now: Instant) -> Option<OwnedFd> {
        if self.connect.is_some() || !self.socket.is_idle() {
            return None;
        }
        let old = std::mem::replace(&mut self.socket, Socket::new(None, limits, now));
        old.into_fd()
    }

    /// The address of the latest connect, if one was begun.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Creates the socket of a connect racing the origin's own, to `addr`, in a free racing
    /// slot (there are two: a racer given up keeps its slot until its completion); the caller
    /// submits the connect, tagged with the slot, and reports its id with
    /// [`Origin::race_submitted`].
    pub fn begin_race(
        &mut self,
        addr: SocketAddr,
        now: Instant,
    ) -> std::io::Result<(usize, RawFd)> {
        debug_assert!(self.racing().is_none());
        let races = self.races.get_or_insert_with(Box::default);
        let Some(slot) = races.racers.iter().position(Option::is_none) else {
            return Err(std::io::Error::other(
                "both racing slots wait for a cancelled connect",
            ));
        };
        let fd = tcp_socket(addr)?;
        let raw = fd.as_raw_fd();
        races.racers[slot] = Some(Racer {
            fd,
            addr,
            started: now,
            connect: None,
            abandoned: false,
        });
        self.attempts += 1;
        Ok((slot, raw))
    }

    pub fn race_submitted(&mut self, slot: usize, id: OpId) {
        if let Some(r) = self.racer_mut(slot) {
            r.connect = Some(id);
        }
    }

    /// The racing connect in flight (not given up), if any.
    fn active(&self) -> Option<&Racer> {
        self.races
            .as_ref()?
            .racers
            .iter()
            .flatten()
            .find(|r| !r.abandoned)
    }

    /// A racing connect is in flight (and not given up): where it goes.
    pub fn racing(&self) -> Option<SocketAddr> {
        self.active().map(|r| r.addr)
    }

    /// Gives the racing connect up: its address (for the pool's open count), the operation to
    /// cancel, and when it started. Its completion then only closes it.
    pub fn abandon_race(&mut self) -> Option<(SocketAddr, Option<OpId>, Instant)> {
        let r = self
            .races
            .as_mut()?
            .racers
            .iter_mut()
            .flatten()
            .find(|r| !r.abandoned)?;
        r.abandoned = true;
        Some((r.addr, r.connect, r.started))
    }

    /// The racing connect in `slot` completed with `result`.
    pub fn on_race_completed(&mut self, slot: usize, result: i32) -> RaceEnd {
        let Some(r) = self.racer_mut(slot) else {
            return RaceEnd::Abandoned;
        };
        r.connect = None;
        let (addr, started) = (r.addr, r.started);
        if r.abandoned || result != 0 {
            let abandoned = r.abandoned;
            // Closes its descriptor: no operation names it any more.
            if let Some(races) = self.races.as_mut() {
                races.racers[slot] = None;
            }
            self.tidy();
            return match abandoned {
                true => RaceEnd::Abandoned,
                false => RaceEnd::Failed { addr, started },
            };
        }
        RaceEnd::Won { addr, started }
    }

    /// The racing connect in `slot` won: its descriptor becomes the origin socket, connected.
    /// Returns the losing connect to cancel, if the socket's own was still in flight (its
    /// descriptor is kept until [`Origin::take_loser`]).
    pub fn adopt_racer(&mut self, slot: usize, limits: SocketLimits, now: Instant) -> Option<OpId> {
        let races = self.races.as_mut()?;
        let r = races.racers.get_mut(slot)?.take()?;
        let losing = self.connect.take();
        let old = std::mem::replace(&mut self.socket, Socket::new(None, limits, now));
        let old_fd = old.into_fd();
        if losing.is_some() {
            races.loser = old_fd;
        }
        self.adopt(r.fd, r.addr, limits, now);
        self.tidy();
        losing
    }

    /// A connected descriptor to `addr` (a warm connection) becomes the origin socket.
    pub fn adopt(&mut self, fd: OwnedFd, addr: SocketAddr, limits: SocketLimits, now: Instant) {
        self.socket = Socket::new(None, limits, now);
        self.socket.attach(fd);
        self.socket.op_submitted();
        self.socket.on_connected();
        self.addr = Some(addr);
    }

    /// A completion of the origin socket's connect: true if it is the one that lost a race (its
    /// descriptor is closed now; nothing else to do).
    pub fn take_loser(&mut self) -> bool {
        let taken = self.races.as_mut().and_then(|r| r.loser.take()).is_some();
        self.tidy();
        taken
    }

    /// No racing or losing connect is in flight.
    pub fn races_settled(&self) -> bool {
        self.races
            .as_ref()
            .is_none_or(|r| r.racers.iter().all(Option::is_none) && r.loser.is_none())
    }

    fn racer_mut(&mut self, slot: usize) -> Option<&mut Racer> {
        self.races.as_mut()?.racers.get_mut(slot)?.as_mut()
    }

    /// Frees the racing state once nothing is left in it.
    fn tidy(&mut self) {
        if self.races.is_some() && self.races_settled() {
            self.races = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;

    const LIMITS: SocketLimits = SocketLimits {
        backpressure: 1024,
        linger: Duration::from_secs(1),
        send_stall: Duration::from_secs(1),
    };

    #[test]
    fn a_failed_origin_can_be_connected_again() {
        let now = Instant::now();
        let mut o = Origin::new(LIMITS, now);
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let first = o.begin_connect(addr).unwrap();
        assert!(first >= 0);
        // (the worker submits the connect here; it fails)
        o.socket.op_submitted();
        o.on_connect_failed();
        let old = o
            .retire(LIMITS, now)
            .expect("the failed socket's descriptor");
        assert_eq!(old.as_raw_fd(), first);
        drop(old);
        let second = o.begin_connect(addr).unwrap();
        assert!(second >= 0);
        o.socket.op_submitted();
        o.on_connected();
        assert_eq!(o.attempts(), 2);
        assert!(o.socket.is_open());
        assert!(
            o.retire(LIMITS, now).is_none(),
            "a connected origin is not retired"
        );
    }

    #[test]
    fn a_racing_connect_that_wins_becomes_the_origin_socket() {
        let now = Instant::now();
        let mut o = Origin::new(LIMITS, now);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (slow, fast) = (
            l.local_addr().unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 9)),
        );
        let mut ring = ringway_uring::Ring::new(8, 8, 4096).unwrap();
        let own = o.begin_connect(slow).unwrap();
        let own_id = ring.connect(own, slow, 1);
        o.connect_submitted(own_id);
        let (slot, raced) = o.begin_race(fast, now).unwrap();
        o.race_submitted(slot, ring.connect(raced, fast, 2));
        assert_eq!(o.racing(), Some(fast));
        assert_eq!(
            o.on_race_completed(slot, 0),
            RaceEnd::Won {
                addr: fast,
                started: now
            }
        );
        assert_eq!(
            o.adopt_racer(slot, LIMITS, now),
            Some(own_id),
            "the losing connect, to cancel"
        );
        assert_eq!(o.socket.raw(), raced);
        assert!(o.socket.is_open() && o.addr() == Some(fast));
        assert!(
            !o.races_settled(),
            "the loser's descriptor waits for its completion"
        );
        assert!(o.take_loser(), "its completion closes it ({own})");
        assert!(o.races_settled() && !o.take_loser());
    }

    #[test]
    fn an_abandoned_race_only_closes_and_a_failed_one_reports() {
        let now = Instant::now();
        let mut o = Origin::new(LIMITS, now);
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let mut ring = ringway_uring::Ring::new(8, 8, 4096).unwrap();
        let (slot, fd) = o.begin_race(addr, now).unwrap();
        let id = ring.connect(fd, addr, 3);
        o.race_submitted(slot, id);
        assert_eq!(o.abandon_race(), Some((addr, Some(id), now)));
        assert_eq!(o.abandon_race(), None, "given up once");
        // The next race takes the other slot while the given-up one waits for its completion.
        let (other, _) = o.begin_race(addr, now).unwrap();
        assert_ne!(other, slot);
        assert!(o.abandon_race().is_some());
        assert!(o.begin_race(addr, now).is_err(), "both slots wait");
        assert_eq!(o.on_race_completed(slot, 0), RaceEnd::Abandoned);
        assert_eq!(
            o.on_race_completed(other, -libc::ECANCELED),
            RaceEnd::Abandoned
        );
        assert!(o.races_settled());
        let (slot, _) = o.begin_race(addr, now).unwrap();
        assert_eq!(
            o.on_race_completed(slot, -libc::ECONNREFUSED),
            RaceEnd::Failed { addr, started: now }
        );
        assert!(o.races_settled() && o.racing().is_none());
    }
}
