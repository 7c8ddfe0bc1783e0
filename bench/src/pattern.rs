//! The deterministic byte stream every workload sends, and the check of what comes back.
//!
//! Byte `i` of a stream is `TABLE[i % PERIOD]`. `PERIOD` is a prime (251), so it is not a
//! multiple of 4 (a wrong masking key offset shows) nor of any buffer size (a byte dropped,
//! repeated or swapped with another connection's shows). Each connection starts its stream at its
//! own offset (`seed`). The table is the period repeated over `PERIOD + WINDOW` bytes, so any
//! window of up to `WINDOW` bytes is one contiguous slice: sending is a slice borrow (no copy) and
//! checking is one `memcmp`.

use std::sync::OnceLock;

/// Bytes before the stream repeats.
pub const PERIOD: usize = 251;
/// Longest slice [`window`] hands out.
pub const WINDOW: usize = 128 * 1024;

fn table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..PERIOD + WINDOW)
            // A permutation of 0..251 mixed so neighbouring bytes differ in many bits.
            .map(|i| ((i % PERIOD) * 97 % PERIOD) as u8 ^ 0x5A)
            .collect()
    })
}

/// The stream bytes `[offset, offset + len)`; `len` is clipped to [`WINDOW`].
pub fn window(offset: u64, len: usize) -> &'static [u8] {
    let start = (offset % PERIOD as u64) as usize;
    &table()[start..start + len.min(WINDOW)]
}

/// Whether `got` equals the stream bytes starting at `offset` (any length).
pub fn matches(offset: u64, got: &[u8]) -> bool {
    let mut off = offset;
    got.chunks(WINDOW).all(|chunk| {
        let ok = chunk == window(off, chunk.len());
        off += chunk.len() as u64;
        ok
    })
}

/// Copies the stream bytes starting at `offset` into `out` (any length).
pub fn fill(offset: u64, out: &mut [u8]) {
    let mut off = offset;
    for chunk in out.chunks_mut(WINDOW) {
        chunk.copy_from_slice(window(off, chunk.len()));
        off += chunk.len() as u64;
    }
}

/// The stream start of connection `index`, so neighbouring connections never agree.
pub fn seed(index: usize) -> u64 {
    (index as u64).wrapping_mul(7919) % PERIOD as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_the_periodic_stream() {
        let whole: Vec<u8> = (0..3 * WINDOW as u64).map(|i| window(i, 1)[0]).collect();
        for off in [0u64, 1, 250, 251, 1000, 70_000] {
            assert_eq!(window(off, 4096), &whole[off as usize..off as usize + 4096]);
        }
        let mut buf = vec![0u8; WINDOW + 300];
        fill(17, &mut buf);
        assert!(matches(17, &buf));
        assert!(!matches(18, &buf));
        buf[WINDOW + 5] ^= 1;
        assert!(!matches(17, &buf));
    }

    #[test]
    fn a_byte_shift_is_detected() {
        for off in 0..PERIOD as u64 {
            assert_ne!(window(off, 8), window(off + 1, 8));
            assert_ne!(window(off, 8), window(off + 4, 8));
        }
    }
}
