//! Incremental decoder of client frames (RFC 6455 §5) over caller-owned bytes.
//!
//! The decoder never owns its input: the caller hands in whatever bytes it has received, and
//! [`Decoder::decode`] reports how many it used up (`consumed`) and where the unmasked data
//! payload now lies (`data`). Invariants, for every call:
//!
//! - `data` lies within `input[..consumed]`; bytes of `input[..consumed]` outside `data`
//!   (headers, control payloads, payload moved down) are garbage to the caller.
//! - Without an event, `consumed == input.len()`: a partial header (≤ 14 bytes) and a partial
//!   control payload (≤ 125 bytes) are stashed inside the decoder, and data payload is reported
//!   as it arrives, never buffered.
//! - With an event, decoding stopped right after the frame (or the violation) that raised it;
//!   the caller handles it and calls again with `input[consumed..]`.
//! - Payload pieces of several data frames decoded in one call are moved down with
//!   `copy_within` to form one contiguous range; the first piece never moves, so one big frame
//!   is unmasked in place and never copied.
//!
//! Every violation of RFC 6455 by the client ends decoding with [`Event::Error`] carrying the
//! close code the server must send (RFC 6455 §7.4.1): 1002 for framing errors, 1007 for invalid
//! UTF-8 in a Text message or Close reason (RFC 6455 §8.1), 1009 above
//! [`DecoderLimits::max_payload`]. Text is validated incrementally, across frame and call
//! boundaries, and the error is reported at the first byte that cannot start or continue valid
//! UTF-8. After a Close or an error the decoder is finished and swallows all further input.

use std::ops::Range;

use super::encoder::MAX_CONTROL_PAYLOAD;
use super::frame::{CloseCode, FrameError, FrameHeader, Opcode};
use super::mask::apply_mask;

/// Limits a decoder enforces on a client.
#[derive(Clone, Copy, Debug)]
pub struct DecoderLimits {
    /// Largest payload of one frame; a larger frame is refused with 1009 (RFC 6455 §7.4.1).
    pub max_payload: u64,
}

impl Default for DecoderLimits {
    fn default() -> Self {
        DecoderLimits {
            max_payload: 64 << 20,
        }
    }
}

/// Something other than data payload that decoding stopped at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Payload via [`Decoder::control_payload`]; answering with a Pong is the caller's job.
    Ping,
    /// Payload via [`Decoder::control_payload`].
    Pong,
    /// The client closes; the reason bytes via [`Decoder::close_reason`].
    Close { code: Option<CloseCode> },
    /// Protocol violation: the code the server must close with.
    Error(CloseCode),
}

/// What one call to [`Decoder::decode`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of input used up (headers, payload, control frames).
    pub consumed: usize,
    /// Unmasked data-frame payload, contiguous, within `input[..consumed]`.
    pub data: Range<usize>,
    /// Decoding stopped right after this event.
    pub event: Option<Event>,
}

/// What [`Decoder::decode_all`] found in one buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedAll {
    /// The data payload of every frame, moved together in place into one contiguous range
    /// (empty unless data was kept).
    pub data: Range<usize>,
    /// The latest Ping's payload and its length: of several Pings in one buffer only the latest
    /// needs an answer (RFC 6455 §5.5.3), so a Ping flood costs one Pong per read.
    pub ping: Option<([u8; MAX_CONTROL_PAYLOAD], usize)>,
    /// Decoding stopped at this Close or protocol error; the rest of the buffer is unread.
    pub end: Option<Event>,
}

/// Decoder of the frames one client sends. See the module doc for the call contract.
#[derive(Debug)]
pub struct Decoder {
    limits: DecoderLimits,
    state: State,
    /// A header split across calls.
    header: [u8; FrameHeader::MAX_LEN],
    header_len: usize,
    /// The open fragmented message (RFC 6455 §5.4), from its first frame to the end of its last.
    message: Option<MessageKind>,
    utf8: Utf8Stream,
    /// Payload of the control frame being received, then of the last one.
    control: [u8; MAX_CONTROL_PAYLOAD],
    control_len: usize,
    /// The last control frame was a Close with a status code, so a reason may follow it.
    close_has_code: bool,
    /// Decoding a server's frames (the client role): frames must be unmasked (RFC 6455 §5.1).
    from_server: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MessageKind {
    Text,
    Binary,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between frames, possibly with part of a header stashed.
    Header,
    /// Inside a data frame's payload.
    Data {
        remaining: u64,
        key: [u8; 4],
        key_offset: usize,
        fin: bool,
        text: bool,
    },
    /// Inside a control frame's payload; `control_len` bytes are stashed.
    Control {
        opcode: Opcode,
        len: usize,
        key: [u8; 4],
    },
    /// After a Close or an error.
    Finished,
}

impl Decoder {
    pub fn new(limits: DecoderLimits) -> Decoder {
        Decoder {
            limits,
            state: State::Header,
            header: [0; FrameHeader::MAX_LEN],
            header_len: 0,
            message: None,
            utf8: Utf8Stream::default(),
            control: [0; MAX_CONTROL_PAYLOAD],
            control_len: 0,
            close_has_code: false,
            from_server: false,
        }
    }

