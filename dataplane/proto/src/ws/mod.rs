//! RFC 6455 (The WebSocket Protocol): the server side, and the client side `ringway access`
//! uses.
//!
//! - [`client`]: the client's upgrade request, the checks of the server's 101, masked frames.
//! - [`handshake`]: the HTTP/1.1 Upgrade request (RFC 6455 §4.2.1) and the 101 / refusal responses.
//! - [`frame`]: the frame header wire format (RFC 6455 §5.2).
//! - [`mask`]: in-place (un)masking with a rolling key offset (RFC 6455 §5.3).
//! - [`decoder`]: incremental client-frame decoder over caller-owned bytes.
//! - [`encoder`]: server frame headers written into headroom in front of a payload.

pub mod client;
pub mod decoder;
pub mod encoder;
pub mod frame;
pub mod handshake;
pub mod mask;

pub use decoder::{Decoded, Decoder, DecoderLimits, Event};
pub use frame::{CloseCode, FrameHeader, Opcode};
pub use handshake::{HandshakeError, UpgradeRequest};
