//! Tests of the opening handshake (RFC 6455 §4.2.1, §4.2.2): the RFC's accept example, every
//! check of `parse_upgrade`, the size limits, and the exact bytes of the responses.

use super::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const LIMIT: usize = 8192;

fn request(headers: &[(&str, &str)]) -> Vec<u8> {
    request_line("GET /db?address=x HTTP/1.1", headers)
}

fn request_line(line: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("{line}\r\n");
    for (n, v) in headers {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

fn good_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Host", "Example.COM:8080"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
    ]
}

fn with(name: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut h: Vec<_> = good_headers()
        .into_iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
        .collect();
    h.push((name, value));
    h
}

fn without(name: &str) -> Vec<(&'static str, &'static str)> {
    good_headers()
        .into_iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
        .collect()
}

fn parse(bytes: &[u8]) -> Result<Option<(UpgradeRequest, usize)>, HandshakeError> {
    parse_upgrade(bytes, LIMIT)
}

fn malformed(bytes: &[u8]) -> &'static str {
    match parse(bytes) {
        Err(HandshakeError::Malformed(reason)) => reason,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn rfc_accept_example() {
    // RFC 6455 §1.3.
    assert_eq!(&accept_key(KEY.as_bytes()), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[test]
fn parses_a_valid_request_and_leaves_pipelined_bytes() {
    let mut bytes = request(&good_headers());
    let head = bytes.len();
    bytes.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
    let (req, head_len) = parse(&bytes).unwrap().unwrap();
    assert_eq!(head_len, head);
    assert_eq!(
        req,
        UpgradeRequest {
            path: "/db".into(),
            host: Some("example.com".into()),
            accept: *b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            binary_subprotocol: false,
        }
    );
}

#[test]
fn incomplete_head_is_none_until_the_limit() {
    let bytes = request(&good_headers());
    for cut in 0..bytes.len() {
        assert_eq!(parse_upgrade(&bytes[..cut], LIMIT), Ok(None), "cut {cut}");
    }
    let cut = bytes.len() - 1;
    assert_eq!(
        parse_upgrade(&bytes[..cut], cut),
        Err(HandshakeError::TooLarge)
    );
}

#[test]
fn one_huge_header_line_is_too_large() {
    let mut bytes = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    bytes.resize(64 * 1024, b'a');
    assert_eq!(parse_upgrade(&bytes, LIMIT), Err(HandshakeError::TooLarge));
}

#[test]
fn complete_head_over_the_limit_is_too_large() {
    let bytes = request(&good_headers());
    assert_eq!(
        parse_upgrade(&bytes, bytes.len() - 1),
        Err(HandshakeError::TooLarge)
    );
    assert!(parse_upgrade(&bytes, bytes.len()).unwrap().is_some());
}

/// Found by the `upgrade_request` fuzz target: a head still incomplete at the limit was 431 when
/// a read ended past the limit, but 400 when a later read brought a malformation past it,
/// because the parser looked beyond the limit. Only the first `max_header_bytes` count.
#[test]
fn bytes_past_the_limit_do_not_change_the_answer() {
    let mut bytes = b"GET /db HTTP/1.1\r\nHost: edge.example\r\nX-Long: ".to_vec();
    bytes.resize(100, b'a');
    let limit = 64;
    assert_eq!(parse_upgrade(&bytes, limit), Err(HandshakeError::TooLarge));
    bytes.extend_from_slice(b"\r\nBad Header\r\n\r\n");
    assert_eq!(parse_upgrade(&bytes, limit), Err(HandshakeError::TooLarge));
    // Within the limit, the same malformation is what the client hears about.
    assert_eq!(
        parse_upgrade(&bytes, 1024),
        Err(HandshakeError::Malformed("invalid header name"))
    );
}

#[test]
fn too_many_headers_is_too_large() {
    let mut h = good_headers();
    let names: Vec<String> = (0..60).map(|i| format!("X-H{i}")).collect();
    h.extend(names.iter().map(|n| (n.as_str(), "v")));
    assert_eq!(
        parse_upgrade(&request(&h), 1 << 16),
        Err(HandshakeError::TooLarge)
    );
    h.truncate(64);
    assert!(parse_upgrade(&request(&h), 1 << 16).unwrap().is_some());
}

#[test]
fn method_and_http_version() {
    assert_eq!(
        malformed(&request_line("POST / HTTP/1.1", &good_headers())),
        "method must be GET"
    );
    assert_eq!(
        malformed(&request_line("GET / HTTP/1.0", &good_headers())),
        "HTTP/1.1 is required"
    );
    assert!(matches!(
        parse(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n"),
        Err(HandshakeError::Malformed(_))
    ));
    assert!(matches!(
        parse(b"GET / HTTP/2.0\r\n\r\n"),
        Err(HandshakeError::Malformed(_))
    ));
}

#[test]
fn host_is_required_and_normalised() {
    assert_eq!(malformed(&request(&without("Host"))), "missing Host header");
    let host = |v: &'static str| parse(&request(&with("Host", v))).unwrap().unwrap().0.host;
    assert_eq!(host("EXAMPLE.com"), Some("example.com".into()));
    assert_eq!(host("[::1]:9000"), Some("[::1]".into()));
    assert_eq!(host("[::1]"), Some("[::1]".into()));
    assert_eq!(host("10.0.0.1:80"), Some("10.0.0.1".into()));
    assert_eq!(host(""), None);
    assert!(matches!(
        parse(&request(&with("Host", "[::1"))),
        Err(HandshakeError::Malformed(_))
    ));
    let mut twice = good_headers();
    twice.push(("host", "other"));
    assert_eq!(malformed(&request(&twice)), "more than one Host header");
}

#[test]
fn upgrade_header_token() {
    assert_eq!(
        malformed(&request(&without("Upgrade"))),
        "missing Upgrade: websocket header"
    );
    assert_eq!(
        malformed(&request(&with("Upgrade", "h2c"))),
        "missing Upgrade: websocket header"
    );
    assert!(parse(&request(&with("Upgrade", "foo, WebSocket")))
        .unwrap()
        .is_some());
}

#[test]
fn connection_header_token() {
    let want = "missing Connection: Upgrade header";
    assert_eq!(malformed(&request(&without("Connection"))), want);
    assert_eq!(malformed(&request(&with("Connection", "keep-alive"))), want);
    assert_eq!(malformed(&request(&with("Connection", "upgraded"))), want);
    assert!(parse(&request(&with("Connection", "keep-alive, Upgrade")))
        .unwrap()
        .is_some());
    assert!(parse(&request(&with("connection", "UPGRADE")))
        .unwrap()
        .is_some());
}

#[test]
fn key_must_be_16_bytes_of_base64() {
    assert_eq!(
        malformed(&request(&without("Sec-WebSocket-Key"))),
        "missing Sec-WebSocket-Key header"
    );
    let bad = "Sec-WebSocket-Key is not 16 bytes of base64";
    assert_eq!(
        malformed(&request(&with("Sec-WebSocket-Key", "dGhlIHNhbXBsZQ=="))),
        bad
    );
    assert_eq!(
        malformed(&request(&with(
            "Sec-WebSocket-Key",
            "not base64!!!!!!!!!!!!=="
        ))),
        bad
    );
    assert_eq!(malformed(&request(&with("Sec-WebSocket-Key", ""))), bad);
}

#[test]
fn version_must_be_13() {
    assert_eq!(
        malformed(&request(&without("Sec-WebSocket-Version"))),
        "missing Sec-WebSocket-Version header"
    );
    for v in ["8", "12", "14", "13, 8", ""] {
        let leaked: &'static str = Box::leak(v.to_owned().into_boxed_str());
        let r = parse(&request(&with("Sec-WebSocket-Version", leaked)));
        assert_eq!(r, Err(HandshakeError::WrongVersion), "{v}");
    }
}

#[test]
fn no_body_allowed() {
    assert!(parse(&request(&with("Content-Length", "0")))
        .unwrap()
        .is_some());
    let want = "an Upgrade request must not have a body";
    assert_eq!(malformed(&request(&with("Content-Length", "5"))), want);
    assert_eq!(
        malformed(&request(&with("Transfer-Encoding", "chunked"))),
        want
    );
}

#[test]
fn binary_subprotocol() {
    let offered = |v: &'static str| {
        parse(&request(&with("Sec-WebSocket-Protocol", v)))
            .unwrap()
            .unwrap()
            .0
            .binary_subprotocol
    };
    assert!(offered("binary"));
    assert!(offered("base64, binary"));
    assert!(!offered("base64"));
    assert!(!offered("binaryx"));
    assert!(
        !parse(&request(&good_headers()))
            .unwrap()
            .unwrap()
            .0
            .binary_subprotocol
    );
}

#[test]
fn error_statuses_and_reasons() {
    assert_eq!(HandshakeError::Malformed("x").status(), 400);
    assert_eq!(HandshakeError::Malformed("x").reason(), "x");
    assert_eq!(HandshakeError::WrongVersion.status(), 426);
    assert_eq!(HandshakeError::TooLarge.status(), 431);
    assert!(!HandshakeError::TooLarge.reason().is_empty());
}

#[test]
fn switching_protocols_response() {
    let (mut req, _) = parse(&request(&good_headers())).unwrap().unwrap();
    let mut out = Vec::new();
    write_switching_protocols(&req, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    );
    req.binary_subprotocol = true;
    let mut out = Vec::new();
    write_switching_protocols(&req, &mut out);
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with("Sec-WebSocket-Protocol: binary\r\n\r\n"));
}

#[test]
fn refusal_response() {
    let mut out = Vec::new();
    write_refusal(
        426,
        "use version 13",
        &[("Sec-WebSocket-Version", "13")],
        &mut out,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 426 Upgrade Required\r\nContent-Type: text/plain\r\nContent-Length: 15\r\n\
         Connection: close\r\nSec-WebSocket-Version: 13\r\n\r\nuse version 13\n"
    );
    for (status, phrase) in [
        (400, "Bad Request"),
        (404, "Not Found"),
        (408, "Request Timeout"),
        (426, "Upgrade Required"),
        (431, "Request Header Fields Too Large"),
        (500, "Internal Server Error"),
        (502, "Bad Gateway"),
        (503, "Service Unavailable"),
        (504, "Gateway Timeout"),
    ] {
        let mut out = Vec::new();
        write_refusal(status, "", &[("X-Evil", "a\r\nb")], &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} {phrase}\r\n")),
            "{text}"
        );
        assert!(text.contains("Content-Length: 1\r\n") && text.contains("X-Evil: a  b\r\n"));
        assert!(text.ends_with("\r\n\r\n\n"));
    }
}
