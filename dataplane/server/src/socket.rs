//! One socket of a tunnel (client or origin) as a sans-IO machine: it owns the descriptor, the
//! queue of bytes to send, the backpressure and stall accounting and the teardown, and it says
//! which ring operations to submit next ([`Socket::poll_op`]); the worker only submits them and
//! feeds completions back. No ring, no clock: unit-tested with plain descriptors.
//!
//! Call order: feed events (`queue*`, `on_*`, `request_close`, `abort`, `handle_timeout`), then
//! drain [`Socket::poll_op`] until `None`, submitting each operation (and reporting a submitted
//! recv's id with [`Socket::recv_submitted`]), then re-read [`Socket::next_deadline`].
//!
//! Invariants:
//! - at most one send is in flight and queued buffers go out in order, so frames never
//!   interleave; a pending pong goes out at the next frame boundary, and a newer one replaces it
//!   (RFC 6455 §5.5.3);
//! - `ops` counts operations in flight that name the descriptor; `Close` is returned only when
//!   it is zero (I2), after every operation was cancelled;
//! - teardown goes `Open` → `Draining` (queue flushed; no progress for `close_ms` ends it) →
//!   shutdown(SHUT_WR) → `ShutSent` (input discarded until EOF or `close_ms`, so close() sends no
//!   RST that could destroy bytes the peer has not read) → `Closing` (operations cancelled,
//!   queue discarded) → close(2) → `Closed`;
//! - a socket with bytes to send that makes no progress for `send_stall` reports a stall from
//!   [`Socket::handle_timeout`], so a peer that never reads cannot hold memory indefinitely.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use ringway_proto::tunnel::Flow;
use ringway_uring::{OpId, TxBuf};

/// Capacity of the owned buffer that small copied payloads are coalesced into (one send).
pub const COALESCE_BYTES: usize = 16 * 1024;

/// Where a socket is in its teardown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Not connected yet (origin before the connect completes) or open.
    Open,
    /// Close requested: shutdown(SHUT_WR) once the queue is empty.
    Draining,
    /// shutdown submitted; reading until EOF or the deadline.
    ShutSent,
    /// close(2) is due as soon as no operation is in flight.
    Closing,
    /// The descriptor is closed (or never existed).
    Closed,
}

/// An operation the worker must submit for this socket.
/// `I` is the ring's operation id ([`OpId`]; tests use plain numbers).
#[derive(Debug)]
pub enum SocketOp<I = OpId> {
    /// Arm a (multishot) recv; report its id with [`Socket::recv_submitted`].
    Recv,
    /// Cancel the armed recv (backpressure).
    CancelRecv(I),
    /// Send the buffer. `true`: nothing follows it but the FIN, so it may be sent with MSG_MORE
    /// and leave in one segment with the FIN ([`SocketOp::Shutdown`] follows its completion).
    Send(TxBuf, bool),
    /// shutdown(SHUT_WR), made at once by the worker (a direct syscall: never in flight).
    Shutdown,
    /// Cancel every operation on the descriptor (teardown).
    CancelAll,
    /// close(2) the descriptor through the ring.
    Close(OwnedFd),
    /// Bytes that will never be sent (teardown): give their pool buffer back.
    Discard(TxBuf),
}

/// Settings shared by every socket of a worker.
#[derive(Clone, Copy, Debug)]
pub struct SocketLimits {
    /// Unsent bytes past which the source is paused (resumes at half).
    pub backpressure: usize,
    /// How long draining or half-closed teardown may wait for the peer.
    pub linger: Duration,
    /// How long queued bytes may make no progress before the socket counts as stalled.
    pub send_stall: Duration,
}

/// What a timeout did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// Teardown waited long enough: the socket is now closing.
    Linger,
    /// Open, with bytes queued and no progress for `send_stall`: the socket was aborted.
    Stalled,
}

