//! Opening a connection without blocking: TCP connect, for tls/wss the TLS handshake, then for
//! ws/wss the Upgrade request and the check of the 101 (RFC 6455 §4.1).
//!
//! Phases run in order `Connecting → Handshaking → SendUpgrade → AwaitResponse → Open`; raw TCP
//! skips the handshake (it completes at once), tcp and tls targets skip the upgrade.
//! [`Dial::advance`] is called on every readiness event of the socket (spurious ones included)
//! and moves as far as the socket allows. A connect is complete when the socket has no pending
//! error and a peer address; TCP_NODELAY is set right then. A thread's [`Dialer`] holds what
//! every connection it opens shares: the target and, for TLS, the thread's own client config,
//! whose session cache every later setup of the thread may resume from.

use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rand::RngCore;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::tls::TlsClient;
use super::{Io, Stream, Transport};
use crate::stats::ErrorKind;
use crate::target::Target;
use crate::ws::handshake::{self, ClientKey, MAX_RESPONSE_HEAD};

/// What every connection one thread opens shares.
pub struct Dialer<'a> {
    target: &'a Target,
    /// TLS targets: the thread's config and the server name.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl<'a> Dialer<'a> {
    /// A thread's dialer. `tls` is required for tls and wss targets (and ignored for others).
    pub fn new(target: &'a Target, tls: Option<&TlsClient>) -> Dialer<'a> {
        let tls = tls
            .filter(|_| target.is_tls())
            .map(|t| (t.thread_config(), t.server_name().clone()));
        assert!(
            tls.is_some() || !target.is_tls(),
            "{target}: TLS settings are required"
        );
        Dialer { target, tls }
    }

    pub fn target(&self) -> &Target {
        self.target
    }

    /// Starts connecting and registers the socket under `token`.
    pub fn dial(
        &self,
        registry: &Registry,
        token: Token,
        rng: &mut impl RngCore,
    ) -> Result<Dial, ErrorKind> {
        let started = Instant::now();
        let target = self.target;
        let mut sock = TcpStream::connect(target.addr).map_err(|e| connect_error(&e))?;
        registry
            .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| ErrorKind::Io(format!("epoll register: {e}")))?;
        let transport = match &self.tls {
            Some((config, name)) => {
                let conn = ClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| ErrorKind::TlsHandshake(e.to_string()))?;
                Transport::tls(sock, conn)
            }
            None => Transport::tcp(sock),
        };
        let key = target.is_ws().then(|| ClientKey::random(rng));
        let mut buf = Vec::new();
        if let Some(key) = &key {
            handshake::write_request(&target.authority, &target.path, key, &mut buf);
        }
        Ok(Dial {
            transport,
            phase: Phase::Connecting,
            buf,
            key,
            leftover: Vec::new(),
            started,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Handshaking,
    SendUpgrade { written: usize },
    AwaitResponse,
    Open,
}

/// A connection being opened.
pub struct Dial {
    transport: Transport,
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
    /// Moves as far as the socket allows; `Ok(true)` once the connection is open.
    pub fn advance(&mut self, io: &mut Io) -> Result<bool, ErrorKind> {
        if self.phase == Phase::Connecting {
            let sock = self.transport.socket();
            if let Some(e) = sock.take_error().map_err(|e| connect_error(&e))? {
                return Err(connect_error(&e));
            }
            match sock.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => return Ok(false),
                Err(e) => return Err(connect_error(&e)),
            }
            sock.set_nodelay(true)
                .map_err(|e| ErrorKind::Io(format!("TCP_NODELAY: {e}")))?;
            self.phase = Phase::Handshaking;
        }
        if self.phase == Phase::Handshaking {
            if !self.transport.handshake(&mut io.tls_in)? {
                return Ok(false);
            }
            self.phase = match self.key {
                Some(_) => Phase::SendUpgrade { written: 0 },
                None => Phase::Open,
            };
        }
        while let Phase::SendUpgrade { written } = self.phase {
            let Some(n) = self.transport.write(&self.buf[written..])? else {
                return Ok(false);
            };
            self.phase = if written + n == self.buf.len() {
                self.buf.clear();
                Phase::AwaitResponse
            } else {
                Phase::SendUpgrade {
                    written: written + n,
                }
            };
        }
        if self.phase == Phase::AwaitResponse {
            return self.read_response(io);
        }
        Ok(self.phase == Phase::Open)
    }

    fn read_response(&mut self, io: &mut Io) -> Result<bool, ErrorKind> {
        let Some(key) = self.key else {
            return Ok(true);
        };
        loop {
            let have = self.buf.len();
            self.buf.resize(have + 2048, 0);
            let read = self.transport.read(&mut self.buf[have..], &mut io.tls_in);
            self.buf
                .truncate(have + read.as_ref().map_or(0, |n| n.unwrap_or(0)));
            match read? {
                Some(0) => {
                    return Err(ErrorKind::UnexpectedClose(
                        "server closed during the upgrade".into(),
                    ))
                }
                Some(_) => {}
                None => return Ok(false),
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
        Stream::new(self.transport, ws, self.leftover, msg_len, seed)
    }
}

fn connect_error(e: &std::io::Error) -> ErrorKind {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
        _ => ErrorKind::ConnectFailed(format!("connect: {e}")),
    }
}
