//! Warm origin connections: sockets connected to a pool's origins ahead of time, so a new
//! tunnel skips the origin connect.
//!
//! A pool with `warm_connections = N` has each worker keep its share, `ceil(N / workers)`,
//! connected to each of its origins in rotation (not to backups, nor to an origin that is
//! ejected or failing its checks: those are dropped at once). A socket older than
//! `warm_max_age_ms` is closed and replaced, so it never meets the origin's own limit on a
//! connection that says nothing (PostgreSQL closes one that sends no startup packet within
//! `authentication_timeout`, 60 s by default); the age is checked again when a socket is handed
//! out. A socket is looked at before it is handed out: one the origin closed or reset meanwhile
//! (even behind bytes it sent first, as a server that greets does) is dropped and the next one
//! taken. Warm sockets count toward an origin's `max_connections`, and all of a worker's
//! together to at most a tenth of its share of the open-files limit (so they can never take the
//! descriptors tunnels need). A warm connect's failure is a bad signal for the origin's health;
//! its time goes to the origin's figures, not to its latency window (a refill starts several at
//! once, and their times say more about the worker's moment than about the origin).
//!
//! Invariant: a descriptor being connected stays open until its connect's completion (the
//! ring names it); its slot is reused only then, with a new generation in the tag.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ringway_proto::route::{OriginPool, RouteTable};
use ringway_uring::{OpId, Ring};

use crate::origin::tcp_socket;
use crate::pools::Pools;
use crate::slab::{vacant, Key};
use crate::token::{tag, Op, Side};

/// Warm connects a worker starts per origin per tick at most (a refill after an origin comes
/// back is spread out, not a burst).
const STARTS_PER_TICK: usize = 8;

struct Connecting {
    addr: SocketAddr,
    stream: TcpStream,
    gen: u32,
    started: Instant,
    op: OpId,
    /// Given up (why, for the origin's health: a timeout is a bad signal, leaving rotation is
    /// none); its completion only closes it.
    given_up: Option<GiveUp>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GiveUp {
    TimedOut,
    NotWanted,
}

/// One worker's warm origin connections.
pub struct Warm {
    ready: HashMap<SocketAddr, VecDeque<(TcpStream, Instant)>>,
    /// The age past which each origin's ready sockets are replaced.
    max_age: HashMap<SocketAddr, Duration>,
    connecting: Vec<Option<Connecting>>,
    gen: u32,
    /// Tunnels given a warm socket, per origin.
    used: HashMap<SocketAddr, u64>,
    /// Warm sockets (ready or connecting) this worker may hold in all.
    cap: usize,
    /// The cap was reached (logged once per episode).
    capped: bool,
}

impl Warm {
    /// For one of `workers` workers: its cap is a tenth of its share of the open-files limit.
    pub fn new(workers: usize) -> Warm {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(1 << 20);
        let share = usize::try_from(limit).unwrap_or(usize::MAX) / workers.max(1);
        Warm {
            ready: HashMap::new(),
            max_age: HashMap::new(),
            connecting: Vec::new(),
            gen: 0,
            used: HashMap::new(),
            cap: (share / 10).max(1),
            capped: false,
        }
    }

    /// Warm sockets held in all, ready or connecting.
    fn total(&self) -> usize {
        self.ready.values().map(VecDeque::len).sum::<usize>()
            + self.connecting.iter().flatten().count()
    }
    /// Ready sockets to `addr`, and connects to it in flight.
    pub fn count(&self, addr: SocketAddr) -> usize {
        let connecting = self.connecting.iter().flatten();
        self.ready.get(&addr).map_or(0, VecDeque::len)
            + connecting
                .filter(|c| c.addr == addr && c.given_up.is_none())
                .count()
    }

    /// Tunnels that were given a warm socket to `addr`.
    pub fn used(&self, addr: SocketAddr) -> u64 {
        self.used.get(&addr).copied().unwrap_or(0)
    }

    /// A ready socket to `addr` for a new tunnel, if one is alive and young enough.
    pub fn take(&mut self, addr: SocketAddr, now: Instant) -> Option<OwnedFd> {
        let max_age = self.max_age.get(&addr).copied().unwrap_or(Duration::MAX);
        let q = self.ready.get_mut(&addr)?;
        while let Some((s, born)) = q.pop_front() {
            if now.saturating_duration_since(born) < max_age && alive(&s) {
                *self.used.entry(addr).or_default() += 1;
                return Some(s.into());
            }
        }
        None
    }

