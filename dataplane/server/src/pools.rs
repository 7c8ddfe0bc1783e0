//! Origin pools: which origin a new tunnel connects to, from the health each worker sees.
//!
//! A route with `origins` has a pool ([`OriginPool`]); for each new tunnel [`Pools::order`]
//! gives the origins to try, best first, by the pool's policy among the eligible ones (the
//! tunnel tries the next when a connect fails, so a client sees 502 only once every eligible
//! origin refused). Backups come after every other origin.
//!
//! Health here is passive, from live traffic: a refused or failed connect, a connect that timed
//! out, and a tunnel the origin ended before its first byte (while the client was still there)
//! are bad signals; a first byte from the origin is a good one. Latency is watched too:
//! each origin keeps its last `WINDOW` connect times (a connect that lost a race or timed out
//! counts with the time it had taken so far), and an origin with a share of its connects over
//! `OUTLIER_FACTOR` times its peers' typical connect time (its p95 and p99 many times theirs;
//! see `OUTLIER_SHARE`) is ejected although it never failed: the gray failure of a path that stalls some connects. Damping: an origin is
//! ejected after `EJECT_AFTER` bad signals in a row, for `BASE_EJECTION`, doubled for each
//! ejection that follows a short return (up to `MAX_EJECTION`), so an origin that flaps changes
//! state a bounded number of times per minute; once it has stayed in rotation for
//! `STABLE_FOR` since its return, its next ejection is back to the base. When it returns it is on probation: one bad signal ejects
//! it again. Panic threshold: when more than the pool's `max_ejected_percent` of its origins are
//! ejected, every origin is tried again (those in good standing first), so ejection never turns
//! a partial outage into a total one; `max_ejected_percent = 0` turns health off for a pool. Every change of state is logged once, with its evidence.
//!
//! Active health checks (`health_check`, run by [`crate::health`]) add a second view: an
//! origin that fails `CHECK_DOWN_AFTER` checks in a row is out of rotation until it passes
//! `CHECK_UP_AFTER` in a row, whatever live traffic says (the panic threshold counts it as out
//! too). The two views are independent: a check that passes does not end an ejection.
//!
//! Limits: an origin with `max_connections` or `max_new_per_second` is skipped while it is at
//! either (not ejected: it is busy, not sick); when every origin is, the order is empty and the
//! tunnel gets 503 with Retry-After before any connect. A route's `max_tunnels` is checked by the
//! connection before it asks for an order.
//!
//! State is per worker (no lock, no sharing): each worker learns from its own tunnels, so an
//! origin is ejected on a worker after that worker saw the failures. Counts of open tunnels per
//! origin (for `least-connections` and `power-of-two-choices`) are per worker too, and so are the
//! limits: each worker enforces its share of a limit, `ceil(limit / workers)`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringctl::OriginReport;

use ringway_proto::route::{OriginPool, Policy, PoolOrigin, Race};
use tracing::{info, warn};

/// Bad signals in a row that eject an origin.
pub const EJECT_AFTER: u8 = 3;
/// How long a first ejection lasts.
pub const BASE_EJECTION: Duration = Duration::from_secs(5);
/// The longest ejection, however often an origin flaps.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);
/// In rotation this long since its last return, an origin's next ejection is back to the base
/// (a count of good connects would not do: an origin that flaps every second has many).
const STABLE_FOR: Duration = Duration::from_secs(60);
/// Health checks failed in a row that take an origin out of rotation ...
const CHECK_DOWN_AFTER: u8 = 3;
/// ... and passed in a row that bring it back.
const CHECK_UP_AFTER: u8 = 2;
/// Connect times kept per origin.
const WINDOW: usize = 128;
/// Connect times an origin (and each peer it is compared with) needs before it is judged.
const MIN_SAMPLES: usize = 16;
/// An origin is a latency outlier when at least `OUTLIER_SHARE` percent (and `OUTLIER_MIN_SLOW`)
/// of its recent connects took over `OUTLIER_FACTOR` times its peers' typical connect time (the
/// median of their p90s) and over `OUTLIER_FLOOR`: its p95 and p99 are many times its peers'.
const OUTLIER_FACTOR: u32 = 5;
const OUTLIER_FLOOR: Duration = Duration::from_millis(8);
const OUTLIER_SHARE: usize = 5;
const OUTLIER_MIN_SLOW: usize = 3;
/// Connect racing's automatic delay: twice the pool's typical p90 connect time (the lower median
/// of its origins' p90s), within these bounds ...
const RACE_MIN: Duration = Duration::from_millis(10);
const RACE_MAX: Duration = Duration::from_secs(1);
/// ... and this until the pool has connect times.
const RACE_UNKNOWN: Duration = Duration::from_millis(100);

