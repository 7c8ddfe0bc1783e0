//! Hostile clients, driven over raw TCP so malformed requests and frames reach the server exactly
//! as written: refusals with the right HTTP status (400, 426, 431), protocol errors closed with the
//! right code (1002, 1007, 1009 for a frame over `max_message_bytes` — RFC 6455 §5.2, §5.5,
//! §7.4.1), a slow-loris handshake cut at `handshake_ms`, and 2,000 idle half-handshakes that must
//! not starve a real client.
//!
//! Invariant: after every hostile client the same server must still serve a normal
//! tokio-tungstenite echo ([`assert_still_serves`]). Each test has its own server on port 0.

use std::time::{Duration, Instant};

use ringway_e2e::config::ConfigToml;
use ringway_e2e::origin::Origin;
use ringway_e2e::raw::{
    client_frame, masked, upgrade_request, RawConn, RawError, ResponseHead, SAMPLE_KEY,
};
use ringway_e2e::server::Ringway;
use ringway_e2e::ws::assert_still_serves;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

async fn start(config: ConfigToml) -> (Origin, Ringway) {
    let origin = Origin::echo().await;
    let server = Ringway::start(&config.route("/echo", origin.addr).build());
    (origin, server)
}

/// Sends `request` on a fresh connection and returns the response head.
async fn response_to(port: u16, request: &[u8]) -> ResponseHead {
    let mut conn = RawConn::connect(port).await;
    // The server may answer and close before reading everything; the answer is what counts.
    let _ = conn.send(request).await;
    conn.read_head()
        .await
        .unwrap_or_else(|e| panic!("no HTTP response: {e}"))
}

