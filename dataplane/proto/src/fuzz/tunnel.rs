//! The tunnel harness: a [`Tunnel`] driven through an event sequence read from the input by a
//! driver that keeps the call contract of `tunnel/mod.rs` (intents drained after every call,
//! timeouts handled when due, reads paused by backpressure and by the overhead limit, as the
//! server's worker does) and checks every intent.
//!
//! Checked after every event: no intent after `Finished`; nothing reaches the origin before the
//! 101 or after its close; nothing reaches the client after our Close frame, its FIN or its
//! close; every response is well-formed HTTP and every later byte whole unmasked server frames;
//! every Close frame carries a legal code (RFC 6455 §7.4) and a UTF-8 reason; queued bytes stay
//! within the stated bounds ([`Flow`]: the cap plus one read; pipelined bytes: the header limit
//! plus 64 KiB; overhead: the burst plus one read); byte counters match; `poll_timeout` is never
//! in the past once due timeouts are handled; at `Finished` every socket asked for is closed and
//! the close record matches what was sent. At the end: the bytes the origin got are the data the
//! reference decoder finds in the client's stream, and a shutdown ends any tunnel once its close
//! timeout has passed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::reference::{self, Seen};
use super::{legal_close_code, FrameBuilder, Input};
use crate::route::{Route, RouteTable};
use crate::tunnel::{
    CloseReason, Flow, Intent, Side, Tunnel, TunnelConfig, OVERHEAD_BURST, OVERHEAD_RATE,
};
use crate::ws::encoder::{server_header_len, HEADROOM};
use crate::ws::frame::FrameHeader;
use crate::ws::handshake::parse_upgrade;

const DB: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5432);
const API: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 6379);

/// The most the client-bytes events of this driver deliver in one read.
const MAX_CLIENT_READ: usize = 64 << 10;
/// The most the origin-bytes events deliver in one read.
const MAX_ORIGIN_READ: usize = 28 << 10;
/// Bytes a tunnel may hold before the 101 beyond the header limit (`handle_client_bytes`).
const PIPELINE_SLACK: usize = 64 << 10;

/// Layout: five config bytes (header limit, payload limit, handshake and connect timeouts,
/// close and idle timeouts, backpressure cap), then events: a kind byte (low 4 bits) and its
/// arguments, see [`Driver::step`].
pub fn tunnel(data: &[u8]) {
    let mut input = Input::new(data);
    let mut driver = Driver::new(&mut input);
    while !input.is_empty() {
        driver.step(&mut input);
        driver.check();
    }
    driver.check_stream();
    driver.shut_down();
}

/// The driver, and what each peer has seen.
struct Driver {
    tunnel: Tunnel,
    routes: RouteTable,
    config: TunnelConfig,
    now: Instant,
    frames: FrameBuilder,
    /// Client bytes the tunnel took while open.
    client_stream: Vec<u8>,
    /// The HTTP status sent to the client.
    response: Option<u16>,
    /// The code of our Close frame, once sent (`Some(None)`: an empty Close).
    close_sent: Option<Option<u16>>,
    client_write_shut: bool,
    client_closed: bool,
    connect: Option<SocketAddr>,
    origin_connected: bool,
    origin_closed: bool,
    origin_aborted: bool,
    to_origin: Vec<u8>,
    /// Origin payload bytes forwarded to the client.
    to_client: u64,
    finished: bool,
    /// Backpressure per direction, as the worker keeps it.
    client_queue: Flow,
    origin_queue: Flow,
    cap: usize,
}

