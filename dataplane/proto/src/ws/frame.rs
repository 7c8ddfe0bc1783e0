//! The WebSocket frame header wire format (RFC 6455 §5.2), opcodes (RFC 6455 §5.2, §11.8) and
//! close status codes (RFC 6455 §7.4).
//!
//! [`FrameHeader`] is a plain repr with `parse`, `emit` and `buffer_len`; byte offsets and bit
//! masks live in the private `mod field`. Invariants: `parse` never reads past the bytes it is
//! given and never panics, whatever they hold; it reports an incomplete header as `Ok(None)`
//! rather than guessing. `emit` always writes the minimal length encoding (RFC 6455 §5.2,
//! "the minimal number of bytes MUST be used"), so `parse(emit(h)) == h` for every header whose
//! length has the top bit clear. `parse` itself is lenient about non-minimal encodings, which
//! common clients never send and which are harmless to accept.

/// Byte offsets and bit masks of the frame header (RFC 6455 §5.2).
mod field {
    /// Byte holding FIN, RSV1-3 and the opcode.
    pub(super) const FIN_RSV_OPCODE: usize = 0;
    /// Byte holding the MASK bit and the 7-bit payload length.
    pub(super) const MASK_LEN7: usize = 1;
    /// First byte of the 16- or 64-bit extended payload length.
    pub(super) const EXT_LEN: usize = 2;

    pub(super) const FIN: u8 = 0x80;
    pub(super) const RSV_SHIFT: u32 = 4;
    pub(super) const RSV: u8 = 0x07;
    pub(super) const OPCODE: u8 = 0x0F;
    pub(super) const MASK: u8 = 0x80;
    pub(super) const LEN7: u8 = 0x7F;

    /// 7-bit length value announcing a 16-bit extended length.
    pub(super) const LEN_16: u8 = 126;
    /// 7-bit length value announcing a 64-bit extended length.
    pub(super) const LEN_64: u8 = 127;
    /// Largest length the 7-bit field holds directly.
    pub(super) const MAX_LEN7: u64 = 125;

    pub(super) const MASK_KEY_LEN: usize = 4;
}

/// A frame opcode this implementation understands (RFC 6455 §5.2). Reserved opcodes
/// (3-7, 0xB-0xF) have no variant: [`Opcode::from_u8`] returns `None` for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    Continuation = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

impl Opcode {
    /// The opcode for a raw 4-bit value, `None` if it is reserved or out of range.
    pub fn from_u8(v: u8) -> Option<Opcode> {
        match v {
            0 => Some(Opcode::Continuation),
            1 => Some(Opcode::Text),
            2 => Some(Opcode::Binary),
            8 => Some(Opcode::Close),
            9 => Some(Opcode::Ping),
            10 => Some(Opcode::Pong),
            _ => None,
        }
    }

    /// Control frames have the high bit of the opcode set (RFC 6455 §5.5).
    pub fn is_control(self) -> bool {
        (self as u8) & 0x08 != 0
    }
}

/// A close status code (RFC 6455 §7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// The code's name from RFC 6455 §7.4.1 (and the IANA registry), for logs.
    pub fn name(self) -> &'static str {
        match self.0 {
            1000 => "normal closure",
            1001 => "going away",
            1002 => "protocol error",
            1003 => "unsupported data",
            1005 => "no status received",
            1006 => "abnormal closure",
            1007 => "invalid payload data",
            1008 => "policy violation",
            1009 => "message too big",
            1010 => "mandatory extension",
            1011 => "internal error",
            1012 => "service restart",
            1013 => "try again later",
            1014 => "bad gateway",
            1015 => "TLS handshake",
            3000..=3999 => "registered code",
            4000..=4999 => "application code",
            _ => "unknown code",
        }
    }

    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    pub const POLICY: CloseCode = CloseCode(1008);
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);

    /// RFC 6455 §7.4: codes a peer may send: 1000-1003, 1007-1014 (not 1004-1006, 1015),
    /// 3000-4999.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// The parsed header of one frame (RFC 6455 §5.2). Fields hold raw wire values; checking them
/// against the protocol (reserved opcodes, RSV bits, masking rules) is the decoder's job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1-RSV3 as the low 3 bits (RSV1 is bit 2).
    pub rsv: u8,
    /// The raw 4-bit opcode, reserved values included.
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

/// A header that can never be valid, whatever bytes follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The 64-bit payload length has its most significant bit set (RFC 6455 §5.2).
    LengthTopBitSet,
}

