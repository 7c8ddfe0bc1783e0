//! The ring: one io_uring per worker, its in-flight table and its provided buffer pool.
//!
//! Every operation gets an in-flight entry that owns whatever the kernel may read or write
//! (the send buffer, the connect address, the timer's timespec) until the operation's last
//! completion is reaped, cancelled operations included (I1). `user_data` is the entry's index in
//! the low 32 bits and the entry's generation in the high 32 bits; a generation is bumped every
//! time an index is freed, so an [`OpId`] kept past its operation's last completion names nothing
//! (a cancel with it matches no request) rather than the index's next tenant. The caller's own
//! `tag` comes back in the [`Completion`]. [`Ring::push`] is the only place that writes to the
//! submission queue.
//!
//! Dropping a ring cancels every operation in flight and reaps their completions for a bounded
//! time; only if all of them arrive are the in-flight entries and the buffer pool freed. Anything
//! the kernel may still touch after that is leaked, never freed ([`Ring::shut_down`] reports which).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

use crate::bufpool::{BufPool, PoolBuf};
use crate::sockaddr::SockAddr;
use crate::txbuf::{Parts, TxBuf};

/// Buffer group id of the worker's provided buffer ring.
const BGID: u16 = 0;

/// What the kernel of this machine supports, probed once per ring.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    /// IORING_SETUP_SINGLE_ISSUER and IORING_SETUP_DEFER_TASKRUN were accepted.
    pub defer_taskrun: bool,
    /// Multishot accept (IORING_ACCEPT_MULTISHOT); otherwise one-shot accept re-armed per completion.
    pub accept_multi: bool,
    /// Multishot recv (IORING_RECV_MULTISHOT); otherwise one-shot recv with buffer select.
    pub recv_multi: bool,
    /// Multishot timeouts (IORING_TIMEOUT_MULTISHOT); otherwise the tick is re-armed.
    pub timeout_multi: bool,
    /// A multishot recv takes a byte cap (`sqe->optlen`) after which it ends (Linux 6.17+),
    /// so one busy socket cannot take a whole loop turn's worth of the pool and CPU.
    pub recv_cap: bool,
}

/// One reaped completion.
#[derive(Debug)]
pub struct Completion {
    /// The caller's tag given when the operation was pushed.
    pub tag: u64,
    /// The kernel's result: >= 0 success value, < 0 negated errno.
    pub result: i32,
    /// More completions will follow for this (multishot) operation.
    pub more: bool,
    /// The buffer a recv filled (buffer select); hand it back with [`Ring::recycle`].
    pub buf: Option<PoolBuf>,
    /// The buffer a send used, returned to the caller.
    pub tx: Option<TxBuf>,
    /// The connection an accept completion created, owned from here on.
    pub fd: Option<OwnedFd>,
}

/// Names one submitted operation, for [`Ring::cancel`]: its entry index and that entry's
/// generation, so an id kept after the operation ended never names another operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpId(u64);

/// How long dropping a ring waits for cancelled operations to complete.
const DROP_WAIT: Duration = Duration::from_millis(500);

/// What [`Ring::shut_down`] did with the operations still in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Teardown {
    /// Operations in flight when the ring was closed (cancelled, then reaped or leaked).
    pub in_flight: usize,
    /// Operations whose completion did not arrive in time: their in-flight entries and the
    /// buffer pool were leaked (left allocated until process exit) instead of freed.
    pub leaked: usize,
}

