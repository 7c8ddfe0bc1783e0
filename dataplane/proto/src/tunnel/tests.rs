//! A client / tunnel / origin pair on virtual time (quinn `Pair` style): the test plays both
//! peers and a driver that applies intents to in-memory pipes, so every close path runs without
//! a socket or a clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::route::Route;
use crate::ws::frame::FrameHeader;
use crate::ws::mask::apply_mask;

const ORIGIN: ([u8; 4], u16) = ([127, 0, 0, 1], 5432);
const UPGRADE: &[u8] = b"GET /db?address=x HTTP/1.1\r\nHost: edge.example\r\n\
Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n";

/// What the driver did, as the two peers see it.
struct Pair {
    tunnel: Tunnel,
    routes: RouteTable,
    now: Instant,
    connect: Option<SocketAddr>,
    to_client: Vec<u8>,
    to_origin: Vec<u8>,
    origin_closed: bool,
    origin_aborted: bool,
    client_closed: bool,
    /// FIN sent to the client after our Close, reading goes on.
    client_write_shut: bool,
    finished: bool,
}

impl Pair {
    fn new(idle: Option<Duration>) -> Pair {
        let route = Route {
            name: "db".into(),
            host: None,
            sni: None,
            path: "/db".into(),
            origin: SocketAddr::from(ORIGIN),
            idle_timeout: idle,
            pool: None,
            max_tunnels: None,
        };
        let now = Instant::now();
        Pair {
            tunnel: Tunnel::new(TunnelConfig::default(), now),
            routes: RouteTable::new(1, vec![route]).unwrap(),
            now,
            connect: None,
            to_client: Vec::new(),
            to_origin: Vec::new(),
            origin_closed: false,
            origin_aborted: false,
            client_closed: false,
            client_write_shut: false,
            finished: false,
        }
    }

    /// A pair whose tunnel is relaying (the 101 already read off `to_client`).
    fn relaying() -> Pair {
        let mut p = Pair::new(None);
        p.client_sends(UPGRADE);
        p.tunnel.handle_origin_connected(p.now);
        p.drain();
        let head = p.take_client();
        assert!(
            head.starts_with(b"HTTP/1.1 101 "),
            "{}",
            String::from_utf8_lossy(&head)
        );
        p
    }

    fn drain(&mut self) {
        while let Some(i) = self.tunnel.poll_intent() {
            assert!(!self.finished, "intent {i:?} after Finished");
            match i {
                Intent::ConnectOrigin(a) => self.connect = Some(a),
                Intent::SendClient(b) | Intent::SendPong(b) => {
                    assert!(!self.client_closed, "send to a closed client");
                    assert!(!self.client_write_shut, "send after the client's FIN");
                    self.to_client.extend_from_slice(&b);
                }
                Intent::SendOrigin(b) => {
                    assert!(!self.origin_closed, "send to a closed origin");
                    self.to_origin.extend_from_slice(&b);
                }
                Intent::CloseOrigin => self.origin_closed = true,
                Intent::ShutClientWrite => self.client_write_shut = true,
                Intent::ShutOriginWrite => {
                    panic!("a WebSocket tunnel never half-closes the origin")
                }
                Intent::AbortOrigin => self.origin_aborted = true,
                Intent::CloseClient => self.client_closed = true,
                Intent::Finished => self.finished = true,
            }
        }
    }

    fn client_sends(&mut self, bytes: &[u8]) {
        let mut b = bytes.to_vec();
        let r = self
            .tunnel
            .handle_client_bytes(&mut b, &self.routes, self.now);
        if !r.is_empty() {
            assert!(!self.origin_closed, "data forwarded to a closed origin");
            self.to_origin.extend_from_slice(&b[r]);
        }
        self.drain();
    }

