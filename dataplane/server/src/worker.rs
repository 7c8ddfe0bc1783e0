//! One worker: a thread pinned to a core with its own io_uring, its own SO_REUSEPORT listeners
//! and its own slab of connections. Nothing mutable is shared with other workers.
//!
//! The loop: submit and wait → read the clock once → reap completions into a reused vector →
//! dispatch each to its connection (`handle_*` on the tunnel, then its intents) → submit. No
//! allocation per completion on the relay path: received bytes stay in the pool buffer the kernel
//! chose, are unmasked (client → origin) or framed in the headroom (origin → client) in place,
//! and the same buffer is sent on.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_proto::route::RouteTable;
use ringway_proto::tunnel::{Intent, Tunnel, TunnelConfig};
use ringway_uring::{Completion, OpId, Ring, TxBuf, HEADROOM};
use tracing::{debug, info, warn};

use crate::conn::{Conn, Endpoint, Stage};

const TICK: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Tick = 1,
    Accept,
    Recv,
    Send,
    Connect,
    Shutdown,
    Close,
    Cancel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Client,
    Origin,
}

/// `user_data` tag: op (4 bits) | side (1 bit) | slot index (32 bits) | generation (24 bits).
fn tag(op: Op, side: Side, idx: u32, gen: u32) -> u64 {
    ((op as u64) << 60) | ((side as u64) << 59) | ((idx as u64) << 24) | (gen as u64 & 0xFF_FFFF)
}

fn untag(t: u64) -> (Op, Side, u32, u32) {
    let op = match t >> 60 {
        1 => Op::Tick,
        2 => Op::Accept,
        3 => Op::Recv,
        4 => Op::Send,
        5 => Op::Connect,
        6 => Op::Shutdown,
        7 => Op::Close,
        _ => Op::Cancel,
    };
    let side = if (t >> 59) & 1 == 1 {
        Side::Origin
    } else {
        Side::Client
    };
    (
        op,
        side,
        ((t >> 24) & 0xFFFF_FFFF) as u32,
        (t & 0xFF_FFFF) as u32,
    )
}

/// Settings a worker starts with.
pub(crate) struct WorkerConfig {
    pub(crate) id: usize,
    pub(crate) cpu: Option<usize>,
    pub(crate) listeners: Vec<OwnedFd>,
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) tunnel: TunnelConfig,
    pub(crate) backpressure: usize,
    pub(crate) ring_entries: u32,
    pub(crate) buffers: u16,
    pub(crate) buffer_size: usize,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) busy_poll: Duration,
}

/// A running worker's state.
pub(crate) struct Worker {
    id: usize,
    ring: Ring,
    conns: Vec<Option<Conn>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    live: usize,
    listeners: Vec<Option<OwnedFd>>,
    /// The armed accept per listener.
    accepting: Vec<Option<OpId>>,
    routes: Arc<RouteTable>,
    tunnel: TunnelConfig,
    backpressure: usize,
    buffers: usize,
    shutdown: Arc<AtomicBool>,
    shutdown_timeout: Duration,
    stop_by: Option<Instant>,
    starved: Vec<(u32, u32, Side)>,
    tick_armed: bool,
    busy_poll: Duration,
}

impl Worker {
    pub(crate) fn new(cfg: WorkerConfig) -> std::io::Result<Worker> {
        let ring = Ring::new(cfg.ring_entries, cfg.buffers, cfg.buffer_size)?;
        let n = cfg.listeners.len();
        Ok(Worker {
            id: cfg.id,
            ring,
            conns: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            live: 0,
            listeners: cfg.listeners.into_iter().map(Some).collect(),
            accepting: vec![None; n],
            routes: cfg.routes,
            tunnel: cfg.tunnel,
            backpressure: cfg.backpressure,
            buffers: cfg.buffers as usize,
            shutdown: cfg.shutdown,
            shutdown_timeout: cfg.shutdown_timeout,
            stop_by: None,
            starved: Vec::new(),
            tick_armed: false,
            busy_poll: cfg.busy_poll,
        })
    }

