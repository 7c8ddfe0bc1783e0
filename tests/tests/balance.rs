//! `[engine] balance`: long-lived tunnels spread over the workers by load. The pattern that
//! piles tunnels on one worker under SO_REUSEPORT hashing is churn: 2,000 tunnels open over two
//! workers, the ones that landed on worker 1 end (short-lived), the rest stay (long-lived), and
//! 1,000 more arrive. Hashing splits the newcomers evenly, so worker 0 ends with about three
//! times worker 1's tunnels; with balancing, worker 0 hands its fresh connections to worker 1
//! (`IORING_OP_MSG_RING`) until both are within the gap. Every tunnel still carries bytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringway_e2e::origin::Origin;
use ringway_e2e::server::Ringway;
use ringway_e2e::STEP;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const FIRST: usize = 2000;
const MORE: usize = 1000;

/// Open tunnels per worker, keyed by the client's address (from `ringctl --json tunnels`).
fn tunnels_by_client(server: &Ringway) -> HashMap<SocketAddr, usize> {
    let out = server.ringctl(&["--json", "tunnels"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ringctl --json tunnels: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let list = v
        .get("tunnels")
        .and_then(|t| t.as_array())
        .unwrap_or_else(|| panic!("no tunnel list in {v}"));
    list.iter()
        .filter_map(|t| {
            let client = t.get("client")?.as_str()?.parse().ok()?;
            let worker = t.get("id")?.as_str()?.split('-').next()?.parse().ok()?;
            Some((client, worker))
        })
        .collect()
}

/// Waits (bounded) until ringway lists exactly `n` tunnels.
async fn await_tunnels(server: &Ringway, n: usize) -> HashMap<SocketAddr, usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = tunnels_by_client(server);
        if t.len() == n || Instant::now() > deadline {
            assert_eq!(t.len(), n, "tunnels listed");
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn open(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let s = timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect within the bound")
            .expect("connect");
        v.push(s);
    }
    v
}

/// Runs the churn pattern; returns the tunnels per worker at the end.
async fn spread(balance: bool) -> [usize; 2] {
    ringway_e2e::raise_fd_limit(4 * (FIRST + MORE) as u64);
    let echo = Origin::echo().await;
    let config = format!(
        "workers = 2\n[engine]\nbalance = {balance}\n[[listener]]\naddr = \"127.0.0.1:0\"\nmode = \"tcp\"\norigin = \"{}\"\n",
        echo.addr
    );
    let server = Ringway::start(&config);
    let first = open(server.addr(), FIRST).await;
    let placed = await_tunnels(&server, FIRST).await;
    // The short-lived ones: every tunnel that landed on worker 1 ends.
    let mut kept = Vec::new();
    for s in first {
        let at = placed.get(&s.local_addr().unwrap()).copied();
        if at != Some(1) {
            kept.push(s);
        }
    }
    let kept_n = kept.len();
    await_tunnels(&server, kept_n).await;
    kept.extend(open(server.addr(), MORE).await);
    let end = await_tunnels(&server, kept_n + MORE).await;
    let mut per = [0usize; 2];
    for w in end.values() {
        per[*w] += 1;
    }
    // Every tunnel, wherever it landed, carries bytes both ways.
    for s in kept.iter_mut().step_by(97) {
        s.write_all(b"ping").await.unwrap();
        let mut four = [0u8; 4];
        timeout(STEP, s.read_exact(&mut four))
            .await
            .expect("echo within the bound")
            .unwrap();
        assert_eq!(&four, b"ping");
    }
    eprintln!("balance = {balance}: tunnels per worker {per:?} (kept {kept_n} of {FIRST}, then {MORE} more)");
    per
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_piles_long_lived_tunnels_on_one_worker_and_balancing_spreads_them() {
    let [a, b] = spread(false).await;
    assert!(
        a > 2 * b,
        "without balancing the survivors' worker keeps them and gets half the newcomers: {a} vs {b}"
    );
    let [a, b] = spread(true).await;
    let (hi, lo) = (a.max(b), a.min(b));
    assert!(
        hi - lo <= 8.max(lo / 8) + 16,
        "balanced within the gap: {a} vs {b}"
    );
}

#[test]
fn balance_and_steer_by_cpu_are_alternatives() {
    let err = ringway_e2e::server::refused_config(
        "[engine]\nbalance = true\nsteer_by_cpu = true\n[[listener]]\naddr = \"127.0.0.1:0\"\n",
    );
    assert!(
        err.contains("engine.balance") && err.contains("engine.steer_by_cpu"),
        "{err}"
    );
}
