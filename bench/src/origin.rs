//! The test origin: a TCP server that echoes, sinks or sources bytes, N event-loop threads, no
//! thread or buffer per connection.
//!
//! Each thread owns a mio `Poll` and its own listening socket; with more than one thread the
//! sockets share the port through SO_REUSEPORT and the kernel spreads connections over them. A
//! connection costs its socket and a small slot; the 64 KiB read buffer is per thread, and an
//! echo connection only holds bytes of its own (`pending`) while its peer is not reading, in
//! which case it stops reading too (backpressure instead of unbounded buffering). Invariants:
//! echo returns every byte in order; on EOF it flushes what is pending and then closes, so a
//! client that shut down its write side reads every echoed byte followed by EOF. Echo-close
//! echoes the first [`ECHO_CLOSE_BYTES`] bytes however they arrive (in one read or in pieces),
//! then shuts down its write side (the peer reads those bytes followed by EOF), discards anything
//! more and closes on the peer's EOF, so the origin never resets a connection.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::client::IO_CHUNK;
use crate::pattern;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKE: Token = Token(usize::MAX);

/// What the origin does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginMode {
    /// Writes back every byte read.
    Echo,
    /// Reads and discards.
    Sink,
    /// Writes the pattern stream as fast as the peer reads; discards what it reads.
    Source,
    /// Writes back the first [`ECHO_CLOSE_BYTES`] bytes, then half-closes (the origin ends the
    /// connection: `connect --close origin`).
    EchoClose,
}

/// Bytes echo-close echoes before it ends its side (the `connect` round trip).
pub const ECHO_CLOSE_BYTES: u64 = crate::workload::connect::ROUND_TRIP_BYTES as u64;

impl FromStr for OriginMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "echo" => Ok(OriginMode::Echo),
            "sink" => Ok(OriginMode::Sink),
            "source" => Ok(OriginMode::Source),
            "echo-close" => Ok(OriginMode::EchoClose),
            _ => Err(format!("{s:?}: expected echo, sink, source or echo-close")),
        }
    }
}

