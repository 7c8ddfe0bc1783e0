//! A blocking wss:// client on rustls for tests that need many TLS tunnels on plain threads:
//! attackers that write and never read (a tiny receive window, so the server's sends stall) and
//! probes that measure round trips. The handshake and the upgrade are checked; frames are built
//! masked (RFC 6455 §5.3) and the server's frames are read one at a time.
//!
//! Invariants: every blocking read and write has a timeout (`set_read_timeout`/
//! `set_write_timeout` on the socket); an attacker's socket is non-blocking ([`TlsWs::feed`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::raw::masked;

/// A client config that trusts only `ca` (PEM), ALPN http/1.1.
pub fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read the CA file") {
        roots
            .add(cert.expect("parse the CA certificate"))
            .expect("add the CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One wss:// tunnel, upgraded.
pub struct TlsWs {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    /// Bytes read past the last frame returned.
    buf: Vec<u8>,
}

impl TlsWs {
    /// Connects to 127.0.0.1:`port` as `name`, completes TLS and the upgrade to `path`.
    /// `rcvbuf`: SO_RCVBUF set before connecting (a client that will never read).
    pub fn connect(
        port: u16,
        config: &Arc<rustls::ClientConfig>,
        name: &str,
        path: &str,
        rcvbuf: Option<u32>,
        bound: Duration,
    ) -> Result<TlsWs, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .map_err(|e| format!("socket: {e}"))?;
        if let Some(size) = rcvbuf {
            socket
                .set_recv_buffer_size(size as usize)
                .map_err(|e| format!("SO_RCVBUF: {e}"))?;
        }
        socket
            .connect_timeout(&addr.into(), bound)
            .map_err(|e| format!("connect: {e}"))?;
        let tcp: TcpStream = socket.into();
        tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        tcp.set_read_timeout(Some(bound))
            .and_then(|_| tcp.set_write_timeout(Some(bound)))
            .map_err(|e| format!("timeouts: {e}"))?;
        let server = ServerName::try_from(name.to_owned()).map_err(|e| format!("name: {e}"))?;
        let conn = rustls::ClientConnection::new(config.clone(), server)
            .map_err(|e| format!("TLS client: {e}"))?;
        let mut ws = TlsWs {
            tls: rustls::StreamOwned::new(conn, tcp),
            buf: Vec::new(),
        };
        ws.upgrade(name, path)?;
        Ok(ws)
    }

    fn upgrade(&mut self, host: &str, path: &str) -> Result<(), String> {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        self.tls
            .write_all(request.as_bytes())
            .and_then(|_| self.tls.flush())
            .map_err(|e| format!("TLS handshake or upgrade request: {e}"))?;
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        // A response head is a few hundred bytes: a bounded number of reads.
        for _ in 0..64 {
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                self.buf = head.split_off(end + 4);
                let text = String::from_utf8_lossy(&head);
                // RFC 6455 §1.3: the accept value for the sample nonce.
                if !text.starts_with("HTTP/1.1 101")
                    || !text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                {
                    return Err(format!("upgrade refused:\n{text}"));
                }
                return Ok(());
            }
            let n = self
                .tls
                .read(&mut chunk)
                .map_err(|e| format!("reading the upgrade response: {e}"))?;
            if n == 0 {
                return Err("connection ended before the upgrade response".into());
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Err("no end of the upgrade response head".into())
    }

    /// Writes bytes that are already frames (masked), sealed into records, and never reads:
    /// rustls's stream would read whatever the server sent whenever it writes, so an attacker
    /// built on it would read its pongs after all.
    pub fn write_frames(&mut self, frames: &[u8]) -> std::io::Result<()> {
        self.tls.conn.writer().write_all(frames)?;
        // Each write_tls writes at least one byte or fails: bounded by the bytes sealed.
        while self.tls.conn.wants_write() {
            self.tls.conn.write_tls(&mut self.tls.sock)?;
        }
        Ok(())
    }

    /// From now on writes never block ([`TlsWs::feed`]).
    pub fn set_nonblocking(&self) -> std::io::Result<()> {
        self.tls.sock.set_nonblocking(true)
    }

    /// For a non-blocking attacker that never reads: seals `frames` once everything sealed
    /// before has left, then writes what the socket takes. Returns the frame bytes sealed (0
    /// while earlier records still wait for room); an error other than a full socket ends it.
    pub fn feed(&mut self, frames: &[u8]) -> std::io::Result<usize> {
        let mut sealed = 0;
        if !self.tls.conn.wants_write() {
            self.tls.conn.writer().write_all(frames)?;
            sealed = frames.len();
        }
        // Each write_tls writes at least one byte, fails, or finds the socket full.
        while self.tls.conn.wants_write() {
            match self.tls.conn.write_tls(&mut self.tls.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sealed)
    }

    /// Sends `data` as one masked Binary frame and reads frames until as many payload bytes came
    /// back (control frames skipped); the echo must equal `data`.
    pub fn round_trip(&mut self, data: &[u8]) -> Result<(), String> {
        self.write_frames(&masked(0x2, data))
            .map_err(|e| format!("send: {e}"))?;
        let mut got = Vec::with_capacity(data.len());
        // At most one frame per byte, plus control frames.
        for _ in 0..data.len() + 64 {
            if got.len() >= data.len() {
                break;
            }
            let (opcode, payload) = self.read_frame()?;
            match opcode {
                0x0 | 0x2 => got.extend_from_slice(&payload),
                0x9 | 0xa => {}
                0x8 => return Err(format!("Close instead of the echo: {payload:?}")),
                other => return Err(format!("unexpected opcode {other:#x}")),
            }
        }
        if got != data {
            return Err(format!(
                "echo differs: sent {} bytes, got {}",
                data.len(),
                got.len()
            ));
        }
        Ok(())
    }

    /// The next frame from the server (unmasked): opcode and payload.
    pub fn read_frame(&mut self) -> Result<(u8, Vec<u8>), String> {
        // Enough reads for the largest frame the tests see; every read has the socket timeout.
        for _ in 0..10_000 {
            if let Some((opcode, start, len)) = parse_head(&self.buf)? {
                if self.buf.len() >= start + len {
                    let payload = self.buf[start..start + len].to_vec();
                    self.buf.drain(..start + len);
                    return Ok((opcode, payload));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self
                .tls
                .read(&mut chunk)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("stream ended".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Err("frame not complete after 10,000 reads".into())
    }

    /// Sends a Close 1000 and waits (bounded by the socket timeout) for the server's.
    pub fn close(mut self) {
        let _ = self.write_frames(&masked(0x8, &1000u16.to_be_bytes()));
        for _ in 0..64 {
            match self.read_frame() {
                Ok((0x8, _)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// A server frame's opcode, payload offset and length, once its header is complete.
fn parse_head(b: &[u8]) -> Result<Option<(u8, usize, usize)>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[1] & 0x80 != 0 {
        return Err("the server masked a frame".into());
    }
    let (len, at) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(n) as usize, 10)
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    Ok(Some((b[0] & 0x0f, at, len)))
}
