//! The opening handshake, server side (RFC 6455 §4.2.1 reading the client's Upgrade request,
//! RFC 6455 §4.2.2 answering it), with `httparse` doing the HTTP/1.1 parsing.
//!
//! Invariants: `parse_upgrade` never reads more than the head it is given, never accepts a head
//! longer than the caller's limit, and either returns a request that satisfies every MUST of
//! RFC 6455 §4.2.1 this server relies on, or an error that maps to the status to refuse with
//! (400, 426 with `Sec-WebSocket-Version: 13`, or 431). Bytes after the head are left to the
//! caller: a client may pipeline frames right behind its request.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// RFC 6455 §1.3: the GUID appended to the client's key.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Most headers a request may carry.
const MAX_HEADERS: usize = 64;

/// The only protocol version this server speaks (RFC 6455 §4.4).
pub const WEBSOCKET_VERSION: &str = "13";

/// A valid WebSocket Upgrade request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// Request target without the query string ("/db?address=x" → "/db").
    pub path: String,
    /// Host header value, port stripped, lowercased; `None` when the header is empty.
    pub host: Option<String>,
    /// Sec-WebSocket-Accept value to send (RFC 6455 §4.2.2).
    pub accept: [u8; 28],
    /// The client offered "binary" in Sec-WebSocket-Protocol (comma list).
    pub binary_subprotocol: bool,
}

/// Why an Upgrade request is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not a valid WebSocket Upgrade request; the reason is a short human sentence.
    Malformed(&'static str),
    /// Sec-WebSocket-Version other than 13 (RFC 6455 §4.2.2: answer 426).
    WrongVersion,
    /// The request head exceeds the byte limit or the header count limit.
    TooLarge,
}

impl HandshakeError {
    /// The HTTP status to refuse with: 400, 426 or 431.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::Malformed(_) => 400,
            HandshakeError::WrongVersion => 426,
            HandshakeError::TooLarge => 431,
        }
    }

    /// A short human sentence for the refusal body and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::Malformed(reason) => reason,
            HandshakeError::WrongVersion => "unsupported Sec-WebSocket-Version, only 13 is spoken",
            HandshakeError::TooLarge => "request header too large",
        }
    }
}

/// Parses the client's Upgrade request from the start of `input`.
///
/// `Ok(None)`: the request head is incomplete and shorter than `max_header_bytes`; if
/// `input.len() >= max_header_bytes` and the head is still incomplete → `Err(TooLarge)`, and a
/// complete head longer than `max_header_bytes` is `TooLarge` too. `Ok(Some((req, head_len)))`:
/// bytes after `head_len` are pipelined frames.
pub fn parse_upgrade(
    input: &[u8],
    max_header_bytes: usize,
) -> Result<Option<(UpgradeRequest, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // Bytes past the limit are never looked at, so the answer does not depend on how the
    // request was split into reads (a malformation past the limit is still 431, not 400).
    let head_len = match req.parse(&input[..input.len().min(max_header_bytes)]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() >= max_header_bytes => {
            return Err(HandshakeError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooLarge),
        Err(e) => return Err(HandshakeError::Malformed(httparse_reason(e))),
    };
    if head_len > max_header_bytes {
        return Err(HandshakeError::TooLarge);
    }
    check_request(&req).map(|r| Some((r, head_len)))
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Token => "invalid request line",
        httparse::Error::Version => "invalid HTTP version",
        _ => "malformed HTTP request",
    }
}