    /// A decoder of the frames a server sends, for the client role (`ringway access`): frames
    /// must be unmasked; everything else is checked as for client frames.
    pub fn for_server_frames(limits: DecoderLimits) -> Decoder {
        Decoder {
            from_server: true,
            ..Decoder::new(limits)
        }
    }

    /// Decodes as much of `input` as possible, unmasking data payload in place. Decoding stops
    /// right after a control frame or an error and reports it in `event`; the caller handles
    /// it, then calls again on `input[consumed..]`. Data decoded before the event is in `data`.
    /// After [`Event::Close`] or [`Event::Error`] the decoder is finished: later calls return
    /// `consumed == input.len()`, empty data and no event.
    pub fn decode(&mut self, input: &mut [u8]) -> Decoded {
        let mut pos = 0;
        let mut data = 0..0;
        loop {
            match self.state {
                State::Finished => {
                    return Decoded {
                        consumed: input.len(),
                        data: 0..0,
                        event: None,
                    }
                }
                State::Header => {
                    if pos == input.len() {
                        break;
                    }
                    match self.read_header(input, &mut pos) {
                        Ok(Some(header)) => {
                            if let Err(code) = self.start_frame(&header) {
                                return self.fail(code, pos, data);
                            }
                        }
                        Ok(None) => break,
                        Err(code) => return self.fail(code, pos, data),
                    }
                }
                State::Data {
                    remaining,
                    key,
                    key_offset,
                    fin,
                    text,
                } => {
                    let avail = input.len() - pos;
                    let n = usize::try_from(remaining).map_or(avail, |r| r.min(avail));
                    let piece = pos..pos + n;
                    let key_offset = if key == [0; 4] {
                        key_offset
                    } else {
                        apply_mask(&mut input[piece.clone()], key, key_offset)
                    };
                    if text && !self.utf8.feed(&input[piece.clone()]) {
                        return self.fail(CloseCode::INVALID_PAYLOAD, pos + n, data);
                    }
                    if data.is_empty() {
                        data = piece;
                    } else {
                        if data.end != pos {
                            input.copy_within(piece, data.end);
                        }
                        data.end += n;
                    }
                    pos += n;
                    let remaining = remaining - n as u64;
                    if remaining > 0 {
                        self.state = State::Data {
                            remaining,
                            key,
                            key_offset,
                            fin,
                            text,
                        };
                        break;
                    }
                    self.state = State::Header;
                    if fin {
                        self.message = None;
                        if text && !self.utf8.is_complete() {
                            return self.fail(CloseCode::INVALID_PAYLOAD, pos, data);
                        }
                    }
                }
                State::Control { opcode, len, key } => {
                    let have = self.control_len;
                    let n = len.saturating_sub(have).min(input.len() - pos);
                    if let Some(dst) = self.control.get_mut(have..have + n) {
                        dst.copy_from_slice(&input[pos..pos + n]);
                    }
                    self.control_len += n;
                    pos += n;
                    if self.control_len < len {
                        break;
                    }
                    let event = self.finish_control(opcode, key);
                    if matches!(event, Event::Close { .. } | Event::Error(_)) {
                        self.state = State::Finished;
                    } else {
                        self.state = State::Header;
                    }
                    return Decoded {
                        consumed: pos,
                        data,
                        event: Some(event),
                    };
                }
            }
        }
        Decoded {
            consumed: pos,
            data,
            event: None,
        }
    }

