//! Fuzz harnesses: the parsers and the tunnel state machine checked against their invariants on
//! arbitrary bytes.
//!
//! Each entry point takes the fuzzer's input, never panics on its own, and panics (an `assert!`)
//! when an invariant of the crate breaks. `fuzz/` (cargo-fuzz, nightly) runs them under
//! libFuzzer, and `tests/fuzz_corpus.rs` replays the kept corpus through them on stable, which
//! is why they are compiled always rather than behind `cfg(fuzzing)`. Not part of the API.
//!
//! - [`upgrade_request`]: the Upgrade request parser (RFC 6455 §4.2.1), whole and split.
//! - [`frames`]: the client-frame decoder (RFC 6455 §5, §7.4, §8.1) against a reference
//!   decoder written from the RFC, fed in data-derived chunks.
//! - [`tunnel`]: the tunnel state machine driven by an event sequence, with a driver that
//!   keeps the call contract and checks every intent.
//!
//! Input layouts are documented on each entry point; inputs read past their end yield zeros,
//! so every byte string is a valid input.

mod frames;
mod reference;
mod tunnel;
mod upgrade;

pub use frames::frames;
pub use tunnel::tunnel;
pub use upgrade::upgrade_request;

/// The fuzzer's bytes, read front to back. Reads past the end give zeros and empty slices.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes.
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }
}

/// RFC 6455 §7.4 and the IANA "WebSocket Close Code Number Registry", written out independently
/// of [`crate::ws::CloseCode::is_valid_on_wire`]: the codes an endpoint may put in a Close frame.
fn legal_close_code(code: u16) -> bool {
    match code {
        // §7.4.2: 0-999 are not used.
        0..=999 => false,
        // §7.4.1: normal, going away, protocol error, unsupported data.
        1000..=1003 => true,
        // §7.4.1: 1004 is reserved; 1005 and 1006 MUST NOT be set in a Close frame.
        1004..=1006 => false,
        // §7.4.1: invalid payload, policy, too big, extension required; 1011 (internal error)
        // and 1012-1014 (restart, try again later, bad gateway) are registered with IANA.
        1007..=1014 => true,
        // §7.4.1: 1015 (TLS failure) MUST NOT be set; the rest of 1000-2999 is unassigned.
        1015..=2999 => false,
        // §7.4.2: 3000-3999 registered for libraries and frameworks, 4000-4999 private use.
        3000..=4999 => true,
        _ => false,
    }
}

/// Builds masked client frames from the input: mostly valid, with an occasional defect, so the
/// fuzzer reaches what lies past the framing layer. `budget` caps the payload bytes made up
/// (long frames are filled with a repeated pattern); past it, long frames are cut short.
struct FrameBuilder {
    budget: usize,
}

impl FrameBuilder {
    /// Layout: `spec` (bits 0-2: opcode continuation, text, binary, close, ping, pong, 3, 0xB;
    /// bit 3: FIN clear; bits 4-7: 12 = RSV1, 13 = unmasked, 14 = non-minimal length,
    /// 15 = length with the top bit set, others none), a length code (0-199: that many bytes
    /// from the input; 200-239: 16-bit lengths; 240-254: 64-bit lengths; 255: a 32-bit length
    /// from the next two bytes; long payloads repeat one pattern byte), the mask key seed, the
    /// payload.
    fn push(&mut self, input: &mut Input<'_>, out: &mut Vec<u8>) {
        const OPCODES: [u8; 8] = [0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB];
        let spec = input.byte();
        let len_code = input.byte();
        let k = input.byte();
        let key = [
            k,
            k.wrapping_mul(31).wrapping_add(7),
            k ^ 0xA5,
            k.rotate_left(3),
        ];
        let defect = spec >> 4;
        let mut b0 = OPCODES[usize::from(spec & 7)];
        if spec & 8 == 0 {
            b0 |= 0x80;
        }
        if defect == 12 {
            b0 |= 0x40;
        }
        let len: u64 = match len_code {
            0..=199 => u64::from(len_code),
            200..=239 => 126 + u64::from(len_code - 200) * 1600,
            240..=254 => 65_536 + u64::from(len_code - 240) * 1000,
            255 => u64::from(input.u16()) << 16,
        };
        let payload: Vec<u8> = if len_code < 200 {
            input.take(len_code.into()).to_vec()
        } else {
            let fill = input.byte();
            let n = usize::try_from(len).map_or(self.budget, |l| l.min(self.budget));
            vec![fill; n]
        };
        self.budget = self.budget.saturating_sub(payload.len());

        out.push(b0);
        let mask_bit = if defect == 13 { 0 } else { 0x80 };
        if defect == 15 {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len | 1 << 63).to_be_bytes());
        } else if len <= 125 && defect != 14 {
            out.push(mask_bit | len as u8);
        } else if len <= 0xFFFF && defect != 14 {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
        if mask_bit != 0 {
            out.extend_from_slice(&key);
            out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        } else {
            out.extend_from_slice(&payload);
        }
    }
}
