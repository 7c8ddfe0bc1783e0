//! Process lifecycle of `ringway run`: on SIGTERM an open tunnel first receives every byte the
//! origin already echoed, then Close 1001, and the process exits 0 within `shutdown_ms`; SIGINT
//! with no tunnels exits 0 as well, and so does SIGTERM sent the moment the `listening on` line
//! appears (a supervisor may do exactly that).
//!
//! Each test has its own server on port 0; every wait is bounded.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use ringway_e2e::config::ConfigToml;
use ringway_e2e::origin::Origin;
use ringway_e2e::server::{binary, write_config, Ringway};
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

/// A client that never reads cannot hold ringway past its close timeout: on SIGTERM the Close
/// 1001 sits behind echo bytes the client will not take, so the drain makes no progress for
/// `close_ms` and the socket is torn down; the process then exits long before `shutdown_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_reads_is_cut_at_the_close_timeout() {
    const LONG_SHUTDOWN_MS: u64 = 15_000;
    let origin = Origin::echo().await;
    let mut server = Ringway::start(
        &ConfigToml::echo(origin.addr)
            .timeout("shutdown_ms", LONG_SHUTDOWN_MS)
            .timeout("close_ms", 500)
            .build(),
    );
    let mut ws = ws::connect(&server.url("/echo")).await;
    // Write until the pipeline is full: the echo backs up behind a client that never reads.
    let chunk = vec![7u8; 256 * 1024];
    for _ in 0..256 {
        let sent = timeout(
            Duration::from_millis(500),
            ws.send(Message::binary(chunk.clone())),
        );
        match sent.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("send failed before the pipeline filled: {e}"),
            Err(_) => break, // blocked: full
        }
    }
    let signalled = Instant::now();
    server.sigterm();
    let bound = Duration::from_millis(LONG_SHUTDOWN_MS / 2);
    let status = server.wait_exit(bound).await.unwrap_or_else(|| {
        panic!("ringway still running {bound:?} after SIGTERM: a peer that never reads held it")
    });
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    eprintln!("exited {:?} after SIGTERM", signalled.elapsed());
    drop(ws);
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

/// A child process that is killed and reaped when dropped, whatever the test's outcome.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn wait_exit(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// A supervisor may signal the moment the port is known. To leave no gap of our own, the SIGTERM
/// comes from an `sh` that is already running and blocked in `read`: the stdout reader wakes it
/// the instant the `listening on` line arrives, and `kill` is a shell builtin (no fork/exec).
#[test]
fn sigterm_right_after_listening_line_exits_0() {
    let config = ConfigToml::echo(Origin::refused())
        .timeout("shutdown_ms", SHUTDOWN_MS)
        .build();
    let path = write_config(&config);
    let path_str = path.to_str().expect("utf-8 temp path").to_owned();
    let mut failures = Vec::new();
    for attempt in 0..10 {
        let mut server = Reaped(
            Command::new(binary())
                .args(["run", "--config", &path_str])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn ringway"),
        );
        let mut trigger = Reaped(
            Command::new("sh")
                .args(["-c", &format!("read go && kill -TERM {}", server.0.id())])
                .stdin(Stdio::piped())
                .spawn()
                .expect("spawn sh"),
        );
        let mut go = trigger.0.stdin.take().expect("piped stdin");
        let stdout = server.0.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            if line.starts_with("listening on ws://127.0.0.1:") {
                let _ = go.write_all(b"go\n");
            }
            let _ = tx.send(line);
            // Drain the rest so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("no stdout line within 10 s");
        assert!(
            line.starts_with("listening on"),
            "first stdout line: {line:?}"
        );
        let bound = Duration::from_millis(SHUTDOWN_MS) + EXIT_SLACK;
        match wait_exit(&mut server.0, bound) {
            Some(status) if status.code() == Some(0) => {}
            Some(status) => failures.push(format!("attempt {attempt}: {status}")),
            None => failures.push(format!("attempt {attempt}: still running after {bound:?}")),
        }
        let _ = wait_exit(&mut trigger.0, Duration::from_secs(5));
    }
    let _ = std::fs::remove_file(&path);
    assert!(
        failures.is_empty(),
        "SIGTERM sent right after `listening on` must exit 0 (the handler must be installed \
         before the line is printed); {} of 10 attempts failed: {failures:?}",
        failures.len()
    );
}

/// Origin EOF: the client gets the last bytes, the Close 1000 and the TCP FIN without having to
/// answer the Close first (the server closes TCP first, RFC 6455 §7.1.1), so an origin-closed
/// tunnel costs the client one round trip less; the client's late Close answer is still taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_eof_sends_close_and_fin_without_waiting_for_the_clients_close() {
    let origin = Origin::echo_then_close(64).await;
    let server = Ringway::start(&ConfigToml::echo(origin.addr).build());
    let mut c = ringway_e2e::raw::RawConn::upgrade(server.port, "/echo").await;
    c.send(&ringway_e2e::raw::masked(0x2, &[7u8; 64]))
        .await
        .expect("send the frame");
    let data = c.read_frame().await.expect("the echo");
    assert_eq!((data.opcode, data.payload.len()), (0x2, 64));
    let echoed = Instant::now();
    let close = c.read_close().await.expect("the Close");
    assert_eq!(close.close_code(), Some(1000));
    // The Close is sent corked (MSG_MORE) so the FIN can join it; the shutdown must follow at
    // once, or the Close would wait in the kernel.
    assert!(
        echoed.elapsed() < Duration::from_secs(1),
        "the Close came {:?} after the echo",
        echoed.elapsed()
    );
    // No Close sent back yet: the FIN must already be on its way.
    let rest = c
        .await_close(Duration::from_secs(1))
        .await
        .expect("EOF right behind the Close");
    assert!(rest.is_empty(), "nothing after the Close: {rest:?}");
}

/// A client that writes its upgrade request, a message and its Close in one go and then
/// half-closes (before the origin connect completes) still gets the 101 and its Close answered:
/// pipelined bytes are delivered once the tunnel is up, whatever the client does next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_frames_and_close_then_half_close_still_get_101_and_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::echo().await;
    let server = Ringway::start(&ConfigToml::echo(origin.addr).build());
    let mut bytes = ringway_e2e::raw::upgrade_request("/echo").into_bytes();
    bytes.extend_from_slice(&ringway_e2e::raw::masked(0x2, b"hello"));
    bytes.extend_from_slice(&ringway_e2e::raw::masked(0x8, &1000u16.to_be_bytes()));
    let mut s = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect");
    s.write_all(&bytes).await.expect("write");
    s.shutdown().await.expect("half-close");
    let mut got = Vec::new();
    timeout(STEP, s.read_to_end(&mut got))
        .await
        .expect("the server ends the connection")
        .expect("read");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101 "), "no 101: {text:?}");
    let at = got.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    assert_eq!(&got[at..], &[0x88, 0x02, 0x03, 0xe8], "Close 1000 echoed");
}