impl Driver {
    fn new(input: &mut Input<'_>) -> Driver {
        let [h, p, t, c, b] = [(); 5].map(|_| input.byte());
        let ms = |n: u8, unit: u64| Duration::from_millis(1 + u64::from(n) * unit);
        let config = TunnelConfig {
            max_header_bytes: if h < 128 {
                8192
            } else {
                64 + usize::from(h - 128) * 4
            },
            max_payload: if p < 128 {
                64 << 20
            } else {
                u64::from(p - 128) * 16
            },
            handshake_timeout: ms(t & 15, 1000),
            connect_timeout: ms(t >> 4, 500),
            close_timeout: ms(c & 15, 250),
        };
        let idle = (c >> 4 != 0).then(|| Duration::from_secs(u64::from(c >> 4)));
        let route = |name: &str, host: Option<&str>, path: &str, origin, idle_timeout| Route {
            name: name.into(),
            host: host.map(Into::into),
            sni: None,
            path: path.into(),
            origin,
            idle_timeout,
            pool: None,
            max_tunnels: None,
        };
        let routes = vec![
            route("db", None, "/db", DB, idle),
            route("api", Some("api.example"), "/api", API, None),
        ];
        let cap = 64 << (b % 12);
        let now = Instant::now();
        Driver {
            tunnel: Tunnel::new(config, now),
            routes: RouteTable::new(1, routes).expect("valid routes"),
            config,
            now,
            frames: FrameBuilder { budget: 80 << 10 },
            client_stream: Vec::new(),
            response: None,
            close_sent: None,
            client_write_shut: false,
            client_closed: false,
            connect: None,
            origin_connected: false,
            origin_closed: false,
            origin_aborted: false,
            to_origin: Vec::new(),
            to_client: 0,
            finished: false,
            client_queue: Flow::new(cap),
            origin_queue: Flow::new(cap),
            cap,
        }
    }

    /// One event: a kind byte (low 4 bits) and its arguments. 0: a client read of `n` input
    /// bytes (n, bytes); 1: the canned upgrade ([`Driver::upgrade`]); 2: a client read of 1-4
    /// built frames (count, [`FrameBuilder`] specs); 3: an origin read ([`Driver::origin_sends`]);
    /// 4: origin connected; 5: connect failed (errno; 128-191: no socket; 192 and up: over the
    /// connection limit); 6: client EOF;
    /// 7: client error (errno; 128 and up: TLS failure); 8: origin EOF; 9: origin error (errno);
    /// 10: client stalled; 11: origin stalled; 12: shutdown; 13: the clock moves (bits 0-5 times
    /// 1 ms, 100 ms, 1 s or 10 min by bits 6-7); 14: a peer reads (bit 0: which, bits 1-7: times
    /// 64 bytes); 15: a timer wake-up before any deadline.
    fn step(&mut self, input: &mut Input<'_>) {
        let now = self.now;
        match input.byte() & 15 {
            0 => {
                let n = input.byte();
                let bytes = input.take(n.into()).to_vec();
                self.client_sends(&bytes);
            }
            1 => self.upgrade(input),
            2 => {
                let mut bytes = Vec::new();
                for _ in 0..=input.byte() % 4 {
                    self.frames.push(input, &mut bytes);
                }
                self.client_sends(&bytes);
            }
            3 => self.origin_sends(input),
            4 => {
                self.origin_connected |= self.connect.is_some() && !self.origin_aborted;
                self.tunnel.handle_origin_connected(now);
            }
            5 => match input.byte() {
                e @ 0..=127 => self.tunnel.handle_origin_connect_failed(-i32::from(e), now),
                e @ 128..=191 => self
                    .tunnel
                    .handle_origin_socket_failed(-i32::from(e & 127), now),
                e => self.tunnel.handle_over_limit(u32::from(e & 7), now),
            },
            6 => self.tunnel.handle_client_eof(now),
            7 => match input.byte() {
                e @ 0..=127 => self.tunnel.handle_client_error(-i32::from(e), now),
                _ => self.tunnel.handle_client_tls_failed(now),
            },
            8 => self.tunnel.handle_origin_eof(now),
            9 => self
                .tunnel
                .handle_origin_error(-i32::from(input.byte()), now),
            10 => self.tunnel.handle_client_stalled(now),
            11 => self.tunnel.handle_origin_stalled(now),
            12 => self.tunnel.handle_shutdown(now),
            13 => {
                let d = input.byte();
                let unit = [1, 100, 1000, 600_000][usize::from(d >> 6)];
                self.advance(Duration::from_millis(u64::from(d & 63) * unit));
            }
            14 => {
                // A peer reads: `n` × 64 bytes of what was queued to it leave the queue.
                let d = input.byte();
                let n = usize::from(d >> 1) * 64;
                let queue = if d & 1 == 0 {
                    &mut self.client_queue
                } else {
                    &mut self.origin_queue
                };
                queue.sent(n);
            }
            _ => {
                let due = self.tunnel.poll_timeout().is_some_and(|t| t <= now);
                self.tunnel.handle_timeout(now);
                if !due {
                    let intent = self.tunnel.poll_intent();
                    assert_eq!(intent, None, "handle_timeout acted before the deadline");
                }
            }
        }
        self.drain();
    }

