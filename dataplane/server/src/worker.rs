//! One worker: a thread pinned to a core with its own io_uring, its own SO_REUSEPORT listeners
//! and its own slab of connections. Nothing mutable is shared with other workers.
//!
//! The loop only: submit and wait (polling first while mostly idle) → read the clock once →
//! reap completions into a reused vector → dispatch each to its connection ([`Conn`]) → pump the
//! connection → reschedule its deadline; a tick pops the deadlines that are due. Accept, the
//! shutdown drain and the re-arming of receives starved of pool buffers live here too; what a
//! completion does to a connection lives in `conn`, `socket`, `relay` and `session`.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_proto::route::RouteTable;
use ringway_proto::tcp::TcpConfig;
use ringway_proto::tunnel::TunnelConfig;
use ringway_uring::{Completion, OpId, Ring};
use tracing::{debug, info, warn};

use crate::balance::Balance;
use crate::conn::{Conn, Resources};
use crate::control::{Answer, Query, WorkerLink};
use crate::health::Checks;
use crate::polling::Polling;
use crate::pools::Pools;
use crate::relay::Pool;
use crate::session::Session;
use crate::slab::{Key, Slab};
use crate::socket::SocketLimits;
use crate::splice::{Pipes, SpliceConfig};
use crate::stats::WorkerStats;
use crate::timers::Deadlines;
use crate::tls::SharedTls;
use crate::token::{tag, untag, Op, Side};
use crate::transport::Transport;
use crate::warm::Warm;

const TICK: Duration = Duration::from_millis(100);
/// A race deadline this close gets a wake-up of its own (see [`Worker::wake_by`]); a later one
/// waits for a tick to bring it this close.
const WAKE_HORIZON: Duration = Duration::from_secs(1);
/// Pool buffers one socket's recv may fill between two loop turns.
const RECV_BURST_BUFFERS: usize = 4;
/// Key used in tags that name no connection (tick, accept, listener cancels).
const NO_CONN: Key = Key { idx: 0, gen: 0 };

/// Settings a worker starts with.
pub struct WorkerConfig {
    pub id: usize,
    pub cpu: Option<usize>,
    pub listeners: Vec<OwnedFd>,
    /// TLS server configs per listener (`None`: plain ws://), reloadable.
    pub tls: Arc<SharedTls>,
    /// `ringway access`: every accepted connection is carried to this edge instead.
    pub access: Option<Arc<AccessSetup>>,
    pub routes: Arc<RouteTable>,
    pub tunnel: TunnelConfig,
    pub backpressure: usize,
    pub send_stall: Duration,
    pub ring_entries: u32,
    pub buffers: u16,
    pub buffer_size: usize,
    pub shutdown: Arc<AtomicBool>,
    pub shutdown_timeout: Duration,
    pub busy_poll: Duration,
    /// During a drain: how many connections still have bytes to send, for the main thread
    /// (written by this worker only, read when a second signal cuts the drain short).
    pub draining: Arc<AtomicUsize>,
    /// New route tables from the control thread (`None`: `ringway access`, no control plane).
    pub control: Option<WorkerLink>,
    /// Record latency histograms (`[admin] latency_histograms`).
    pub latency_histograms: bool,
    /// Per listener: `mode = "tcp"` (its relay settings and route name), or `None`.
    pub l4: Vec<Option<(TcpConfig, Arc<str>)>>,
    /// When and how L4 connections splice.
    pub splice: SpliceConfig,
    /// `[engine] balance`: the workers' loads and rings, shared by all of them.
    pub balance: Option<Arc<Balance>>,
    /// `[engine] napi_busy_poll_us` (0: off).
    pub napi_busy_poll_us: u32,
    /// Workers in the process (each enforces its share of a route's or origin's limit).
    pub workers: usize,
}

