//! The access tunnel against this crate's own server side, on virtual time: the request the
//! server parses, local bytes held until the 101 then framed and masked, the edge's frames to
//! the local side, the close handshakes both ways, and refusals kept in words.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::ws::client::CLIENT_HEADROOM;
use crate::ws::encoder;
use crate::ws::handshake::{parse_upgrade, write_refusal, write_switching_protocols};

fn config() -> Arc<AccessConfig> {
    Arc::new(AccessConfig {
        edge: SocketAddr::from(([127, 0, 0, 1], 8443)),
        host: "edge.example:8443".into(),
        path: "/db".into(),
        headers: vec![("Authorization".into(), "Bearer t".into())],
        connect_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(10),
        close_timeout: Duration::from_secs(2),
        max_payload: 1 << 20,
        max_pending: 1024,
    })
}

struct Driver {
    t: AccessTunnel,
    now: Instant,
    to_edge: Vec<u8>,
    to_local: Vec<u8>,
    edge_closed: bool,
    local_closed: bool,
    finished: bool,
}

impl Driver {
    fn new() -> Driver {
        let now = Instant::now();
        let mut d = Driver {
            t: AccessTunnel::new(config(), *b"the sample nonce", [42; 32], now),
            now,
            to_edge: Vec::new(),
            to_local: Vec::new(),
            edge_closed: false,
            local_closed: false,
            finished: false,
        };
        d.drain();
        d
    }

