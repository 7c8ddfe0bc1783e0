//! Tests of the frame header wire format (RFC 6455 §5.2): known encodings, incomplete input,
//! the top-bit rule and the `parse(emit(h)) == h` round trip.

use super::*;
use proptest::prelude::*;

fn header(opcode: u8, mask: Option<[u8; 4]>, payload_len: u64) -> FrameHeader {
    FrameHeader {
        fin: true,
        rsv: 0,
        opcode,
        mask,
        payload_len,
    }
}

#[test]
fn opcode_from_u8_and_control() {
    for v in 0u8..=255 {
        match Opcode::from_u8(v) {
            Some(op) => {
                assert_eq!(op as u8, v);
                assert_eq!(op.is_control(), v >= 8);
            }
            None => assert!(matches!(v, 3..=7 | 11..=255), "{v}"),
        }
    }
}

#[test]
fn close_code_validity() {
    let valid = |c: u16| CloseCode(c).is_valid_on_wire();
    for c in [1000, 1001, 1002, 1003, 1007, 1010, 1011, 1014, 3000, 4999] {
        assert!(valid(c), "{c}");
    }
    for c in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
        assert!(!valid(c), "{c}");
    }
}

#[test]
fn parses_rfc_examples() {
    // RFC 6455 §5.7: a single-frame unmasked text message "Hello".
    let unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(
        FrameHeader::parse(&unmasked),
        Ok(Some((header(1, None, 5), 2)))
    );
    // RFC 6455 §5.7: a single-frame masked text message "Hello".
    let masked = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(
        FrameHeader::parse(&masked),
        Ok(Some((header(1, Some([0x37, 0xfa, 0x21, 0x3d]), 5), 6)))
    );
    // RFC 6455 §5.7: 256 bytes binary message in a single unmasked frame.
    assert_eq!(
        FrameHeader::parse(&[0x82, 0x7E, 0x01, 0x00]),
        Ok(Some((header(2, None, 256), 4)))
    );
    // RFC 6455 §5.7: 64KiB binary message in a single unmasked frame.
    let b = [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00];
    assert_eq!(
        FrameHeader::parse(&b),
        Ok(Some((header(2, None, 65536), 10)))
    );
}

#[test]
fn fin_rsv_opcode_bits() {
    let (h, len) = FrameHeader::parse(&[0x7A, 0x00]).unwrap().unwrap();
    assert_eq!(len, 2);
    assert!(!h.fin);
    assert_eq!(h.rsv, 0b111);
    assert_eq!(h.opcode, 0xA);
}

#[test]
fn every_prefix_of_a_header_is_incomplete() {
    for h in [
        header(2, None, 5),
        header(2, Some([1, 2, 3, 4]), 5),
        header(2, Some([1, 2, 3, 4]), 300),
        header(2, Some([1, 2, 3, 4]), 1 << 40),
        header(2, None, 1 << 40),
    ] {
        let mut buf = [0u8; FrameHeader::MAX_LEN];
        let n = h.emit(&mut buf);
        for cut in 0..n {
            assert_eq!(FrameHeader::parse(&buf[..cut]), Ok(None), "{h:?} cut {cut}");
        }
        assert_eq!(FrameHeader::parse(&buf[..n]), Ok(Some((h, n))));
        assert_eq!(FrameHeader::parse(&buf), Ok(Some((h, n))));
    }
}

#[test]
fn top_bit_of_64_bit_length_is_an_error_before_the_key_arrives() {
    let b = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(FrameHeader::parse(&b), Err(FrameError::LengthTopBitSet));
    assert_eq!(FrameHeader::parse(&b[..9]), Ok(None));
}

#[test]
fn non_minimal_lengths_are_accepted() {
    assert_eq!(
        FrameHeader::parse(&[0x82, 0x7E, 0x00, 0x05]),
        Ok(Some((header(2, None, 5), 4)))
    );
}

#[test]
fn buffer_len_uses_minimal_encoding() {
    for (len, want) in [
        (0, 2),
        (125, 2),
        (126, 4),
        (65535, 4),
        (65536, 10),
        (u64::MAX >> 1, 10),
    ] {
        assert_eq!(header(1, None, len).buffer_len(), want, "{len}");
        assert_eq!(header(1, Some([0; 4]), len).buffer_len(), want + 4, "{len}");
    }
}

fn any_len() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..=130,
        Just(125u64),
        Just(126),
        Just(65535),
        Just(65536),
        0u64..=70_000,
        0u64..=(u64::MAX >> 1),
    ]
}

proptest! {
    #[test]
    fn emit_then_parse_round_trips(
        fin: bool,
        rsv in 0u8..8,
        opcode in 0u8..16,
        mask: Option<[u8; 4]>,
        payload_len in any_len(),
        trailing in proptest::collection::vec(any::<u8>(), 0..4),
    ) {
        let h = FrameHeader { fin, rsv, opcode, mask, payload_len };
        let mut buf = vec![0u8; FrameHeader::MAX_LEN];
        let n = h.emit(&mut buf);
        prop_assert_eq!(n, h.buffer_len());
        buf.truncate(n);
        buf.extend_from_slice(&trailing);
        prop_assert_eq!(FrameHeader::parse(&buf), Ok(Some((h, n))));
    }

    #[test]
    fn parse_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..20)) {
        if let Ok(Some((_, n))) = FrameHeader::parse(&buf) {
            prop_assert!(n <= buf.len() && n <= FrameHeader::MAX_LEN);
        }
    }
}