/// What a send completion meant.
#[derive(Debug, Default)]
pub struct Sent {
    /// The send failed (negated errno; `-EPIPE` for a zero-byte send) while open.
    pub failed: Option<i32>,
    /// A buffer that is done with, to recycle.
    pub done: Option<TxBuf>,
    /// Bytes went out: how long the oldest of them waited since it was queued (the relay
    /// latency of a received frame, when the queue was fed by the other socket's receive).
    pub waited: Option<std::time::Duration>,
}

/// The recv side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recv<I> {
    Idle,
    /// Returned by `poll_op`, id not reported yet.
    Submitting,
    Armed(I),
    /// Cancel submitted; the final completion has not arrived.
    Cancelling,
}

/// One socket of a tunnel; `I` names a submitted operation ([`OpId`] in the worker).
pub struct Socket<I = OpId> {
    fd: Option<OwnedFd>,
    /// `close_ms` and `send_stall_ms` (kept narrow: two sockets per idle tunnel).
    linger_ms: u32,
    stall_ms: u32,
    stage: Stage,
    /// Connected (and so may be read and written).
    up: bool,
    /// EOF or an error was received.
    eof: bool,
    ops: u32,
    recv: Recv<I>,
    /// The recv ended for lack of pool buffers; re-arm when some come back.
    starved: bool,
    /// The armed recv is to end and be armed again (its kind changed: recv or splice).
    restart: bool,
    /// Aborted with bytes still unsent: closed with a reset (SO_LINGER 0), so the peer sees its
    /// stream cut, not a clean end that lacks bytes.
    reset: bool,
    cancelled: bool,
    sending: bool,
    /// The peer's transport frames bytes into records (TLS): a pong cannot be sent as it is
    /// nor replaced once sealed, so the owner seals it ([`Socket::take_held_pong`]).
    records: bool,
    /// Records: bytes still to send up to the end of the last sealed pong (0: none unsent).
    pong_left: u32,
    /// Pool buffers held by the queue and the send in flight.
    slots: u32,
    out: SendQueue,
    pong: Option<Box<[u8]>>,
    flow: Flow,
    /// Open: when the queued bytes last made progress (or were first queued); the send stall
    /// counts from here. Draining/ShutSent: when the last progress or the half-close happened;
    /// the linger counts from here.
    since: Instant,
    /// Half-close (FIN) requested while open: after the queue, shutdown(SHUT_WR), reads go on.
    fin: Fin,
    /// When the oldest unsent byte was queued (`None`: nothing unsent).
    queued_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fin {
    None,
    Wanted,
    Sent,
}

impl<I: Copy + Eq> Socket<I> {
    /// A socket; `fd` is `None` for an origin not yet connected.
    pub fn new(fd: Option<OwnedFd>, limits: SocketLimits, now: Instant) -> Socket<I> {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        Socket {
            up: fd.is_some(),
            fd,
            linger_ms: ms(limits.linger),
            stall_ms: ms(limits.send_stall),
            stage: Stage::Open,
            eof: false,
            ops: 0,
            recv: Recv::Idle,
            starved: false,
            restart: false,
            reset: false,
            cancelled: false,
            sending: false,
            records: false,
            pong_left: 0,
            slots: 0,
            out: SendQueue::default(),
            pong: None,
            flow: Flow::new(limits.backpressure),
            since: now,
            fin: Fin::None,
            queued_at: None,
        }
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Open and taking bytes to send.
    pub fn is_open(&self) -> bool {
        self.stage == Stage::Open
    }

    /// The descriptor is gone and no operation names it.
    pub fn is_closed(&self) -> bool {
        self.stage == Stage::Closed && self.ops == 0
    }

    /// Nothing left to send and past the point of sending: exiting loses no byte.
    pub fn is_settled(&self) -> bool {
        self.out.is_empty()
            && self.pong.is_none()
            && !self.sending
            && matches!(self.stage, Stage::ShutSent | Stage::Closing | Stage::Closed)
    }

    /// The settings it was made with.
    pub fn limits(&self) -> SocketLimits {
        SocketLimits {
            backpressure: self.flow.cap(),
            linger: self.linger(),
            send_stall: self.stall(),
        }
    }

    /// Over its backpressure cap: its source must not be read.
    pub fn is_paused(&self) -> bool {
        self.flow.is_paused()
    }

    /// A pong waits behind a send in flight. The client's reads pause meanwhile, so a client
    /// that floods pings and never reads costs no more work than one that stopped sending.
    pub fn has_pending_pong(&self) -> bool {
        self.pong.is_some()
    }

    /// Pool buffers this socket holds (queued or being sent).
    pub fn pool_slots(&self) -> u32 {
        self.slots
    }

    /// Bytes queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.flow.queued()
    }

