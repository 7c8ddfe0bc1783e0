//! A hand-driven TCP client for hostile tests: it writes exactly the bytes a test gives it and
//! parses what comes back itself, an HTTP/1.1 response head or a server frame (RFC 6455 §5.2),
//! so malformed requests and frames that a real client library refuses to send can be sent.
//!
//! Invariants: every read is bounded by [`STEP`](crate::STEP) or the given bound; buffered bytes
//! past a response head stay in the buffer for the next frame read; the peer closing is reported
//! as [`RawError::Closed`], never as a hang.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout, Instant};

use crate::STEP;

/// Largest response head accepted before giving up (the server's are tiny).
const MAX_HEAD: usize = 64 * 1024;
/// The Sec-WebSocket-Key of RFC 6455 §1.3's example; its accept value is below.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

#[derive(Debug)]
pub enum RawError {
    /// The peer closed the connection (EOF) before the expected bytes arrived.
    Closed { buffered: Vec<u8> },
    /// The connection failed (e.g. reset).
    Io(std::io::Error),
    /// Nothing complete arrived within the bound.
    Timeout(Duration),
    /// The bytes are not an HTTP response / frame.
    Malformed(String),
}

impl fmt::Display for RawError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawError::Closed { buffered } => write!(
                f,
                "connection closed by server; {} bytes buffered: {:?}",
                buffered.len(),
                String::from_utf8_lossy(&buffered[..buffered.len().min(200)])
            ),
            RawError::Io(e) => write!(f, "io error: {e}"),
            RawError::Timeout(d) => write!(f, "nothing within {d:?}"),
            RawError::Malformed(m) => write!(f, "malformed: {m}"),
        }
    }
}

/// A parsed HTTP response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    /// Header names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    pub raw: String,
}