    /// The canned Upgrade request: a variant byte picks the path (bits 0-2), the Host (bit 3),
    /// the version (bit 4), a subprotocol offer (bit 5), a split into two reads at a position
    /// from the next byte (bit 6) and a frame pipelined in the same read (bit 7).
    fn upgrade(&mut self, input: &mut Input<'_>) {
        let v = input.byte();
        let path = [
            "/db",
            "/db/x?address=h:5432",
            "/api",
            "/nope",
            "/",
            "/dbx",
            "/api/",
        ];
        let path = path[usize::from(v & 7) % path.len()];
        let host = if v & 8 == 0 {
            "edge.example"
        } else {
            "API.example:8080"
        };
        let version = if v & 16 == 0 { "13" } else { "8" };
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: {version}\r\n"
        );
        if v & 32 != 0 {
            req.push_str("Sec-WebSocket-Protocol: chat, binary\r\n");
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        let split = if v & 64 != 0 {
            usize::from(input.byte()) % bytes.len()
        } else {
            0
        };
        if v & 128 != 0 {
            self.frames.push(input, &mut bytes);
        }
        if split > 0 {
            self.client_sends(&bytes[..split]);
            self.client_sends(&bytes[split..]);
        } else {
            self.client_sends(&bytes);
        }
    }

    /// Client reads of at most [`MAX_CLIENT_READ`] bytes.
    fn client_sends(&mut self, bytes: &[u8]) {
        for read in bytes.chunks(MAX_CLIENT_READ) {
            self.client_reads(read);
        }
    }

    /// A client read, unless the driver must not read the client now.
    fn client_reads(&mut self, bytes: &[u8]) {
        let paused_until = self.tunnel.client_paused_until();
        if self.origin_queue.is_paused()
            || self.client_queue.is_paused()
            || paused_until.is_some_and(|t| t > self.now)
        {
            return;
        }
        if !self.tunnel.is_closed() {
            self.client_stream.extend_from_slice(bytes);
        }
        let mut buf = bytes.to_vec();
        let r = self
            .tunnel
            .handle_client_bytes(&mut buf, &self.routes, self.now);
        assert!(
            r.start <= r.end && r.end <= buf.len(),
            "range {r:?} of {}",
            buf.len()
        );
        if !r.is_empty() {
            self.origin_takes(&buf[r]);
        }
        self.drain();
        if let Some(until) = self.tunnel.client_paused_until() {
            // Overhead never exceeds the burst plus one read.
            let most = (OVERHEAD_BURST as usize / 2 + MAX_CLIENT_READ) as u64;
            let wait = Duration::from_nanos(most * 1_000_000_000 / u64::from(OVERHEAD_RATE));
            assert!(until <= self.now + wait, "client paused for too long");
        }
    }

    /// An origin read of input bytes (length byte below 200) or of (n − 199) × 512 pattern bytes.
    fn origin_sends(&mut self, input: &mut Input<'_>) {
        if self.client_queue.is_paused() {
            return;
        }
        let n = input.byte();
        let payload = if n < 200 {
            input.take(n.into()).to_vec()
        } else {
            vec![input.byte(); usize::from(n - 199) << 9]
        };
        assert!(payload.len() <= MAX_ORIGIN_READ);
        let relaying = self.tunnel.is_relaying();
        let mut slot = vec![0u8; HEADROOM + payload.len()];
        slot[HEADROOM..].copy_from_slice(&payload);
        let end = slot.len();
        let r = self
            .tunnel
            .handle_origin_bytes(&mut slot, HEADROOM..end, self.now);
        if r.is_empty() {
            assert!(
                !relaying || payload.is_empty(),
                "origin bytes dropped while relaying"
            );
            return;
        }
        assert!(relaying, "origin bytes forwarded while not relaying");
        assert_eq!(r, HEADROOM - server_header_len(payload.len())..end);
        let frame = &slot[r];
        let (h, at) = FrameHeader::parse(frame)
            .ok()
            .flatten()
            .expect("a whole header");
        assert_eq!((h.opcode, h.fin, h.rsv, h.mask), (2, true, 0, None));
        assert_eq!(&frame[at..], &payload[..], "payload changed");
        self.client_takes(frame, false);
        self.to_client += payload.len() as u64;
    }