/// Marks a sample of a connect given up (it lost a race or timed out): the time it had taken,
/// a lower bound of its own.
const GIVEN_UP: u32 = 1 << 31;

/// An origin's latest connect times, in microseconds (with `GIVEN_UP` for those given up).
#[derive(Debug)]
struct Window {
    samples: Box<[u32; WINDOW]>,
    len: usize,
    next: usize,
    /// Samples since the latency was last judged.
    unjudged: u32,
}

impl Default for Window {
    fn default() -> Window {
        Window {
            samples: Box::new([0; WINDOW]),
            len: 0,
            next: 0,
            unjudged: 0,
        }
    }
}

fn percentile(mut v: Vec<u32>, q: usize) -> Option<u32> {
    if v.len() < MIN_SAMPLES {
        return None;
    }
    v.sort_unstable();
    Some(v[(v.len() * q / 100).min(v.len() - 1)])
}

impl Window {
    fn push(&mut self, took: Duration, completed: bool) {
        let micros = u32::try_from(took.as_micros())
            .unwrap_or(u32::MAX)
            .min(GIVEN_UP - 1);
        self.samples[self.next] = if completed { micros } else { micros | GIVEN_UP };
        self.next = (self.next + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
        self.unjudged += 1;
    }

    /// The `q`-th percentile of every sample, once there are `MIN_SAMPLES`.
    fn percentile(&self, q: usize) -> Option<u32> {
        let v = self.samples[..self.len].iter().map(|s| s & !GIVEN_UP);
        percentile(v.collect(), q)
    }

    /// The `q`-th percentile of the connects that completed (what a healthy connect takes: the
    /// race delay must not follow the connects it gave up), once there are `MIN_SAMPLES`.
    fn completed_percentile(&self, q: usize) -> Option<u32> {
        let v = self.samples[..self.len]
            .iter()
            .filter(|s| *s & GIVEN_UP == 0);
        percentile(v.copied().collect(), q)
    }

    fn clear(&mut self) {
        self.len = 0;
        self.next = 0;
        self.unjudged = 0;
    }
}

/// What one worker knows of one origin.
#[derive(Debug)]
struct OriginState {
    /// Tunnels open to it.
    open: u32,
    bad_run: u8,
    /// When it last came back from an ejection.
    returned: Option<Instant>,
    /// Ejected until then.
    ejected_until: Option<Instant>,
    /// How long its next ejection lasts.
    next_ejection: Duration,
    ejections: u32,
    /// `max_new_per_second`'s token bucket: tokens, and when it was last refilled (`None`: the
    /// origin has no rate limit).
    tokens: f64,
    refilled: Option<Instant>,
    connect_times: Window,
    /// For `ringctl stats` and `/metrics`: connects completed and failed, and the completed
    /// ones' times (µs) since the start.
    connects: u64,
    connect_failures: u64,
    connect_hist: Option<Box<Histogram<u64>>>,
    /// Active health checks: failed and passed in a row, and whether they have it out.
    check_fails: u8,
    check_passes: u8,
    check_down: bool,
}

impl Default for OriginState {
    fn default() -> OriginState {
        OriginState {
            open: 0,
            bad_run: 0,
            returned: None,
            ejected_until: None,
            next_ejection: BASE_EJECTION,
            ejections: 0,
            tokens: 0.0,
            refilled: None,
            connect_times: Window::default(),
            connects: 0,
            connect_failures: 0,
            connect_hist: None,
            check_fails: 0,
            check_passes: 0,
            check_down: false,
        }
    }
}

/// A worker's view of every pooled origin.
#[derive(Debug)]
pub struct Pools {
    worker: usize,
    /// Workers in the process: each enforces `ceil(limit / workers)` of a limit.
    workers: u32,
    origins: HashMap<SocketAddr, OriginState>,
    /// xorshift state for `power-of-two-choices`.
    rng: u64,
}

impl Pools {
    pub fn new(worker: usize, workers: usize) -> Pools {
        Pools {
            worker,
            workers: u32::try_from(workers.max(1)).unwrap_or(u32::MAX),
            origins: HashMap::new(),
            rng: 0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
        }
    }

