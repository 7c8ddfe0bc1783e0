//! Zero-copy relay for L4 connections: bytes go socket → pipe → socket with splice(2), never
//! through user space.
//!
//! A direction (client → origin or origin → client) starts on the copying path (multishot recv
//! into the pool, send from the slot). A read of at least `min_bytes` moves it to splicing: its
//! source is then armed with a one-shot readability poll instead of a recv, and on readiness the
//! worker splices what is there into the direction's pipe (one splice per readiness, at most the
//! pipe's free room) and queues the count to the destination socket as a piped [`TxBuf`]; that
//! socket's send is a writability poll, on which the worker splices the bytes on. The socket
//! machine sees piped bytes as ordinary queued bytes, so order (a piped count and copied bytes
//! queued to the same socket go out in queue order, and a pipe is FIFO), backpressure, the send
//! stall, half-close and teardown work unchanged. A run of `SMALL_RUN` short reads moves the
//! direction back to copying, which costs less per small message.
//!
//! Why splice(2) from the worker and not `IORING_OP_SPLICE`: the ring always runs a splice on an
//! io-wq thread (it cannot be issued non-blocking), a thread hop and a wake-up per chunk.
//! Measured side by side (`cargo run --release -p ringway-uring --example splice_paths`, 2 GiB
//! over loopback through a 256 KiB pipe, 3 rounds): the relay spends 0.13–0.17 ns of CPU per
//! byte with splice(2) on readiness, 0.27–0.29 ns with `IORING_OP_SPLICE` (its io-wq threads
//! included) and 0.34–0.38 ns copying through a 64 KiB buffer.
//!
//! Where it pays (`bench/scripts/splice-crossover.sh`, 8 connections of ping-pong, splicing every
//! read vs never): 0.92× the messages/s at 1–4 KiB, 1.19× at 16 KiB, 1.83× at 64 KiB, with 0.82×
//! and 0.34× the CPU per message; hence `splice_min_bytes` = 16 KiB by default.
//!
//! Pipes are pooled per worker and held only while they hold bytes: an idle connection holds
//! none, a pipe goes back to the pool the moment it is empty, and one that still holds bytes when
//! its connection ends (an aborted transfer) is closed, never reused. At most `max_pipes` exist
//! per worker; past that, or where the kernel refuses to splice, a direction stays on the copying
//! path.

use std::os::fd::{AsFd, OwnedFd};

use rustix::io::Errno;
use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};

/// Short reads in a row after which a splicing direction goes back to copying.
const SMALL_RUN: u8 = 4;
/// Idle pipes a worker keeps for reuse (two descriptors each); more are closed.
const FREE_MAX: usize = 8;

/// Splice settings of a worker.
#[derive(Clone, Copy, Debug)]
pub struct SpliceConfig {
    /// A read of at least this many bytes moves its direction to splicing (0: never splice).
    pub min_bytes: usize,
    /// Capacity asked of each pipe (F_SETPIPE_SZ; the kernel may give less).
    pub pipe_size: usize,
    /// Pipes one worker may hold at once.
    pub max_pipes: usize,
}

/// One pipe and how many bytes it holds.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    cap: u32,
    held: u32,
}

impl Pipe {
    fn new(size: usize) -> rustix::io::Result<Pipe> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        // Over the user's pipe allowance the kernel refuses to grow the pipe: keep its size.
        let cap = fcntl_setpipe_size(&write, size)
            .or_else(|_| rustix::pipe::fcntl_getpipe_size(&write))?;
        Ok(Pipe {
            read,
            write,
            cap: u32::try_from(cap).unwrap_or(u32::MAX),
            held: 0,
        })
    }

    pub fn held(&self) -> u32 {
        self.held
    }

    fn room(&self) -> usize {
        (self.cap - self.held.min(self.cap)) as usize
    }
}

/// A worker's pipes not in use, and how many it holds in all.
#[derive(Debug)]
pub struct Pipes {
    config: SpliceConfig,
    free: Vec<Pipe>,
    /// Pipes in existence (free and lent; the scratch pipe not counted).
    made: usize,
    /// Where framed fills land first (half a pipe's size), empty between two fills.
    scratch: Option<Pipe>,
}

impl Pipes {
    pub fn new(config: SpliceConfig) -> Pipes {
        Pipes {
            config,
            free: Vec::new(),
            made: 0,
            scratch: None,
        }
    }

