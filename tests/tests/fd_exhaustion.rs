//! Out of file descriptors: ringway started under a hard limit of 48 open files. A client whose
//! connection was accepted but whose origin socket cannot be created gets `503 Service
//! Unavailable` (ringway is out of resources, not the origin: never a 502), and the accept
//! failures that follow (EMFILE, retried ten times a second) are logged at most once per ten
//! seconds, with their count.
//!
//! In its own test binary because it points `RINGWAY_BIN` at a wrapper for the whole process.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use ringway_e2e::config::ConfigToml;
use ringway_e2e::origin::Origin;
use ringway_e2e::server::{binary, temp_path, Ringway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const LIMIT: u32 = 48;
const REQUEST: &str = "GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// What an upgrade attempt got: the status line's code, or `None` when nothing came in time
/// (the connection waits in the listen backlog: accept is failing).
async fn upgrade(port: u16) -> (TcpStream, Option<u16>) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the kernel completes the TCP handshake");
    s.write_all(REQUEST.as_bytes()).await.expect("send request");
    let status = read_status(&mut s, Duration::from_millis(1500)).await;
    (s, status)
}

async fn read_status(s: &mut TcpStream, bound: Duration) -> Option<u16> {
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    timeout(bound, read).await.ok()?;
    let text = String::from_utf8_lossy(&head);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_descriptor_for_the_origin_is_a_503_and_accept_failures_are_rate_limited() {
    let wrapper = temp_path("sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nulimit -n {LIMIT} || exit 99\nexec '{}' \"$@\"\n",
            binary().display()
        ),
    )
    .expect("write wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // This test binary runs only this test, so no other test sees the changed variable.
    std::env::set_var("RINGWAY_BIN", &wrapper);

    let origin = Origin::echo().await;
    let server = Ringway::start(
        &ConfigToml::echo(origin.addr)
            .timeout("handshake_ms", 60_000)
            .build(),
    );
    // Idle connections hold exactly one descriptor each until dropped.
    let mut idle = vec![TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("idle connection")];
    let mut open = Vec::new();
    let mut statuses = Vec::new();
    let mut stuck = None;
    for _ in 0..2 * LIMIT {
        let (s, status) = upgrade(server.port).await;
        statuses.push(status);
        match status {
            Some(101) => open.push(s),
            Some(503) if statuses.iter().filter(|s| **s == Some(503)).count() == 1 => {
                // One descriptor was left: an idle connection takes it, so the next request
                // waits in the backlog while accept fails.
                drop(s);
                tokio::time::sleep(Duration::from_millis(200)).await;
                idle.push(
                    TcpStream::connect(("127.0.0.1", server.port))
                        .await
                        .expect("idle connection"),
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None => {
                stuck = Some(s);
                break;
            }
            Some(_) => {}
        }
    }
    eprintln!("statuses: {statuses:?}");
    assert!(
        !statuses.contains(&Some(502)),
        "out of descriptors is not the origin's fault: {statuses:?}"
    );
    let mut stuck = stuck.unwrap_or_else(|| panic!("never ran out of descriptors: {statuses:?}"));
    // Freeing one idle connection's descriptor lets the waiting request be accepted: with none
    // left for its origin (or, after the first 503, with one) it gets its answer now.
    idle.truncate(idle.len() - 1);
    let status = read_status(&mut stuck, Duration::from_secs(5)).await;
    if !statuses.contains(&Some(503)) {
        assert_eq!(
            status,
            Some(503),
            "accepted without a descriptor for the origin: {statuses:?}"
        );
    } else {
        assert!(
            matches!(status, Some(101 | 503)),
            "the waiting request is served once a descriptor frees: {status:?}"
        );
    }
    // 1.5 s of accept failures at ten retries a second: one report, not fifteen.
    let log = server.log();
    let reports = log.lines().filter(|l| l.contains("accept failed")).count();
    assert!(
        (1..=2).contains(&reports),
        "{reports} accept-failure lines:\n{log}"
    );
    assert!(
        log.contains("Too many open files"),
        "the error in words:\n{log}"
    );
    let refused = server
        .await_log_line(&["upgrade refused", "status=503"], Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no 503 line:\n{}", server.log_tail()));
    assert!(
        refused.contains("cannot create a socket to the origin"),
        "{refused}"
    );
    drop(open);
    let _ = std::fs::remove_file(&wrapper);
}
