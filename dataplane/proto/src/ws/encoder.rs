//! Server frames: headers written into headroom right in front of a payload, and complete
//! control frames (RFC 6455 §5.2, §5.5).
//!
//! Invariants: a server never masks its frames (RFC 6455 §5.1), every frame is a single FIN
//! frame with RSV bits clear (no extensions are negotiated), lengths use the minimal encoding,
//! and a control frame never carries more than 125 bytes of payload (RFC 6455 §5.5); longer
//! control payloads are truncated rather than producing an invalid frame.

use super::frame::{CloseCode, FrameHeader, Opcode};

/// Headroom a receive buffer leaves in front of payload so any server data-frame header fits.
pub const HEADROOM: usize = 10;

/// Largest control-frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Largest close reason: the control payload less the 2-byte status code (RFC 6455 §5.5.1).
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// Length of an unmasked header for `payload_len` bytes of payload: 2, 4 or 10.
pub fn server_header_len(payload_len: usize) -> usize {
    header(Opcode::Binary, payload_len).buffer_len()
}

/// Writes a FIN data/control frame header so that it ends exactly at `payload_start`; returns
/// the start index of the header.
///
/// # Panics
///
/// The caller guarantees `server_header_len(payload_len) <= payload_start <= buf.len()`
/// (leaving [`HEADROOM`] in front of the payload always suffices); otherwise this panics.
pub fn write_header_before(
    buf: &mut [u8],
    payload_start: usize,
    opcode: Opcode,
    payload_len: usize,
) -> usize {
    let h = header(opcode, payload_len);
    let len = h.buffer_len();
    debug_assert!(payload_start >= len, "write_header_before: no headroom");
    let start = payload_start - len;
    h.emit(&mut buf[start..payload_start]);
    start
}

/// A complete control frame (Ping/Pong/Close), payload ≤ 125 bytes (longer payloads are
/// truncated defensively). Returns bytes written into out (≤ 127).
pub fn control_frame(opcode: Opcode, payload: &[u8], out: &mut [u8; 127]) -> usize {
    debug_assert!(
        opcode.is_control(),
        "control_frame: {opcode:?} is a data opcode"
    );
    let payload = payload.get(..MAX_CONTROL_PAYLOAD).unwrap_or(payload);
    let start = header(opcode, payload.len()).emit(out);
    let end = start + payload.len();
    out[start..end].copy_from_slice(payload);
    end
}

/// Close frame (RFC 6455 §5.5.1): `Some(code)` → 2-byte code + reason (reason truncated at a
/// char boundary to fit 123 bytes); `None` → empty payload.
pub fn close_frame(code: Option<CloseCode>, reason: &str, out: &mut [u8; 127]) -> usize {
    let Some(code) = code else {
        return control_frame(Opcode::Close, &[], out);
    };
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.0.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    control_frame(Opcode::Close, &payload[..2 + end], out)
}

fn header(opcode: Opcode, payload_len: usize) -> FrameHeader {
    FrameHeader {
        fin: true,
        rsv: 0,
        opcode: opcode as u8,
        mask: None,
        payload_len: payload_len as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths() {
        for (len, want) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            assert_eq!(server_header_len(len), want, "{len}");
        }
        assert!(server_header_len(usize::MAX) <= HEADROOM);
    }

    #[test]
    fn header_ends_at_payload_start() {
        for len in [0usize, 5, 125, 126, 65535, 65536, 1 << 20] {
            let mut buf = vec![0xAAu8; HEADROOM + 3];
            let start = write_header_before(&mut buf, HEADROOM, Opcode::Binary, len);
            assert_eq!(HEADROOM - start, server_header_len(len));
            assert!(buf[..start].iter().all(|&b| b == 0xAA));
            assert!(buf[HEADROOM..].iter().all(|&b| b == 0xAA));
            let (h, n) = FrameHeader::parse(&buf[start..]).unwrap().unwrap();
            assert_eq!(n, HEADROOM - start);
            assert_eq!(h, header(Opcode::Binary, len));
        }
    }

    #[test]
    fn rfc_hello_frame() {
        // RFC 6455 §5.7: a single-frame unmasked text message "Hello".
        let mut buf = *b"..........Hello";
        let start = write_header_before(&mut buf, HEADROOM, Opcode::Text, 5);
        assert_eq!(&buf[start..], &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    }

    #[test]
    fn control_frames() {
        let mut out = [0u8; 127];
        let n = control_frame(Opcode::Ping, b"Hello", &mut out);
        // RFC 6455 §5.7: unmasked Ping request.
        assert_eq!(&out[..n], &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        let n = control_frame(Opcode::Pong, &[7u8; 300], &mut out);
        assert_eq!(n, 127);
        assert_eq!(&out[..2], &[0x8A, 125]);
        assert!(out[2..].iter().all(|&b| b == 7));
    }

    #[test]
    fn close_frames() {
        let mut out = [0u8; 127];
        let n = close_frame(None, "ignored", &mut out);
        assert_eq!(&out[..n], &[0x88, 0x00]);
        let n = close_frame(Some(CloseCode::NORMAL), "bye", &mut out);
        assert_eq!(&out[..n], &[0x88, 0x05, 0x03, 0xE8, b'b', b'y', b'e']);
        // 61 two-byte chars = 122 bytes fit; the 62nd would end at byte 124 > 123.
        let long = "é".repeat(70);
        let n = close_frame(Some(CloseCode::GOING_AWAY), &long, &mut out);
        assert_eq!(n, 2 + 2 + 122);
        assert!(std::str::from_utf8(&out[4..n]).is_ok());
        let n = close_frame(Some(CloseCode::POLICY), &"x".repeat(500), &mut out);
        assert_eq!(n, 127);
    }
}
