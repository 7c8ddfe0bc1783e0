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

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{timeout, timeout_at, Instant};

use crate::raw::{upgrade_request, Frame, RawError, SAMPLE_ACCEPT};
use crate::STEP;

/// Largest response head accepted while upgrading.
const MAX_HEAD: usize = 64 * 1024;

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

/// A WebSocket connection over a socket whose receive buffer was set before connecting, so the
/// window it advertises stays small and the server's sends to it stall as soon as it stops
/// reading. It parses what it reads itself (unmasked server frames, RFC 6455 §5.2).
#[derive(Debug)]
pub struct SlowConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// How a drained connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Eof,
    Reset,
}

impl SlowConn {
    /// Connects to 127.0.0.1:`port` with SO_RCVBUF = `rcvbuf` (set before the connect), sends a
    /// valid upgrade for `path` and checks the 101 answer; the whole within [`STEP`].
    pub async fn upgrade(port: u16, path: &str, rcvbuf: u32) -> Result<SlowConn, String> {
        match timeout(STEP, Self::try_upgrade(port, path, rcvbuf)).await {
            Ok(r) => r,
            Err(_) => Err(format!("upgrade to {path} not answered within {STEP:?}")),
        }
    }

    async fn try_upgrade(port: u16, path: &str, rcvbuf: u32) -> Result<SlowConn, String> {
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        socket
            .set_recv_buffer_size(rcvbuf)
            .map_err(|e| format!("SO_RCVBUF: {e}"))?;
        let stream = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;
        let mut conn = SlowConn {
            stream,
            buf: Vec::new(),
        };
        conn.stream
            .write_all(upgrade_request(path).as_bytes())
            .await
            .map_err(|e| format!("send upgrade: {e}"))?;
        let head = loop {
            if let Some(end) = conn.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = conn.buf.drain(..end + 4).collect();
                break String::from_utf8_lossy(&head).into_owned();
            }
            if conn.buf.len() > MAX_HEAD {
                return Err(format!("no end of response head in {MAX_HEAD} bytes"));
            }
            let mut chunk = [0u8; 4096];
            match conn.stream.read(&mut chunk).await {
                Ok(0) => return Err("closed before the response head".into()),
                Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("reading the response head: {e}")),
            }
        };
        let accept = format!(
            "sec-websocket-accept: {}",
            SAMPLE_ACCEPT.to_ascii_lowercase()
        );
        if !head.starts_with("HTTP/1.1 101") || !head.to_ascii_lowercase().contains(&accept) {
            return Err(format!("upgrade refused or malformed:\n{head}"));
        }
        Ok(conn)
    }

    /// Reads one server frame, failing at `deadline`.
    pub async fn read_frame_by(&mut self, deadline: Instant) -> Result<Frame, RawError> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf)? {
                self.buf.drain(..used);
                return Ok(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            match timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Err(RawError::Timeout(Duration::ZERO)),
                Ok(Err(e)) => return Err(RawError::Io(e)),
                Ok(Ok(0)) => {
                    return Err(RawError::Closed {
                        buffered: std::mem::take(&mut self.buf),
                    })
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads and discards everything until EOF or a reset, at most until `deadline`. Returns how
    /// it ended and how many bytes were read; `Err` with the byte count if the connection was
    /// still open at `deadline` or failed otherwise.
    pub async fn drain(&mut self, deadline: Instant) -> Result<(Ending, u64), (String, u64)> {
        let mut total = self.buf.len() as u64;
        self.buf.clear();
        let mut chunk = vec![0u8; 64 * 1024];
        // Bounded by the deadline; the count bound only guards against a spinning read.
        for _ in 0..10_000_000u32 {
            match timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Err(("still open".into(), total)),
                Ok(Ok(0)) => return Ok((Ending::Eof, total)),
                Ok(Ok(n)) => total += n as u64,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Ok((Ending::Reset, total))
                }
                Ok(Err(e)) => return Err((format!("read error: {e}"), total)),
            }
        }
        Err(("read never ended".into(), total))
    }
}

/// A server frame from the front of `buf` (see [`crate::raw::parse_frame`]); a masked one is an
/// error (RFC 6455 §5.1: a server never masks).
fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, RawError> {
    match crate::raw::parse_frame(buf)? {
        Some((frame, _)) if frame.masked => Err(RawError::Malformed("masked server frame".into())),
        other => Ok(other),
    }
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
        match SlowConn::upgrade(plan.port, &plan.path, plan.rcvbuf).await {
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
            let mut stream = conn.stream;
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
            drop(stream);
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
