//! One connection: the session (a WebSocket tunnel), the client socket behind its transport, and
//! the origin. A completion for the connection goes: [`Conn::on_completion`] (socket machine,
//! then the session's `handle_*`, received bytes forwarded by the [`relay`](crate::relay)
//! policy) → [`Conn::pump`] (the session's intents applied to the sockets, then each socket's
//! operations submitted to the ring) → the worker reschedules the connection's deadline.
//!
//! Invariants: bytes the session returns are queued before the intents of the same call are
//! applied ("data before Close"); the connection is removed only when the session is closed and
//! both sockets are closed with no operation in flight (`is_done`), so no completion can
//! outlive its slot.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_proto::route::{OriginPool, RouteTable};
use ringway_proto::tunnel::{CloseReason, Intent};
use ringway_proto::ws::handshake::reason_phrase;
use ringway_uring::{Completion, Ring, TxBuf, HEADROOM};
use tracing::{debug, info};

use crate::origin::{Origin, RaceEnd};
use crate::pools::Pools;
use crate::relay::{forward, Pool};
use crate::session::Session;
use crate::slab::Key;
use crate::socket::{Expired, Socket, SocketLimits, SocketOp};
use crate::splice::{Filled, Pipes, Splicing};
use crate::warm::Warm;

/// What a worker's connections share: splice pipes, the origin pools' health, warm origin
/// connections, and the tunnels admitted per route (by figures slot) for `max_tunnels`.
pub struct Resources {
    pub pipes: Pipes,
    pub pools: Pools,
    pub warm: Warm,
    pub route_tunnels: Vec<u32>,
}

/// `Retry-After` of a 503 for a route or pool at its limits, in seconds.
const RETRY_AFTER_S: u32 = 1;
use crate::stats::{End, Phase, WorkerStats, UNROUTED};
use crate::token::{tag, Op, Side};
use crate::transport::{Opened, Transport};

/// The TLS client side of `ringway access` toward a `wss://` edge.
#[derive(Debug)]
pub struct EdgeTls {
    pub config: Arc<rustls::ClientConfig>,
    /// The name the edge's certificate must carry (and the SNI sent).
    pub name: rustls::pki_types::ServerName<'static>,
}

/// The target of the per-tunnel log lines (`RUST_LOG=ringway::tunnel=debug` shows opens too).
pub const LOG_TARGET: &str = "ringway::tunnel";

/// Largest pool-held payload copied to go out in one send with a frame queued behind it.
const MERGE_BYTES: usize = 4096;

/// A live connection slot.
pub struct Conn {
    pub key: Key,
    pub session: Session,
    pub transport: Transport,
    /// Between the session and the origin socket: plain, or TLS toward the edge when this is a
    /// `ringway access` connection to a `wss://` edge.
    pub origin_transport: Transport,
    /// `ringway access` to a `wss://` edge: the TLS client settings used once connected.
    pub edge_tls: Option<Arc<EdgeTls>>,
    /// Why the TLS session failed, for the close line.
    pub tls_error: Option<String>,
    pub client: Socket,
    pub origin: Origin,
    /// The table the upgrade was routed with (kept so logs name the route it resolved).
    pub routes: Arc<RouteTable>,
    /// The client's address, for logs (looked up only when tunnel logs are on).
    pub peer: Option<SocketAddr>,
    pub started: Instant,
    /// The instant of this connection's live entry in the worker's deadline heap.
    pub scheduled: Option<Instant>,
    /// Counted as settled (nothing left to send) by the worker's shutdown bookkeeping.
    pub settled: bool,
    /// Queued for a pump at the end of the current batch of completions.
    pub dirty: bool,
    /// In the worker's line of connections waiting for pool buffers.
    pub waiting: bool,
    /// In the worker's shutdown line of connections waiting for their peer's acknowledgements.
    pub awaiting_ack: bool,
    /// Its route's slot in the worker's figures, once routed (or refused).
    pub stats_slot: Option<usize>,
    /// When the TLS handshake finished (wss://).
    tls_done: Option<Instant>,
    /// When the origin connect was submitted.
    connect_started: Option<Instant>,
    /// Upgraded (counted open in its route's figures).
    opened: bool,
    /// A byte from the origin was received.
    origin_spoke: bool,
    /// The client ended its stream (EOF or an error).
    client_ended: bool,
    /// An L4 connection's splice state, once a large read moved a direction to splicing.
    splicing: Option<Box<Splicing>>,
    /// A pooled route's origins to try, in order, and the one connected.
    failover: Option<Box<Failover>>,
    /// Counted in its route's admitted tunnels (figures slot), for `max_tunnels`.
    admitted: Option<usize>,
}

/// The origins a tunnel on a pooled route tries ([`Pools::order`]).
///
/// Connect racing: when the origin socket's connect has not completed within the pool's race
/// delay (`race_at`, one of the connection's deadlines), a connect to the next origin in order
/// starts beside it
/// ([`Origin::begin_race`]); the first to complete carries the tunnel and the other is cancelled
/// through the ring. A racing connect that fails starts the next at once; a client sees an
/// error only when every origin of its order failed or the connect timeout ran out.
struct Failover {
    order: Vec<SocketAddr>,
    /// The next to try when the current connect fails.
    next: usize,
    /// The origin the socket's own connect went to (connecting or connected), counted open in
    /// the pool until released. (A racing connect's origin is counted open while it races.)
    held: Option<SocketAddr>,
    /// When the next race starts (set for the first connect and kept across a failover: a
    /// refused connect is quick).
    race_at: Option<Instant>,
    /// `race_at` was handed to the worker's race wake-ups.
    race_told: bool,
    /// A race is due: its time came, or a racing connect failed while the socket's own still
    /// runs.
    race_due: bool,
}

/// The tag side of a racing connect in `slot` (the origin keeps two racing slots).
fn race_side(slot: usize) -> Side {
    match slot {
        0 => Side::Origin,
        _ => Side::Client,
    }
}

fn race_slot(side: Side) -> usize {
    match side {
        Side::Origin => 0,
        Side::Client => 1,
    }
}

