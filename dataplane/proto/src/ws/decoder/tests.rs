//! Tests of the client-frame decoder: every rule of RFC 6455 §5 it enforces, incremental UTF-8,
//! the no-copy guarantee for one big frame, and a proptest that any split of a valid frame
//! sequence into chunks decodes to the same payload and events as decoding it whole.

use super::*;
use proptest::prelude::*;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(fin, 0, opcode, Some(KEY), payload)
}

fn frame_with(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let h = FrameHeader {
        fin,
        rsv,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    let mut out = vec![0u8; h.buffer_len()];
    h.emit(&mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// What a caller observes: all data bytes in order, and each event with its control payload
/// (for Close: the reason).
#[derive(Debug, Default, PartialEq, Eq)]
struct Observed {
    data: Vec<u8>,
    events: Vec<(Event, Vec<u8>)>,
}

/// Feeds `chunks` one after another like a caller would, re-presenting unconsumed bytes after
/// an event.
fn drive(dec: &mut Decoder, chunks: &mut [Vec<u8>]) -> Observed {
    let mut seen = Observed::default();
    for chunk in chunks.iter_mut() {
        let mut off = 0;
        loop {
            let input = &mut chunk[off..];
            let d = dec.decode(input);
            assert!(d.consumed <= input.len());
            assert!(
                d.data.start <= d.data.end && d.data.end <= d.consumed,
                "{d:?}"
            );
            seen.data.extend_from_slice(&input[d.data.clone()]);
            off += d.consumed;
            match d.event {
                Some(e) => {
                    let payload = match e {
                        Event::Close { .. } => dec.close_reason(),
                        _ => dec.control_payload(),
                    };
                    seen.events.push((e, payload.to_vec()));
                }
                None => {
                    assert_eq!(off, chunk.len());
                    break;
                }
            }
        }
    }
    seen
}

fn decode_whole(bytes: &[u8]) -> Observed {
    let mut dec = Decoder::new(DecoderLimits::default());
    drive(&mut dec, &mut [bytes.to_vec()])
}

fn decode_bytewise(bytes: &[u8]) -> Observed {
    let mut dec = Decoder::new(DecoderLimits::default());
    let mut chunks: Vec<Vec<u8>> = bytes.iter().map(|&b| vec![b]).collect();
    drive(&mut dec, &mut chunks)
}

/// The first event of decoding `bytes` whole and byte by byte, which must agree.
fn first_event(bytes: &[u8]) -> Option<Event> {
    let whole = decode_whole(bytes).events.first().map(|e| e.0);
    let bytewise = decode_bytewise(bytes).events.first().map(|e| e.0);
    assert_eq!(whole, bytewise);
    whole
}

fn error(code: u16) -> Option<Event> {
    Some(Event::Error(CloseCode(code)))
}

fn cat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

#[test]
fn single_text_frame() {
    let seen = decode_whole(&frame(true, 1, b"Hello"));
    assert_eq!(seen.data, b"Hello");
    assert!(seen.events.is_empty());
    // RFC 6455 §5.7: masked "Hello".
    let mut rfc = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let d = Decoder::new(DecoderLimits::default()).decode(&mut rfc);
    assert_eq!((d.consumed, d.data.clone(), d.event), (11, 6..11, None));
    assert_eq!(&rfc[d.data], b"Hello");
}

#[test]
fn large_frame_is_unmasked_in_place_at_header_end() {
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut bytes = frame(true, 2, &payload);
    let header_len = bytes.len() - payload.len();
    assert_eq!(header_len, 14);
    let mut dec = Decoder::new(DecoderLimits::default());
    let d = dec.decode(&mut bytes);
    assert_eq!(d.consumed, bytes.len());
    assert_eq!(d.data, header_len..bytes.len());
    assert_eq!(d.event, None);
    assert_eq!(&bytes[d.data], &payload[..]);
}

#[test]
fn large_frame_arriving_in_pieces_is_reported_as_it_arrives() {
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 3) as u8).collect();
    let bytes = frame(true, 2, &payload);
    let mut dec = Decoder::new(DecoderLimits::default());
    let mut first = bytes[..1000].to_vec();
    let d = dec.decode(&mut first);
    assert_eq!((d.consumed, d.data.clone()), (1000, 8..1000));
    assert_eq!(&first[d.data], &payload[..992]);
    let mut second = bytes[1000..].to_vec();
    let d = dec.decode(&mut second);
    assert_eq!(
        (d.consumed, d.data.clone()),
        (second.len(), 0..second.len())
    );
    assert_eq!(&second[..], &payload[992..]);
    assert!(!dec.in_message());
}

#[test]
fn several_data_frames_in_one_call_form_one_range() {
    let mut bytes = cat(&[
        frame(false, 2, b"abc"),
        frame(false, 0, b""),
        frame(false, 0, b"defg"),
        frame(true, 0, b"h"),
        frame(true, 1, b"ijk"),
    ]);
    let mut dec = Decoder::new(DecoderLimits::default());
    let d = dec.decode(&mut bytes);
    assert_eq!(d.consumed, bytes.len());
    assert_eq!(
        d.data.start, 6,
        "the first piece stays at the first header's end"
    );
    assert_eq!(&bytes[d.data], b"abcdefghijk");
}

#[test]
fn control_frame_stops_decoding_and_data_before_it_is_reported() {
    let mut bytes = cat(&[
        frame(false, 1, b"he"),
        frame(true, 9, b"ping!"),
        frame(true, 0, b"llo"),
        frame(true, 10, b""),
    ]);
    let mut dec = Decoder::new(DecoderLimits::default());
    let d = dec.decode(&mut bytes);
    assert_eq!(d.event, Some(Event::Ping));
    assert_eq!(&bytes[d.data.clone()], b"he");
    assert_eq!(dec.control_payload(), b"ping!");
    assert!(dec.in_message());
    let rest = &mut bytes[d.consumed..];
    let d = dec.decode(rest);
    assert_eq!(d.event, Some(Event::Pong));
    assert_eq!(&rest[d.data.clone()], b"llo");
    assert_eq!(dec.control_payload(), b"");
    assert_eq!(d.consumed, rest.len());
    assert!(!dec.in_message());
    let d = dec.decode(&mut []);
    assert_eq!(
        d,
        Decoded {
            consumed: 0,
            data: 0..0,
            event: None
        }
    );
}

#[test]
fn close_frames() {
    let bytes = frame(true, 8, &close_payload(1000, "bye ✓".as_bytes()));
    let seen = decode_whole(&bytes);
    assert_eq!(
        seen.events,
        vec![(
            Event::Close {
                code: Some(CloseCode::NORMAL)
            },
            "bye ✓".as_bytes().to_vec()
        )]
    );
    assert_eq!(decode_bytewise(&bytes), seen);
    assert_eq!(
        first_event(&frame(true, 8, b"")),
        Some(Event::Close { code: None })
    );
    assert_eq!(
        first_event(&frame(true, 8, &close_payload(4999, b""))),
        Some(Event::Close {
            code: Some(CloseCode(4999))
        })
    );
}

#[test]
fn nothing_is_decoded_after_close() {
    let mut bytes = cat(&[
        frame(true, 2, b"before"),
        frame(true, 8, &close_payload(1001, b"")),
        frame(true, 2, b"after"),
    ]);
    let mut dec = Decoder::new(DecoderLimits::default());
    let d = dec.decode(&mut bytes);
    assert_eq!(
        d.event,
        Some(Event::Close {
            code: Some(CloseCode::GOING_AWAY)
        })
    );
    assert_eq!(&bytes[d.data.clone()], b"before");
    assert_eq!(dec.close_reason(), b"");
    assert_eq!(dec.control_payload(), &[0x03, 0xE9]);
    assert!(dec.is_finished());
    let rest = &mut bytes[d.consumed..];
    let len = rest.len();
    assert_eq!(
        dec.decode(rest),
        Decoded {
            consumed: len,
            data: 0..0,
            event: None
        }
    );
}

#[test]
fn nothing_is_decoded_after_an_error() {
    let mut bytes = cat(&[frame_with(true, 0, 2, None, b"x"), frame(true, 2, b"y")]);
    let mut dec = Decoder::new(DecoderLimits::default());
    assert_eq!(dec.decode(&mut bytes).event, error(1002));
    assert!(dec.is_finished());
    let len = bytes.len();
    assert_eq!(
        dec.decode(&mut bytes),
        Decoded {
            consumed: len,
            data: 0..0,
            event: None
        }
    );
}

#[test]
fn unmasked_client_frame_is_a_protocol_error() {
    assert_eq!(
        first_event(&frame_with(true, 0, 2, None, b"abc")),
        error(1002)
    );
    assert_eq!(first_event(&frame_with(true, 0, 9, None, b"")), error(1002));
}

#[test]
fn rsv_bits_are_a_protocol_error() {
    for rsv in 1..8 {
        assert_eq!(
            first_event(&frame_with(true, rsv, 1, Some(KEY), b"a")),
            error(1002)
        );
    }
}

#[test]
fn reserved_opcodes_are_a_protocol_error() {
    for op in [3, 4, 5, 6, 7, 11, 12, 13, 14, 15] {
        assert_eq!(first_event(&frame(true, op, b"")), error(1002), "{op}");
    }
}

#[test]
fn fragmented_or_oversized_control_frames_are_a_protocol_error() {
    for op in [8, 9, 10] {
        assert_eq!(first_event(&frame(false, op, b"")), error(1002), "{op}");
        assert_eq!(
            first_event(&frame(true, op, &[b'a'; 126])),
            error(1002),
            "{op}"
        );
    }
    let seen = decode_whole(&frame(true, 9, &[b'a'; 125]));
    assert_eq!(seen.events, vec![(Event::Ping, vec![b'a'; 125])]);
}

#[test]
fn continuation_without_message_is_a_protocol_error() {
    assert_eq!(first_event(&frame(true, 0, b"x")), error(1002));
    assert_eq!(first_event(&frame(false, 0, b"x")), error(1002));
    let done = cat(&[
        frame(false, 2, b"a"),
        frame(true, 0, b"b"),
        frame(true, 0, b"c"),
    ]);
    assert_eq!(first_event(&done), error(1002));
}

#[test]
fn new_message_inside_fragmented_message_is_a_protocol_error() {
    for op in [1, 2] {
        let bytes = cat(&[frame(false, 2, b"a"), frame(true, op, b"b")]);
        assert_eq!(first_event(&bytes), error(1002), "{op}");
        let bytes = cat(&[frame(false, 1, b"a"), frame(false, op, b"b")]);
        assert_eq!(first_event(&bytes), error(1002), "{op}");
    }
}

#[test]
fn length_with_top_bit_set_is_a_protocol_error() {
    let bytes = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
    assert_eq!(first_event(&bytes), error(1002));
}

#[test]
fn payload_above_limit_is_too_big() {
    let limits = DecoderLimits { max_payload: 1000 };
    let mut ok = frame(true, 2, &[0; 1000]);
    assert_eq!(Decoder::new(limits).decode(&mut ok).event, None);
    let mut big = frame(true, 2, &[0; 1001]);
    assert_eq!(Decoder::new(limits).decode(&mut big).event, error(1009));
    // Detected from the header alone, before any payload arrives.
    let mut header = frame(true, 2, &[0; 1001]);
    header.truncate(8);
    assert_eq!(Decoder::new(limits).decode(&mut header).event, error(1009));
    // The default limit: 64 MiB.
    let mut huge = [0x82, 0xFF, 0, 0, 0, 0, 0x04, 0, 0, 1, 1, 2, 3, 4];
    let mut dec = Decoder::new(DecoderLimits::default());
    assert_eq!(dec.decode(&mut huge).event, error(1009));
}

#[test]
fn close_with_one_byte_payload_is_a_protocol_error() {
    assert_eq!(first_event(&frame(true, 8, &[0x03])), error(1002));
}

#[test]
fn close_with_invalid_code_is_a_protocol_error() {
    for code in [
        0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
    ] {
        assert_eq!(
            first_event(&frame(true, 8, &close_payload(code, b""))),
            error(1002)
        );
    }
}

#[test]
fn close_reason_must_be_utf8() {
    let bytes = frame(true, 8, &close_payload(1000, &[b'o', 0xFF, b'k']));
    assert_eq!(first_event(&bytes), error(1007));
    let bytes = frame(true, 8, &close_payload(1000, &[0xE2, 0x82]));
    assert_eq!(first_event(&bytes), error(1007));
}

#[test]
fn text_utf8_split_across_frames_and_calls() {
    let text = "aé€😀z".as_bytes();
    for cut1 in 0..=text.len() {
        for cut2 in cut1..=text.len() {
            let bytes = cat(&[
                frame(false, 1, &text[..cut1]),
                frame(true, 9, b"p"),
                frame(false, 0, &text[cut1..cut2]),
                frame(true, 0, &text[cut2..]),
            ]);
            let seen = decode_bytewise(&bytes);
            assert_eq!(seen.data, text);
            assert_eq!(seen.events, vec![(Event::Ping, b"p".to_vec())]);
            assert_eq!(decode_whole(&bytes), seen);
        }
    }
}

#[test]
fn invalid_text_is_invalid_payload() {
    let cases: &[&[u8]] = &[
        &[0xFF],
        &[0xC0, 0x80],             // overlong
        &[0xED, 0xA0, 0x80],       // surrogate
        &[0xF4, 0x90, 0x80, 0x80], // above U+10FFFF
        &[b'a', 0x80],             // lone continuation
        &[0xE2, 0x82, b'a'],       // truncated in the middle
    ];
    for bad in cases {
        assert_eq!(first_event(&frame(true, 1, bad)), error(1007), "{bad:x?}");
        // Split over two fragments.
        let bytes = cat(&[frame(false, 1, &bad[..1]), frame(true, 0, &bad[1..])]);
        assert_eq!(first_event(&bytes), error(1007), "{bad:x?}");
    }
    // Binary is not validated.
    assert_eq!(first_event(&frame(true, 2, &[0xFF])), None);
}

#[test]
fn incomplete_char_at_message_end_is_invalid_payload() {
    for bad in [&[0xC3][..], &[0xE2, 0x82], &[0xF0, 0x9F, 0x98]] {
        assert_eq!(first_event(&frame(true, 1, bad)), error(1007), "{bad:x?}");
        let bytes = cat(&[frame(false, 1, b"ok"), frame(true, 0, bad)]);
        assert_eq!(first_event(&bytes), error(1007), "{bad:x?}");
    }
    // Incomplete at a non-final fragment's end is fine.
    let bytes = cat(&[frame(false, 1, &[0xE2, 0x82]), frame(true, 0, &[0xAC])]);
    assert_eq!(decode_whole(&bytes).data, "€".as_bytes());
}

#[test]
fn invalid_text_is_reported_at_the_first_bad_byte() {
    // A frame announcing 1000 bytes whose third byte is already invalid: the error comes
    // without waiting for the rest of the frame.
    let mut bytes = frame(true, 1, &[b'a'; 1000]);
    let header_len = bytes.len() - 1000;
    bytes.truncate(header_len + 3);
    let mut payload = [b'a', 0xE0, 0x80];
    apply_mask(&mut payload, KEY, 0);
    bytes[header_len..].copy_from_slice(&payload);
    let mut dec = Decoder::new(DecoderLimits::default());
    assert_eq!(dec.decode(&mut bytes).event, error(1007));
}

#[test]
fn empty_frames_and_messages() {
    let bytes = cat(&[
        frame(true, 1, b""),
        frame(true, 2, b""),
        frame(false, 1, b""),
        frame(true, 0, b""),
    ]);
    let seen = decode_whole(&bytes);
    assert!(seen.data.is_empty() && seen.events.is_empty());
    assert_eq!(decode_bytewise(&bytes), seen);
}

#[test]
fn header_split_across_calls_is_stashed() {
    let payload = vec![9u8; 70_000];
    let bytes = frame(true, 2, &payload);
    let mut dec = Decoder::new(DecoderLimits::default());
    for &b in &bytes[..13] {
        let mut one = [b];
        let d = dec.decode(&mut one);
        assert_eq!((d.consumed, d.data.is_empty(), d.event), (1, true, None));
    }
    let mut rest = bytes[13..].to_vec();
    let d = dec.decode(&mut rest);
    assert_eq!(d.data, 1..rest.len());
    assert!(rest[d.data].iter().all(|&b| b == 9));
}

// ---- proptest: any chunking decodes like the whole ----

/// One item of a valid client stream.
#[derive(Clone, Debug)]
enum Item {
    /// A data message cut into fragments, with Pings between some fragments.
    Message {
        text: bool,
        payload: Vec<u8>,
        cuts: Vec<prop::sample::Index>,
        pings: Vec<(prop::sample::Index, Vec<u8>)>,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..300,
        1 => Just(125usize),
        1 => Just(126usize),
        1 => Just(65535usize),
        1 => Just(65536usize),
        1 => 0usize..70_000,
    ]
}

/// Deterministically turns random bytes into valid UTF-8 with 1- to 4-byte chars.
fn to_text(seed: &[u8]) -> Vec<u8> {
    let mut s = String::new();
    for &b in seed {
        let c = match b % 4 {
            0 => Some(char::from(b'a' + b % 26)),
            1 => char::from_u32(0x80 + u32::from(b) * 7),
            2 => char::from_u32(0x800 + u32::from(b) * 200),
            _ => char::from_u32(0x10000 + u32::from(b) * 1000),
        };
        s.push(c.unwrap_or('?'));
    }
    s.into_bytes()
}

fn control_payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=125)
}

