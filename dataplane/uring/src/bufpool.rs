//! Provided buffer ring (IORING_REGISTER_PBUF_RING): a pool of equal-sized receive buffers the
//! kernel picks from when a multishot recv completes.
//!
//! Every slot is `size` bytes; the kernel is given `slot + HEADROOM .. slot + size`, so a receive
//! always leaves `HEADROOM` bytes in front of the payload where a WebSocket frame header can be
//! written before the same bytes are sent on (one contiguous send, no copy).
//!
//! Invariant I3: user space touches a slot only while it holds the [`PoolBuf`] the completion lent
//! it, i.e. between that completion and [`BufPool::recycle`]. `PoolBuf` is neither `Clone` nor
//! `Copy`, so a slot has at most one holder, and a recycled slot can no longer be named. A
//! `PoolBuf` carries the id of the pool that lent it, and every pool operation checks it, so a
//! buffer of one ring can never name a slot of another.
//!
//! The pool's memory is an anonymous mapping, zero-filled by the kernel and resident only once
//! touched, and a lent slot is handed out only up to the end of the bytes received into it: safe
//! code never
//! reads uninitialised memory, nor the spare room where an earlier tenant's bytes may remain.

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

use io_uring::types::BufRingEntry;

/// Bytes left free in front of every received payload (a server frame header needs at most 10).
pub const HEADROOM: usize = 16;

/// A receive buffer lent to user space by a completion. Give it back with [`BufPool::recycle`]
/// (directly, or after the send it was handed to completes).
#[derive(Debug)]
pub struct PoolBuf {
    pool: u32,
    bid: u16,
    len: u32,
}

impl PoolBuf {
    /// Bytes the kernel received into this buffer (they start at `HEADROOM` in [`BufPool::slot`]).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when the completion carried no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer id, for diagnostics.
    pub fn id(&self) -> u16 {
        self.bid
    }
}

/// The buffer group's memory: the ring of entries shared with the kernel and the slots.
pub(crate) struct BufPool {
    /// Process-unique id stamped on every buffer this pool lends.
    id: u32,
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    /// The slots: an anonymous mapping of `mem_len` bytes.
    mem: NonNull<u8>,
    mem_len: usize,
    entries: u16,
    size: usize,
    /// Local tail; published to the kernel by [`BufPool::publish`].
    tail: u16,
    published: u16,
    lent: usize,
}