    /// Runs until shutdown completes (or its deadline passes).
    pub(crate) fn run(mut self) -> std::io::Result<()> {
        let f = self.ring.features();
        debug!(worker = self.id, ?f, "worker started");
        for i in 0..self.listeners.len() {
            self.arm_accept(i);
        }
        self.ring.tick(TICK, tag(Op::Tick, Side::Client, 0, 0));
        self.tick_armed = true;
        let mut cqes: Vec<Completion> = Vec::with_capacity(1024);
        let mut duty = Duty::default();
        let mut busy_since = Instant::now();
        loop {
            // Poll before sleeping only while the worker is mostly idle: then a spare core is
            // likely and polling saves the wake-up; a busy worker's idle gaps belong to the
            // processes it waits for (on a shared box, the client and the origin).
            let spin = if duty.mostly_idle() {
                self.busy_poll
            } else {
                Duration::ZERO
            };
            let waiting_since = Instant::now();
            self.ring.wait_spinning(spin)?;
            let now = Instant::now();
            duty.record(waiting_since - busy_since, now - waiting_since);
            busy_since = now;
            self.ring.reap(&mut cqes);
            for c in cqes.drain(..) {
                self.dispatch(c, now);
            }
            if !self.starved.is_empty() && self.ring.buffers_lent() < self.buffers / 2 {
                self.unstarve();
            }
            if let Some(by) = self.stop_by {
                if self.live == 0 || now >= by || self.quiescent() {
                    if self.live > 0 {
                        warn!(
                            worker = self.id,
                            open = self.live,
                            "shutdown deadline passed"
                        );
                    }
                    return Ok(());
                }
            }
        }
    }

    /// During shutdown: every tunnel finished and every byte handed to the kernel, so exiting
    /// loses nothing (sockets still lingering for their peer's FIN are closed by the exit).
    fn quiescent(&self) -> bool {
        self.conns.iter().flatten().all(|c| {
            c.tunnel.is_closed()
                && [&c.client, &c.origin].iter().all(|ep| {
                    ep.out.is_empty()
                        && !ep.sending
                        && matches!(ep.stage, Stage::ShutSent | Stage::Closing | Stage::Closed)
                })
        })
    }

    fn arm_accept(&mut self, i: usize) {
        if let Some(l) = &self.listeners[i] {
            let fd = l.as_raw_fd();
            let t = tag(Op::Accept, Side::Client, i as u32, 0);
            self.accepting[i] = Some(self.ring.accept(fd, t));
        }
    }

    fn dispatch(&mut self, c: Completion, now: Instant) {
        let (op, side, idx, gen) = untag(c.tag);
        match op {
            Op::Tick => {
                if !c.more {
                    self.tick_armed = false;
                }
                self.on_tick(now);
            }
            Op::Accept => self.on_accept(idx as usize, c, now),
            Op::Cancel => {}
            _ => {
                let live =
                    matches!(self.conns.get(idx as usize), Some(Some(conn)) if conn.gen == gen);
                if !live {
                    // Cannot happen while slots outlive their operations; keep the buffers.
                    self.release(c);
                    return;
                }
                self.on_conn_completion(op, side, idx, c, now);
                self.pump(idx, now);
            }
        }
    }

    fn release(&mut self, c: Completion) {
        if let Some(b) = c.buf {
            self.ring.recycle(b);
        }
        if let Some(TxBuf::Pool { buf, .. }) = c.tx {
            self.ring.recycle(buf);
        }
    }

