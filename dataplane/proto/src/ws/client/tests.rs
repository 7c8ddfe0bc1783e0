//! The client role against this crate's own server side: a request the server parses, a 101
//! the client accepts, refusals and broken 101s reported in words, and masked frames the
//! server's decoder unmasks.

use super::*;
use crate::ws::decoder::{Decoder, DecoderLimits};
use crate::ws::handshake::{parse_upgrade, write_refusal, write_switching_protocols};

const NONCE: [u8; 16] = *b"the sample nonce";

fn request(protocols: &[&str]) -> (Vec<u8>, [u8; 24]) {
    let mut out = Vec::new();
    let req = ClientRequest {
        host: "edge.example:8443",
        path: "/db?x=1",
        protocols,
        headers: &[("Authorization", "Bearer t0ken\r\nX-Evil: 1")],
    };
    let key = write_request(&req, NONCE, &mut out);
    (out, key)
}

#[test]
fn the_server_accepts_the_request_and_the_client_its_101() {
    let (bytes, key) = request(&["binary"]);
    assert_eq!(
        &key, b"dGhlIHNhbXBsZSBub25jZQ==",
        "RFC 6455 §1.3's sample nonce"
    );
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("Authorization: Bearer t0ken  X-Evil: 1\r\n"),
        "{text}"
    );
    let (req, head_len) = parse_upgrade(&bytes, 8192).unwrap().expect("complete");
    assert_eq!(head_len, bytes.len());
    assert_eq!(
        (req.path.as_str(), req.host.as_deref()),
        ("/db", Some("edge.example"))
    );
    let mut response = Vec::new();
    write_switching_protocols(&req, &mut response);
    let frames_after = response.len();
    response.extend_from_slice(&[0x82, 0x01, b'x']); // a frame right behind the head
    let up = parse_response(&response, &key, &["binary"], 8192)
        .unwrap()
        .expect("complete");
    assert_eq!(up.head_len, frames_after);
    assert_eq!(up.protocol.as_deref(), Some("binary"));
    // Split anywhere, the head is incomplete until its last byte.
    assert_eq!(
        parse_response(&response[..frames_after - 1], &key, &["binary"], 8192),
        Ok(None)
    );
}

#[test]
fn refusals_and_broken_101s_are_reported_in_words() {
    let (_, key) = request(&[]);
    let mut refusal = Vec::new();
    write_refusal(404, "no route for this path", &[], &mut refusal);
    let e = parse_response(&refusal, &key, &[], 8192).unwrap_err();
    assert_eq!(
        e,
        ResponseError::Refused {
            status: 404,
            phrase: "Not Found".into(),
            body: "no route for this path".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "the edge answered 404 Not Found: no route for this path"
    );
    let ok_head = |extra: &str, accept: &str| {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
        )
        .into_bytes()
    };
    let good = String::from_utf8(accept_key(&key).to_vec()).unwrap();
    assert!(parse_response(&ok_head("", &good), &key, &[], 8192).is_ok());
    let cases = [
        (
            ok_head("", "d3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jv"),
            "Sec-WebSocket-Accept",
        ),
        (
            ok_head("Sec-WebSocket-Extensions: permessage-deflate\r\n", &good),
            "extension",
        ),
        (
            ok_head("Sec-WebSocket-Protocol: chat\r\n", &good),
            "subprotocol",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n".to_vec(),
            "Upgrade: websocket",
        ),
    ];
    for (bytes, words) in cases {
        let e = parse_response(&bytes, &key, &[], 8192)
            .unwrap_err()
            .to_string();
        assert!(e.contains(words), "{words:?} not in {e:?}");
    }
    let mut long = b"HTTP/1.1 101 Switching Protocols\r\nX-Long: ".to_vec();
    long.resize(100, b'a');
    assert_eq!(
        parse_response(&long, &key, &[], 64),
        Err(ResponseError::TooLarge)
    );
}

#[test]
fn masked_frames_round_trip_through_the_server_decoder() {
    let payload = b"SELECT 1;".repeat(50);
    let mut slot = vec![0u8; CLIENT_HEADROOM + payload.len()];
    slot[CLIENT_HEADROOM..].copy_from_slice(&payload);
    let end = slot.len();
    let frame = mask_in_place(&mut slot, CLIENT_HEADROOM..end, [9, 8, 7, 6]);
    let mut wire = slot[frame].to_vec();
    wire.extend(masked_control(Opcode::Close, &[0x03, 0xe8], [1, 2, 3, 4]));
    let mut server = Decoder::new(DecoderLimits::default());
    let d = server.decode(&mut wire);
    assert_eq!(&wire[d.data.clone()], &payload[..]);
    assert_eq!(
        d.event,
        Some(crate::ws::decoder::Event::Close {
            code: Some(crate::ws::frame::CloseCode::NORMAL)
        })
    );
}