    /// Drops what is too old or no longer wanted (connects in flight for longer than
    /// `connect_timeout` too) and starts the connects that bring each origin back to its share.
    pub fn refill(
        &mut self,
        routes: &RouteTable,
        pools: &mut Pools,
        ring: &mut Ring,
        connect_timeout: Duration,
        now: Instant,
    ) {
        let mut wanted: HashMap<SocketAddr, (usize, Duration)> = HashMap::new();
        for pool in routes.routes().iter().filter_map(|r| r.pool.as_ref()) {
            if pool.warm == 0 {
                continue;
            }
            let share = pools.share(pool.warm) as usize;
            for o in pool.origins.iter().filter(|o| !o.backup) {
                let w = wanted.entry(o.addr).or_insert((0, pool.warm_max_age));
                w.0 = w.0.max(share);
                w.1 = w.1.min(pool.warm_max_age);
            }
        }
        self.max_age = wanted.iter().map(|(a, w)| (*a, w.1)).collect();
        for (addr, q) in &mut self.ready {
            match wanted.get(addr) {
                Some(&(_, max_age)) if pools.in_rotation(*addr, now) => {
                    q.retain(|(_, born)| now.saturating_duration_since(*born) < max_age);
                }
                _ => q.clear(),
            }
        }
        self.ready.retain(|_, q| !q.is_empty());
        for (i, c) in self.connecting.iter_mut().enumerate() {
            let Some(c) = c.as_mut().filter(|c| c.given_up.is_none()) else {
                continue;
            };
            let why = if !wanted.contains_key(&c.addr) || !pools.in_rotation(c.addr, now) {
                GiveUp::NotWanted
            } else if now.saturating_duration_since(c.started) >= connect_timeout {
                GiveUp::TimedOut
            } else {
                continue;
            };
            c.given_up = Some(why);
            let key = Key {
                idx: i as u32,
                gen: c.gen,
            };
            ring.cancel(c.op, tag(Op::Cancel, Side::Origin, key));
        }
        for (addr, (share, _)) in wanted {
            if !pools.in_rotation(addr, now) {
                continue;
            }
            // Warm sockets count toward the origin's connection limit.
            let room = routes_pool(routes, addr).map_or(usize::MAX, |p| pools.room(p, addr));
            let have = self.count(addr);
            let want = share.min(room);
            for _ in have..want.min(have + STARTS_PER_TICK) {
                if self.total() >= self.cap {
                    if !self.capped {
                        self.capped = true;
                        tracing::warn!(
                            cap = self.cap,
                            "warm origin connections capped at a tenth of this worker's share \
                             of the open-files limit; fewer than warm_connections are kept"
                        );
                    }
                    return;
                }
                if !self.start(addr, ring, now) {
                    return;
                }
            }
        }
        self.capped &= self.total() >= self.cap;
    }

    /// Starts a warm connect to `addr`; false when no socket could be made (out of
    /// descriptors, say: tried again on the next tick).
    fn start(&mut self, addr: SocketAddr, ring: &mut Ring, now: Instant) -> bool {
        let stream: TcpStream = match tcp_socket(addr) {
            Ok(fd) => fd.into(),
            Err(e) => {
                tracing::debug!(origin = %addr, "warm connection: no socket: {e}");
                return false;
            }
        };
        let key = vacant(&mut self.connecting, &mut self.gen);
        let idx = key.idx as usize;
        let op = ring.connect(
            stream.as_raw_fd(),
            addr,
            tag(Op::WarmConnect, Side::Origin, key),
        );
        self.connecting[idx] = Some(Connecting {
            addr,
            stream,
            gen: self.gen,
            started: now,
            op,
            given_up: None,
        });
        true
    }

    /// Closes every ready socket (shutting down; connects in flight keep theirs until their
    /// completion).
    pub fn drop_ready(&mut self) {
        self.ready.clear();
    }

    /// A warm connect completed with `result`.
    pub fn on_connected(
        &mut self,
        key: Key,
        result: i32,
        routes: &RouteTable,
        pools: &mut Pools,
        now: Instant,
    ) {
        let Some(slot) = self.connecting.get_mut(key.idx as usize) else {
            return;
        };
        if slot.as_ref().is_none_or(|c| c.gen != key.gen) {
            return;
        }
        let Some(c) = slot.take() else { return };
        let pool = routes_pool(routes, c.addr);
        match c.given_up {
            Some(GiveUp::TimedOut) if result < 0 => {
                pools.connect_failed(c.addr, "warm connect timed out", now);
                return;
            }
            Some(_) => return, // closes it, connected or not
            None => {}
        }
        if result < 0 {
            let why = std::io::Error::from_raw_os_error(-result).to_string();
            pools.connect_failed(c.addr, &format!("warm connect: {why}"), now);
            return;
        }
        pools.connected(c.addr);
        if pool.is_some() {
            pools.warm_connect_time(c.addr, now - c.started);
        }
        self.ready
            .entry(c.addr)
            .or_default()
            .push_back((c.stream, now));
    }
}

/// The first pool of `routes` that lists `addr` (for its peers and limits).
fn routes_pool(routes: &RouteTable, addr: SocketAddr) -> Option<&OriginPool> {
    routes
        .routes()
        .iter()
        .filter_map(|r| r.pool.as_ref())
        .find(|p| p.origins.iter().any(|o| o.addr == addr))
}

/// Whether a ready socket is still connected both ways: no end (FIN) from the origin, even
/// behind bytes it sent first, no reset, no error.
fn alive(s: &TcpStream) -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut fds = [PollFd::new(s, PollFlags::RDHUP)];
    match poll(&mut fds, Some(&rustix::time::Timespec::default())) {
        Ok(0) => true,
        Ok(_) => {
            let dead = PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL;
            !fds[0].revents().intersects(dead)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn a_socket_the_origin_closed_is_not_alive() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        s.set_nonblocking(true).unwrap();
        let (peer, _) = l.accept().unwrap();
        assert!(alive(&s), "connected, nothing to read");
        std::io::Write::write_all(&mut &peer, b"hi").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(alive(&s), "bytes the origin sent first are the tunnel's");
        drop(peer);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!alive(&s), "an end behind bytes the origin sent first");
        let s2 = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        s2.set_nonblocking(true).unwrap();
        drop(l.accept().unwrap());
        std::thread::sleep(Duration::from_millis(20));
        assert!(!alive(&s2), "the origin closed it");
    }
}
