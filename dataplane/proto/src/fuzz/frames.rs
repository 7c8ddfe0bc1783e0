//! The client-frame decoder harness: [`Decoder`] fed a stream whole and in data-derived chunks,
//! both compared with the reference decoder (RFC 6455 §5, §7.4, §8.1).
//!
//! Checked: the call contract of the module doc of `ws::decoder` (consumed and data ranges,
//! nothing swallowed without an event, nothing after the end); the same events, control
//! payloads and data, whatever the split; text and Close reasons are valid UTF-8 or the stream
//! ends with 1007; a Close is reported only with a legal code (RFC 6455 §7.4); the only
//! closing codes are 1002, 1007 and 1009.

use super::reference::{self, Expected, Seen};
use super::{legal_close_code, FrameBuilder, Input};
use crate::ws::decoder::{Decoder, DecoderLimits, Event};

/// What a caller of the decoder observed.
#[derive(Debug, Default)]
struct Observed {
    events: Vec<Seen>,
    data: Vec<u8>,
    in_message: bool,
}

/// Layout: a mode byte (bit 0: the rest is frame specs for [`FrameBuilder`], otherwise raw
/// bytes), a limit byte (below 128: `max_payload` = 4 × it, otherwise the default 64 MiB), two
/// bytes seeding the chunk sizes, the largest chunk less one (255: one piece), then the stream.
pub fn frames(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let limit = input.byte();
    let max_payload = if limit < 128 {
        u64::from(limit) * 4
    } else {
        DecoderLimits::default().max_payload
    };
    let mut seed = u32::from(input.u16()) | 1 << 16;
    let max_chunk = input.byte();
    let stream = if mode & 1 == 1 {
        let mut out = Vec::new();
        let mut builder = FrameBuilder { budget: 80 << 10 };
        while !input.is_empty() {
            builder.push(&mut input, &mut out);
        }
        out
    } else {
        input.rest().to_vec()
    };

    let expected = reference::decode(&stream, max_payload);
    let whole = decode(&stream, max_payload, || usize::MAX);
    // Long streams go in pieces of at least 1/1024 of them, so a run stays fast.
    let least = stream.len() / 1024;
    let chunked = decode(&stream, max_payload, || {
        // xorshift32: sizes 0 (an empty call) to max_chunk + 1.
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        if max_chunk == 255 {
            usize::MAX
        } else {
            let n = seed as usize % (usize::from(max_chunk) + 2);
            if n == 0 {
                0
            } else {
                n.max(least)
            }
        }
    });
    compare(&expected, &whole, true);
    compare(&expected, &chunked, false);
}

/// Feeds `stream` to a fresh decoder in pieces of `next_size()` bytes, checking the call
/// contract on every call.
fn decode(stream: &[u8], max_payload: u64, mut next_size: impl FnMut() -> usize) -> Observed {
    let mut decoder = Decoder::new(DecoderLimits { max_payload });
    let mut seen = Observed::default();
    // One copy, unmasked in place piece by piece as a receive buffer would be.
    let mut buf = stream.to_vec();
    let mut at = 0;
    while at < buf.len() {
        let n = next_size().min(buf.len() - at);
        let chunk = &mut buf[at..at + n];
        at += n;
        let mut pos = 0;
        loop {
            let rest = &mut chunk[pos..];
            let finished = decoder.is_finished();
            let d = decoder.decode(rest);
            assert!(d.consumed <= rest.len(), "consumed past the input: {d:?}");
            assert!(
                d.data.start <= d.data.end && d.data.end <= d.consumed,
                "data outside the consumed bytes: {d:?}"
            );
            if d.event.is_none() {
                assert_eq!(d.consumed, rest.len(), "bytes left without an event");
            }
            if finished {
                assert!(
                    d.data.is_empty() && d.event.is_none(),
                    "output after the end"
                );
            }
            seen.data.extend_from_slice(&rest[d.data.clone()]);
            pos += d.consumed;
            let Some(event) = d.event else {
                break;
            };
            seen.events.push(observe(&decoder, event));
        }
    }
    seen.in_message = decoder.in_message();
    seen
}

/// The event with what the decoder says about it, checked.
fn observe(decoder: &Decoder, event: Event) -> Seen {
    let payload = decoder.control_payload();
    assert!(payload.len() <= 125, "control payload over 125 bytes");
    match event {
        Event::Ping => Seen::Ping(payload.to_vec()),
        Event::Pong => Seen::Pong(payload.to_vec()),
        Event::Close { code } => {
            assert!(decoder.is_finished(), "not finished after a Close");
            let reason = decoder.close_reason();
            assert!(
                std::str::from_utf8(reason).is_ok(),
                "Close reason not UTF-8"
            );
            match code {
                Some(c) => {
                    assert!(
                        legal_close_code(c.0),
                        "Close with illegal code {} accepted",
                        c.0
                    );
                    assert_eq!(payload[..2], c.0.to_be_bytes());
                    assert_eq!(&payload[2..], reason);
                }
                None => assert!(payload.is_empty() && reason.is_empty()),
            }
            Seen::Close(code.map(|c| c.0), reason.to_vec())
        }
        Event::Error(code) => {
            assert!(decoder.is_finished(), "not finished after an error");
            assert!(
                matches!(code.0, 1002 | 1007 | 1009),
                "unexpected error code {}",
                code.0
            );
            Seen::Error(code.0)
        }
    }
}

/// `whole`: the stream was decoded in one piece, so the data delivered is exactly the minimum.
fn compare(expected: &Expected, seen: &Observed, whole: bool) {
    assert_eq!(
        seen.events, expected.events,
        "events differ (whole: {whole})"
    );
    let n = seen.data.len();
    assert!(
        expected.data.starts_with(&seen.data),
        "data differs (whole: {whole})"
    );
    assert!(n >= expected.data_min, "data missing (whole: {whole})");
    if whole {
        assert_eq!(n, expected.data_min, "invalid text delivered");
    }
    if !expected.ended() {
        assert_eq!(seen.in_message, expected.in_message, "in_message differs");
    }
}
