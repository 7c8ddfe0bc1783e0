//! The client side of RFC 6455, as much of it as a load generator needs.
//!
//! Header parse/emit, masking and the accept key come from `ringway_proto`; this module adds what
//! only a client does: build the Upgrade request and check the 101 ([`handshake`]), read server
//! frames that may split or merge the stream anywhere ([`reader`]), and write masked frames
//! ([`writer`]).

pub mod handshake;
pub mod reader;
pub mod writer;

pub use reader::{FrameReader, Item, ReadError};
