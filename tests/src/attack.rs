//! Clients that attack a server's fairness and memory rather than its parser: WebSocket clients
//! that upgrade with a tiny receive buffer and then never read (so everything the server sends
//! them stalls), floods of masked frames from such clients run on their own thread, an origin
//! that counts its connections and sees them end, and the server's resident memory.
//!
//! Invariants: every connect, read and wait is bounded; an [`Attack`]'s thread stops at
//! [`Attack::stop`], on drop, or at its hard deadline at the latest, and closes every attacking
//! socket when it does; a [`CountingOrigin`]'s tasks end when it is dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{timeout, timeout_at, Instant};

use crate::raw::RawConn;

/// `VmRSS` of process `pid` in bytes, from `/proc/PID/status`; `None` once it is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `count` copies of a masked client frame (FIN, `opcode`, `payload`) back to back, to be written
/// in one go.
pub fn frames(opcode: u8, payload: &[u8], count: usize) -> Vec<u8> {
    let one = crate::raw::masked(opcode, payload);
    one.repeat(count)
}

/// What to attack with.
#[derive(Debug, Clone)]
pub struct AttackPlan {
    pub port: u16,
    pub path: String,
    /// SO_RCVBUF of every attacking socket.
    pub rcvbuf: u32,
    /// Clients that write masked binary frames of `frame_bytes` payload without pause and never
    /// read.
    pub slow_readers: usize,
    pub frame_bytes: usize,
    /// Clients that write masked Pings of `ping_bytes` payload (at most 125) without pause and
    /// never read.
    pub ping_flooders: usize,
    pub ping_bytes: usize,
    /// The attack thread stops by itself this long after it started, whatever happens.
    pub hard_limit: Duration,
}

/// Counts of what the attack wrote, read after it stopped.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttackStats {
    /// Bytes the slow readers' sockets accepted.
    pub slow_bytes: u64,
    /// Bytes the ping flooders' sockets accepted.
    pub ping_bytes: u64,
}

/// A running attack: its connections live on their own thread and tokio runtime, so the attack
/// does not share a scheduler with the clients that measure the server.
#[derive(Debug)]
pub struct Attack {
    stop: Arc<AtomicBool>,
    slow_bytes: Arc<AtomicU64>,
    ping_bytes: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Connections the attack upgraded.
    pub connections: usize,
}

impl Attack {
    /// Upgrades every attacking connection (one after another, each within [`STEP`]), then
    /// starts every flood at once and returns. `Err` names the first connection that failed to
    /// upgrade.
    pub async fn start(plan: AttackPlan) -> Result<Attack, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let slow_bytes = Arc::new(AtomicU64::new(0));
        let ping_bytes = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<usize, String>>();
        let thread = {
            let (stop, slow_bytes, ping_bytes) =
                (stop.clone(), slow_bytes.clone(), ping_bytes.clone());
            std::thread::Builder::new()
                .name("attack".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("attack runtime");
                    rt.block_on(run_attack(plan, stop, slow_bytes, ping_bytes, ready_tx));
                })
                .expect("spawn attack thread")
        };
        let mut attack = Attack {
            stop,
            slow_bytes,
            ping_bytes,
            thread: Some(thread),
            connections: 0,
        };
        // 56 upgrades within STEP each at most; the thread answers long before.
        match timeout(Duration::from_secs(120), ready_rx).await {
            Ok(Ok(Ok(n))) => {
                attack.connections = n;
                Ok(attack)
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err("attack thread ended without reporting".into()),
            Err(_) => Err("attack connections not up within 120 s".into()),
        }
    }

    /// Stops every flood, closes every attacking socket, and returns what was written.
    pub fn stop(mut self) -> AttackStats {
        self.halt();
        AttackStats {
            slow_bytes: self.slow_bytes.load(Ordering::Relaxed),
            ping_bytes: self.ping_bytes.load(Ordering::Relaxed),
        }
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // The thread checks `stop` every 20 ms and aborts its tasks; it cannot block longer.
            let _ = t.join();
        }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.halt();
    }
}