/// A running worker's state. Field order matters for drop: the ring goes first (cancelling
/// and reaping what is in flight) while the connections still own their descriptors.
pub struct Worker {
    ring: Ring,
    id: usize,
    /// The CPU this worker is pinned to, if any.
    cpu: Option<usize>,
    conns: Slab<Conn>,
    deadlines: Deadlines,
    /// Connect race deadlines, which get one-shot wake-ups (see [`Worker::wake_by`]).
    races: Deadlines,
    listeners: Vec<Option<OwnedFd>>,
    tls_shared: Arc<SharedTls>,
    access: Option<Arc<AccessSetup>>,
    random: &'static dyn rustls::crypto::SecureRandom,
    /// Warm tunnels (opened ahead of time, no local connection yet), oldest first.
    warm: std::collections::VecDeque<(Key, Instant)>,
    /// This worker's copy of the TLS configs and the generation it was taken at.
    tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    tls_generation: u64,
    /// The armed accept per listener.
    accepting: Vec<Option<OpId>>,
    routes: Arc<RouteTable>,
    tunnel: Arc<TunnelConfig>,
    limits: SocketLimits,
    pool: Pool,
    shutdown: Arc<AtomicBool>,
    shutdown_timeout: Duration,
    draining: Arc<AtomicUsize>,
    stop_by: Option<Instant>,
    /// Connections that still have bytes to send (see `Conn::is_settled`).
    unsettled: usize,
    /// Receives that ended for lack of pool buffers, re-armed when buffers come back.
    starved: Vec<Key>,
    /// Connections with completions in the current batch, pumped once at its end.
    dirty: Vec<Key>,
    /// While shutting down: connections waiting for their peer to acknowledge what the kernel
    /// still holds (see `Conn::is_settled`), looked at again on each tick.
    awaiting_ack: Vec<Key>,
    tick_armed: bool,
    busy_poll: Duration,
    accept_failures: AcceptFailures,
    control: Option<WorkerLink>,
    /// Per listener: `mode = "tcp"` settings.
    l4: Vec<Option<(TcpConfig, Arc<str>)>>,
    /// Counters and latency histograms per route.
    stats: WorkerStats,
    /// Splice pipes and origin pool health, shared by the connections.
    res: Resources,
    balance: Option<Arc<Balance>>,
    /// Active health checks of pooled origins.
    checks: Checks,
    /// The earliest one-shot wake-up in flight (see [`Worker::wake_by`]).
    wakeup: Option<Instant>,
}