    pub fn config(&self) -> SpliceConfig {
        self.config
    }

    /// An empty pipe: a pooled one, or a new one while under `max_pipes`.
    fn take(&mut self) -> Option<Pipe> {
        if let Some(p) = self.free.pop() {
            return Some(p);
        }
        if self.made >= self.config.max_pipes {
            return None;
        }
        let p = Pipe::new(self.config.pipe_size).ok()?;
        self.made += 1;
        Some(p)
    }

    /// Takes a pipe back: pooled when empty (up to `FREE_MAX` idle ones), closed when it still
    /// holds bytes nobody will read or the pool has enough idle pipes.
    fn give(&mut self, p: Pipe) {
        if p.held == 0 && self.free.len() < FREE_MAX {
            self.free.push(p);
        } else {
            self.made -= 1;
        }
    }

    /// Pipes lent out now.
    #[cfg(test)]
    fn lent(&self) -> usize {
        self.made - self.free.len()
    }
}

/// One direction of a connection, named by its source socket.
#[derive(Debug, Default)]
struct Direction {
    /// Reads go through a pipe (else the copying path).
    on: bool,
    /// Each read goes on as one WebSocket frame: header, then the bytes ([`Splicing::fill_framed`]).
    framed: bool,
    /// Splicing is refused for this direction (the kernel said so, or no pipe was to be had).
    refused: bool,
    /// Short reads in a row while splicing.
    small: u8,
    pipe: Option<Pipe>,
}

/// What one splice from a source did.
#[derive(Debug, PartialEq, Eq)]
pub enum Filled {
    /// This many bytes are now in the pipe: queue them (piped) to the destination.
    Bytes(u32),
    /// The source's end of stream.
    Eof,
    /// Nothing moved: the pipe is full, or the bytes were dropped (framed, not relaying).
    Nothing,
    /// The source failed (negated errno).
    Failed(i32),
    /// No pipe, the kernel will not splice this socket, or it will not splice what is there
    /// now (an urgent mark, a pipe out of slots): the direction now copies; arm an ordinary recv.
    Fallback,
}

/// Drops whatever is left in the scratch pipe (read out and discarded; a scratch pipe that
/// cannot be emptied is closed and made again next time).
fn empty_scratch(pipes: &mut Pipes) {
    let Some(scratch) = pipes.scratch.as_mut() else {
        return;
    };
    let mut sink = [0u8; 4096];
    while scratch.held > 0 {
        match rustix::io::read(&scratch.read, &mut sink) {
            Ok(k) if k > 0 => scratch.held = scratch.held.saturating_sub(k as u32),
            _ => {
                pipes.scratch = None;
                return;
            }
        }
    }
}

/// Both directions of one connection (indexed by source: 0 client, 1 origin).
#[derive(Debug, Default)]
pub struct Splicing {
    dirs: [Direction; 2],
}

impl Splicing {
    /// Source `from`'s reads go through a pipe.
    pub fn is_on(&self, from: usize) -> bool {
        self.dirs[from].on
    }

    /// Source `from` must not be read until some bytes have gone on: its pipe is full (or, framed,
    /// not yet empty).
    pub fn is_full(&self, from: usize) -> bool {
        let d = &self.dirs[from];
        d.pipe
            .as_ref()
            .is_some_and(|p| p.room() == 0 || (d.framed && p.held > 0))
    }

    /// Source `from`'s reads are framed ([`Splicing::fill_framed`]).
    pub fn is_framed(&self, from: usize) -> bool {
        self.dirs[from].framed
    }

    /// A read of `n` bytes on the copying path: a large one moves the direction to splicing
    /// (`framed`: each read then goes on as one WebSocket frame). True when it just moved (the
    /// caller re-arms the source's read).
    pub fn on_copied(
        &mut self,
        from: usize,
        n: usize,
        framed: bool,
        config: &SpliceConfig,
    ) -> bool {
        let d = &mut self.dirs[from];
        if d.on || d.refused || config.min_bytes == 0 || n < config.min_bytes {
            return false;
        }
        d.on = true;
        d.framed = framed;
        d.small = 0;
        true
    }

