//! Clients that cost the server without breaking a rule: tunnels whose client never reads while
//! it keeps writing, and Ping floods from clients that never read their Pongs. None of them may
//! starve the other tunnels of one worker (their round trips stay fast, new connections still get
//! upgraded and served), push the server's memory past the bound its config documents, or hold a
//! tunnel open forever: a client that reads nothing for `send_stall_ms` is closed, and a Ping
//! flood is answered with the latest Pong only (RFC 6455 §5.5.3).
//!
//! Invariants: each test starts its own server on port 0; the attack runs on its own thread and
//! runtime and is stopped before the test ends; every read, write and loop is bounded in time and
//! count; after the attack the same server must still serve a normal echo.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ringway_e2e::attack::shape::*;
use ringway_e2e::attack::{
    payload, rss_bytes, tunnel_memory_bound, Attack, AttackPlan, CountingOrigin, UnderAttack,
};
use ringway_e2e::config::ConfigToml;
use ringway_e2e::origin::Origin;
use ringway_e2e::raw::{masked, Ending, RawConn, RawError};
use ringway_e2e::server::Ringway;
use ringway_e2e::ws::{self, assert_still_serves};
use ringway_e2e::STEP;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

const PING_FLOODERS: usize = 2;

/// Sends `data` as one Binary message and reads the echo back across however it is framed.
async fn round_trip(ws: &mut ws::Client, data: &[u8]) -> Result<(), String> {
    ws.send(Message::binary(data.to_vec()))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut got = Vec::with_capacity(data.len());
    // At most one message per byte (the server may re-frame), plus control frames.
    for _ in 0..data.len() + 64 {
        if got.len() >= data.len() {
            break;
        }
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => got.extend_from_slice(&b),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => return Err(format!("expected the echo, got {other:?}")),
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("stream ended".into()),
        }
    }
    if got != data {
        return Err(format!(
            "echo differs: sent {} bytes, got {} bytes {:?}",
            data.len(),
            got.len(),
            &got[..got.len().min(16)]
        ));
    }
    Ok(())
}

/// Sequential round trips on `ws` until `until`; every latency, and the failure that ended it
/// early, if any.
async fn measure(
    mut ws: ws::Client,
    tunnel: usize,
    until: Instant,
) -> (Vec<Duration>, Option<String>) {
    let mut latencies = Vec::new();
    for round in 0..10_000_000u64 {
        if Instant::now() >= until {
            break;
        }
        let data = payload(tunnel, round);
        let started = Instant::now();
        match timeout(ROUND_TRIP_BOUND, round_trip(&mut ws, &data)).await {
            Ok(Ok(())) => latencies.push(started.elapsed()),
            Ok(Err(e)) => {
                return (
                    latencies,
                    Some(format!("tunnel {tunnel}, round {round}: {e}")),
                )
            }
            Err(_) => {
                return (
                    latencies,
                    Some(format!(
                        "tunnel {tunnel}, round {round}: no echo within {ROUND_TRIP_BOUND:?}"
                    )),
                )
            }
        }
    }
    let _ = timeout(Duration::from_millis(500), ws.close(None)).await;
    (latencies, None)
}