    /// This worker's share of a limit.
    pub fn share(&self, limit: u32) -> u32 {
        limit.div_ceil(self.workers).max(1)
    }

    /// Whether `o` is under its limits at `now` (its connections, its new-connection rate).
    fn has_room(&mut self, o: &PoolOrigin, now: Instant) -> bool {
        let (conns, rate) = (
            o.max_connections.map(|m| self.share(m)),
            o.max_new_per_second.map(|m| self.share(m)),
        );
        let s = self.origins.entry(o.addr).or_default();
        if conns.is_some_and(|max| s.open >= max) {
            return false;
        }
        if let Some(rate) = rate {
            let rate = f64::from(rate);
            let since = s.refilled.map_or(1.0, |t| (now - t).as_secs_f64());
            s.tokens = (s.tokens + since * rate).min(rate);
            s.refilled = Some(now);
            if s.tokens < 1.0 {
                return false;
            }
        }
        true
    }

    /// Whether `addr` is in rotation at `now` (neither ejected nor failing its checks), without
    /// ending an ejection that ran out (the next order does that, and logs it).
    pub fn in_rotation(&self, addr: SocketAddr, now: Instant) -> bool {
        self.origins
            .get(&addr)
            .is_none_or(|s| !s.check_down && s.ejected_until.is_none_or(|u| u <= now))
    }

    /// Connections this worker may still open to `addr` under its `max_connections` share in
    /// `pool` (`usize::MAX` without a limit).
    pub fn room(&self, pool: &OriginPool, addr: SocketAddr) -> usize {
        let Some(max) = pool
            .origins
            .iter()
            .find(|o| o.addr == addr)
            .and_then(|o| o.max_connections)
        else {
            return usize::MAX;
        };
        self.share(max).saturating_sub(self.open(addr)) as usize
    }

    /// A connect to `addr` starts: one more open (until [`Pools::released`]) and, if it has a
    /// rate limit, one token spent.
    pub fn connecting(&mut self, addr: SocketAddr) {
        let s = self.origins.entry(addr).or_default();
        s.open += 1;
        if s.refilled.is_some() {
            s.tokens -= 1.0;
        }
    }

    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Whether `addr` may be chosen at `now` (an ejection that has run out ends here, logged).
    fn eligible(&mut self, addr: SocketAddr, now: Instant) -> bool {
        let worker = self.worker;
        let s = self.origins.entry(addr).or_default();
        if s.check_down {
            return false;
        }
        match s.ejected_until {
            Some(until) if until > now => false,
            Some(_) => {
                s.ejected_until = None;
                s.returned = Some(now);
                // Probation: one more bad signal ejects it again.
                s.bad_run = EJECT_AFTER - 1;
                info!(worker, origin = %addr, ejections = s.ejections, "origin back in rotation after its ejection");
                true
            }
            None => true,
        }
    }

    /// The origins a new tunnel on `pool` tries, in order; empty when every origin it could
    /// use is at its limits (the tunnel then gets 503).
    pub fn order(&mut self, pool: &OriginPool, now: Instant) -> Vec<SocketAddr> {
        // `max_ejected_percent = 0`: health never changes the order.
        let health = pool.max_ejected_percent > 0;
        let eligible: Vec<bool> = pool
            .origins
            .iter()
            .map(|o| !health || self.eligible(o.addr, now))
            .collect();
        let room: Vec<bool> = pool.origins.iter().map(|o| self.has_room(o, now)).collect();
        let out = eligible.iter().filter(|e| !**e).count();
        // Panic threshold: past it, every origin is tried.
        let panic = out * 100 > pool.origins.len() * usize::from(pool.max_ejected_percent)
            || eligible.iter().all(|e| !e);
        let pick = |i: usize| room[i] && (panic || eligible[i]);
        let mut primaries: Vec<(u32, usize)> = pool
            .origins
            .iter()
            .enumerate()
            .filter(|&(i, o)| !o.backup && pick(i))
            .map(|(i, o)| (self.open(o.addr), i))
            .collect();
        match pool.policy {
            Policy::Failover => {}
            Policy::LeastConnections => primaries.sort(),
            Policy::PowerOfTwoChoices => {
                if primaries.len() >= 2 {
                    let n = primaries.len() as u64;
                    let a = (self.random() % n) as usize;
                    let b = (a + 1 + (self.random() % (n - 1)) as usize) % primaries.len();
                    let first = if primaries[b].0 < primaries[a].0 {
                        b
                    } else {
                        a
                    };
                    let chosen = primaries.remove(first);
                    primaries.sort();
                    primaries.insert(0, chosen);
                }
            }
        }
        let backups = pool
            .origins
            .iter()
            .enumerate()
            .filter(|&(i, o)| o.backup && pick(i))
            .map(|(i, _)| i);
        let mut order: Vec<usize> = primaries.into_iter().map(|(_, i)| i).collect();
        order.extend(backups);
        if panic {
            // Every origin is tried, those in good standing first: two dead origins at the
            // head of a pool of three must not fail every tunnel.
            order.sort_by_key(|&i| !eligible[i]);
        }
        order.into_iter().map(|i| pool.origins[i].addr).collect()
    }

