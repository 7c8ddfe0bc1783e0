//! Which way should a relay move bulk bytes between two TCP sockets? Relays 2 GiB over loopback
//! (sender thread → socket → relay → socket → reader thread) three ways, one after the other,
//! `ROUNDS` times, and prints throughput and the CPU the relay spent (its thread, plus the
//! io-wq threads for the ring's splice):
//!
//! - `copy`: read(2) into a 64 KiB buffer, write(2) it on (what a user-space relay does);
//! - `splice`: splice(2) socket → pipe → socket from the relay thread (what ringway's L4
//!   relay does on a readiness poll);
//! - `uring-splice`: `IORING_OP_SPLICE` linked behind a poll, both legs through the ring. The
//!   kernel always runs a ring splice on an io-wq thread, so each leg costs a thread hop;
//! - `send-zc`: read(2) into a 64 KiB buffer, then `IORING_OP_SEND_ZC` from it (the buffer is
//!   reused only after the kernel's notification that it let go of it). Over loopback the
//!   receiving socket copies the pages anyway, so this measures what zero-copy send costs
//!   where it cannot save a copy (a relay's both sockets are often local on an edge node).
//!
//! `cargo run --release -p ringway-uring --example splice_paths [PIPE_BYTES] [ROUNDS]`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use io_uring::{opcode, squeue, types, IoUring};

const TOTAL: usize = 2 << 30;

/// CPU seconds of the process (`RUSAGE_SELF`) or the calling thread (`RUSAGE_THREAD`).
fn cpu(who: i32) -> f64 {
    let mut r = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a full rusage into the pointer it is given, which points at a
    // zeroed rusage of the right size and alignment.
    let r = unsafe {
        libc::getrusage(who, r.as_mut_ptr());
        r.assume_init()
    };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(r.ru_utime) + t(r.ru_stime)
}

fn pipe(size: usize) -> (OwnedFd, OwnedFd) {
    let mut p = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array; on success both are
    // new and owned by nobody else, so wrapping them in OwnedFd is sound.
    unsafe {
        assert_eq!(libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC), 0, "pipe2");
        libc::fcntl(p[1], libc::F_SETPIPE_SZ, size as libc::c_int);
        (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1]))
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> isize {
    // SAFETY: no pointers (null offsets: both ends are a socket or a pipe); the descriptors are
    // open for the call.
    unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE,
        )
    }
}

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    (a, l.accept().unwrap().0)
}

