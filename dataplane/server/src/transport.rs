//! What sits between the client socket and the session: today plain TCP, where received bytes
//! are handed to the session where they landed and the session's output is sent as it is. TLS
//! (rustls) will be a second variant: `on_received` decrypts the records in the slot (in place,
//! returning the plaintext range) and `on_send` encrypts, so neither the session nor the socket
//! machine changes.
//!
//! Invariant: a transport never reorders bytes; what it returns from `on_received` is the next
//! plaintext the session must see, and `on_send` keeps the order of what it is given.

use std::ops::Range;

use ringway_uring::TxBuf;

pub enum Transport {
    /// Bytes pass through unchanged.
    Plain,
}

impl Transport {
    /// Bytes received at `slot[range]`; returns the range of plaintext for the session.
    pub fn on_received(&mut self, _slot: &mut [u8], range: Range<usize>) -> Range<usize> {
        match self {
            Transport::Plain => range,
        }
    }

    /// Bytes the session wants sent to the client; returns what goes on the wire.
    pub fn on_send(&mut self, tx: TxBuf) -> TxBuf {
        match self {
            Transport::Plain => tx,
        }
    }

    /// True when bytes may be copied to the wire as they are (small payloads coalesced into
    /// one send); a record-based transport frames them itself.
    pub fn passes_bytes_through(&self) -> bool {
        matches!(self, Transport::Plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_passes_bytes_through() {
        let mut t = Transport::Plain;
        let mut slot = *b"..hello";
        assert_eq!(t.on_received(&mut slot, 2..7), 2..7);
        let tx = t.on_send(TxBuf::owned(b"abc".to_vec()));
        assert_eq!(tx.owned_bytes(), Some(&b"abc"[..]));
        assert!(t.passes_bytes_through());
    }
}