impl BufPool {
    /// Allocates `entries` (a power of two, at most 32768) slots of `size` bytes each and fills
    /// the ring with all of them. The caller registers [`BufPool::ring_addr`] with the kernel.
    pub(crate) fn new(entries: u16, size: usize) -> std::io::Result<BufPool> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(bad("buffer count must be a power of two, at most 32768"));
        }
        if size <= HEADROOM || size > u32::MAX as usize {
            return Err(bad("buffer size must exceed the headroom"));
        }
        let ring_layout =
            Layout::from_size_align(entries as usize * std::mem::size_of::<BufRingEntry>(), 4096)
                .map_err(|_| bad("buffer ring too large"))?;
        let mem_len = (entries as usize)
            .checked_mul(size)
            .ok_or_else(|| bad("buffer pool too large"))?;
        // Anonymous pages: zero-filled by the kernel and not resident until first touched, so a
        // worker's pool costs memory only for the slots traffic actually uses.
        // SAFETY: a fresh private anonymous mapping (no address hint, no fd); the result is
        // checked for MAP_FAILED before use and unmapped in Drop with the same length.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mem_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the layout has a non-zero size (entries >= 1); freed in Drop with it. Zeroed,
        // so no byte of the ring is uninitialised.
        let ring = unsafe { alloc::alloc_zeroed(ring_layout) };
        let (Some(ring), Some(mem)) = (
            NonNull::new(ring.cast::<BufRingEntry>()),
            NonNull::new(mem.cast::<u8>()),
        ) else {
            alloc::handle_alloc_error(ring_layout);
        };
        static NEXT_ID: AtomicU32 = AtomicU32::new(1);
        let mut pool = BufPool {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            ring,
            ring_layout,
            mem,
            mem_len,
            entries,
            size,
            tail: 0,
            published: 0,
            lent: 0,
        };
        for bid in 0..entries {
            pool.lent += 1; // add_entry accounts for the return
            pool.add_entry(bid);
        }
        pool.publish();
        Ok(pool)
    }

    pub(crate) fn ring_addr(&self) -> u64 {
        self.ring.as_ptr() as u64
    }

    pub(crate) fn entries(&self) -> u16 {
        self.entries
    }

    /// Slot size in bytes, headroom included.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Buffers currently lent to user space.
    pub(crate) fn lent(&self) -> usize {
        self.lent
    }

    /// Buffers the kernel may still pick (published and not lent).
    pub(crate) fn free(&self) -> usize {
        self.entries as usize - self.lent
    }

    /// Takes the buffer a completion selected (`len` is clamped to the slot's room).
    pub(crate) fn lend(&mut self, bid: u16, len: u32) -> PoolBuf {
        debug_assert!(bid < self.entries);
        self.lent += 1;
        let room = (self.size - HEADROOM) as u32;
        PoolBuf {
            pool: self.id,
            bid,
            len: len.min(room),
        }
    }

    /// Panics unless `buf` was lent by this pool: a buffer of another ring would name a slot
    /// whose loan this pool never gave (I3).
    fn check(&self, buf: &PoolBuf) {
        assert_eq!(
            buf.pool, self.id,
            "pool buffer {} belongs to another ring's pool",
            buf.bid
        );
    }

    fn add_entry(&mut self, bid: u16) {
        let mask = self.entries - 1;
        let idx = (self.tail & mask) as usize;
        // SAFETY: idx < entries, so the entry lies inside the ring allocation; the kernel only
        // reads entries between its head and the published tail, and this index is past the
        // published tail (it was consumed), so the kernel does not read it concurrently (I3).
        let entry = unsafe { &mut *self.ring.as_ptr().add(idx) };
        // SAFETY: bid < entries, so the slot start lies inside the pool allocation.
        let addr = unsafe { self.mem.as_ptr().add(bid as usize * self.size + HEADROOM) };
        entry.set_addr(addr as u64);
        entry.set_len((self.size - HEADROOM) as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.lent -= 1;
    }

    /// Gives a buffer back to the kernel (visible after the next [`BufPool::publish`]).
    pub(crate) fn recycle(&mut self, buf: PoolBuf) {
        self.check(&buf);
        self.add_entry(buf.bid);
    }

    /// Publishes recycled buffers to the kernel (one release store for the whole batch).
    pub(crate) fn publish(&mut self) {
        if self.published == self.tail {
            return;
        }
        // SAFETY: the ring base is a valid, initialised, page-aligned BufRingEntry array; the
        // tail field overlays entry 0's `resv`, which the kernel reads and user space writes.
        let tail = unsafe { BufRingEntry::tail(self.ring.as_ptr()) } as *const AtomicU16;
        // SAFETY: the tail is a naturally aligned u16 inside the ring allocation, shared with the
        // kernel; it is only ever accessed atomically from this side.
        unsafe { (*tail).store(self.tail, Ordering::Release) };
        self.published = self.tail;
    }

    /// The written part of a lent buffer's slot: `HEADROOM` bytes, then the `buf.len()` bytes
    /// received.
    pub(crate) fn slot(&mut self, buf: &PoolBuf) -> &mut [u8] {
        self.check(buf);
        // SAFETY: I3 — `buf` was lent by this pool (checked) and not yet recycled, so the kernel
        // does not write this slot, and `&mut self` plus the non-Clone PoolBuf mean no other
        // reference to it exists; bid < entries and HEADROOM + len <= size (clamped in `lend`)
        // keep the range inside the pool allocation, which is zero-initialised.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.mem.as_ptr().add(buf.bid as usize * self.size),
                HEADROOM + buf.len(),
            )
        }
    }

    /// Bytes `start..start + len` of a lent buffer's slot, read-only.
    pub(crate) fn bytes(&self, buf: &PoolBuf, start: usize, len: usize) -> &[u8] {
        let ptr = self.send_ptr(buf, start, len);
        // SAFETY: `send_ptr` checked the buffer is this pool's and the range lies in its
        // headroom plus received bytes (initialised, lent: the kernel does not write it); `&self`
        // excludes a live `&mut` from `slot` for the returned lifetime.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    /// Pointer to byte `start` of a lent buffer's slot, for a send SQE of `len` bytes. The caller
    /// keeps the PoolBuf in the operation's in-flight entry until the completion (I1).
    pub(crate) fn send_ptr(&self, buf: &PoolBuf, start: usize, len: usize) -> *const u8 {
        self.check(buf);
        assert!(
            start + len <= HEADROOM + buf.len(),
            "send range outside the buffer's written bytes"
        );
        // SAFETY: bid < entries and start + len <= HEADROOM + len <= size keep the pointer and
        // the range it starts inside this buffer's slot of the pool allocation.
        unsafe { self.mem.as_ptr().add(buf.bid as usize * self.size + start) }
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        // SAFETY: allocated (ring) and mapped (slots) in `new` with this layout and length. `Ring`
        // drops its pool only after unregistering the buffer group with no operation in flight
        // (otherwise it leaks the pool), so the kernel no longer references this memory.
        unsafe {
            alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            libc::munmap(self.mem.as_ptr().cast(), self.mem_len);
        }
    }
}
