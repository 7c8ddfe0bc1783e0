//! The client role of RFC 6455, for `ringway access`: the opening handshake (§4.1) and masked
//! client frames (§5.3).
//!
//! The caller supplies the randomness (a fresh 16-byte nonce per handshake, a fresh masking key
//! per frame, RFC 6455 §4.1 and §5.3); this module stays sans-IO and deterministic.
//!
//! Invariants: the request offers no extension, so a response that selects one is refused; a
//! subprotocol in the response must be one that was offered; `Sec-WebSocket-Accept` must be
//! exactly base64(SHA-1(key + GUID)) (§4.1, point 4 of the response checks). A refusal (any
//! status but 101) is reported with its status, reason phrase and the first line of its body
//! when the body has arrived, so the access client can log what the edge said.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::frame::{FrameHeader, Opcode};
use super::handshake::{accept_key, WEBSOCKET_VERSION};
use super::mask::apply_mask;

/// Headroom in front of a payload that any masked client frame header fits in (2 + 8 + 4).
pub const CLIENT_HEADROOM: usize = FrameHeader::MAX_LEN;

/// Most header lines a 101 response may have.
const MAX_RESPONSE_HEADERS: usize = 32;

/// The upgrade request a client sends.
#[derive(Clone, Debug)]
pub struct ClientRequest<'a> {
    /// The Host header (with `:port` when not the scheme's default).
    pub host: &'a str,
    /// The request target: path and query.
    pub path: &'a str,
    /// Subprotocols offered, in order of preference (e.g. `binary`).
    pub protocols: &'a [&'a str],
    /// Extra headers (`Authorization`, ...); CR and LF in them are replaced by spaces.
    pub headers: &'a [(&'a str, &'a str)],
}

/// Writes the upgrade request for the 16-byte `nonce`; returns the `Sec-WebSocket-Key` it sent,
/// which [`parse_response`] needs.
pub fn write_request(req: &ClientRequest<'_>, nonce: [u8; 16], out: &mut Vec<u8>) -> [u8; 24] {
    let mut key = [0u8; 24];
    // 16 bytes always encode to exactly 24 base64 characters.
    let written = STANDARD.encode_slice(nonce, &mut key);
    debug_assert!(matches!(written, Ok(24)));
    out.extend_from_slice(b"GET ");
    push_clean(out, req.path);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    push_clean(out, req.host);
    out.extend_from_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
    out.extend_from_slice(&key);
    out.extend_from_slice(b"\r\nSec-WebSocket-Version: ");
    out.extend_from_slice(WEBSOCKET_VERSION.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !req.protocols.is_empty() {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        push_clean(out, &req.protocols.join(", "));
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in req.headers {
        push_clean(out, name);
        out.extend_from_slice(b": ");
        push_clean(out, value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    key
}

fn push_clean(out: &mut Vec<u8>, s: &str) {
    out.extend(
        s.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

/// Why an upgrade did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseError {
    /// The server answered with this status instead of 101: its reason phrase and the first
    /// line of its body (empty if the body had not arrived).
    Refused {
        status: u16,
        phrase: String,
        body: String,
    },
    /// A 101 that breaks RFC 6455 §4.1 (what is wrong, in words).
    Invalid(&'static str),
    /// The response head is larger than the limit.
    TooLarge,
}

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseError::Refused {
                status,
                phrase,
                body,
            } if body.is_empty() => write!(f, "the edge answered {status} {phrase}"),
            ResponseError::Refused {
                status,
                phrase,
                body,
            } => write!(f, "the edge answered {status} {phrase}: {body}"),
            ResponseError::Invalid(why) => write!(f, "invalid upgrade response: {why}"),
            ResponseError::TooLarge => f.write_str("upgrade response head too large"),
        }
    }
}

/// A successful upgrade: where the frames start and the subprotocol chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgraded {
    /// Bytes of the response head; frames may follow in the same input.
    pub head_len: usize,
    /// The subprotocol the server selected, if any.
    pub protocol: Option<String>,
}

/// Parses the server's answer to a request sent with `key` and offering `protocols`.
/// `Ok(None)`: the head is not complete yet (and under `max_head` bytes).
pub fn parse_response(
    input: &[u8],
    key: &[u8; 24],
    protocols: &[&str],
    max_head: usize,
) -> Result<Option<Upgraded>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(&input[..input.len().min(max_head)]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() >= max_head => {
            return Err(ResponseError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ResponseError::Invalid("not an HTTP/1.1 response")),
    };
    let status = resp.code.unwrap_or(0);
    if status != 101 {
        let body = &input[head_len..];
        let line = body.split(|&b| b == b'\n').next().unwrap_or_default();
        return Err(ResponseError::Refused {
            status,
            phrase: resp.reason.unwrap_or_default().to_string(),
            body: String::from_utf8_lossy(line.trim_ascii()).into_owned(),
        });
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect::<Vec<&[u8]>>()
    };
    let upgrade = header("upgrade");
    if upgrade.len() != 1 || !upgrade[0].trim_ascii().eq_ignore_ascii_case(b"websocket") {
        return Err(ResponseError::Invalid("no `Upgrade: websocket`"));
    }
    let connection_upgrades = header("connection").iter().any(|v| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    if !connection_upgrades {
        return Err(ResponseError::Invalid("no `Connection: Upgrade`"));
    }
    let accept = header("sec-websocket-accept");
    if accept.len() != 1 || accept[0].trim_ascii() != accept_key(key) {
        return Err(ResponseError::Invalid(
            "Sec-WebSocket-Accept does not match the key sent",
        ));
    }
    if !header("sec-websocket-extensions").is_empty() {
        return Err(ResponseError::Invalid("an extension that was not offered"));
    }
    let chosen = header("sec-websocket-protocol");
    let protocol = match chosen.as_slice() {
        [] => None,
        [one] => {
            let p = String::from_utf8_lossy(one.trim_ascii()).into_owned();
            if !protocols.contains(&p.as_str()) {
                return Err(ResponseError::Invalid("a subprotocol that was not offered"));
            }
            Some(p)
        }
        _ => return Err(ResponseError::Invalid("more than one subprotocol")),
    };
    Ok(Some(Upgraded { head_len, protocol }))
}

/// Frames `slot[payload]` as one masked binary frame in place: the header goes into the
/// headroom right before the payload and the payload is masked with `key`. Returns the frame's
/// range. The caller keeps at least [`CLIENT_HEADROOM`] bytes in front of the payload.
///
/// # Panics
///
/// If fewer than [`CLIENT_HEADROOM`] bytes precede `payload.start` (a caller bug).
pub fn mask_in_place(
    slot: &mut [u8],
    payload: std::ops::Range<usize>,
    key: [u8; 4],
) -> std::ops::Range<usize> {
    let h = FrameHeader {
        fin: true,
        rsv: 0,
        opcode: Opcode::Binary as u8,
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let len = h.buffer_len();
    let start = payload.start - len;
    h.emit(&mut slot[start..payload.start]);
    apply_mask(&mut slot[payload.clone()], key, 0);
    start..payload.end
}

/// A complete masked control frame (Close, Ping, Pong), payload truncated to 125 bytes.
pub fn masked_control(opcode: Opcode, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let payload = payload.get(..125).unwrap_or(payload);
    let h = FrameHeader {
        fin: true,
        rsv: 0,
        opcode: opcode as u8,
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let mut out = vec![0u8; h.buffer_len() + payload.len()];
    let n = h.emit(&mut out);
    out[n..].copy_from_slice(payload);
    apply_mask(&mut out[n..], key, 0);
    out
}

#[cfg(test)]
mod tests;
