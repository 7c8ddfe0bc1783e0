//! An open connection: sends pattern messages, reads back and checks payload, closes; over raw
//! TCP or TLS alike (the [`Transport`] hides which).
//!
//! Invariants: payload byte `i` sent is pattern byte `seed + i`, and payload byte `i` received
//! must be the same byte, so the echo is checked byte for byte in stream order whatever framing
//! the peer chose. Raw TCP writes borrow the pattern table (no copy); ws writes build whole masked
//! frames of `msg_len` payload bytes in `out`, at most [`IO_CHUNK`] of them at a time, and
//! control replies (pong, close) go behind them, never inside a frame. Reads go into the
//! thread's scratch buffer; for ws the unconsumed tail (a partial header or control frame) is
//! kept in `carry` and put back in front of the next read. Edge-triggered epoll: a read after
//! which [`Transport::may_have_more`] is false (raw TCP: it filled less than the buffer), or a
//! write that takes less than offered, has drained the socket, so the next edge is guaranteed
//! and the loop stops there without a wasted syscall. Every [`Stream::flush`] first writes what
//! TLS still holds, so bytes encrypted when the socket was full go out on the next event.

use ringway_proto::ws::Opcode;

use super::{Io, Transport, CARRY_ROOM, IO_CHUNK};
use crate::pattern;
use crate::stats::ErrorKind;
use crate::ws::writer::{push_close, push_frame, push_pattern_frame};
use crate::ws::{FrameReader, Item};

/// ws state of a stream.
struct WsIo {
    reader: FrameReader,
    carry: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// Payload bytes framed into `out` so far (`>= Stream::sent`).
    framed: u64,
}

/// An open connection (raw TCP or ws).
pub struct Stream {
    transport: Transport,
    msg_len: usize,
    seed: u64,
    queued: u64,
    sent: u64,
    received: u64,
    ws: Option<WsIo>,
    closing: bool,
    peer_closed: bool,
    /// The status code of the peer's Close frame, 0 for a Close without one.
    close_code: Option<u16>,
    /// Read EOF.
    eof: bool,
    /// Reads go on until the socket would block or EOF, past short reads and a Close frame:
    /// once the peer is expected to end the connection, its FIN may be queued right behind the
    /// last bytes and then brings no readiness edge of its own.
    until_eof: bool,
}

impl Stream {
    pub(super) fn new(
        transport: Transport,
        ws: bool,
        leftover: Vec<u8>,
        msg_len: usize,
        seed: u64,
    ) -> Stream {
        Stream {
            transport,
            msg_len,
            seed,
            queued: 0,
            sent: 0,
            received: 0,
            ws: ws.then(|| WsIo {
                reader: FrameReader::new(),
                carry: leftover,
                out: Vec::new(),
                out_pos: 0,
                framed: 0,
            }),
            closing: false,
            peer_closed: false,
            close_code: None,
            eof: false,
            until_eof: false,
        }
    }

    /// Payload bytes queued so far (written or not).
    pub fn queued(&self) -> u64 {
        self.queued
    }

    /// Payload bytes written to the socket (ws: whole frames only).
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Payload bytes read back and checked.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Payload bytes queued but not yet written.
    pub fn unsent(&self) -> u64 {
        self.queued - self.sent
    }

    /// The peer closed: EOF (tcp) or a Close frame (ws).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// EOF was read (the peer ended the TCP connection, or at least its write side).
    pub fn eof(&self) -> bool {
        self.eof
    }

    /// The status code of the peer's Close frame (0 for a Close without one), if one was read.
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// Every queued byte, ws control replies and TLS records included, has been written.
    pub fn flushed(&self) -> bool {
        self.sent == self.queued
            && self.ws.as_ref().is_none_or(|ws| ws.out_pos == ws.out.len())
            && !self.transport.unflushed()
    }

    /// TLS: whether the handshake resumed a session (`None` for raw TCP).
    pub fn tls_resumed(&self) -> Option<bool> {
        self.transport.resumed()
    }

    /// TLS: protocol version and cipher suite (`None` for raw TCP).
    pub fn tls_session(&self) -> Option<String> {
        self.transport.session()
    }

    /// From now on [`Stream::read`] reads until the socket would block or EOF, so an EOF queued
    /// behind the last bytes is not missed. For a peer that is expected to close.
    pub fn expect_eof(&mut self) {
        self.until_eof = true;
    }

    /// How the peer closed, for error reports: "EOF" or "Close 1011".
    pub fn close_reason(&self) -> String {
        match self.close_code {
            None => "EOF".into(),
            Some(0) => "Close without a status code".into(),
            Some(code) => format!("Close {code}"),
        }
    }

    pub fn is_ws(&self) -> bool {
        self.ws.is_some()
    }

    /// A ws Close frame has been read.
    pub fn got_close_frame(&self) -> bool {
        self.ws.as_ref().is_some_and(|ws| ws.reader.is_closed())
    }

