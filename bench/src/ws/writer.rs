//! Client frames (RFC 6455 §5.2, §5.3): a header from `ringway_proto`'s `FrameHeader::emit`,
//! the payload copied behind it and masked in place with `apply_mask`.
//!
//! Invariant: every frame gets its own key from the caller's generator (RFC 6455 §5.3: "the
//! masking key MUST be derived from a strong source of entropy" is relaxed to a fast PRNG seeded
//! from the OS; a load generator needs unpredictable-to-the-server, not secret). Frames are
//! appended to a buffer the caller reuses, so writing a frame allocates nothing once the buffer
//! has grown to its working size.

use rand::RngCore;
use ringway_proto::ws::mask::apply_mask;
use ringway_proto::ws::{FrameHeader, Opcode};

use crate::pattern;

/// Appends one final, masked frame of `opcode` whose payload is `payload_len` pattern bytes
/// starting at stream offset `offset`.
pub fn push_pattern_frame(
    out: &mut Vec<u8>,
    opcode: Opcode,
    offset: u64,
    payload_len: usize,
    rng: &mut impl RngCore,
) {
    let start = push_header(out, opcode, payload_len, rng);
    let (mut off, mut left) = (offset, payload_len);
    while left > 0 {
        let chunk = pattern::window(off, left);
        out.extend_from_slice(chunk);
        off += chunk.len() as u64;
        left -= chunk.len();
    }
    mask_tail(out, start);
}

/// Appends one final, masked frame of `opcode` carrying `payload` (pongs, closes).
pub fn push_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], rng: &mut impl RngCore) {
    let start = push_header(out, opcode, payload.len(), rng);
    out.extend_from_slice(payload);
    mask_tail(out, start);
}

/// Appends a masked Close frame with `code` (RFC 6455 §5.5.1).
pub fn push_close(out: &mut Vec<u8>, code: u16, rng: &mut impl RngCore) {
    push_frame(out, Opcode::Close, &code.to_be_bytes(), rng);
}

/// Writes the header and returns where the payload starts.
fn push_header(out: &mut Vec<u8>, opcode: Opcode, len: usize, rng: &mut impl RngCore) -> usize {
    let header = FrameHeader {
        fin: true,
        rsv: 0,
        opcode: opcode as u8,
        mask: Some(rng.next_u32().to_ne_bytes()),
        payload_len: len as u64,
    };
    let at = out.len();
    out.resize(at + header.buffer_len(), 0);
    at + header.emit(&mut out[at..])
}

/// Masks `out[start..]` with the key that sits in the 4 bytes before it.
fn mask_tail(out: &mut [u8], start: usize) {
    let mut key = [0u8; 4];
    key.copy_from_slice(&out[start - 4..start]);
    apply_mask(&mut out[start..], key, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn frames_unmask_to_the_pattern() {
        let mut rng = SmallRng::seed_from_u64(1);
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 200_000] {
            let mut out = vec![0xEE; 3];
            push_pattern_frame(&mut out, Opcode::Binary, 42, len, &mut rng);
            let (h, head) = FrameHeader::parse(&out[3..]).unwrap().unwrap();
            assert_eq!((h.fin, h.opcode, h.payload_len), (true, 2, len as u64));
            let mut payload = out[3 + head..].to_vec();
            apply_mask(&mut payload, h.mask.unwrap(), 0);
            assert!(pattern::matches(42, &payload), "len {len}");
        }
    }

    #[test]
    fn close_carries_the_code() {
        let mut rng = SmallRng::seed_from_u64(2);
        let mut out = Vec::new();
        push_close(&mut out, 1000, &mut rng);
        let (h, head) = FrameHeader::parse(&out).unwrap().unwrap();
        let mut payload = out[head..].to_vec();
        apply_mask(&mut payload, h.mask.unwrap(), 0);
        assert_eq!((h.opcode, payload.as_slice()), (8, &[0x03, 0xE8][..]));
    }
}