fn relay(mode: &str, src: &TcpStream, dst: &TcpStream, psz: usize) {
    let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
    match mode {
        "copy" => {
            let mut buf = vec![0u8; 64 * 1024];
            let (mut src, mut dst) = (src, dst);
            loop {
                let n = src.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                dst.write_all(&buf[..n]).unwrap();
            }
        }
        "send-zc" => {
            let mut buf = vec![0u8; 64 * 1024];
            let mut src = src;
            let mut ring = IoUring::new(8).unwrap();
            loop {
                let n = src.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                let mut off = 0;
                while off < n {
                    let sqe =
                        opcode::SendZc::new(types::Fd(d), buf[off..].as_ptr(), (n - off) as u32)
                            .build()
                            .user_data(1);
                    // SAFETY: `buf` is neither moved, freed nor written until both completions
                    // (the send's and the notification that the kernel let go of the pages)
                    // have been reaped below.
                    unsafe { ring.submission().push(&sqe).unwrap() };
                    let (mut sent, mut notified) = (None, false);
                    while sent.is_none() || !notified {
                        ring.submit_and_wait(1).unwrap();
                        for c in ring.completion() {
                            if io_uring::cqueue::notif(c.flags()) {
                                notified = true;
                            } else {
                                sent = Some(c.result());
                                if !io_uring::cqueue::more(c.flags()) {
                                    notified = true; // no notification follows
                                }
                            }
                        }
                    }
                    let k = sent.unwrap_or(-1);
                    assert!(k > 0, "send_zc: {k}");
                    off += k as usize;
                }
            }
        }
        "splice" => {
            let (r, w) = pipe(psz);
            loop {
                let n = splice(s, w.as_raw_fd(), psz);
                assert!(n >= 0, "splice in");
                if n == 0 {
                    break;
                }
                let mut left = n;
                while left > 0 {
                    let k = splice(r.as_raw_fd(), d, left as usize);
                    assert!(k > 0, "splice out");
                    left -= k;
                }
            }
        }
        _ => {
            let (r, w) = pipe(psz);
            let mut ring = IoUring::new(8).unwrap();
            let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
            // One leg: a poll for `events` on `fd`, then the splice linked behind it.
            let mut leg = |fd: RawFd, events: i16, from: RawFd, to: RawFd, len: usize| -> i32 {
                let poll = opcode::PollAdd::new(types::Fd(fd), events as u32)
                    .build()
                    .flags(squeue::Flags::IO_LINK | squeue::Flags::SKIP_SUCCESS)
                    .user_data(1);
                let sp = opcode::Splice::new(types::Fd(from), -1, types::Fd(to), -1, len as u32)
                    .flags(flags)
                    .build()
                    .user_data(2);
                // SAFETY: neither entry holds a pointer; every descriptor stays open until
                // the completions are reaped below, before the next call.
                unsafe {
                    let mut q = ring.submission();
                    q.push(&poll).unwrap();
                    q.push(&sp).unwrap();
                }
                loop {
                    ring.submit_and_wait(1).unwrap();
                    if let Some(res) = ring
                        .completion()
                        .find(|c| c.user_data() == 2)
                        .map(|c| c.result())
                    {
                        return res;
                    }
                }
            };
            loop {
                let n = leg(s, libc::POLLIN, s, w.as_raw_fd(), psz);
                if n == -libc::EAGAIN {
                    continue;
                }
                assert!(n >= 0, "ring splice in: {n}");
                if n == 0 {
                    break;
                }
                let mut left = n;
                while left > 0 {
                    let k = leg(d, libc::POLLOUT, r.as_raw_fd(), d, left as usize);
                    if k == -libc::EAGAIN {
                        continue;
                    }
                    assert!(k > 0, "ring splice out: {k}");
                    left -= k;
                }
            }
        }
    }
}

fn run(mode: &str, psz: usize) {
    let (mut tx, src) = pair();
    let (dst, mut rx) = pair();
    let sender = std::thread::spawn(move || {
        let b = vec![7u8; 64 * 1024];
        let mut n = 0;
        while n < TOTAL {
            tx.write_all(&b).unwrap();
            n += b.len();
        }
        cpu(libc::RUSAGE_THREAD)
    });
    let reader = std::thread::spawn(move || {
        let mut b = vec![0u8; 64 * 1024];
        let mut n = 0;
        loop {
            let k = rx.read(&mut b).unwrap();
            if k == 0 {
                break;
            }
            n += k;
        }
        assert_eq!(n, TOTAL);
        cpu(libc::RUSAGE_THREAD)
    });
    let (t0, c0) = (Instant::now(), cpu(libc::RUSAGE_SELF));
    relay(mode, &src, &dst, psz);
    drop(dst);
    let others = reader.join().unwrap() + sender.join().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let relay_cpu = cpu(libc::RUSAGE_SELF) - c0 - others;
    println!(
        "{mode:>12} pipe {psz:>7}: {:5.2} GB/s, relay {:4.2} s CPU = {:3.0} % of a core, {:.2} ns/byte",
        TOTAL as f64 / secs / 1e9,
        relay_cpu,
        100.0 * relay_cpu / secs,
        relay_cpu * 1e9 / TOTAL as f64
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let psz = args
        .next()
        .map_or(256 * 1024, |s| s.parse().expect("PIPE_BYTES"));
    let rounds = args.next().map_or(3, |s| s.parse().expect("ROUNDS"));
    for _ in 0..rounds {
        for mode in ["copy", "splice", "uring-splice", "send-zc"] {
            run(mode, psz);
        }
    }
}
