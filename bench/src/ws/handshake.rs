//! The opening handshake, client side (RFC 6455 §4.1): the Upgrade request and the check of the
//! server's answer, with `httparse` reading the response head.
//!
//! Invariants: the request carries a fresh random 16-byte key per connection (RFC 6455 §4.1,
//! item 7); a response is accepted only with status 101, `Upgrade: websocket`,
//! `Connection: Upgrade` and the `Sec-WebSocket-Accept` derived from that key by
//! `ringway_proto::ws::handshake::accept_key` (RFC 6455 §4.2.2). Any other status is reported as
//! that status. Bytes after the response head are frames and are left to the caller.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngCore;
use ringway_proto::ws::handshake::accept_key;

/// Longest response head accepted.
pub const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Most headers a response may carry.
const MAX_HEADERS: usize = 32;

/// One connection's `Sec-WebSocket-Key` and the accept value it expects back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientKey {
    /// base64 of 16 random bytes.
    pub key: [u8; 24],
    /// `accept_key(key)`.
    pub accept: [u8; 28],
}

impl ClientKey {
    pub fn random(rng: &mut impl RngCore) -> ClientKey {
        let mut raw = [0u8; 16];
        rng.fill_bytes(&mut raw);
        let mut key = [0u8; 24];
        // 16 bytes always encode to exactly 24 base64 characters.
        let written = STANDARD.encode_slice(raw, &mut key);
        debug_assert_eq!(written, Ok(24));
        ClientKey {
            key,
            accept: accept_key(&key),
        }
    }
}

/// Why the server's answer is not a valid 101.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// A well-formed response with a status other than 101.
    Status(u16),
    /// A 101 missing something RFC 6455 §4.1 requires, or not HTTP at all.
    Invalid(&'static str),
}

/// Appends the Upgrade request for `authority` (the Host header) and `path` to `out`.
pub fn write_request(authority: &str, path: &str, key: &ClientKey, out: &mut Vec<u8>) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(
        b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Key: ",
    );
    out.extend_from_slice(&key.key);
    out.extend_from_slice(b"\r\n\r\n");
}

/// Checks the response head at the start of `buf` against `key`.
///
/// `Ok(None)`: the head is incomplete (and shorter than [`MAX_RESPONSE_HEAD`]).
/// `Ok(Some(head_len))`: a valid 101; frames start at `buf[head_len..]`.
pub fn parse_response(buf: &[u8], key: &ClientKey) -> Result<Option<usize>, HandshakeFailure> {
    use HandshakeFailure::Invalid;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD => {
            return Err(Invalid("response head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Invalid("malformed HTTP response")),
    };
    match resp.code {
        Some(101) => {}
        Some(code) => return Err(HandshakeFailure::Status(code)),
        None => return Err(Invalid("malformed HTTP response")),
    }
    let (mut upgrade, mut connection, mut accept) = (false, false, false);
    for h in resp.headers.iter() {
        let value = h.value.trim_ascii();
        if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade |= value.eq_ignore_ascii_case(b"websocket");
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection |= value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
        } else if h.name.eq_ignore_ascii_case("sec-websocket-accept") {
            if value != key.accept {
                return Err(Invalid("wrong Sec-WebSocket-Accept"));
            }
            accept = true;
        }
    }
    match (upgrade, connection, accept) {
        (false, _, _) => Err(Invalid("101 without Upgrade: websocket")),
        (_, false, _) => Err(Invalid("101 without Connection: Upgrade")),
        (_, _, false) => Err(Invalid("101 without Sec-WebSocket-Accept")),
        _ => Ok(Some(head_len)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ClientKey {
        let key = *b"dGhlIHNhbXBsZSBub25jZQ==";
        ClientKey {
            key,
            accept: accept_key(&key),
        }
    }

    #[test]
    fn rfc_sample_accept() {
        assert_eq!(&key().accept, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn request_has_the_required_headers() {
        let mut out = Vec::new();
        write_request("127.0.0.1:80", "/echo", &key(), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /echo HTTP/1.1\r\nHost: 127.0.0.1:80\r\n"));
        assert!(text.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn accepts_a_valid_101_and_leaves_frames() {
        let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x82\x01a";
        let head = resp.len() - 3;
        assert_eq!(parse_response(resp, &key()), Ok(Some(head)));
        for cut in 0..head {
            assert_eq!(parse_response(&resp[..cut], &key()), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn reports_status_and_bad_accept() {
        let resp = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parse_response(resp, &key()),
            Err(HandshakeFailure::Status(503))
        );
        let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n";
        assert!(matches!(
            parse_response(resp, &key()),
            Err(HandshakeFailure::Invalid(_))
        ));
        assert!(parse_response(b"SSH-2.0-x\r\n\r\n", &key()).is_err());
    }
}