    fn open(&self, addr: SocketAddr) -> u32 {
        self.origins.get(&addr).map_or(0, |s| s.open)
    }

    /// A connect to `addr` succeeded: a good signal.
    pub fn connected(&mut self, addr: SocketAddr) {
        self.origins.entry(addr).or_default().connects += 1;
    }

    /// A tunnel to `addr` received its first byte from it: the good signal that ends a run of
    /// bad ones (a connect alone is not: an origin that accepts and then resets every tunnel
    /// before answering is as broken as one that refuses).
    pub fn answered(&mut self, addr: SocketAddr) {
        self.origins.entry(addr).or_default().bad_run = 0;
    }

    /// A tunnel to `addr` (or its connect) ended.
    pub fn released(&mut self, addr: SocketAddr) {
        if let Some(s) = self.origins.get_mut(&addr) {
            s.open = s.open.saturating_sub(1);
        }
    }

    /// A connect to `addr` failed (`why`: the error, in words): a bad signal; the
    /// `EJECT_AFTER`-th in a row ejects it.
    pub fn connect_failed(&mut self, addr: SocketAddr, why: &str, now: Instant) {
        let s = self.origins.entry(addr).or_default();
        s.connect_failures += 1;
        s.bad_run = s.bad_run.saturating_add(1);
        if s.ejected_until.is_some() || s.bad_run < EJECT_AFTER {
            return;
        }
        let evidence = format!("{} connect failures in a row, the last: {why}", s.bad_run);
        self.eject(addr, &evidence, now);
    }

    /// A connect to `addr`, an origin of `pool`, took `took` (or had taken that long when it
    /// lost a race or timed out): kept, and every few samples the origin's p99 is compared with
    /// its peers'; an outlier is ejected.
    pub fn connect_time(
        &mut self,
        pool: &OriginPool,
        addr: SocketAddr,
        took: Duration,
        completed: bool,
        now: Instant,
    ) {
        let s = self.origins.entry(addr).or_default();
        if completed {
            let h = s
                .connect_hist
                .get_or_insert_with(|| Box::new(crate::stats::histogram()));
            h.saturating_record(took.as_micros().max(1) as u64);
        }
        if s.ejected_until.is_some() {
            // A connect begun before the ejection: its time says nothing of the origin's return.
            return;
        }
        s.connect_times.push(took, completed);
        if s.connect_times.unjudged < 4 {
            return;
        }
        s.connect_times.unjudged = 0;
        if s.connect_times.len < MIN_SAMPLES {
            return;
        }
        let mut peers: Vec<u32> = pool
            .origins
            .iter()
            .filter(|o| o.addr != addr)
            .filter_map(|o| self.origins.get(&o.addr)?.connect_times.percentile(90))
            .collect();
        if peers.is_empty() {
            return;
        }
        peers.sort_unstable();
        let typical = peers[(peers.len() - 1) / 2];
        let over = typical
            .saturating_mul(OUTLIER_FACTOR)
            .max(OUTLIER_FLOOR.as_micros() as u32);
        let s = self.origins.entry(addr).or_default();
        let w = &s.connect_times;
        let times = || w.samples[..w.len].iter().map(|t| t & !GIVEN_UP);
        let slow = times().filter(|&t| t > over).count();
        if slow >= OUTLIER_MIN_SLOW && slow * 100 >= w.len * OUTLIER_SHARE {
            let evidence = format!(
                "{slow} of its last {} connects took over {:.1} ms ({}x its peers' median p90 \
                 of {:.2} ms), the slowest {:.1} ms",
                w.len,
                f64::from(over) / 1000.0,
                OUTLIER_FACTOR,
                f64::from(typical) / 1000.0,
                f64::from(times().max().unwrap_or(0)) / 1000.0,
            );
            self.eject(addr, &evidence, now);
        }
    }