async fn refused_with(request: &[u8], expected: u16) -> ResponseHead {
    let (_origin, server) = start(ConfigToml::new()).await;
    let head = response_to(server.port, request).await;
    assert_eq!(
        head.status, expected,
        "wrong status; response:\n{}",
        head.raw
    );
    assert_still_serves(server.port).await;
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_without_upgrade_header_gives_400() {
    let req = format!(
        "GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    refused_with(req.as_bytes(), 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_websocket_version_gives_426_naming_13() {
    let req =
        upgrade_request("/echo").replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let head = refused_with(req.as_bytes(), 426).await;
    assert_eq!(
        head.header("sec-websocket-version"),
        Some("13"),
        "426 must carry `Sec-WebSocket-Version: 13`:\n{}",
        head.raw
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_websocket_key_gives_400() {
    let req = upgrade_request("/echo").replace(&format!("Sec-WebSocket-Key: {SAMPLE_KEY}\r\n"), "");
    refused_with(req.as_bytes(), 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_line_of_64_kib_gives_431() {
    let filler = format!("X-Filler: {}\r\n\r\n", "a".repeat(64 * 1024));
    let req = upgrade_request("/echo").replacen("\r\n\r\n", &format!("\r\n{filler}"), 1);
    refused_with(req.as_bytes(), 431).await;
}

/// Upgrades, sends `bytes` as the first frame(s), and expects a Close with `code`.
async fn closed_with(bytes: &[u8], code: u16) {
    closed_with_config(ConfigToml::new(), &[], bytes, code).await;
}

/// Upgrades on a server with `config`, round-trips `first` as one binary frame (its echo must
/// come back byte-exact), sends `bytes`, and expects a Close with `code`.
async fn closed_with_config(config: ConfigToml, first: &[u8], bytes: &[u8], code: u16) {
    let (_origin, server) = start(config).await;
    let mut conn = RawConn::upgrade(server.port, "/echo").await;
    if !first.is_empty() {
        conn.send(&masked(0x2, first))
            .await
            .expect("send first frame");
        let mut echoed = Vec::new();
        for _ in 0..first.len() {
            let frame = conn
                .read_frame()
                .await
                .unwrap_or_else(|e| panic!("echo of the first frame: {e}"));
            assert_eq!(frame.opcode, 0x2, "expected a binary echo, got {frame:?}");
            echoed.extend_from_slice(&frame.payload);
            if echoed.len() >= first.len() {
                break;
            }
        }
        assert!(echoed == first, "echo of the first frame differs");
    }
    let _ = conn.send(bytes).await;
    let close = conn
        .read_close()
        .await
        .unwrap_or_else(|e| panic!("expected Close {code}, got: {e}"));
    assert!(
        !close.masked,
        "server frames must not be masked (RFC 6455 §5.1)"
    );
    assert!(close.fin, "Close must not be fragmented");
    assert_eq!(
        close.close_code(),
        Some(code),
        "wrong close code; frame: {close:?}"
    );
    assert_still_serves(server.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmasked_client_frame_is_closed_1002() {
    closed_with(&client_frame(true, 0, 0x2, None, b"hello"), 1002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_bit_is_closed_1002() {
    closed_with(&client_frame(true, 0b100, 0x2, Some(MASK), b"hello"), 1002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_opcode_3_is_closed_1002() {
    closed_with(&client_frame(true, 0, 0x3, Some(MASK), b"hello"), 1002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_ping_is_closed_1002() {
    closed_with(&client_frame(false, 0, 0x9, Some(MASK), b"p"), 1002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_of_127_bytes_is_closed_1002() {
    closed_with(&masked(0x9, &[0x5a; 127]), 1002).await;
}

/// A binary frame header announcing `len` payload bytes, with no payload behind it.
fn header_with_64bit_len(len: u64) -> Vec<u8> {
    let mut h = vec![0x82, 0x80 | 127];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&MASK);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_2_pow_63_minus_1_is_closed_1009() {
    closed_with(&header_with_64bit_len((1 << 63) - 1), 1009).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_over_max_message_bytes_is_closed_1009() {
    let config = ConfigToml::new().limit("max_message_bytes", 1024);
    closed_with_config(config, &[0x42; 1024], &masked(0x2, &[0x43; 1025]), 1009).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_with_top_bit_set_is_closed_1002() {
    closed_with(&header_with_64bit_len(1 << 63), 1002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_text_is_closed_1007() {
    closed_with(&masked(0x1, &[b'o', b'k', 0xc3, 0x28, 0xff]), 1007).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handshake_is_cut_at_handshake_timeout() {
    let (_origin, server) = start(ConfigToml::new().timeout("handshake_ms", 1500)).await;
    let request = upgrade_request("/echo");
    let mut conn = RawConn::connect(server.port).await;
    let started = Instant::now();
    let mut closed_after = None;
    // ~150 bytes at 300 ms each would take ~45 s; the server must cut it long before.
    for (i, byte) in request.bytes().enumerate() {
        let write_failed = conn.send(&[byte]).await.is_err();
        match conn.await_close(Duration::from_millis(300)).await {
            Ok(_) => {}
            Err(RawError::Timeout(_)) if !write_failed => {
                assert!(
                    started.elapsed() < Duration::from_secs(8),
                    "slow handshake still open after 8 s with handshake_ms = 1500"
                );
                continue;
            }
            Err(RawError::Timeout(_)) => panic!("write failed but the connection did not close"),
            Err(e) => panic!("unexpected error while trickling the handshake: {e}"),
        }
        assert!(
            i + 1 < request.len(),
            "the whole request went through before the close"
        );
        closed_after = Some(started.elapsed());
        break;
    }
    let closed_after = closed_after.expect("server never closed the slow handshake");
    eprintln!("slow handshake closed after {closed_after:?}");
    assert!(
        (Duration::from_millis(1400)..=Duration::from_secs(4)).contains(&closed_after),
        "slow handshake closed after {closed_after:?}; expected ~1.5 s (1.4 s..4 s)"
    );
    let seen = String::from_utf8_lossy(conn.buffered()).into_owned();
    assert!(
        seen.is_empty() || seen.starts_with("HTTP/1.1 408"),
        "only a 408 may precede the close, got {seen:?}"
    );
    assert_still_serves(server.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_half_handshakes_do_not_starve_a_client() {
    let (_origin, server) = start(ConfigToml::new().timeout("handshake_ms", 120_000)).await;
    let mut idle = Vec::with_capacity(2000);
    let opened = timeout(Duration::from_secs(60), async {
        for i in 0..2000 {
            let mut s = TcpStream::connect(server.addr())
                .await
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}"));
            if i % 2 == 0 {
                // Half of them start a request line and stop.
                s.write_all(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                    .await
                    .unwrap_or_else(|e| panic!("idle connection {i}: write: {e}"));
            }
            idle.push(s);
        }
    })
    .await;
    assert!(
        opened.is_ok(),
        "opening 2,000 idle connections took over 60 s ({} opened)",
        idle.len()
    );
    timeout(Duration::from_secs(30), assert_still_serves(server.port))
        .await
        .expect("normal client not served within 30 s behind 2,000 idle connections");
    // Informational: handshake_ms is 120 s, so none should have been dropped yet.
    let mut buf = [0u8; 64];
    let dropped = idle
        .iter()
        .filter(|s| !matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
        .count();
    eprintln!(
        "{dropped} of {} idle connections were closed or answered by the server",
        idle.len()
    );
}

/// Frames pipelined in the same write as the upgrade request are held until the origin is
/// connected and the 101 is out, then forwarded: their echo arrives after the 101.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_pipelined_behind_the_upgrade_are_forwarded_after_101() {
    let origin = Origin::echo().await;
    let server = Ringway::start(&ConfigToml::echo(origin.addr).build());
    let mut conn = RawConn::connect(server.port).await;
    let mut bytes = upgrade_request("/echo").into_bytes();
    bytes.extend_from_slice(&masked(2, b"early "));
    bytes.extend_from_slice(&masked(2, b"bird"));
    conn.send(&bytes).await.expect("send upgrade + frames");
    let head = conn.read_head().await.expect("response head");
    assert_eq!(head.status, 101, "{}", head.raw);
    let mut got = Vec::new();
    for _ in 0..8 {
        if got.len() >= 10 {
            break;
        }
        let f = conn.read_frame().await.expect("echo frame");
        assert_eq!(f.opcode, 2, "origin bytes come back as binary frames");
        got.extend_from_slice(&f.payload);
    }
    assert_eq!(got, b"early bird");
}
