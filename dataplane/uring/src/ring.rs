//! The ring: one io_uring per worker, its in-flight table and its provided buffer pool.
//!
//! Every operation gets an in-flight entry that owns whatever the kernel may read or write
//! (the send buffer, the connect address, the timer's timespec) until the operation's last
//! completion is reaped, cancelled operations included (I1). `user_data` is the entry index;
//! the caller's own `tag` comes back in the [`Completion`]. [`Ring::push`] is the only place
//! that writes to the submission queue.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

use crate::bufpool::{BufPool, PoolBuf};
use crate::sockaddr::SockAddr;

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
}

/// Bytes handed to a send: either a slice of a pool buffer or an owned vector (HTTP responses,
/// control frames, bytes pipelined with the handshake).
#[derive(Debug)]
pub enum TxBuf {
    /// `buf`'s slot bytes `start..end` (offsets into [`Ring::slot`], headroom included).
    Pool {
        buf: PoolBuf,
        start: usize,
        end: usize,
    },
    /// `vec[start..]`.
    Owned { vec: Vec<u8>, start: usize },
}

impl TxBuf {
    /// Bytes still to send.
    pub fn len(&self) -> usize {
        match self {
            TxBuf::Pool { start, end, .. } => end - start,
            TxBuf::Owned { vec, start } => vec.len() - start,
        }
    }

    /// True when nothing is left to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops `n` sent bytes from the front (after a short send).
    pub fn advance(&mut self, n: usize) {
        match self {
            TxBuf::Pool { start, end, .. } => *start = (*start + n).min(*end),
            TxBuf::Owned { vec, start } => *start = (*start + n).min(vec.len()),
        }
    }
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

/// Names one submitted operation, for [`Ring::cancel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpId(u64);

/// What an in-flight operation owns until its last completion.
enum Owned {
    None,
    /// An accept: a successful completion's result is a new fd.
    Accept,
    Tx(TxBuf),
    Addr(Box<SockAddr>),
    /// Read by the kernel through the SQE's pointer, never by us.
    Time(#[allow(dead_code)] Box<types::Timespec>),
}

struct InFlight {
    tag: u64,
    owned: Owned,
}

/// A worker's io_uring.
pub struct Ring {
    // Field order matters: the ring is dropped (and the kernel lets go of the buffer group)
    // before the pool's memory is freed.
    ring: IoUring,
    pool: std::mem::ManuallyDrop<BufPool>,
    features: Features,
    inflight: Vec<Option<InFlight>>,
    free: Vec<u32>,
    live: usize,
    /// Free boxed sockaddrs, reused so a connect allocates nothing after warm-up. Boxed because
    /// the kernel reads them through a pointer while they sit in an in-flight entry.
    #[allow(clippy::vec_box)]
    addr_cache: Vec<Box<SockAddr>>,
    overflow: VecDeque<squeue::Entry>,
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
        let pool = BufPool::new(buffers, buffer_size)?;
        // SAFETY: the pool's ring memory is page aligned, holds `entries` initialised entries and
        // stays allocated until after the io_uring is closed (ManuallyDrop, see Drop).
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
            inflight: Vec::new(),
            free: Vec::new(),
            live: 0,
            addr_cache: Vec::new(),
            overflow: VecDeque::new(),
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

    /// Slot size of the pool buffers, headroom included.
    pub fn buffer_size(&self) -> usize {
        self.pool.size()
    }

    /// The full slot of a lent buffer (see [`crate::HEADROOM`]).
    pub fn slot(&mut self, buf: &PoolBuf) -> &mut [u8] {
        self.pool.slot(buf)
    }

    /// Gives a lent buffer back to the kernel.
    pub fn recycle(&mut self, buf: PoolBuf) {
        self.pool.recycle(buf);
    }