/// What an in-flight operation owns until its last completion.
enum Owned {
    None,
    /// An accept: a successful completion's result is a new fd.
    Accept,
    Tx(TxBuf),
    Addr(Box<SockAddr>),
    /// Read by the kernel through the SQE's pointer, never by us.
    Time(#[allow(dead_code)] Box<types::Timespec>),
    /// A descriptor handed to another ring ([`Ring::send_fd`]): given back on failure, gone (the
    /// other ring owns it) on success, leaked if the ring closes first.
    Handoff(RawFd),
}

struct InFlight {
    tag: u64,
    owned: Owned,
}

/// One index of the in-flight table: its current generation and, while in use, its operation.
struct Entry {
    gen: u32,
    op: Option<InFlight>,
}

fn user_data(index: u32, gen: u32) -> u64 {
    ((gen as u64) << 32) | index as u64
}

/// Set in the user_data of a completion another ring posted here ([`Ring::send_fd`]); never in
/// this ring's own (generations are 31 bits).
const MESSAGE: u64 = 1 << 63;
const GEN_MASK: u32 = 0x7FFF_FFFF;

/// A gap between two polls of [`Ring::wait_spinning`] longer than this means the thread was
/// descheduled while polling (one poll takes well under a microsecond; a timer interrupt a few).
pub const PREEMPTED_GAP: Duration = Duration::from_micros(20);

/// How [`Ring::wait_spinning`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// A completion arrived while polling.
    Polled,
    /// No spin was asked for (or the ring cannot spin): the thread slept.
    Slept,
    /// The whole spin passed with nothing arriving: the poll was wasted; the thread slept.
    Missed,
    /// The thread was descheduled while polling, so the core is wanted by another task; it
    /// then slept.
    Preempted,
}

/// A worker's io_uring.
pub struct Ring {
    ring: IoUring,
    /// Freed in `Drop` only when the kernel holds no reference to it any more.
    pool: std::mem::ManuallyDrop<BufPool>,
    features: Features,
    /// Freed in `Drop` only when no operation is in flight (their memory may be in use).
    inflight: std::mem::ManuallyDrop<Vec<Entry>>,
    free: Vec<u32>,
    live: usize,
    /// Free boxed sockaddrs, reused so a connect allocates nothing after warm-up. Boxed because
    /// the kernel reads them through a pointer while they sit in an in-flight entry.
    #[allow(clippy::vec_box)]
    addr_cache: Vec<Box<SockAddr>>,
    overflow: VecDeque<squeue::Entry>,
    /// Bytes after which a multishot recv ends (0: no cap).
    recv_cap: u32,
    /// Reused scratch space for one reap's CQEs.
    batch: Vec<cqueue::Entry>,
    /// Teardown ran (from `shut_down`); `Drop` has nothing left to do.
    closed: bool,
}