    fn origin_sends(&mut self, bytes: &[u8]) {
        let h = encoder::HEADROOM;
        let mut slot = vec![0u8; h + bytes.len()];
        slot[h..].copy_from_slice(bytes);
        let r = self
            .tunnel
            .handle_origin_bytes(&mut slot, h..h + bytes.len(), self.now);
        self.to_client.extend_from_slice(&slot[r]);
        self.drain();
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.tunnel.poll_timeout().is_some_and(|t| t <= self.now) {
            self.tunnel.handle_timeout(self.now);
        }
        self.drain();
    }

    fn take_client(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.to_client)
    }

    /// Server frames the client received: (opcode, payload).
    fn client_frames(&mut self) -> Vec<(u8, Vec<u8>)> {
        let bytes = self.take_client();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let (h, n) = FrameHeader::parse(&bytes[pos..])
                .unwrap()
                .expect("whole frame");
            assert!(h.mask.is_none(), "server frames are never masked");
            let end = pos + n + h.payload_len as usize;
            out.push((h.opcode, bytes[pos + n..end].to_vec()));
            pos = end;
        }
        out
    }

    fn record(&self) -> CloseRecord {
        self.tunnel.close_record().expect("close recorded")
    }
}

/// A masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let h = FrameHeader {
        fin,
        rsv: 0,
        opcode,
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let mut out = vec![0u8; h.buffer_len()];
    h.emit(&mut out);
    let mut p = payload.to_vec();
    apply_mask(&mut p, key, 0);
    out.extend_from_slice(&p);
    out
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

#[test]
fn origin_connects_before_101_and_pipelined_bytes_wait_for_it() {
    let mut p = Pair::new(None);
    let mut req = UPGRADE.to_vec();
    req.extend_from_slice(&frame(true, 2, b"early"));
    // Split the request anywhere: nothing happens until it is whole.
    p.client_sends(&req[..20]);
    assert_eq!(p.connect, None);
    p.client_sends(&req[20..]);
    assert_eq!(p.connect, Some(SocketAddr::from(ORIGIN)));
    assert!(
        p.to_client.is_empty(),
        "no 101 before the origin is connected"
    );
    assert!(
        p.to_origin.is_empty(),
        "no client byte reaches the origin before the 101"
    );
    p.client_sends(&frame(true, 2, b"-more"));
    assert!(p.to_origin.is_empty());
    p.tunnel.handle_origin_connected(p.now);
    p.drain();
    let head = String::from_utf8(p.take_client()).unwrap();
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(head.contains("Sec-WebSocket-Protocol: binary\r\n"));
    assert_eq!(p.to_origin, b"early-more");
    assert!(p.tunnel.is_relaying());
}

#[test]
fn relays_both_ways_and_frames_origin_bytes_as_binary() {
    let mut p = Pair::relaying();
    let mut msg = frame(false, 2, b"hel");
    msg.extend_from_slice(&frame(true, 9, b"ping!")); // ping inside a fragmented message
    msg.extend_from_slice(&frame(true, 0, b"lo"));
    msg.extend_from_slice(&frame(true, 1, "héllo".as_bytes()));
    msg.extend_from_slice(&frame(true, 2, b"")); // an empty message is not EOF
    p.client_sends(&msg);
    assert_eq!(p.to_origin, "hellohéllo".as_bytes());
    assert_eq!(
        p.client_frames(),
        vec![(10, b"ping!".to_vec())],
        "pong echoes the ping"
    );
    p.origin_sends(b"row 1");
    p.origin_sends(&[7u8; 70_000]);
    let frames = p.client_frames();
    assert_eq!(frames[0], (2, b"row 1".to_vec()));
    assert_eq!(frames[1], (2, vec![7u8; 70_000]));
    assert_eq!(p.tunnel.stats().to_client, 70_005);
    assert_eq!(p.tunnel.stats().to_origin, 11);
    assert!(!p.finished);
}