/// A running origin.
pub struct Origin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    wakers: Vec<Waker>,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl Origin {
    /// Binds `listen` (port 0 picks one) and starts `threads` event loops.
    pub fn start(listen: SocketAddr, mode: OriginMode, threads: usize) -> io::Result<Origin> {
        let threads = threads.max(1);
        let first = bind(listen, threads > 1)?;
        let addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..threads {
            listeners.push(bind(addr, true)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut origin = Origin {
            addr,
            stop: stop.clone(),
            wakers: Vec::new(),
            threads: Vec::new(),
        };
        for (i, mut listener) in listeners.into_iter().enumerate() {
            let poll = Poll::new()?;
            poll.registry()
                .register(&mut listener, LISTENER, Interest::READABLE)?;
            origin.wakers.push(Waker::new(poll.registry(), WAKE)?);
            let stop = stop.clone();
            let handle = std::thread::Builder::new()
                .name(format!("origin-{i}"))
                .spawn(move || serve(poll, listener, mode, &stop))?;
            origin.threads.push(handle);
        }
        Ok(origin)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops every thread, closes every connection and returns the first thread error.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        for w in &self.wakers {
            w.wake()?;
        }
        self.join()
    }

    /// Runs until a thread fails (a healthy origin runs until the process is killed).
    pub fn wait(mut self) -> io::Result<()> {
        self.join()
    }

    fn join(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("origin thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(TcpListener::from_std(sock.into()))
}

/// One accepted connection.
struct Conn {
    sock: TcpStream,
    /// Echo bytes the peer has not taken yet (empty, unallocated, almost always).
    pending: Vec<u8>,
    pending_pos: usize,
    /// Source: pattern offset of the next byte to write.
    tx_off: u64,
    /// Echo: bytes read for the echo so far.
    taken: u64,
    eof: bool,
    /// Echo-close: the write side is shut down; input is discarded until EOF.
    shut: bool,
}

fn serve(
    mut poll: Poll,
    listener: TcpListener,
    mode: OriginMode,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; IO_CHUNK];
    let mut accept_warned = false;
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        for ev in events.iter() {
            match ev.token() {
                WAKE => {}
                LISTENER => loop {
                    let (mut sock, _) = match listener.accept() {
                        Ok(accepted) => accepted,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            if !accept_warned {
                                eprintln!("origin: accept failed: {e} (more connections wait)");
                                accept_warned = true;
                            }
                            break;
                        }
                    };
                    let slot = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    sock.set_nodelay(true)?;
                    poll.registry().register(
                        &mut sock,
                        Token(slot),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    conns[slot] = Some(Conn {
                        sock,
                        pending: Vec::new(),
                        pending_pos: 0,
                        tx_off: 0,
                        taken: 0,
                        eof: false,
                        shut: false,
                    });
                },
                Token(slot) => {
                    let Some(Some(conn)) = conns.get_mut(slot) else {
                        continue;
                    };
                    let keep = match mode {
                        OriginMode::Echo => echo(conn, &mut buf, u64::MAX),
                        OriginMode::EchoClose => echo(conn, &mut buf, ECHO_CLOSE_BYTES),
                        OriginMode::Sink => drain(conn, &mut buf),
                        OriginMode::Source => drain(conn, &mut buf) && source(conn),
                    };
                    if !keep {
                        conns[slot] = None;
                        free.push(slot);
                    }
                }
            }
        }
    }
}

/// Echoes until the socket would block; `false` once the connection is to be closed. After
/// `limit` bytes (`u64::MAX`: never) it flushes them, shuts down its write side and then only
/// discards input until EOF.
fn echo(c: &mut Conn, buf: &mut [u8], limit: u64) -> bool {
    loop {
        if c.pending_pos < c.pending.len() {
            match c.sock.write(&c.pending[c.pending_pos..]) {
                Ok(n) => c.pending_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
            if c.pending_pos < c.pending.len() {
                return true;
            }
            c.pending.clear();
            c.pending_pos = 0;
        }
        if c.eof {
            return false;
        }
        if c.taken == limit {
            if !c.shut {
                if c.sock.shutdown(std::net::Shutdown::Write).is_err() {
                    return false;
                }
                c.shut = true;
            }
            return discard_until_eof(c, buf);
        }
        // Never take more than the limit for the echo: what follows it is discarded above.
        let want = buf
            .len()
            .min(usize::try_from(limit - c.taken).unwrap_or(usize::MAX));
        let n = match c.sock.read(&mut buf[..want]) {
            Ok(0) => {
                c.eof = true;
                continue;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        c.taken += n as u64;
        let written = match c.sock.write(&buf[..n]) {
            Ok(w) => w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => return false,
        };
        if written < n {
            // The peer is not keeping up: hold the rest and stop reading until it drains.
            c.pending.extend_from_slice(&buf[written..n]);
            return true;
        }
        if n < want && limit == u64::MAX {
            // Short read: the socket is drained and the next edge is guaranteed. (Echo-close
            // reads on until the socket would block, so an EOF queued right behind the bytes is
            // seen at once.)
            return true;
        }
    }
}

/// Reads and discards until EOF (`false`: close now) or until the socket would block (`true`).
/// Unlike [`drain`] it never stops at a short read, so an EOF queued behind data is seen.
fn discard_until_eof(c: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        match c.sock.read(buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Reads and discards until the socket would block; `false` on EOF or error.
fn drain(c: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        match c.sock.read(buf) {
            Ok(0) => return false,
            Ok(n) if n < buf.len() => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Writes the pattern stream until the socket is full; `false` on error.
fn source(c: &mut Conn) -> bool {
    loop {
        let chunk = pattern::window(c.tx_off, IO_CHUNK);
        match c.sock.write(chunk) {
            Ok(n) => {
                c.tx_off += n as u64;
                if n < chunk.len() {
                    return true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}