impl Ring {
    /// Builds a ring with `entries` submission slots and a provided buffer ring of `buffers`
    /// slots of `buffer_size` bytes, probing kernel features and falling back where needed.
    pub fn new(entries: u32, buffers: u16, buffer_size: usize) -> io::Result<Ring> {
        let mut features = Features::default();
        let ring = {
            let mut b = IoUring::builder();
            b.setup_cqsize(entries * 8)
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_taskrun_flag()
                .setup_submit_all();
            match b.build(entries) {
                Ok(r) => {
                    features.defer_taskrun = true;
                    r
                }
                Err(_) => IoUring::builder()
                    .setup_cqsize(entries * 8)
                    .build(entries)?,
            }
        };
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::RecvMulti::CODE) || !probe.is_supported(opcode::Send::CODE) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "kernel io_uring lacks recv/send (need Linux 5.19+)",
            ));
        }
        // Multishot variants share opcodes with their one-shot forms; kernels from 6.0 have them.
        let (major, minor) = kernel_version();
        let at_least = |a: u32, b: u32| (major, minor) >= (a, b);
        features.accept_multi = at_least(5, 19);
        features.recv_multi = at_least(6, 0);
        features.timeout_multi = at_least(6, 4);
        if std::env::var_os("RINGWAY_NO_MULTISHOT").is_some() {
            features.accept_multi = false;
            features.recv_multi = false;
            features.timeout_multi = false;
        }
        if features.recv_multi {
            features.recv_cap = probe_recv_cap(&ring);
        }
        let pool = BufPool::new(buffers, buffer_size)?;
        // SAFETY: the pool's ring memory is page aligned, holds `entries` initialised entries and
        // stays allocated until the buffer group is unregistered with nothing in flight, or for
        // the process's life (ManuallyDrop, see Drop).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                pool.ring_addr(),
                pool.entries(),
                BGID,
                0,
            )?;
        }
        Ok(Ring {
            ring,
            pool: std::mem::ManuallyDrop::new(pool),
            features,
            inflight: std::mem::ManuallyDrop::new(Vec::new()),
            free: Vec::new(),
            live: 0,
            addr_cache: Vec::new(),
            overflow: VecDeque::new(),
            batch: Vec::new(),
            closed: false,
            recv_cap: 0,
        })
    }

    /// Kernel features this ring uses.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Operations submitted whose last completion has not been reaped.
    pub fn in_flight(&self) -> usize {
        self.live
    }

    /// Pool buffers currently held by user space (lent and not yet recycled).
    pub fn buffers_lent(&self) -> usize {
        self.pool.lent()
    }

    /// Pool buffers the kernel may still pick for a receive.
    pub fn buffers_free(&self) -> usize {
        self.pool.free()
    }

    /// Slot size of the pool buffers, headroom included.
    pub fn buffer_size(&self) -> usize {
        self.pool.size()
    }

    /// The written part of a lent buffer's slot: [`crate::HEADROOM`] bytes, then the bytes
    /// received. Panics if `buf` belongs to another ring.
    pub fn slot(&mut self, buf: &PoolBuf) -> &mut [u8] {
        self.pool.slot(buf)
    }

    /// Gives a lent buffer back to the kernel. Panics if `buf` belongs to another ring.
    pub fn recycle(&mut self, buf: PoolBuf) {
        self.pool.recycle(buf);
    }

    /// The bytes `tx` still has to send (from its pool slot or its vector).
    pub fn tx_bytes<'a>(&'a self, tx: &'a TxBuf) -> &'a [u8] {
        match tx.parts() {
            Parts::Pool(buf, start, len) => self.pool.bytes(buf, start, len),
            Parts::Owned(bytes) => bytes,
            Parts::Piped => &[],
        }
    }

    /// Recycles the pool buffer behind `tx`, if any.
    pub fn recycle_tx(&mut self, tx: TxBuf) {
        if let Some(buf) = tx.into_pool_buf() {
            self.pool.recycle(buf);
        }
    }

    fn insert(&mut self, tag: u64, owned: Owned) -> u64 {
        self.live += 1;
        let op = Some(InFlight { tag, owned });
        match self.free.pop() {
            Some(i) => {
                let e = &mut self.inflight[i as usize];
                e.op = op;
                user_data(i, e.gen)
            }
            None => {
                let i = u32::try_from(self.inflight.len()).expect("fewer than 2^32 operations");
                self.inflight.push(Entry { gen: 0, op });
                user_data(i, 0)
            }
        }
    }

    /// The live entry `ud` names, if its generation still matches.
    fn entry(&mut self, ud: u64) -> Option<&mut Entry> {
        let e = self.inflight.get_mut((ud & 0xFFFF_FFFF) as usize)?;
        (e.gen == (ud >> 32) as u32 && e.op.is_some()).then_some(e)
    }

    /// Ends entry `ud`'s operation: bumps the generation and frees the index.
    fn remove(&mut self, ud: u64) -> Option<InFlight> {
        let e = self.entry(ud)?;
        let op = e.op.take();
        e.gen = e.gen.wrapping_add(1) & GEN_MASK;
        self.free.push((ud & 0xFFFF_FFFF) as u32);
        self.live -= 1;
        op
    }

    /// The one place that writes to the submission queue. A full queue is submitted first; if the
    /// kernel cannot take it yet, the entry waits in `overflow` and goes out with the next submit.
    ///
    /// # Safety
    /// Every pointer in `sqe` must point into memory owned by the in-flight entry named by the
    /// SQE's user_data (or by the ring itself) until that entry's last completion is reaped (I1),
    /// and every fd it names must stay open until then (I2).
    unsafe fn push(&mut self, sqe: squeue::Entry) {
        if !self.overflow.is_empty() {
            self.overflow.push_back(sqe);
            return;
        }
        // SAFETY: the caller upholds I1/I2 for this entry (this fn's contract).
        if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
            return;
        }
        let _ = self.ring.submit();
        // SAFETY: as above.
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            self.overflow.push_back(sqe);
        }
    }

    fn flush_overflow(&mut self) {
        while let Some(sqe) = self.overflow.pop_front() {
            // SAFETY: entries in `overflow` were built under push's contract and their owners are
            // still in the in-flight table (their completions cannot have arrived: not submitted).
            if unsafe { self.ring.submission().push(&sqe) }.is_err() {
                self.overflow.push_front(sqe);
                break;
            }
        }
    }

    /// Multishot accept on a listening socket (one-shot where the kernel lacks multishot;
    /// the caller re-arms whenever a completion has `more == false`).
    pub fn accept(&mut self, listener: RawFd, tag: u64) -> OpId {
        let ud = self.insert(tag, Owned::Accept);
        let sqe = if self.features.accept_multi {
            opcode::AcceptMulti::new(types::Fd(listener))
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build()
        } else {
            opcode::Accept::new(
                types::Fd(listener),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
            .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            .build()
        };
        // SAFETY: no pointers (null address out-params); the caller keeps `listener` open (I2).
        unsafe { self.push(sqe.user_data(ud)) };
        OpId(ud)
    }

    /// Caps every multishot recv armed from now on at `bytes` (0: no cap; ignored where the
    /// kernel lacks the cap). A capped recv ends (`more == false`) once it has delivered that
    /// much, and the caller re-arms it on its next turn: between two turns, no socket takes more
    /// than `bytes` of the pool, however fast its peer sends.
    pub fn set_recv_cap(&mut self, bytes: u32) {
        self.recv_cap = if self.features.recv_cap { bytes } else { 0 };
    }

    /// Multishot recv into the provided buffer pool (one-shot with buffer select as fallback).
    pub fn recv(&mut self, fd: RawFd, tag: u64) -> OpId {
        let ud = self.insert(tag, Owned::None);
        let sqe = if self.features.recv_multi {
            with_recv_cap(
                opcode::RecvMulti::new(types::Fd(fd), BGID).build(),
                self.recv_cap,
            )
        } else {
            opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), 0)
                .buf_group(BGID)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        };
        // SAFETY: the kernel writes only into pool buffers it selects, which stay allocated for
        // the ring's life (I3); the caller keeps `fd` open (I2).
        unsafe { self.push(sqe.user_data(ud)) };
        OpId(ud)
    }

    /// Multishot poll for readability on `fd` (an eventfd, say): a completion each time it
    /// becomes readable; the caller reads it with an ordinary read and re-arms whenever a
    /// completion has `more == false`.
    pub fn poll_readable(&mut self, fd: RawFd, tag: u64) -> OpId {
        let ud = self.insert(tag, Owned::None);
        let sqe = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build();
        // SAFETY: no pointers; the caller keeps `fd` open (I2).
        unsafe { self.push(sqe.user_data(ud)) };
        OpId(ud)
    }

    /// One-shot poll for readability on `fd`: one completion (the poll mask, or a negated errno)
    /// as soon as it is readable, at once if it already is. The caller then reads it itself
    /// (splice(2)) and arms the poll again when it wants more.
    pub fn poll_readable_once(&mut self, fd: RawFd, tag: u64) -> OpId {
        let ud = self.insert(tag, Owned::None);
        let sqe = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).build();
        // SAFETY: no pointers; the caller keeps `fd` open (I2).
        unsafe { self.push(sqe.user_data(ud)) };
        OpId(ud)
    }

    /// One-shot poll for writability on `fd`, holding `tx` (bytes in the caller's pipe, say)
    /// until it completes: the completion carries `tx` back with the poll mask (or a negated
    /// errno), and the caller moves the bytes itself.
    pub fn poll_writable(&mut self, fd: RawFd, tx: TxBuf, tag: u64) {
        let ud = self.insert(tag, Owned::Tx(tx));
        let sqe = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32).build();
        // SAFETY: no pointers (the TxBuf is only held, never read by the kernel); the caller
        // keeps `fd` open (I2).
        unsafe { self.push(sqe.user_data(ud)) };
    }

    /// NAPI busy polling (`IORING_REGISTER_NAPI`, Linux 6.9+): while this ring waits for
    /// completions, the kernel polls the NIC receive queues of the sockets it serves (tracked as
    /// they are used) for up to `micros` µs before sleeping, preferring that to interrupts.
    pub fn enable_napi_busy_poll(&mut self, micros: u32) -> io::Result<()> {
        let mut napi = types::Napi::new()
            .set_busy_poll_timeout(micros)
            .set_prefer_busy_poll(true);
        self.ring.submitter().register_napi(&mut napi)
    }

    /// This ring's descriptor, for other workers' [`Ring::send_fd`].
    pub fn ring_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Hands `fd` to another ring of this process (`target`, its [`Ring::ring_fd`]) through
    /// `IORING_OP_MSG_RING`: the target reaps a completion whose tag is `payload` (below 2^63)
    /// and whose `fd` is this descriptor, now its own. This ring then reaps a completion tagged
    /// `tag`: result 0 when it was delivered, or a negated errno with the descriptor handed back
    /// in its `fd` (the target ring is gone or its completion queue is full). Descriptors are
    /// process-wide, so only the number travels; no lock, no shared queue.
    pub fn send_fd(&mut self, target: RawFd, fd: OwnedFd, payload: u64, tag: u64) {
        debug_assert!(payload & MESSAGE == 0, "a payload is below 2^63");
        let raw = fd.into_raw_fd();
        let ud = self.insert(tag, Owned::Handoff(raw));
        let sqe =
            opcode::MsgRingData::new(types::Fd(target), raw, payload & !MESSAGE | MESSAGE, None)
                .build();
        // SAFETY: no pointers; `target` is only looked up by the kernel (a stale number fails
        // the operation, which then hands the descriptor back).
        unsafe { self.push(sqe.user_data(ud)) };
    }

    /// Cancels one operation (by the id its push returned; the caller must not have reaped its
    /// last completion yet). The operation completes, usually with -ECANCELED.
    pub fn cancel(&mut self, op: OpId, tag: u64) {
        let ud = self.insert(tag, Owned::None);
        let sqe = opcode::AsyncCancel::new(op.0).build();
        // SAFETY: no pointers; the target is matched by user_data only.
        unsafe { self.push(sqe.user_data(ud)) };
    }

    /// Sends `tx` on a stream socket (MSG_NOSIGNAL). The buffer comes back in the completion;
    /// a short send reports fewer bytes and the caller sends the rest.
    pub fn send(&mut self, fd: RawFd, tx: TxBuf, tag: u64) {
        self.send_flags(fd, tx, libc::MSG_NOSIGNAL, tag);
    }

    /// Like [`Ring::send`], with MSG_MORE: TCP holds a tail shorter than a segment back until
    /// more is sent or the socket is shut down, so a last message and the FIN that follows it
    /// leave in one segment. The caller must shut the socket down (or send without MSG_MORE)
    /// once this completes, or the tail waits for the kernel's cork timer (200 ms).
    pub fn send_last(&mut self, fd: RawFd, tx: TxBuf, tag: u64) {
        self.send_flags(fd, tx, libc::MSG_NOSIGNAL | libc::MSG_MORE, tag);
    }

    fn send_flags(&mut self, fd: RawFd, tx: TxBuf, flags: i32, tag: u64) {
        let (ptr, len) = match tx.parts() {
            Parts::Pool(buf, start, len) => (self.pool.send_ptr(buf, start, len), len),
            Parts::Owned(bytes) => (bytes.as_ptr(), bytes.len()),
            Parts::Piped => {
                // Piped bytes have no memory to send from (a caller bug): complete with 0
                // bytes sent, which the caller reads as a failed send, and send nothing.
                let ud = self.insert(tag, Owned::Tx(tx));
                // SAFETY: no pointers, no descriptor.
                unsafe { self.push(opcode::Nop::new().build().user_data(ud)) };
                return;
            }
        };
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let ud = self.insert(tag, Owned::Tx(tx));
        let sqe = opcode::Send::new(types::Fd(fd), ptr, len)
            .flags(flags)
            .build();
        // SAFETY: I1 — ptr/len point into the TxBuf now owned by in-flight entry `ud` (a Vec's heap
        // buffer does not move when the Vec is moved; a pool slot is lent, not recycled, while
        // the entry holds its PoolBuf, and `send_ptr` checked the range lies in its slot). The
        // caller keeps `fd` open (I2).
        unsafe { self.push(sqe.user_data(ud)) };
    }

    /// Connects `fd` to `addr`.
    pub fn connect(&mut self, fd: RawFd, addr: SocketAddr, tag: u64) -> OpId {
        let mut boxed = self
            .addr_cache
            .pop()
            .unwrap_or_else(|| Box::new(SockAddr::default()));
        boxed.set(addr);
        let (ptr, len) = (boxed.as_ptr(), boxed.len());
        let ud = self.insert(tag, Owned::Addr(boxed));
        let sqe = opcode::Connect::new(types::Fd(fd), ptr, len).build();
        // SAFETY: I1 — the sockaddr lives in the Box owned by in-flight entry `ud` (the Box's heap
        // allocation does not move). The caller keeps `fd` open (I2).
        unsafe { self.push(sqe.user_data(ud)) };
        OpId(ud)
    }

    /// Closes `fd` through the ring. The caller must have no other operation in flight on it.
    pub fn close(&mut self, fd: OwnedFd, tag: u64) {
        let raw = fd.into_raw_fd();
        let ud = self.insert(tag, Owned::None);
        let sqe = opcode::Close::new(types::Fd(raw)).build();
        // SAFETY: no pointers; ownership of the fd passed to the kernel, nothing else names it.
        unsafe { self.push(sqe.user_data(ud)) };
    }

    /// Cancels every operation in flight on `fd`; each completes (usually with -ECANCELED).
    pub fn cancel_fd(&mut self, fd: RawFd, tag: u64) {
        let ud = self.insert(tag, Owned::None);
        let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all()).build();
        // SAFETY: no pointers; `fd` is only matched against in-flight requests, not used.
        unsafe { self.push(sqe.user_data(ud)) };
    }

    /// A repeating timer: a completion every `interval` (multishot; re-arm on `more == false`).
    pub fn tick(&mut self, interval: Duration, tag: u64) {
        let multishot = self.features.timeout_multi;
        self.timer(interval, multishot, tag);
    }

    /// A one-shot timer: completes (with `-ETIME`) after `after`, or with `-ECANCELED` when
    /// cancelled through its id.
    pub fn timeout(&mut self, after: Duration, tag: u64) -> OpId {
        self.timer(after, false, tag)
    }

    fn timer(&mut self, after: Duration, multishot: bool, tag: u64) -> OpId {
        let ts = Box::new(
            types::Timespec::new()
                .sec(after.as_secs())
                .nsec(after.subsec_nanos()),
        );
        let ptr: *const types::Timespec = &*ts;
        let ud = self.insert(tag, Owned::Time(ts));
        let mut op = opcode::Timeout::new(ptr);
        if multishot {
            op = op.flags(types::TimeoutFlags::MULTISHOT);
        }
        // SAFETY: I1 — the timespec lives in the Box owned by in-flight entry `ud`.
        unsafe { self.push(op.build().user_data(ud)) };
        OpId(ud)
    }

    /// Publishes recycled buffers, submits queued entries and waits for at least `want`
    /// completions (0: do not wait).
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<()> {
        self.pool.publish();
        self.flush_overflow();
        let want = if self.overflow.is_empty() { want } else { 0 };
        match self.ring.submit_and_wait(want) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Like [`Ring::submit_and_wait`] with `want == 1`, but first polls for up to `spin`:
    /// submits, then watches the completion queue and the kernel's "task work pending" flag
    /// (IORING_SQ_TASKRUN, set when a socket has news for a deferred-task-run ring) without
    /// sleeping. A completion that arrives within `spin` is picked up without the wake-up of a
    /// sleeping thread, which dominates round-trip latency on an idle core. Zero: never spin.
    ///
    /// A gap of more than [`PREEMPTED_GAP`] between two polls means the thread was descheduled:
    /// another task wanted this core, and polling only delays it (on a shared box, the very
    /// client or origin the worker waits for). The spin then ends at once in a sleeping wait and
    /// reports [`Wait::Preempted`], so the caller can stop polling for a while.
    pub fn wait_spinning(&mut self, spin: Duration) -> io::Result<Wait> {
        if spin.is_zero() || !self.features.defer_taskrun {
            self.submit_and_wait(1)?;
            return Ok(Wait::Slept);
        }
        self.submit_and_wait(0)?;
        let start = std::time::Instant::now();
        let mut last = start;
        loop {
            if !self.ring.completion().is_empty() {
                return Ok(Wait::Polled);
            }
            if self.ring.submission().taskrun() {
                self.submit_and_wait(0)?;
                last = std::time::Instant::now();
                continue;
            }
            let now = std::time::Instant::now();
            if now - last > PREEMPTED_GAP {
                self.submit_and_wait(1)?;
                return Ok(Wait::Preempted);
            }
            if now - start >= spin {
                self.submit_and_wait(1)?;
                return Ok(Wait::Missed);
            }
            last = now;
            std::hint::spin_loop();
        }
    }

    /// Moves every available completion into `out` (cleared first; its capacity is reused).
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        out.clear();
        let mut batch = std::mem::take(&mut self.batch);
        batch.extend(self.ring.completion());
        for cqe in batch.drain(..) {
            if let Some(c) = self.complete(cqe) {
                out.push(c);
            }
        }
        self.batch = batch;
    }

    /// Turns one CQE into a [`Completion`], ending its in-flight entry on the last one.
    fn complete(&mut self, cqe: cqueue::Entry) -> Option<Completion> {
        let ud = cqe.user_data();
        let (result, flags) = (cqe.result(), cqe.flags());
        if ud & MESSAGE != 0 {
            // Posted by another ring's `send_fd`: its result is a descriptor it gave up.
            // SAFETY: only `send_fd` of this process's rings posts user_data with MESSAGE set
            // (no other process holds our ring's descriptor), and it gave up ownership of the
            // descriptor number it sends (into_raw_fd), keeping it only to hand back on failure,
            // when no completion is posted here.
            let fd = (result >= 0).then(|| unsafe { OwnedFd::from_raw_fd(result) });
            return Some(Completion {
                tag: ud & !MESSAGE,
                result,
                more: false,
                buf: None,
                tx: None,
                fd,
            });
        }
        let more = cqueue::more(flags);
        // A buffer the kernel selected is lent whatever happens to the entry.
        let buf = cqueue::buffer_select(flags).map(|bid| {
            let len = if result > 0 { result as u32 } else { 0 };
            self.pool.lend(bid, len)
        });
        let Some(entry) = self.entry(ud) else {
            // Cannot happen: every submitted ud has an entry until its last CQE.
            if let Some(b) = buf {
                self.pool.recycle(b);
            }
            return None;
        };
        let op = entry.op.as_ref().expect("entry() checked");
        let tag = op.tag;
        let mut fd = None;
        if matches!(op.owned, Owned::Accept) && result >= 0 {
            // SAFETY: a successful accept's result is a new descriptor the kernel just
            // installed for this process; nothing else owns it.
            fd = Some(unsafe { OwnedFd::from_raw_fd(result) });
        }
        let mut tx = None;
        if !more {
            match self.remove(ud).map(|op| op.owned) {
                Some(Owned::Tx(t)) => tx = Some(t),
                Some(Owned::Addr(a)) => self.addr_cache.push(a),
                Some(Owned::Handoff(raw)) if result < 0 => {
                    // SAFETY: the handoff failed, so no other ring received `raw`: it is still
                    // ours alone, as it was when `send_fd` took it.
                    fd = Some(unsafe { OwnedFd::from_raw_fd(raw) });
                }
                _ => {}
            }
        }
        Some(Completion {
            tag,
            result,
            more,
            buf,
            tx,
            fd,
        })
    }

    /// Cancels every operation in flight and reaps completions until none is left or `wait`
    /// has passed; then frees the in-flight table and the buffer pool if nothing is left in
    /// flight, and leaks both otherwise (the kernel may still write into them). Buffers and
    /// descriptors the completions carry are released.
    pub fn shut_down(mut self, wait: Duration) -> Teardown {
        self.teardown(wait)
    }

    fn teardown(&mut self, wait: Duration) -> Teardown {
        // Entries never handed to the kernel have nothing to wait for.
        while let Some(sqe) = self.overflow.pop_front() {
            self.remove(sqe.get_user_data());
        }
        let in_flight = self.live;
        if in_flight > 0 && !wait.is_zero() {
            let ud = self.insert(u64::MAX, Owned::None);
            let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build();
            // SAFETY: no pointers; matches in-flight requests only.
            unsafe { self.push(sqe.user_data(ud)) };
            let deadline = std::time::Instant::now() + wait;
            let mut out = Vec::new();
            while self.live > 0 {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                self.flush_overflow();
                let ts = types::Timespec::from(left);
                let args = types::SubmitArgs::new().timespec(&ts);
                match self.ring.submitter().submit_with_args(1, &args) {
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                    Err(_) => break,
                }
                self.reap(&mut out);
                for c in out.drain(..) {
                    if let Some(b) = c.buf {
                        self.pool.recycle(b);
                    }
                    if let Some(t) = c.tx {
                        self.recycle_tx(t);
                    }
                }
            }
        }
        let leaked = self.live;
        if leaked == 0 {
            let _ = self.ring.submitter().unregister_buf_ring(BGID);
            // SAFETY: nothing is in flight and the buffer group is unregistered, so the kernel
            // no longer references the pool or any in-flight entry; neither is used after this
            // (teardown runs once: from `close`, which consumes the ring, or from `Drop`).
            unsafe {
                std::mem::ManuallyDrop::drop(&mut self.pool);
                std::mem::ManuallyDrop::drop(&mut self.inflight);
            }
        }
        // Otherwise both stay allocated: ManuallyDrop leaks them to process exit.
        self.closed = true;
        Teardown { in_flight, leaked }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if !self.closed {
            self.teardown(DROP_WAIT);
        }
    }
}