#[test]
fn client_close_flushes_then_half_closes_origin_and_echoes_code() {
    let mut p = Pair::relaying();
    let mut bytes = frame(true, 2, b"last words");
    bytes.extend_from_slice(&frame(true, 8, &close_payload(4000, "bye")));
    bytes.extend_from_slice(&frame(true, 2, b"after close: ignored"));
    p.client_sends(&bytes);
    assert_eq!(p.to_origin, b"last words");
    assert!(p.origin_closed && p.client_closed && p.finished);
    assert_eq!(p.client_frames(), vec![(8, 4000u16.to_be_bytes().to_vec())]);
    assert_eq!(
        p.record(),
        CloseRecord {
            by: Side::Client,
            reason: CloseReason::ClientClose(Some(4000))
        }
    );
}

#[test]
fn close_without_code_is_answered_with_empty_close() {
    let mut p = Pair::relaying();
    p.client_sends(&frame(true, 8, b""));
    assert_eq!(p.client_frames(), vec![(8, vec![])]);
    assert_eq!(p.record().reason, CloseReason::ClientClose(None));
}

#[test]
fn origin_eof_sends_pending_bytes_then_close_1000_and_waits_for_reply() {
    let mut p = Pair::relaying();
    p.origin_sends(b"tail");
    p.tunnel.handle_origin_eof(p.now);
    p.drain();
    assert!(p.origin_closed && !p.client_closed && !p.finished);
    assert!(
        p.client_write_shut,
        "FIN right behind our Close; reading goes on"
    );
    let frames = p.client_frames();
    assert_eq!(frames[0], (2, b"tail".to_vec()));
    assert_eq!(frames[1].0, 8);
    assert_eq!(frames[1].1[..2], 1000u16.to_be_bytes());
    // Origin bytes after our Close are dropped; client data is discarded; its Close ends it.
    p.origin_sends(b"late");
    assert!(p.to_client.is_empty());
    p.client_sends(&frame(true, 2, b"ignored"));
    assert!(p.to_origin.is_empty());
    p.client_sends(&frame(true, 8, &close_payload(1000, "")));
    assert!(p.client_closed && p.finished);
    assert_eq!(
        p.record(),
        CloseRecord {
            by: Side::Origin,
            reason: CloseReason::OriginEof
        }
    );
}

#[test]
fn close_handshake_times_out_when_client_never_answers() {
    let mut p = Pair::relaying();
    p.tunnel.handle_origin_eof(p.now);
    p.drain();
    p.advance(Duration::from_millis(1999));
    assert!(!p.finished);
    p.advance(Duration::from_millis(2));
    assert!(p.client_closed && p.finished);
}

#[test]
fn origin_reset_gives_close_1011_after_received_bytes() {
    let mut p = Pair::relaying();
    p.origin_sends(b"partial result");
    p.tunnel.handle_origin_error(-104, p.now);
    p.drain();
    let frames = p.client_frames();
    assert_eq!(frames[0], (2, b"partial result".to_vec()));
    assert_eq!(frames[1].1[..2], 1011u16.to_be_bytes());
    assert_eq!(
        p.record(),
        CloseRecord {
            by: Side::Origin,
            reason: CloseReason::OriginError(104)
        }
    );
}

#[test]
fn client_eof_without_close_closes_origin() {
    let mut p = Pair::relaying();
    p.client_sends(&frame(true, 2, b"x"));
    p.tunnel.handle_client_eof(p.now);
    p.drain();
    assert_eq!(p.to_origin, b"x");
    assert!(p.origin_closed && p.client_closed && p.finished);
    assert!(
        p.to_client.is_empty(),
        "no Close frame on a dead connection"
    );
    assert_eq!(
        p.record(),
        CloseRecord {
            by: Side::Client,
            reason: CloseReason::ClientEof
        }
    );
}