    fn insert(&mut self, tag: u64, owned: Owned) -> u64 {
        self.live += 1;
        let entry = Some(InFlight { tag, owned });
        match self.free.pop() {
            Some(i) => {
                self.inflight[i as usize] = entry;
                i as u64
            }
            None => {
                self.inflight.push(entry);
                (self.inflight.len() - 1) as u64
            }
        }
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

    /// Multishot recv into the provided buffer pool (one-shot with buffer select as fallback).
    pub fn recv(&mut self, fd: RawFd, tag: u64) -> OpId {
        let ud = self.insert(tag, Owned::None);
        let sqe = if self.features.recv_multi {
            opcode::RecvMulti::new(types::Fd(fd), BGID).build()
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
        let (ptr, len) = match &tx {
            TxBuf::Pool { buf, start, end } => (self.pool.send_ptr(buf, *start), end - start),
            TxBuf::Owned { vec, start } => (vec[*start..].as_ptr(), vec.len() - start),
        };
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let ud = self.insert(tag, Owned::Tx(tx));
        let sqe = opcode::Send::new(types::Fd(fd), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        // SAFETY: I1 — ptr/len point into the TxBuf now owned by in-flight entry `ud` (a Vec's heap
        // buffer does not move when the Vec is moved; a pool slot is lent, not recycled, while
        // the entry holds its PoolBuf). The caller keeps `fd` open (I2).
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

    /// shutdown(2) through the ring (`libc::SHUT_WR`, `SHUT_RDWR`, ...).
    pub fn shutdown(&mut self, fd: RawFd, how: i32, tag: u64) {
        let ud = self.insert(tag, Owned::None);
        let sqe = opcode::Shutdown::new(types::Fd(fd), how).build();
        // SAFETY: no pointers; the caller keeps `fd` open until this completes (I2).
        unsafe { self.push(sqe.user_data(ud)) };
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
        let ts = Box::new(
            types::Timespec::new()
                .sec(interval.as_secs())
                .nsec(interval.subsec_nanos()),
        );
        let ptr: *const types::Timespec = &*ts;
        let ud = self.insert(tag, Owned::Time(ts));
        let mut op = opcode::Timeout::new(ptr);
        if self.features.timeout_multi {
            op = op.flags(types::TimeoutFlags::MULTISHOT);
        }
        // SAFETY: I1 — the timespec lives in the Box owned by in-flight entry `ud`.
        unsafe { self.push(op.build().user_data(ud)) };
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
    pub fn wait_spinning(&mut self, spin: Duration) -> io::Result<()> {
        if spin.is_zero() || !self.features.defer_taskrun {
            return self.submit_and_wait(1);
        }
        self.submit_and_wait(0)?;
        let start = std::time::Instant::now();
        loop {
            if !self.ring.completion().is_empty() {
                return Ok(());
            }
            if self.ring.submission().taskrun() {
                self.submit_and_wait(0)?;
                continue;
            }
            if start.elapsed() >= spin {
                return self.submit_and_wait(1);
            }
            std::hint::spin_loop();
        }
    }

    /// Moves every available completion into `out` (cleared first; its capacity is reused).
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        out.clear();
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let ud = cqe.user_data() as usize;
            let (result, flags) = (cqe.result(), cqe.flags());
            let more = cqueue::more(flags);
            let Some(slot) = self.inflight.get_mut(ud) else {
                continue;
            };
            let Some(entry) = slot.as_ref() else {
                continue;
            };
            let tag = entry.tag;
            let buf = cqueue::buffer_select(flags).map(|bid| {
                let len = if result > 0 { result as u32 } else { 0 };
                self.pool.lend(bid, len)
            });
            let mut tx = None;
            let mut fd = None;
            if matches!(entry.owned, Owned::Accept) && result >= 0 {
                // SAFETY: a successful accept's result is a new descriptor the kernel just
                // installed for this process; nothing else owns it.
                fd = Some(unsafe { OwnedFd::from_raw_fd(result) });
            }
            if !more {
                let entry = slot.take().expect("checked above");
                self.free.push(ud as u32);
                self.live -= 1;
                match entry.owned {
                    Owned::Tx(t) => tx = Some(t),
                    Owned::Addr(a) => self.addr_cache.push(a),
                    Owned::None | Owned::Accept | Owned::Time(_) => {}
                }
            }
            out.push(Completion {
                tag,
                result,
                more,
                buf,
                tx,
                fd,
            });
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // The pool's memory is freed only when no operation is in flight: otherwise the kernel,
        // tearing the ring down asynchronously, could still select a buffer (I3). A worker that
        // exits with operations in flight leaks its pool, which the process exit reclaims.
        if self.live == 0 {
            let _ = self.ring.submitter().unregister_buf_ring(BGID);
            // SAFETY: nothing is in flight and the buffer group is unregistered, so the kernel
            // no longer references the pool; it is not used after this point.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.pool) };
        }
    }
}

fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}