    /// Decodes the whole of `buf` (until a Close or an error): the data payloads are moved
    /// together into one range when `keep_data` (else dropped, as while closing), Pongs are
    /// ignored, and the latest Ping's payload is kept for one answer.
    pub fn decode_all(&mut self, buf: &mut [u8], keep_data: bool) -> DecodedAll {
        let mut out = DecodedAll {
            data: 0..0,
            ping: None,
            end: None,
        };
        let mut pos = 0;
        while pos < buf.len() {
            let d = self.decode(&mut buf[pos..]);
            let data = (pos + d.data.start)..(pos + d.data.end);
            if keep_data && !data.is_empty() {
                if out.data.is_empty() {
                    out.data = data;
                } else {
                    buf.copy_within(data.clone(), out.data.end);
                    out.data.end += data.len();
                }
            }
            pos += d.consumed;
            match d.event {
                None if d.consumed == 0 => break,
                None | Some(Event::Pong) => {}
                Some(Event::Ping) => {
                    let p = self.control_payload();
                    let mut copy = [0u8; MAX_CONTROL_PAYLOAD];
                    copy[..p.len()].copy_from_slice(p);
                    out.ping = Some((copy, p.len()));
                }
                Some(e @ (Event::Close { .. } | Event::Error(_))) => {
                    out.end = Some(e);
                    break;
                }
            }
        }
        out
    }

    /// Payload of the last Ping/Pong/Close, valid from the call that reported it until the
    /// next call to [`Decoder::decode`].
    pub fn control_payload(&self) -> &[u8] {
        self.control.get(..self.control_len).unwrap_or(&[])
    }

    /// Close reason (after the 2-byte code), empty if none. Valid like
    /// [`Decoder::control_payload`]; it is valid UTF-8 whenever [`Event::Close`] was reported.
    pub fn close_reason(&self) -> &[u8] {
        if self.close_has_code {
            self.control.get(2..self.control_len).unwrap_or(&[])
        } else {
            &[]
        }
    }

    /// A Close or an error was reported; all further input is ignored.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// A fragmented message is open: its first frame (FIN clear) has started and its last frame
    /// has not ended yet.
    pub fn in_message(&self) -> bool {
        self.message.is_some()
    }

    /// Reads the next header from the stash plus `input[*pos..]`. `Ok(None)`: every remaining
    /// byte was stashed and the header is still incomplete.
    fn read_header(
        &mut self,
        input: &[u8],
        pos: &mut usize,
    ) -> Result<Option<FrameHeader>, CloseCode> {
        let rest = input.get(*pos..).unwrap_or(&[]);
        let stashed = self.header_len;
        let take = rest.len().min(FrameHeader::MAX_LEN - stashed);
        let mut buf = [0u8; FrameHeader::MAX_LEN];
        buf[..stashed].copy_from_slice(&self.header[..stashed]);
        buf[stashed..stashed + take].copy_from_slice(&rest[..take]);
        let view = &buf[..stashed + take];
        match FrameHeader::parse(view) {
            Err(FrameError::LengthTopBitSet) => Err(CloseCode::PROTOCOL_ERROR),
            Ok(None) => {
                // An incomplete header is shorter than MAX_LEN, so all of `rest` fit in `view`.
                self.header[..view.len()].copy_from_slice(view);
                self.header_len = view.len();
                *pos += take;
                Ok(None)
            }
            Ok(Some((header, header_len))) => {
                self.header_len = 0;
                *pos += header_len.saturating_sub(stashed);
                Ok(Some(header))
            }
        }
    }