fn item(max_len: usize) -> impl Strategy<Value = Item> {
    let message = (
        any::<bool>(),
        payload_len().prop_map(move |n| n.min(max_len)),
        prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        prop::collection::vec((any::<prop::sample::Index>(), control_payload()), 0..3),
    )
        .prop_flat_map(|(text, len, cuts, pings)| {
            prop::collection::vec(any::<u8>(), len).prop_map(move |seed| Item::Message {
                text,
                payload: if text {
                    to_text(&seed[..seed.len() / 3])
                } else {
                    seed
                },
                cuts: cuts.clone(),
                pings: pings.clone(),
            })
        });
    prop_oneof![
        4 => message,
        1 => control_payload().prop_map(Item::Ping),
        1 => control_payload().prop_map(Item::Pong),
    ]
}

/// Encodes the items with random keys, and says what decoding must observe.
fn encode(items: &[Item], keys: &[[u8; 4]], close: Option<(u16, String)>) -> (Vec<u8>, Observed) {
    let mut keys = keys.iter().copied().cycle();
    let mut wire = Vec::new();
    let mut want = Observed::default();
    let mut push = |wire: &mut Vec<u8>, fin: bool, op: u8, payload: &[u8]| {
        wire.extend(frame_with(fin, 0, op, keys.next(), payload));
    };
    for item in items {
        match item {
            Item::Ping(p) | Item::Pong(p) => {
                let (op, ev) = match item {
                    Item::Ping(_) => (9, Event::Ping),
                    _ => (10, Event::Pong),
                };
                push(&mut wire, true, op, p);
                want.events.push((ev, p.clone()));
            }
            Item::Message {
                text,
                payload,
                cuts,
                pings,
            } => {
                let mut points: Vec<usize> =
                    cuts.iter().map(|i| i.index(payload.len() + 1)).collect();
                points.push(0);
                points.push(payload.len());
                points.sort_unstable();
                let frames = points.len() - 1;
                for (n, w) in points.windows(2).enumerate() {
                    let op = match (n, text) {
                        (0, true) => 1,
                        (0, false) => 2,
                        _ => 0,
                    };
                    push(&mut wire, n + 1 == frames, op, &payload[w[0]..w[1]]);
                    want.data.extend_from_slice(&payload[w[0]..w[1]]);
                    if n + 1 < frames {
                        for (at, p) in pings {
                            if at.index(frames) == n {
                                push(&mut wire, true, 9, p);
                                want.events.push((Event::Ping, p.clone()));
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some((code, reason)) = close {
        push(&mut wire, true, 8, &close_payload(code, reason.as_bytes()));
        want.events.push((
            Event::Close {
                code: Some(CloseCode(code)),
            },
            reason.into_bytes(),
        ));
    }
    (wire, want)
}

fn chunked(wire: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
    points.push(0);
    points.push(wire.len());
    points.sort_unstable();
    points
        .windows(2)
        .map(|w| wire[w[0]..w[1]].to_vec())
        .collect()
}

fn close_frame() -> impl Strategy<Value = Option<(u16, String)>> {
    prop::option::of((
        prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999],
        "\\PC{0,30}",
    ))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_chunking_decodes_like_the_whole(
        items in prop::collection::vec(item(70_000), 0..6),
        keys in prop::collection::vec(any::<[u8; 4]>(), 1..4),
        close in close_frame(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let (wire, want) = encode(&items, &keys, close);
        let whole = decode_whole(&wire);
        prop_assert_eq!(&whole, &want);
        let mut dec = Decoder::new(DecoderLimits::default());
        let split = drive(&mut dec, &mut chunked(&wire, &cuts));
        prop_assert_eq!(&split, &want);
    }

    #[test]
    fn byte_by_byte_decodes_like_the_whole(
        items in prop::collection::vec(item(300), 0..6),
        keys in prop::collection::vec(any::<[u8; 4]>(), 1..4),
        close in close_frame(),
    ) {
        let (wire, want) = encode(&items, &keys, close);
        prop_assert_eq!(decode_bytewise(&wire), want);
    }

    #[test]
    fn hostile_input_never_panics(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
    ) {
        let mut chunks = chunks;
        let mut dec = Decoder::new(DecoderLimits { max_payload: 1 << 12 });
        for chunk in &mut chunks {
            let mut off = 0;
            while off < chunk.len() {
                let d = dec.decode(&mut chunk[off..]);
                prop_assert!(d.data.end <= d.consumed);
                if d.event.is_none() {
                    break;
                }
                off += d.consumed;
            }
        }
    }
}

#[test]
fn a_client_decodes_unmasked_server_frames_and_refuses_masked_ones() {
    let mut dec = Decoder::for_server_frames(DecoderLimits::default());
    let mut bytes = frame_with(true, 0, 0x2, None, b"from the server");
    bytes.extend(frame_with(true, 0, 0x9, None, b"ping"));
    let d = dec.decode(&mut bytes);
    assert_eq!(&bytes[d.data.clone()], b"from the server");
    assert_eq!(d.event, Some(Event::Ping));
    assert_eq!(dec.control_payload(), b"ping");
    // RFC 6455 §5.1: a client closes on a masked server frame.
    let mut dec = Decoder::for_server_frames(DecoderLimits::default());
    let mut masked = frame(true, 0x2, b"masked");
    let d = dec.decode(&mut masked);
    assert_eq!(d.event, Some(Event::Error(CloseCode::PROTOCOL_ERROR)));
    // And a server still refuses unmasked client frames.
    let mut dec = Decoder::new(DecoderLimits::default());
    let mut unmasked = frame_with(true, 0, 0x2, None, b"x");
    assert_eq!(
        dec.decode(&mut unmasked).event,
        Some(Event::Error(CloseCode::PROTOCOL_ERROR))
    );
}

#[test]
fn decode_all_joins_data_keeps_the_latest_ping_and_stops_at_close() {
    let mut bytes = frame(true, 0x2, b"one ");
    bytes.extend(frame(true, 0x9, b"first ping"));
    bytes.extend(frame(true, 0x2, b"two"));
    bytes.extend(frame(true, 0x9, b"latest"));
    bytes.extend(frame(true, 0x8, &close_payload(1000, b"")));
    bytes.extend(frame(true, 0x2, b"after close"));
    let mut dec = Decoder::new(DecoderLimits::default());
    let all = dec.decode_all(&mut bytes, true);
    assert_eq!(&bytes[all.data.clone()], b"one two");
    let (ping, n) = all.ping.expect("a ping");
    assert_eq!(&ping[..n], b"latest");
    assert_eq!(
        all.end,
        Some(Event::Close {
            code: Some(CloseCode::NORMAL)
        })
    );
    // While closing, data is dropped.
    let mut bytes = frame(true, 0x2, b"dropped");
    let mut dec = Decoder::new(DecoderLimits::default());
    assert!(dec.decode_all(&mut bytes, false).data.is_empty());
}