    /// Source `from` is readable and its bytes go on as WebSocket frames: what is there (at most
    /// half the pipe) is spliced into the worker's scratch pipe, `frame(n)` gives the header for
    /// those `n` bytes, and header then bytes go into the direction's (empty) pipe, the bytes
    /// moved pipe to pipe without a copy. A frame is therefore always whole in the pipe, so a
    /// pong or a Close queued behind it never lands inside it. `Bytes` counts header and
    /// payload. `frame` returning `None` drops the bytes (the tunnel stopped relaying).
    pub fn fill_framed(
        &mut self,
        from: usize,
        src: impl AsFd,
        pipes: &mut Pipes,
        frame: impl FnOnce(usize) -> Option<([u8; 10], usize)>,
    ) -> Filled {
        let config = pipes.config();
        if pipes.scratch.is_none() {
            pipes.scratch = Pipe::new(config.pipe_size / 2).ok();
        }
        let d = &mut self.dirs[from];
        if d.pipe.is_none() {
            d.pipe = pipes.take();
        }
        let (Some(pipe), Some(scratch)) = (d.pipe.as_mut(), pipes.scratch.as_mut()) else {
            d.on = false;
            self.release(from, pipes);
            return Filled::Fallback;
        };
        // The header takes a pipe slot of its own: the pipe must have more slots than the
        // scratch pipe can fill (a pipe holds cap / 4096 buffers however few bytes each holds).
        if pipe.cap < 2 * scratch.cap {
            d.on = false;
            d.refused = true;
            self.release(from, pipes);
            return Filled::Fallback;
        }
        if pipe.held > 0 {
            return Filled::Nothing;
        }
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        let n = match splice(src, None, &scratch.write, None, scratch.cap as usize, flags) {
            Ok(0) => {
                self.release(from, pipes);
                return Filled::Eof;
            }
            Ok(n) => n,
            Err(e) => return self.splice_failed(from, e, pipes),
        };
        scratch.held = n as u32;
        let Some((header, len)) = frame(n) else {
            empty_scratch(pipes);
            self.release(from, pipes);
            return Filled::Nothing;
        };
        // An empty pipe takes a 10-byte write whole, and then every buffer of the scratch pipe.
        let moved = rustix::io::write(&pipe.write, &header[..len])
            .ok()
            .filter(|&w| w == len)
            .and_then(|_| splice(&scratch.read, None, &pipe.write, None, n, flags).ok());
        if moved != Some(n) {
            // Cannot happen (see above); the frame would be cut short, so the bytes go nowhere
            // and the connection ends.
            tracing::error!("a spliced frame did not fit its pipe");
            pipe.held = u32::MAX; // closed at the end, never pooled
            empty_scratch(pipes);
            return Filled::Failed(-libc::EIO);
        }
        scratch.held = 0;
        pipe.held = (len + n) as u32;
        if n < config.min_bytes {
            d.small += 1;
            if d.small >= SMALL_RUN {
                d.on = false;
            }
        } else {
            d.small = 0;
        }
        Filled::Bytes(pipe.held)
    }

    /// Source `src` is readable: splices what is there into the direction's pipe.
    pub fn fill(&mut self, from: usize, src: impl AsFd, pipes: &mut Pipes) -> Filled {
        let config = pipes.config();
        let d = &mut self.dirs[from];
        if d.pipe.is_none() {
            match pipes.take() {
                Some(p) => d.pipe = Some(p),
                None => {
                    d.on = false;
                    return Filled::Fallback;
                }
            }
        }
        let Some(pipe) = d.pipe.as_mut() else {
            return Filled::Fallback;
        };
        let room = pipe.room();
        if room == 0 {
            return Filled::Nothing;
        }
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        match splice(src, None, &pipe.write, None, room, flags) {
            Ok(0) => {
                self.release(from, pipes);
                Filled::Eof
            }
            Ok(n) => {
                let n = n as u32; // at most `room`, a u32
                pipe.held += n;
                if (n as usize) < config.min_bytes {
                    d.small += 1;
                    if d.small >= SMALL_RUN {
                        d.on = false;
                    }
                } else {
                    d.small = 0;
                }
                Filled::Bytes(n)
            }
            Err(e) => self.splice_failed(from, e, pipes),
        }
    }