    /// Queues `n` more messages; call [`Stream::flush`] to write them.
    pub fn queue_messages(&mut self, n: u64) {
        self.queued += n * self.msg_len as u64;
    }

    /// Writes what is queued until done or the socket is full.
    pub fn flush(&mut self, io: &mut Io) -> Result<(), ErrorKind> {
        if !self.transport.flush()? {
            return Ok(());
        }
        let Some(ws) = &mut self.ws else {
            while self.sent < self.queued {
                let want = (self.queued - self.sent).min(IO_CHUNK as u64) as usize;
                let chunk = pattern::window(self.seed + self.sent, want);
                let Some(n) = self.transport.write(chunk)? else {
                    return Ok(());
                };
                self.sent += n as u64;
                if n < chunk.len() {
                    // Less than offered was taken: the socket is full.
                    break;
                }
            }
            return Ok(());
        };
        loop {
            if ws.out_pos < ws.out.len() {
                match self.transport.write(&ws.out[ws.out_pos..])? {
                    Some(n) => ws.out_pos += n,
                    None => return Ok(()),
                }
                if ws.out_pos < ws.out.len() {
                    return Ok(());
                }
                ws.out.clear();
                ws.out_pos = 0;
                self.sent = ws.framed;
            } else if ws.framed < self.queued {
                while ws.framed < self.queued && ws.out.len() < IO_CHUNK {
                    let at = self.seed + ws.framed;
                    push_pattern_frame(&mut ws.out, Opcode::Binary, at, self.msg_len, &mut io.rng);
                    ws.framed += self.msg_len as u64;
                }
            } else {
                return Ok(());
            }
        }
    }

    /// Reads everything available, checks it and returns the payload bytes it carried. Answers
    /// pings and an unsolicited Close (ws); sets [`Stream::peer_closed`] on EOF or Close and
    /// [`Stream::eof`] on EOF.
    pub fn read(&mut self, io: &mut Io) -> Result<u64, ErrorKind> {
        let mut got = 0;
        loop {
            let carry = match &mut self.ws {
                Some(ws) => {
                    io.scratch[..ws.carry.len()].copy_from_slice(&ws.carry);
                    ws.carry.len()
                }
                None => 0,
            };
            let room = &mut io.scratch[carry..carry + IO_CHUNK];
            let n = match self.transport.read(room, &mut io.tls_in)? {
                Some(0) => {
                    self.peer_closed = true;
                    self.eof = true;
                    break;
                }
                Some(n) => n,
                None => break,
            };
            let buf = &io.scratch[..carry + n];
            match &mut self.ws {
                None => {
                    if !pattern::matches(self.seed + self.received, buf) {
                        return Err(ErrorKind::EchoMismatch {
                            offset: self.received,
                        });
                    }
                    self.received += n as u64;
                    got += n as u64;
                }
                Some(ws) => {
                    let (seed, received) = (self.seed, &mut self.received);
                    let (out, closing, peer_closed, close_code) = (
                        &mut ws.out,
                        self.closing,
                        &mut self.peer_closed,
                        &mut self.close_code,
                    );
                    let used = ws.reader.read_all(buf, |item| {
                        match item {
                            Item::Data(d) => {
                                if !pattern::matches(seed + *received, d) {
                                    return Err(ErrorKind::EchoMismatch { offset: *received });
                                }
                                *received += d.len() as u64;
                                got += d.len() as u64;
                            }
                            Item::Ping(p) => push_frame(out, Opcode::Pong, p, &mut io.rng),
                            Item::Pong => {}
                            Item::Close(code) => {
                                *peer_closed = true;
                                *close_code = Some(code.unwrap_or(0));
                                if !closing {
                                    push_close(out, code.unwrap_or(1000), &mut io.rng);
                                }
                            }
                        }
                        Ok(())
                    })?;
                    ws.carry.clear();
                    ws.carry.extend_from_slice(&buf[used..]);
                    debug_assert!(ws.carry.len() <= CARRY_ROOM);
                }
            }
            if !self.until_eof && (!self.transport.may_have_more() || self.peer_closed) {
                break;
            }
        }
        if matches!(&self.ws, Some(ws) if ws.out_pos < ws.out.len()) || self.transport.unflushed() {
            self.flush(io)?;
        }
        Ok(got)
    }

    /// Starts an orderly close: ws sends Close 1000 (RFC 6455 §5.5.1) and waits for the peer's;
    /// tcp shuts down the write side (after close_notify over TLS) and waits for EOF.
    pub fn start_close(&mut self, io: &mut Io) -> Result<(), ErrorKind> {
        self.closing = true;
        match &mut self.ws {
            Some(ws) => {
                push_close(&mut ws.out, 1000, &mut io.rng);
                self.flush(io)
            }
            None => self.transport.close_write(),
        }
    }
}