    fn on_tick(&mut self, now: Instant) {
        if !self.tick_armed {
            self.ring.tick(TICK, tag(Op::Tick, Side::Client, 0, 0));
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
        for idx in 0..self.conns.len() as u32 {
            let Some(Some(conn)) = self.conns.get_mut(idx as usize) else {
                continue;
            };
            let mut touched = false;
            if conn.tunnel.poll_timeout().is_some_and(|t| t <= now) {
                conn.tunnel.handle_timeout(now);
                touched = true;
            }
            for ep in [&mut conn.client, &mut conn.origin] {
                let tearing_down = matches!(ep.stage, Stage::Draining | Stage::ShutSent);
                if tearing_down && ep.linger_until.is_some_and(|t| t <= now) {
                    ep.stage = Stage::Closing;
                    touched = true;
                }
            }
            if touched {
                self.pump(idx, now);
            }
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        info!(worker = self.id, open = self.live, "shutting down");
        self.stop_by = Some(now + self.shutdown_timeout);
        // Stop accepting: cancel each accept; its listener is closed when the accept's last
        // completion arrives (I2), and new connections are refused from then on.
        for i in 0..self.listeners.len() {
            match self.accepting[i] {
                Some(op) => self
                    .ring
                    .cancel(op, tag(Op::Cancel, Side::Client, i as u32, 0)),
                None => self.listeners[i] = None,
            }
        }
        for idx in 0..self.conns.len() as u32 {
            if let Some(Some(conn)) = self.conns.get_mut(idx as usize) {
                conn.tunnel.handle_shutdown(now);
                self.pump(idx, now);
            }
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
            Some(fd) if self.stop_by.is_none() => self.open_conn(fd, now),
            Some(_) => {}
            None => {
                if self.stop_by.is_none() && c.result != -libc::ECANCELED {
                    warn!(worker = self.id, errno = -c.result, "accept failed");
                }
            }
        }
        // Re-armed at once unless it failed (then at the next tick, so EMFILE cannot spin).
        if self.accepting[i].is_none() && c.result >= 0 && self.stop_by.is_none() {
            self.arm_accept(i);
        }
    }

    fn open_conn(&mut self, fd: OwnedFd, now: Instant) {
        let _ = socket2::SockRef::from(&fd).set_nodelay(true);
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.gens.push(0);
                (self.conns.len() - 1) as u32
            }
        };
        let gen = self.gens[idx as usize];
        let mut client = Endpoint::new(Some(fd), self.backpressure);
        let origin = Endpoint::new(None, self.backpressure);
        client.recv = Some(
            self.ring
                .recv(client.raw(), tag(Op::Recv, Side::Client, idx, gen)),
        );
        client.ops += 1;
        self.conns[idx as usize] = Some(Conn {
            gen,
            tunnel: Tunnel::new(self.tunnel, now),
            routes: self.routes.clone(),
            client,
            origin,
            started: now,
        });
        self.live += 1;
    }

    fn on_conn_completion(&mut self, op: Op, side: Side, idx: u32, c: Completion, now: Instant) {
        let linger = self.tunnel.close_timeout;
        let Some(Some(conn)) = self.conns.get_mut(idx as usize) else {
            return;
        };
        let gen = conn.gen;
        let ring = &mut self.ring;
        let (ep, other) = match side {
            Side::Client => (&mut conn.client, &mut conn.origin),
            Side::Origin => (&mut conn.origin, &mut conn.client),
        };
        if !c.more {
            ep.ops -= 1;
        }
        match op {
            Op::Recv => {
                if !c.more {
                    ep.recv = None;
                }
                if let Some(buf) = c.buf {
                    let len = buf.len();
                    if c.result <= 0 || ep.stage != Stage::Open {
                        ring.recycle(buf);
                    } else {
                        let slot = ring.slot(&buf);
                        let range = match side {
                            Side::Client => {
                                let r = conn.tunnel.handle_client_bytes(
                                    &mut slot[HEADROOM..HEADROOM + len],
                                    &conn.routes,
                                    now,
                                );
                                (HEADROOM + r.start)..(HEADROOM + r.end)
                            }
                            Side::Origin => {
                                conn.tunnel
                                    .handle_origin_bytes(slot, HEADROOM..HEADROOM + len, now)
                            }
                        };
                        if range.is_empty() {
                            ring.recycle(buf);
                        } else {
                            let tx = TxBuf::Pool {
                                buf,
                                start: range.start,
                                end: range.end,
                            };
                            queue(ring, other, ep, tx, flip(side), idx, gen);
                        }
                    }
                    if !c.more {
                        arm_recv(ring, ep, other.flow.is_paused(), side, idx, gen);
                    }
                    return;
                }
                match c.result {
                    0 => {
                        ep.eof = true;
                        if ep.stage == Stage::Open {
                            match side {
                                Side::Client => conn.tunnel.handle_client_eof(now),
                                Side::Origin => conn.tunnel.handle_origin_eof(now),
                            }
                        } else if ep.stage == Stage::ShutSent {
                            ep.stage = Stage::Closing;
                        }
                    }
                    r if r == -libc::ENOBUFS => {
                        debug!(worker = self.id, slot = idx, "receive buffers exhausted");
                        ep.starved = true;
                        self.starved.push((idx, gen, side));
                    }
                    r if r == -libc::ECANCELED => {}
                    r if r < 0 => {
                        ep.eof = true;
                        if ep.stage == Stage::Open {
                            match side {
                                Side::Client => conn.tunnel.handle_client_error(r, now),
                                Side::Origin => conn.tunnel.handle_origin_error(r, now),
                            }
                        } else {
                            ep.stage = Stage::Closing;
                        }
                    }
                    _ => {}
                }
                if !c.more {
                    arm_recv(ring, ep, other.flow.is_paused(), side, idx, gen);
                }
            }
            Op::Send => {
                ep.sending = false;
                let Some(mut tx) = c.tx else { return };
                if c.result > 0 {
                    let n = c.result as usize;
                    tx.advance(n);
                    if ep.stage == Stage::Draining {
                        // A slow peer that still reads keeps its bytes: the deadline counts
                        // from the last progress.
                        ep.linger_until = Some(now + linger);
                    }
                    if ep.flow.sent(n) {
                        // Bytes queued to `ep` drained below half the cap: read its source again.
                        arm_recv(ring, other, ep.flow.is_paused(), flip(side), idx, gen);
                    }
                    if !tx.is_empty() {
                        ep.out.push_front(tx);
                    } else if let TxBuf::Pool { buf, .. } = tx {
                        ring.recycle(buf);
                    }
                } else {
                    if let TxBuf::Pool { buf, .. } = tx {
                        ring.recycle(buf);
                    }
                    drop_queue(ring, ep);
                    let err = if c.result == 0 {
                        -libc::EPIPE
                    } else {
                        c.result
                    };
                    if ep.stage == Stage::Open {
                        ep.eof = true;
                        match side {
                            Side::Client => conn.tunnel.handle_client_error(err, now),
                            Side::Origin => conn.tunnel.handle_origin_error(err, now),
                        }
                    }
                    if ep.stage != Stage::Closed {
                        ep.stage = Stage::Closing;
                    }
                }
            }
            Op::Connect => {
                ep.connect = None;
                if c.result == 0 {
                    ep.up = true;
                    conn.tunnel.handle_origin_connected(now);
                    arm_recv(ring, ep, other.flow.is_paused(), side, idx, gen);
                } else {
                    conn.tunnel.handle_origin_connect_failed(c.result, now);
                }
            }
            Op::Shutdown => {
                if ep.eof && ep.stage == Stage::ShutSent {
                    ep.stage = Stage::Closing;
                }
            }
            Op::Close | Op::Cancel | Op::Tick | Op::Accept => {}
        }
    }