    /// Installs the descriptor of a socket being connected (origin).
    pub fn attach(&mut self, fd: OwnedFd) {
        debug_assert!(self.fd.is_none());
        self.fd = Some(fd);
    }

    /// A connected descriptor for a socket created without one (a warm tunnel's local side):
    /// ready to read and write at once.
    pub fn attach_ready(&mut self, fd: OwnedFd) {
        debug_assert!(self.fd.is_none());
        self.fd = Some(fd);
        self.up = true;
    }

    /// The descriptor, if attached.
    pub fn raw_opt(&self) -> Option<std::os::fd::RawFd> {
        self.fd.as_ref().map(std::os::fd::AsRawFd::as_raw_fd)
    }

    /// Counts an operation the worker submitted outside `poll_op` (the origin's connect).
    pub fn op_submitted(&mut self) {
        self.ops += 1;
    }

    /// The connect completed: the socket may now be read and written.
    pub fn on_connected(&mut self) {
        self.ops -= 1;
        self.up = true;
    }

    /// An operation counted with [`Socket::op_submitted`] completed (a failed connect).
    pub fn op_done(&mut self) {
        self.ops -= 1;
    }

    /// The owner cancelled the one operation it submitted on this socket (its connect) by id:
    /// closing it needs no other cancel.
    pub fn connect_cancelled(&mut self) {
        self.cancelled = true;
    }

    /// Never connected and nothing in flight: the descriptor may be taken away.
    pub fn is_idle(&self) -> bool {
        self.ops == 0 && !self.up
    }

    /// The descriptor, giving up the socket.
    pub fn into_fd(self) -> Option<OwnedFd> {
        self.fd
    }

    /// Queues `tx`; hands it back when the socket no longer sends (closing) or `tx` is empty
    /// (a zero-length send would read as the peer's end). Whether its source must stop being
    /// read is [`Socket::is_paused`], read by the worker when it submits.
    pub fn queue(&mut self, tx: TxBuf, now: Instant) -> Result<(), TxBuf> {
        if !self.takes_bytes() || tx.is_empty() {
            return Err(tx);
        }
        self.note_queued(now);
        if tx.is_pool() {
            self.slots += 1;
        }
        self.flow.queue(tx.len());
        self.out.push_back(tx);
        Ok(())
    }

    /// Queues a copy of `bytes`, appended to the last queued owned buffer when it has room (so
    /// many small payloads go out in one send). Dropped when closing.
    pub fn queue_copy(&mut self, bytes: &[u8], now: Instant) {
        if !self.takes_bytes() || bytes.is_empty() {
            return;
        }
        self.note_queued(now);
        self.flow.queue(bytes.len());
        if !self.out.append_to_last(bytes) {
            // Capacity never grows after this: a chunk is at most half empty (or one small
            // payload in 16 KiB), which is what the memory bound in ARCHITECTURE.md counts.
            let mut v = Vec::with_capacity(bytes.len().max(COALESCE_BYTES));
            v.extend_from_slice(bytes);
            self.out.push_back(TxBuf::owned(v));
        }
    }

    /// This socket's transport seals bytes into records (TLS): its pong is never sent as it is
    /// but taken by the owner to seal ([`Socket::take_held_pong`]).
    pub fn set_records(&mut self) {
        self.records = true;
    }

