//! Whether a route's `host` and `path` can ever match a request, and how to write them if not.
//!
//! A request is matched on its Host header as the handshake normalises it (trimmed, port
//! removed, lowercased; an IPv6 literal keeps its brackets) and on its path without the query
//! string (RFC 7230 §5.4, RFC 3986 §3.2.2, §3.3). Route hosts are lowercased too, so case never
//! matters; anything a client's Host header or request path cannot carry is refused here,
//! with the spelling that does match when there is one.

use std::net::Ipv6Addr;

/// Why no request can match route host `host`, worded with the fix; `None` when one can.
pub(super) fn host_problem(host: &str) -> Option<String> {
    let why = if host.is_empty() {
        return Some(
            "\"\" can never match: an empty host matches no request; leave `host` out to match \
             any host"
                .to_string(),
        );
    } else if host.contains("://") {
        "a Host header has no scheme".to_string()
    } else if host.contains('@') {
        "a Host header has no user info".to_string()
    } else if host.contains(['/', '?', '#']) {
        "a Host header has no path, query or fragment (the path goes in `path`)".to_string()
    } else if host.contains(char::is_whitespace) {
        "a Host header name has no whitespace".to_string()
    } else if host.parse::<Ipv6Addr>().is_ok() {
        "a Host header writes an IPv6 address in brackets".to_string()
    } else if let Some(inner) = host.strip_prefix('[') {
        match inner.split_once(']') {
            Some((ip, "")) if ip.parse::<Ipv6Addr>().is_ok() => return None,
            Some((ip, port)) if ip.parse::<Ipv6Addr>().is_ok() && port.starts_with(':') => {
                "routes match the Host header without its port".to_string()
            }
            _ => "brackets hold an IPv6 address: `[2001:db8::1]`".to_string(),
        }
    } else if host.contains(':') {
        "routes match the Host header without its port".to_string()
    } else if !host.is_ascii() {
        "clients send an internationalised name in its ASCII (`xn--`) form; write that".to_string()
    } else if let Some(c) = host.chars().find(|&c| !is_reg_name(c)) {
        format!("a host name cannot hold {c:?}")
    } else {
        return None;
    };
    let bare = bare_host(host);
    Some(match bare {
        Some(fix) if fix != host => {
            format!("{host:?} can never match: {why}; write host = {fix:?}")
        }
        _ => format!("{host:?} can never match: {why}"),
    })
}

/// Why no request can match route path `path`, worded with the fix; `None` when one can.
pub(super) fn path_problem(path: &str) -> Option<String> {
    let (why, fix) = if !path.starts_with('/') {
        ("a request path starts with '/'", format!("/{path}"))
    } else if let Some((before, _)) = path.split_once('?') {
        (
            "requests are matched on the path without its query string",
            before.to_string(),
        )
    } else if let Some((before, _)) = path.split_once('#') {
        ("clients never send the fragment", before.to_string())
    } else if path.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        (
            "clients send whitespace, control and non-ASCII characters percent-encoded",
            percent_encoded(path),
        )
    } else if path.split('/').any(|s| s == "." || s == "..") {
        (
            "clients remove `.` and `..` segments before sending",
            without_dot_segments(path),
        )
    } else {
        return None;
    };
    let fix = if path_problem(&fix).is_none() {
        format!("; write path = {fix:?}")
    } else {
        String::new()
    };
    Some(format!("{path:?} can never match: {why}{fix}"))
}

/// `host` as clients send it in a Host header (no scheme, user info, path, whitespace or
/// port; IPv6 in brackets), if that is a name a request can match.
fn bare_host(host: &str) -> Option<String> {
    let s = host.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let s = s.split(['/', '?', '#']).next().unwrap_or(s);
    let s = s.rsplit_once('@').map_or(s, |(_, h)| h);
    let bare = if s.parse::<Ipv6Addr>().is_ok() {
        format!("[{s}]")
    } else if s.starts_with('[') {
        s.split_inclusive(']').next().unwrap_or(s).to_string()
    } else {
        s.rsplit_once(':').map_or(s, |(name, _)| name).to_string()
    };
    let matchable = match bare.strip_prefix('[').and_then(|b| b.strip_suffix(']')) {
        Some(ip) => ip.parse::<Ipv6Addr>().is_ok(),
        None => !bare.is_empty() && bare.chars().all(is_reg_name),
    };
    matchable.then_some(bare)
}

/// RFC 3986 §3.2.2 `reg-name`: unreserved, percent-encoded and sub-delims characters.
fn is_reg_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~%!$&'()*+,;=".contains(c)
}

/// `path` with whitespace, control and non-ASCII bytes percent-encoded, as clients send it.
fn percent_encoded(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b <= b' ' || b >= 0x7f {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// `path` after RFC 3986 §5.2.4 dot-segment removal, as clients send it.
fn without_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for segment in path.split('/').skip(1) {
        match segment {
            "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    format!("/{}", kept.join("/"))
}
