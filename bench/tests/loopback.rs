//! Every workload against the in-process origin over `tcp://127.0.0.1`, short runs (≤ 1 s each),
//! asserting nonzero results and zero errors; and the error paths (refused, corrupted echo) are
//! counted rather than passed over. All traffic stays on 127.0.0.1 and every run is bounded by
//! its duration.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use ringway_bench::origin::{Origin, OriginMode, ECHO_CLOSE_BYTES};
use ringway_bench::report::Report;
use ringway_bench::target::Target;
use ringway_bench::workload::{bulk, connect, hold, latency, rate, Common};

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn common(addr: SocketAddr, threads: usize) -> Common {
    Common {
        target: Target::parse(&format!("tcp://{addr}")).unwrap(),
        tls: None,
        warmup: Duration::from_millis(200),
        duration: Duration::from_millis(600),
        threads,
        server_pid: Some(std::process::id()),
    }
}

fn assert_clean(r: &Report) {
    assert_eq!(
        r.error_total, 0,
        "errors: {:?} {:?}",
        r.errors, r.error_details
    );
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["workload"], r.workload);
    assert!(json["errors"].as_object().unwrap().is_empty());
}

#[test]
fn latency_and_rate_against_echo() {
    let origin = Origin::start(localhost(), OriginMode::Echo, 1).unwrap();
    for threads in [1, 2] {
        let c = common(origin.addr(), threads);
        let args = latency::Latency {
            connections: 4,
            size: 64,
        };
        let r = latency::run(&c, args);
        assert_clean(&r);
        assert_eq!(r.connections_up, 4);
        assert!(r.messages.unwrap() > 100, "{}", r.to_table());
        assert!(r.p50_us.unwrap() > 0.0 && r.max_us.unwrap() >= r.p99_us.unwrap());
        // The "server" here is this process (origin and client in one): its CPU is read from
        // /proc/PID/stat over the window, and per message.
        let cpu = r.server_cpu_percent.expect("server CPU reported");
        assert!(cpu > 0.0 && cpu < 100.0 * 8.0, "{cpu}");
        assert!(r.server_cpu_us_per_message.unwrap() > 0.0);
    }
    let big = latency::run(
        &common(origin.addr(), 1),
        latency::Latency {
            connections: 1,
            size: 200_000,
        },
    );
    assert_clean(&big);
    assert!(big.messages.unwrap() > 10);
    let args = rate::Rate {
        connections: 3,
        size: 100,
        rate: 2000,
    };
    let r = rate::run(&common(origin.addr(), 1), args);
    assert_clean(&r);
    let got = r.messages_per_sec.unwrap();
    assert!(
        (800.0..=2200.0).contains(&got),
        "achieved {got}/s of 2000/s"
    );
    origin.stop().unwrap();
}

#[test]
fn bulk_against_echo_and_sink() {
    let echo = Origin::start(localhost(), OriginMode::Echo, 2).unwrap();
    let args = bulk::Bulk {
        connections: 3,
        frame: 16384,
    };
    let r = bulk::run(&common(echo.addr(), 2), args);
    assert_clean(&r);
    assert!(
        r.tx_mbps.unwrap() > 1.0 && r.rx_mbps.unwrap() > 1.0,
        "{}",
        r.to_table()
    );
    echo.stop().unwrap();

    let sink = Origin::start(localhost(), OriginMode::Sink, 1).unwrap();
    let r = bulk::run(&common(sink.addr(), 1), args);
    assert_clean(&r);
    assert!(r.tx_mbps.unwrap() > 1.0 && r.rx_bytes == Some(0));
    sink.stop().unwrap();
}

#[test]
fn connect_and_hold_against_echo() {
    let origin = Origin::start(localhost(), OriginMode::Echo, 1).unwrap();
    let r = connect::run(
        &common(origin.addr(), 1),
        connect::Connect {
            concurrency: 3,
            ..Default::default()
        },
    );
    assert_clean(&r);
    assert!(r.setups.unwrap() > 50, "{}", r.to_table());
    let args = hold::Hold {
        tunnels: 300,
        pid: Some(std::process::id()),
        hold: Duration::from_millis(200),
        batch: 64,
        settle: Duration::from_millis(50),
        threads: 2,
    };
    let r = hold::run(&common(origin.addr(), 1).target, None, args);
    assert_clean(&r);
    assert_eq!(r.succeeded, Some(300));
    assert_eq!(r.connections_up, 300);
    assert!(r.rss_before_bytes.is_some() && r.rss_per_tunnel_bytes.is_some());
    origin.stop().unwrap();
}

