//! Bytes handed to a send: a checked range of a lent pool buffer, an owned vector, or a count of
//! bytes waiting in the caller's pipe (spliced on by the caller, never sent by the ring).
//!
//! Invariant: a [`TxBuf`] can only name bytes its buffer holds. A pool range is checked when the
//! `TxBuf` is built to lie inside the buffer's headroom plus the bytes the kernel received into it
//! (never the spare room past them, which may hold an earlier tenant's bytes), and the fields are
//! private, so safe code cannot make the kernel send a neighbouring slot.

use std::fmt;
use std::ops::Range;

use crate::bufpool::{PoolBuf, HEADROOM};

/// A range that does not lie inside the buffer it was meant for.
#[derive(Debug)]
pub struct RangeError {
    /// The buffer, handed back so the caller can recycle it.
    pub buf: PoolBuf,
    /// The range that was asked for.
    pub range: Range<usize>,
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "range {}..{} is outside the buffer's written bytes 0..{}",
            self.range.start,
            self.range.end,
            HEADROOM + self.buf.len()
        )
    }
}

impl std::error::Error for RangeError {}

#[derive(Debug)]
enum Bytes {
    /// `buf`'s slot bytes `start..end` (offsets into the slot, headroom included).
    Pool { buf: PoolBuf, start: u32, end: u32 },
    /// `vec[start..]`.
    Owned { vec: Vec<u8>, start: u32 },
    /// `len` bytes the caller spliced into a pipe and will splice on to the socket.
    Piped { len: u32 },
}

/// Bytes waiting to be sent (see the module doc for what a pool range may name).
#[derive(Debug)]
pub struct TxBuf(Bytes);

impl TxBuf {
    /// Bytes `range` of `buf`'s slot, where the slot is `HEADROOM` bytes of headroom followed by
    /// the `buf.len()` bytes the kernel received. Fails (returning the buffer) if the range is
    /// reversed or reaches past the received bytes.
    pub fn pool(buf: PoolBuf, range: Range<usize>) -> Result<TxBuf, RangeError> {
        if range.start > range.end || range.end > HEADROOM + buf.len() {
            return Err(RangeError { buf, range });
        }
        // A slot is at most 1 MiB (checked by the pool), so both offsets fit in u32.
        Ok(TxBuf(Bytes::Pool {
            buf,
            start: range.start as u32,
            end: range.end as u32,
        }))
    }

    /// The whole of `vec` (at most 4 GiB: frames, responses and coalesced copies are far
    /// smaller).
    pub fn owned(vec: Vec<u8>) -> TxBuf {
        debug_assert!(u32::try_from(vec.len()).is_ok());
        TxBuf(Bytes::Owned { vec, start: 0 })
    }

    /// `len` bytes waiting in a pipe of the caller's (moved on with splice(2), not by a send:
    /// [`Ring::poll_writable`](crate::Ring::poll_writable) says when the socket takes them).
    pub fn piped(len: u32) -> TxBuf {
        TxBuf(Bytes::Piped { len })
    }

    /// True for bytes waiting in a pipe ([`TxBuf::piped`]).
    pub fn is_piped(&self) -> bool {
        matches!(self.0, Bytes::Piped { .. })
    }

    /// Bytes still to send.
    pub fn len(&self) -> usize {
        match &self.0 {
            Bytes::Pool { start, end, .. } => (end - start) as usize,
            Bytes::Owned { vec, start } => vec.len() - *start as usize,
            Bytes::Piped { len } => *len as usize,
        }
    }

    /// True when nothing is left to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the bytes live in a pool buffer (which counts against the worker's pool).
    pub fn is_pool(&self) -> bool {
        matches!(self.0, Bytes::Pool { .. })
    }

    /// Drops `n` sent bytes from the front (after a short send).
    pub fn advance(&mut self, n: usize) {
        match &mut self.0 {
            Bytes::Pool { start, end, .. } => {
                *start = (*start as usize + n).min(*end as usize) as u32;
            }
            Bytes::Owned { vec, start } => *start = (*start as usize + n).min(vec.len()) as u32,
            Bytes::Piped { len } => *len = len.saturating_sub(u32::try_from(n).unwrap_or(u32::MAX)),
        }
    }

    /// Appends `bytes` to an owned buffer whose spare capacity holds them; false (nothing
    /// appended) for a pool buffer or when they do not fit. Never reallocates, so a queue that
    /// coalesces small copied payloads this way holds no more heap than its buffers' capacities.
    pub fn try_append(&mut self, bytes: &[u8]) -> bool {
        match &mut self.0 {
            Bytes::Owned { vec, .. } if vec.capacity() - vec.len() >= bytes.len() => {
                vec.extend_from_slice(bytes);
                true
            }
            _ => false,
        }
    }

    /// Heap bytes an owned buffer holds (its capacity); zero for a pool buffer.
    pub fn owned_capacity(&self) -> usize {
        match &self.0 {
            Bytes::Owned { vec, .. } => vec.capacity(),
            Bytes::Pool { .. } | Bytes::Piped { .. } => 0,
        }
    }

    /// The pool buffer behind these bytes, to recycle once they are no longer needed.
    pub fn into_pool_buf(self) -> Option<PoolBuf> {
        match self.0 {
            Bytes::Pool { buf, .. } => Some(buf),
            Bytes::Owned { .. } | Bytes::Piped { .. } => None,
        }
    }

    /// Owned bytes still to send (None for a pool buffer, whose bytes need the ring to read).
    pub fn owned_bytes(&self) -> Option<&[u8]> {
        match &self.0 {
            Bytes::Owned { vec, start } => Some(&vec[*start as usize..]),
            Bytes::Pool { .. } | Bytes::Piped { .. } => None,
        }
    }

    /// The pool buffer and slot offset of the next byte, or the owned slice (for the send SQE).
    pub(crate) fn parts(&self) -> Parts<'_> {
        match &self.0 {
            Bytes::Pool { buf, start, end } => {
                Parts::Pool(buf, *start as usize, (end - start) as usize)
            }
            Bytes::Owned { vec, start } => Parts::Owned(&vec[*start as usize..]),
            Bytes::Piped { .. } => Parts::Piped,
        }
    }
}

pub(crate) enum Parts<'a> {
    /// Buffer, offset into its slot, length.
    Pool(&'a PoolBuf, usize, usize),
    Owned(&'a [u8]),
    /// No memory to send from: the bytes are in the caller's pipe.
    Piped,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_advance_and_append() {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(b"hello");
        let mut t = TxBuf::owned(v);
        assert_eq!(t.len(), 5);
        t.advance(2);
        assert_eq!(t.owned_bytes(), Some(&b"llo"[..]));
        assert!(t.try_append(b" world"));
        assert_eq!(t.owned_bytes(), Some(&b"llo world"[..]));
        assert!(!t.try_append(&[0; 6]), "no room left: not appended");
        assert_eq!(t.owned_capacity(), 16, "never reallocated");
        assert_eq!(t.len(), 9);
        t.advance(100);
        assert!(t.is_empty());
        assert!(t.into_pool_buf().is_none());
    }

    #[test]
    fn piped_counts_down() {
        let mut t = TxBuf::piped(100);
        assert!(t.is_piped() && !t.is_pool());
        assert_eq!(t.owned_bytes(), None);
        t.advance(60);
        assert_eq!(t.len(), 40);
        assert!(!t.try_append(b"x"), "nothing is appended to a pipe's count");
        t.advance(1000);
        assert!(t.is_empty());
    }
}