    /// Records: queues a sealed pong and remembers where it ends.
    pub fn queue_sealed_pong(&mut self, sealed: Vec<u8>, now: Instant) -> Result<(), TxBuf> {
        self.queue_sealed(sealed, now)?;
        self.pong_left = u32::try_from(self.flow.queued()).unwrap_or(u32::MAX);
        Ok(())
    }

    /// Queues sealed records (TLS). Behind a backlog, small ones are copied into the queue's
    /// last owned buffer (16 KiB chunks), so many small records cost their bytes, as copies do
    /// (the memory bound in ARCHITECTURE.md); with nothing queued the buffer goes as it is.
    pub fn queue_sealed(&mut self, sealed: Vec<u8>, now: Instant) -> Result<(), TxBuf> {
        if self.out.is_empty() || sealed.len() > COALESCE_BYTES / 2 {
            return self.queue(TxBuf::owned(sealed), now);
        }
        if !self.takes_bytes() {
            return Err(TxBuf::owned(sealed));
        }
        self.queue_copy(&sealed, now);
        Ok(())
    }

    /// Records: the pending pong ([`Socket::queue_pong`]) for the owner to seal and queue
    /// ([`Socket::queue_sealed_pong`]), unless a sealed pong is still unsent: then it stays held,
    /// a newer one replacing it (RFC 6455 §5.5.3), and the client's reads pause
    /// ([`Socket::has_pending_pong`]). A client that floods pings and never reads so holds one
    /// sealed pong and one held, as over plain TCP it holds one.
    pub fn take_held_pong(&mut self) -> Option<Vec<u8>> {
        if !self.records || self.pong_left > 0 || !self.takes_bytes() {
            return None;
        }
        let p = self.pong.take()?;
        self.flow.sent(p.len());
        Some(p.into_vec())
    }

    /// Queues a pong, replacing one not yet sent (RFC 6455 §5.5.3: only the latest ping needs
    /// an answer).
    pub fn queue_pong(&mut self, frame: Vec<u8>, now: Instant) {
        if !self.takes_bytes() {
            return;
        }
        self.note_queued(now);
        if let Some(old) = self.pong.replace(frame.into_boxed_slice()) {
            self.flow.sent(old.len());
        }
        let n = self.pong.as_ref().map_or(0, |p| p.len());
        self.flow.queue(n);
    }

    /// Open and not half-closed: bytes may still be queued.
    pub fn takes_bytes(&self) -> bool {
        self.stage == Stage::Open && self.fin == Fin::None
    }

    /// After the bytes queued so far, half-close (shutdown SHUT_WR) and queue nothing more;
    /// reading goes on until EOF or [`Socket::request_close`].
    pub fn shut_write(&mut self) {
        if self.stage == Stage::Open && self.fin == Fin::None {
            self.fin = Fin::Wanted;
        }
    }

    /// Takes back the last queued buffer if it is a pool buffer of at most `max` bytes (so a
    /// small frame queued behind it can go out in the same send, copied together).
    pub fn pop_back_small_pool(&mut self, max: usize) -> Option<TxBuf> {
        let tx = self.out.pop_back_if(|t| t.is_pool() && t.len() <= max)?;
        self.flow.sent(tx.len());
        self.slots -= 1;
        Some(tx)
    }

    /// The descriptor, for a syscall made outside the ring.
    pub fn fd(&self) -> Option<&OwnedFd> {
        self.fd.as_ref()
    }

    fn note_queued(&mut self, now: Instant) {
        if self.out.is_empty() && self.pong.is_none() && !self.sending {
            self.since = now;
        }
        if self.queued_at.is_none() {
            self.queued_at = Some(now);
        }
    }

    /// A recv's completion arrived; `last` when no more will follow for it.
    pub fn on_recv_completion(&mut self, last: bool) {
        if last {
            self.ops -= 1;
            self.recv = Recv::Idle;
        }
    }