impl FrameHeader {
    /// The longest header: 2 bytes, 8 bytes of extended length, 4 bytes of masking key.
    pub const MAX_LEN: usize = 14;

    /// Parses a header from the start of `buf`.
    ///
    /// `Ok(None)`: `buf` holds only part of a header. `Ok(Some((h, header_len)))`: the header
    /// occupies `buf[..header_len]` and the payload starts right after it. The error is reported
    /// as soon as the extended length is readable, before the masking key arrives.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, FrameError> {
        let (Some(&b0), Some(&b1)) = (buf.get(field::FIN_RSV_OPCODE), buf.get(field::MASK_LEN7))
        else {
            return Ok(None);
        };
        let masked = b1 & field::MASK != 0;
        let (payload_len, key_at) = match b1 & field::LEN7 {
            field::LEN_16 => match read_array::<2>(buf, field::EXT_LEN) {
                Some(b) => (u64::from(u16::from_be_bytes(b)), field::EXT_LEN + 2),
                None => return Ok(None),
            },
            field::LEN_64 => match read_array::<8>(buf, field::EXT_LEN) {
                Some(b) => (u64::from_be_bytes(b), field::EXT_LEN + 8),
                None => return Ok(None),
            },
            len7 => (u64::from(len7), field::EXT_LEN),
        };
        if payload_len >> 63 != 0 {
            return Err(FrameError::LengthTopBitSet);
        }
        let (mask, header_len) = if masked {
            match read_array::<{ field::MASK_KEY_LEN }>(buf, key_at) {
                Some(key) => (Some(key), key_at + field::MASK_KEY_LEN),
                None => return Ok(None),
            }
        } else {
            (None, key_at)
        };
        let header = FrameHeader {
            fin: b0 & field::FIN != 0,
            rsv: (b0 >> field::RSV_SHIFT) & field::RSV,
            opcode: b0 & field::OPCODE,
            mask,
            payload_len,
        };
        Ok(Some((header, header_len)))
    }

    /// Length of the emitted header: 2, 4 or 10 bytes (minimal length encoding), plus 4 when
    /// masked.
    pub fn buffer_len(&self) -> usize {
        let len = if self.payload_len <= field::MAX_LEN7 {
            2
        } else if self.payload_len <= u64::from(u16::MAX) {
            4
        } else {
            10
        };
        if self.mask.is_some() {
            len + field::MASK_KEY_LEN
        } else {
            len
        }
    }

    /// Writes the header into `out[..self.buffer_len()]` and returns that length. `rsv` and
    /// `opcode` are truncated to their 3 and 4 bits.
    ///
    /// # Panics
    ///
    /// The caller guarantees `out.len() >= self.buffer_len()`; a shorter `out` is a programming
    /// error and panics.
    pub fn emit(&self, out: &mut [u8]) -> usize {
        let len = self.buffer_len();
        debug_assert!(out.len() >= len, "FrameHeader::emit: out too short");
        let out = &mut out[..len];
        let fin = if self.fin { field::FIN } else { 0 };
        out[field::FIN_RSV_OPCODE] =
            fin | ((self.rsv & field::RSV) << field::RSV_SHIFT) | (self.opcode & field::OPCODE);
        let mask_bit = if self.mask.is_some() { field::MASK } else { 0 };
        let key_at = if self.payload_len <= field::MAX_LEN7 {
            // Lossless: payload_len <= 125.
            out[field::MASK_LEN7] = mask_bit | self.payload_len as u8;
            field::EXT_LEN
        } else if let Ok(len16) = u16::try_from(self.payload_len) {
            out[field::MASK_LEN7] = mask_bit | field::LEN_16;
            out[field::EXT_LEN..field::EXT_LEN + 2].copy_from_slice(&len16.to_be_bytes());
            field::EXT_LEN + 2
        } else {
            out[field::MASK_LEN7] = mask_bit | field::LEN_64;
            out[field::EXT_LEN..field::EXT_LEN + 8]
                .copy_from_slice(&self.payload_len.to_be_bytes());
            field::EXT_LEN + 8
        };
        if let Some(key) = self.mask {
            out[key_at..key_at + field::MASK_KEY_LEN].copy_from_slice(&key);
        }
        len
    }
}

/// `buf[at..at + N]` as an array, `None` if `buf` is too short.
fn read_array<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

#[cfg(test)]
mod tests;