impl ResponseHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    /// The three RSV bits, in the low bits.
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl Frame {
    /// For a Close frame: the status code, if the payload carries one (RFC 6455 §5.5.1).
    pub fn close_code(&self) -> Option<u16> {
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Encodes a client frame. `mask` of `None` sends it unmasked (a protocol error for clients).
pub fn client_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(((fin as u8) << 7) | ((rsv & 0b111) << 4) | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked client frame with FIN set and no RSV bits.
pub fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(true, 0, opcode, Some([0x37, 0xfa, 0x21, 0x3d]), payload)
}

/// A valid upgrade request for `path` with the RFC's sample key.
pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// How a drained connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Eof,
    Reset,
}

/// A raw TCP connection to the server.
#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(port: u16) -> RawConn {
        let stream = timeout(STEP, TcpStream::connect(("127.0.0.1", port)))
            .await
            .unwrap_or_else(|_| panic!("connect to 127.0.0.1:{port} timed out"))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        stream.set_nodelay(true).expect("set_nodelay");
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes all of `bytes`; an error means the server already closed or reset.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match timeout(STEP, self.stream.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write timed out",
            )),
        }
    }

    /// Reads more bytes into the buffer, failing at `deadline`.
    async fn fill(&mut self, deadline: Instant, bound: Duration) -> Result<(), RawError> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Err(_) => Err(RawError::Timeout(bound)),
            Ok(Err(e)) => Err(RawError::Io(e)),
            Ok(Ok(0)) => Err(RawError::Closed {
                buffered: self.buf.clone(),
            }),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    /// Reads an HTTP response head (through the blank line).
    pub async fn read_head(&mut self) -> Result<ResponseHead, RawError> {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
                return parse_head(&raw);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(RawError::Malformed(format!(
                    "no end of head in {MAX_HEAD} bytes"
                )));
            }
            self.fill(deadline, STEP).await?;
        }
    }

    /// Sends a valid upgrade for `path` and asserts the 101 answer.
    pub async fn upgrade(port: u16, path: &str) -> RawConn {
        let mut conn = RawConn::connect(port).await;
        conn.try_upgrade(path)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        conn
    }

    /// Like [`RawConn::upgrade`], over a socket whose SO_RCVBUF is set to `rcvbuf` before the
    /// connect, so the window it advertises stays small and the server's sends to it stall as
    /// soon as it stops reading; failures come back as errors (the whole within [`STEP`]).
    pub async fn upgrade_small_window(
        port: u16,
        path: &str,
        rcvbuf: u32,
    ) -> Result<RawConn, String> {
        let connect = async {
            let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
            socket
                .set_recv_buffer_size(rcvbuf)
                .map_err(|e| format!("SO_RCVBUF: {e}"))?;
            let stream = socket
                .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            stream
                .set_nodelay(true)
                .map_err(|e| format!("nodelay: {e}"))?;
            let mut conn = RawConn {
                stream,
                buf: Vec::new(),
            };
            conn.try_upgrade(path).await?;
            Ok(conn)
        };
        timeout(STEP, connect)
            .await
            .unwrap_or_else(|_| Err(format!("upgrade to {path} not answered within {STEP:?}")))
    }

    /// Sends a valid upgrade for `path` and checks the 101 and its Sec-WebSocket-Accept.
    async fn try_upgrade(&mut self, path: &str) -> Result<(), String> {
        self.send(upgrade_request(path).as_bytes())
            .await
            .map_err(|e| format!("send upgrade request: {e}"))?;
        let head = self
            .read_head()
            .await
            .map_err(|e| format!("reading the upgrade response: {e}"))?;
        if head.status != 101 {
            return Err(format!("upgrade refused:\n{}", head.raw));
        }
        if head.header("sec-websocket-accept") != Some(SAMPLE_ACCEPT) {
            return Err(format!("wrong Sec-WebSocket-Accept:\n{}", head.raw));
        }
        Ok(())
    }

    /// The socket, to write to it directly (floods, writes that may block).
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Reads one server frame within `STEP`.
    pub async fn read_frame(&mut self) -> Result<Frame, RawError> {
        self.read_frame_by(Instant::now() + STEP).await
    }

    /// Reads one server frame, failing at `deadline`.
    pub async fn read_frame_by(&mut self, deadline: Instant) -> Result<Frame, RawError> {
        let bound = deadline.saturating_duration_since(Instant::now());
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf)? {
                self.buf.drain(..used);
                return Ok(frame);
            }
            self.fill(deadline, bound).await?;
        }
    }

    /// Reads and discards everything until EOF or a reset, at most until `deadline`. Returns how
    /// it ended and how many bytes were read (buffered ones included); `Err` with the byte count
    /// if the connection was still open at `deadline` or failed otherwise.
    pub async fn drain(&mut self, deadline: Instant) -> Result<(Ending, u64), (String, u64)> {
        let mut total = self.buf.len() as u64;
        self.buf.clear();
        let mut chunk = vec![0u8; 64 * 1024];
        // Bounded by the deadline; the count bound only guards against a spinning read.
        for _ in 0..10_000_000u32 {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Err(("still open".into(), total)),
                Ok(Ok(0)) => return Ok((Ending::Eof, total)),
                Ok(Ok(n)) => total += n as u64,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Ok((Ending::Reset, total))
                }
                Ok(Err(e)) => return Err((format!("read error: {e}"), total)),
            }
        }
        Err(("read never ended".into(), total))
    }

    /// Reads frames until a Close (skipping at most 64 others) and returns it.
    pub async fn read_close(&mut self) -> Result<Frame, RawError> {
        for _ in 0..64 {
            let frame = self.read_frame().await?;
            if frame.opcode == 0x8 {
                return Ok(frame);
            }
        }
        Err(RawError::Malformed("64 frames without a Close".into()))
    }

    /// Waits at most `bound` for the server to close the connection, discarding any bytes
    /// (e.g. a 408 response). Returns the bytes seen, or the error that is not EOF/reset.
    pub async fn await_close(&mut self, bound: Duration) -> Result<Vec<u8>, RawError> {
        let deadline = Instant::now() + bound;
        loop {
            match self.fill(deadline, bound).await {
                Ok(()) => {}
                Err(RawError::Closed { buffered }) => return Ok(buffered),
                Err(RawError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Ok(std::mem::take(&mut self.buf))
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }
}

/// Parses an HTTP response head (through the blank line).
pub fn parse_head(raw: &[u8]) -> Result<ResponseHead, RawError> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let (true, Some(status)) = (version.starts_with("HTTP/1."), status) else {
        return Err(RawError::Malformed(format!(
            "bad status line {status_line:?}"
        )));
    };
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(ResponseHead {
        status,
        headers,
        raw: text,
    })
}

/// Parses one frame from the front of `buf`: `Ok(None)` if more bytes are needed, otherwise the
/// frame and how many bytes it used.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, RawError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 if buf.len() < 4 => return Ok(None),
        126 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() < 10 => return Ok(None),
        127 => (
            u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")),
            10,
        ),
        n => (u64::from(n), 2),
    };
    if len > 256 * 1024 * 1024 {
        return Err(RawError::Malformed(format!("server frame of {len} bytes")));
    }
    let mask = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        at += 4;
        Some([buf[at - 4], buf[at - 3], buf[at - 2], buf[at - 1]])
    } else {
        None
    };
    let end = at + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let mut payload = buf[at..end].to_vec();
    if let Some(key) = mask {
        payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b ^= key[i % 4]);
    }
    let frame = Frame {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0b111,
        opcode: b0 & 0x0f,
        masked,
        payload,
    };
    Ok(Some((frame, end)))
}