    /// Ends the armed recv so that the next one is armed afresh (the worker reads this socket
    /// another way from now on: splicing instead of receiving, say).
    pub fn restart_recv(&mut self) {
        if matches!(self.recv, Recv::Armed(_) | Recv::Submitting) {
            self.restart = true;
        }
    }

    /// The recv ended for lack of pool buffers.
    pub fn on_starved(&mut self) {
        self.starved = true;
    }

    /// Wants to read but waits for pool buffers: the worker must pump it again once the pool
    /// has some.
    pub fn waits_for_buffers(&self) -> bool {
        self.starved && self.recv == Recv::Idle && self.fd.is_some()
    }

    /// EOF, or a receive error, on this socket. Returns true when the session must hear of it
    /// (the socket was open); during teardown the socket simply moves on to closing.
    pub fn on_eof(&mut self) -> bool {
        self.eof = true;
        match self.stage {
            Stage::Open => true,
            Stage::ShutSent => {
                self.stage = Stage::Closing;
                false
            }
            Stage::Draining => false,
            Stage::Closing | Stage::Closed => false,
        }
    }

    /// A receive error: like EOF, but a socket being torn down closes at once.
    pub fn on_recv_error(&mut self) -> bool {
        let open = self.on_eof();
        if !open && self.stage != Stage::Closed {
            self.stage = Stage::Closing;
        }
        open
    }

    /// A send completed with `result` (bytes sent, or negated errno).
    pub fn on_send_completion(&mut self, tx: TxBuf, result: i32, now: Instant) -> Sent {
        self.ops -= 1;
        self.sending = false;
        let mut tx = tx;
        let mut out = Sent::default();
        if result > 0 {
            let n = result as usize;
            tx.advance(n);
            // Progress: the stall (open) or the linger (draining) counts from here, so a slow
            // peer that still reads keeps its bytes.
            self.since = now;
            self.flow.sent(n);
            self.pong_left = self
                .pong_left
                .saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
            out.waited = self.queued_at.map(|t| now.saturating_duration_since(t));
            if tx.is_empty() {
                if tx.is_pool() {
                    self.slots -= 1;
                }
                out.done = Some(tx);
                if self.out.is_empty() {
                    self.queued_at = None;
                }
            } else {
                self.out.push_front(tx);
            }
            return out;
        }
        self.queued_at = None;
        if tx.is_pool() {
            self.slots -= 1;
        }
        self.flow.sent(tx.len());
        out.done = Some(tx);
        let err = if result == 0 { -libc::EPIPE } else { result };
        if self.stage == Stage::Open {
            self.eof = true;
            out.failed = Some(err);
        }
        if self.stage != Stage::Closed {
            self.stage = Stage::Closing;
        }
        out
    }

    /// The close(2) completed.
    pub fn on_close_completion(&mut self) {
        self.ops -= 1;
    }

    /// Starts an orderly close: flush the queue, then shutdown(SHUT_WR).
    pub fn request_close(&mut self, now: Instant) {
        match self.stage {
            Stage::Open if self.up => {
                self.stage = Stage::Draining;
                self.since = now;
            }
            Stage::Open => self.stage = Stage::Closing,
            _ => {}
        }
    }

    /// Closes at once: queued bytes are discarded, operations cancelled; if any were left, the
    /// close is a reset ([`Socket::resets_on_close`]).
    pub fn abort(&mut self) {
        if self.stage != Stage::Closed {
            self.reset |= self.has_unsent();
            self.stage = Stage::Closing;
        }
    }

    /// The close must be a reset: the peer would otherwise take a stream that lost bytes for a
    /// complete one.
    pub fn resets_on_close(&self) -> bool {
        self.reset
    }

