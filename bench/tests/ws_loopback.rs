//! The ws:// client against an independent server: a small blocking WebSocket echo server built
//! on `ringway_proto`'s handshake parser and client-frame decoder, which re-frames every echo
//! into random-sized fragments (binary + continuations) and slips pings in between. Also the
//! refusals a client must report: a non-101 status and a wrong Sec-WebSocket-Accept. The same
//! server can play a tunnel whose origin closes after the echo (`connect --close origin`): Close
//! frame, then the TCP close once the client's Close is in (or right behind its own Close), and
//! the ways that can go wrong. All on 127.0.0.1; every server thread ends when its client does or
//! after a read timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ringway_bench::report::Report;
use ringway_bench::target::Target;
use ringway_bench::workload::connect::{CloseBy, ROUND_TRIP_BYTES};
use ringway_bench::workload::{bulk, connect, hold, latency, rate, Common};
use ringway_proto::ws::encoder::{close_frame, control_frame};
use ringway_proto::ws::handshake::{parse_upgrade, write_switching_protocols};
use ringway_proto::ws::{CloseCode, Decoder, DecoderLimits, Event, FrameHeader, Opcode};

/// What the test server does after reading the Upgrade request.
#[derive(Clone, Copy)]
enum Behaviour {
    Echo,
    Refuse503,
    WrongAccept,
    /// Echoes the first `ROUND_TRIP_BYTES` payload bytes, then sends Close `code`; once the
    /// client's Close is in, ends the TCP connection first (RFC 6455 §7.1.1). With `early_fin` it
    /// half-closes right behind its Close instead, so the Close and the EOF arrive together.
    OriginClose {
        code: u16,
        early_fin: bool,
    },
    /// Echoes the first `ROUND_TRIP_BYTES` payload bytes, then ends the TCP connection without a
    /// Close frame.
    DropAfterEcho,
}

struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    fn start(behaviour: Behaviour) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let acceptor = std::thread::spawn(move || {
            for (seed, sock) in listener.incoming().enumerate() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(sock) = sock {
                    std::thread::spawn(move || serve(sock, behaviour, seed as u64));
                }
            }
        });
        Server {
            addr,
            stop,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn serve(mut sock: TcpStream, behaviour: Behaviour, seed: u64) {
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut buf = vec![0u8; 65536];
    let mut have = 0;
    let (req, head) = loop {
        match sock.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
        match parse_upgrade(&buf[..have], 8192) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => continue,
            Err(_) => return,
        }
    };
    let mut out = Vec::new();
    match behaviour {
        Behaviour::Echo | Behaviour::OriginClose { .. } | Behaviour::DropAfterEcho => {
            write_switching_protocols(&req, &mut out)
        }
        Behaviour::WrongAccept => out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
        ),
        Behaviour::Refuse503 => {
            out.extend_from_slice(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        }
    }
    let upgraded = matches!(
        behaviour,
        Behaviour::Echo | Behaviour::OriginClose { .. } | Behaviour::DropAfterEcho
    );
    if sock.write_all(&out).is_err() || !upgraded {
        return;
    }
    // Origin-close behaviours: payload bytes echoed so far, and whether our Close went out.
    let limit = match behaviour {
        Behaviour::Echo => u64::MAX,
        _ => ROUND_TRIP_BYTES as u64,
    };
    let mut echoed = 0u64;
    let mut close_sent = false;
    buf.copy_within(head..have, 0);
    have -= head;
    let mut decoder = Decoder::new(DecoderLimits::default());
    let mut in_message = false;
    loop {
        let mut pos = 0;
        while pos < have {
            let d = decoder.decode(&mut buf[pos..have]);
            out.clear();
            reframe(
                &buf[pos + d.data.start..pos + d.data.end],
                &mut rng,
                &mut in_message,
                &mut out,
            );
            pos += d.consumed;
            echoed += d.data.len() as u64;
            let mut control = [0u8; 127];
            let done = match d.event {
                Some(Event::Ping) => {
                    let n = control_frame(Opcode::Pong, decoder.control_payload(), &mut control);
                    out.extend_from_slice(&control[..n]);
                    false
                }
                Some(Event::Close { .. }) if close_sent => {
                    // The client answered our Close: the server closes the TCP connection first.
                    let _ = sock.shutdown(std::net::Shutdown::Write);
                    drain_to_eof(&mut sock, &mut buf);
                    return;
                }
                Some(Event::Close { .. }) => {
                    let n = close_frame(Some(CloseCode::NORMAL), "", &mut control);
                    out.extend_from_slice(&control[..n]);
                    true
                }
                Some(Event::Error(_)) => return,
                Some(Event::Pong) | None => false,
            };
            if sock.write_all(&out).is_err() || done {
                return;
            }
            if echoed >= limit && !close_sent {
                match behaviour {
                    Behaviour::OriginClose { code, early_fin } => {
                        let n = close_frame(Some(CloseCode(code)), "origin closed", &mut control);
                        if sock.write_all(&control[..n]).is_err() {
                            return;
                        }
                        if early_fin {
                            let _ = sock.shutdown(std::net::Shutdown::Write);
                        }
                        close_sent = true;
                    }
                    _ => {
                        let _ = sock.shutdown(std::net::Shutdown::Write);
                        drain_to_eof(&mut sock, &mut buf);
                        return;
                    }
                }
            }
        }
        have = match sock.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
    }
}