/// Index of a direction by its source socket (see [`Splicing`]).
fn dir(from: Side) -> usize {
    match from {
        Side::Client => 0,
        Side::Origin => 1,
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Client => Side::Origin,
        Side::Origin => Side::Client,
    }
}

impl Conn {
    /// A connection for the client socket `fd` just accepted into slot `key`.
    pub fn new(
        key: Key,
        fd: Option<std::os::fd::OwnedFd>,
        session: Session,
        transport: Transport,
        routes: Arc<RouteTable>,
        limits: SocketLimits,
        now: Instant,
    ) -> Conn {
        // One getpeername(2) per connection, only when its lines will be written.
        let peer = tracing::enabled!(target: LOG_TARGET, tracing::Level::INFO)
            .then(|| {
                socket2::SockRef::from(fd.as_ref()?)
                    .peer_addr()
                    .ok()?
                    .as_socket()
            })
            .flatten();
        let mut client = Socket::new(fd, limits, now);
        if !transport.passes_bytes_through() {
            client.set_records();
        }
        Conn {
            peer,
            key,
            session,
            transport,
            origin_transport: Transport::Plain,
            edge_tls: None,
            tls_error: None,
            client,
            origin: Origin::new(limits, now),
            routes,
            started: now,
            scheduled: None,
            settled: false,
            dirty: false,
            waiting: false,
            awaiting_ack: false,
            stats_slot: None,
            tls_done: None,
            connect_started: None,
            opened: false,
            origin_spoke: false,
            client_ended: false,
            splicing: None,
            failover: None,
            admitted: None,
        }
    }

