//! Provided buffer ring (IORING_REGISTER_PBUF_RING): a pool of equal-sized receive buffers the
//! kernel picks from when a multishot recv completes.
//!
//! Every slot is `size` bytes; the kernel is given `slot + HEADROOM .. slot + size`, so a receive
//! always leaves `HEADROOM` bytes in front of the payload where a WebSocket frame header can be
//! written before the same bytes are sent on (one contiguous send, no copy).
//!
//! Invariant I3: user space touches a slot only while it holds the [`PoolBuf`] the completion lent
//! it, i.e. between that completion and [`BufPool::recycle`]. `PoolBuf` is neither `Clone` nor
//! `Copy`, so a slot has at most one holder, and a recycled slot can no longer be named.

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// Bytes left free in front of every received payload (a server frame header needs at most 10).
pub const HEADROOM: usize = 16;

/// A receive buffer lent to user space by a completion. Give it back with [`BufPool::recycle`]
/// (directly, or after the send it was handed to completes).
#[derive(Debug)]
pub struct PoolBuf {
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
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    mem: NonNull<u8>,
    mem_layout: Layout,
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
        let mem_layout = Layout::from_size_align(entries as usize * size, 4096)
            .map_err(|_| bad("buffer pool too large"))?;
        // SAFETY: both layouts have a non-zero size (entries >= 1, size > HEADROOM); the memory
        // is freed in Drop with the same layout.
        let (ring, mem) = unsafe { (alloc::alloc_zeroed(ring_layout), alloc::alloc(mem_layout)) };
        let (Some(ring), Some(mem)) =
            (NonNull::new(ring.cast::<BufRingEntry>()), NonNull::new(mem))
        else {
            alloc::handle_alloc_error(mem_layout);
        };
        let mut pool = BufPool {
            ring,
            ring_layout,
            mem,
            mem_layout,
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

    /// Takes the buffer a completion selected.
    pub(crate) fn lend(&mut self, bid: u16, len: u32) -> PoolBuf {
        self.lent += 1;
        PoolBuf { bid, len }
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

    /// The whole slot of a lent buffer: `HEADROOM` bytes, then `buf.len()` received bytes, then
    /// spare room up to the slot size.
    pub(crate) fn slot(&mut self, buf: &PoolBuf) -> &mut [u8] {
        // SAFETY: I3 — `buf` was lent by a completion and not yet recycled, so the kernel does not
        // write this slot, and `&mut self` plus the non-Clone PoolBuf mean no other reference to
        // it exists; bid < entries keeps the range inside the pool allocation.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.mem.as_ptr().add(buf.bid as usize * self.size),
                self.size,
            )
        }
    }

    /// Pointer to `range` of a lent buffer's slot, for a send SQE. The caller keeps the PoolBuf
    /// in the operation's in-flight entry until the completion (I1).
    pub(crate) fn send_ptr(&self, buf: &PoolBuf, start: usize) -> *const u8 {
        debug_assert!(start <= self.size);
        // SAFETY: bid < entries and start <= size keep the pointer inside the pool allocation.
        unsafe { self.mem.as_ptr().add(buf.bid as usize * self.size + start) }
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts. The pool is dropped after the ring (field
        // order in `Ring`), and the ring's drop waits for the kernel to release the buffer group.
        unsafe {
            alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            alloc::dealloc(self.mem.as_ptr(), self.mem_layout);
        }
    }
}
