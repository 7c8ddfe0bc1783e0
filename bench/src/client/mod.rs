//! The client half every workload shares: [`Dial`] (non-blocking TCP connect, then for ws the
//! upgrade) turns into a [`Stream`] (an open connection that sends pattern messages, reads and
//! checks what comes back, answers pings, and closes).
//!
//! Both are driven by readiness from one mio `Poll` per thread, registered once for
//! `READABLE | WRITABLE` in edge-triggered mode and never re-registered. Per-message work
//! allocates nothing: the read buffer is the thread's [`Io::scratch`], raw TCP writes borrow the
//! pattern table directly, and ws frames are built in a per-connection buffer reused for the
//! connection's lifetime.

mod dial;
mod stream;

pub use dial::Dial;
pub use stream::Stream;

use rand::rngs::SmallRng;
use rand::SeedableRng;

/// Bytes asked of one `read`, and most bytes handed to one `write`.
pub const IO_CHUNK: usize = 64 * 1024;

/// Room in front of the scratch buffer for a partial ws header or control frame carried over
/// from the previous read (at most 14 + 125 bytes).
pub const CARRY_ROOM: usize = 256;

/// Per-thread I/O state shared by every connection of the thread.
pub struct Io {
    /// Read buffer: `CARRY_ROOM + IO_CHUNK` bytes.
    pub scratch: Box<[u8]>,
    /// Masking keys and handshake keys.
    pub rng: SmallRng,
}

impl Io {
    pub fn new() -> Io {
        Io {
            scratch: vec![0u8; CARRY_ROOM + IO_CHUNK].into_boxed_slice(),
            rng: SmallRng::from_entropy(),
        }
    }
}

impl Default for Io {
    fn default() -> Self {
        Io::new()
    }
}
