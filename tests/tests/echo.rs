//! Tunnel behaviour seen by a well-behaved third-party client (tokio-tungstenite): bytes go to the
//! origin and come back byte-exact whatever the message sizes and however the server re-frames
//! them, under 200 concurrent tunnels too; control frames, close codes, refusals (404, 502, and
//! 504 for an origin that never answers the connect), query strings and the `binary` subprotocol
//! follow the contract.
//!
//! Each test starts its own in-process origin and its own `ringway` on port 0, so tests run in
//! parallel; every wait is bounded.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use ringway_e2e::config::ConfigToml;
use ringway_e2e::origin::Origin;
use ringway_e2e::server::Ringway;
use ringway_e2e::ws::{self, read_bytes, read_close};
use ringway_e2e::STEP;
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const MIB: usize = 1 << 20;

/// Deterministic, non-repeating-looking bytes for payloads.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

async fn start_echo() -> (Origin, Ringway) {
    let origin = Origin::echo().await;
    let server = Ringway::start(&ConfigToml::echo(origin.addr).build());
    (origin, server)
}

async fn send(ws: &mut ws::Client, msg: Message) {
    timeout(STEP, ws.send(msg))
        .await
        .expect("send timed out")
        .expect("send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_messages_of_edge_sizes_echo_byte_exact() {
    let (_origin, server) = start_echo().await;
    let mut ws = ws::connect(&server.url("/echo")).await;
    for (i, size) in [0, 1, 125, 126, 65535, 65536, MIB].into_iter().enumerate() {
        let payload = pattern(size, i as u64);
        send(&mut ws, Message::binary(payload.clone())).await;
        let got = read_bytes(&mut ws, size, Duration::from_secs(20)).await;
        assert!(got == payload, "echo of the {size}-byte message differs");
    }
    // The 0-byte message must not have produced stray bytes: one more round trip shows none.
    send(&mut ws, Message::binary(b"end".to_vec())).await;
    assert_eq!(read_bytes(&mut ws, 3, STEP).await, b"end");
    let _ = timeout(STEP, ws.close(None)).await;
}

/// One tunnel of the 200: sends 1 MiB in random-sized messages while reading the echo.
async fn hash_one_tunnel(url: String, seed: u64) {
    let (sink, mut stream) = ws::connect(&url).await.split();
    let writer = async move {
        let mut sink = sink;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut hasher = Sha256::new();
        let mut left = MIB;
        while left > 0 {
            let n = rng.gen_range(1..=64 * 1024).min(left);
            let mut chunk = vec![0u8; n];
            rng.fill_bytes(&mut chunk);
            hasher.update(&chunk);
            sink.send(Message::binary(chunk))
                .await
                .unwrap_or_else(|e| panic!("tunnel {seed}: send: {e}"));
            left -= n;
        }
        (hasher.finalize(), sink)
    };
    let reader =
        async { Sha256::digest(read_bytes(&mut stream, MIB, Duration::from_secs(120)).await) };
    let ((sent, mut sink), received) = tokio::join!(writer, reader);
    assert_eq!(
        sent, received,
        "tunnel {seed}: SHA-256 of echo differs from what was sent"
    );
    let _ = timeout(STEP, sink.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_tunnels_of_one_mib_echo_hash_equal() {
    let origin = Origin::echo().await;
    let server = Ringway::start(&ConfigToml::echo(origin.addr).workers(2).build());
    many_tunnels_hash_equal(&server, 200).await;
}

/// A pool of 64 small buffers and a 16 KiB backpressure cap: multishot recvs run out of buffers
/// (ENOBUFS, re-armed as buffers return) and directions pause and resume all the time; every
/// byte must still arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starved_buffer_pool_and_backpressure_lose_no_byte() {
    let origin = Origin::echo().await;
    let config = ConfigToml::echo(origin.addr)
        .limit("backpressure_bytes", 16 * 1024)
        .build()
        + "\n[engine]\nbuffers = 64\nbuffer_size = 4096\n";
    let server = Ringway::start(&config);
    many_tunnels_hash_equal(&server, 50).await;
}

/// `engine.steer_by_cpu` with one worker per CPU (the default count): the CPU-steering program
/// is accepted by the kernel (ringway refuses to start otherwise) and every tunnel still works,
/// whichever worker the kernel picks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_steering_keeps_every_tunnel_working() {
    let origin = Origin::echo().await;
    let config = ConfigToml::echo(origin.addr)
        .build()
        .replace("workers = 1\n", "")
        + "\n[engine]\nsteer_by_cpu = true\n";
    let server = Ringway::start(&config);
    many_tunnels_hash_equal(&server, 20).await;
}

/// A route's `idle_timeout_ms`: a tunnel with no bytes either way for that long gets Close 1001;
/// traffic before it resets the clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_quiet_tunnels_with_1001() {
    let origin = Origin::echo().await;
    let config = ConfigToml::echo(origin.addr).build() + "idle_timeout_ms = 800\n";
    let server = Ringway::start(&config);
    let mut ws = ws::connect(&server.url("/echo")).await;
    let opened = Instant::now();
    for i in 0..4u8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        send(&mut ws, Message::binary(vec![i; 16])).await;
        assert_eq!(read_bytes(&mut ws, 16, STEP).await, vec![i; 16]);
    }
    assert!(
        opened.elapsed() > Duration::from_millis(1500),
        "activity kept it open"
    );
    let quiet = Instant::now();
    let close = read_close(&mut ws).await.map(|c| c.0);
    assert_eq!(close, Some(1001), "idle tunnel must get Close 1001");
    let waited = quiet.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(3),
        "closed after {waited:?} of silence, expected about 800 ms"
    );
}

