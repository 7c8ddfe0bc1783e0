//! Active health checks of pooled origins, through the worker's ring.
//!
//! A pool with `health_check` has each of its origins checked every `health_interval_ms` by
//! each worker (each worker keeps its own view of its origins, as with passive health; an
//! origin sees `workers` checks per interval). A check connects; `tcp` passes once the connect
//! completes, `postgres` then sends an `SSLRequest` and passes on an `S` or `N` (the server
//! accepts connections and starts backends; no credentials are needed and the server logs
//! nothing for a connection that ends after it). A check that has not passed within
//! `health_timeout_ms` fails. Results go to [`Pools::check_result`] (damped there: several
//! results in a row change an origin's state), and a check's connect time joins the origin's
//! connect times, so an idle origin has figures its peers are compared with.
//!
//! Invariant: a check's socket stays open until none of its ring operations (the connect or
//! the readability poll, and the deadline timer) is in flight; its slot is reused only then,
//! with a new generation in the operations' tags.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ringway_proto::route::{CheckKind, HealthCheck, RouteTable};
use ringway_uring::{OpId, Ring};

use crate::origin::tcp_socket;
use crate::pools::Pools;
use crate::slab::{vacant, Key};
use crate::token::{tag, Op, Side};

/// PostgreSQL's `SSLRequest`: length 8, request code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connecting,
    /// `postgres`: the `SSLRequest` is sent; waiting for the answer.
    Asking,
}

struct Check {
    addr: SocketAddr,
    kind: CheckKind,
    stream: TcpStream,
    gen: u32,
    started: Instant,
    timeout: Duration,
    stage: Stage,
    /// The connect or poll in flight.
    io: Option<OpId>,
    /// The deadline timer in flight.
    timer: Option<OpId>,
    connect_took: Option<Duration>,
    /// Decided; reported once nothing is in flight.
    outcome: Option<Result<(), String>>,
    /// Its remaining operations were cancelled, once decided.
    cancelled: bool,
}

/// One worker's health checks.
#[derive(Default)]
pub struct Checks {
    slots: Vec<Option<Check>>,
    gen: u32,
    /// When each checked origin's next check is due.
    due: HashMap<SocketAddr, Instant>,
}

impl Checks {
    /// Starts the checks that are due, for every pool of `routes` that has them; forgets
    /// origins no pool checks any more. `offset` spreads the workers' first checks.
    pub fn run_due(
        &mut self,
        routes: &RouteTable,
        ring: &mut Ring,
        offset: Duration,
        now: Instant,
    ) {
        let mut wanted: HashMap<SocketAddr, HealthCheck> = HashMap::new();
        for r in routes.routes() {
            let Some(pool) = &r.pool else { continue };
            let Some(check) = pool.check else { continue };
            for o in &pool.origins {
                wanted.entry(o.addr).or_insert(check);
            }
        }
        self.due.retain(|a, _| wanted.contains_key(a));
        if wanted.is_empty() {
            return;
        }
        let running: HashSet<SocketAddr> = self.slots.iter().flatten().map(|c| c.addr).collect();
        for (addr, check) in wanted {
            let due = self.due.entry(addr).or_insert(now + offset);
            if *due > now || running.contains(&addr) {
                continue;
            }
            *due = now + check.interval;
            self.start(addr, check, ring, now);
        }
    }

    fn start(&mut self, addr: SocketAddr, check: HealthCheck, ring: &mut Ring, now: Instant) {
        let stream: TcpStream = match tcp_socket(addr) {
            Ok(fd) => fd.into(),
            Err(e) => {
                tracing::debug!(origin = %addr, "health check socket: {e}");
                return;
            }
        };
        let key = vacant(&mut self.slots, &mut self.gen);
        let idx = key.idx as usize;
        let io = ring.connect(stream.as_raw_fd(), addr, tag(Op::Check, Side::Client, key));
        let timer = ring.timeout(check.timeout, tag(Op::Check, Side::Origin, key));
        self.slots[idx] = Some(Check {
            addr,
            kind: check.kind,
            stream,
            gen: self.gen,
            started: now,
            timeout: check.timeout,
            stage: Stage::Connecting,
            io: Some(io),
            timer: Some(timer),
            connect_took: None,
            outcome: None,
            cancelled: false,
        });
    }

    /// A check's operation completed: its I/O (`Side::Client`) or its deadline
    /// (`Side::Origin`).
    pub fn on_completion(
        &mut self,
        side: Side,
        key: Key,
        result: i32,
        ring: &mut Ring,
        pools: &mut Pools,
        now: Instant,
    ) {
        let Some(Some(c)) = self.slots.get_mut(key.idx as usize) else {
            return;
        };
        if c.gen != key.gen {
            return;
        }
        match side {
            Side::Origin => {
                c.timer = None;
                if c.outcome.is_none() {
                    let ms = c.timeout.as_millis();
                    c.outcome = Some(Err(format!("no answer within {ms} ms")));
                }
            }
            Side::Client => {
                c.io = None;
                if c.outcome.is_none() {
                    c.step(result, ring, key, now);
                }
            }
        }
        if c.outcome.is_none() {
            return;
        }
        if !c.cancelled {
            // Once: the completions that follow only finish it.
            c.cancelled = true;
            for op in [c.io, c.timer].into_iter().flatten() {
                ring.cancel(op, tag(Op::Cancel, Side::Client, key));
            }
        }
        if c.io.is_none() && c.timer.is_none() {
            if let Some(Check {
                addr,
                outcome: Some(outcome),
                connect_took,
                ..
            }) = self.slots[key.idx as usize].take()
            {
                pools.check_result(addr, outcome, connect_took);
            }
        }
    }

    /// Checks in flight.
    pub fn running(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}

impl Check {
    /// The connect or the poll completed with `result`.
    fn step(&mut self, result: i32, ring: &mut Ring, key: Key, now: Instant) {
        if result < 0 {
            let e = std::io::Error::from_raw_os_error(-result);
            self.outcome = Some(Err(e.to_string()));
            return;
        }
        match (self.stage, self.kind) {
            (Stage::Connecting, CheckKind::Tcp) => {
                self.connect_took = Some(now - self.started);
                self.outcome = Some(Ok(()));
            }
            (Stage::Connecting, CheckKind::Postgres) => {
                self.connect_took = Some(now - self.started);
                // Eight bytes into an empty socket buffer: sent at once.
                match std::io::Write::write(&mut &self.stream, &SSL_REQUEST) {
                    Ok(8) => {
                        self.stage = Stage::Asking;
                        let fd = self.stream.as_raw_fd();
                        self.io =
                            Some(ring.poll_readable_once(fd, tag(Op::Check, Side::Client, key)));
                    }
                    Ok(n) => self.outcome = Some(Err(format!("SSLRequest: only {n} bytes sent"))),
                    Err(e) => self.outcome = Some(Err(format!("SSLRequest: {e}"))),
                }
            }
            (Stage::Asking, _) => {
                let mut b = [0u8; 1];
                self.outcome = Some(match (&self.stream).read(&mut b) {
                    Ok(1) if b[0] == b'S' || b[0] == b'N' => Ok(()),
                    Ok(1) if b[0] == b'E' => Err("answered the SSLRequest with an error".into()),
                    Ok(1) => Err(format!(
                        "answered {:#04x}, not S or N: not PostgreSQL?",
                        b[0]
                    )),
                    Ok(_) => Err("closed without answering the SSLRequest".into()),
                    Err(e) => Err(format!("reading the answer: {e}")),
                });
            }
        }
    }
}
