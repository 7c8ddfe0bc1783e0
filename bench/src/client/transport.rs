//! The byte pipe under a connection: a non-blocking TCP socket, or a rustls client session over
//! one (`read_tls` / `write_tls`), behind the same few calls, so dialling, the ws framing and
//! every workload run unchanged over TLS.
//!
//! With edge-triggered epoll a caller may stop reading only once the socket is known to be
//! drained, and stop writing only once the socket is full; the TLS side keeps both rules:
//! - Reads: ciphertext comes from one socket `read` of up to the thread's buffer (64 KiB, one
//!   syscall per 64 KiB as for raw TCP, where rustls alone would read 4 KiB at a time), is handed
//!   to rustls and the plaintext copied into the caller's buffer. Ciphertext whose plaintext does
//!   not fit stays in `backlog` and goes first next time. [`Transport::may_have_more`] says
//!   whether another read can bring more without a new readiness edge.
//! - Writes: [`Transport::write`] takes plaintext only while every byte encrypted before it has
//!   reached the socket, so taking less than offered still means the socket is full and a
//!   writable edge will come. Ciphertext left when the socket fills is written by
//!   [`Transport::flush`], which callers run on every readiness event.
//! - EOF: the peer's close_notify, or the TCP EOF with or without one (many servers omit it; a
//!   load generator has no truncation to guard against).
//! - [`Transport::close_write`] sends close_notify, then shuts the socket's write side down once
//!   it is written.

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use rustls::{ClientConnection, HandshakeKind};

use crate::stats::ErrorKind;

/// A connection's bytes: raw TCP, or TLS over TCP.
pub struct Transport {
    sock: TcpStream,
    tls: Option<Box<TlsSession>>,
    /// The last read may have left bytes a further read gets without a new edge.
    more: bool,
}

/// The TLS side of a [`Transport`].
struct TlsSession {
    conn: ClientConnection,
    /// Ciphertext read from the socket but not yet handed to rustls.
    backlog: Vec<u8>,
    /// The last socket read filled the buffer: the socket may hold more.
    socket_full: bool,
    /// close_notify or the TCP EOF was read: once the plaintext is out, reads return EOF.
    closed: bool,
    /// rustls may hold decrypted plaintext the caller's buffer had no room for (then no more
    /// ciphertext goes in: rustls refuses it beyond 16 KiB of plaintext).
    plaintext_waiting: bool,
    /// Shut the socket's write side down once every TLS byte is written.
    shutdown_when_flushed: bool,
}

impl Transport {
    /// Raw TCP.
    pub fn tcp(sock: TcpStream) -> Transport {
        Transport {
            sock,
            tls: None,
            more: false,
        }
    }

    /// A TLS session over `sock` (whose connect may still be in progress); the handshake starts
    /// with [`Transport::handshake`].
    pub fn tls(sock: TcpStream, conn: ClientConnection) -> Transport {
        Transport {
            sock,
            tls: Some(Box::new(TlsSession {
                conn,
                backlog: Vec::new(),
                socket_full: false,
                closed: false,
                plaintext_waiting: false,
                shutdown_when_flushed: false,
            })),
            more: false,
        }
    }

    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Drives the TLS handshake as far as the socket allows; `Ok(true)` once it is complete
    /// (raw TCP: at once). `tls_in` is the thread's ciphertext buffer.
    pub fn handshake(&mut self, tls_in: &mut [u8]) -> Result<bool, ErrorKind> {
        let Some(tls) = &mut self.tls else {
            return Ok(true);
        };
        loop {
            if !tls.flush(&mut self.sock)? {
                return Ok(false);
            }
            if !tls.conn.is_handshaking() {
                return Ok(true);
            }
            if tls.closed {
                return Err(ErrorKind::UnexpectedClose(
                    "server closed during the TLS handshake".into(),
                ));
            }
            // Ciphertext is kept back only while plaintext waits, which comes after the
            // handshake.
            debug_assert!(tls.backlog.is_empty());
            let Some(n) = read_socket(&mut self.sock, tls_in)? else {
                return Ok(false);
            };
            if n == 0 {
                tls.closed = true;
                continue;
            }
            let (used, _) = tls.feed(&mut self.sock, &tls_in[..n], &mut [], 0)?;
            tls.backlog.extend_from_slice(&tls_in[used..n]);
        }
    }

