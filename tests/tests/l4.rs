//! `mode = "tcp"` listeners: plain TCP (L4) relays on the same engine. Bytes pass unchanged
//! both ways (2 MiB of random bytes each way, 200 connections at once), a half-close is passed
//! on (the origin answers after the client's FIN), a dead origin closes the client at once, a
//! shutdown delivers what was queued, and the config refuses what cannot work.

use std::time::{Duration, Instant};

use rand::RngCore;
use ringway_e2e::origin::Origin;
use ringway_e2e::server::{run_to_exit, write_config, Ringway};
use ringway_e2e::STEP;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

fn tcp_config(origin: std::net::SocketAddr, workers: u32) -> String {
    format!(
        "workers = {workers}\n[[listener]]\naddr = \"127.0.0.1:0\"\nmode = \"tcp\"\norigin = \"{origin}\"\n"
    )
}

/// Writes `data` and reads as many bytes back, concurrently; returns what came back.
async fn round_trip(stream: TcpStream, data: Vec<u8>) -> Vec<u8> {
    let (mut rd, mut wr) = stream.into_split();
    let n = data.len();
    let writer = tokio::spawn(async move {
        wr.write_all(&data).await.expect("write");
        wr
    });
    let mut back = vec![0u8; n];
    timeout(STEP, rd.read_exact(&mut back))
        .await
        .expect("echo within the bound")
        .expect("read");
    drop(writer.await.unwrap());
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_pass_unchanged_both_ways() {
    let echo = Origin::echo().await;
    let server = Ringway::start(&tcp_config(echo.addr, 2));
    let mut data = vec![0u8; 2 << 20];
    rand::thread_rng().fill_bytes(&mut data);
    let s = TcpStream::connect(server.addr()).await.unwrap();
    let back = round_trip(s, data.clone()).await;
    assert!(back == data, "2 MiB came back changed");
    // The relay is in the figures under its listener's name.
    let name = format!("tcp {}", echo.addr);
    let out = server.ringctl(&["stats", "--route", &name]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "route {name}: 0 open, 1 total, 2097152 B to origin, 2097152 B to client"
        )) && text.contains("ended: origin: EOF 1"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut open = TcpStream::connect(server.addr()).await.unwrap();
    open.write_all(b"ping").await.unwrap();
    let mut four = [0u8; 4];
    timeout(STEP, open.read_exact(&mut four))
        .await
        .unwrap()
        .unwrap();
    let out = server.ringctl(&["tunnels"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&name) && text.contains("relaying"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_connections_at_once() {
    let echo = Origin::echo().await;
    let server = Ringway::start(&tcp_config(echo.addr, 2));
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let addr = server.addr();
        tasks.push(tokio::spawn(async move {
            let mut data = vec![0u8; 64 * 1024 + i as usize];
            rand::thread_rng().fill_bytes(&mut data);
            let s = TcpStream::connect(addr).await.unwrap();
            assert!(round_trip(s, data.clone()).await == data);
        }));
    }
    for t in tasks {
        t.await.expect("a connection failed");
    }
}

/// The client's FIN reaches the origin (the echo origin ends its answer on it) and the answer
/// after it still reaches the client, then the origin's FIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_close_is_passed_on() {
    let echo = Origin::echo().await;
    let server = Ringway::start(&tcp_config(echo.addr, 1));
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    let data = vec![7u8; 100_000];
    s.write_all(&data).await.unwrap();
    s.shutdown().await.unwrap(); // FIN: no more from the client
    let mut back = Vec::new();
    timeout(STEP, s.read_to_end(&mut back))
        .await
        .expect("the origin's FIN comes through")
        .unwrap();
    assert_eq!(back.len(), data.len(), "everything, then EOF");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_origin_closes_the_client_at_once() {
    let server = Ringway::start(&tcp_config(Origin::refused(), 1));
    let t = Instant::now();
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    let mut buf = [0u8; 16];
    let r = timeout(STEP, s.read(&mut buf))
        .await
        .expect("closed within the bound");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let closed = server.log();
    assert!(
        closed.contains("tunnel closed") && closed.contains("Connection refused"),
        "the close line says why: {closed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_what_was_queued() {
    let echo = Origin::echo().await;
    let mut server = Ringway::start(&tcp_config(echo.addr, 1));
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    let data = vec![9u8; 300_000];
    s.write_all(&data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    timeout(STEP, s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    server.sigterm();
    let mut rest = Vec::new();
    let r = timeout(STEP, s.read_to_end(&mut rest))
        .await
        .expect("closed on shutdown");
    assert!(r.is_ok() && rest.is_empty(), "{r:?} {}", rest.len());
    let status = server.wait_exit(STEP).await.expect("exits");
    assert!(status.success(), "{status}");
}

#[test]
fn the_config_refuses_what_cannot_work() {
    for (extra, want) in [
        ("mode = \"tcp\"\n", "`listener.origin`: a `mode = \"tcp\"` listener needs"),
        ("mode = \"udp\"\norigin = \"127.0.0.1:1\"\n", "`listener.mode`: \"udp\" is not a mode"),
        ("origin = \"127.0.0.1:1\"\n", "`listener.origin`: only a `mode = \"tcp\"` listener"),
        (
            "mode = \"tcp\"\norigin = \"127.0.0.1:1\"\ntls = { cert = \"c.pem\", key = \"k.pem\" }\n",
            "TLS on a `mode = \"tcp\"` listener is not supported yet",
        ),
    ] {
        let path = write_config(&format!("[[listener]]\naddr = \"127.0.0.1:0\"\n{extra}"));
        let out = run_to_exit(&["check", "--config", path.to_str().unwrap()], STEP);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {err}");
        assert!(err.contains(want), "{extra}: {err}");
        let _ = std::fs::remove_file(path);
    }
}

/// An origin that never answers the connect (its accept queue is full, so the kernel drops
/// further SYNs): the client is closed after `connect_ms`, and the close line says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_never_answers_times_out() {
    let origin = ringway_e2e::origin::Unanswering::start().await;
    let addr = origin.addr;
    let server = Ringway::start(&format!(
        "{}[timeouts]\nconnect_ms = 1000\n",
        tcp_config(addr, 1)
    ));
    let t = Instant::now();
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    let mut buf = [0u8; 16];
    let r = timeout(STEP, s.read(&mut buf))
        .await
        .expect("closed within the bound");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    let took = t.elapsed();
    assert!(
        (Duration::from_millis(900)..=Duration::from_secs(5)).contains(&took),
        "closed after {took:?}; expected ~connect_ms = 1 s"
    );
    let log = server.log();
    assert!(log.contains("origin did not accept in time"), "{log}");
    drop(origin);
}
