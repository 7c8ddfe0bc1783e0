//! The client half every workload shares: a thread's [`Dialer`] starts [`Dial`]s (non-blocking
//! TCP connect, for tls/wss the TLS handshake, for ws/wss the upgrade), each of which turns into
//! a [`Stream`] (an open connection that sends pattern messages, reads and checks what comes
//! back, answers pings, and closes). Both sit on a [`Transport`]: the socket, or a rustls
//! session over it ([`tls`] holds the client settings).
//!
//! Both are driven by readiness from one mio `Poll` per thread, registered once for
//! `READABLE | WRITABLE` in edge-triggered mode and never re-registered. Per-message work
//! allocates nothing: the read buffers are the thread's [`Io::scratch`] (and [`Io::tls_in`] for
//! ciphertext), raw TCP writes borrow the pattern table directly, and ws frames are built in a
//! per-connection buffer reused for the connection's lifetime.

mod dial;
mod stream;
pub mod tls;
mod transport;

pub use dial::{Dial, Dialer};
pub use stream::Stream;
pub use transport::Transport;

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
    /// TLS: ciphertext read from a socket before rustls decrypts it, `IO_CHUNK` bytes.
    pub tls_in: Box<[u8]>,
    /// Masking keys and handshake keys.
    pub rng: SmallRng,
}

impl Io {
    pub fn new() -> Io {
        Io {
            scratch: vec![0u8; CARRY_ROOM + IO_CHUNK].into_boxed_slice(),
            tls_in: vec![0u8; IO_CHUNK].into_boxed_slice(),
            rng: SmallRng::from_entropy(),
        }
    }
}

impl Default for Io {
    fn default() -> Self {
        Io::new()
    }
}
