//! The TLS client (tls:// and wss://) against an in-process rustls server whose certificates
//! come from a test CA made per test with rcgen: every workload over wss (a small WebSocket echo
//! server behind the TLS session, built on `ringway_proto`'s handshake parser and decoder) and
//! over tls (raw echo, and echo-close for `connect --close origin`), session resumption on and
//! off for TLS 1.3 and TLS 1.2, the refusals a client must report (an untrusted CA, a name the
//! certificate does not hold), and the transport itself read through a small buffer under
//! edge-triggered epoll. All on 127.0.0.1; every server thread ends when its client does or after
//! a read timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use ringway_bench::client::tls::{TlsClient, TlsOptions};
use ringway_bench::client::{Io, Transport, IO_CHUNK};
use ringway_bench::pattern;
use ringway_bench::report::Report;
use ringway_bench::target::Target;
use ringway_bench::workload::connect::{CloseBy, ROUND_TRIP_BYTES};
use ringway_bench::workload::{bulk, connect, hold, latency, rate, Common};
use ringway_proto::ws::encoder::{close_frame, control_frame};
use ringway_proto::ws::handshake::{parse_upgrade, write_switching_protocols};
use ringway_proto::ws::{CloseCode, Decoder, DecoderLimits, Event, FrameHeader, Opcode};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// A test CA and a server certificate it signed, the CA written as PEM for `--ca`.
struct Pki {
    dir: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

impl Pki {
    /// A CA and a certificate for `names`.
    fn new(tag: &str, names: &[&str]) -> Pki {
        let dir = std::env::temp_dir().join(format!("ringbench-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("ringbench test CA {tag}"));
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        Pki {
            dir,
            chain: vec![leaf.der().clone()],
            key: key.serialize_der(),
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server config with these versions, sending session tickets as ringway does.
    fn server(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)
            .unwrap();
        config.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the server does inside the TLS session.
#[derive(Clone, Copy)]
enum Behaviour {
    /// RFC 6455 upgrade, then every payload byte echoed in binary frames; Close answered.
    WsEcho,
    /// Every byte echoed; on the client's close_notify (or EOF), close_notify and FIN.
    RawEcho,
    /// The first `ROUND_TRIP_BYTES` echoed, then close_notify and FIN; drains to EOF.
    RawEchoClose,
    /// `BIG` pattern bytes in records of many sizes, then close_notify and FIN.
    Source,
}

/// Bytes `Behaviour::Source` sends.
const BIG: usize = 3 * 1024 * 1024 + 77;

struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    fn start(config: Arc<ServerConfig>, behaviour: Behaviour) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let acceptor = std::thread::spawn(move || {
            for sock in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(sock) = sock {
                    let config = config.clone();
                    std::thread::spawn(move || serve(sock, config, behaviour));
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

type Tls = StreamOwned<ServerConnection, TcpStream>;

fn serve(sock: TcpStream, config: Arc<ServerConfig>, behaviour: Behaviour) {
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let Ok(conn) = ServerConnection::new(config) else {
        return;
    };
    let mut tls = StreamOwned::new(conn, sock);
    let _ = match behaviour {
        Behaviour::WsEcho => ws_echo(&mut tls),
        Behaviour::RawEcho => raw_echo(&mut tls, usize::MAX),
        Behaviour::RawEchoClose => raw_echo(&mut tls, ROUND_TRIP_BYTES),
        Behaviour::Source => source(&mut tls),
    };
}

/// Sends close_notify and FIN, then reads until the client's EOF (or an error).
fn close(tls: &mut Tls) -> std::io::Result<()> {
    tls.conn.send_close_notify();
    tls.flush()?;
    tls.sock.shutdown(std::net::Shutdown::Write)?;
    let mut buf = [0u8; 4096];
    while let Ok(1..) = tls.read(&mut buf) {}
    Ok(())
}

fn raw_echo(tls: &mut Tls, limit: usize) -> std::io::Result<()> {
    let mut buf = vec![0u8; 65536];
    let mut echoed = 0;
    while echoed < limit {
        let n = match tls.read(&mut buf[..(limit - echoed).min(65536)]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tls.write_all(&buf[..n])?;
        echoed += n;
    }
    close(tls)
}

fn source(tls: &mut Tls) -> std::io::Result<()> {
    let mut sent = 0;
    let mut size = 1;
    while sent < BIG {
        let chunk = pattern::window(sent as u64, size.min(BIG - sent));
        tls.write_all(chunk)?;
        sent += chunk.len();
        size = size * 7 % 40_000 + 1;
    }
    close(tls)
}

fn ws_echo(tls: &mut Tls) -> std::io::Result<()> {
    let mut buf = vec![0u8; 65536];
    let mut have = 0;
    let (req, head) = loop {
        match tls.read(&mut buf[have..])? {
            0 => return Ok(()),
            n => have += n,
        }
        match parse_upgrade(&buf[..have], 8192) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => continue,
            Err(_) => return Ok(()),
        }
    };
    let mut out = Vec::new();
    write_switching_protocols(&req, &mut out);
    tls.write_all(&out)?;
    buf.copy_within(head..have, 0);
    have -= head;
    let mut decoder = Decoder::new(DecoderLimits::default());
    loop {
        let mut pos = 0;
        while pos < have {
            let d = decoder.decode(&mut buf[pos..have]);
            out.clear();
            let data = &buf[pos + d.data.start..pos + d.data.end];
            if !data.is_empty() {
                push(&mut out, Opcode::Binary, data);
            }
            pos += d.consumed;
            let mut control = [0u8; 127];
            match d.event {
                Some(Event::Ping) => {
                    let n = control_frame(Opcode::Pong, decoder.control_payload(), &mut control);
                    out.extend_from_slice(&control[..n]);
                }
                Some(Event::Close { .. }) => {
                    let n = close_frame(Some(CloseCode::NORMAL), "", &mut control);
                    out.extend_from_slice(&control[..n]);
                    tls.write_all(&out)?;
                    return close(tls);
                }
                Some(Event::Error(_)) => return Ok(()),
                Some(Event::Pong) | None => {}
            }
            tls.write_all(&out)?;
        }
        have = match tls.read(&mut buf)? {
            0 => return Ok(()),
            n => n,
        };
    }
}

fn push(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    let h = FrameHeader {
        fin: true,
        rsv: 0,
        opcode: opcode as u8,
        mask: None,
        payload_len: payload.len() as u64,
    };
    let at = out.len();
    out.resize(at + h.buffer_len(), 0);
    h.emit(&mut out[at..]);
    out.extend_from_slice(payload);
}

fn common(url: &str, opts: &TlsOptions) -> Common {
    let target = Target::parse(url).unwrap();
    Common {
        tls: Some(TlsClient::new(&target, opts).unwrap()),
        target,
        warmup: Duration::from_millis(200),
        duration: Duration::from_millis(600),
        threads: 1,
        server_pid: None,
    }
}

fn assert_clean(r: &Report) {
    assert_eq!(r.error_total, 0, "{}", r.to_table());
}

fn connect_with(c: &Common, close: CloseBy) -> Report {
    connect::run(
        c,
        connect::Connect {
            concurrency: 2,
            close,
        },
    )
}

#[test]
fn every_workload_over_wss() {
    let pki = Pki::new("wss", &["localhost", "127.0.0.1"]);
    let server = Server::start(
        pki.server(&[&rustls::version::TLS13, &rustls::version::TLS12]),
        Behaviour::WsEcho,
    );
    let url = format!("wss://localhost:{}/echo", server.addr.port());
    let c = common(&url, &TlsOptions::trusting(pki.ca()));
    for size in [1000, 200_000] {
        let r = latency::run(
            &c,
            latency::Latency {
                connections: 3,
                size,
            },
        );
        assert_clean(&r);
        assert!(r.messages.unwrap() > 10, "{}", r.to_table());
        assert!(
            r.tls.as_deref().unwrap().starts_with("TLSv1_3 "),
            "{:?}",
            r.tls
        );
    }
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
            frame: 16384,
        },
    );
    assert_clean(&r);
    assert!(r.rx_bytes.unwrap() > 1_000_000, "{}", r.to_table());
    let r = connect_with(&c, CloseBy::Client);
    assert_clean(&r);
    let setups = r.setups.unwrap();
    assert!(setups > 20, "{}", r.to_table());
    assert_eq!(r.params.resume, Some(true));
    // Only the first setup of each loop can miss a session.
    assert!(r.tls_resumed.unwrap() + 2 >= setups, "{}", r.to_table());
    let args = hold::Hold {
        tunnels: 20,
        pid: None,
        hold: Duration::from_millis(100),
        batch: 8,
        settle: Duration::ZERO,
        threads: 1,
    };
    let r = hold::run(&c.target, c.tls.as_ref(), args);
    assert_clean(&r);
    assert_eq!(r.succeeded, Some(20));
}

#[test]
fn resumption_on_and_off_for_both_versions() {
    let pki = Pki::new("resume", &["127.0.0.1"]);
    for (version, name) in [
        (&rustls::version::TLS13, "TLSv1_3"),
        (&rustls::version::TLS12, "TLSv1_2"),
    ] {
        let server = Server::start(pki.server(&[version]), Behaviour::WsEcho);
        let url = format!("wss://127.0.0.1:{}/echo", server.addr.port());
        let mut opts = TlsOptions::trusting(pki.ca());
        let r = connect_with(&common(&url, &opts), CloseBy::Client);
        assert_clean(&r);
        assert!(r.tls.as_deref().unwrap().starts_with(name), "{:?}", r.tls);
        let setups = r.setups.unwrap();
        assert!(r.tls_resumed.unwrap() + 2 >= setups, "{}", r.to_table());
        assert!(r.tls_resumed_percent.unwrap() > 50.0, "{}", r.to_table());
        opts.resume = false;
        let r = connect_with(&common(&url, &opts), CloseBy::Client);
        assert_clean(&r);
        assert!(r.setups.unwrap() > 20, "{}", r.to_table());
        assert_eq!(
            (r.params.resume, r.tls_resumed),
            (Some(false), Some(0)),
            "{}",
            r.to_table()
        );
    }
}

#[test]
fn raw_tcp_over_tls_either_side_closing() {
    let pki = Pki::new("raw", &["127.0.0.1"]);
    let config = pki.server(&[&rustls::version::TLS13]);
    let opts = TlsOptions::trusting(pki.ca());
    let server = Server::start(config.clone(), Behaviour::RawEcho);
    let c = common(&format!("tls://127.0.0.1:{}", server.addr.port()), &opts);
    let r = latency::run(
        &c,
        latency::Latency {
            connections: 2,
            size: 64,
        },
    );
    assert_clean(&r);
    assert!(r.messages.unwrap() > 100, "{}", r.to_table());
    let r = bulk::run(
        &c,
        bulk::Bulk {
            connections: 2,
            frame: 16384,
        },
    );
    assert_clean(&r);
    assert!(r.rx_bytes.unwrap() > 1_000_000, "{}", r.to_table());
    // The client's close_notify + FIN, answered by the server's.
    let r = connect_with(&c, CloseBy::Client);
    assert_clean(&r);
    assert!(r.setups.unwrap() > 20, "{}", r.to_table());
    let server = Server::start(config, Behaviour::RawEchoClose);
    let c = common(&format!("tls://127.0.0.1:{}", server.addr.port()), &opts);
    let r = connect_with(&c, CloseBy::Origin);
    assert_clean(&r);
    assert!(r.setups.unwrap() > 20, "{}", r.to_table());
    assert!(r.close_p50_us.unwrap() > 0.0, "{}", r.to_table());
}

#[test]
fn untrusted_or_misnamed_certificates_fail_the_handshake() {
    let pki = Pki::new("trust", &["localhost"]);
    let stranger = Pki::new("stranger", &["localhost"]);
    let server = Server::start(pki.server(&[&rustls::version::TLS13]), Behaviour::WsEcho);
    let port = server.addr.port();
    let lat = |c: &Common| {
        latency::run(
            c,
            latency::Latency {
                connections: 1,
                size: 64,
            },
        )
    };
    let cases = [
        (
            format!("wss://localhost:{port}/echo"),
            stranger.ca(),
            "UnknownIssuer",
        ),
        (
            format!("wss://127.0.0.1:{port}/echo"),
            pki.ca(),
            "not valid for name",
        ),
    ];
    for (url, ca, why) in cases {
        let r = lat(&common(&url, &TlsOptions::trusting(ca)));
        assert_eq!(
            r.errors.get("tls_handshake_failed"),
            Some(&1),
            "{}",
            r.to_table()
        );
        let detail = &r.error_details["tls_handshake_failed"];
        assert!(detail.contains(why), "{detail}");
    }
    let insecure = TlsOptions {
        ca: None,
        insecure: true,
        resume: true,
    };
    let r = lat(&common(&format!("wss://127.0.0.1:{port}/echo"), &insecure));
    assert_clean(&r);
    assert!(r.messages.unwrap() > 100, "{}", r.to_table());
}

/// Reads everything the server sends through a 1000-byte buffer, stopping only where the
/// transport says the socket is drained, as every workload does under edge-triggered epoll: a
/// wrong `may_have_more` hangs here (and fails at the deadline) instead of passing.
#[test]
fn small_reads_under_edge_triggered_epoll_see_every_byte() {
    use mio::{Events, Interest, Poll, Token};
    let pki = Pki::new("small", &["127.0.0.1"]);
    let server = Server::start(pki.server(&[&rustls::version::TLS13]), Behaviour::Source);
    let target = Target::parse(&format!("tls://127.0.0.1:{}", server.addr.port())).unwrap();
    let client = TlsClient::new(&target, &TlsOptions::trusting(pki.ca())).unwrap();
    let conn = rustls::ClientConnection::new(client.thread_config(), client.server_name().clone())
        .unwrap();
    let mut poll = Poll::new().unwrap();
    let mut sock = mio::net::TcpStream::connect(server.addr).unwrap();
    poll.registry()
        .register(&mut sock, Token(0), Interest::READABLE | Interest::WRITABLE)
        .unwrap();
    let mut t = Transport::tls(sock, conn);
    let mut io = Io::new();
    let mut events = Events::with_capacity(8);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = [0u8; 1000];
    let (mut got, mut handshaken, mut eof) = (0usize, false, false);
    while !eof {
        assert!(Instant::now() < deadline, "stuck after {got} bytes");
        poll.poll(&mut events, Some(Duration::from_millis(500)))
            .unwrap();
        if !handshaken {
            // A connect still in progress fails the first write: wait for the next edge.
            handshaken = matches!(t.handshake(&mut io.tls_in), Ok(true));
            if !handshaken {
                continue;
            }
        }
        loop {
            match t.read(&mut out, &mut io.tls_in).unwrap() {
                Some(0) => {
                    eof = true;
                    break;
                }
                Some(n) => {
                    assert!(pattern::matches(got as u64, &out[..n]), "at {got}");
                    got += n;
                }
                None => break,
            }
            if !t.may_have_more() {
                break;
            }
        }
    }
    assert_eq!(got, BIG);
    assert!(IO_CHUNK > out.len());
}