impl Worker {
    pub fn new(cfg: WorkerConfig) -> std::io::Result<Worker> {
        let mut ring = Ring::new(cfg.ring_entries, cfg.buffers, cfg.buffer_size)?;
        if cfg.napi_busy_poll_us > 0 {
            ring.enable_napi_busy_poll(cfg.napi_busy_poll_us)
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "`engine.napi_busy_poll_us`: the kernel refused IORING_REGISTER_NAPI \
                             (needs Linux 6.9+): {e}"
                        ),
                    )
                })?;
        }
        // Fairness between sockets: between two loop turns a socket's recv delivers at most
        // this much (then ends and is re-armed for the next turn), so a peer that sends as fast
        // as it can adds a bounded amount to every other tunnel's wait.
        ring.set_recv_cap(u32::try_from(RECV_BURST_BUFFERS * cfg.buffer_size).unwrap_or(u32::MAX));
        let n = cfg.listeners.len();
        Ok(Worker {
            ring,
            id: cfg.id,
            cpu: cfg.cpu,
            conns: Slab::default(),
            deadlines: Deadlines::default(),
            races: Deadlines::default(),
            listeners: cfg.listeners.into_iter().map(Some).collect(),
            tls: cfg.tls.current(),
            tls_shared: cfg.tls,
            access: cfg.access,
            random: rustls::crypto::ring::default_provider().secure_random,
            warm: std::collections::VecDeque::new(),
            tls_generation: 0,
            accepting: vec![None; n],
            routes: cfg.routes,
            tunnel: Arc::new(cfg.tunnel),
            limits: SocketLimits {
                backpressure: cfg.backpressure,
                linger: cfg.tunnel.close_timeout,
                send_stall: cfg.send_stall,
            },
            pool: Pool::new(cfg.buffers as usize),
            shutdown: cfg.shutdown,
            shutdown_timeout: cfg.shutdown_timeout,
            draining: cfg.draining,
            stop_by: None,
            unsettled: 0,
            starved: Vec::new(),
            dirty: Vec::new(),
            awaiting_ack: Vec::new(),
            tick_armed: false,
            busy_poll: cfg.busy_poll,
            accept_failures: AcceptFailures::default(),
            control: cfg.control,
            l4: cfg.l4,
            stats: WorkerStats::new(cfg.latency_histograms),
            res: Resources {
                pipes: Pipes::new(cfg.splice),
                pools: Pools::new(cfg.id, cfg.workers),
                warm: Warm::new(cfg.workers),
                route_tunnels: Vec::new(),
            },
            balance: cfg.balance,
            checks: Checks::default(),
            wakeup: None,
        })
    }

    /// Runs until shutdown completes (or its deadline passes).
    pub fn run(mut self) -> std::io::Result<()> {
        let f = self.ring.features();
        debug!(worker = self.id, ?f, "worker started");
        if let Some(b) = &self.balance {
            b.publish(self.id, self.ring.ring_fd());
        }
        for i in 0..self.listeners.len() {
            self.arm_accept(i);
        }
        self.ring.tick(TICK, tag(Op::Tick, Side::Client, NO_CONN));
        self.tick_armed = true;
        self.arm_control();
        let mut cqes: Vec<Completion> = Vec::with_capacity(1024);
        let mut polling = Polling::new(self.busy_poll);
        let mut busy_since = Instant::now();
        loop {
            let waiting_since = Instant::now();
            let spin = polling.budget(waiting_since);
            let wait = self.ring.wait_spinning(spin)?;
            let now = Instant::now();
            polling.record(waiting_since - busy_since, now - waiting_since, wait, now);
            busy_since = now;
            self.ring.reap(&mut cqes);
            for c in cqes.drain(..) {
                self.dispatch(c, now);
            }
            // Connections waiting for pool buffers go first, oldest first: their recvs are
            // submitted ahead of those of the sockets that just read.
            if !self.starved.is_empty() && self.pool.may_rearm(&self.ring) {
                self.unstarve(now);
            }
            // One pump per connection per batch: everything the batch brought (an origin's
            // last bytes and its EOF, say) is queued before the sockets submit, so it can leave
            // in one send.
            let mut dirty = std::mem::take(&mut self.dirty);
            for key in dirty.drain(..) {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.dirty = false;
                    self.pump(key, now);
                }
            }
            self.dirty = dirty;
            if !self.starved.is_empty() && self.pool.may_rearm(&self.ring) {
                self.unstarve(now);
            }
            if let Some(by) = self.stop_by {
                self.draining.store(self.unsettled, Ordering::Relaxed);
                if self.unsettled == 0 {
                    return Ok(());
                }
                if now >= by {
                    warn!(
                        worker = self.id,
                        open = self.unsettled,
                        "shutdown deadline passed with tunnels still sending"
                    );
                    return Ok(());
                }
            }
        }
    }

    fn arm_accept(&mut self, i: usize) {
        if let Some(l) = &self.listeners[i] {
            let fd = l.as_raw_fd();
            let key = Key {
                idx: i as u32,
                gen: 0,
            };
            self.accepting[i] = Some(self.ring.accept(fd, tag(Op::Accept, Side::Client, key)));
        }
    }

    fn arm_control(&mut self) {
        if let Some(link) = &self.control {
            let fd = link.wake_fd();
            self.ring
                .poll_readable(fd, tag(Op::Control, Side::Client, NO_CONN));
        }
    }

    /// The control thread has news: a new route table. Tunnels already routed keep theirs;
    /// connections not yet routed take the new one at their next completion.
    fn on_control(&mut self, more: bool, now: Instant) {
        if !more {
            self.arm_control();
        }
        let Some(link) = &mut self.control else {
            return;
        };
        let (table, queries) = link.receive();
        if let Some(table) = table {
            debug!(
                worker = self.id,
                version = table.version(),
                "new route table"
            );
            self.routes = table;
            link.acknowledge(self.routes.version());
            let names: Vec<&str> = self
                .routes
                .routes()
                .iter()
                .map(|r| r.name.as_str())
                .collect();
            self.stats.retire_absent(&names);
            self.res.pools.retain(&self.routes);
        }
        for q in queries {
            let answer = self.answer(q, now);
            if let Some(link) = &self.control {
                link.answer(answer);
            }
        }
    }

    /// Answers the control thread: figures, the open tunnels, or an operator's close.
    fn answer(&mut self, q: Query, now: Instant) -> Answer {
        match q {
            Query::Stats { id } => {
                let mut live: HashMap<usize, (u64, u64)> = HashMap::new();
                for key in self.conns.keys() {
                    if let Some((slot, o, c)) = self.conns.get(key).and_then(Conn::live_bytes) {
                        let e = live.entry(slot).or_default();
                        e.0 += o;
                        e.1 += c;
                    }
                }
                let reports = self.stats.report(None, &live);
                let mut origins = self.res.pools.report(now);
                for o in &mut origins {
                    if let Ok(addr) = o.origin.parse() {
                        o.warm = self.res.warm.count(addr) as u64;
                        o.warm_used = self.res.warm.used(addr);
                    }
                }
                Answer::Stats {
                    id,
                    reports,
                    origins,
                }
            }
            Query::Tunnels { id, route } => {
                let (worker, cpu) = (self.id, self.cpu);
                let tunnels = self
                    .conns
                    .keys()
                    .into_iter()
                    .filter_map(|key| self.conns.get(key)?.info(worker, cpu, now))
                    .filter(|t| route.as_ref().is_none_or(|r| *r == t.route))
                    .collect();
                Answer::Tunnels { id, tunnels }
            }
            Query::Close { id, slot, gen } => {
                let key = Key { idx: slot, gen };
                let found = match self.conns.get_mut(key) {
                    Some(conn) if !conn.session.is_closed() => {
                        conn.session.handle_operator_close(now);
                        if !conn.dirty {
                            conn.dirty = true;
                            self.dirty.push(key);
                        }
                        true
                    }
                    _ => false,
                };
                Answer::Closed { id, found }
            }
        }
    }

    fn dispatch(&mut self, c: Completion, now: Instant) {
        let (op, side, key) = untag(c.tag);
        match op {
            Op::Control => self.on_control(c.more, now),
            Op::Tick => {
                if !c.more {
                    self.tick_armed = false;
                }
                self.on_tick(now);
            }
            Op::Accept => self.on_accept(key.idx as usize, c, now),
            Op::Handoff => self.on_handoff(side, key, c, now),
            Op::Wake => {
                if self.wakeup.is_some_and(|w| w <= now) {
                    self.wakeup = None;
                }
                self.run_races(now);
            }
            Op::WarmConnect => {
                let (routes, res) = (&self.routes, &mut self.res);
                res.warm
                    .on_connected(key, c.result, routes, &mut res.pools, now);
            }
            Op::Check => {
                let (ring, pools) = (&mut self.ring, &mut self.res.pools);
                self.checks
                    .on_completion(side, key, c.result, ring, pools, now);
            }
            Op::Cancel => {}
            _ => {
                let Some(conn) = self.conns.get_mut(key) else {
                    // Cannot happen: a slot is freed only once nothing of it is in flight.
                    if let Some(b) = c.buf {
                        self.ring.recycle(b);
                    }
                    if let Some(t) = c.tx {
                        self.ring.recycle_tx(t);
                    }
                    return;
                };
                if conn.session.route().is_none() && !Arc::ptr_eq(&conn.routes, &self.routes) {
                    conn.routes = self.routes.clone(); // not routed yet: the newest table
                }
                conn.on_completion(
                    op,
                    side,
                    c,
                    &mut self.ring,
                    &self.pool,
                    &mut self.res,
                    &mut self.stats,
                    now,
                );
                if !conn.dirty {
                    conn.dirty = true;
                    self.dirty.push(key);
                }
            }
        }
    }

    /// Moves a connection forward after an event, frees it when done, reschedules its deadline.
    fn pump(&mut self, key: Key, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.pump(
            &mut self.ring,
            &self.pool,
            &mut self.res,
            &mut self.stats,
            self.id,
            now,
        );
        let exiting = self.stop_by.is_some();
        if !conn.settled && conn.is_settled(exiting) {
            conn.settled = true;
            self.unsettled -= 1;
        } else if exiting && !conn.settled && !conn.awaiting_ack && conn.is_settled(false) {
            // Only the kernel's unacknowledged bytes are left: look again on the next tick.
            conn.awaiting_ack = true;
            self.awaiting_ack.push(key);
        }
        if conn.is_done() {
            conn.release(&mut self.res);
            self.conns.remove(key);
            if let Some(b) = &self.balance {
                b.closed(self.id);
            }
            return;
        }
        if !conn.waiting && conn.waits_for_buffers() {
            conn.waiting = true;
            self.starved.push(key);
        }
        if let Some(at) = conn.next_deadline() {
            if conn.scheduled.is_none_or(|s| at < s) {
                conn.scheduled = Some(at);
                self.deadlines.push(at, key);
            }
        }
        if let Some(at) = conn.new_race_deadline() {
            self.races.push(at, key);
            self.wake_by(at, now);
        }
    }

    /// Connection deadlines run on the tick (100 ms is close enough for timeouts of seconds);
    /// connect race deadlines (tens of milliseconds) run when due: the earliest within
    /// `WAKE_HORIZON` gets a one-shot ring timer, unless one at least as early is in flight, and
    /// after each run of races the next gets one ([`Worker::run_races`], also run on each
    /// tick). Such timers are never cancelled (a cancel costs a scan of the ring's timers): one
    /// that fires with nothing due finds nothing to do. Only races get them: a wake-up per
    /// deadline of every tunnel would cost thousands of timers a second at a high setup rate.
    fn wake_by(&mut self, at: Instant, now: Instant) {
        if at.saturating_duration_since(now) > WAKE_HORIZON || self.wakeup.is_some_and(|w| w <= at)
        {
            return;
        }
        self.wakeup = Some(at);
        let after = at.saturating_duration_since(now);
        self.ring
            .timeout(after, tag(Op::Wake, Side::Client, NO_CONN));
    }

    fn on_tick(&mut self, now: Instant) {
        if !self.tick_armed {
            self.ring.tick(TICK, tag(Op::Tick, Side::Client, NO_CONN));
            self.tick_armed = true;
        }
        if self.stop_by.is_none() && self.shutdown.load(Ordering::Relaxed) {
            self.begin_shutdown(now);
        }
        for i in 0..self.listeners.len() {
            if self.accepting[i].is_none() && self.stop_by.is_none() {
                self.arm_accept(i);
            }
        }
        self.accept_failures.flush(self.id, now);
        // Half-closed sockets whose peer is still reading settle without an event here: only
        // those are looked at again (cost per tick: what waits, not what exists).
        for key in std::mem::take(&mut self.awaiting_ack) {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.awaiting_ack = false;
                self.pump(key, now);
            }
        }
        self.refill_warm(now);
        if self.stop_by.is_none() {
            // Workers start their checks a little apart.
            let offset = TICK * (self.id as u32 % 10);
            self.checks
                .run_due(&self.routes, &mut self.ring, offset, now);
            let res = &mut self.res;
            let connect_timeout = self.tunnel.connect_timeout;
            res.warm.refill(
                &self.routes,
                &mut res.pools,
                &mut self.ring,
                connect_timeout,
                now,
            );
        }
        if let Some(tls) = self.tls_shared.changed_since(&mut self.tls_generation) {
            info!(worker = self.id, "TLS certificates reloaded");
            self.tls = tls;
        }
        self.expire(now);
        self.run_races(now);
    }

    /// Runs every deadline that is due (cost: what expires, not what exists).
    fn expire(&mut self, now: Instant) {
        while let Some((at, key)) = self.deadlines.pop_due(now) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue; // the connection is gone
            };
            if conn.scheduled != Some(at) {
                continue; // superseded by an earlier entry
            }
            conn.scheduled = None;
            conn.handle_timeouts(now);
            self.pump(key, now);
        }
    }

    /// Runs the race deadlines that are due, then wakes for the next one.
    fn run_races(&mut self, now: Instant) {
        while let Some((_, key)) = self.races.pop_due(now) {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.handle_timeouts(now);
                self.pump(key, now);
            }
        }
        if let Some(next) = self.races.next_at() {
            self.wake_by(next, now);
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        info!(worker = self.id, open = self.conns.len(), "shutting down");
        if let Some(b) = &self.balance {
            b.withdraw(self.id);
        }
        self.stop_by = Some(now + self.shutdown_timeout);
        self.res.warm.drop_ready();
        // Stop accepting: cancel each accept; its listener is closed when the accept's last
        // completion arrives (I2), and new connections are refused from then on.
        for i in 0..self.listeners.len() {
            match self.accepting[i] {
                Some(op) => self.ring.cancel(op, tag(Op::Cancel, Side::Client, NO_CONN)),
                None => self.listeners[i] = None,
            }
        }
        for key in self.conns.keys() {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.session.handle_shutdown(now);
            }
            self.pump(key, now);
        }
    }

    fn on_accept(&mut self, i: usize, c: Completion, now: Instant) {
        if !c.more {
            self.accepting[i] = None;
            if self.stop_by.is_some() {
                self.listeners[i] = None;
            }
        }
        match c.fd {
            Some(fd) if self.stop_by.is_none() => self.open_conn(i, fd, false, now),
            Some(_) => {}
            None => {
                if self.stop_by.is_none() && c.result != -libc::ECANCELED {
                    self.accept_failures.record(self.id, -c.result, now);
                }
            }
        }
        // Re-armed at once unless it failed (then at the next tick, so EMFILE cannot spin).
        if self.accepting[i].is_none() && c.result >= 0 && self.stop_by.is_none() {
            self.arm_accept(i);
        }
    }

    /// A connection handed between workers: arrived here (`Side::Client`), or the outcome of
    /// one this worker sent (`Side::Origin`: on failure the descriptor comes back and the
    /// connection is served here).
    fn on_handoff(&mut self, side: Side, key: Key, c: Completion, now: Instant) {
        let Some(b) = self.balance.clone() else {
            return; // dropping the descriptor, if any, closes it
        };
        let listener = key.idx as usize;
        match (side, c.fd) {
            (Side::Client, fd) => {
                b.closed(self.id); // counted here by the sender; counted again when served
                match fd {
                    Some(fd) if self.stop_by.is_none() => self.open_conn(listener, fd, true, now),
                    _ => {}
                }
            }
            (Side::Origin, Some(fd)) => {
                b.closed(key.gen as usize);
                debug!(
                    worker = self.id,
                    target = key.gen,
                    error = %std::io::Error::from_raw_os_error(-c.result),
                    "handoff failed; served here"
                );
                if self.stop_by.is_none() {
                    self.open_conn(listener, fd, true, now);
                }
            }
            (Side::Origin, None) => {}
        }
    }

    /// A fresh connection on `listener`: handed to a less-loaded worker (`[engine] balance`,
    /// unless it was `handed` here already), or served here.
    fn open_conn(&mut self, listener: usize, fd: OwnedFd, handed: bool, now: Instant) {
        if let (Some(b), false, None) = (&self.balance, handed, self.stop_by) {
            if let Some((target, ring)) = b.pick(self.id) {
                let l = u32::try_from(listener).unwrap_or(u32::MAX);
                let deliver = tag(Op::Handoff, Side::Client, Key { idx: l, gen: 0 });
                let outcome = Key {
                    idx: l,
                    gen: target as u32,
                };
                self.ring
                    .send_fd(ring, fd, deliver, tag(Op::Handoff, Side::Origin, outcome));
                return;
            }
        }
        // TCP_NODELAY is inherited from the listener (set in `main::listen`): no syscall here.
        // Debug builds (the end-to-end tests) check the inheritance.
        debug_assert!(
            socket2::SockRef::from(&fd).nodelay().unwrap_or(true),
            "accepted socket did not inherit TCP_NODELAY"
        );
        if self.access.is_some() {
            if let Some(key) = self.take_warm() {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.attach_client(fd);
                }
                // The replacement is opened on the next tick, not now: its TLS handshake would
                // compete for the CPU with this connection's first bytes.
                self.pump(key, now);
                return;
            }
        }
        if let Some((config, name)) = self.l4.get(listener).cloned().flatten() {
            let session = Session::tcp(config, name, now);
            self.insert_conn(Some(fd), session, Transport::Plain, None, now);
            return;
        }
        let transport = match self.tls.get(listener).and_then(Option::as_ref) {
            None => Transport::Plain,
            Some(config) => match Transport::tls(config) {
                Ok(t) => t,
                Err(e) => {
                    warn!(worker = self.id, "cannot start a TLS session: {e}");
                    return; // dropping `fd` closes the connection
                }
            },
        };
        self.new_conn(Some(fd), transport, now);
    }

    /// A connection: a WebSocket tunnel for `fd`, or (access) a tunnel to the edge for the
    /// local connection `fd`, or a warm one with no local connection yet (`fd` None).
    fn new_conn(&mut self, fd: Option<OwnedFd>, transport: Transport, now: Instant) -> Option<Key> {
        let (session, edge_tls) = match &self.access {
            None => (Session::websocket(self.tunnel.clone(), now), None),
            Some(a) => {
                let (mut nonce, mut seed) = ([0u8; 16], [0u8; 32]);
                if self.random.fill(&mut nonce).is_err() || self.random.fill(&mut seed).is_err() {
                    warn!(
                        worker = self.id,
                        "no randomness for a WebSocket key; connection dropped"
                    );
                    return None;
                }
                let session = Session::access(a.config.clone(), nonce, seed, now);
                (session, a.tls.clone())
            }
        };
        Some(self.insert_conn(fd, session, transport, edge_tls, now))
    }

    fn insert_conn(
        &mut self,
        fd: Option<OwnedFd>,
        session: Session,
        transport: Transport,
        edge_tls: Option<Arc<crate::conn::EdgeTls>>,
        now: Instant,
    ) -> Key {
        let (routes, limits) = (self.routes.clone(), self.limits);
        if let Some(b) = &self.balance {
            b.opened(self.id);
        }
        let key = self.conns.insert_with(|key| {
            let mut conn = Conn::new(key, fd, session, transport, routes, limits, now);
            conn.edge_tls = edge_tls;
            conn
        });
        self.unsettled += 1;
        self.pump(key, now);
        key
    }

    /// The oldest warm tunnel that is up, dropping the ones that ended.
    fn take_warm(&mut self) -> Option<Key> {
        while let Some((key, born)) = self.warm.pop_front() {
            match self.conns.get(key) {
                Some(conn) if conn.is_warm_and_ready() => return Some(key),
                Some(conn) if !conn.session.is_closed() => {
                    // Still upgrading: keep it for the next local connection.
                    self.warm.push_front((key, born));
                    return None;
                }
                _ => {}
            }
        }
        None
    }

    /// Keeps `warm` tunnels open (and replaces those older than the refresh interval).
    fn refill_warm(&mut self, now: Instant) {
        let Some(a) = self.access.clone() else {
            return;
        };
        if a.warm == 0 || self.stop_by.is_some() {
            return;
        }
        self.warm.retain(|(key, _)| self.conns.get(*key).is_some());
        while let Some(&(key, born)) = self.warm.front() {
            if now.saturating_duration_since(born) < a.warm_refresh {
                break;
            }
            self.warm.pop_front();
            if let Some(conn) = self.conns.get_mut(key) {
                conn.session.handle_shutdown(now);
            }
            self.pump(key, now);
        }
        while self.warm.len() < a.warm {
            match self.new_conn(None, Transport::Plain, now) {
                Some(key) => self.warm.push_back((key, now)),
                None => break,
            }
        }
    }

    fn unstarve(&mut self, now: Instant) {
        // Each starved socket re-arms its recv in the pump, now that the pool has buffers.
        for key in std::mem::take(&mut self.starved) {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.waiting = false;
                self.pump(key, now);
            }
        }
    }
}

