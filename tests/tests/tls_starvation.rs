//! The starvation attack of `starvation.rs` over wss://: 50 TLS clients that write frames and
//! never read (2 KiB receive windows) and Ping floods from TLS clients that never read their
//! Pongs, one flood of full 125-byte Pings and one of empty Pings (the smallest records, where
//! a record's overhead and each buffer's bookkeeping weigh most against the bytes counted). On
//! one worker, normal wss tunnels must keep their echo p99 under 10 ms, new TLS connections must
//! be served, and the server's RSS must stay under the bound ARCHITECTURE.md states for TLS
//! tunnels ("Memory bound").
//!
//! Invariants: the server listens on port 0; every client socket has read and write timeouts;
//! attackers stop at a flag or a hard deadline, and a blocked write is ended by shutting the
//! socket down; every loop is bounded in count and time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_e2e::attack::shape::*;
use ringway_e2e::attack::{frames, payload, rss_bytes, tunnel_memory_bound, UnderAttack};
use ringway_e2e::config::ConfigToml;
use ringway_e2e::origin::Origin;
use ringway_e2e::server::Ringway;
use ringway_e2e::tls::TestPki;
use ringway_e2e::tls_ws::{client_config, TlsWs};

/// The TLS state ARCHITECTURE.md allows a tunnel on top of a plain one (rustls's session and
/// its buffer for one partial record).
const TLS_STATE: u64 = 32 * 1024;

/// Payload bytes of each flood's Pings: full-size and empty.
const PING_FLOODS: [usize; 2] = [125, 0];
const HARD_LIMIT: Duration = Duration::from_secs(30);
const NAME: &str = "localhost";

#[test]
fn slow_readers_and_ping_floods_over_tls_do_not_starve_a_worker() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let origin = rt.block_on(Origin::echo());
    let pki = TestPki::new();
    let leaf = pki.leaf("server", NAME, &[NAME]);
    let config = ConfigToml::echo(origin.addr)
        .workers(1)
        .tls(&leaf.toml())
        .limit("backpressure_bytes", BACKPRESSURE)
        .timeout("send_stall_ms", 60_000);
    let server = Ringway::start(&with_engine(&config));
    let port = server.port;
    let pid = server.pid();
    let tls = client_config(&pki.ca());
    let connect = |rcvbuf| TlsWs::connect(port, &tls, NAME, "/echo", rcvbuf, ROUND_TRIP_BOUND);

    let mut warm = connect(None).expect("a first tunnel");
    warm.round_trip(&payload(99, 0)).expect("a first echo");
    warm.close();
    let baseline = rss_bytes(pid).expect("read the server's VmRSS");
    let normal: Vec<TlsWs> = (0..NORMAL_TUNNELS)
        .map(|i| {
            let mut ws = connect(None).unwrap_or_else(|e| panic!("tunnel {i}: {e}"));
            ws.round_trip(&payload(i, u64::MAX))
                .unwrap_or_else(|e| panic!("tunnel {i} before the attack: {e}"));
            ws
        })
        .collect();

    // The attackers: upgraded first, then all driven by one thread with non-blocking sockets
    // (as `starvation.rs` drives its attackers on one thread), so they take at most one core
    // from the server and the measuring clients.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + HARD_LIMIT;
    let slow_batch = frames(0x2, &[0x5a; 300], 16);
    let mut attack = Vec::new();
    for i in 0..SLOW_READERS + PING_FLOODS.len() {
        let ws = connect(Some(TINY_RCVBUF))
            .unwrap_or_else(|e| panic!("attack connection {i} did not upgrade: {e}"));
        ws.set_nonblocking().expect("O_NONBLOCK");
        let batch = match i.checked_sub(SLOW_READERS) {
            None => slow_batch.clone(),
            Some(f) => frames(0x9, &vec![0xa5; PING_FLOODS[f]], 64),
        };
        attack.push(Some((ws, batch)));
    }
    let attacker = {
        let (stop, written) = (stop.clone(), written.clone());
        std::thread::spawn(move || {
            // Ends at `stop` or the deadline; the count bound is far beyond the deadline.
            for _ in 0..100_000_000u64 {
                if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    break;
                }
                let mut progress = 0;
                for slot in attack.iter_mut() {
                    let Some((ws, batch)) = slot else { continue };
                    match ws.feed(batch) {
                        Ok(n) => progress += n,
                        // The server closed the tunnel: hold nothing more for it.
                        Err(_) => *slot = None,
                    }
                }
                written.fetch_add(progress as u64, Ordering::Relaxed);
                if progress == 0 {
                    // Every socket is full: the server stopped reading them all.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            // Never read; the sockets close when the attack ends.
            drop(attack);
        })
    };

    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut max = 0u64;
            for _ in 0..2_000 {
                if !sampling.load(Ordering::Relaxed) {
                    break;
                }
                max = max.max(rss_bytes(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(25));
            }
            max
        })
    };

    std::thread::sleep(RAMP);
    let until = Instant::now() + WINDOW;
    let measurers: Vec<_> = normal
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                for round in 0..10_000_000u64 {
                    if Instant::now() >= until {
                        break;
                    }
                    let started = Instant::now();
                    if let Err(e) = ws.round_trip(&payload(i, round)) {
                        return (latencies, Some(format!("tunnel {i}, round {round}: {e}")));
                    }
                    latencies.push(started.elapsed());
                }
                ws.close();
                (latencies, None)
            })
        })
        .collect();
    let prober = {
        let tls = tls.clone();
        std::thread::spawn(move || {
            let mut results = Vec::new();
            for n in 0..16 {
                let next = Instant::now() + PROBE_EVERY;
                if next > until {
                    break;
                }
                let started = Instant::now();
                let result = TlsWs::connect(port, &tls, NAME, "/echo", None, PROBE_BOUND)
                    .and_then(|mut ws| {
                        ws.round_trip(&payload(200 + n, 0))?;
                        ws.close();
                        Ok(())
                    })
                    .and_then(|()| match started.elapsed() {
                        t if t <= PROBE_BOUND => Ok(t),
                        t => Err(format!("took {t:?}")),
                    })
                    .map_err(|e| format!("probe {n}: {e}"));
                results.push(result);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            results
        })
    };

    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    for m in measurers {
        let (l, failure) = m.join().expect("a measuring thread panicked");
        latencies.extend(l);
        failures.extend(failure);
    }
    let probes = prober.join().expect("the probe thread panicked");
    stop.store(true, Ordering::Relaxed);
    attacker.join().expect("the attack thread panicked");
    sampling.store(false, Ordering::Relaxed);
    let max_rss = sampler.join().expect("the sampler panicked");

    let opened = 1 + NORMAL_TUNNELS + SLOW_READERS + PING_FLOODS.len() + probes.len();
    UnderAttack {
        name: "under attack over TLS",
        latencies,
        failures,
        probes,
        p99_limit: P99_LIMIT,
        baseline_rss: baseline,
        max_rss,
        pool: BUFFERS * BUFFER_SIZE,
        opened,
        // ARCHITECTURE.md "Memory bound", with the TLS session's share.
        per_tunnel: tunnel_memory_bound(BACKPRESSURE, BUFFER_SIZE) + TLS_STATE,
        attackers: format!(
            "the attackers wrote {} KiB",
            written.load(Ordering::Relaxed) / 1024
        ),
    }
    .judge();
    let mut after = connect(None).expect("a tunnel after the attack");
    after
        .round_trip(&payload(98, 1))
        .expect("an echo after the attack");
    after.close();
}
