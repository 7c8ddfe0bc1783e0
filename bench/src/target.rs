//! The `--target` URL: `tcp://HOST:PORT` (raw bytes) or `ws://HOST:PORT/PATH` (WebSocket).
//!
//! The host is resolved once, up front; workloads then connect to the resolved address. For ws the
//! `Host` header carries `HOST:PORT` exactly as given and the request target is `/PATH` (with any
//! query string), `/` when the URL has no path.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// How bytes travel to the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Payload bytes written to the socket as they are.
    Tcp,
    /// A WebSocket upgrade, then one masked binary frame per message.
    Ws,
}

/// A parsed and resolved `--target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    pub addr: SocketAddr,
    /// `HOST:PORT` as written in the URL (the ws `Host` header).
    pub authority: String,
    /// Request target for the ws upgrade, starting with `/`.
    pub path: String,
}

impl Target {
    /// Parses and resolves `url`.
    pub fn parse(url: &str) -> Result<Target, String> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("tcp://") {
            (Scheme::Tcp, rest)
        } else if let Some(rest) = url.strip_prefix("ws://") {
            (Scheme::Ws, rest)
        } else if url.starts_with("wss://") {
            return Err(format!("{url}: wss:// is not supported by ringbench yet"));
        } else {
            return Err(format!(
                "{url}: expected tcp://HOST:PORT or ws://HOST:PORT/PATH"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if scheme == Scheme::Tcp && path != "/" {
            return Err(format!("{url}: a tcp:// target has no path"));
        }
        let addr = authority
            .to_socket_addrs()
            .map_err(|e| format!("{url}: cannot resolve {authority:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: {authority:?} resolves to no address"))?;
        Ok(Target {
            scheme,
            addr,
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    pub fn is_ws(&self) -> bool {
        self.scheme == Scheme::Ws
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Scheme::Tcp => write!(f, "tcp://{}", self.authority),
            Scheme::Ws => write!(f, "ws://{}{}", self.authority, self.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes() {
        let t = Target::parse("tcp://127.0.0.1:5000").unwrap();
        assert_eq!(
            (t.scheme, t.addr.port(), t.path.as_str()),
            (Scheme::Tcp, 5000, "/")
        );
        let w = Target::parse("ws://127.0.0.1:8080/echo?x=1").unwrap();
        assert_eq!((w.scheme, w.path.as_str()), (Scheme::Ws, "/echo?x=1"));
        assert_eq!(w.authority, "127.0.0.1:8080");
        assert_eq!(w.to_string(), "ws://127.0.0.1:8080/echo?x=1");
        assert_eq!(Target::parse("ws://127.0.0.1:1").unwrap().path, "/");
    }

    #[test]
    fn rejects_the_rest() {
        for bad in [
            "http://127.0.0.1:1",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:1/x",
            "wss://a:1/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