async fn run_attack(
    plan: AttackPlan,
    stop: Arc<AtomicBool>,
    slow_bytes: Arc<AtomicU64>,
    ping_bytes: Arc<AtomicU64>,
    ready: tokio::sync::oneshot::Sender<Result<usize, String>>,
) {
    let hard_deadline = Instant::now() + plan.hard_limit;
    let total = plan.slow_readers + plan.ping_flooders;
    let mut conns = Vec::with_capacity(total);
    for i in 0..total {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match RawConn::upgrade_small_window(plan.port, &plan.path, plan.rcvbuf).await {
            Ok(c) => conns.push(c),
            Err(e) => {
                let _ = ready.send(Err(format!(
                    "attack connection {i} of {total} did not upgrade: {e}"
                )));
                return;
            }
        }
    }
    let slow_batch = Arc::new(frames(0x2, &vec![0x5a; plan.frame_bytes], 16));
    let ping_batch = Arc::new(frames(0x9, &vec![0xa5; plan.ping_bytes.min(125)], 64));
    let mut tasks = JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let (batch, counter) = if i < plan.slow_readers {
            (slow_batch.clone(), slow_bytes.clone())
        } else {
            (ping_batch.clone(), ping_bytes.clone())
        };
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut conn = conn;
            let stream = conn.stream_mut();
            // Ends at `stop` (or when aborted while a write is blocked) or when the server
            // closes; the count bound is far beyond what the hard limit allows.
            for _ in 0..100_000_000u64 {
                if stop.load(Ordering::Relaxed) || Instant::now() >= hard_deadline {
                    break;
                }
                if stream.write_all(&batch).await.is_err() {
                    break;
                }
                counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            // Keep the socket open (never read) until the attack ends.
            let _ = timeout_at(hard_deadline, std::future::pending::<()>()).await;
            drop(conn);
        });
    }
    let _ = ready.send(Ok(total));
    while !stop.load(Ordering::Relaxed) && Instant::now() < hard_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// An echo origin that counts the connections it accepted and those whose echo loop ended (EOF