    /// The instant [`Socket::handle_timeout`] must next be called, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.stage {
            Stage::Open if self.has_unsent() => Some(self.since + self.stall()),
            Stage::Draining | Stage::ShutSent => Some(self.since + self.linger()),
            _ => None,
        }
    }

    fn stall(&self) -> Duration {
        Duration::from_millis(u64::from(self.stall_ms))
    }

    fn linger(&self) -> Duration {
        Duration::from_millis(u64::from(self.linger_ms))
    }

    fn has_unsent(&self) -> bool {
        self.sending || !self.out.is_empty() || self.pong.is_some()
    }

    /// A deadline may have passed.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Expired> {
        match self.stage {
            Stage::Open if self.has_unsent() && self.since + self.stall() <= now => {
                self.abort();
                Some(Expired::Stalled)
            }
            Stage::Draining | Stage::ShutSent if self.since + self.linger() <= now => {
                self.stage = Stage::Closing;
                Some(Expired::Linger)
            }
            _ => None,
        }
    }

    /// The recv just returned by `poll_op` was submitted with this id.
    pub fn recv_submitted(&mut self, id: I) {
        if self.recv == Recv::Submitting {
            self.recv = Recv::Armed(id);
        }
    }

    /// The next operation to submit. `read_paused` is true when this socket must not be read
    /// now (where its bytes go is over the cap, or the session holds the client back);
    /// `buffers_ok` is false while the pool is too low to arm a recv (the socket then waits,
    /// see [`Socket::waits_for_buffers`]).
    pub fn poll_op(
        &mut self,
        now: Instant,
        read_paused: bool,
        buffers_ok: bool,
    ) -> Option<SocketOp<I>> {
        if self.fd.is_none() {
            if matches!(self.stage, Stage::Closing | Stage::Draining) {
                self.stage = Stage::Closed;
            }
            return self.discard();
        }
        if self.stage == Stage::Closing {
            if let Some(op) = self.discard() {
                return Some(op);
            }
            if self.ops > 0 {
                if !self.cancelled {
                    // Ends the recv and any send stuck on a peer that stopped reading; their
                    // final completions still count in `ops`, and close waits for them (I2).
                    // Only a recv in flight: cancelled by its id, a hash lookup in the kernel (a
                    // cancel by descriptor scans every poll of the ring, so thousands of sockets
                    // closing at once would cost a square of that).
                    self.cancelled = true;
                    match (self.recv, self.sending) {
                        (Recv::Armed(id), false) => {
                            self.recv = Recv::Cancelling;
                            return Some(SocketOp::CancelRecv(id));
                        }
                        (Recv::Cancelling, false) => return None,
                        _ => {
                            self.recv = Recv::Cancelling;
                            return Some(SocketOp::CancelAll);
                        }
                    }
                }
                return None;
            }
            let fd = self.fd.take()?;
            self.ops += 1; // the close itself
            self.stage = Stage::Closed;
            return Some(SocketOp::Close(fd));
        }
        if self.stage == Stage::Closed {
            return None;
        }
        if self.records && !self.takes_bytes() {
            // Nothing is sealed after the Close or close_notify: a held pong is never sent.
            if let Some(p) = self.pong.take() {
                self.flow.sent(p.len());
            }
        }
        if !self.sending && self.up {
            let pong = if self.records { None } else { self.pong.take() };
            let next = match pong {
                Some(p) => Some(TxBuf::owned(p.into_vec())),
                None => self.out.pop_front(),
            };
            if let Some(tx) = next {
                self.sending = true;
                self.ops += 1;
                let fin_next = self.fin != Fin::Sent
                    && (self.fin == Fin::Wanted || self.stage == Stage::Draining)
                    && self.out.is_empty()
                    && self.pong.is_none();
                return Some(SocketOp::Send(tx, fin_next));
            }
        }
        if self.stage == Stage::Open && self.fin == Fin::Wanted && self.up && !self.has_unsent() {
            self.fin = Fin::Sent;
            return Some(SocketOp::Shutdown);
        }
        if self.stage == Stage::Draining && !self.has_unsent() {
            if self.eof {
                self.stage = Stage::Closing;
                return self.poll_op(now, read_paused, buffers_ok);
            }
            if self.fin == Fin::Sent {
                // Already half-closed: only the wait for the peer's EOF is left.
                self.stage = Stage::ShutSent;
                self.since = now;
                return self.poll_op(now, read_paused, buffers_ok);
            }
            self.fin = Fin::Sent;
            self.stage = Stage::ShutSent;
            self.since = now;
            return Some(SocketOp::Shutdown);
        }
        // Reading: while open (unless paused), and while tearing down to discard until EOF.
        let discarding = self.stage != Stage::Open;
        let want = self.up && !self.eof && (discarding || !read_paused);
        match self.recv {
            // While the pool is low nobody re-arms: every socket that wants to read waits in
            // the worker's line (oldest first), so a flood of busy sockets cannot take every
            // buffer the moment it comes back and starve a quiet one (a new client's upgrade).
            Recv::Idle if want && !buffers_ok => {
                self.starved = true;
                None
            }
            Recv::Idle if want => {
                self.starved = false;
                self.restart = false;
                self.recv = Recv::Submitting;
                self.ops += 1;
                Some(SocketOp::Recv)
            }
            Recv::Armed(id) if !want || self.restart => {
                self.restart = false;
                self.recv = Recv::Cancelling;
                Some(SocketOp::CancelRecv(id))
            }
            _ => None,
        }
    }

    fn discard(&mut self) -> Option<SocketOp<I>> {
        if let Some(p) = self.pong.take() {
            self.flow.sent(p.len());
        }
        let tx = self.out.pop_front()?;
        self.flow.sent(tx.len());
        if tx.is_pool() {
            self.slots -= 1;
        }
        Some(SocketOp::Discard(tx))
    }
}

