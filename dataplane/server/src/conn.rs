//! One tunnel's I/O side: its two sockets, their send queues, and the teardown of each socket.
//!
//! An [`Endpoint`] is one socket (client or origin). Bytes queued to it go out in FIFO order with
//! at most one send in flight, so frames never interleave. Its `flow` counts the bytes queued
//! to it: past the cap, the *other* endpoint stops being read (backpressure).
//!
//! Teardown of an endpoint, in order: `Open` → `Draining` (queue flushed; no progress for
//! `close_ms` ends it) → shutdown(SHUT_WR) → `ShutSent` (input discarded until EOF or
//! `close_ms`) → `Closing` (every operation on the fd cancelled) → close(2) once no operation is
//! in flight on the fd (I2) → `Closed`.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use ringway_proto::route::RouteTable;
use ringway_proto::tunnel::{Flow, Tunnel};
use ringway_uring::{OpId, TxBuf};

/// Where an endpoint is in its teardown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Not connected yet (origin before the connect completes) or open.
    Open,
    /// Close requested: shutdown(SHUT_WR) once the queue is empty.
    Draining,
    /// shutdown submitted or done; reading until EOF or the deadline.
    ShutSent,
    /// Close(2) is due as soon as no operation is in flight.
    Closing,
    /// The fd is closed (or never existed).
    Closed,
}

/// One socket of a tunnel.
pub(crate) struct Endpoint {
    pub(crate) fd: Option<OwnedFd>,
    /// Operations in flight that name this fd.
    pub(crate) ops: u32,
    /// The armed recv, if any (to cancel it).
    pub(crate) recv: Option<OpId>,
    /// The in-flight connect (origin only).
    pub(crate) connect: Option<OpId>,
    /// Bytes waiting to be sent on this socket, in order.
    pub(crate) out: SendQueue,
    pub(crate) sending: bool,
    /// Bytes queued to this endpoint and not yet sent.
    pub(crate) flow: Flow,
    pub(crate) stage: Stage,
    /// Received EOF (or an error) on this socket.
    pub(crate) eof: bool,
    /// The socket is connected and may be read.
    pub(crate) up: bool,
    /// While `Draining` or `ShutSent`: close at this instant even if the queue has not drained
    /// or the peer sent no EOF.
    pub(crate) linger_until: Option<Instant>,
    /// The recv ended for lack of buffers; re-arm when buffers come back.
    pub(crate) starved: bool,
    /// Every operation on the fd was cancelled (teardown).
    pub(crate) cancelled: bool,
}

impl Endpoint {
    pub(crate) fn new(fd: Option<OwnedFd>, cap: usize) -> Endpoint {
        Endpoint {
            up: fd.is_some(),
            fd,
            ops: 0,
            recv: None,
            connect: None,
            out: SendQueue::default(),
            sending: false,
            flow: Flow::new(cap),
            stage: Stage::Open,
            eof: false,
            linger_until: None,
            starved: false,
            cancelled: false,
        }
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// True when the fd is gone and nothing names it.
    pub(crate) fn is_closed(&self) -> bool {
        self.stage == Stage::Closed && self.ops == 0
    }
}

/// FIFO of buffers waiting to be sent on one socket. The first entry lives inline, so the
/// common case (one buffer queued while no send is in flight, as in request/response traffic)
/// never allocates and an idle tunnel holds no queue memory; only a burst spills into `rest`.
#[derive(Default)]
pub(crate) struct SendQueue {
    first: Option<TxBuf>,
    rest: VecDeque<TxBuf>,
}

impl SendQueue {
    pub(crate) fn push_back(&mut self, tx: TxBuf) {
        if self.first.is_none() {
            self.first = Some(tx);
        } else {
            self.rest.push_back(tx);
        }
    }

    /// Puts a partly sent buffer back at the head.
    pub(crate) fn push_front(&mut self, tx: TxBuf) {
        if let Some(prev) = self.first.replace(tx) {
            self.rest.push_front(prev);
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<TxBuf> {
        let tx = self.first.take()?;
        self.first = self.rest.pop_front();
        Some(tx)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }
}

/// A live connection slot.
pub(crate) struct Conn {
    pub(crate) gen: u32,
    pub(crate) tunnel: Tunnel,
    /// The table the upgrade was routed with (kept so logs name the route it resolved).
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) client: Endpoint,
    pub(crate) origin: Endpoint,
    pub(crate) started: Instant,
}

impl Conn {
    /// True when both sockets are closed and no operation of this slot is in flight.
    pub(crate) fn is_done(&self) -> bool {
        self.tunnel.is_closed() && self.client.is_closed() && self.origin.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(b: u8) -> TxBuf {
        TxBuf::Owned {
            vec: vec![b],
            start: 0,
        }
    }

    fn first_byte(tx: TxBuf) -> u8 {
        match tx {
            TxBuf::Owned { vec, .. } => vec[0],
            TxBuf::Pool { .. } => unreachable!("only owned buffers here"),
        }
    }

    #[test]
    fn send_queue_is_fifo_with_push_front() {
        let mut q = SendQueue::default();
        assert!(q.is_empty());
        q.push_back(owned(1));
        assert_eq!(
            q.rest.capacity(),
            0,
            "one queued buffer needs no allocation"
        );
        q.push_back(owned(2));
        q.push_back(owned(3));
        let head = q.pop_front().unwrap();
        assert_eq!(first_byte(head), 1);
        q.push_front(owned(9));
        let order: Vec<u8> = std::iter::from_fn(|| q.pop_front())
            .map(first_byte)
            .collect();
        assert_eq!(order, vec![9, 2, 3]);
        assert!(q.is_empty());
    }
}