    /// Time passes; due timeouts are handled as the worker's timer wheel would.
    fn advance(&mut self, d: Duration) {
        self.now += d;
        // A handled timeout moves the deadline on: the first call may begin the closing
        // handshake, a second one end it (with the shortest close timeout).
        for _ in 0..3 {
            if self.tunnel.poll_timeout().is_none_or(|t| t > self.now) {
                return;
            }
            self.tunnel.handle_timeout(self.now);
            self.drain();
        }
        panic!(
            "timeout still due after being handled: {:?}",
            self.tunnel.poll_timeout()
        );
    }

    fn drain(&mut self) {
        let mut pongs = 0;
        while let Some(intent) = self.tunnel.poll_intent() {
            assert!(!self.finished, "{intent:?} after Finished");
            match intent {
                Intent::ConnectOrigin(addr) => {
                    assert!(self.connect.is_none(), "second connect");
                    assert!(addr == DB || addr == API, "unknown origin {addr}");
                    self.connect = Some(addr);
                }
                Intent::SendClient(bytes) => self.client_takes(&bytes, false),
                Intent::SendPong(bytes) => {
                    pongs += 1;
                    assert_eq!(pongs, 1, "more than one pong per call");
                    self.client_takes(&bytes, true);
                }
                Intent::SendOrigin(bytes) => {
                    let most = self.config.max_header_bytes + PIPELINE_SLACK;
                    assert!(bytes.len() <= most, "{} pipelined bytes", bytes.len());
                    self.origin_takes(&bytes);
                }
                Intent::CloseOrigin => {
                    assert!(self.origin_connected, "CloseOrigin before the origin is up");
                    self.origin_closed = true;
                }
                Intent::AbortOrigin => {
                    assert!(self.connect.is_some(), "AbortOrigin without a connect");
                    assert!(!self.origin_connected, "AbortOrigin of a connected origin");
                    self.origin_aborted = true;
                }
                Intent::ShutClientWrite => {
                    assert!(self.close_sent.is_some(), "FIN before our Close");
                    self.client_write_shut = true;
                }
                Intent::ShutOriginWrite => {
                    panic!("a WebSocket tunnel never half-closes the origin")
                }
                Intent::CloseClient => self.client_closed = true,
                Intent::Finished => {
                    self.finished = true;
                    self.check_finished();
                }
            }
        }
    }

    /// Bytes queued to the origin (forwarded range or pipelined bytes).
    fn origin_takes(&mut self, bytes: &[u8]) {
        assert_eq!(
            self.response,
            Some(101),
            "client bytes reach the origin before the 101"
        );
        assert!(self.origin_connected, "bytes for an origin not connected");
        assert!(
            !self.origin_closed && !self.origin_aborted,
            "bytes for a closed origin"
        );
        self.to_origin.extend_from_slice(bytes);
        self.origin_queue.queue(bytes.len());
    }

    /// Bytes queued to the client: an HTTP response first, then whole server frames.
    fn client_takes(&mut self, bytes: &[u8], pong: bool) {
        assert!(!self.client_closed, "bytes for a closed client");
        assert!(!self.client_write_shut, "bytes after the client's FIN");
        assert!(self.close_sent.is_none(), "bytes after our Close frame");
        self.client_queue.queue(bytes.len());
        match self.response {
            None => {
                assert!(!pong, "a pong before the 101");
                self.response = Some(self.http_response(bytes));
            }
            Some(101) => self.server_frames(bytes, pong),
            Some(status) => panic!("bytes after the {status} response"),
        }
    }

