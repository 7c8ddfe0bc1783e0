//! A reference decoder of client frames, written from RFC 6455 §5 and §7 for the harnesses to
//! compare [`crate::ws::Decoder`] against: it sees the whole byte stream at once, keeps every
//! message whole and validates text with `std::str::from_utf8` on the whole message so far, so
//! it shares no code or state machine with the incremental decoder.
//!
//! Rule order for a header breaking several rules (RFC 6455 does not rank them): a length with
//! the top bit set, as soon as it is readable; then unmasked, RSV bits, reserved opcode, the
//! control-frame rules, the fragmentation rules, and only then the size limit (1009).

/// What a decoder's caller observes, event by event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Seen {
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The code and the reason bytes.
    Close(Option<u16>, Vec<u8>),
    Error(u16),
}

/// The decoding of a whole stream.
#[derive(Debug, Default)]
pub(super) struct Expected {
    /// Every control event, the terminating Close or error last.
    pub(super) events: Vec<Seen>,
    /// All data payload, unmasked, through the frame that raised the terminating error (and the
    /// received part of a frame cut short by the end of the stream).
    pub(super) data: Vec<u8>,
    /// How much of `data` a decoder must deliver: all of it, except for a text frame whose bytes
    /// broke UTF-8, which is delivered only as far as it was valid when a piece of it arrived
    /// (so between `data_min` and `data.len()`, depending on how the stream was split).
    pub(super) data_min: usize,
    /// A fragmented message is open at the end of the stream.
    pub(super) in_message: bool,
}

impl Expected {
    /// The stream ended with a Close or an error.
    pub(super) fn ended(&self) -> bool {
        matches!(self.events.last(), Some(Seen::Close(..) | Seen::Error(_)))
    }
}

/// Decodes `stream`, client frames only, with the given payload limit.
pub(super) fn decode(stream: &[u8], max_payload: u64) -> Expected {
    let mut exp = Expected::default();
    // The open fragmented message: whether it is text.
    let mut message: Option<bool> = None;
    // The text message being received, and how much of it is known to be whole characters.
    let mut text = Vec::new();
    let mut text_checked = 0;
    let mut pos = 0;
    loop {
        let rest = &stream[pos..];
        let (Some(&b0), Some(&b1)) = (rest.first(), rest.get(1)) else {
            break;
        };
        // RFC 6455 §5.2: 7-bit length, or 126 + 16 bits, or 127 + 64 bits (top bit clear).
        let (len, mut at) = match b1 & 0x7F {
            126 => match rest.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => break,
            },
            127 => match rest.get(2..10) {
                Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or([0; 8])), 10),
                None => break,
            },
            l => (u64::from(l), 2),
        };
        if len >> 63 != 0 {
            return exp.fail(1002);
        }
        let masked = b1 & 0x80 != 0;
        let mut key = [0u8; 4];
        if masked {
            match rest.get(at..at + 4) {
                Some(k) => key.copy_from_slice(k),
                None => break,
            }
            at += 4;
        }
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        // RFC 6455 §5.1 (clients mask), §5.2 (no extension: RSV clear, known opcodes), §5.5
        // (control frames: FIN, ≤ 125 bytes), §5.4 (fragmentation), §7.4.1 (1009: too big).
        let control = opcode & 0x8 != 0;
        let bad = !masked
            || b0 & 0x70 != 0
            || !matches!(opcode, 0..=2 | 8..=10)
            || (control && (!fin || len > 125))
            || (opcode == 0 && message.is_none())
            || (matches!(opcode, 1 | 2) && message.is_some());
        if bad {
            return exp.fail(1002);
        }
        if !control && len > max_payload {
            return exp.fail(1009);
        }
        let body = &rest[at..];
        let avail = body.len().min(usize::try_from(len).unwrap_or(usize::MAX));
        let mut payload = body[..avail].to_vec();
        for (b, k) in payload.iter_mut().zip(key.iter().cycle()) {
            *b ^= k;
        }
        if control {
            if (avail as u64) < len {
                break;
            }
            pos += at + avail;
            match opcode {
                9 => exp.events.push(Seen::Ping(payload)),
                10 => exp.events.push(Seen::Pong(payload)),
                // RFC 6455 §5.5.1: empty, or a 2-byte code and a UTF-8 reason.
                _ => match payload.as_slice() {
                    [] => return exp.close(None, Vec::new()),
                    [_] => return exp.fail(1002),
                    [hi, lo, reason @ ..] => {
                        let code = u16::from_be_bytes([*hi, *lo]);
                        if !super::legal_close_code(code) {
                            return exp.fail(1002);
                        }
                        if std::str::from_utf8(reason).is_err() {
                            return exp.fail(1007);
                        }
                        return exp.close(Some(code), reason.to_vec());
                    }
                },
            }
            continue;
        }
        // A data frame: opens a message (FIN clear) or continues one.
        let is_text = message.unwrap_or(opcode == 1);
        if opcode == 1 {
            text.clear();
            text_checked = 0;
        }
        if !fin && message.is_none() {
            message = Some(is_text);
        }
        let before = exp.data.len();
        exp.data.extend_from_slice(&payload);
        if is_text {
            text.extend_from_slice(&payload);
            // RFC 6455 §8.1: fail as soon as the message can no longer be valid UTF-8.
            // (Checking from the last whole character on is checking the whole message.)
            match std::str::from_utf8(&text[text_checked..]) {
                Ok(_) => text_checked = text.len(),
                Err(e) if e.error_len().is_none() => text_checked += e.valid_up_to(),
                Err(_) => {
                    exp.data_min = before;
                    return exp.fail_keeping(1007);
                }
            }
        }
        if (avail as u64) < len {
            break;
        }
        pos += at + avail;
        if fin {
            message = None;
            if is_text && text_checked < text.len() {
                // The message ended inside a character.
                return exp.fail(1007);
            }
        }
    }
    exp.data_min = exp.data.len();
    exp.in_message = message.is_some();
    exp
}

impl Expected {
    fn fail(mut self, code: u16) -> Expected {
        self.data_min = self.data.len();
        self.fail_keeping(code)
    }

    fn fail_keeping(mut self, code: u16) -> Expected {
        self.events.push(Seen::Error(code));
        self
    }

    fn close(mut self, code: Option<u16>, reason: Vec<u8>) -> Expected {
        self.data_min = self.data.len();
        self.events.push(Seen::Close(code, reason));
        self
    }
}
