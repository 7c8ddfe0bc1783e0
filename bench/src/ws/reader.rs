//! Incremental reader of server frames (RFC 6455 §5.2), client side, over caller-owned bytes.
//!
//! A server (or a tunnel that re-frames the stream) may cut frames anywhere: a header may arrive
//! one byte at a time and a payload may be split over any number of reads. The reader never owns
//! its input; [`FrameReader::next`] says how many bytes it consumed. Data payloads are handed out
//! as soon as any of their bytes are present (no frame is buffered whole); a header or a control
//! frame (at most 14 + 125 bytes) is consumed only once complete, so the caller keeps the
//! unconsumed tail and presents it again in front of the next read.
//!
//! Checked: server frames are unmasked (RFC 6455 §5.1), RSV bits are clear (no extension is
//! negotiated, §5.2), opcodes are known, control frames are final and at most 125 bytes (§5.5),
//! continuations only continue a message and a new message never starts inside one (§5.4), a
//! close payload is empty or holds a code (§5.5.1), and nothing follows a Close (§5.5.1).

use ringway_proto::ws::frame::FrameError;
use ringway_proto::ws::{FrameHeader, Opcode};

/// One thing the server said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// Payload bytes of a text, binary or continuation frame (possibly part of one, possibly
    /// empty).
    Data(&'a [u8]),
    /// A ping; the client answers with a pong carrying the same bytes (RFC 6455 §5.5.2).
    Ping(&'a [u8]),
    Pong,
    /// A close frame and its status code, if it carried one.
    Close(Option<u16>),
}

/// A server frame that breaks RFC 6455.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    Masked,
    RsvSet,
    ReservedOpcode(u8),
    BadControl,
    BadContinuation,
    LengthTopBitSet,
    AfterClose,
}

impl ReadError {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadError::Masked => "server frame is masked",
            ReadError::RsvSet => "RSV bit set without an extension",
            ReadError::ReservedOpcode(_) => "reserved opcode",
            ReadError::BadControl => "control frame fragmented, too long or bad close payload",
            ReadError::BadContinuation => "continuation outside a message or message inside one",
            ReadError::LengthTopBitSet => "64-bit length with the top bit set",
            ReadError::AfterClose => "bytes after a close frame",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At a frame boundary.
    Header,
    /// Inside a data frame's payload.
    Payload { remaining: u64 },
    /// A close frame was read; nothing may follow.
    Closed,
}

/// Reads server frames. Call order: [`FrameReader::next`] on the unconsumed bytes until it
/// returns `(0, None)`, keep the tail it did not consume, then read more and call again with the
/// tail followed by the new bytes.
#[derive(Debug)]
pub struct FrameReader {
    state: State,
    /// A data message has started and its final frame has not been read.
    in_message: bool,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader::new()
    }
}

impl FrameReader {
    pub fn new() -> FrameReader {
        FrameReader {
            state: State::Header,
            in_message: false,
        }
    }

    /// Whether a close frame has been read.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Reads from the start of `buf`: `(consumed, item)`. `(0, None)` means more bytes are needed;
    /// `(n, None)` with `n > 0` means a header was consumed and there is nothing to hand out yet.
    pub fn next<'a>(&mut self, buf: &'a [u8]) -> Result<(usize, Option<Item<'a>>), ReadError> {
        match self.state {
            State::Closed if buf.is_empty() => Ok((0, None)),
            State::Closed => Err(ReadError::AfterClose),
            State::Payload { remaining } => {
                let n = clip(remaining, buf.len());
                if n == 0 {
                    return Ok((0, None));
                }
                self.state = match remaining - n as u64 {
                    0 => State::Header,
                    remaining => State::Payload { remaining },
                };
                Ok((n, Some(Item::Data(&buf[..n]))))
            }
            State::Header => self.next_frame(buf),
        }
    }

    fn next_frame<'a>(&mut self, buf: &'a [u8]) -> Result<(usize, Option<Item<'a>>), ReadError> {
        let (h, head_len) = match FrameHeader::parse(buf) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok((0, None)),
            Err(FrameError::LengthTopBitSet) => return Err(ReadError::LengthTopBitSet),
        };
        if h.mask.is_some() {
            return Err(ReadError::Masked);
        }
        if h.rsv != 0 {
            return Err(ReadError::RsvSet);
        }
        let opcode = Opcode::from_u8(h.opcode).ok_or(ReadError::ReservedOpcode(h.opcode))?;
        if opcode.is_control() {
            if !h.fin || h.payload_len > 125 {
                return Err(ReadError::BadControl);
            }
            let end = head_len + h.payload_len as usize;
            let Some(payload) = buf.get(head_len..end) else {
                return Ok((0, None));
            };
            let item = match opcode {
                Opcode::Ping => Item::Ping(payload),
                Opcode::Pong => Item::Pong,
                _ => {
                    self.state = State::Closed;
                    match payload {
                        [] => Item::Close(None),
                        [_] => return Err(ReadError::BadControl),
                        [a, b, ..] => Item::Close(Some(u16::from_be_bytes([*a, *b]))),
                    }
                }
            };
            return Ok((end, Some(item)));
        }
        if (opcode == Opcode::Continuation) != self.in_message {
            return Err(ReadError::BadContinuation);
        }
        self.in_message = !h.fin;
        let n = clip(h.payload_len, buf.len() - head_len);
        self.state = match h.payload_len - n as u64 {
            0 => State::Header,
            remaining => State::Payload { remaining },
        };
        Ok((head_len + n, Some(Item::Data(&buf[head_len..head_len + n]))))
    }

    /// Calls `on_item` for every item in `buf` and returns how many bytes were consumed; the
    /// rest (an incomplete header or control frame) must be presented again with more bytes.
    pub fn read_all<E: From<ReadError>>(
        &mut self,
        buf: &[u8],
        mut on_item: impl FnMut(Item<'_>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut pos = 0;
        loop {
            match self.next(&buf[pos..])? {
                (0, None) => return Ok(pos),
                (n, item) => {
                    pos += n;
                    if let Some(item) = item {
                        on_item(item)?;
                    }
                }
            }
        }
    }
}

/// `min(remaining, available)` as a usize.
fn clip(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

#[cfg(test)]
mod tests;
