//! Opening a connection without blocking: TCP connect, then for ws the Upgrade request and the
//! check of the 101 (RFC 6455 §4.1).
//!
//! Phases run in order `Connecting → SendUpgrade → AwaitResponse → open`; tcp targets are open as
//! soon as the connect completes. [`Dial::advance`] is called on every readiness event of the
//! socket (spurious ones included) and moves as far as the socket allows. A connect is complete
//! when the socket has no pending error and a peer address; TCP_NODELAY is set right then.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rand::RngCore;

use super::Stream;
use crate::stats::ErrorKind;
use crate::target::Target;
use crate::ws::handshake::{self, ClientKey, MAX_RESPONSE_HEAD};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    SendUpgrade { written: usize },
    AwaitResponse,
    Open,
}

/// A connection being opened.
pub struct Dial {
    sock: TcpStream,
    phase: Phase,
    /// ws: the request while it is written, then the response head while it is read.
    buf: Vec<u8>,
    /// ws only.
    key: Option<ClientKey>,
    /// Frames the server sent right behind its 101.
    leftover: Vec<u8>,
    pub started: Instant,
}

impl Dial {
    /// Starts connecting to `target` and registers the socket under `token`.
    pub fn start(
        target: &Target,
        registry: &Registry,
        token: Token,
        rng: &mut impl RngCore,
    ) -> Result<Dial, ErrorKind> {
        let started = Instant::now();
        let mut sock = TcpStream::connect(target.addr).map_err(|e| connect_error(&e))?;
        registry
            .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| ErrorKind::Io(format!("epoll register: {e}")))?;
        let key = target.is_ws().then(|| ClientKey::random(rng));
        let mut buf = Vec::new();
        if let Some(key) = &key {
            handshake::write_request(&target.authority, &target.path, key, &mut buf);
        }
        Ok(Dial {
            sock,
            phase: Phase::Connecting,
            buf,
            key,
            leftover: Vec::new(),
            started,
        })
    }

    /// Moves as far as the socket allows; `Ok(true)` once the connection is open.
    pub fn advance(&mut self) -> Result<bool, ErrorKind> {
        if self.phase == Phase::Connecting {
            if let Some(e) = self.sock.take_error().map_err(|e| connect_error(&e))? {
                return Err(connect_error(&e));
            }
            match self.sock.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) => return Err(connect_error(&e)),
            }
            self.sock
                .set_nodelay(true)
                .map_err(|e| ErrorKind::Io(format!("TCP_NODELAY: {e}")))?;
            self.phase = match self.key {
                Some(_) => Phase::SendUpgrade { written: 0 },
                None => Phase::Open,
            };
        }
        while let Phase::SendUpgrade { written } = self.phase {
            match self.sock.write(&self.buf[written..]) {
                Ok(n) if written + n == self.buf.len() => {
                    self.buf.clear();
                    self.phase = Phase::AwaitResponse;
                }
                Ok(n) => {
                    self.phase = Phase::SendUpgrade {
                        written: written + n,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ErrorKind::from_io(&e)),
            }
        }
        if self.phase == Phase::AwaitResponse {
            return self.read_response();
        }
        Ok(self.phase == Phase::Open)
    }

    fn read_response(&mut self) -> Result<bool, ErrorKind> {
        let Some(key) = self.key else {
            return Ok(true);
        };
        loop {
            let have = self.buf.len();
            self.buf.resize(have + 2048, 0);
            let read = self.sock.read(&mut self.buf[have..]);
            self.buf.truncate(have + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => {
                    return Err(ErrorKind::UnexpectedClose(
                        "server closed during the upgrade".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ErrorKind::from_io(&e)),
            }
            if let Some(head_len) = handshake::parse_response(&self.buf, &key)? {
                self.leftover = self.buf[head_len..].to_vec();
                self.buf = Vec::new();
                self.phase = Phase::Open;
                return Ok(true);
            }
            debug_assert!(self.buf.len() < MAX_RESPONSE_HEAD);
        }
    }

    /// The open connection; `msg_len` payload bytes per message (one ws frame each), pattern
    /// stream starting at `seed`. Call only after `advance` returned `Ok(true)`.
    pub fn into_stream(self, msg_len: usize, seed: u64) -> Stream {
        debug_assert_eq!(self.phase, Phase::Open);
        let ws = self.key.is_some();
        Stream::new(self.sock, ws, self.leftover, msg_len, seed)
    }
}

fn connect_error(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
        _ => ErrorKind::ConnectFailed(format!("connect: {e}")),
    }
}