    /// A warm connection to `addr` connected after `took`: kept in its figures only (see
    /// [`crate::warm`]).
    pub fn warm_connect_time(&mut self, addr: SocketAddr, took: Duration) {
        let s = self.origins.entry(addr).or_default();
        let h = s
            .connect_hist
            .get_or_insert_with(|| Box::new(crate::stats::histogram()));
        h.saturating_record(took.as_micros().max(1) as u64);
    }

    /// Forgets the origins no pool of `routes` lists any more (their figures leave `ringctl
    /// stats` and `/metrics`).
    pub fn retain(&mut self, routes: &ringway_proto::route::RouteTable) {
        let listed: std::collections::HashSet<SocketAddr> = routes
            .routes()
            .iter()
            .filter_map(|r| r.pool.as_ref())
            .flat_map(|p| p.origins.iter().map(|o| o.addr))
            .collect();
        self.origins.retain(|a, _| listed.contains(a));
    }

    /// How long a connect on `pool` waits before racing the next origin (`None`: no racing).
    pub fn race_delay(&self, pool: &OriginPool) -> Option<Duration> {
        match pool.race {
            Race::Off => None,
            Race::After(d) => Some(d),
            Race::Auto => {
                let mut p90s: Vec<u32> = pool
                    .origins
                    .iter()
                    .filter_map(|o| {
                        self.origins
                            .get(&o.addr)?
                            .connect_times
                            .completed_percentile(90)
                    })
                    .collect();
                if p90s.is_empty() {
                    return Some(RACE_UNKNOWN);
                }
                p90s.sort_unstable();
                let typical = Duration::from_micros(u64::from(p90s[(p90s.len() - 1) / 2]));
                Some((typical * 2).clamp(RACE_MIN, RACE_MAX))
            }
        }
    }

    /// Takes `addr` out of rotation (damped: each ejection after a short return lasts twice as
    /// long as the one before), logging why once.
    fn eject(&mut self, addr: SocketAddr, evidence: &str, now: Instant) {
        let worker = self.worker;
        let s = self.origins.entry(addr).or_default();
        if s.returned.is_some_and(|r| now - r >= STABLE_FOR) {
            s.next_ejection = BASE_EJECTION;
        }
        let ejection = s.next_ejection;
        s.ejected_until = Some(now + ejection);
        s.ejections += 1;
        s.next_ejection = (ejection * 2).min(MAX_EJECTION);
        s.connect_times.clear();
        warn!(
            worker,
            origin = %addr,
            evidence,
            ejected_for_ms = ejection.as_millis() as u64,
            ejections = s.ejections,
            "origin ejected"
        );
    }

    /// A health check of `addr` ended: passed (`Ok`) or failed (why), with its connect time
    /// if its connect completed (a connect time like any other).
    pub fn check_result(
        &mut self,
        addr: SocketAddr,
        outcome: Result<(), String>,
        connect_took: Option<Duration>,
    ) {
        let worker = self.worker;
        let s = self.origins.entry(addr).or_default();
        if let Some(t) = connect_took {
            s.connect_times.push(t, true);
        }
        match outcome {
            Ok(()) => {
                s.check_fails = 0;
                s.check_passes = s.check_passes.saturating_add(1);
                if s.check_down && s.check_passes >= CHECK_UP_AFTER {
                    s.check_down = false;
                    info!(worker, origin = %addr, passed_in_a_row = s.check_passes, "origin passes its health checks again; back in rotation");
                }
            }
            Err(why) => {
                s.check_passes = 0;
                s.check_fails = s.check_fails.saturating_add(1);
                if !s.check_down && s.check_fails >= CHECK_DOWN_AFTER {
                    s.check_down = true;
                    s.ejections += 1;
                    let evidence = format!(
                        "{} health checks failed in a row, the last: {why}",
                        s.check_fails
                    );
                    warn!(worker, origin = %addr, evidence, "origin fails its health checks; out of rotation");
                }
            }
        }
    }