    /// Reads into `out` (not empty): `Some(n)` payload bytes, `Some(0)` at EOF, `None` if
    /// nothing is there yet. `tls_in` is the thread's ciphertext buffer (unused for raw TCP).
    pub fn read(&mut self, out: &mut [u8], tls_in: &mut [u8]) -> Result<Option<usize>, ErrorKind> {
        debug_assert!(!out.is_empty());
        let Some(tls) = &mut self.tls else {
            let got = read_socket(&mut self.sock, out)?;
            self.more = got == Some(out.len());
            return Ok(got);
        };
        let mut filled = tls.take_plaintext(out, 0)?;
        if !tls.backlog.is_empty() {
            let backlog = std::mem::take(&mut tls.backlog);
            let (used, now) = tls.feed(&mut self.sock, &backlog, out, filled)?;
            filled = now;
            tls.backlog = backlog;
            tls.backlog.drain(..used);
        }
        loop {
            if filled > 0 || tls.closed {
                self.more = filled == out.len()
                    || !tls.backlog.is_empty()
                    || tls.socket_full
                    || (tls.closed && filled > 0);
                return Ok(Some(filled));
            }
            let Some(n) = read_socket(&mut self.sock, tls_in)? else {
                self.more = false;
                return Ok(None);
            };
            if n == 0 {
                tls.closed = true;
                continue;
            }
            tls.socket_full = n == tls_in.len();
            let (used, now) = tls.feed(&mut self.sock, &tls_in[..n], out, filled)?;
            filled = now;
            tls.backlog.extend_from_slice(&tls_in[used..n]);
            if filled == 0 && !tls.socket_full && !tls.closed {
                // A short read drained the socket and brought no whole record: wait for the
                // next edge rather than ask again.
                self.more = false;
                return Ok(None);
            }
        }
    }

    /// Whether the last [`Transport::read`] may have left bytes (in the socket, or decrypted and
    /// not yet handed out, or an EOF behind the last bytes) that another read gets without a new
    /// readiness edge. Raw TCP: the read filled the buffer.
    pub fn may_have_more(&self) -> bool {
        self.more
    }

    /// Writes (TLS: encrypts and writes) up to all of `bytes`: `Some(n)` bytes taken, `None` if
    /// the socket is full. Taking less than offered means the socket is full.
    pub fn write(&mut self, bytes: &[u8]) -> Result<Option<usize>, ErrorKind> {
        let Some(tls) = &mut self.tls else {
            return write_socket(&mut self.sock, bytes);
        };
        let mut taken = 0;
        loop {
            if !tls.flush(&mut self.sock)? {
                return Ok((taken > 0).then_some(taken));
            }
            if taken == bytes.len() {
                return Ok(Some(taken));
            }
            taken += tls
                .conn
                .writer()
                .write(&bytes[taken..])
                .map_err(|e| ErrorKind::Tls(format!("encrypt: {e}")))?;
        }
    }

    /// Writes what TLS still holds (encrypted records, alerts, close_notify); `Ok(true)` once
    /// nothing is left. Raw TCP holds nothing.
    pub fn flush(&mut self) -> Result<bool, ErrorKind> {
        match &mut self.tls {
            Some(tls) => tls.flush(&mut self.sock),
            None => Ok(true),
        }
    }

    /// Whether TLS holds bytes not yet written to the socket.
    pub fn unflushed(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.conn.wants_write() || t.shutdown_when_flushed)
    }

    /// Ends the write side: raw TCP shuts it down; TLS sends close_notify and shuts down once
    /// it is written.
    pub fn close_write(&mut self) -> Result<(), ErrorKind> {
        let Some(tls) = &mut self.tls else {
            return self
                .sock
                .shutdown(std::net::Shutdown::Write)
                .map_err(|e| ErrorKind::from_io(&e));
        };
        tls.conn.send_close_notify();
        tls.shutdown_when_flushed = true;
        tls.flush(&mut self.sock).map(drop)
    }

    /// TLS: whether the handshake resumed a session (`None` for raw TCP or before the
    /// handshake is done).
    pub fn resumed(&self) -> Option<bool> {
        let kind = self.tls.as_ref()?.conn.handshake_kind()?;
        Some(kind == HandshakeKind::Resumed)
    }

    /// TLS: the protocol version and cipher suite, e.g. `TLSv1_3 TLS13_AES_256_GCM_SHA384`.
    pub fn session(&self) -> Option<String> {
        let conn = &self.tls.as_ref()?.conn;
        let version = conn.protocol_version()?;
        let suite = conn.negotiated_cipher_suite()?.suite();
        Some(format!(
            "{} {}",
            version.as_str().unwrap_or("unknown version"),
            suite.as_str().unwrap_or("unknown suite")
        ))
    }
}

