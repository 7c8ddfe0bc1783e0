//! `mode = "tcp"` listeners: plain TCP (L4) relays on the same engine. Bytes pass unchanged
//! both ways (2 MiB of random bytes each way, 200 connections at once), a half-close is passed
//! on either way (the origin answers after the client's FIN; the client still sends after the
//! origin's), a dead origin closes the client at once, a
//! shutdown delivers what was queued, and the config refuses what cannot work.
//!
//! Bulk directions splice (the figures count the spliced bytes); with splicing off nothing is
//! spliced; with fewer pipes than connections the rest copy, byte-exact; and clients that never
//! read hold at most the worker's pipes, which the send stall gives back.

use std::time::{Duration, Instant};

use rand::RngCore;
use ringway_e2e::origin::Origin;
use ringway_e2e::server::{refused_config, spliced_bytes, Ringway};
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
    let spliced = spliced_bytes(&text);
    assert!(
        spliced > 0 && spliced <= 2 * 2097152,
        "a 2 MiB transfer moves to splicing: {text}"
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

/// 200 connections on 2 workers with 8 pipes each: the first bulk directions splice, the rest
/// find no pipe and copy; every byte comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_connections_at_once() {
    let echo = Origin::echo().await;
    let config = format!("{}[engine]\nmax_pipes = 8\n", tcp_config(echo.addr, 2));
    let server = Ringway::start(&config);
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
    let out = server.ringctl(&["stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(spliced_bytes(&text) > 0, "{text}");
}

/// An urgent (MSG_OOB) byte in a splicing direction: splice(2) stops at the urgent mark and
/// never steps over it, so the direction goes back to copying, which does. Every ordinary byte
/// arrives, then EOF, within the bound (a relay that kept polling would spin and never finish).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_urgent_byte_does_not_wedge_a_splicing_direction() {
    let echo = Origin::echo().await;
    let server = Ringway::start(&tcp_config(echo.addr, 1));
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    let (a, b) = (vec![1u8; 64 * 1024], vec![2u8; 256 * 1024]);
    s.write_all(&a).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await; // the direction splices by now
    socket2::SockRef::from(&s).send_out_of_band(b"!").unwrap();
    s.write_all(&b).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    timeout(STEP, s.read_to_end(&mut back))
        .await
        .expect("every byte and EOF within the bound")
        .unwrap();
    assert_eq!(back.len(), a.len() + b.len(), "all but the urgent byte");
    assert!(back[..a.len()] == a[..] && back[a.len()..] == b[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splicing_off_copies_everything() {
    let echo = Origin::echo().await;
    let config = format!(
        "{}[engine]\nsplice_min_bytes = 0\n",
        tcp_config(echo.addr, 1)
    );
    let server = Ringway::start(&config);
    let mut data = vec![0u8; 1 << 20];
    rand::thread_rng().fill_bytes(&mut data);
    let s = TcpStream::connect(server.addr()).await.unwrap();
    assert!(round_trip(s, data.clone()).await == data);
    let out = server.ringctl(&["stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1048576 B to client") && spliced_bytes(&text) == 0,
        "{text}"
    );
}

/// Pipes the ringway process has open (from /proc).
fn pipes_open(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|t| t.to_string_lossy().starts_with("pipe:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// 40 clients send 2 MiB each and never read: their directions fill pipes until none is left
/// (4 per worker), a normal connection still moves 1 MiB both ways meanwhile (copying), and
/// the send stall ends the stuck ones; the pipes that held their unread bytes are closed, not
/// pooled, so the process never holds more than the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_hold_at_most_the_pipe_cap() {
    let echo = Origin::echo().await;
    let config = format!(
        "{}[engine]\nmax_pipes = 4\n[timeouts]\nsend_stall_ms = 1500\n",
        tcp_config(echo.addr, 1)
    );
    let server = Ringway::start(&config);
    let before = pipes_open(server.pid());
    let mut stuck = Vec::new();
    for _ in 0..40 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut s = sock.connect(server.addr()).await.unwrap();
        let chunk = vec![5u8; 256 * 1024];
        // Writes until the path is full (the client never reads, so it fills up).
        for _ in 0..8 {
            if timeout(Duration::from_millis(200), s.write_all(&chunk))
                .await
                .is_err()
            {
                break;
            }
        }
        stuck.push(s);
    }
    let held = pipes_open(server.pid()) - before;
    eprintln!("pipe ends held by stuck clients: {held}");
    assert!(
        held > 0 && held <= 2 * 4,
        "{held} pipe ends open: the stuck clients hold pipes, at most the cap of 4"
    );
    let mut data = vec![0u8; 1 << 20];
    rand::thread_rng().fill_bytes(&mut data);
    let s = TcpStream::connect(server.addr()).await.unwrap();
    assert!(
        round_trip(s, data.clone()).await == data,
        "a normal connection still works"
    );
    let closed = server
        .await_log_line(&["stopped reading"], Duration::from_secs(10))
        .await;
    assert!(
        closed.is_some(),
        "the stall ends stuck clients: {}",
        server.log_tail()
    );
    drop(stuck);
    let held = pipes_open(server.pid()) - before;
    assert!(held <= 2 * 4, "{held} pipe ends open after the stall");
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

/// The other way round: the origin half-closes first. Its FIN reaches the client after its bytes,
/// and the client's direction stays open: everything the client sends after that EOF still
/// reaches the origin, then the client's FIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_half_close_leaves_the_client_direction_open() {
    let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = origin.local_addr().unwrap();
    let counted = tokio::spawn(async move {
        let (mut s, _) = origin.accept().await.unwrap();
        s.write_all(b"bye").await.unwrap();
        s.shutdown().await.unwrap(); // FIN first, then read until the client's
        let mut got = Vec::new();
        timeout(STEP, s.read_to_end(&mut got))
            .await
            .expect("the client's bytes and FIN come through")
            .unwrap();
        got
    });
    let server = Ringway::start(&tcp_config(addr, 1));
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    let mut first = Vec::new();
    timeout(STEP, s.read_to_end(&mut first))
        .await
        .expect("the origin's FIN comes through")
        .unwrap();
    assert_eq!(first, b"bye");
    let mut data = vec![0u8; 300_000];
    rand::thread_rng().fill_bytes(&mut data);
    s.write_all(&data).await.unwrap();
    s.shutdown().await.unwrap();
    let got = timeout(STEP, counted).await.expect("origin done").unwrap();
    assert!(
        got == data,
        "{} of {} bytes, or changed",
        got.len(),
        data.len()
    );
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

/// SIGTERM while a slow reader still has bytes coming and its writer never stops: ringway stops
/// relaying, sends what it holds, half-closes, and stays until the kernel has delivered every
/// byte it accepted (the reader's socket acknowledged them), rather than exiting: the kernel
/// would then answer the client's next bytes with a reset and drop what it still held. The
/// client reads exactly what the close line counts, then EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_until_a_slow_reader_has_every_byte() {
    let echo = Origin::echo().await;
    let config = format!(
        "{}[timeouts]\nclose_ms = 20000\nshutdown_ms = 20000\n",
        tcp_config(echo.addr, 1)
    );
    let mut server = Ringway::start(&config);
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    let s = sock.connect(server.addr()).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        // Keeps writing (up to 256 MiB) while ringway shuts down: its input never ends.
        let chunk = vec![3u8; 64 * 1024];
        for _ in 0..4096 {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        wr
    });
    let mut total = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    let start = Instant::now();
    let mut signalled = false;
    loop {
        if !signalled && start.elapsed() > Duration::from_millis(300) {
            server.sigterm();
            signalled = true;
        }
        match timeout(STEP, rd.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => panic!("the connection was cut after {total} bytes: {e}"),
            Err(_) => panic!("no byte nor EOF within {STEP:?} after {total} bytes"),
        }
        tokio::time::sleep(Duration::from_millis(2)).await; // a slow reader
        assert!(start.elapsed() < Duration::from_secs(60), "bounded");
    }
    writer.abort();
    let status = server.wait_exit(STEP).await.expect("exits");
    assert!(status.success(), "{status}");
    let log = server.log();
    let counted: usize = log
        .split("to_client=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("a close line with to_client: {log}"));
    assert!(total > 0);
    assert_eq!(
        total, counted,
        "every byte ringway accepted for the client arrived"
    );
}

#[test]
fn the_config_refuses_what_cannot_work() {
    let l4 = "mode = \"tcp\"\norigin = \"127.0.0.1:1\"\n";
    for (engine, extra, want) in [
        ("", "mode = \"tcp\"\n", "`listener.origin`: a `mode = \"tcp\"` listener needs"),
        ("", "mode = \"udp\"\norigin = \"127.0.0.1:1\"\n", "`listener.mode`: \"udp\" is not a mode"),
        ("", "origin = \"127.0.0.1:1\"\n", "`listener.origin`: only a `mode = \"tcp\"` listener"),
        (
            "",
            "mode = \"tcp\"\norigin = \"127.0.0.1:1\"\ntls = { cert = \"c.pem\", key = \"k.pem\" }\n",
            "TLS on a `mode = \"tcp\"` listener is not supported yet",
        ),
        (
            "[engine]\npipe_size = 100\n",
            l4,
            "`engine.pipe_size` must be between 4096 and 1048576",
        ),
    ] {
        let err = refused_config(&format!("{engine}[[listener]]\naddr = \"127.0.0.1:0\"\n{extra}"));
        assert!(err.contains(want), "{engine}{extra}: {err}");
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
