//! What sits between the client socket and the session: plain TCP, where received bytes are
//! handed to the session where they landed and the session's output is sent as it is, or TLS
//! (rustls), where received records are opened into plaintext for the session and everything
//! sent to the client is sealed into records first.
//!
//! TLS copies what rustls's buffered API needs and no more: a received slot is copied into
//! rustls (`read_tls`) and the slot goes back to the kernel at once; rustls decrypts in place and
//! the plaintext is read out into one owned buffer that the session unmasks in place and that
//! then travels to the origin as it is. Toward the client, bytes are sealed into one owned
//! buffer (the encryption is the copy). So a TLS tunnel never holds a pool slot.
//!
//! Invariants: a transport never reorders bytes; record sequence numbers follow the order in
//! which bytes are sealed, so everything sealed is sent, in order (no pong replacement under
//! TLS); handshake messages and alerts rustls produces while opening are sent before anything
//! sealed after them.

use std::io::Read;
use std::sync::Arc;

use ringway_uring::TxBuf;

pub enum Transport {
    /// Bytes pass through unchanged.
    Plain,
    /// A TLS server session (boxed: a rustls connection is a few KiB of state).
    Tls(Box<Tls>),
}

impl Transport {
    /// A TLS transport for a freshly accepted connection.
    pub fn tls(config: &Arc<rustls::ServerConfig>) -> Result<Transport, rustls::Error> {
        Ok(Self::wrap(
            rustls::ServerConnection::new(config.clone())?.into(),
        ))
    }

    /// A TLS client transport toward `name` (`ringway access` to the edge); its ClientHello is
    /// ready to send at once ([`Tls::take_pending`]).
    pub fn tls_client(
        config: &Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> Result<Transport, rustls::Error> {
        Ok(Self::wrap(
            rustls::ClientConnection::new(config.clone(), name)?.into(),
        ))
    }

    fn wrap(conn: rustls::Connection) -> Transport {
        Transport::Tls(Box::new(Tls {
            conn,
            notified: false,
            hello_version: None,
            framing: 0,
        }))
    }

    /// Owned bytes to send on this transport's socket; returns what goes on the wire (sealed
    /// under TLS: possibly empty while the handshake holds them). Pool bytes are sealed by the
    /// relay, which can read the slot.
    pub fn on_send(&mut self, bytes: Vec<u8>) -> TxBuf {
        match self {
            Transport::Plain => TxBuf::owned(bytes),
            Transport::Tls(t) => TxBuf::owned(t.seal(&bytes)),
        }
    }

    /// True when bytes may be copied to the wire as they are (small payloads coalesced into
    /// one send, pongs replaced by newer ones); a record-based transport frames them itself.
    pub fn passes_bytes_through(&self) -> bool {
        matches!(self, Transport::Plain)
    }

    pub fn tls_mut(&mut self) -> Option<&mut Tls> {
        match self {
            Transport::Plain => None,
            Transport::Tls(t) => Some(t),
        }
    }
}

/// One TLS session, server side (wss:// listeners) or client side (`ringway access`).
pub struct Tls {
    conn: rustls::Connection,
    /// close_notify queued already.
    notified: bool,
    /// The ClientHello's `client_version`, when the first record was one (for the log when
    /// the handshake fails: a client that offers only TLS 1.1 or older).
    hello_version: Option<u16>,
    /// Ciphertext read minus plaintext given out minus framing reported: positive while a
    /// read's records are still partly unreported framing, negative while bytes of a record
    /// begun in an earlier read (already reported) are being decrypted.
    framing: i64,
}

/// What one read of ciphertext gave.
#[derive(Debug, Default)]
pub struct Opened {
    /// Handshake messages or an alert to send to the client before anything else.
    pub reply: Option<Vec<u8>>,
    /// Application bytes for the session.
    pub plain: Vec<u8>,
    /// The client sent close_notify: its stream ends after `plain`.
    pub closed: bool,
    /// The session failed (bad record, handshake refused...): send `reply` (the alert), then
    /// close.
    pub failed: Option<String>,
    /// Bytes of this read that carried no plaintext: record headers and tags, handshake
    /// messages, alerts (a record split over two reads counts whole in the first; its
    /// plaintext is credited in the next, so the sum stays the true framing plus at most one
    /// record).
    pub framing: usize,
}

impl Tls {
    /// Feeds ciphertext received from the client.
    pub fn open(&mut self, mut ciphertext: &[u8]) -> Opened {
        if self.conn.is_handshaking() && self.hello_version.is_none() {
            // Record header (type 22, version, length), handshake header (type 1, length),
            // then the client_version.
            if let [0x16, _, _, _, _, 0x01, _, _, _, hi, lo, ..] = *ciphertext {
                self.hello_version = Some(u16::from_be_bytes([hi, lo]));
            }
        }
        let mut out = Opened::default();
        let read = ciphertext.len();
        // The plaintext is at most the ciphertext plus the part of a record an earlier read
        // left in rustls: one allocation in the common case.
        out.plain.reserve(ciphertext.len());
        while !ciphertext.is_empty() && out.failed.is_none() && !out.closed {
            match self.conn.read_tls(&mut ciphertext) {
                Ok(0) => out.closed = true,
                Ok(_) => {}
                Err(e) => out.failed = Some(e.to_string()),
            }
            match self.conn.process_new_packets() {
                Ok(state) => {
                    // Read exactly what rustls has decrypted: one resize, no zeroed slack.
                    let n = state.plaintext_bytes_to_read();
                    if n > 0 {
                        let at = out.plain.len();
                        out.plain.resize(at + n, 0);
                        if self.conn.reader().read_exact(&mut out.plain[at..]).is_err() {
                            out.plain.truncate(at);
                        }
                    }
                    out.closed |= state.peer_has_closed();
                }
                Err(e) => out.failed = Some(describe(&e, self.hello_version)),
            }
        }
        out.reply = self.take_tls();
        self.framing += read as i64 - out.plain.len() as i64;
        if self.framing > 0 {
            out.framing = self.framing as usize;
            self.framing = 0;
        }
        out
    }