/// A fresh connection that must upgrade and echo 64 bytes within [`PROBE_BOUND`].
async fn probe(url: &str, n: usize) -> Result<Duration, String> {
    let started = Instant::now();
    let attempt = async {
        let (mut ws, _) = ws::try_connect(url, &[])
            .await
            .map_err(|e| format!("upgrade failed: {e}"))?;
        round_trip(&mut ws, &payload(200 + n, 0)).await?;
        let _ = ws.close(None).await;
        Ok::<_, String>(())
    };
    match timeout(PROBE_BOUND, attempt).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(format!("probe {n}: {e}")),
        Err(_) => Err(format!(
            "probe {n}: no upgrade and echo within {PROBE_BOUND:?}"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_and_ping_flood_do_not_starve_a_worker() {
    let origin = Origin::echo().await;
    let config = ConfigToml::echo(origin.addr)
        .workers(1)
        .limit("backpressure_bytes", BACKPRESSURE)
        .timeout("send_stall_ms", 60_000);
    let server = Ringway::start(&with_engine(&config));
    let url = server.url("/echo");
    let pid = server.pid();

    assert_still_serves(server.port).await;
    let baseline = rss_bytes(pid).expect("read the server's VmRSS");
    let mut normal = Vec::with_capacity(NORMAL_TUNNELS);
    for i in 0..NORMAL_TUNNELS {
        let mut ws = ws::connect(&url).await;
        round_trip(&mut ws, &payload(i, u64::MAX))
            .await
            .unwrap_or_else(|e| panic!("tunnel {i} before the attack: {e}"));
        normal.push(ws);
    }

    let attack = Attack::start(AttackPlan {
        port: server.port,
        path: "/echo".into(),
        rcvbuf: TINY_RCVBUF,
        slow_readers: SLOW_READERS,
        frame_bytes: 300,
        ping_flooders: PING_FLOODERS,
        ping_bytes: 125,
        hard_limit: Duration::from_secs(20),
    })
    .await
    .unwrap_or_else(|e| panic!("setting up the attack: {e}"));

    // Memory is sampled from the start of the attack to its end.
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut max = 0u64;
            for _ in 0..2_000 {
                if !sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                max = max.max(rss_bytes(pid).unwrap_or(0));
                sleep(Duration::from_millis(25)).await;
            }
            max
        })
    };

    sleep(RAMP).await;
    let until = Instant::now() + WINDOW;
    let mut tunnels = JoinSet::new();
    for (i, ws) in normal.into_iter().enumerate() {
        tunnels.spawn(measure(ws, i, until));
    }
    let probes = {
        let url = url.clone();
        tokio::spawn(async move {
            let mut results = Vec::new();
            for n in 0..16 {
                let next = Instant::now() + PROBE_EVERY;
                if next > until {
                    break;
                }
                results.push(probe(&url, n).await);
                sleep_until(next).await;
            }
            results
        })
    };

    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let joined = timeout(WINDOW + Duration::from_secs(5), async {
        while let Some(r) = tunnels.join_next().await {
            let (l, failure) = r.expect("measuring task panicked");
            latencies.extend(l);
            failures.extend(failure);
        }
    })
    .await;
    assert!(joined.is_ok(), "the normal tunnels did not finish in time");
    let probes = timeout(STEP, probes)
        .await
        .expect("probes did not finish")
        .expect("probe task panicked");

    let stats = tokio::task::spawn_blocking(move || attack.stop())
        .await
        .expect("stopping the attack");
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let max_rss = timeout(STEP, sampler)
        .await
        .expect("sampler did not stop")
        .expect("sampler panicked");

    // Every connection the test opened to the server: the warm-up, the measuring tunnels, the
    // attackers and each probe.
    let opened = 1 + NORMAL_TUNNELS + SLOW_READERS + PING_FLOODERS + probes.len();
    UnderAttack {
        name: "under attack",
        latencies,
        failures,
        probes,
        p99_limit: P99_LIMIT,
        baseline_rss: baseline,
        max_rss,
        pool: BUFFERS * BUFFER_SIZE,
        opened,
        per_tunnel: tunnel_memory_bound(BACKPRESSURE, BUFFER_SIZE),
        attackers: format!(
            "the attackers wrote {} KiB of binary frames and {} KiB of pings",
            stats.slow_bytes / 1024,
            stats.ping_bytes / 1024
        ),
    }
    .judge();
    assert_still_serves(server.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_after_send_stall_ms() {
    const STALL_MS: u64 = 500;
    const CLOSE_MS: u64 = 500;
    let origin = CountingOrigin::echo().await;
    let config = ConfigToml::echo(origin.addr)
        .timeout("send_stall_ms", STALL_MS)
        .timeout("close_ms", CLOSE_MS);
    let server = Ringway::start(&config.build());
    let mut conn = RawConn::upgrade_small_window(server.port, "/echo", TINY_RCVBUF)
        .await
        .unwrap_or_else(|e| panic!("upgrade: {e}"));

    // Write until the writes block (everything between the client and the origin is full) or
    // 4 MiB went out; never read.
    let batch = ringway_e2e::attack::frames(0x2, &[0x42; 1024], 64);
    let mut written = 0usize;
    let mut write_end = String::from("4 MiB written");
    let started = Instant::now();
    while written < 4 << 20 {
        match timeout(
            Duration::from_millis(300),
            conn.stream_mut().write_all(&batch),
        )
        .await
        {
            Ok(Ok(())) => written += batch.len(),
            Ok(Err(e)) => {
                write_end = format!("write failed: {e}");
                break;
            }
            Err(_) => {
                write_end = "writes blocked".into();
                break;
            }
        }
    }
    let stopped = Instant::now();
    eprintln!(
        "never-reading client: {} KiB written in {:?} ({write_end})",
        written / 1024,
        stopped - started
    );

    // The server must have closed by now; reading what is left must reach EOF or a reset.
    let closed_by = stopped + Duration::from_millis(STALL_MS + CLOSE_MS + 2_000);
    sleep_until(closed_by).await;
    let drained = conn.drain(Instant::now() + Duration::from_secs(5)).await;
    eprintln!(
        "drain after {:?}: {drained:?}",
        closed_by.duration_since(started)
    );
    match drained {
        Ok((Ending::Eof | Ending::Reset, _)) => {}
        Err((why, bytes)) => panic!(
            "a client that read nothing for {:?} (send_stall_ms = {STALL_MS}, close_ms = \
             {CLOSE_MS}) was not closed: draining it read {bytes} bytes, then {why} 5 s later",
            closed_by.duration_since(stopped)
        ),
    }

    // The origin side of that tunnel is closed too.
    let origin_deadline = Instant::now() + Duration::from_secs(3);
    for _ in 0..300 {
        if origin.ended() >= 1 || Instant::now() >= origin_deadline {
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(origin.accepted(), 1, "one tunnel, one origin connection");
    assert_eq!(
        origin.ended(),
        1,
        "the origin connection of the closed tunnel is still open 3 s after the client's close"
    );
    assert_still_serves(server.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_gets_only_the_latest_pong() {
    const PINGS: u64 = 10_000;
    let origin = Origin::echo().await;
    let server = Ringway::start(&ConfigToml::echo(origin.addr).build());
    let mut conn = RawConn::upgrade_small_window(server.port, "/echo", 4096)
        .await
        .unwrap_or_else(|e| panic!("upgrade: {e}"));

    let data: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5c).collect();
    let mut bytes = Vec::with_capacity(PINGS as usize * 14 + 128);
    for i in 0..PINGS {
        bytes.extend_from_slice(&masked(0x9, &i.to_be_bytes()));
    }
    bytes.extend_from_slice(&masked(0x2, &data));
    timeout(STEP, conn.stream_mut().write_all(&bytes))
        .await
        .expect("writing the pings timed out")
        .expect("writing the pings");

    let mut pongs: Vec<u64> = Vec::new();
    let mut echoed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut done_by: Option<Instant> = None;
    // Bounded by the deadline (or 300 ms of quiet once everything arrived) and the count.
    for _ in 0..2 * PINGS + 1_000 {
        let by = done_by.unwrap_or(deadline);
        let frame = match conn.read_frame_by(by).await {
            Ok(f) => f,
            Err(RawError::Timeout(_)) if done_by.is_some() => break,
            Err(RawError::Timeout(_)) => panic!(
                "within 10 s: {} pongs (last {:?}) and {} of {} echoed bytes",
                pongs.len(),
                pongs.last(),
                echoed.len(),
                data.len()
            ),
            Err(e) => panic!(
                "after {} pongs and {} echoed bytes: {e}",
                pongs.len(),
                echoed.len()
            ),
        };
        assert!(!frame.masked, "server frames must not be masked");
        match frame.opcode {
            0xA => {
                assert!(frame.fin, "a Pong must not be fragmented");
                let payload: [u8; 8] =
                    frame.payload.as_slice().try_into().unwrap_or_else(|_| {
                        panic!("pong payload {:?} is not a ping's", frame.payload)
                    });
                let n = u64::from_be_bytes(payload);
                assert!(n < PINGS, "pong {n} answers no ping");
                if let Some(&prev) = pongs.last() {
                    assert!(
                        n > prev,
                        "pong for ping {n} after the pong for ping {prev}: only the latest \
                         ping may be answered"
                    );
                }
                pongs.push(n);
            }
            0x2 => echoed.extend_from_slice(&frame.payload),
            other => panic!("unexpected frame (opcode {other:#x}): {frame:?}"),
        }
        if done_by.is_none() && echoed.len() >= data.len() && pongs.last() == Some(&(PINGS - 1)) {
            done_by = Some(Instant::now() + Duration::from_millis(300));
        }
    }
    eprintln!(
        "{PINGS} pings answered with {} pongs; first {:?}, last {:?}",
        pongs.len(),
        pongs.first(),
        pongs.last()
    );
    assert_eq!(echoed, data, "the binary frame behind the pings must echo");
    assert_eq!(
        pongs.last(),
        Some(&(PINGS - 1)),
        "the last pong must answer the last ping"
    );
    assert!(
        pongs.len() < 1_000,
        "{} pongs for {PINGS} pings from a client that read none of them: a pending pong \
         should be replaced by the latest ping's (RFC 6455 §5.5.3)",
        pongs.len()
    );
    drop(conn);
    assert_still_serves(server.port).await;
}