#[test]
fn protocol_errors_close_with_their_code() {
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"\x82\x01x".to_vec(), 1002), // unmasked
        (frame(true, 3, b""), 1002),   // unknown opcode
        (
            {
                let mut f = frame(true, 2, b"");
                f[0] |= 0x40;
                f
            },
            1002,
        ), // RSV1
        (frame(false, 9, b""), 1002),  // fragmented ping
        (frame(true, 9, &[0u8; 126]), 1002), // control frame too long
        (frame(true, 1, &[0xff, 0xfe]), 1007), // invalid UTF-8
        (
            b"\x82\xff\x7f\xff\xff\xff\xff\xff\xff\xff\0\0\0\0".to_vec(),
            1009,
        ), // 2^63-1
    ];
    for (bytes, code) in cases {
        let mut p = Pair::relaying();
        p.client_sends(&bytes);
        let frames = p.client_frames();
        assert_eq!(frames.len(), 1, "{bytes:?}");
        assert_eq!(frames[0].0, 8);
        assert_eq!(frames[0].1[..2], code.to_be_bytes(), "{bytes:?}");
        assert!(p.finished && p.origin_closed && p.client_closed);
        assert_eq!(
            p.record(),
            CloseRecord {
                by: Side::Client,
                reason: CloseReason::Protocol(code)
            }
        );
    }
}

#[test]
fn refusals_are_http_responses() {
    let mut p = Pair::new(None);
    p.client_sends(b"GET /nope HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    assert!(String::from_utf8_lossy(&p.to_client).starts_with("HTTP/1.1 404 Not Found\r\n"));
    assert!(p.finished && p.client_closed && p.connect.is_none());
    // The log names what was asked for.
    let r = p.tunnel.refusal().expect("a refusal");
    assert_eq!(
        (r.status, r.host.as_deref(), r.path.as_deref()),
        (404, Some("h"), Some("/nope"))
    );
    assert_eq!(r.reason, "no route for this path");

    // A request that does not parse: status and reason, no Host or path.
    let mut p = Pair::new(None);
    p.client_sends(b"BREW /pot HTCPCP/1.0\r\n\r\n");
    assert!(String::from_utf8_lossy(&p.to_client).starts_with("HTTP/1.1 4"));
    let r = p.tunnel.refusal().expect("a refusal");
    assert!(r.status >= 400 && r.path.is_none(), "{r:?}");

    let mut p = Pair::new(None);
    p.client_sends(&UPGRADE.to_vec().repeat(1)[..UPGRADE.len() - 2]);
    p.client_sends(b"\r\n");
    p.tunnel.handle_origin_connect_failed(-111, p.now);
    p.drain();
    assert!(String::from_utf8_lossy(&p.to_client).starts_with("HTTP/1.1 502 "));
    assert!(p.origin_aborted && p.finished);
    assert_eq!(
        p.record(),
        CloseRecord {
            by: Side::Origin,
            reason: CloseReason::ConnectFailed(111)
        }
    );
    let r = p.tunnel.refusal().expect("a refusal");
    assert_eq!(
        (r.status, r.host.as_deref(), r.path.as_deref()),
        (502, Some("edge.example"), Some("/db"))
    );

    // No descriptor for the origin socket: this server is out of resources, not the origin.
    let mut p = Pair::new(None);
    p.client_sends(UPGRADE);
    p.tunnel.handle_origin_socket_failed(24, p.now);
    p.drain();
    assert!(
        String::from_utf8_lossy(&p.to_client).starts_with("HTTP/1.1 503 Service Unavailable\r\n")
    );
    assert!(p.origin_aborted && p.finished);
    assert_eq!(
        p.record(),
        CloseRecord {
            by: Side::Server,
            reason: CloseReason::OriginSocket(24)
        }
    );

    let mut p = Pair::new(None);
    p.client_sends(&UPGRADE.replace_version());
    assert!(String::from_utf8_lossy(&p.to_client).starts_with("HTTP/1.1 426 "));
    assert!(String::from_utf8_lossy(&p.to_client).contains("Sec-WebSocket-Version: 13\r\n"));
}

trait ReplaceVersion {
    fn replace_version(&self) -> Vec<u8>;
}

impl ReplaceVersion for &[u8] {
    fn replace_version(&self) -> Vec<u8> {
        String::from_utf8_lossy(self)
            .replace("Version: 13", "Version: 8")
            .into_bytes()
    }
}

#[test]
fn timeouts_handshake_connect_idle() {
    let mut p = Pair::new(None);
    p.client_sends(b"GET /db HTTP/1.1\r\n");
    p.advance(Duration::from_secs(9));
    assert!(!p.finished);
    p.advance(Duration::from_secs(1));
    assert!(String::from_utf8_lossy(&p.to_client).starts_with("HTTP/1.1 408 Request Timeout\r\n"));
    assert!(p.finished);
    assert_eq!(
        p.record(),
        CloseRecord {
            by: Side::Client,
            reason: CloseReason::HandshakeTimeout
        }
    );

    let mut p = Pair::new(None);
    p.client_sends(UPGRADE);
    p.advance(Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&p.to_client).starts_with("HTTP/1.1 504 "));
    assert!(p.origin_aborted && p.finished);
    assert_eq!(
        p.record(),
        CloseRecord {
            by: Side::Origin,
            reason: CloseReason::ConnectTimeout
        }
    );

    let mut p = Pair::new(Some(Duration::from_secs(30)));
    p.client_sends(UPGRADE);
    p.tunnel.handle_origin_connected(p.now);
    p.drain();
    p.take_client();
    p.advance(Duration::from_secs(20));
    p.origin_sends(b"activity resets the idle clock");
    p.take_client();
    p.advance(Duration::from_secs(20));
    assert!(!p.origin_closed);
    p.advance(Duration::from_secs(10));
    assert!(p.origin_closed);
    let frames = p.client_frames();
    assert_eq!(frames[0].1[..2], 1001u16.to_be_bytes());
    assert_eq!(
        p.record(),
        CloseRecord {
            by: Side::Server,
            reason: CloseReason::IdleTimeout
        }
    );
    // No idle timeout on routes without one: a database session may be quiet for hours.
    let mut p = Pair::relaying();
    p.advance(Duration::from_secs(24 * 3600));
    assert!(!p.origin_closed && p.tunnel.poll_timeout().is_none());
}