#[test]
fn connect_with_origin_close_against_echo_close() {
    let origin = Origin::start(localhost(), OriginMode::EchoClose, 1).unwrap();
    for threads in [1, 2] {
        let args = connect::Connect {
            concurrency: 3,
            close: connect::CloseBy::Origin,
        };
        let r = connect::run(&common(origin.addr(), threads), args);
        assert_clean(&r);
        assert!(r.setups.unwrap() > 50, "{}", r.to_table());
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["params"]["close"], "origin");
        assert!(json["close_p50_us"].as_f64().unwrap() <= json["p50_us"].as_f64().unwrap());
    }
    // The client closing first works against it too (the origin sees EOF and closes).
    let r = connect::run(
        &common(origin.addr(), 1),
        connect::Connect {
            concurrency: 2,
            close: connect::CloseBy::Client,
        },
    );
    assert_clean(&r);
    assert!(r.setups.unwrap() > 50, "{}", r.to_table());
    origin.stop().unwrap();
}

#[test]
fn echo_close_echoes_a_split_message_then_ends_the_connection() {
    let origin = Origin::start(localhost(), OriginMode::EchoClose, 1).unwrap();
    let msg: Vec<u8> = (0..ECHO_CLOSE_BYTES as u8 + 40).collect();
    let mut sock = std::net::TcpStream::connect(origin.addr()).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The message in three pieces, the last with bytes beyond it: exactly the first 64 come
    // back, then EOF, and the extra bytes are discarded without a reset.
    for piece in [&msg[..1], &msg[1..40]] {
        sock.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    sock.write_all(&msg[40..]).unwrap();
    let mut got = Vec::new();
    sock.read_to_end(&mut got).unwrap();
    assert_eq!(got, &msg[..ECHO_CLOSE_BYTES as usize]);
    // The origin is half-closed and still reading: more bytes are discarded, not reset.
    sock.write_all(b"after the close").unwrap();
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = [0u8; 16];
    assert_eq!(sock.read(&mut rest).unwrap(), 0);
    // Fewer bytes than the limit and then EOF: what came is echoed, then the origin closes.
    let mut short = std::net::TcpStream::connect(origin.addr()).unwrap();
    short
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    short.write_all(&msg[..10]).unwrap();
    short.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    short.read_to_end(&mut got).unwrap();
    assert_eq!(got, &msg[..10]);
    origin.stop().unwrap();
}

#[test]
fn source_streams_the_pattern() {
    let origin = Origin::start(localhost(), OriginMode::Source, 1).unwrap();
    let mut sock = std::net::TcpStream::connect(origin.addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = vec![0u8; 1 << 20];
    sock.read_exact(&mut got).unwrap();
    assert!(ringway_bench::pattern::matches(0, &got));
    drop(sock);
    origin.stop().unwrap();
}

#[test]
fn refused_connections_are_counted() {
    let addr = TcpListener::bind(localhost())
        .unwrap()
        .local_addr()
        .unwrap();
    // The listener is dropped: nothing listens on `addr` any more.
    let r = latency::run(
        &common(addr, 1),
        latency::Latency {
            connections: 2,
            size: 64,
        },
    );
    assert_eq!(r.errors.get("connection_refused"), Some(&2));
    assert_eq!(r.connections_up, 0);
}

#[test]
fn a_corrupted_echo_is_an_error() {
    let listener = TcpListener::bind(localhost()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let mut echoed = 0usize;
        // Echo faithfully for a while, then flip one bit of one byte.
        while let Ok(n @ 1..) = sock.read(&mut buf) {
            if echoed < 6400 && echoed + n >= 6400 {
                buf[n - 1] ^= 0x01;
            }
            echoed += n;
            if sock.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let r = latency::run(
        &common(addr, 1),
        latency::Latency {
            connections: 1,
            size: 64,
        },
    );
    assert_eq!(r.errors.get("echo_mismatch"), Some(&1), "{}", r.to_table());
    assert_eq!(r.connections_up, 0);
    server.join().unwrap();
}