/// What `ringway access` workers share: the tunnel settings and, for a `wss://` edge, the TLS
/// client settings.
#[derive(Debug)]
pub struct AccessSetup {
    pub config: Arc<ringway_proto::access::AccessConfig>,
    pub tls: Option<Arc<crate::conn::EdgeTls>>,
    /// Tunnels each worker keeps open and upgraded ahead of time (`--warm K`, split over the
    /// workers), so a local connection skips the connect, TLS and upgrade round trips.
    pub warm: usize,
    /// A warm tunnel older than this is replaced, so it never meets the edge's idle timeout.
    pub warm_refresh: Duration,
}

/// Accept failures (EMFILE when the descriptors run out) are retried every tick; they are
/// logged at most once per [`AcceptFailures::EVERY`], with how many happened since.
#[derive(Default)]
struct AcceptFailures {
    unreported: u64,
    last_errno: i32,
    reported_at: Option<Instant>,
}

impl AcceptFailures {
    const EVERY: Duration = Duration::from_secs(10);

    fn record(&mut self, worker: usize, errno: i32, now: Instant) {
        self.unreported += 1;
        self.last_errno = errno;
        if self.reported_at.is_none_or(|t| now >= t + Self::EVERY) {
            self.report(worker, now);
        }
    }

    /// Reports failures left unreported once the interval has passed.
    fn flush(&mut self, worker: usize, now: Instant) {
        if self.unreported > 0 && self.reported_at.is_some_and(|t| now >= t + Self::EVERY) {
            self.report(worker, now);
        }
    }

