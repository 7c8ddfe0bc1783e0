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

use crate::raw::{masked, parse_frame, parse_head, upgrade_request, Frame, SAMPLE_ACCEPT};

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
        ws.upgrade(path)?;
        Ok(ws)
    }

    fn upgrade(&mut self, path: &str) -> Result<(), String> {
        self.send(upgrade_request(path).as_bytes())
            .map_err(|e| format!("TLS handshake or upgrade request: {e}"))?;
        // A response head is a few hundred bytes: a bounded number of reads.
        for _ in 0..64 {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
                let head = parse_head(&raw).map_err(|e| format!("upgrade response: {e}"))?;
                if head.status != 101 || head.header("sec-websocket-accept") != Some(SAMPLE_ACCEPT)
                {
                    return Err(format!("upgrade refused:\n{}", head.raw));
                }
                return Ok(());
            }
            self.fill()
                .map_err(|e| format!("reading the upgrade response: {e}"))?;
        }
        Err("no end of the upgrade response head".into())
    }

    /// One read (bounded by the socket timeout) appended to `buf`; an error at the end of the
    /// stream.
    fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.tls.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("stream ended".into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Writes bytes (frames, masked) through TLS, blocking; rustls's stream may read what the
    /// server sent meanwhile, so attackers that must never read use [`TlsWs::feed`].
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
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
        self.send(&masked(0x2, data))
            .map_err(|e| format!("send: {e}"))?;
        let mut got = Vec::with_capacity(data.len());
        // At most one frame per byte, plus control frames.
        for _ in 0..data.len() + 64 {
            if got.len() >= data.len() {
                break;
            }
            let frame = self.read_frame()?;
            match frame.opcode {
                0x0 | 0x2 => got.extend_from_slice(&frame.payload),
                0x9 | 0xa => {}
                0x8 => return Err(format!("Close instead of the echo: {:?}", frame.payload)),
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

    /// The next frame from the server.
    pub fn read_frame(&mut self) -> Result<Frame, String> {
        // Enough reads for the largest frame the tests see; every read has the socket timeout.
        for _ in 0..10_000 {
            if let Some((frame, used)) = parse_frame(&self.buf).map_err(|e| e.to_string())? {
                if frame.masked {
                    return Err("the server masked a frame".into());
                }
                self.buf.drain(..used);
                return Ok(frame);
            }
            self.fill().map_err(|e| format!("read: {e}"))?;
        }
        Err("frame not complete after 10,000 reads".into())
    }

    /// Sends a Close 1000 and waits (bounded by the socket timeout) for the server's.
    pub fn close(mut self) {
        let _ = self.send(&masked(0x8, &1000u16.to_be_bytes()));
        for _ in 0..64 {
            match self.read_frame() {
                Ok(f) if f.opcode != 0x8 => {}
                _ => return,
            }
        }
    }
}