#[test]
fn shutdown_closes_open_tunnels_with_1001() {
    let mut p = Pair::relaying();
    p.origin_sends(b"pending");
    p.tunnel.handle_shutdown(p.now);
    p.drain();
    let frames = p.client_frames();
    assert_eq!(frames[0], (2, b"pending".to_vec()));
    assert_eq!(frames[1].1[..2], 1001u16.to_be_bytes());
    assert_eq!(
        p.record(),
        CloseRecord {
            by: Side::Server,
            reason: CloseReason::Shutdown
        }
    );
    p.client_sends(&frame(true, 8, &close_payload(1001, "")));
    assert!(p.finished);

    let mut p = Pair::new(None);
    p.tunnel.handle_shutdown(p.now);
    p.drain();
    assert!(String::from_utf8_lossy(&p.to_client).starts_with("HTTP/1.1 503 "));
}

#[test]
fn no_intent_after_finished() {
    let mut p = Pair::relaying();
    p.client_sends(&frame(true, 8, b""));
    assert!(p.finished);
    p.tunnel.handle_client_eof(p.now);
    p.tunnel.handle_origin_eof(p.now);
    p.tunnel.handle_timeout(p.now + Duration::from_secs(100));
    p.tunnel.handle_shutdown(p.now);
    assert_eq!(p.tunnel.poll_intent(), None);
}

#[test]
fn a_ping_flood_in_one_read_gets_one_pong_for_the_latest_ping() {
    let mut p = Pair::relaying();
    let mut burst = Vec::new();
    for i in 0..100u32 {
        burst.extend_from_slice(&frame(true, 0x9, &i.to_be_bytes()));
    }
    burst.extend_from_slice(&frame(true, 0x2, b"data"));
    p.client_sends(&burst);
    assert_eq!(p.to_origin, b"data");
    let frames = p.client_frames();
    assert_eq!(frames, vec![(0xA, 99u32.to_be_bytes().to_vec())]);
}