    fn drain(&mut self) {
        while let Some(i) = self.t.poll_intent() {
            assert!(!self.finished, "{i:?} after Finished");
            match i {
                Intent::ConnectOrigin(a) => assert_eq!(a, config().edge),
                Intent::SendOrigin(b) => {
                    assert!(!self.edge_closed, "sent to the edge after closing it");
                    self.to_edge.extend(b)
                }
                Intent::SendClient(b) => self.to_local.extend(b),
                Intent::CloseOrigin | Intent::AbortOrigin => self.edge_closed = true,
                Intent::CloseClient => self.local_closed = true,
                Intent::Finished => self.finished = true,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn local_sends(&mut self, bytes: &[u8]) {
        let mut slot = vec![0u8; CLIENT_HEADROOM + bytes.len()];
        slot[CLIENT_HEADROOM..].copy_from_slice(bytes);
        let end = slot.len();
        let r = self
            .t
            .handle_client_bytes(&mut slot, CLIENT_HEADROOM..end, self.now);
        self.to_edge.extend_from_slice(&slot[r]);
        self.drain();
    }

    fn edge_sends(&mut self, bytes: &[u8]) {
        let mut b = bytes.to_vec();
        let r = self.t.handle_origin_bytes(&mut b, self.now);
        self.to_local.extend_from_slice(&b[r]);
        self.drain();
    }

    /// What the edge received: the request (parsed), then frames (decoded as a server would).
    fn edge_reads_request(&mut self) -> Vec<u8> {
        let (req, n) = parse_upgrade(&self.to_edge, 8192)
            .unwrap()
            .expect("a request");
        assert_eq!(req.path, "/db");
        assert_eq!(req.host.as_deref(), Some("edge.example"));
        assert!(req.binary_subprotocol);
        let text = String::from_utf8_lossy(&self.to_edge[..n]).into_owned();
        assert!(text.contains("Authorization: Bearer t\r\n"), "{text}");
        self.to_edge.drain(..n);
        let mut resp = Vec::new();
        write_switching_protocols(&req, &mut resp);
        resp
    }

    fn edge_frames(&mut self) -> (Vec<u8>, Option<Event>) {
        let mut bytes = std::mem::take(&mut self.to_edge);
        let mut server = Decoder::new(DecoderLimits::default());
        let mut data = Vec::new();
        let mut pos = 0;
        let mut event = None;
        while pos < bytes.len() {
            let d = server.decode(&mut bytes[pos..]);
            data.extend_from_slice(&bytes[pos + d.data.start..pos + d.data.end]);
            pos += d.consumed;
            if d.event.is_some() {
                event = d.event;
                break;
            }
        }
        (data, event)
    }
}

fn server_frame(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let h = encoder::HEADROOM;
    let mut slot = vec![0u8; h + payload.len()];
    slot[h..].copy_from_slice(payload);
    let start = encoder::write_header_before(&mut slot, h, opcode, payload.len());
    slot[start..].to_vec()
}

#[test]
fn local_bytes_wait_for_the_101_then_travel_masked_both_ways() {
    let mut d = Driver::new();
    d.local_sends(b"early");
    assert!(d.to_edge.is_empty(), "nothing before the connect");
    d.t.handle_origin_connected(d.now);
    d.drain();
    let resp = d.edge_reads_request();
    assert!(d.to_edge.is_empty(), "only the request before the 101");
    // The 101 and a first frame in one read.
    let mut bytes = resp;
    bytes.extend(server_frame(Opcode::Binary, b"hello local"));
    d.edge_sends(&bytes);
    assert_eq!(d.to_local, b"hello local");
    d.local_sends(b" and more");
    let (data, event) = d.edge_frames();
    assert_eq!(data, b"early and more");
    assert_eq!(event, None);
    // A ping from the edge gets a masked pong.
    d.edge_sends(&server_frame(Opcode::Ping, b"p"));
    let mut server = Decoder::new(DecoderLimits::default());
    let mut pong = std::mem::take(&mut d.to_edge);
    assert_eq!(server.decode(&mut pong).event, Some(Event::Pong));
    assert_eq!(d.t.stats().to_origin, 14);
    assert_eq!(d.t.stats().to_client, 11);
}

#[test]
fn local_eof_sends_close_1000_and_the_edges_close_ends_it() {
    let mut d = Driver::new();
    d.t.handle_origin_connected(d.now);
    d.drain();
    let resp = d.edge_reads_request();
    d.edge_sends(&resp);
    d.t.handle_client_eof(d.now);
    d.drain();
    let (_, event) = d.edge_frames();
    assert_eq!(
        event,
        Some(Event::Close {
            code: Some(CloseCode::NORMAL)
        })
    );
    assert!(!d.finished);
    d.edge_sends(&server_frame(Opcode::Close, &1000u16.to_be_bytes()));
    assert!(d.finished && d.edge_closed && d.local_closed);
    assert!(d.to_edge.is_empty(), "our Close came first: no second one");
    assert_eq!(
        d.t.close_account(),
        Some((
            "local",
            "the local client closed the connection".to_string()
        ))
    );
}

#[test]
fn the_edges_close_is_answered_and_ends_the_local_connection() {
    let mut d = Driver::new();
    d.t.handle_origin_connected(d.now);
    d.drain();
    let resp = d.edge_reads_request();
    d.edge_sends(&resp);
    d.edge_sends(&server_frame(Opcode::Close, &1001u16.to_be_bytes()));
    let (_, event) = d.edge_frames();
    assert_eq!(
        event,
        Some(Event::Close {
            code: Some(CloseCode::GOING_AWAY)
        })
    );
    assert!(d.finished && d.local_closed);
}

#[test]
fn a_refusal_ends_the_local_connection_and_says_why() {
    let mut d = Driver::new();
    d.local_sends(b"SELECT 1");
    d.t.handle_origin_connected(d.now);
    d.drain();
    d.to_edge.clear();
    let mut refusal = Vec::new();
    write_refusal(404, "no route for this path", &[], &mut refusal);
    d.edge_sends(&refusal);
    assert!(d.finished && d.local_closed && d.to_local.is_empty());
    assert!(d.to_edge.is_empty(), "nothing after a refusal");
    assert_eq!(
        d.t.failure(),
        Some("the edge answered 404 Not Found: no route for this path")
    );
    assert_eq!(
        d.t.close_record().map(|r| r.reason),
        Some(CloseReason::Refused(404))
    );
}

#[test]
fn an_edge_that_never_answers_times_out_and_too_much_early_data_is_refused() {
    let mut d = Driver::new();
    d.t.handle_origin_connected(d.now);
    d.drain();
    d.now += Duration::from_secs(10);
    d.t.handle_timeout(d.now);
    d.drain();
    assert!(d.finished);
    assert_eq!(
        d.t.failure(),
        Some("the edge did not answer the upgrade in time")
    );

    let mut d = Driver::new();
    d.local_sends(&[0u8; 2000]);
    assert!(d.finished && d.local_closed);
    let mut d = Driver::new();
    d.t.handle_origin_connect_failed(-111, d.now);
    d.drain();
    assert!(d.finished);
    assert!(
        d.t.failure().unwrap().contains("Connection refused"),
        "{:?}",
        d.t.failure()
    );
}

#[test]
fn masking_keys_change_from_frame_to_frame() {
    let mut t = AccessTunnel::new(config(), [0; 16], [7; 32], Instant::now());
    let keys: Vec<[u8; 4]> = (0..64).map(|_| t.mask_key()).collect();
    let distinct: std::collections::HashSet<_> = keys.iter().collect();
    assert!(distinct.len() > 60, "{keys:?}");
    // Another seed, another stream: keys are the seed's, not a counter's.
    let mut u = AccessTunnel::new(config(), [0; 16], [8; 32], Instant::now());
    let other: Vec<[u8; 4]> = (0..64).map(|_| u.mask_key()).collect();
    assert_eq!(keys.iter().zip(&other).filter(|(a, b)| a == b).count(), 0);
}

#[test]
fn a_tls_failure_closes_the_edge_socket_gracefully_so_the_alert_goes_out() {
    let mut t = AccessTunnel::new(config(), [0; 16], [1; 32], Instant::now());
    while t.poll_intent().is_some() {}
    t.handle_origin_tls_failed("invalid peer certificate: UnknownIssuer".into());
    let intents: Vec<Intent> = std::iter::from_fn(|| t.poll_intent()).collect();
    assert!(
        matches!(intents.first(), Some(Intent::CloseOrigin)),
        "{intents:?}"
    );
    assert!(
        !intents.iter().any(|i| matches!(i, Intent::AbortOrigin)),
        "{intents:?}"
    );
    assert!(t.is_closed());
    assert_eq!(t.failure(), Some("invalid peer certificate: UnknownIssuer"));
}