/// Byte offset of the `optlen` field (a union with `splice_fd_in` / `file_index`) in the
/// kernel's 64-byte `struct io_uring_sqe`.
const SQE_OPTLEN: usize = 44;

/// Sets a multishot recv SQE's total byte cap (`sqe->optlen`), which the io-uring crate's
/// builder does not expose.
fn with_recv_cap(sqe: squeue::Entry, cap: u32) -> squeue::Entry {
    if cap == 0 {
        return sqe;
    }
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);
    // SAFETY: `squeue::Entry` is `#[repr(C)]` around the kernel's 64-byte `io_uring_sqe` (size
    // checked above), so it has the same bytes; every bit pattern is a valid `[u8; 64]`.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(sqe) };
    raw[SQE_OPTLEN..SQE_OPTLEN + 4].copy_from_slice(&cap.to_ne_bytes());
    // SAFETY: the bytes of a valid SQE with one u32 field of the kernel ABI changed; the field
    // is plain data (no pointer), and RecvMulti leaves the union's other members unused.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}

/// Whether the kernel takes a byte cap on multishot recv: arms one on an idle socket pair and
/// cancels it; a kernel without the cap fails the recv with EINVAL at once.
fn probe_recv_cap(ring: &IoUring) -> bool {
    let Ok((a, _b)) = std::os::unix::net::UnixStream::pair() else {
        return false;
    };
    let sqe = opcode::RecvMulti::new(types::Fd(a.as_raw_fd()), BGID).build();
    let recv = with_recv_cap(sqe, 1 << 20).user_data(1);
    let cancel = opcode::AsyncCancel::new(1).build().user_data(2);
    // SAFETY: no pointers; no buffer group is registered yet, so the recv can select no buffer
    // (it can only wait, fail or be cancelled); `a` outlives both operations, which are reaped
    // below before it is closed (I2).
    let pushed = unsafe {
        let mut sq = ring.submission_shared();
        sq.push(&recv).is_ok() && sq.push(&cancel).is_ok()
    };
    if !pushed {
        return false;
    }
    let mut ok = true;
    let mut seen = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while seen < 2 && std::time::Instant::now() < deadline {
        if ring.submit_and_wait(1).is_err() {
            return false;
        }
        // SAFETY: single-threaded use of this ring during construction.
        for cqe in unsafe { ring.completion_shared() } {
            seen += 1;
            if cqe.user_data() == 1 && cqe.result() == -libc::EINVAL {
                ok = false;
            }
        }
    }
    ok && seen == 2
}

fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}