    fn report(&mut self, worker: usize, now: Instant) {
        let error = std::io::Error::from_raw_os_error(self.last_errno);
        let hint = if matches!(self.last_errno, libc::EMFILE | libc::ENFILE) {
            " (out of file descriptors: raise `ulimit -n` or LimitNOFILE)"
        } else {
            ""
        };
        warn!(
            worker,
            failures = self.unreported,
            "accept failed: {error}{hint}; retrying every 100 ms, next report in 10 s at most"
        );
        self.unreported = 0;
        self.reported_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_are_reported_at_most_every_ten_seconds() {
        let t0 = Instant::now();
        let mut a = AcceptFailures::default();
        a.record(0, libc::EMFILE, t0);
        assert_eq!(
            (a.unreported, a.reported_at),
            (0, Some(t0)),
            "the first is reported"
        );
        for i in 1..=99 {
            a.record(0, libc::EMFILE, t0 + Duration::from_millis(100 * i));
        }
        assert_eq!(a.unreported, 99, "ten a second for ten seconds: held back");
        a.flush(0, t0 + Duration::from_millis(9_950));
        assert_eq!(a.unreported, 99);
        a.flush(0, t0 + Duration::from_secs(10));
        assert_eq!(a.unreported, 0, "reported with their count");
    }
}