    /// Acts on the tunnel's intents and moves both endpoints' queues and teardown forward;
    /// frees the slot when everything is closed.
    fn pump(&mut self, idx: u32, now: Instant) {
        let Some(Some(conn)) = self.conns.get_mut(idx as usize) else {
            return;
        };
        let gen = conn.gen;
        let ring = &mut self.ring;
        let linger = self.tunnel.close_timeout;
        while let Some(intent) = conn.tunnel.poll_intent() {
            match intent {
                Intent::ConnectOrigin(addr) => match origin_socket(addr) {
                    Ok(fd) => {
                        let raw = fd.as_raw_fd();
                        conn.origin.fd = Some(fd);
                        let t = tag(Op::Connect, Side::Origin, idx, gen);
                        conn.origin.connect = Some(ring.connect(raw, addr, t));
                        conn.origin.ops += 1;
                    }
                    Err(e) => {
                        let errno = e.raw_os_error().unwrap_or(libc::EIO);
                        conn.tunnel.handle_origin_connect_failed(errno, now);
                    }
                },
                Intent::SendClient(v) => {
                    let tx = TxBuf::Owned { vec: v, start: 0 };
                    queue(
                        ring,
                        &mut conn.client,
                        &mut conn.origin,
                        tx,
                        Side::Client,
                        idx,
                        gen,
                    );
                }
                Intent::SendOrigin(v) => {
                    let tx = TxBuf::Owned { vec: v, start: 0 };
                    queue(
                        ring,
                        &mut conn.origin,
                        &mut conn.client,
                        tx,
                        Side::Origin,
                        idx,
                        gen,
                    );
                }
                Intent::CloseOrigin => request_close(&mut conn.origin, now + linger),
                Intent::CloseClient => request_close(&mut conn.client, now + linger),
                Intent::AbortOrigin => {
                    if let Some(op) = conn.origin.connect {
                        ring.cancel(op, tag(Op::Cancel, Side::Origin, idx, gen));
                    }
                    if conn.origin.stage != Stage::Closed {
                        conn.origin.stage = Stage::Closing;
                    }
                }
                Intent::Finished => log_close(self.id, conn, now),
            }
        }
        if conn.tunnel.is_closed() {
            request_close(&mut conn.client, now + linger);
            request_close(&mut conn.origin, now + linger);
        }
        advance(ring, &mut conn.client, Side::Client, idx, gen, now, linger);
        advance(ring, &mut conn.origin, Side::Origin, idx, gen, now, linger);
        if conn.is_done() {
            self.conns[idx as usize] = None;
            self.gens[idx as usize] = gen.wrapping_add(1) & 0xFF_FFFF;
            self.free.push(idx);
            self.live -= 1;
        }
    }