    fn http_response(&self, bytes: &[u8]) -> u16 {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = resp.parse(bytes) else {
            panic!("not an HTTP response: {:?}", String::from_utf8_lossy(bytes));
        };
        let status = resp.code.unwrap_or_default();
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        if status == 101 {
            assert_eq!(n, bytes.len(), "bytes behind the 101 in the same intent");
            assert!(self.origin_connected, "101 before the origin is connected");
            assert!(header("Sec-WebSocket-Accept").is_some());
        } else {
            assert!(
                matches!(status, 400 | 404 | 408 | 426 | 431 | 502 | 503 | 504),
                "status {status}"
            );
            let length = header("Content-Length")
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok());
            assert_eq!(length, Some(bytes.len() - n), "Content-Length");
            assert_eq!(header("Connection"), Some(&b"close"[..]));
            if status == 426 {
                assert_eq!(header("Sec-WebSocket-Version"), Some(&b"13"[..]));
            }
        }
        status
    }

    /// Control frames from intents: whole, unmasked, a Close with a legal code and a UTF-8
    /// reason, nothing behind it.
    fn server_frames(&mut self, mut bytes: &[u8], pong: bool) {
        while !bytes.is_empty() {
            assert!(self.close_sent.is_none(), "a frame behind our Close");
            let (h, at) = FrameHeader::parse(bytes)
                .ok()
                .flatten()
                .expect("a whole frame header");
            assert!(h.fin && h.rsv == 0 && h.mask.is_none(), "{h:?}");
            let end = at + usize::try_from(h.payload_len).expect("short frame");
            let payload = bytes.get(at..end).expect("a whole frame");
            if pong {
                assert_eq!(h.opcode, 0xA);
            }
            match h.opcode {
                // Binary frames come from origin reads.
                0x2 => {}
                0xA => assert!(payload.len() <= 125),
                0x8 => {
                    let code = match payload {
                        [] => None,
                        [hi, lo, reason @ ..] => {
                            let code = u16::from_be_bytes([*hi, *lo]);
                            assert!(legal_close_code(code), "sent Close code {code}");
                            assert!(std::str::from_utf8(reason).is_ok(), "reason not UTF-8");
                            Some(code)
                        }
                        [_] => panic!("a 1-byte Close payload"),
                    };
                    assert!(payload.len() <= 125);
                    self.close_sent = Some(code);
                }
                op => panic!("server frame with opcode {op}"),
            }
            bytes = &bytes[end..];
        }
    }

    /// After every event.
    fn check(&self) {
        assert_eq!(
            self.tunnel.is_closed(),
            self.finished,
            "Closed without Finished"
        );
        let open = self.response == Some(101) && self.close_sent.is_none() && !self.finished;
        assert_eq!(
            self.tunnel.is_relaying(),
            open,
            "relaying disagrees with what was sent"
        );
        if self.finished || self.close_sent.is_some() {
            assert!(
                self.tunnel.close_record().is_some(),
                "closing without a record"
            );
        }
        if let Some(t) = self.tunnel.poll_timeout() {
            assert!(t > self.now, "timeout in the past after being handled");
        }
        let stats = self.tunnel.stats();
        assert_eq!(
            stats.to_origin,
            self.to_origin.len() as u64,
            "to_origin counter"
        );
        assert_eq!(stats.to_client, self.to_client, "to_client counter");
        // Flow: the cap plus one read (the origin side: plus the pipelined bytes).
        let reply = 2 * 127 + 512;
        assert!(self.client_queue.queued() <= self.cap + MAX_ORIGIN_READ + 10 + reply);
        let pipelined = self.config.max_header_bytes + PIPELINE_SLACK;
        assert!(self.origin_queue.queued() <= self.cap + MAX_CLIENT_READ.max(pipelined));
    }

    /// At `Finished`: both sockets closed, and the record says what was sent.
    fn check_finished(&self) {
        assert!(self.client_closed, "Finished with the client open");
        if self.connect.is_some() {
            assert!(
                self.origin_closed || self.origin_aborted,
                "Finished with the origin open"
            );
        }
        assert!(self.tunnel.poll_timeout().is_none());
        let record = self
            .tunnel
            .close_record()
            .expect("Finished without a record");
        let refused = |status| self.response == Some(status);
        let closed = |code: u16| self.close_sent == Some(Some(code));
        let ok = match record.reason {
            CloseReason::ClientClose(code) => self.close_sent == Some(code),
            CloseReason::Protocol(code) => closed(code),
            CloseReason::Refused(status) => refused(status),
            CloseReason::HandshakeTimeout => refused(408),
            CloseReason::ConnectFailed(_) => refused(502),
            CloseReason::ConnectTimeout => refused(504),
            CloseReason::OriginSocket(_) | CloseReason::OverLimit => refused(503),
            CloseReason::Shutdown | CloseReason::Operator => refused(503) || closed(1001),
            CloseReason::IdleTimeout => closed(1001),
            CloseReason::OriginEof => closed(1000),
            CloseReason::OriginError(_) | CloseReason::OriginStalled => closed(1011),
            CloseReason::ClientStalled => self.close_sent.is_none() || closed(1008),
            CloseReason::ClientEof | CloseReason::ClientError(_) | CloseReason::ClientTls => {
                self.close_sent.is_none()
            }
        };
        assert!(
            ok,
            "{record:?} but sent {:?} / {:?}",
            self.response, self.close_sent
        );
        let by = match record.reason {
            CloseReason::ClientClose(_)
            | CloseReason::ClientEof
            | CloseReason::ClientError(_)
            | CloseReason::ClientTls
            | CloseReason::Protocol(_)
            | CloseReason::Refused(_)
            | CloseReason::HandshakeTimeout
            | CloseReason::ClientStalled => Side::Client,
            CloseReason::ConnectFailed(_)
            | CloseReason::ConnectTimeout
            | CloseReason::OriginEof
            | CloseReason::OriginError(_)
            | CloseReason::OriginStalled => Side::Origin,
            CloseReason::IdleTimeout
            | CloseReason::Shutdown
            | CloseReason::Operator
            | CloseReason::OriginSocket(_)
            | CloseReason::OverLimit => Side::Server,
        };
        assert_eq!(record.by, by, "{record:?}");
        let refusal = self.tunnel.refusal().map(|r| r.status);
        let status = self.response.filter(|&s| s != 101);
        assert_eq!(
            refusal, status,
            "refusal() disagrees with the response sent"
        );
    }

    /// The origin got exactly the data the reference decoder finds in the client's frames.
    fn check_stream(&self) {
        if self.response != Some(101) {
            assert!(self.to_origin.is_empty());
            return;
        }
        let Ok(Some((_, head_len))) =
            parse_upgrade(&self.client_stream, self.config.max_header_bytes)
        else {
            panic!("101 without an upgrade request");
        };
        let expected = reference::decode(&self.client_stream[head_len..], self.config.max_payload);
        assert!(
            expected.data.starts_with(&self.to_origin),
            "the origin got other bytes"
        );
        let record = self.tunnel.close_record().map(|r| r.reason);
        match (record, expected.events.last()) {
            (Some(CloseReason::ClientClose(code)), last) => {
                assert!(matches!(last, Some(Seen::Close(c, _)) if *c == code));
                assert!(
                    self.to_origin.len() >= expected.data_min,
                    "data lost before the Close"
                );
            }
            (Some(CloseReason::Protocol(code)), last) => {
                assert_eq!(last, Some(&Seen::Error(code)), "a different protocol error");
                assert!(
                    self.to_origin.len() >= expected.data_min,
                    "data lost before the error"
                );
            }
            (None, _) if self.tunnel.is_relaying() => {
                assert!(
                    !expected.ended(),
                    "relaying past the client's Close or an error"
                );
                assert_eq!(
                    self.to_origin.len(),
                    expected.data.len(),
                    "data not forwarded"
                );
            }
            _ => {}
        }
    }

    /// A shutdown, then time: every tunnel must be finished once its close timeout has passed.
    fn shut_down(&mut self) {
        self.tunnel.handle_shutdown(self.now);
        self.drain();
        self.check();
        self.advance(self.config.close_timeout);
        self.check();
        assert!(
            self.finished,
            "a tunnel outlives its shutdown and close timeout"
        );
    }
}
