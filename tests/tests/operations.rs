//! What an operator meets first: one instance per address, signals (SIGHUP ignored, a second
//! SIGINT/SIGTERM cuts the drain short, a clean drain warns of nothing), and log lines in words
//! (a line per tunnel and per refusal naming the client, the route, the origin, the bytes and the
//! reason; `--log-format json` for log shippers).
//!
//! Each test has its own server on port 0 (the single-instance test binds a port it found free);
//! every wait is bounded.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use ringway_e2e::config::ConfigToml;
use ringway_e2e::origin::Origin;
use ringway_e2e::server::{run_to_exit, write_config, Ringway};
use ringway_e2e::ws::{self, read_bytes};
use ringway_e2e::STEP;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const LOG_WAIT: Duration = Duration::from_secs(5);

/// A config whose listener is on a fixed port that was free a moment ago.
fn config_on_free_port(origin: std::net::SocketAddr) -> (String, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port();
    let text = ConfigToml::echo(origin)
        .build()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    (text, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_address_fails_at_start() {
    let origin = Origin::echo().await;
    let (config, port) = config_on_free_port(origin.addr);
    let mut first = Ringway::start(&config);
    assert_eq!(first.port, port);
    let path = write_config(&config);
    let out = run_to_exit(
        &["run", "--config", path.to_str().expect("utf-8 path")],
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the second instance must fail: {stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && stderr.contains("another process already listens there"),
        "a clear error naming the address: {stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "it never announced a port"
    );
    // The first one still answers every connection (no process shares its port).
    for _ in 0..8 {
        ws::echo_once(&first.url("/echo"), b"still the only one").await;
    }
    assert_eq!(first.terminate(STEP).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_logged_and_ignored() {
    let origin = Origin::echo().await;
    let mut server = Ringway::start(&ConfigToml::echo(origin.addr).build());
    let mut ws = ws::connect(&server.url("/echo")).await;
    server.signal("HUP");
    server
        .await_log_line(&["SIGHUP received", "nothing to reload"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no SIGHUP line:\n{}", server.log_tail()));
    assert!(
        server.wait_exit(Duration::from_millis(300)).await.is_none(),
        "SIGHUP must not end ringway"
    );
    // The open tunnel and new ones still work.
    timeout(STEP, ws.send(Message::binary(b"after HUP".to_vec())))
        .await
        .expect("send timed out")
        .expect("send");
    assert_eq!(read_bytes(&mut ws, 9, STEP).await, b"after HUP");
    ws::echo_once(&server.url("/echo"), b"new tunnel").await;
    drop(ws);
    assert_eq!(server.terminate(STEP).await.code(), Some(0));
}

/// The drain waits for a client that never reads (long close and send-stall timeouts); a second
/// SIGTERM ends the process at once, exit status 128 + 15, naming how many tunnels it cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_during_the_drain_exits_at_once_counting_the_cut_tunnels() {
    let origin = Origin::echo().await;
    let mut server = Ringway::start(
        &ConfigToml::echo(origin.addr)
            .timeout("shutdown_ms", 120_000)
            .timeout("close_ms", 120_000)
            .timeout("send_stall_ms", 120_000)
            .build(),
    );
    let mut ws = ws::connect(&server.url("/echo")).await;
    let chunk = vec![7u8; 256 * 1024];
    for _ in 0..256 {
        match timeout(
            Duration::from_millis(500),
            ws.send(Message::binary(chunk.clone())),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("send failed before the pipeline filled: {e}"),
            Err(_) => break, // blocked: the echo backs up behind a client that never reads
        }
    }
    server.sigterm();
    server
        .await_log_line(&["draining tunnels"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no drain line:\n{}", server.log_tail()));
    assert!(
        server.wait_exit(Duration::from_millis(500)).await.is_none(),
        "the drain waits for the stuck tunnel"
    );
    let second = Instant::now();
    server.sigterm();
    let status = server
        .wait_exit(Duration::from_secs(3))
        .await
        .unwrap_or_else(|| panic!("a second SIGTERM must exit at once:\n{}", server.log_tail()));
    assert_eq!(status.code(), Some(128 + 15), "exit status: {status}");
    eprintln!("exited {:?} after the second SIGTERM", second.elapsed());
    let log = server.log();
    assert!(
        log.contains("exiting now, cutting 1 tunnel(s)"),
        "the cut is counted:\n{log}"
    );
    drop(ws);
}

/// A drain that ends well says so and nothing else: no warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_drain_logs_no_warning() {
    let origin = Origin::echo().await;
    let mut server = Ringway::start(&ConfigToml::echo(origin.addr).workers(2).build());
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(ws::connect(&server.url("/echo")).await);
    }
    server.sigterm();
    // Each client answers the server's Close 1001 (tungstenite does on the next read).
    for ws in &mut clients {
        let close = ws::read_close(ws).await;
        assert_eq!(close.map(|(code, _)| code), Some(1001));
    }
    let status = server
        .wait_exit(STEP)
        .await
        .expect("exit after a clean drain");
    assert_eq!(status.code(), Some(0));
    let log = server.log();
    assert!(
        !log.contains("WARN") && !log.contains("deadline"),
        "a clean drain warns of nothing:\n{log}"
    );
    assert!(log.contains("ringway stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tunnel_and_refusal_gets_one_line_in_words() {
    let origin = Origin::echo().await;
    let dead = Origin::refused();
    let server = Ringway::start_with(
        &ConfigToml::echo(origin.addr).route("/dead", dead).build(),
        &[],
        &[("RUST_LOG", "info,ringway::tunnel=debug")],
    );
    let mut ws = ws::connect(&server.url("/echo")).await;
    let client = match ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s.local_addr().expect("client address"),
        _ => unreachable!("ws:// is plain TCP"),
    };
    timeout(STEP, ws.send(Message::binary(b"hello".to_vec())))
        .await
        .expect("send timed out")
        .expect("send");
    assert_eq!(read_bytes(&mut ws, 5, STEP).await, b"hello");
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
    .await
    .expect("close");
    let line = server
        .await_log_line(&["tunnel closed", &format!("client={client}")], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no close line for {client}:\n{}", server.log_tail()));
    let open = server
        .await_log_line(&["tunnel open", &format!("client={client}")], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no open line (debug) for {client}:\n{}", server.log_tail()));
    assert!(
        open.contains("route=\"/echo\"") && open.contains(&format!("origin={}", origin.addr)),
        "{open}"
    );
    for field in [
        "route=\"/echo\"".to_string(),
        format!("origin={}", origin.addr),
        "to_origin=5".into(),
        "to_client=5".into(),
        "closed_by=\"client\"".into(),
        "reason=\"client sent Close 1000 (normal closure)\"".into(),
        "duration_ms=".into(),
    ] {
        assert!(line.contains(&field), "{field} missing from: {line}");
    }
    assert!(!line.contains("Some("), "no Debug text: {line}");

    assert_eq!(ws::refusal_status(&server.url("/nope?x=1")).await, 404);
    let line = server
        .await_log_line(&["upgrade refused", "status=404"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no 404 line:\n{}", server.log_tail()));
    for field in [
        "phrase=\"Not Found\"",
        "host=\"127.0.0.1\"",
        "path=\"/nope\"",
        "client=127.0.0.1:",
    ] {
        assert!(line.contains(field), "{field} missing from: {line}");
    }
    assert!(
        !line.contains("closed_by"),
        "a refusal is not a close: {line}"
    );

    assert_eq!(ws::refusal_status(&server.url("/dead")).await, 502);
    let line = server
        .await_log_line(&["upgrade refused", "status=502"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no 502 line:\n{}", server.log_tail()));
    for field in [
        format!("origin={dead}"),
        "path=\"/dead\"".into(),
        "route=\"/dead\"".into(),
        "origin connect failed: Connection refused (os error 111)".into(),
    ] {
        assert!(line.contains(&field), "{field} missing from: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let origin = Origin::echo().await;
    let server = Ringway::start_with(
        &ConfigToml::echo(origin.addr).build(),
        &["--log-format", "json"],
        &[("RUST_LOG", "info")],
    );
    ws::echo_once(&server.url("/echo"), b"json").await;
    server
        .await_log_line(&["tunnel closed"], LOG_WAIT)
        .await
        .unwrap_or_else(|| panic!("no close line:\n{}", server.log_tail()));
    let log = server.log();
    let mut closed = None;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        if v["message"] == "tunnel closed" {
            closed = Some(v);
        }
    }
    let v = closed.expect("a tunnel closed object");
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["to_origin"], 4);
    assert_eq!(v["to_client"], 4);
    assert_eq!(v["origin"], origin.addr.to_string());
    assert_eq!(v["closed_by"], "client");
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("client sent Close")),
        "{v}"
    );
    assert!(
        v["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{v}"
    );
}