    /// What this worker knows of each origin, for `ringctl stats` and `/metrics`.
    pub fn report(&self, now: Instant) -> Vec<OriginReport> {
        let mut out: Vec<OriginReport> = self
            .origins
            .iter()
            .map(|(addr, s)| OriginReport {
                origin: addr.to_string(),
                open: u64::from(s.open),
                ejected: s.check_down || s.ejected_until.is_some_and(|u| u > now),
                ejections: u64::from(s.ejections),
                connects: s.connects,
                connect_failures: s.connect_failures,
                connect_time: s
                    .connect_hist
                    .as_deref()
                    .map(ringctl::encode_histogram)
                    .unwrap_or_default(),
                ..OriginReport::default()
            })
            .collect();
        out.sort_by(|a, b| a.origin.cmp(&b.origin));
        out
    }

    #[cfg(test)]
    fn is_ejected(&self, addr: SocketAddr, now: Instant) -> bool {
        self.origins
            .get(&addr)
            .and_then(|s| s.ejected_until)
            .is_some_and(|u| u > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn pool(policy: Policy, ports: &[(u16, bool)]) -> OriginPool {
        OriginPool {
            origins: ports
                .iter()
                .map(|&(p, backup)| PoolOrigin {
                    addr: addr(p),
                    backup,
                    max_connections: None,
                    max_new_per_second: None,
                })
                .collect(),
            policy,
            max_ejected_percent: 50,
            race: Race::Auto,
            check: None,
            warm: 0,
            warm_max_age: Duration::from_secs(30),
        }
    }

    #[test]
    fn failover_goes_in_order_with_backups_last_and_skips_the_ejected() {
        let t = Instant::now();
        let mut p = Pools::new(0, 1);
        let pool = pool(Policy::Failover, &[(3, true), (1, false), (2, false)]);
        assert_eq!(p.order(&pool, t), [addr(1), addr(2), addr(3)]);
        for _ in 0..EJECT_AFTER {
            p.connect_failed(addr(1), "refused", t);
        }
        assert!(p.is_ejected(addr(1), t));
        assert_eq!(
            p.order(&pool, t),
            [addr(2), addr(3)],
            "1 of 3 out: under 50 %"
        );
        // Back after its ejection, on probation: one failure ejects it again, for twice as long.
        let back = t + BASE_EJECTION;
        assert_eq!(p.order(&pool, back), [addr(1), addr(2), addr(3)]);
        p.connect_failed(addr(1), "refused", back);
        assert!(p.is_ejected(addr(1), back + BASE_EJECTION));
        assert!(!p.is_ejected(addr(1), back + 2 * BASE_EJECTION));
    }

    #[test]
    fn past_the_panic_threshold_every_origin_is_tried() {
        let t = Instant::now();
        let mut p = Pools::new(0, 1);
        let pool = pool(Policy::Failover, &[(1, false), (2, false), (3, false)]);
        for a in [1, 2] {
            for _ in 0..EJECT_AFTER {
                p.connect_failed(addr(a), "refused", t);
            }
        }
        assert_eq!(
            p.order(&pool, t),
            [addr(3), addr(1), addr(2)],
            "2 of 3 out is over 50 %: every origin is tried, the one in good standing first"
        );
        let mut off = pool.clone();
        off.max_ejected_percent = 0;
        assert_eq!(
            p.order(&off, t),
            [addr(1), addr(2), addr(3)],
            "0 %: health is off"
        );
    }

    #[test]
    fn least_connections_and_two_choices_prefer_the_less_loaded() {
        let t = Instant::now();
        let mut p = Pools::new(1, 1);
        let lc = pool(
            Policy::LeastConnections,
            &[(1, false), (2, false), (3, false)],
        );
        for _ in 0..5 {
            p.connecting(addr(1));
        }
        p.connecting(addr(2));
        assert_eq!(p.order(&lc, t), [addr(3), addr(2), addr(1)]);
        let p2c = pool(
            Policy::PowerOfTwoChoices,
            &[(1, false), (2, false), (3, false)],
        );
        let mut firsts = HashMap::new();
        for _ in 0..300 {
            *firsts.entry(p.order(&p2c, t)[0]).or_insert(0) += 1;
        }
        // Origin 1 (5 open) only wins a draw against itself, which two distinct draws exclude.
        assert_eq!(firsts.get(&addr(1)), None, "{firsts:?}");
        assert!(firsts[&addr(3)] > firsts[&addr(2)], "{firsts:?}");
    }

    #[test]
    fn a_flapping_origin_changes_state_a_bounded_number_of_times() {
        // An origin that fails three connects, returns, fails again, ... for ten minutes: the
        // ejections double (5 s, 10 s, 20 s, ...) up to 300 s, so it is ejected at most 8
        // times in the ten minutes rather than once per return.
        let t0 = Instant::now();
        let mut p = Pools::new(0, 1);
        let pool = pool(Policy::Failover, &[(1, false), (2, false), (3, false)]);
        let mut now = t0;
        let mut ejections = 0;
        while now < t0 + Duration::from_secs(600) {
            if p.order(&pool, now).contains(&addr(1)) {
                let was = p.is_ejected(addr(1), now);
                p.connect_failed(addr(1), "reset", now);
                if !was && p.is_ejected(addr(1), now) {
                    ejections += 1;
                }
            }
            now += Duration::from_millis(100);
        }
        assert!(
            (5..=8).contains(&ejections),
            "{ejections} ejections in 10 minutes"
        );
    }

    #[test]
    fn an_origin_up_a_second_and_down_a_second_is_damped_too() {
        // Many good connects while it is up do not reset its damping; a minute in rotation does.
        let t0 = Instant::now();
        let mut p = Pools::new(0, 1);
        let pool = pool(Policy::Failover, &[(1, false), (2, false), (3, false)]);
        let (mut now, mut ejections) = (t0, 0);
        while now < t0 + Duration::from_secs(600) {
            let up = (now - t0).as_secs() % 2 == 0;
            if p.order(&pool, now).contains(&addr(1)) {
                match up {
                    true => {
                        p.connected(addr(1));
                        p.answered(addr(1));
                    }
                    false => {
                        let was = p.is_ejected(addr(1), now);
                        p.connect_failed(addr(1), "refused", now);
                        ejections += usize::from(!was && p.is_ejected(addr(1), now));
                    }
                }
            }
            now += Duration::from_millis(20);
        }
        assert!((5..=8).contains(&ejections), "{ejections} ejections");
        // Healthy for a minute after its last return: the next ejection is short again.
        let calm = now + MAX_EJECTION + STABLE_FOR;
        assert!(p.order(&pool, now + MAX_EJECTION).contains(&addr(1)));
        for _ in 0..EJECT_AFTER {
            p.connect_failed(addr(1), "refused", calm);
        }
        assert!(p.is_ejected(addr(1), calm + BASE_EJECTION - Duration::from_millis(1)));
        assert!(!p.is_ejected(addr(1), calm + BASE_EJECTION));
    }

    #[test]
    fn an_origin_at_its_limits_is_skipped_and_a_full_pool_orders_nothing() {
        let t = Instant::now();
        // Two workers: each enforces ceil(3 / 2) = 2 connections and 2 new per second.
        let mut p = Pools::new(0, 2);
        let mut full = pool(Policy::Failover, &[(1, false), (2, false)]);
        full.origins[0].max_connections = Some(3);
        full.origins[1].max_new_per_second = Some(3);
        assert_eq!(p.share(3), 2);
        for _ in 0..2 {
            assert_eq!(p.order(&full, t)[0], addr(1));
            p.connecting(addr(1));
        }
        assert_eq!(p.order(&full, t), [addr(2)], "1 is at its 2 connections");
        p.connecting(addr(2));
        p.connecting(addr(2));
        assert!(
            p.order(&full, t).is_empty(),
            "2 spent its 2 new connections this second"
        );
        assert!(
            !p.is_ejected(addr(1), t) && !p.is_ejected(addr(2), t),
            "busy, not sick"
        );
        let later = t + Duration::from_millis(500);
        assert_eq!(
            p.order(&full, later),
            [addr(2)],
            "a token back after half a second"
        );
        p.released(addr(1));
        assert_eq!(p.order(&full, later), [addr(1), addr(2)]);
    }

    #[test]
    fn an_origin_that_stalls_some_connects_is_ejected_as_a_latency_outlier() {
        let t = Instant::now();
        let mut p = Pools::new(0, 1);
        let pool = pool(Policy::Failover, &[(1, false), (2, false), (3, false)]);
        let fast = Duration::from_micros(80);
        // Peers connect in 60-100 µs; origin 1 does too, but 3 of its connects in 10 hang
        // until a race (20 ms) takes them over. It never fails outright.
        for i in 0..40u64 {
            for peer in [2, 3] {
                p.connect_time(
                    &pool,
                    addr(peer),
                    fast + Duration::from_micros(i % 40),
                    true,
                    t,
                );
            }
        }
        assert!(!p.is_ejected(addr(2), t) && !p.is_ejected(addr(3), t));
        let mut ejected_after = None;
        for i in 0..60u32 {
            let (took, completed) = match i % 10 {
                2 | 5 | 8 => (Duration::from_millis(20), false),
                _ => (fast, true),
            };
            p.connect_time(&pool, addr(1), took, completed, t);
            assert_eq!(
                p.race_delay(&pool),
                Some(RACE_MIN),
                "given-up connects do not count"
            );
            if p.is_ejected(addr(1), t) {
                ejected_after = Some(i + 1);
                break;
            }
        }
        let n = ejected_after.expect("the staller is ejected");
        assert!(n >= MIN_SAMPLES as u32 && n <= 24, "after {n} connects");
        assert_eq!(p.order(&pool, t), [addr(2), addr(3)]);
        // Back after its ejection with a clean record: fast connects keep it in.
        let back = t + BASE_EJECTION;
        assert_eq!(p.order(&pool, back)[0], addr(1));
        for _ in 0..40 {
            p.connect_time(&pool, addr(1), fast, true, back);
        }
        assert!(!p.is_ejected(addr(1), back));
    }

    #[test]
    fn a_uniformly_slower_pool_has_no_outlier_and_races_later() {
        let t = Instant::now();
        let mut p = Pools::new(0, 1);
        let pool = pool(Policy::Failover, &[(1, false), (2, false)]);
        assert_eq!(p.race_delay(&pool), Some(RACE_UNKNOWN), "no data yet");
        // A remote pool: every connect takes 30-34 ms. Nobody is an outlier, and races start
        // after about twice the p90.
        for i in 0..64u64 {
            for o in [1, 2] {
                p.connect_time(
                    &pool,
                    addr(o),
                    Duration::from_micros(30_000 + i * 60),
                    true,
                    t,
                );
            }
        }
        assert!(!p.is_ejected(addr(1), t) && !p.is_ejected(addr(2), t));
        let d = p.race_delay(&pool).unwrap();
        assert!(
            d > Duration::from_millis(60) && d < Duration::from_millis(70),
            "{d:?}"
        );
        let mut off = pool.clone();
        off.race = Race::Off;
        assert_eq!(p.race_delay(&off), None);
        off.race = Race::After(Duration::from_millis(7));
        assert_eq!(p.race_delay(&off), Some(Duration::from_millis(7)));
    }

    #[test]
    fn health_checks_take_an_origin_out_after_three_failures_and_back_after_two_passes() {
        let t = Instant::now();
        let mut p = Pools::new(0, 1);
        let pool = pool(Policy::Failover, &[(1, false), (2, false), (3, false)]);
        let fail = || Err("no answer within 1000 ms".to_string());
        p.check_result(addr(1), fail(), None);
        p.check_result(addr(1), Ok(()), Some(Duration::from_micros(90)));
        p.check_result(addr(1), fail(), None);
        p.check_result(addr(1), fail(), None);
        assert_eq!(p.order(&pool, t)[0], addr(1), "two in a row are not enough");
        p.check_result(addr(1), fail(), None);
        assert_eq!(p.order(&pool, t), [addr(2), addr(3)]);
        assert!(p
            .report(t)
            .iter()
            .any(|r| r.origin == addr(1).to_string() && r.ejected));
        p.check_result(addr(1), Ok(()), None);
        assert_eq!(
            p.order(&pool, t),
            [addr(2), addr(3)],
            "one pass is not enough"
        );
        p.check_result(addr(1), Ok(()), None);
        assert_eq!(p.order(&pool, t)[0], addr(1));
        // Out by its checks counts toward the panic threshold like an ejection.
        for a in [1, 2] {
            for _ in 0..CHECK_DOWN_AFTER {
                p.check_result(addr(a), fail(), None);
            }
        }
        assert_eq!(
            p.order(&pool, t).len(),
            3,
            "2 of 3 out: past 50 %, all are used"
        );
    }
}