    /// Seals `plain` into records, with anything rustls had pending in front.
    pub fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut wire = Vec::with_capacity(plain.len() + 64);
        let mut rest = plain;
        while !rest.is_empty() {
            match std::io::Write::write(&mut self.conn.writer(), rest) {
                Ok(0) | Err(_) => break,
                Ok(n) => rest = &rest[n..],
            }
            self.write_tls_into(&mut wire);
        }
        self.write_tls_into(&mut wire);
        wire
    }

    /// The close_notify alert, once (RFC 8446 §6.1), with anything pending in front.
    pub fn close_notify(&mut self) -> Option<Vec<u8>> {
        if self.notified {
            return None;
        }
        self.notified = true;
        self.conn.send_close_notify();
        self.take_tls()
    }

    /// Still in the TLS handshake.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The SNI name the client sent (server side).
    pub fn server_name(&self) -> Option<&str> {
        match &self.conn {
            rustls::Connection::Server(c) => c.server_name(),
            rustls::Connection::Client(_) => None,
        }
    }

    /// What rustls has to send now (the ClientHello of a fresh client session).
    pub fn take_pending(&mut self) -> Option<Vec<u8>> {
        self.take_tls()
    }

    /// Whether the handshake resumed an earlier session.
    pub fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// The negotiated protocol version, e.g. `TLSv1_3`.
    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    fn take_tls(&mut self) -> Option<Vec<u8>> {
        if !self.conn.wants_write() {
            return None;
        }
        let mut wire = Vec::new();
        self.write_tls_into(&mut wire);
        (!wire.is_empty()).then_some(wire)
    }

    fn write_tls_into(&mut self, wire: &mut Vec<u8>) {
        while self.conn.wants_write() {
            match self.conn.write_tls(wire) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// A rustls error in words for the log.
fn describe(e: &rustls::Error, hello_version: Option<u16>) -> String {
    let old = match hello_version {
        Some(0x0302) => Some("TLS 1.1"),
        Some(0x0301) => Some("TLS 1.0"),
        Some(v) if v < 0x0301 => Some("SSL 3 or older"),
        _ => None,
    };
    if let (Some(old), rustls::Error::PeerIncompatible(_)) = (old, e) {
        return format!("client offers only {old} (ringway speaks TLS 1.2 and 1.3)");
    }
    match e {
        rustls::Error::PeerIncompatible(why) => format!("client incompatible: {why:?}"),
        rustls::Error::NoApplicationProtocol => {
            "no common ALPN protocol (ringway speaks http/1.1)".to_string()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