    fn unstarve(&mut self) {
        let starved = std::mem::take(&mut self.starved);
        for (idx, gen, side) in starved {
            let Some(Some(conn)) = self.conns.get_mut(idx as usize) else {
                continue;
            };
            if conn.gen != gen {
                continue;
            }
            let (ep, other) = match side {
                Side::Client => (&mut conn.client, &mut conn.origin),
                Side::Origin => (&mut conn.origin, &mut conn.client),
            };
            ep.starved = false;
            arm_recv(&mut self.ring, ep, other.flow.is_paused(), side, idx, gen);
        }
    }
}

/// Exponentially weighted share of loop time spent working rather than waiting.
#[derive(Default)]
struct Duty {
    busy_share: f32,
}

impl Duty {
    /// Below this share of busy time the worker polls before sleeping.
    const IDLE_BELOW: f32 = 0.25;

    fn record(&mut self, busy: Duration, waited: Duration) {
        let total = (busy + waited).as_secs_f32();
        if total > 0.0 {
            let share = busy.as_secs_f32() / total;
            self.busy_share += (share - self.busy_share) / 16.0;
        }
    }

    fn mostly_idle(&self) -> bool {
        self.busy_share < Self::IDLE_BELOW
    }
}

fn flip(side: Side) -> Side {
    match side {
        Side::Client => Side::Origin,
        Side::Origin => Side::Client,
    }
}

/// Queues `tx` to `to` (whose socket is `to_side`), or drops it if `to` is closing; if that
/// pushes `to` over its cap, stops reading `from`.
fn queue(
    ring: &mut Ring,
    to: &mut Endpoint,
    from: &mut Endpoint,
    tx: TxBuf,
    to_side: Side,
    idx: u32,
    gen: u32,
) {
    // Once a close is requested nothing more may be queued: the tunnel emits every send to a
    // socket before the intent that closes it.
    if to.stage != Stage::Open {
        if let TxBuf::Pool { buf, .. } = tx {
            ring.recycle(buf);
        }
        return;
    }
    let paused = to.flow.queue(tx.len());
    to.out.push_back(tx);
    if paused {
        if let Some(op) = from.recv {
            ring.cancel(op, tag(Op::Cancel, flip(to_side), idx, gen));
        }
    }
    kick_send(ring, to, to_side, idx, gen);
}

fn kick_send(ring: &mut Ring, ep: &mut Endpoint, side: Side, idx: u32, gen: u32) {
    if ep.sending || !ep.up || ep.fd.is_none() {
        return;
    }
    if let Some(tx) = ep.out.pop_front() {
        ring.send(ep.raw(), tx, tag(Op::Send, side, idx, gen));
        ep.sending = true;
        ep.ops += 1;
    }
}

/// Arms `ep`'s recv if it should read: connected, not at EOF, not closing, not starved, and —
/// unless it only drains input to discard it — `dest_paused` false (the endpoint what `ep` reads
/// goes to is under its backpressure cap).
fn arm_recv(ring: &mut Ring, ep: &mut Endpoint, dest_paused: bool, side: Side, idx: u32, gen: u32) {
    let reading = matches!(ep.stage, Stage::Open | Stage::Draining | Stage::ShutSent);
    let discarding = ep.stage != Stage::Open;
    if ep.recv.is_some() || !ep.up || ep.eof || ep.starved || !reading || ep.fd.is_none() {
        return;
    }
    if !discarding && dest_paused {
        return;
    }
    ep.recv = Some(ring.recv(ep.raw(), tag(Op::Recv, side, idx, gen)));
    ep.ops += 1;
}

fn drop_queue(ring: &mut Ring, ep: &mut Endpoint) {
    while let Some(tx) = ep.out.pop_front() {
        ep.flow.sent(tx.len());
        if let TxBuf::Pool { buf, .. } = tx {
            ring.recycle(buf);
        }
    }
}