/// or error from the tunnel: the server closed or reset its side).
#[derive(Debug)]
pub struct CountingOrigin {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl CountingOrigin {
    pub async fn echo() -> CountingOrigin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind origin on 127.0.0.1:0");
        let addr = listener.local_addr().expect("origin local_addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let (acc, end) = (accepted.clone(), ended.clone());
        let accept = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                acc.fetch_add(1, Ordering::SeqCst);
                while conns.try_join_next().is_some() {}
                let end = end.clone();
                conns.spawn(async move {
                    let (mut rd, mut wr) = stream.into_split();
                    let _ = timeout(Duration::from_secs(180), async {
                        let _ = tokio::io::copy(&mut rd, &mut wr).await;
                        let _ = wr.shutdown().await;
                    })
                    .await;
                    end.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        CountingOrigin {
            addr,
            accepted,
            ended,
            accept,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections whose echo loop ended (the tunnel's side reached EOF or failed).
    pub fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }
}

impl Drop for CountingOrigin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// 64 bytes that differ for every tunnel and round trip.
pub fn payload(tunnel: usize, round: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.push(tunnel as u8);
    p.extend_from_slice(&round.to_be_bytes());
    p.extend((0..55u64).map(|i| (round.wrapping_mul(31) ^ (i * 7 + tunnel as u64)) as u8));
    p
}

/// ARCHITECTURE.md "Memory bound" per tunnel: two directions of at most 2 × (backpressure + 4
/// receive buffers) + 16 KiB of queue memory, and 4 KiB of fixed state.
pub fn tunnel_memory_bound(backpressure: u64, buffer_size: u64) -> u64 {
    let per_direction = 2 * (backpressure + 4 * buffer_size) + 16 * 1024;
    2 * per_direction + 4 * 1024
}

/// What the normal tunnels and the fresh connections saw during an attack, and the server's
/// memory; [`UnderAttack::judge`] prints it and asserts the fairness and memory promises.
pub struct UnderAttack {
    /// Which attack, for the messages.
    pub name: &'static str,
    /// Round trips of the normal tunnels under attack.
    pub latencies: Vec<Duration>,
    /// Why a normal tunnel stopped measuring early (starved or corrupted).
    pub failures: Vec<String>,
    /// Each fresh connection tried during the attack: its time, or why it failed.
    pub probes: Vec<Result<Duration, String>>,
    pub p99_limit: Duration,
    pub baseline_rss: u64,
    pub max_rss: u64,
    /// The receive pool: buffers × buffer_size.
    pub pool: u64,
    /// Every connection the test opened to the server.
    pub opened: usize,
    /// The memory bound of one of them.
    pub per_tunnel: u64,
    /// What the attackers did, for the report line.
    pub attackers: String,
}

impl UnderAttack {
    pub fn judge(mut self) {
        self.latencies.sort();
        let l = &self.latencies;
        let p99 = (!l.is_empty()).then(|| l[(l.len() * 99).div_ceil(100) - 1]);
        let bound = self.baseline_rss + self.pool + self.opened as u64 * self.per_tunnel;
        let probe_failures: Vec<&String> = self
            .probes
            .iter()
            .filter_map(|p| p.as_ref().err())
            .collect();
        eprintln!(
            "{}: {} round trips, p50 {:?}, p99 {p99:?}, max {:?}; {} of {} new connections \
             served; RSS baseline {} KiB, max {} KiB, bound {} KiB ({} connections); {}",
            self.name,
            l.len(),
            l.get(l.len() / 2),
            l.last(),
            self.probes.len() - probe_failures.len(),
            self.probes.len(),
            self.baseline_rss / 1024,
            self.max_rss / 1024,
            bound / 1024,
            self.opened,
            self.attackers,
        );
        assert!(
            self.failures.is_empty(),
            "{}: normal tunnels starved or corrupted: {:?}",
            self.name,
            self.failures
        );
        assert!(
            !self.probes.is_empty() && probe_failures.is_empty(),
            "{}: new connections were not served: {probe_failures:?}",
            self.name
        );
        let p99 = p99.unwrap_or_else(|| panic!("{}: no round trip completed", self.name));
        assert!(
            p99 < self.p99_limit,
            "{}: p99 round trip {p99:?} (limit {:?}, {} samples)",
            self.name,
            self.p99_limit,
            l.len()
        );
        assert!(
            self.max_rss < bound,
            "{}: server RSS reached {} KiB; bound {} KiB = baseline {} KiB + buffers × \
             buffer_size + {} tunnels × {} KiB",
            self.name,
            self.max_rss / 1024,
            bound / 1024,
            self.baseline_rss / 1024,
            self.opened,
            self.per_tunnel / 1024
        );
    }
}

/// The shape of the starvation attack, shared by `starvation.rs` and `tls_starvation.rs` so the
/// two run the same attack over ws:// and wss://.
pub mod shape {
    use std::time::Duration;

    use crate::config::ConfigToml;

    /// `[engine] buffers`, `buffer_size` and `[limits] backpressure_bytes`, set explicitly so the
    /// memory bound can be computed from them.
    pub const BUFFERS: u64 = 1024;
    pub const BUFFER_SIZE: u64 = 65_536;
    pub const BACKPRESSURE: u64 = 262_144;
    /// Clients that write and never read.
    pub const SLOW_READERS: usize = 50;
    pub const NORMAL_TUNNELS: usize = 4;
    /// SO_RCVBUF of every client that never reads (the kernel doubles it).
    pub const TINY_RCVBUF: u32 = 2048;
    /// The attack runs this long before the measurement starts, so it is at full strength.
    pub const RAMP: Duration = Duration::from_millis(500);
    /// How long the normal tunnels measure round trips under attack.
    pub const WINDOW: Duration = Duration::from_secs(5);
    /// A round trip that takes longer counts as hung (and ends that tunnel's measurement).
    pub const ROUND_TRIP_BOUND: Duration = Duration::from_secs(1);
    pub const P99_LIMIT: Duration = Duration::from_millis(10);
    /// New connections tried during the window, one per this interval.
    pub const PROBE_EVERY: Duration = Duration::from_secs(1);
    pub const PROBE_BOUND: Duration = Duration::from_secs(2);

    /// `config` plus an `[engine]` section with the attack's pool size.
    pub fn with_engine(config: &ConfigToml) -> String {
        format!(
            "{}[engine]\nbuffers = {BUFFERS}\nbuffer_size = {BUFFER_SIZE}\n",
            config.build()
        )
    }
}
