//! Tests of `apply_mask` (RFC 6455 §5.3) against a bytewise reference, piecewise masking with
//! the rolling offset, and a by-hand throughput check (`--ignored`, run with `--release`).

use super::apply_mask;
use proptest::prelude::*;

fn naive(buf: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) % 4];
    }
    (offset + buf.len()) % 4
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn matches_reference_for_all_offsets_and_small_lengths() {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    for offset in 0..4 {
        for len in 0..300 {
            let mut fast = pattern(len);
            let mut slow = fast.clone();
            assert_eq!(
                apply_mask(&mut fast, key, offset),
                naive(&mut slow, key, offset)
            );
            assert_eq!(fast, slow, "offset {offset} len {len}");
        }
    }
}

#[test]
fn matches_reference_for_large_lengths() {
    let key = [0xde, 0xad, 0xbe, 0xef];
    for len in [4096, 65_535, 65_536, 65_537, 1 << 20, (1 << 20) + 13] {
        for offset in 0..4 {
            let mut fast = pattern(len);
            let mut slow = fast.clone();
            assert_eq!(
                apply_mask(&mut fast, key, offset),
                naive(&mut slow, key, offset)
            );
            assert!(fast == slow, "offset {offset} len {len}");
        }
    }
}

#[test]
fn rfc_example_hello() {
    // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
    let mut b = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
    assert_eq!(apply_mask(&mut b, [0x37, 0xfa, 0x21, 0x3d], 0), 1);
    assert_eq!(&b, b"Hello");
}

#[test]
fn offset_is_taken_modulo_four() {
    let mut a = pattern(100);
    let mut b = a.clone();
    assert_eq!(
        apply_mask(&mut a, [1, 2, 3, 4], 6),
        apply_mask(&mut b, [1, 2, 3, 4], 2)
    );
    assert_eq!(a, b);
}

proptest! {
    #[test]
    fn masking_in_pieces_equals_masking_whole(
        data in proptest::collection::vec(any::<u8>(), 0..2000),
        key: [u8; 4],
        start in 0usize..4,
        mut cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
    ) {
        let mut whole = data.clone();
        let end = apply_mask(&mut whole, key, start);

        let mut points: Vec<usize> = cuts.drain(..).map(|i| i.index(data.len() + 1)).collect();
        points.push(0);
        points.push(data.len());
        points.sort_unstable();
        let mut pieces = data.clone();
        let mut offset = start;
        for w in points.windows(2) {
            offset = apply_mask(&mut pieces[w[0]..w[1]], key, offset);
        }
        prop_assert_eq!(offset, end);
        prop_assert_eq!(&pieces, &whole);

        // Masking twice restores the input.
        apply_mask(&mut whole, key, start);
        prop_assert_eq!(whole, data);
    }

    #[test]
    fn matches_reference(
        data in proptest::collection::vec(any::<u8>(), 0..600),
        key: [u8; 4],
        offset in 0usize..4,
    ) {
        let mut fast = data.clone();
        let mut slow = data;
        prop_assert_eq!(apply_mask(&mut fast, key, offset), naive(&mut slow, key, offset));
        prop_assert_eq!(fast, slow);
    }
}
