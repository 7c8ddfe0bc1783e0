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
