//! In-place masking and unmasking of payload bytes (RFC 6455 §5.3).
//!
//! Masking is a XOR with a 4-byte key, so the same call masks and unmasks. A payload may arrive
//! in pieces; the key position carries over through the returned offset, so masking a buffer
//! piece by piece with the rolling offset gives exactly the bytes masking it whole would.
//!
//! Speed without `unsafe`: the key is rotated to the starting offset once, repeated into a
//! 64-byte block, and whole 64-byte chunks are XORed with it in a fixed-length loop that LLVM
//! turns into SIMD code (SSE2 on baseline x86_64); the < 64-byte tail goes as 8-byte words, then
//! single bytes. Since 64 and 8 are multiples of 4, every chunk, word and the last bytes start at
//! key position 0 of the rotated key.

/// Bytes XORed per iteration of the vectorised loop.
const BLOCK: usize = 64;

/// XORs `buf` with `key` starting at key byte `offset` (0..4); returns the offset for the next
/// byte ((offset + len) % 4). An `offset` of 4 or more is taken modulo 4.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    let offset = offset % 4;
    let next = (offset + buf.len() % 4) % 4;
    let key = u32::from_be_bytes(key)
        .rotate_left(8 * offset as u32)
        .to_be_bytes();

    let tail = if buf.len() >= BLOCK {
        let mut block = [0u8; BLOCK];
        for (i, b) in block.iter_mut().enumerate() {
            *b = key[i % 4];
        }
        let mut chunks = buf.chunks_exact_mut(BLOCK);
        for chunk in &mut chunks {
            for (b, k) in chunk.iter_mut().zip(block.iter()) {
                *b ^= *k;
            }
        }
        chunks.into_remainder()
    } else {
        buf
    };

    // Fewer than 64 bytes left: whole 8-byte words, then single bytes.
    let word_key = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut words = tail.chunks_exact_mut(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(w) ^ word_key).to_ne_bytes());
    }
    for (b, k) in words.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *b ^= *k;
    }
    next
}

#[cfg(test)]
mod tests;