    /// A splice from source `from` failed with `e`; its pipe goes back if empty.
    fn splice_failed(&mut self, from: usize, e: Errno, pipes: &mut Pipes) -> Filled {
        let d = &mut self.dirs[from];
        let filled = match e {
            // The socket was reported readable, yet splice takes nothing: it stops at an urgent
            // (MSG_OOB) mark, which only a recv steps over, or the pipe ran out of slots before
            // bytes (every small segment takes one). Polling again would fire at once, forever:
            // the direction copies until its next large read.
            Errno::AGAIN => {
                d.on = false;
                Filled::Fallback
            }
            Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP => {
                tracing::debug!("splice refused ({e}): the connection copies");
                d.on = false;
                d.refused = true;
                Filled::Fallback
            }
            e => Filled::Failed(-e.raw_os_error()),
        };
        self.release(from, pipes);
        filled
    }

    /// The destination of source `from`'s bytes is writable: splices up to `len` of them on.
    /// Returns what a send completion would (bytes moved, or a negated errno), or `None` when
    /// the socket took nothing after all (poll again).
    pub fn drain(
        &mut self,
        from: usize,
        dest: impl AsFd,
        len: usize,
        pipes: &mut Pipes,
    ) -> Option<i32> {
        let Some(pipe) = self.dirs[from].pipe.as_mut() else {
            // Cannot happen: piped bytes are queued only while their pipe is held.
            return Some(-libc::EPIPE);
        };
        let len = len.min(pipe.held as usize);
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        match splice(&pipe.read, None, dest, None, len, flags) {
            Ok(n) => {
                pipe.held -= n as u32; // at most `held`
                if pipe.held == 0 {
                    self.release(from, pipes);
                }
                Some(i32::try_from(n).unwrap_or(i32::MAX))
            }
            Err(Errno::AGAIN) => None,
            Err(e) => Some(-e.raw_os_error()),
        }
    }

    /// Gives source `from`'s pipe back if it is empty (a full one stays with the direction).
    fn release(&mut self, from: usize, pipes: &mut Pipes) {
        let d = &mut self.dirs[from];
        if d.pipe.as_ref().is_some_and(|p| p.held == 0) {
            if let Some(p) = d.pipe.take() {
                pipes.give(p);
            }
        }
    }