/// Reads until EOF, an error or the read timeout.
fn drain_to_eof(sock: &mut TcpStream, buf: &mut [u8]) {
    while let Ok(1..) = sock.read(buf) {}
}

/// Echoes `data` as random-sized fragments, finishing the message only sometimes, with pings.
fn reframe(data: &[u8], rng: &mut SmallRng, in_message: &mut bool, out: &mut Vec<u8>) {
    for piece in data.chunks(rng.gen_range(1..=700)) {
        let fin = rng.gen_bool(0.5);
        let opcode = if *in_message { 0 } else { 2 };
        push(out, fin, opcode, piece);
        *in_message = !fin;
        if rng.gen_ratio(1, 5) {
            push(out, true, 9, b"are you there?");
        }
    }
}

fn push(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8]) {
    let h = FrameHeader {
        fin,
        rsv: 0,
        opcode,
        mask: None,
        payload_len: payload.len() as u64,
    };
    let at = out.len();
    out.resize(at + h.buffer_len(), 0);
    h.emit(&mut out[at..]);
    out.extend_from_slice(payload);
}

fn common(addr: SocketAddr) -> Common {
    Common {
        target: Target::parse(&format!("ws://{addr}/echo")).unwrap(),
        tls: None,
        warmup: Duration::from_millis(200),
        duration: Duration::from_millis(600),
        threads: 1,
        server_pid: None,
    }
}

fn assert_clean(r: &Report) {
    assert_eq!(r.error_total, 0, "{}", r.to_table());
}

#[test]
fn every_workload_over_a_reframing_server() {
    let server = Server::start(Behaviour::Echo);
    let c = common(server.addr);
    let r = latency::run(
        &c,
        latency::Latency {
            connections: 3,
            size: 1000,
        },
    );
    assert_clean(&r);
    assert!(r.messages.unwrap() > 50, "{}", r.to_table());
    let r = rate::run(
        &c,
        rate::Rate {
            connections: 2,
            size: 64,
            rate: 500,
        },
    );
    assert_clean(&r);
    assert!(r.messages.unwrap() > 100, "{}", r.to_table());
    let r = bulk::run(
        &c,
        bulk::Bulk {
            connections: 2,
            frame: 5000,
        },
    );
    assert_clean(&r);
    assert!(r.rx_bytes.unwrap() > 100_000, "{}", r.to_table());
    let r = connect::run(
        &c,
        connect::Connect {
            concurrency: 2,
            ..Default::default()
        },
    );
    assert_clean(&r);
    assert!(r.setups.unwrap() > 20, "{}", r.to_table());
    let args = hold::Hold {
        tunnels: 40,
        pid: None,
        hold: Duration::from_millis(100),
        batch: 8,
        settle: Duration::ZERO,
        threads: 1,
    };
    let r = hold::run(&c.target, None, args);
    assert_clean(&r);
    assert_eq!(r.succeeded, Some(40));
}

#[test]
fn refusals_are_reported_with_their_status() {
    let server = Server::start(Behaviour::Refuse503);
    let r = latency::run(
        &common(server.addr),
        latency::Latency {
            connections: 3,
            size: 64,
        },
    );
    assert_eq!(
        r.errors.get("handshake_status_503"),
        Some(&3),
        "{}",
        r.to_table()
    );
    let server = Server::start(Behaviour::WrongAccept);
    let r = latency::run(
        &common(server.addr),
        latency::Latency {
            connections: 1,
            size: 64,
        },
    );
    assert_eq!(
        r.errors.get("handshake_invalid"),
        Some(&1),
        "{}",
        r.to_table()
    );
    assert_eq!(
        r.error_details["handshake_invalid"],
        "wrong Sec-WebSocket-Accept"
    );
}

fn origin_close(c: &Common) -> Report {
    connect::run(
        c,
        connect::Connect {
            concurrency: 2,
            close: CloseBy::Origin,
        },
    )
}

#[test]
fn origin_initiated_close_over_a_reframing_server() {
    for early_fin in [false, true] {
        let server = Server::start(Behaviour::OriginClose {
            code: 1000,
            early_fin,
        });
        let r = origin_close(&common(server.addr));
        assert_clean(&r);
        assert!(r.setups.unwrap() > 20, "{}", r.to_table());
        assert_eq!(r.params.close, Some("origin"));
        let (p50, close) = (r.p50_us.unwrap(), r.close_p50_us.unwrap());
        assert!(close > 0.0 && close <= p50, "{}", r.to_table());
    }
}

#[test]
fn origin_close_errors_are_reported() {
    let cases = [
        (
            Behaviour::OriginClose {
                code: 1011,
                early_fin: false,
            },
            "Close 1011 instead of Close 1000",
        ),
        (Behaviour::DropAfterEcho, "EOF instead of a Close frame"),
    ];
    for (behaviour, detail) in cases {
        let server = Server::start(behaviour);
        let r = origin_close(&common(server.addr));
        assert!(
            r.errors.contains_key("unexpected_close"),
            "{}",
            r.to_table()
        );
        assert_eq!(r.error_details["unexpected_close"], detail);
    }
}