/// FIFO of buffers waiting to be sent on one socket. The first entry lives inline, so the
/// common case (one buffer queued while no send is in flight, as in request/response traffic)
/// never allocates and an idle tunnel holds no queue memory; only a burst spills into `rest`.
#[derive(Default)]
pub struct SendQueue {
    first: Option<TxBuf>,
    /// Boxed so a queue without a burst costs one pointer (an empty VecDeque is 32 bytes, in
    /// every socket of every idle tunnel).
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<TxBuf>>>,
}

impl SendQueue {
    pub fn push_back(&mut self, tx: TxBuf) {
        if self.first.is_none() {
            self.first = Some(tx);
        } else {
            self.rest.get_or_insert_default().push_back(tx);
        }
    }

    /// Puts a partly sent buffer back at the head.
    pub fn push_front(&mut self, tx: TxBuf) {
        if let Some(prev) = self.first.replace(tx) {
            self.rest.get_or_insert_default().push_front(prev);
        }
    }

    fn rest_is_empty(&self) -> bool {
        self.rest.as_ref().is_none_or(|r| r.is_empty())
    }

    fn pop_back_if(&mut self, pred: impl Fn(&TxBuf) -> bool) -> Option<TxBuf> {
        if let Some(rest) = self.rest.as_mut().filter(|r| !r.is_empty()) {
            return if rest.back().is_some_and(&pred) {
                rest.pop_back()
            } else {
                None
            };
        }
        if self.first.as_ref().is_some_and(&pred) {
            return self.first.take();
        }
        None
    }

    pub fn pop_front(&mut self) -> Option<TxBuf> {
        let tx = self.first.take()?;
        self.first = self.rest.as_mut().and_then(|r| r.pop_front());
        if self.rest_is_empty() {
            self.rest = None; // a burst is over: give its memory back
        }
        Some(tx)
    }

    /// Appends `bytes` to the last queued buffer if it is owned and has room.
    fn append_to_last(&mut self, bytes: &[u8]) -> bool {
        let last = match self.rest.as_mut().and_then(|r| r.back_mut()) {
            Some(t) => t,
            None => match self.first.as_mut() {
                Some(t) => t,
                None => return false,
            },
        };
        last.try_append(bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }
}

#[cfg(test)]
mod tests;