    /// The connection ends: every pipe goes back (or is closed if bytes are left in it).
    pub fn release_all(&mut self, pipes: &mut Pipes) {
        for d in &mut self.dirs {
            if let Some(p) = d.pipe.take() {
                pipes.give(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    fn config(max_pipes: usize) -> SpliceConfig {
        SpliceConfig {
            min_bytes: 1000,
            pipe_size: 64 * 1024,
            max_pipes,
        }
    }

    #[test]
    fn bytes_go_through_a_pooled_pipe_in_order() {
        let (mut client, src) = pair();
        let (dst, mut reader) = pair();
        src.set_nonblocking(true).unwrap();
        let mut pipes = Pipes::new(config(4));
        let mut s = Splicing::default();
        assert!(
            !s.on_copied(0, 10, false, &pipes.config()),
            "small reads copy"
        );
        assert!(s.on_copied(0, 5000, false, &pipes.config()));
        assert!(s.is_on(0));
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&data).unwrap();
        let mut got = Vec::new();
        let mut tries = 0;
        while got.len() < data.len() && tries < 1000 {
            tries += 1;
            if let Filled::Bytes(n) = s.fill(0, &src, &mut pipes) {
                let mut left = n as usize;
                while left > 0 {
                    if let Some(k) = s.drain(0, &dst, left, &mut pipes) {
                        assert!(k > 0);
                        left -= k as usize;
                    }
                }
                let mut buf = vec![0; n as usize];
                reader.read_exact(&mut buf).unwrap();
                got.extend_from_slice(&buf);
            } else {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        assert_eq!(got, data);
        assert_eq!(pipes.lent(), 0, "an emptied pipe goes back to the pool");
        drop(client);
        let mut eof = Filled::Nothing;
        for _ in 0..100 {
            eof = s.fill(0, &src, &mut pipes);
            if eof == Filled::Eof {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(eof, Filled::Eof);
    }

    /// splice(2) stops at an urgent mark and never steps over it: the direction must go back to
    /// copying (a recv steps over it) rather than poll and splice nothing forever.
    #[test]
    fn an_urgent_byte_sends_the_direction_back_to_copying() {
        let (mut client, src) = pair();
        src.set_nonblocking(true).unwrap();
        let mut pipes = Pipes::new(config(4));
        let mut s = Splicing::default();
        assert!(s.on_copied(0, 5000, false, &pipes.config()));
        client.write_all(&[1; 10_000]).unwrap();
        socket2::SockRef::from(&client)
            .send_out_of_band(b"!")
            .unwrap();
        client.write_all(&[2; 10_000]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut got = 0;
        let mut last = Filled::Nothing;
        for _ in 0..10 {
            last = s.fill(0, &src, &mut pipes);
            match last {
                Filled::Bytes(n) => got += n,
                _ => break,
            }
        }
        assert_eq!(got, 10_000, "up to the mark");
        assert_eq!(last, Filled::Fallback);
        assert!(!s.is_on(0), "the next read is a recv");
    }

    #[test]
    fn no_pipe_to_be_had_falls_back_to_copying_and_a_full_pipe_is_not_reused() {
        let (mut client, src) = pair();
        src.set_nonblocking(true).unwrap();
        let mut pipes = Pipes::new(config(1));
        let mut a = Splicing::default();
        let mut b = Splicing::default();
        assert!(a.on_copied(0, 5000, false, &pipes.config()));
        assert!(b.on_copied(0, 5000, false, &pipes.config()));
        client.write_all(&[7; 3000]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(a.fill(0, &src, &mut pipes), Filled::Bytes(3000));
        assert_eq!(b.fill(0, &src, &mut pipes), Filled::Fallback);
        assert!(!b.is_on(0), "the second connection copies");
        a.release_all(&mut pipes);
        assert_eq!(pipes.lent(), 0);
        assert!(
            pipes.free.is_empty(),
            "a pipe with bytes left in it is closed"
        );
        assert!(
            pipes.take().is_some(),
            "and a new one may be made in its place"
        );
    }

    #[test]
    fn a_run_of_short_reads_goes_back_to_copying() {
        let (mut client, src) = pair();
        src.set_nonblocking(true).unwrap();
        let (dst, _reader) = pair();
        let mut pipes = Pipes::new(config(4));
        let mut s = Splicing::default();
        s.on_copied(1, 5000, false, &pipes.config());
        for i in 0..SMALL_RUN {
            assert!(s.is_on(1), "still splicing after {i} short reads");
            client.write_all(&[1; 10]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(10));
            assert_eq!(s.fill(1, &src, &mut pipes), Filled::Bytes(10));
            assert_eq!(s.drain(1, &dst, 10, &mut pipes), Some(10));
        }
        assert!(!s.is_on(1));
    }

    #[test]
    fn framed_fills_carry_whole_frames_and_dropped_bytes_leave_the_scratch_pipe_empty() {
        let (mut origin, src) = pair();
        let (dst, mut client) = pair();
        src.set_nonblocking(true).unwrap();
        let mut pipes = Pipes::new(SpliceConfig {
            min_bytes: 1000,
            pipe_size: 256 * 1024,
            max_pipes: 4,
        });
        let mut s = Splicing::default();
        assert!(s.on_copied(1, 5000, true, &pipes.config()));
        let frame = |n: usize| {
            let mut h = [0u8; 10];
            h[0] = 0x82;
            h[1] = 127;
            h[2..].copy_from_slice(&(n as u64).to_be_bytes());
            Some((h, 10))
        };
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        origin.write_all(&data).unwrap();
        let mut payload = Vec::new();
        let mut tries = 0;
        while payload.len() < data.len() && tries < 1000 {
            tries += 1;
            match s.fill_framed(1, &src, &mut pipes, frame) {
                Filled::Bytes(total) => {
                    assert!(
                        s.is_full(1),
                        "a framed pipe is not filled again until empty"
                    );
                    let mut left = total as usize;
                    while left > 0 {
                        if let Some(k) = s.drain(1, &dst, left, &mut pipes) {
                            left -= k as usize;
                        }
                    }
                    let mut h = [0u8; 10];
                    client.read_exact(&mut h).unwrap();
                    let n = u64::from_be_bytes(h[2..].try_into().unwrap()) as usize;
                    assert_eq!(n + 10, total as usize, "the header says what follows");
                    assert!(n <= 128 * 1024, "at most the scratch pipe per frame");
                    let mut buf = vec![0; n];
                    client.read_exact(&mut buf).unwrap();
                    payload.extend_from_slice(&buf);
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        assert_eq!(payload, data);
        origin.write_all(&[1; 5000]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            s.fill_framed(1, &src, &mut pipes, |_| None),
            Filled::Nothing
        );
        assert_eq!(pipes.scratch.as_ref().map(|p| p.held), Some(0));
        assert_eq!(pipes.lent(), 0);
    }
}