impl TlsSession {
    /// Copies decrypted plaintext into `out[filled..]`; returns the new fill.
    fn take_plaintext(&mut self, out: &mut [u8], mut filled: usize) -> Result<usize, ErrorKind> {
        // Whether rustls still holds some is known only if it said so before `out` filled up.
        self.plaintext_waiting = filled == out.len();
        while filled < out.len() {
            match self.conn.reader().read(&mut out[filled..]) {
                Ok(0) => {
                    // close_notify: no more plaintext will come.
                    self.closed = true;
                    break;
                }
                Ok(n) => {
                    filled += n;
                    self.plaintext_waiting = filled == out.len();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.closed = true;
                    break;
                }
                Err(e) => return Err(ErrorKind::Tls(format!("read: {e}"))),
            }
        }
        Ok(filled)
    }

    /// Hands `cipher` to rustls, copying the plaintext into `out[filled..]`, until all of it is
    /// handed over or `out` is full with plaintext still waiting (rustls holds at most 16 KiB of
    /// it). Returns the bytes handed over and the new fill.
    fn feed(
        &mut self,
        sock: &mut TcpStream,
        cipher: &[u8],
        out: &mut [u8],
        mut filled: usize,
    ) -> Result<(usize, usize), ErrorKind> {
        let mut rest = cipher;
        while !rest.is_empty() {
            if self.plaintext_waiting && filled == out.len() {
                break;
            }
            match self.conn.read_tls(&mut rest) {
                // After close_notify rustls reads nothing more; what follows it is dropped.
                Ok(0) => rest = &[],
                Ok(_) => {}
                Err(e) => return Err(ErrorKind::Tls(format!("read_tls: {e}"))),
            }
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // Best effort: tell the server why (the alert rustls queued).
                    let _ = self.flush(sock);
                    return Err(if self.conn.is_handshaking() {
                        ErrorKind::TlsHandshake(e.to_string())
                    } else {
                        ErrorKind::Tls(e.to_string())
                    });
                }
            };
            let before = filled;
            filled = self.take_plaintext(out, filled)?;
            self.plaintext_waiting = filled - before < state.plaintext_bytes_to_read();
        }
        Ok((cipher.len() - rest.len(), filled))
    }

    /// Writes every TLS byte rustls holds; `Ok(false)` if the socket filled first. Then, if asked
    /// for, shuts the write side down.
    fn flush(&mut self, sock: &mut TcpStream) -> Result<bool, ErrorKind> {
        while self.conn.wants_write() {
            match self.conn.write_tls(sock) {
                Ok(0) => return Err(ErrorKind::Io("write returned 0".into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ErrorKind::from_io(&e)),
            }
        }
        if std::mem::take(&mut self.shutdown_when_flushed) {
            sock.shutdown(std::net::Shutdown::Write)
                .map_err(|e| ErrorKind::from_io(&e))?;
        }
        Ok(true)
    }
}

/// One `read`: `Some(n)` bytes (0 at EOF), `None` if the socket is empty.
fn read_socket(sock: &mut TcpStream, buf: &mut [u8]) -> Result<Option<usize>, ErrorKind> {
    loop {
        return match sock.read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(ErrorKind::from_io(&e)),
        };
    }
}

/// One `write`: `Some(n)` bytes taken, `None` if the socket is full.
fn write_socket(sock: &mut TcpStream, bytes: &[u8]) -> Result<Option<usize>, ErrorKind> {
    loop {
        return match sock.write(bytes) {
            Ok(0) => Err(ErrorKind::Io("write returned 0".into())),
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(ErrorKind::from_io(&e)),
        };
    }
}