#[test]
fn a_client_that_stops_reading_is_closed_1008_and_the_origin_half_closed() {
    let mut p = Pair::relaying();
    p.tunnel.handle_client_stalled(p.now);
    p.drain();
    assert!(p.origin_closed && p.client_closed && p.finished);
    assert_eq!(
        p.record(),
        CloseRecord {
            by: Side::Client,
            reason: CloseReason::ClientStalled
        }
    );
    let frames = p.client_frames();
    assert_eq!(frames[0].0, 0x8);
    assert_eq!(&frames[0].1[..2], &1008u16.to_be_bytes());
}

#[test]
fn an_origin_that_stops_reading_gives_close_1011() {
    let mut p = Pair::relaying();
    p.tunnel.handle_origin_stalled(p.now);
    p.drain();
    assert!(
        p.origin_closed && !p.finished,
        "waits for the client's Close"
    );
    let frames = p.client_frames();
    assert_eq!(&frames[0].1[..2], &1011u16.to_be_bytes());
    assert_eq!(p.record().reason, CloseReason::OriginStalled);
    p.client_sends(&frame(true, 0x8, &1011u16.to_be_bytes()));
    assert!(p.finished);
}

#[test]
fn a_ping_flood_pauses_the_client_until_its_overhead_drains() {
    let mut p = Pair::relaying();
    assert_eq!(p.tunnel.client_paused_until(), None);
    let mut burst = Vec::new();
    for i in 0..4000u32 {
        burst.extend_from_slice(&frame(true, 0x9, &[i as u8; 100]));
    }
    p.client_sends(&burst); // 4000 × 106 bytes, all overhead
    let until = p
        .tunnel
        .client_paused_until()
        .expect("over the burst: paused");
    let excess = (4000 * 106 - OVERHEAD_BURST as u64 / 2) as f64;
    let expect = Duration::from_secs_f64(excess / OVERHEAD_RATE as f64);
    assert!((until - p.now).abs_diff(expect) < Duration::from_millis(1));
    assert_eq!(
        p.tunnel.poll_timeout(),
        Some(until),
        "the driver is woken to resume"
    );
    p.advance(until - p.now);
    assert_eq!(
        p.tunnel.client_paused_until(),
        None,
        "drained: reads resume"
    );
    assert!(p.tunnel.is_relaying(), "a pause is not an idle timeout");
    // Payload is not overhead: a big data frame does not pause.
    p.client_sends(&frame(true, 0x2, &vec![7u8; 200_000]));
    assert_eq!(p.tunnel.client_paused_until(), None);
}

#[test]
fn transport_overhead_counts_toward_the_pause() {
    let mut p = Pair::relaying();
    // 1-byte data frames: 7 bytes each, 6 of them overhead.
    let mut small = Vec::new();
    for i in 0..20_000u32 {
        small.extend_from_slice(&frame(true, 0x2, &[i as u8]));
    }
    p.client_sends(&small); // 120,000 bytes of headers: under the burst
    assert_eq!(p.tunnel.client_paused_until(), None);
    // The same frames each in a TLS 1.3 record: 22 more bytes apiece.
    p.tunnel.charge_overhead(20_000 * 22, p.now);
    assert!(
        p.tunnel.client_paused_until().is_some(),
        "records' overhead is charged like frames'"
    );
}

