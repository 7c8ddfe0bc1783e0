//! The Upgrade request harness: [`parse_upgrade`] on arbitrary bytes, whole and split the way a
//! tunnel reads them (RFC 6455 §4.2.1), and the responses and the route lookup built on its
//! result.
//!
//! Checked: the result agrees with the limit (`Ok(None)` only below it, a head never longer
//! than it); a parsed head ends the head and is the same whatever follows it; a request parsed
//! from a prefix, or refused on a prefix, gives the same answer on the whole input; the fields of
//! an accepted request agree with its headers (re-read here with `httparse`); the 101 and the
//! refusal are well-formed HTTP responses; a route found for the request matches its host and
//! path at a segment boundary.

use std::net::SocketAddr;

use super::Input;
use crate::route::{Route, RouteTable};
use crate::ws::handshake::{
    accept_key, parse_upgrade, write_refusal, write_switching_protocols, HandshakeError,
    UpgradeRequest,
};

type Parsed = Result<Option<(UpgradeRequest, usize)>, HandshakeError>;

/// Layout: a limit byte (below 128: the default 8192 bytes, otherwise 4 × (it − 128)), two
/// bytes choosing where to split, then the request bytes.
pub fn upgrade_request(data: &[u8]) {
    let mut input = Input::new(data);
    let limit = input.byte();
    let max = if limit < 128 {
        8192
    } else {
        usize::from(limit - 128) * 4
    };
    let split = usize::from(input.u16());
    let bytes = input.rest();

    let whole = parse_upgrade(bytes, max);
    check(bytes, max, &whole);
    // A tunnel parses again after every read: what a prefix says must hold for the whole.
    let prefix = &bytes[..split % (bytes.len() + 1)];
    let first = parse_upgrade(prefix, max);
    check(prefix, max, &first);
    match &first {
        Ok(None) => {}
        _ => assert_eq!(first, whole, "prefix and whole input disagree"),
    }
}

fn check(bytes: &[u8], max: usize, parsed: &Parsed) {
    match parsed {
        Ok(None) => assert!(bytes.len() < max, "incomplete at the limit, not refused"),
        Ok(Some((req, head_len))) => {
            let n = *head_len;
            assert!(n <= bytes.len() && n <= max, "head of {n} bytes");
            assert_eq!(
                bytes[n - 1],
                b'\n',
                "the head does not end with its blank line"
            );
            assert_eq!(
                parse_upgrade(&bytes[..n], max),
                Ok(Some((req.clone(), n))),
                "the bytes after the head changed the request"
            );
            assert_eq!(
                parse_upgrade(&bytes[..n - 1], max),
                Ok(None),
                "a head less its last byte is complete"
            );
            check_fields(&bytes[..n], req);
            check_response(req);
            check_route(req);
        }
        Err(e) => {
            assert!(
                matches!(e.status(), 400 | 426 | 431),
                "status {}",
                e.status()
            );
            assert!(!e.reason().is_empty());
            if *e == HandshakeError::TooLarge && bytes.len() < max {
                // Only a complete head (over the limit or with too many headers) is too large
                // before the limit is reached.
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let status = httparse::Request::new(&mut headers).parse(bytes);
                assert!(
                    !matches!(status, Ok(httparse::Status::Partial)),
                    "refused as too large below the limit"
                );
            }
            check_refusal(e);
        }
    }
}

/// The request's fields against its headers, read again here.
fn check_fields(head: &[u8], req: &UpgradeRequest) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Request::new(&mut headers);
    assert!(matches!(r.parse(head), Ok(httparse::Status::Complete(_))));
    assert_eq!(r.method, Some("GET"));
    assert_eq!(r.version, Some(1));
    let target = r.path.unwrap_or_default();
    assert!(!req.path.contains('?'), "query left in the path");
    assert!(target.starts_with(&req.path), "path is not the target's");
    let named = |name: &str| {
        r.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.trim_ascii())
            .collect::<Vec<_>>()
    };
    let (hosts, keys, versions) = (
        named("host"),
        named("sec-websocket-key"),
        named("sec-websocket-version"),
    );
    assert_eq!(
        (hosts.len(), keys.len()),
        (1, 1),
        "Host and key must be single"
    );
    assert_eq!(versions, [b"13"], "accepted a version other than 13");
    assert_eq!(
        req.accept,
        accept_key(keys[0]),
        "wrong Sec-WebSocket-Accept"
    );
    if let Some(host) = &req.host {
        assert!(!host.is_empty() && *host == host.to_ascii_lowercase());
        let value = String::from_utf8_lossy(hosts[0]).to_ascii_lowercase();
        assert!(
            value.starts_with(host.as_str()),
            "host not from the Host header"
        );
    }
}

fn check_response(req: &UpgradeRequest) {
    let mut out = Vec::new();
    write_switching_protocols(req, &mut out);
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    assert_eq!(resp.parse(&out), Ok(httparse::Status::Complete(out.len())));
    assert_eq!(resp.code, Some(101));
    let accept = resp
        .headers
        .iter()
        .find(|h| h.name == "Sec-WebSocket-Accept")
        .map(|h| h.value);
    assert_eq!(accept, Some(&req.accept[..]));
    let protocol = resp
        .headers
        .iter()
        .any(|h| h.name == "Sec-WebSocket-Protocol" && h.value == b"binary");
    assert_eq!(protocol, req.binary_subprotocol);
}

fn check_refusal(e: &HandshakeError) {
    let mut out = Vec::new();
    let extra: &[(&str, &str)] = if e.status() == 426 {
        &[("Sec-WebSocket-Version", "13")]
    } else {
        &[]
    };
    write_refusal(e.status(), e.reason(), extra, &mut out);
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(n)) = resp.parse(&out) else {
        panic!("refusal is not an HTTP response");
    };
    assert_eq!(resp.code, Some(e.status()));
    let length = resp
        .headers
        .iter()
        .find(|h| h.name == "Content-Length")
        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok());
    assert_eq!(
        length,
        Some(out.len() - n),
        "Content-Length is not the body's"
    );
}

fn check_route(req: &UpgradeRequest) {
    let origin = SocketAddr::from(([127, 0, 0, 1], 5432));
    let route = |host: Option<&str>, path: &str| Route {
        name: path.into(),
        host: host.map(Into::into),
        sni: None,
        path: path.into(),
        origin,
        idle_timeout: None,
        pool: None,
        max_tunnels: None,
    };
    let table = RouteTable::new(
        1,
        vec![
            route(None, "/db"),
            route(None, "/db/replica"),
            route(Some("api.example"), "/db"),
            route(Some("edge"), "/"),
        ],
    )
    .expect("valid table");
    let Some((i, found)) = table.lookup(req.host.as_deref(), &req.path) else {
        return;
    };
    assert_eq!(&table.routes()[i], found);
    assert!(found.host.is_none() || found.host == req.host, "wrong host");
    let rest = req.path.strip_prefix(found.path.as_str());
    let at_boundary =
        found.path == "/" || matches!(rest, Some(r) if r.is_empty() || r.starts_with('/'));
    assert!(at_boundary, "{:?} matched {:?}", req.path, found.path);
}
