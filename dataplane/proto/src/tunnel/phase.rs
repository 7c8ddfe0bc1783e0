//! The tunnel's phases, one type each (rustls style): a transition consumes the old phase and
//! builds the next, so state that belongs to one phase cannot leak into another.

use std::time::Instant;

use crate::ws::decoder::Decoder;
use crate::ws::handshake::UpgradeRequest;

/// Reading the HTTP Upgrade request; `head` holds what arrived so far (bounded by the header
/// limit: the parser refuses a longer head with 431).
pub struct AwaitUpgrade {
    pub(super) head: Vec<u8>,
    pub(super) deadline: Instant,
}

impl AwaitUpgrade {
    pub(super) fn new(deadline: Instant) -> AwaitUpgrade {
        AwaitUpgrade {
            head: Vec::new(),
            deadline,
        }
    }

    /// The request parsed: keep it and the bytes pipelined behind it, wait for the origin.
    pub(super) fn upgraded(
        mut self,
        request: UpgradeRequest,
        head_len: usize,
        deadline: Instant,
    ) -> AwaitOrigin {
        self.head.drain(..head_len.min(self.head.len()));
        AwaitOrigin {
            request,
            pipelined: self.head,
            deadline,
            client_eof: false,
        }
    }
}

/// The upgrade is valid and routed; the origin connect is in flight. Nothing has been sent to
/// the client yet; client bytes that arrive are held in `pipelined`.
pub struct AwaitOrigin {
    pub(super) request: UpgradeRequest,
    pub(super) pipelined: Vec<u8>,
    pub(super) deadline: Instant,
    /// The client's stream ended after pipelining bytes: the tunnel still comes up (101, the
    /// bytes forwarded, their Close answered) and then handles the EOF.
    pub(super) client_eof: bool,
}

/// The 101 went out; frames flow both ways.
pub struct Relaying {
    pub(super) decoder: Decoder,
}

impl Relaying {
    pub(super) fn new(decoder: Decoder) -> Relaying {
        Relaying { decoder }
    }

    pub(super) fn into_decoder(self) -> Decoder {
        self.decoder
    }
}

/// We sent a Close; waiting for the client's Close (or the deadline). Client data is dropped.
pub struct Closing {
    pub(super) decoder: Decoder,
    pub(super) deadline: Instant,
}

impl Closing {
    pub(super) fn new(decoder: Decoder, deadline: Instant) -> Closing {
        Closing { decoder, deadline }
    }
}