#[test]
fn a_client_that_half_closes_behind_its_pipelined_frames_still_gets_them_delivered() {
    let mut p = Pair::new(None);
    let mut bytes = UPGRADE.to_vec();
    bytes.extend_from_slice(&frame(true, 2, b"hello"));
    bytes.extend_from_slice(&frame(true, 8, &close_payload(1000, "")));
    p.client_sends(&bytes);
    p.tunnel.handle_client_eof(p.now);
    p.drain();
    assert!(!p.origin_aborted && !p.finished, "EOF waits for the origin");
    p.tunnel.handle_origin_connected(p.now);
    p.drain();
    assert_eq!(p.to_origin, b"hello");
    let head = p.take_client();
    let at = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(head.starts_with(b"HTTP/1.1 101 "));
    p.to_client = head[at..].to_vec();
    let frames = p.client_frames();
    assert_eq!(frames, vec![(8, 1000u16.to_be_bytes().to_vec())]);
    assert!(p.origin_closed && p.client_closed && p.finished);
    assert_eq!(p.record().reason, CloseReason::ClientClose(Some(1000)));
}

#[test]
fn a_client_that_half_closes_without_pipelined_bytes_aborts_the_connect() {
    let mut p = Pair::new(None);
    p.client_sends(UPGRADE);
    p.tunnel.handle_client_eof(p.now);
    p.drain();
    assert!(p.origin_aborted && p.finished);
    assert_eq!(p.record().reason, CloseReason::ClientEof);
}

#[test]
fn close_reasons_read_as_words() {
    let cases = [
        (
            CloseReason::ClientClose(Some(1000)),
            "client sent Close 1000 (normal closure)",
        ),
        (
            CloseReason::ConnectFailed(111),
            "origin connect failed: Connection refused (os error 111)",
        ),
        (
            CloseReason::Protocol(1009),
            "client broke the WebSocket protocol, closed with 1009 (message too big)",
        ),
        (
            CloseReason::Refused(404),
            "upgrade refused with 404 Not Found",
        ),
        (
            CloseReason::OriginSocket(24),
            "cannot create a socket to the origin: Too many open files (os error 24)",
        ),
        (CloseReason::OriginEof, "origin closed the connection"),
    ];
    for (reason, words) in cases {
        assert_eq!(reason.to_string(), words);
    }
    assert_eq!(Side::Server.to_string(), "ringway");
    for r in [
        CloseReason::ClientClose(None),
        CloseReason::ClientEof,
        CloseReason::ClientError(104),
        CloseReason::HandshakeTimeout,
        CloseReason::ConnectTimeout,
        CloseReason::OriginError(104),
        CloseReason::IdleTimeout,
        CloseReason::Shutdown,
        CloseReason::ClientStalled,
        CloseReason::OriginStalled,
    ] {
        let text = r.to_string();
        assert!(
            !text.contains('(') || text.contains("os error") || text.contains("Close 10"),
            "no Debug text: {text}"
        );
        assert!(text.len() > 10 && !text.contains("Some"), "{text}");
    }
}

/// Found by the `tunnel` fuzz target: a second (or late) "origin connected" replaced the phase
/// with `Closed` without emitting anything, silently ending a relaying tunnel with no
/// `Finished` (the driver would never close its sockets).
#[test]
fn an_origin_connected_outside_await_origin_changes_nothing() {
    let mut p = Pair::relaying();
    p.tunnel.handle_origin_connected(p.now);
    p.drain();
    assert!(p.tunnel.is_relaying() && !p.finished);
    p.client_sends(&frame(true, 2, b"still up"));
    assert_eq!(p.to_origin, b"still up");

    let mut p = Pair::new(None);
    p.tunnel.handle_origin_connected(p.now);
    p.drain();
    assert!(!p.tunnel.is_closed() && p.to_client.is_empty());
    p.client_sends(UPGRADE);
    assert_eq!(
        p.connect,
        Some(SocketAddr::from(ORIGIN)),
        "the upgrade still works"
    );

    let mut p = Pair::relaying();
    p.tunnel.handle_origin_eof(p.now);
    p.drain();
    p.tunnel.handle_origin_connected(p.now);
    p.drain();
    p.client_sends(&frame(true, 8, &close_payload(1000, "")));
    assert!(p.finished, "the closing handshake still ends");
}