/// RFC 6455 §4.2.1 on a complete request head.
fn check_request(req: &httparse::Request<'_, '_>) -> Result<UpgradeRequest, HandshakeError> {
    use HandshakeError::{Malformed, WrongVersion};
    if req.method != Some("GET") {
        return Err(Malformed("method must be GET"));
    }
    if req.version != Some(1) {
        return Err(Malformed("HTTP/1.1 is required"));
    }
    let target = req.path.unwrap_or("");
    let path = target.split_once('?').map_or(target, |(p, _)| p);

    let mut host = None;
    let mut key = None;
    let mut version = None;
    let (mut upgrade, mut connection, mut binary) = (false, false, false);
    for h in req.headers.iter() {
        let name = h.name;
        let value = trim(h.value);
        if name.eq_ignore_ascii_case("host") {
            if host.replace(value).is_some() {
                return Err(Malformed("more than one Host header"));
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(value, |t| t.eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= has_token(value, |t| t.eq_ignore_ascii_case(b"upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            if key.replace(value).is_some() {
                return Err(Malformed("more than one Sec-WebSocket-Key header"));
            }
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            if version.replace(value).is_some() {
                return Err(Malformed("more than one Sec-WebSocket-Version header"));
            }
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            // Subprotocol names are case-sensitive (RFC 6455 §4.1, §11.5).
            binary |= has_token(value, |t| t == b"binary");
        } else if name.eq_ignore_ascii_case("content-length") {
            if value != b"0" {
                return Err(Malformed("an Upgrade request must not have a body"));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Malformed("an Upgrade request must not have a body"));
        }
    }

    let Some(host) = host else {
        return Err(Malformed("missing Host header"));
    };
    if !upgrade {
        return Err(Malformed("missing Upgrade: websocket header"));
    }
    if !connection {
        return Err(Malformed("missing Connection: Upgrade header"));
    }
    let Some(key) = key else {
        return Err(Malformed("missing Sec-WebSocket-Key header"));
    };
    if !matches!(STANDARD.decode(key), Ok(k) if k.len() == 16) {
        return Err(Malformed("Sec-WebSocket-Key is not 16 bytes of base64"));
    }
    match version {
        None => return Err(Malformed("missing Sec-WebSocket-Version header")),
        Some(v) if v != WEBSOCKET_VERSION.as_bytes() => return Err(WrongVersion),
        Some(_) => {}
    }
    Ok(UpgradeRequest {
        path: path.to_owned(),
        host: host_name(host)?,
        accept: accept_key(key),
        binary_subprotocol: binary,
    })
}

/// The Host value without its port, lowercased; `None` if empty.
fn host_name(value: &[u8]) -> Result<Option<String>, HandshakeError> {
    let value = std::str::from_utf8(value)
        .map_err(|_| HandshakeError::Malformed("Host header is not valid UTF-8"))?;
    let name = if value.starts_with('[') {
        // An IPv6 literal: "[::1]:8080" → "[::1]".
        match value.find(']') {
            Some(end) => &value[..=end],
            None => return Err(HandshakeError::Malformed("invalid Host header")),
        }
    } else {
        value.rsplit_once(':').map_or(value, |(name, _)| name)
    };
    Ok((!name.is_empty()).then(|| name.to_ascii_lowercase()))
}

/// Whether the comma-separated `value` holds a token `is_match` accepts.
fn has_token(value: &[u8], is_match: impl Fn(&[u8]) -> bool) -> bool {
    value.split(|&b| b == b',').any(|t| is_match(trim(t)))
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// RFC 6455 §4.2.2: base64(sha1(key + GUID)).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    let digest = sha.finalize();
    let mut out = [0u8; 28];
    // 20 bytes always encode to exactly 28 base64 characters.
    let written = STANDARD.encode_slice(digest, &mut out);
    debug_assert!(matches!(written, Ok(28)));
    out
}

/// "HTTP/1.1 101 Switching Protocols" with Upgrade, Connection, Sec-WebSocket-Accept, and
/// `Sec-WebSocket-Protocol: binary` when the client offered it (RFC 6455 §4.2.2).
pub fn write_switching_protocols(req: &UpgradeRequest, out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(&req.accept);
    out.extend_from_slice(b"\r\n");
    if req.binary_subprotocol {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: binary\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The standard reason phrase of a status (RFC 9110 §15); "Error" for codes it does not name.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        421 => "Misdirected Request",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// A refusal: status line with the standard reason phrase, `Content-Type: text/plain`,
/// `Content-Length`, `Connection: close`, any extra headers (426 callers pass
/// `("Sec-WebSocket-Version", "13")`), body = reason + "\n". CR and LF in extra headers are
/// replaced by spaces so a header can never split the response.
pub fn write_refusal(status: u16, reason: &str, extra_headers: &[(&str, &str)], out: &mut Vec<u8>) {
    let head = format!(
        "HTTP/1.1 {status} {}\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n",
        reason_phrase(status),
        reason.len() + 1,
    );
    out.extend_from_slice(head.as_bytes());
    for (name, value) in extra_headers {
        push_sanitized(out, name);
        out.extend_from_slice(b": ");
        push_sanitized(out, value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(reason.as_bytes());
    out.push(b'\n');
}

fn push_sanitized(out: &mut Vec<u8>, s: &str) {
    out.extend(
        s.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

#[cfg(test)]
mod tests;