/// Starts an endpoint's teardown. Draining its queue may go on while the peer keeps reading;
/// `deadline` (pushed back on every send that makes progress) ends it when the peer stops, so a
/// peer that never reads cannot hold the slot forever.
fn request_close(ep: &mut Endpoint, deadline: Instant) {
    match ep.stage {
        Stage::Open if ep.up => {
            ep.stage = Stage::Draining;
            ep.linger_until = Some(deadline);
        }
        Stage::Open => ep.stage = Stage::Closing,
        _ => {}
    }
}

/// Moves one endpoint's sends and teardown forward.
fn advance(
    ring: &mut Ring,
    ep: &mut Endpoint,
    side: Side,
    idx: u32,
    gen: u32,
    now: Instant,
    linger: Duration,
) {
    if ep.fd.is_none() && ep.stage != Stage::Closed {
        if ep.stage == Stage::Closing || ep.stage == Stage::Draining {
            ep.stage = Stage::Closed;
        }
        return;
    }
    kick_send(ring, ep, side, idx, gen);
    if ep.stage == Stage::Draining && ep.out.is_empty() && !ep.sending {
        if ep.eof {
            ep.stage = Stage::Closing;
        } else {
            ring.shutdown(ep.raw(), libc::SHUT_WR, tag(Op::Shutdown, side, idx, gen));
            ep.ops += 1;
            ep.stage = Stage::ShutSent;
            ep.linger_until = Some(now + linger);
            // Keep reading (and discarding) until the peer's EOF, so close() sends no RST
            // that could destroy bytes the peer has not read yet.
            arm_recv(ring, ep, false, side, idx, gen);
        }
    }
    if ep.stage == Stage::Closing {
        drop_queue(ring, ep);
        if ep.ops > 0 && !ep.cancelled {
            // Ends the recv and any send stuck on a peer that stopped reading; their final
            // completions still count in `ops`, and the fd is closed only after them (I2).
            ring.cancel_fd(ep.raw(), tag(Op::Cancel, side, idx, gen));
            ep.cancelled = true;
            ep.recv = None;
        }
        if ep.ops == 0 {
            if let Some(fd) = ep.fd.take() {
                ring.close(fd, tag(Op::Close, side, idx, gen));
                ep.ops += 1;
            }
            ep.stage = Stage::Closed;
        }
    }
}

fn origin_socket(addr: std::net::SocketAddr) -> std::io::Result<OwnedFd> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.nonblocking().cloexec(),
        Some(socket2::Protocol::TCP),
    )?;
    s.set_nodelay(true)?;
    Ok(s.into())
}

fn log_close(worker: usize, conn: &Conn, now: Instant) {
    let stats = conn.tunnel.stats();
    let route = conn
        .tunnel
        .route()
        .and_then(|i| conn.routes.routes().get(i))
        .map_or("-", |r| r.name.as_str());
    let rec = conn.tunnel.close_record();
    info!(
        target: "ringway::tunnel",
        worker,
        route,
        to_origin = stats.to_origin,
        to_client = stats.to_client,
        duration_ms = now.duration_since(conn.started).as_millis() as u64,
        closed_by = ?rec.map(|r| r.by),
        reason = ?rec.map(|r| r.reason),
        "tunnel closed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duty_polls_only_while_mostly_idle() {
        let mut d = Duty::default();
        assert!(d.mostly_idle(), "a fresh worker may poll");
        let us = Duration::from_micros;
        for _ in 0..64 {
            d.record(us(5), us(40)); // quiet tunnel: 11 % busy
        }
        assert!(d.mostly_idle());
        for _ in 0..64 {
            d.record(us(80), us(20)); // loaded worker: 80 % busy
        }
        assert!(
            !d.mostly_idle(),
            "a busy worker leaves its idle gaps to the peers"
        );
        for _ in 0..64 {
            d.record(us(2), us(100));
        }
        assert!(d.mostly_idle(), "load gone: polling comes back");
    }

    #[test]
    fn tags_round_trip() {
        for op in [
            Op::Tick,
            Op::Accept,
            Op::Recv,
            Op::Send,
            Op::Connect,
            Op::Shutdown,
            Op::Close,
            Op::Cancel,
        ] {
            for side in [Side::Client, Side::Origin] {
                let t = tag(op, side, 0xFFFF_FFFF, 0xAB_CDEF);
                assert_eq!(untag(t), (op, side, 0xFFFF_FFFF, 0xAB_CDEF));
            }
        }
    }
}
