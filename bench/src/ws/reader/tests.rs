//! The frame reader against server streams cut at every byte, one byte at a time and at random,
//! with the caller's carry-the-tail loop exactly as `client::stream` runs it.

use super::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// A control item and how many data bytes came before it.
    Ping(Vec<u8>, usize),
    Pong(usize),
    Close(Option<u16>, usize),
}

fn frame(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8]) {
    let h = FrameHeader {
        fin,
        rsv: 0,
        opcode,
        mask: None,
        payload_len: payload.len() as u64,
    };
    let at = out.len();
    out.resize(at + h.buffer_len(), 0);
    h.emit(&mut out[at..]);
    out.extend_from_slice(payload);
}

fn bytes(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ salt).collect()
}

/// A stream with every header length, fragmentation, interleaved control frames and a close.
/// Returns the stream, the data it carries and the control items expected.
fn server_stream(big: usize) -> (Vec<u8>, Vec<u8>, Vec<Seen>) {
    let (a, b, c) = (bytes(3, 1), bytes(200, 2), bytes(big, 3));
    let mut s = Vec::new();
    frame(&mut s, false, 2, &a);
    frame(&mut s, true, 9, b"abc");
    frame(&mut s, true, 0, &b);
    frame(&mut s, true, 1, &[]);
    if big < 65_536 {
        // A non-minimal 64-bit length, which the reader accepts like any other.
        s.extend_from_slice(&[0x82, 127]);
        s.extend_from_slice(&(big as u64).to_be_bytes());
        s.extend_from_slice(&c);
    } else {
        frame(&mut s, true, 2, &c);
    }
    frame(&mut s, true, 10, &[]);
    frame(&mut s, true, 8, &[0x03, 0xE8, b'o', b'k']);
    let data = [a, b, c].concat();
    let n = data.len();
    let seen = vec![
        Seen::Ping(b"abc".to_vec(), 3),
        Seen::Pong(n),
        Seen::Close(Some(1000), n),
    ];
    (s, data, seen)
}

/// Feeds `chunks` through the reader the way the client does; returns data and control items.
fn run<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Result<(Vec<u8>, Vec<Seen>), ReadError> {
    let mut reader = FrameReader::new();
    let (mut carry, mut data, mut seen) = (Vec::new(), Vec::new(), Vec::new());
    let mut buf = Vec::new();
    for chunk in chunks {
        buf.clear();
        buf.extend_from_slice(&carry);
        buf.extend_from_slice(chunk);
        let used = reader.read_all(&buf, |item| {
            match item {
                Item::Data(d) => data.extend_from_slice(d),
                Item::Ping(p) => seen.push(Seen::Ping(p.to_vec(), data.len())),
                Item::Pong => seen.push(Seen::Pong(data.len())),
                Item::Close(code) => seen.push(Seen::Close(code, data.len())),
            }
            Ok::<(), ReadError>(())
        })?;
        carry.clear();
        carry.extend_from_slice(&buf[used..]);
        assert!(carry.len() <= 14 + 125, "carry grew to {}", carry.len());
    }
    assert!(carry.is_empty(), "bytes left over: {}", carry.len());
    assert!(reader.is_closed());
    Ok((data, seen))
}

#[test]
fn split_at_every_byte() {
    let (s, data, seen) = server_stream(300);
    for cut in 0..=s.len() {
        let got = run([&s[..cut], &s[cut..]].into_iter()).unwrap();
        assert_eq!(got, (data.clone(), seen.clone()), "cut at {cut}");
    }
}

#[test]
fn split_at_every_pair_of_bytes() {
    let (s, data, seen) = server_stream(20);
    for i in 0..=s.len() {
        for j in i..=s.len() {
            let got = run([&s[..i], &s[i..j], &s[j..]].into_iter()).unwrap();
            assert_eq!(got, (data.clone(), seen.clone()), "cuts at {i}, {j}");
        }
    }
}

#[test]
fn one_byte_at_a_time_with_a_64_bit_length() {
    let (s, data, seen) = server_stream(70_000);
    assert_eq!(run(s.chunks(1)).unwrap(), (data, seen));
}

#[test]
fn random_chunks() {
    let (s, data, seen) = server_stream(70_000);
    let mut rng = SmallRng::seed_from_u64(7);
    for _ in 0..50 {
        let mut cuts = vec![0, s.len()];
        cuts.extend((0..rng.gen_range(1..40)).map(|_| rng.gen_range(0..s.len())));
        cuts.sort_unstable();
        let got = run(cuts.windows(2).map(|w| &s[w[0]..w[1]])).unwrap();
        assert_eq!(got, (data.clone(), seen.clone()));
    }
}

#[test]
fn protocol_violations_are_errors() {
    let cases: [(&[u8], ReadError); 7] = [
        (&[0x82, 0x81, 1, 2, 3, 4, 0], ReadError::Masked),
        (&[0xC2, 0x00], ReadError::RsvSet),
        (&[0x83, 0x00], ReadError::ReservedOpcode(3)),
        (&[0x09, 0x00], ReadError::BadControl),
        (&[0x89, 126, 0, 126], ReadError::BadControl),
        (&[0x80, 0x00], ReadError::BadContinuation),
        (&[0x88, 0x01, 0x03], ReadError::BadControl),
    ];
    for (bytes, want) in cases {
        let mut r = FrameReader::new();
        let got = r.read_all(bytes, |_| Ok::<(), ReadError>(()));
        assert_eq!(got, Err(want), "{bytes:?}");
    }
    let mut r = FrameReader::new();
    let got = r.read_all(&[0x02, 0x01, b'a', 0x82, 0x00], |_| Ok::<(), ReadError>(()));
    assert_eq!(got, Err(ReadError::BadContinuation));
    let mut r = FrameReader::new();
    let got = r.read_all(&[0x88, 0x00, 0x82, 0x00], |_| Ok::<(), ReadError>(()));
    assert_eq!(got, Err(ReadError::AfterClose));
}