/// The one-shot fallbacks used on kernels without multishot accept/recv/timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_fallbacks_carry_every_byte() {
    let origin = Origin::echo().await;
    let config = ConfigToml::echo(origin.addr).build();
    let server = Ringway::start_with_env(&config, &[("RINGWAY_NO_MULTISHOT", "1")]);
    many_tunnels_hash_equal(&server, 50).await;
}

async fn many_tunnels_hash_equal(server: &Ringway, count: u64) {
    let url = server.url("/echo");
    let mut tunnels = JoinSet::new();
    for seed in 0..count {
        tunnels.spawn(hash_one_tunnel(url.clone(), seed));
    }
    let all = async {
        let mut done = 0;
        while let Some(r) = tunnels.join_next().await {
            if let Err(e) = r {
                std::panic::resume_unwind(e.into_panic());
            }
            done += 1;
        }
        done
    };
    let done = timeout(Duration::from_secs(120), all)
        .await
        .unwrap_or_else(|_| panic!("{count} tunnels x 1 MiB did not finish within 120 s"));
    assert_eq!(done, count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_with_pong_of_same_payload() {
    let (_origin, server) = start_echo().await;
    let mut ws = ws::connect(&server.url("/echo")).await;
    for payload in [b"ringway-ping".to_vec(), Vec::new(), pattern(125, 9)] {
        send(&mut ws, Message::Ping(payload.clone().into())).await;
        // Nothing else is in flight on this tunnel, so the very next message must be the Pong.
        let pong = match timeout(STEP, ws.next()).await.expect("no Pong within STEP") {
            Some(Ok(Message::Pong(p))) => p,
            Some(Ok(other)) => panic!("expected Pong, got {other:?}"),
            Some(Err(e)) => panic!("expected Pong, got error {e}"),
            None => panic!("stream ended before Pong"),
        };
        assert_eq!(&pong[..], &payload[..], "Pong payload differs from Ping's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_code_4000_is_echoed() {
    let (_origin, server) = start_echo().await;
    let mut ws = ws::connect(&server.url("/echo")).await;
    send(&mut ws, Message::binary(b"before close".to_vec())).await;
    read_bytes(&mut ws, 12, STEP).await;
    let frame = CloseFrame {
        code: CloseCode::from(4000),
        reason: "bye".into(),
    };
    timeout(STEP, ws.close(Some(frame)))
        .await
        .expect("close timed out")
        .expect("close");
    let close = read_close(&mut ws).await;
    assert_eq!(
        close.map(|c| c.0),
        Some(4000),
        "server's Close must echo 4000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_without_code_gets_empty_close() {
    let (_origin, server) = start_echo().await;
    let mut ws = ws::connect(&server.url("/echo")).await;
    send(&mut ws, Message::binary(b"x".to_vec())).await;
    read_bytes(&mut ws, 1, STEP).await;
    timeout(STEP, ws.close(None))
        .await
        .expect("close timed out")
        .expect("close");
    let close = read_close(&mut ws).await;
    assert_eq!(
        close, None,
        "Close without a code must be answered by an empty Close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_eof_after_echo_gives_bytes_then_close_1000() {
    let n = 3000;
    let origin = Origin::echo_then_close(n).await;
    let server = Ringway::start(&ConfigToml::echo(origin.addr).build());
    let mut ws = ws::connect(&server.url("/echo")).await;
    let payload = pattern(n, 5);
    for part in payload.chunks(1000) {
        send(&mut ws, Message::binary(part.to_vec())).await;
    }
    let got = read_bytes(&mut ws, n, STEP).await;
    assert!(got == payload, "echo before origin EOF differs");
    let close = read_close(&mut ws).await;
    assert_eq!(
        close.map(|c| c.0),
        Some(1000),
        "origin EOF must close the tunnel with 1000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_refusing_connections_gives_502() {
    let server = Ringway::start(&ConfigToml::echo(Origin::refused()).build());
    assert_eq!(ws::refusal_status(&server.url("/echo")).await, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_connect_timeout_gives_504() {
    // An origin whose accept queue is full: the kernel drops further SYNs, so connects hang.
    let origin = ringway_e2e::origin::Unanswering::start().await;
    let addr = origin.addr;
    let server = Ringway::start(&ConfigToml::echo(addr).timeout("connect_ms", 1000).build());
    let started = Instant::now();
    assert_eq!(ws::refusal_status(&server.url("/echo")).await, 504);
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(900)..=Duration::from_secs(5)).contains(&took),
        "504 came after {took:?}; expected ~connect_ms = 1 s"
    );
    drop(origin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_gives_404() {
    let (_origin, server) = start_echo().await;
    assert_eq!(ws::refusal_status(&server.url("/nope")).await, 404);
    ws::assert_still_serves(server.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_string_is_ignored_for_routing() {
    let (_origin, server) = start_echo().await;
    ws::echo_once(
        &server.url("/echo?address=db:5432"),
        b"routed despite the query",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_binary_is_echoed() {
    let (_origin, server) = start_echo().await;
    let (mut ws, resp) = ws::connect_with(
        &server.url("/echo"),
        &[("Sec-WebSocket-Protocol", "binary")],
    )
    .await;
    let proto = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap_or("<non-ascii>").to_owned());
    assert_eq!(
        proto.as_deref(),
        Some("binary"),
        "offered subprotocol not echoed"
    );
    send(&mut ws, Message::binary(b"proto".to_vec())).await;
    assert_eq!(read_bytes(&mut ws, 5, STEP).await, b"proto");
}
