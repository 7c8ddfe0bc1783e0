//! Process lifecycle of `ringway run`: on SIGTERM an open tunnel first receives every byte the
//! origin already echoed, then Close 1001, and the process exits 0 within `shutdown_ms`; SIGINT
//! with no tunnels exits 0 as well.
//!
//! Each test has its own server on port 0; every wait is bounded.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use ringway_e2e::config::ConfigToml;
use ringway_e2e::origin::Origin;
use ringway_e2e::server::Ringway;
use ringway_e2e::ws::{self, read_bytes, read_close};
use ringway_e2e::STEP;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

const SHUTDOWN_MS: u64 = 3000;
/// Slack on top of `shutdown_ms` for process teardown and scheduling on a busy machine.
const EXIT_SLACK: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_echo_then_closes_1001_and_exits_0() {
    let origin = Origin::echo().await;
    let mut server = Ringway::start(
        &ConfigToml::echo(origin.addr)
            .timeout("shutdown_ms", SHUTDOWN_MS)
            .build(),
    );
    let mut ws = ws::connect(&server.url("/echo")).await;
    let payload: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    timeout(STEP, ws.send(Message::binary(payload.clone())))
        .await
        .expect("send timed out")
        .expect("send");
    // Let the echo reach the server while the client is not reading: it is pending there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    server.sigterm();

    let got = read_bytes(&mut ws, payload.len(), STEP).await;
    assert!(got == payload, "echo flushed before shutdown differs");
    let close = read_close(&mut ws).await;
    assert_eq!(
        close.map(|c| c.0),
        Some(1001),
        "shutdown must close tunnels with 1001"
    );
    // Drive tungstenite's Close reply out and see the server end the connection.
    let _ = timeout(STEP, ws.next()).await;

    let bound = Duration::from_millis(SHUTDOWN_MS) + EXIT_SLACK;
    let status = server
        .wait_exit(bound)
        .await
        .unwrap_or_else(|| panic!("ringway still running {bound:?} after SIGTERM"));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    eprintln!("exited {:?} after SIGTERM", signalled.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_without_tunnels_exits_0() {
    let origin = Origin::echo().await;
    let mut server = Ringway::start(
        &ConfigToml::echo(origin.addr)
            .timeout("shutdown_ms", SHUTDOWN_MS)
            .build(),
    );
    ws::assert_still_serves(server.port).await;
    server.signal("INT");
    let bound = Duration::from_millis(SHUTDOWN_MS) + EXIT_SLACK;
    let status = server
        .wait_exit(bound)
        .await
        .unwrap_or_else(|| panic!("ringway still running {bound:?} after SIGINT"));
    assert_eq!(status.code(), Some(0), "exit status after SIGINT: {status}");
}