    /// Checks a header against RFC 6455 and this connection's state, then enters its payload.
    fn start_frame(&mut self, h: &FrameHeader) -> Result<(), CloseCode> {
        // RFC 6455 §5.1: a server MUST close on an unmasked client frame, a client on a masked
        // server frame. A server frame's key is all zeros: unmasking it changes nothing.
        let key = match (h.mask, self.from_server) {
            (Some(key), false) => key,
            (None, true) => [0; 4],
            _ => return Err(CloseCode::PROTOCOL_ERROR),
        };
        // RFC 6455 §5.2: RSV bits MUST be 0 unless an extension defines them; none is negotiated.
        if h.rsv != 0 {
            return Err(CloseCode::PROTOCOL_ERROR);
        }
        let Some(opcode) = Opcode::from_u8(h.opcode) else {
            return Err(CloseCode::PROTOCOL_ERROR);
        };
        if opcode.is_control() {
            // RFC 6455 §5.5: control frames are never fragmented and carry ≤ 125 bytes.
            if !h.fin || h.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(CloseCode::PROTOCOL_ERROR);
            }
            self.control_len = 0;
            self.close_has_code = false;
            self.state = State::Control {
                opcode,
                len: h.payload_len as usize,
                key,
            };
            return Ok(());
        }
        // RFC 6455 §5.4: a Continuation belongs to an open message; a new message must not
        // start inside one.
        let kind = match (opcode, self.message) {
            (Opcode::Continuation, Some(kind)) => kind,
            (Opcode::Text, None) => MessageKind::Text,
            (Opcode::Binary, None) => MessageKind::Binary,
            _ => return Err(CloseCode::PROTOCOL_ERROR),
        };
        if h.payload_len > self.limits.max_payload {
            return Err(CloseCode::TOO_BIG);
        }
        if opcode == Opcode::Text {
            self.utf8 = Utf8Stream::default();
        }
        if !h.fin {
            self.message = Some(kind);
        }
        self.state = State::Data {
            remaining: h.payload_len,
            key,
            key_offset: 0,
            fin: h.fin,
            text: kind == MessageKind::Text,
        };
        Ok(())
    }

    /// Unmasks the complete control payload and turns it into its event.
    fn finish_control(&mut self, opcode: Opcode, key: [u8; 4]) -> Event {
        let len = self.control_len;
        let payload = &mut self.control[..len];
        apply_mask(payload, key, 0);
        match opcode {
            Opcode::Ping => Event::Ping,
            Opcode::Pong => Event::Pong,
            _ => match *payload {
                [] => Event::Close { code: None },
                // RFC 6455 §5.5.1: a Close body starts with a 2-byte status code.
                [_] => Event::Error(CloseCode::PROTOCOL_ERROR),
                [hi, lo, ref reason @ ..] => {
                    let code = CloseCode(u16::from_be_bytes([hi, lo]));
                    if !code.is_valid_on_wire() {
                        Event::Error(CloseCode::PROTOCOL_ERROR)
                    } else if std::str::from_utf8(reason).is_err() {
                        Event::Error(CloseCode::INVALID_PAYLOAD)
                    } else {
                        self.close_has_code = true;
                        Event::Close { code: Some(code) }
                    }
                }
            },
        }
    }

    fn fail(&mut self, code: CloseCode, consumed: usize, data: Range<usize>) -> Decoded {
        self.state = State::Finished;
        Decoded {
            consumed,
            data,
            event: Some(Event::Error(code)),
        }
    }
}

/// Incremental UTF-8 validation of a Text message (RFC 6455 §5.6, §8.1) that arrives in
/// arbitrary pieces. Invariant: `pending` holds the ≤ 3 bytes of a char that is a valid prefix
/// so far but not complete yet.
#[derive(Clone, Copy, Debug, Default)]
struct Utf8Stream {
    pending: [u8; 4],
    pending_len: usize,
}

impl Utf8Stream {
    /// Validates the next piece; false as soon as a byte makes the message invalid.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        if self.pending_len > 0 {
            let have = self.pending_len;
            let need = char_width(self.pending[0]).saturating_sub(have);
            let take = need.min(bytes.len());
            let Some(dst) = self.pending.get_mut(have..have + take) else {
                return false;
            };
            dst.copy_from_slice(&bytes[..take]);
            self.pending_len += take;
            bytes = &bytes[take..];
            match std::str::from_utf8(&self.pending[..self.pending_len]) {
                Ok(_) => self.pending_len = 0,
                // Still a valid prefix, and this piece is used up.
                Err(e) if e.error_len().is_none() && bytes.is_empty() => return true,
                Err(_) => return false,
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => true,
            Err(e) if e.error_len().is_none() => {
                let tail = bytes.get(e.valid_up_to()..).unwrap_or(&[]);
                match self.pending.get_mut(..tail.len()) {
                    Some(dst) if tail.len() < 4 => {
                        dst.copy_from_slice(tail);
                        self.pending_len = tail.len();
                        true
                    }
                    _ => false,
                }
            }
            Err(_) => false,
        }
    }

    /// No char is left incomplete: the message may end here.
    fn is_complete(&self) -> bool {
        self.pending_len == 0
    }
}

/// Length of the UTF-8 sequence a lead byte announces.
fn char_width(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests;