    /// The connection ends: its pipes go back to the worker's pool, its origin's open count
    /// down.
    pub fn release(&mut self, res: &mut Resources) {
        if let Some(s) = self.splicing.as_mut() {
            s.release_all(&mut res.pipes);
        }
        if let Some(addr) = self.failover.as_mut().and_then(|f| f.held.take()) {
            res.pools.released(addr);
        }
        if let Some(slot) = self.admitted.take() {
            if let Some(n) = res.route_tunnels.get_mut(slot) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// A routed tunnel asks for its origin: admitted under its route's `max_tunnels` (its
    /// worker's share), then given one (on a pooled route, the first the pool orders, with a
    /// warm connection to it when one is ready). `None`: over a limit, the tunnel is refused
    /// with 503.
    fn admit(
        &mut self,
        addr: SocketAddr,
        res: &mut Resources,
        now: Instant,
    ) -> Option<(SocketAddr, Option<OwnedFd>)> {
        let routes = self.routes.clone();
        let route = self.session.route().and_then(|i| routes.routes().get(i));
        if let (Some(max), Some(slot)) = (route.and_then(|r| r.max_tunnels), self.stats_slot) {
            if res.route_tunnels.len() <= slot {
                res.route_tunnels.resize(slot + 1, 0);
            }
            if res.route_tunnels[slot] >= res.pools.share(max) {
                return None;
            }
            res.route_tunnels[slot] += 1;
            self.admitted = Some(slot);
        }
        let Some(pool) = route.and_then(|r| r.pool.as_ref()) else {
            return Some((addr, None));
        };
        let order = res.pools.order(pool, now);
        let first = *order.first()?;
        res.pools.connecting(first);
        self.failover = Some(Box::new(Failover {
            order,
            next: 1,
            held: Some(first),
            race_at: None,
            race_told: false,
            race_due: false,
        }));
        Some((first, res.warm.take(first, now)))
    }

    /// The pool of this connection's route, if it has one.
    fn pool(&self) -> Option<(Arc<RouteTable>, usize)> {
        let i = self.session.route()?;
        self.routes.routes().get(i)?.pool.as_ref()?;
        Some((self.routes.clone(), i))
    }

    /// Records how long a connect to `addr` took (`completed`) or had taken when it was given up,
    /// for its pool's latency view.
    fn connect_time(
        &self,
        pools: &mut Pools,
        addr: SocketAddr,
        took: Duration,
        completed: bool,
        now: Instant,
    ) {
        if let Some((routes, i)) = self.pool() {
            if let Some(pool) = routes.routes()[i].pool.as_ref() {
                pools.connect_time(pool, addr, took, completed, now);
            }
        }
    }

    /// Sets the race deadline for the connect just started, when the pool races and has an
    /// origin left to race with.
    fn arm_race(&mut self, pools: &Pools, now: Instant) {
        let Some((routes, i)) = self.pool() else {
            return;
        };
        let pool: &OriginPool = match routes.routes()[i].pool.as_ref() {
            Some(p) => p,
            None => return,
        };
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        if f.race_at.is_some() || f.next >= f.order.len() {
            return;
        }
        f.race_at = pools.race_delay(pool).map(|d| now + d);
        f.race_told = false;
    }

    /// Starts the due race: a connect to the next origin of the order, beside the socket's own.
    fn race(&mut self, ring: &mut Ring, pools: &mut Pools, now: Instant) {
        let key = self.key;
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        if !f.race_due || self.session.is_closed() || self.origin.pending_connect().is_none() {
            return;
        }
        f.race_due = false;
        let Some(&next) = f.order.get(f.next) else {
            return;
        };
        // A racing connect that has not answered either is given up for the next origin: two
        // dead origins at the head of an order cost two race delays, not the connect timeout.
        if let Some((addr, op, started)) = self.origin.abandon_race() {
            pools.released(addr);
            if let Some(op) = op {
                ring.cancel(op, tag(Op::Cancel, Side::Origin, key));
            }
            self.connect_time(pools, addr, now - started, false, now);
        }
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        match self.origin.begin_race(next, now) {
            Err(e) => {
                // Out of descriptors, say: the tunnel waits for its connect as without racing.
                debug!(
                    target: LOG_TARGET,
                    route = self.route_name(),
                    origin = %next,
                    "cannot race the next origin: {e}"
                );
            }
            Ok((slot, fd)) => {
                f.next += 1;
                pools.connecting(next);
                let id = ring.connect(fd, next, tag(Op::RaceConnect, race_side(slot), key));
                self.origin.race_submitted(slot, id);
                debug!(
                    target: LOG_TARGET,
                    route = self.route_name(),
                    slow = %Addr(self.origin.addr()),
                    racing = %next,
                    "origin connect slow; racing the next origin of the pool"
                );
                // And again after another delay, if origins are left.
                self.arm_race(pools, now);
            }
        }
    }

    /// Gives up a racing connect (the other won, or the tunnel ended), and races to come.
    fn stop_racing(&mut self, ring: &mut Ring, pools: &mut Pools) {
        let key = self.key;
        if let Some(f) = self.failover.as_mut() {
            f.race_due = false;
            f.race_at = None;
        }
        if let Some((addr, op, _)) = self.origin.abandon_race() {
            pools.released(addr);
            if let Some(op) = op {
                ring.cancel(op, tag(Op::Cancel, Side::Origin, key));
            }
        }
    }

    /// A racing connect completed with `result`.
    fn on_race_completed(
        &mut self,
        slot: usize,
        result: i32,
        ring: &mut Ring,
        res: &mut Resources,
        stats: &mut WorkerStats,
        now: Instant,
    ) {
        match self.origin.on_race_completed(slot, result) {
            RaceEnd::Abandoned => {}
            RaceEnd::Failed { addr, .. } => {
                let why = std::io::Error::from_raw_os_error(result.abs()).to_string();
                res.pools.connect_failed(addr, &why, now);
                res.pools.released(addr);
                if self.origin.pending_connect().is_some() {
                    // The socket's own connect still runs: race the next origin at once.
                    if let Some(f) = self.failover.as_mut() {
                        f.race_due = true;
                    }
                } else if !self.session.is_closed() && !self.try_next(ring, &mut res.pools, now) {
                    // The socket's own connect had failed too, and no origin is left.
                    self.session.handle_origin_connect_failed(result, now);
                }
            }
            RaceEnd::Won { addr, started } => {
                res.pools.connected(addr);
                self.connect_time(&mut res.pools, addr, now - started, true, now);
                self.sample(stats, Phase::Connect, now - started);
                let lost = self.origin.pending_connect().is_some();
                let prev = self.failover.as_mut().and_then(|f| f.held.replace(addr));
                if let Some(prev) = prev {
                    res.pools.released(prev);
                    if let (true, Some(t)) = (lost, self.connect_started) {
                        // How long the slow connect had taken, at least.
                        self.connect_time(&mut res.pools, prev, now - t, false, now);
                    }
                }
                // Adopted first: the racer is the tunnel's now, not a race to give up.
                let limits = self.client.limits();
                if let Some(op) = self.origin.adopt_racer(slot, limits, now) {
                    ring.cancel(op, tag(Op::Cancel, Side::Origin, self.key));
                }
                self.stop_racing(ring, &mut res.pools);
                self.on_origin_connected(ring, stats, now);
            }
        }
    }

    /// A connect failed: on a pooled route, the next origin is tried (true) unless none is
    /// left (a racing connect still running counts as that try); the failure counts against
    /// the origin's health either way, unless the worker cancelled the connect itself.
    fn fail_over(&mut self, errno: i32, ring: &mut Ring, pools: &mut Pools, now: Instant) -> bool {
        let Some(f) = self.failover.as_mut() else {
            return false;
        };
        if let Some(addr) = f.held.take() {
            if errno != -libc::ECANCELED {
                let why = std::io::Error::from_raw_os_error(errno.abs()).to_string();
                pools.connect_failed(addr, &why, now);
            }
            pools.released(addr);
        }
        if self.origin.racing().is_some() {
            return !self.session.is_closed();
        }
        self.try_next(ring, pools, now)
    }

    /// Connects the origin socket to the next origin of the order (true), if one is left.
    fn try_next(&mut self, ring: &mut Ring, pools: &mut Pools, now: Instant) -> bool {
        let Some(f) = self.failover.as_mut() else {
            return false;
        };
        let Some(&next) = f.order.get(f.next) else {
            return false;
        };
        f.next += 1;
        if self.session.is_closed() {
            return false;
        }
        pools.connecting(next);
        f.held = Some(next);
        let limits = self.client.limits();
        // No operation names the failed socket any more: closed here, at once.
        drop(self.origin.retire(limits, now));
        debug!(
            target: LOG_TARGET,
            route = self.route_name(),
            failed = %Addr(self.origin.addr()),
            next = %next,
            "origin connect failed; trying the next origin of the pool"
        );
        self.connect(ring, next, now);
        self.arm_race(pools, now);
        true
    }

    fn splicing_on(&self, from: Side) -> bool {
        self.splicing.as_ref().is_some_and(|s| s.is_on(dir(from)))
    }

    fn pipe_full(&self, from: Side) -> bool {
        self.splicing.as_ref().is_some_and(|s| s.is_full(dir(from)))
    }

    pub fn socket(&mut self, side: Side) -> &mut Socket {
        match side {
            Side::Client => &mut self.client,
            Side::Origin => &mut self.origin.socket,
        }
    }

    /// Feeds one completion to the socket it names and the session. A recv that ended for lack
    /// of pool buffers leaves its socket waiting (the worker's line, see
    /// [`Conn::waits_for_buffers`]).
    #[allow(clippy::too_many_arguments)]
    pub fn on_completion(
        &mut self,
        op: Op,
        side: Side,
        c: Completion,
        ring: &mut Ring,
        pool: &Pool,
        res: &mut Resources,
        stats: &mut WorkerStats,
        now: Instant,
    ) {
        let pipes = &mut res.pipes;
        match op {
            Op::Recv => {
                self.socket(side).on_recv_completion(!c.more);
                if let Some(buf) = c.buf {
                    if c.result > 0 && self.socket(side).is_open() {
                        if side == Side::Origin && !self.origin_spoke {
                            self.origin_spoke = true;
                            self.sample(stats, Phase::FirstByte, now - self.started);
                            if let Some(addr) = self.failover.as_ref().and_then(|f| f.held) {
                                res.pools.answered(addr);
                            }
                        }
                        self.consider_splicing(side, buf.len(), pipes);
                        self.on_bytes(side, buf, ring, pool, now);
                    } else {
                        ring.recycle(buf);
                    }
                    return;
                }
                match c.result {
                    0 if self.socket(side).on_eof() => {
                        self.ended(side, "closed", &mut res.pools, now);
                        self.session.handle_eof(side == Side::Origin, now);
                    }
                    r if r == -libc::ENOBUFS => {
                        debug!(slot = self.key.idx, ?side, "receive buffers exhausted");
                        self.socket(side).on_starved();
                    }
                    r if r == -libc::ECANCELED => {}
                    r if r < 0 && self.socket(side).on_recv_error() => {
                        let why = std::io::Error::from_raw_os_error(-r).to_string();
                        self.ended(side, &why, &mut res.pools, now);
                        self.session.handle_error(side == Side::Origin, r, now);
                    }
                    _ => {}
                }
            }
            Op::Send => {
                let Some(tx) = c.tx else { return };
                self.on_sent(side, tx, c.result, ring, stats, now);
            }
            Op::Readable => {
                self.socket(side).on_recv_completion(true);
                match c.result {
                    r if r > 0 => self.on_readable(side, pipes, stats, now),
                    r if r == -libc::ECANCELED => {}
                    r if r < 0 && self.socket(side).on_recv_error() => {
                        self.session.handle_error(side == Side::Origin, r, now);
                    }
                    _ => {}
                }
            }
            Op::Writable => {
                let Some(tx) = c.tx else { return };
                let mut result = c.result;
                if result > 0 {
                    let fd = match side {
                        Side::Client => self.client.fd(),
                        Side::Origin => self.origin.socket.fd(),
                    };
                    let (Some(splicing), Some(fd)) = (self.splicing.as_mut(), fd) else {
                        // Cannot happen: piped bytes exist only with their pipe, and the fd is
                        // closed only after this poll's completion.
                        self.on_sent(side, tx, -libc::EPIPE, ring, stats, now);
                        return;
                    };
                    match splicing.drain(dir(other(side)), fd, tx.len(), pipes) {
                        Some(r) => {
                            result = r;
                            if let (Some(slot), true) = (self.stats_slot, r > 0) {
                                stats.spliced(slot, r as u64);
                            }
                        }
                        None => {
                            // Took nothing after all: wait for room again (still one send).
                            let raw = self.socket(side).raw();
                            ring.poll_writable(raw, tx, tag(Op::Writable, side, self.key));
                            return;
                        }
                    }
                }
                self.on_sent(side, tx, result, ring, stats, now);
            }
            Op::Connect if self.origin.take_loser() => {}
            Op::Connect => {
                if c.result == 0 {
                    if let Some(t) = self.connect_started {
                        self.sample(stats, Phase::Connect, now - t);
                        if let Some(addr) = self.failover.as_ref().and_then(|f| f.held) {
                            res.pools.connected(addr);
                            self.connect_time(&mut res.pools, addr, now - t, true, now);
                        }
                    }
                    self.stop_racing(ring, &mut res.pools);
                    self.origin.on_connected();
                    self.on_origin_connected(ring, stats, now);
                } else {
                    self.origin.on_connect_failed();
                    if !self.fail_over(c.result, ring, &mut res.pools, now) {
                        self.session.handle_origin_connect_failed(c.result, now);
                    }
                }
            }
            Op::RaceConnect => {
                let slot = race_slot(side);
                self.on_race_completed(slot, c.result, ring, res, stats, now)
            }
            Op::Close => self.socket(side).on_close_completion(),
            Op::Cancel
            | Op::Tick
            | Op::Accept
            | Op::Control
            | Op::Handoff
            | Op::Check
            | Op::WarmConnect
            | Op::Wake => {}
        }
    }

    /// `side` ended its stream (`how`: closed, or the error). A pooled origin that ends a tunnel
    /// before its first byte while the client is still there (a backend that dies at once, a
    /// port that resets: a gray failure a connect cannot see) is a bad signal for its health.
    fn ended(&mut self, side: Side, how: &str, pools: &mut Pools, now: Instant) {
        if side == Side::Client {
            self.client_ended = true;
            return;
        }
        if self.origin_spoke || self.client_ended {
            return;
        }
        if let Some(addr) = self.failover.as_ref().and_then(|f| f.held) {
            pools.connect_failed(addr, &format!("{how} before its first byte"), now);
        }
    }

    /// The origin socket is connected (its own connect, or a racing one it adopted).
    fn on_origin_connected(&mut self, ring: &mut Ring, stats: &mut WorkerStats, now: Instant) {
        {
            {
                {
                    if let Some(edge) = self.edge_tls.clone() {
                        self.start_edge_tls(&edge, ring, now);
                    }
                    self.session.handle_origin_connected(now);
                    if self.session.is_relaying() && !self.opened {
                        // The 101 is queued now and leaves with this turn's submit.
                        self.opened = true;
                        self.sample(stats, Phase::Setup, now - self.started);
                        if let Some(slot) = self.stats_slot {
                            stats.opened(slot);
                        }
                    }
                    debug!(
                        target: LOG_TARGET,
                        client = %Addr(self.peer),
                        route = self.route_name(),
                        origin = %Addr(self.origin.addr()),
                        "tunnel open"
                    );
                }
            }
        }
    }

    /// A send (or a splice on from a pipe) on `side` completed with `result`.
    fn on_sent(
        &mut self,
        side: Side,
        tx: TxBuf,
        result: i32,
        ring: &mut Ring,
        stats: &mut WorkerStats,
        now: Instant,
    ) {
        let sent = self.socket(side).on_send_completion(tx, result, now);
        if let (Some(waited), true) = (sent.waited, self.session.is_relaying()) {
            let phase = match side {
                Side::Client => Phase::RelayToClient,
                Side::Origin => Phase::RelayToOrigin,
            };
            self.sample(stats, phase, waited);
        }
        if let Some(done) = sent.done {
            ring.recycle_tx(done);
        }
        if let Some(err) = sent.failed {
            self.session.handle_error(side == Side::Origin, err, now);
        }
    }

    /// A read of `n` bytes on `from`'s copying path: a direction that reads large chunks and
    /// whose bytes need no transformation (an L4 relay's, a WebSocket tunnel's origin bytes
    /// toward a plain ws:// client, which only need a frame header) moves to splicing, from its
    /// next read on.
    fn consider_splicing(&mut self, from: Side, n: usize, pipes: &Pipes) {
        let config = pipes.config();
        if config.min_bytes == 0 || n < config.min_bytes {
            return;
        }
        let Some(framed) = self.session.splices(from == Side::Origin) else {
            return;
        };
        if framed && !self.transport.passes_bytes_through() {
            return; // TLS seals every byte: nothing to splice
        }
        let splicing = self.splicing.get_or_insert_with(Box::default);
        if splicing.on_copied(dir(from), n, framed, &config) {
            // The armed multishot recv ends; the next read is armed as a readability poll.
            self.socket(from).restart_recv();
        }
    }

    /// A splicing socket is readable: its bytes go into the direction's pipe and, counted as
    /// piped bytes, into the other socket's queue. A socket no longer open is read (and its
    /// bytes discarded) by an ordinary recv, armed by the next pump.
    fn on_readable(
        &mut self,
        side: Side,
        pipes: &mut Pipes,
        stats: &mut WorkerStats,
        now: Instant,
    ) {
        if !self.socket(side).is_open() {
            return;
        }
        let fd = match side {
            Side::Client => self.client.fd(),
            Side::Origin => self.origin.socket.fd(),
        };
        let session = &mut self.session;
        let filled = match (self.splicing.as_mut(), fd) {
            (Some(s), Some(fd)) if s.is_framed(dir(side)) => {
                s.fill_framed(dir(side), fd, pipes, |n| session.frame_spliced(n, now))
            }
            (Some(s), Some(fd)) => s.fill(dir(side), fd, pipes),
            _ => return,
        };
        let from_origin = side == Side::Origin;
        match filled {
            Filled::Bytes(n) => {
                if from_origin && !self.origin_spoke {
                    self.origin_spoke = true;
                    self.sample(stats, Phase::FirstByte, now - self.started);
                }
                self.session.handle_spliced(from_origin, n as usize, now);
                // A destination that takes no more bytes leaves them in the pipe, which is
                // closed (not reused) when the connection ends.
                let _ = self.socket(other(side)).queue(TxBuf::piped(n), now);
            }
            Filled::Eof => {
                if self.socket(side).on_eof() {
                    self.session.handle_eof(from_origin, now);
                }
            }
            Filled::Failed(errno) => {
                if self.socket(side).on_recv_error() {
                    self.session.handle_error(from_origin, errno, now);
                }
            }
            Filled::Nothing | Filled::Fallback => {}
        }
    }

    /// Bytes received on `side`: through that side's transport (TLS opens them), the session,
    /// then forwarded to the other socket through its transport.
    fn on_bytes(
        &mut self,
        side: Side,
        buf: ringway_uring::PoolBuf,
        ring: &mut Ring,
        pool: &Pool,
        now: Instant,
    ) {
        let payload = HEADROOM..HEADROOM + buf.len();
        let transport = match side {
            Side::Client => &mut self.transport,
            Side::Origin => &mut self.origin_transport,
        };
        if let Some(tls) = transport.tls_mut() {
            // The records are copied into rustls: the slot goes back to the kernel at once.
            let was_handshaking = tls.is_handshaking();
            let opened = tls.open(&ring.slot(&buf)[payload]);
            ring.recycle(buf);
            if side == Side::Client {
                // Record headers and tags (and handshake messages) cost work as frame headers
                // do: charged to the same budget.
                self.session.charge_transport_overhead(opened.framing, now);
            }
            if was_handshaking && !tls.is_handshaking() {
                self.tls_done = Some(now);
                if let Some(name) = tls.server_name() {
                    self.session.set_server_name(name);
                }
            }
            self.on_opened(side, opened, ring, now);
            return;
        }
        let slot = ring.slot(&buf);
        let from_origin = side == Side::Origin;
        let range = self
            .session
            .handle_bytes(from_origin, slot, payload, &self.routes, now);
        let (dest, through) = match side {
            Side::Client => (&mut self.origin.socket, &mut self.origin_transport),
            Side::Origin => (&mut self.client, &mut self.transport),
        };
        forward(ring, pool, dest, through, buf, range, now);
    }

    /// What a TLS read on `side` gave: the handshake's reply (or an alert) back to that side
    /// first, the plaintext to the session (its output on to the other side, in the same
    /// buffer), then the peer's close_notify or the failure.
    fn on_opened(&mut self, side: Side, opened: Opened, ring: &mut Ring, now: Instant) {
        let from_origin = side == Side::Origin;
        if let Some(reply) = opened.reply {
            if let Err(tx) = self.socket(side).queue(TxBuf::owned(reply), now) {
                ring.recycle_tx(tx);
            }
        }
        let mut plain = opened.plain;
        if !plain.is_empty() {
            let len = plain.len();
            let r = self
                .session
                .handle_bytes(from_origin, &mut plain, 0..len, &self.routes, now);
            let (dest, through) = match side {
                Side::Client => (&mut self.origin.socket, &mut self.origin_transport),
                Side::Origin => (&mut self.client, &mut self.transport),
            };
            if !r.is_empty() && dest.takes_bytes() {
                plain.copy_within(r.clone(), 0);
                plain.truncate(r.len());
                if let Err(tx) = dest.queue(through.on_send(plain), now) {
                    ring.recycle_tx(tx);
                }
            }
        }
        if let Some(why) = opened.failed {
            self.session.handle_tls_failed(from_origin, &why, now);
            self.tls_error = Some(why);
        } else if opened.closed && self.socket(side).on_eof() {
            self.session.handle_eof(from_origin, now);
        }
    }

    /// Connected to a `wss://` edge: start the TLS client; its ClientHello goes out first.
    fn start_edge_tls(&mut self, edge: &EdgeTls, ring: &mut Ring, now: Instant) {
        match Transport::tls_client(&edge.config, edge.name.clone()) {
            Ok(mut t) => {
                if let Some(hello) = t.tls_mut().and_then(|t| t.take_pending()) {
                    if let Err(tx) = self.origin.socket.queue(TxBuf::owned(hello), now) {
                        ring.recycle_tx(tx);
                    }
                }
                self.origin_transport = t;
            }
            Err(e) => self
                .session
                .handle_tls_failed(true, &format!("cannot start: {e}"), now),
        }
    }

    /// Applies the session's intents, then submits what both sockets need.
    pub fn pump(
        &mut self,
        ring: &mut Ring,
        pool: &Pool,
        res: &mut Resources,
        stats: &mut WorkerStats,
        worker: usize,
        now: Instant,
    ) {
        let key = self.key;
        while let Some(intent) = self.session.poll_intent() {
            match intent {
                Intent::ConnectOrigin(addr) => {
                    self.routed(stats, now);
                    match self.admit(addr, res, now) {
                        Some((addr, Some(warm))) => {
                            let limits = self.client.limits();
                            self.origin.adopt(warm, addr, limits, now);
                            self.on_origin_connected(ring, stats, now);
                        }
                        Some((addr, None)) => {
                            self.connect(ring, addr, now);
                            self.arm_race(&res.pools, now);
                        }
                        None => self.session.handle_over_limit(RETRY_AFTER_S, now),
                    }
                }
                Intent::SendClient(v) => self.queue_client_frame(ring, v, now),
                Intent::SendPong(v) => {
                    self.client.queue_pong(v, now);
                    // Under TLS it is sealed here, in order, unless a sealed one is unsent.
                    self.seal_pong(ring, now);
                }
                Intent::SendOrigin(v) => {
                    // Under TLS before the handshake is done, rustls holds the bytes (they leave
                    // with the handshake's last flight): the sealed buffer is empty, and the
                    // socket hands it back.
                    let tx = self.origin_transport.on_send(v);
                    if let Err(tx) = self.origin.socket.queue(tx, now) {
                        ring.recycle_tx(tx);
                    }
                }
                Intent::CloseOrigin => {
                    self.notify_close(Side::Origin, ring, now);
                    self.origin.socket.request_close(now)
                }
                Intent::CloseClient => {
                    self.notify_close(Side::Client, ring, now);
                    self.client.request_close(now);
                }
                Intent::ShutOriginWrite => {
                    self.notify_close(Side::Origin, ring, now);
                    self.origin.socket.shut_write();
                }
                Intent::ShutClientWrite => {
                    self.notify_close(Side::Client, ring, now);
                    self.client.shut_write();
                }
                Intent::AbortOrigin => {
                    let timed_out = self
                        .session
                        .close_record()
                        .is_some_and(|r| r.reason == CloseReason::ConnectTimeout);
                    if let Some(op) = self.origin.pending_connect() {
                        ring.cancel(op, tag(Op::Cancel, Side::Origin, key));
                        self.origin.socket.connect_cancelled();
                        let held = self.failover.as_ref().and_then(|f| f.held);
                        if let (true, Some(addr), Some(t)) = (timed_out, held, self.connect_started)
                        {
                            res.pools.connect_failed(addr, "connect timed out", now);
                            self.connect_time(&mut res.pools, addr, now - t, false, now);
                        }
                    }
                    if let (true, Some(addr)) = (timed_out, self.origin.racing()) {
                        res.pools.connect_failed(addr, "connect timed out", now);
                    }
                    self.stop_racing(ring, &mut res.pools);
                    self.origin.socket.abort();
                }
                Intent::Finished => {
                    self.account(stats);
                    self.log_close(worker, now);
                }
            }
        }
        if self.session.is_closed() {
            self.stop_racing(ring, &mut res.pools);
            self.client.request_close(now);
            self.origin.socket.request_close(now);
        } else {
            self.race(ring, &mut res.pools, now);
        }
        // Under TLS, a pong held behind a sealed one goes once that one has been sent.
        self.seal_pong(ring, now);
        let buffers_ok = pool.may_rearm(ring);
        // The client's reads feed the origin (data) and the client itself (pongs, Close).
        let client_paused = self.origin.socket.is_paused()
            || self.client.is_paused()
            || self.client.has_pending_pong()
            || self.session.client_paused(now)
            || self.pipe_full(Side::Client);
        let splice = self.splicing_on(Side::Client);
        submit(
            ring,
            &mut self.client,
            Side::Client,
            key,
            now,
            Reads {
                paused: client_paused,
                buffers_ok,
                splice,
            },
        );
        let origin_paused = self.client.is_paused() || self.pipe_full(Side::Origin);
        let splice = self.splicing_on(Side::Origin);
        submit(
            ring,
            &mut self.origin.socket,
            Side::Origin,
            key,
            now,
            Reads {
                paused: origin_paused,
                buffers_ok,
                splice,
            },
        );
    }

    /// Starts the origin connect.
    fn connect(&mut self, ring: &mut Ring, addr: SocketAddr, now: Instant) {
        let key = self.key;
        self.connect_started = Some(now);
        match self.origin.begin_connect(addr) {
            Ok(fd) => {
                let id = ring.connect(fd, addr, tag(Op::Connect, Side::Origin, key));
                self.origin.connect_submitted(id);
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                if matches!(
                    errno,
                    libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
                ) {
                    self.session.handle_origin_socket_failed(errno, now);
                } else {
                    self.session.handle_origin_connect_failed(errno, now);
                }
            }
        }
    }

    /// The session chose its route: its figures' slot, and the setup phases so far.
    fn routed(&mut self, stats: &mut WorkerStats, now: Instant) {
        let slot = stats.slot(self.route_name());
        self.stats_slot = Some(slot);
        if let Some(t) = self.tls_done {
            self.sample(stats, Phase::Tls, t - self.started);
        }
        let from = self.tls_done.unwrap_or(self.started);
        self.sample(stats, Phase::Upgrade, now - from);
    }

    fn sample(&self, stats: &mut WorkerStats, phase: Phase, took: Duration) {
        if let Some(slot) = self.stats_slot {
            stats.record(slot, phase, took);
        }
    }

    /// The session ended: its refusal, or its bytes and how it ended, in its route's figures.
    fn account(&mut self, stats: &mut WorkerStats) {
        if let Some(r) = self.session.refusal() {
            let slot = *self.stats_slot.get_or_insert_with(|| stats.slot(UNROUTED));
            stats.refused(slot, r.status);
            return;
        }
        if !self.opened {
            return;
        }
        let Some(slot) = self.stats_slot else { return };
        let t = self.session.stats();
        let end = self.session.close_record().map(|r| End::of(&r));
        stats.closed(slot, t.to_origin, t.to_client, end);
    }

    /// What `ringctl tunnels` shows of this connection (`None`: a warm tunnel of `ringway
    /// access` with no local connection yet).
    pub fn info(
        &self,
        worker: usize,
        worker_cpu: Option<usize>,
        now: Instant,
    ) -> Option<ringctl::TunnelInfo> {
        if self.is_warm_and_ready() {
            return None;
        }
        let client = self.peer.or_else(|| {
            socket2::SockRef::from(self.client.fd()?)
                .peer_addr()
                .ok()?
                .as_socket()
        });
        let t = self.session.stats();
        let state = if self.session.is_closed() {
            "closing"
        } else if self.session.is_relaying() {
            "relaying"
        } else if self.session.route().is_some() {
            "connecting"
        } else {
            "upgrading"
        };
        Some(ringctl::TunnelInfo {
            id: format!("{worker}-{}-{}", self.key.idx, self.key.gen),
            route: self.route_name().to_string(),
            client: Addr(client).to_string(),
            origin: Addr(self.origin.addr()).to_string(),
            age_ms: now.duration_since(self.started).as_millis() as u64,
            to_origin: t.to_origin,
            to_client: t.to_client,
            state: state.into(),
            worker_cpu: worker_cpu.and_then(|c| u32::try_from(c).ok()),
            incoming_cpu: self
                .client
                .fd()
                .and_then(|fd| rustix::net::sockopt::socket_incoming_cpu(fd).ok()),
            napi_id: self
                .client
                .fd()
                .and_then(|fd| ringway_uring::incoming_napi_id(fd.as_fd()).ok()),
        })
    }

    /// Payload bytes each way so far, for an open tunnel in its route's figures.
    pub fn live_bytes(&self) -> Option<(usize, u64, u64)> {
        if !self.opened || self.session.is_closed() {
            return None;
        }
        let t = self.session.stats();
        Some((self.stats_slot?, t.to_origin, t.to_client))
    }

    /// Under TLS, close_notify goes out on `side` before its FIN (once; nothing is sealed after
    /// it), unless the TLS session failed (its fatal alert ended it).
    fn notify_close(&mut self, side: Side, ring: &mut Ring, now: Instant) {
        if self.tls_error.is_some() {
            return;
        }
        let (sock, transport) = match side {
            Side::Client => (&mut self.client, &mut self.transport),
            Side::Origin => (&mut self.origin.socket, &mut self.origin_transport),
        };
        if let Some(alert) = transport.tls_mut().and_then(|t| t.close_notify()) {
            if let Err(tx) = sock.queue(TxBuf::owned(alert), now) {
                ring.recycle_tx(tx);
            }
        }
    }

    /// Queues a frame the session built (101, Close) to the client. A small payload still
    /// waiting in a pool slot right before it is copied in front of it, so both go out in one
    /// send (an origin's last bytes and the Close its EOF causes reach the client together).
    fn queue_client_frame(&mut self, ring: &mut Ring, frame: Vec<u8>, now: Instant) {
        let mut bytes = frame;
        if self.transport.passes_bytes_through() {
            if let Some(prev) = self.client.pop_back_small_pool(MERGE_BYTES) {
                let mut joined = Vec::with_capacity(prev.len() + bytes.len());
                joined.extend_from_slice(ring.tx_bytes(&prev));
                joined.extend_from_slice(&bytes);
                ring.recycle_tx(prev);
                bytes = joined;
            }
        }
        let tx = self.transport.on_send(bytes);
        if let Err(tx) = self.client.queue(tx, now) {
            ring.recycle_tx(tx);
        }
    }

    /// Under TLS: seals the client's pending pong and queues it, unless an earlier sealed pong
    /// is still unsent ([`Socket::take_held_pong`]). Over plain TCP the socket sends its pong
    /// itself: nothing to do.
    fn seal_pong(&mut self, ring: &mut Ring, now: Instant) {
        let Some(tls) = self.transport.tls_mut() else {
            return;
        };
        let Some(frame) = self.client.take_held_pong() else {
            return;
        };
        let sealed = tls.seal(&frame);
        if let Err(tx) = self.client.queue_sealed_pong(sealed, now) {
            ring.recycle_tx(tx);
        }
    }

    /// A race deadline the worker has not been told of yet (it wakes for these on time; every
    /// other deadline waits for its tick).
    pub fn new_race_deadline(&mut self) -> Option<Instant> {
        let f = self.failover.as_mut()?;
        if f.race_told {
            return None;
        }
        f.race_told = true;
        f.race_at
    }

    /// Runs whatever deadline passed: the session's, and each socket's linger or stall.
    pub fn handle_timeouts(&mut self, now: Instant) {
        if let Some(f) = self.failover.as_mut() {
            if f.race_at.is_some_and(|t| t <= now) {
                f.race_at = None;
                f.race_due = true;
            }
        }
        if self.session.poll_timeout().is_some_and(|t| t <= now) {
            self.session.handle_timeout(now);
        }
        for side in [Side::Client, Side::Origin] {
            if self.socket(side).handle_timeout(now) == Some(Expired::Stalled) {
                self.session.handle_stalled(side == Side::Origin, now);
            }
        }
    }

    /// The earliest instant something of this connection is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.session.poll_timeout(),
            self.client.next_deadline(),
            self.origin.socket.next_deadline(),
            self.failover.as_ref().and_then(|f| f.race_at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// `ringway access --warm`: a tunnel opened ahead of time, up and waiting for a local
    /// connection (no client descriptor yet).
    pub fn is_warm_and_ready(&self) -> bool {
        self.client.raw_opt().is_none() && self.session.is_relaying() && !self.session.is_closed()
    }

    /// Hands a local connection to a warm tunnel.
    pub fn attach_client(&mut self, fd: std::os::fd::OwnedFd) {
        if tracing::enabled!(target: LOG_TARGET, tracing::Level::INFO) {
            self.peer = socket2::SockRef::from(&fd)
                .peer_addr()
                .ok()
                .and_then(|a| a.as_socket());
        }
        self.client.attach_ready(fd);
    }

    /// A socket wants to read but waits for pool buffers.
    pub fn waits_for_buffers(&self) -> bool {
        self.client.waits_for_buffers() || self.origin.socket.waits_for_buffers()
    }

    /// Nothing left to send anywhere: exiting now loses no accepted byte. `shutting_down`: the
    /// process is about to exit, so bytes the kernel still holds for a half-closed socket count
    /// too (closing it with unread input would reset the connection and drop them).
    pub fn is_settled(&self, shutting_down: bool) -> bool {
        let delivered = |s: &Socket| {
            !shutting_down
                || s.stage() != crate::socket::Stage::ShutSent
                || s.fd()
                    .is_none_or(|fd| ringway_uring::unsent_bytes(fd.as_fd()).is_ok_and(|n| n == 0))
        };
        self.session.is_closed()
            && self.client.is_settled()
            && self.origin.socket.is_settled()
            && delivered(&self.client)
            && delivered(&self.origin.socket)
    }

    /// Both sockets closed, nothing in flight: the slot may be freed.
    pub fn is_done(&self) -> bool {
        self.session.is_closed()
            && self.client.is_closed()
            && self.origin.socket.is_closed()
            && self.origin.races_settled()
    }

    fn route_name(&self) -> &str {
        if let Some(name) = self.session.l4_name() {
            return name;
        }
        self.session
            .route()
            .and_then(|i| self.routes.routes().get(i))
            .map_or("-", |r| r.name.as_str())
    }

    /// One line per connection at its end: `upgrade refused` (the HTTP error sent, with what
    /// was asked for) or `tunnel closed` (bytes, duration, who closed and why, in words).
    fn log_close(&self, worker: usize, now: Instant) {
        if !tracing::enabled!(target: LOG_TARGET, tracing::Level::INFO) {
            return; // no words to build for a line nobody reads
        }
        let duration_ms = now.duration_since(self.started).as_millis() as u64;
        let why = self.session.close_account(self.tls_error.as_deref());
        let (by, why) = why.as_ref().map_or(("-", "-"), |(b, w)| (b, w));
        if let Some(r) = self.session.refusal() {
            info!(
                target: LOG_TARGET,
                worker,
                client = %Addr(self.peer),
                status = r.status,
                phrase = reason_phrase(r.status),
                host = r.host.as_deref().unwrap_or("-"),
                path = r.path.as_deref().unwrap_or("-"),
                route = self.route_name(),
                origin = %Addr(self.origin.addr()),
                reason = r.reason,
                cause = why,
                duration_ms,
                "upgrade refused"
            );
            return;
        }
        let stats = self.session.stats();
        info!(
            target: LOG_TARGET,
            worker,
            client = %Addr(self.peer),
            route = self.route_name(),
            origin = %Addr(self.origin.addr()),
            to_origin = stats.to_origin,
            to_client = stats.to_client,
            duration_ms,
            closed_by = by,
            reason = why,
            "tunnel closed"
        );
    }
}

/// An address for a log line, `-` when unknown.
struct Addr(Option<SocketAddr>);

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// How a socket may be read this turn.
struct Reads {
    /// Its bytes must not be read now (see `Socket::poll_op`).
    paused: bool,
    /// The pool has buffers to re-arm a recv.
    buffers_ok: bool,
    /// Its direction splices: a read is a readability poll, not a recv (while open).
    splice: bool,
}

/// Submits every operation `sock` asks for.
fn submit(ring: &mut Ring, sock: &mut Socket, side: Side, key: Key, now: Instant, reads: Reads) {
    while let Some(op) = sock.poll_op(now, reads.paused, reads.buffers_ok) {
        match op {
            SocketOp::Recv if reads.splice && sock.is_open() => {
                let id = ring.poll_readable_once(sock.raw(), tag(Op::Readable, side, key));
                sock.recv_submitted(id);
            }
            SocketOp::Recv => {
                let id = ring.recv(sock.raw(), tag(Op::Recv, side, key));
                sock.recv_submitted(id);
            }
            SocketOp::CancelRecv(id) => ring.cancel(id, tag(Op::Cancel, side, key)),
            // Bytes in a pipe are spliced on once the socket is writable.
            SocketOp::Send(tx, _) if tx.is_piped() => {
                ring.poll_writable(sock.raw(), tx, tag(Op::Writable, side, key))
            }
            SocketOp::Send(tx, false) => ring.send(sock.raw(), tx, tag(Op::Send, side, key)),
            // The FIN follows this send's completion at once, and joins its last segment.
            SocketOp::Send(tx, true) => ring.send_last(sock.raw(), tx, tag(Op::Send, side, key)),
            SocketOp::Shutdown => {
                // A direct syscall: IORING_OP_SHUTDOWN always runs on an io-wq thread, which
                // costs a context switch and delays the FIN (measured: 81 µs p50, 426 µs p90).
                // shutdown(SHUT_WR) on a TCP socket only queues the FIN; it never blocks.
                if let Some(fd) = sock.fd() {
                    let _ = socket2::SockRef::from(fd).shutdown(std::net::Shutdown::Write);
                }
            }
            SocketOp::CancelAll => ring.cancel_fd(sock.raw(), tag(Op::Cancel, side, key)),
            SocketOp::Close(fd) => {
                if sock.resets_on_close() {
                    // SO_LINGER 0: close(2) sends RST and drops what the kernel still holds.
                    let _ = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO));
                }
                ring.close(fd, tag(Op::Close, side, key))
            }
            SocketOp::Discard(tx) => ring.recycle_tx(tx),
        }
    }
}
