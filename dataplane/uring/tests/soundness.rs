//! The safe API cannot be made to touch memory it does not own: a stale operation id cancels
//! nothing, a send range outside its buffer is refused, a buffer of one ring is refused by
//! another, lent memory is initialised, and dropping a ring with operations in flight never frees
//! what the kernel may still use. Real rings over real sockets (loopback and Unix pairs).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ringway_uring::{Completion, Ring, TxBuf, HEADROOM};

fn ring() -> Ring {
    Ring::new(64, 16, 4096).expect("io_uring with a provided buffer ring")
}

/// Submits and reaps until `pred` holds for a reaped completion (bounded: 2 s).
fn wait_for(ring: &mut Ring, mut pred: impl FnMut(&Completion) -> bool) -> Vec<Completion> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut all = Vec::new();
    let mut out = Vec::new();
    while Instant::now() < deadline {
        ring.submit_and_wait(0).unwrap();
        ring.reap(&mut out);
        let hit = out.iter().any(&mut pred);
        all.append(&mut out);
        if hit {
            return all;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("no matching completion within 2 s; got {all:?}");
}

/// Reaps for `d` and returns everything that completed.
fn reap_for(ring: &mut Ring, d: Duration) -> Vec<Completion> {
    let deadline = Instant::now() + d;
    let mut all = Vec::new();
    let mut out = Vec::new();
    while Instant::now() < deadline {
        ring.submit_and_wait(0).unwrap();
        ring.reap(&mut out);
        all.append(&mut out);
        std::thread::sleep(Duration::from_millis(1));
    }
    all
}

/// Fills `a`'s send buffer (its peer never reads) so a further send cannot complete.
fn fill(a: &mut UnixStream) {
    a.set_nonblocking(true).unwrap();
    let chunk = [1u8; 65536];
    for _ in 0..4096 {
        if a.write(&chunk).is_err() {
            return;
        }
    }
    panic!("socket buffer never filled");
}

/// Receives `bytes` through the pool and returns the completion that carries them.
fn receive(ring: &mut Ring, bytes: &[u8]) -> (Completion, UnixStream, UnixStream) {
    let (mut a, b) = UnixStream::pair().unwrap();
    ring.recv(b.as_raw_fd(), 7);
    a.write_all(bytes).unwrap();
    let mut got = wait_for(ring, |c| c.tag == 7 && c.buf.is_some());
    let c = got
        .drain(..)
        .find(|c| c.buf.is_some())
        .expect("a completion with a buffer");
    (c, a, b)
}

#[test]
fn a_stale_id_cancels_nothing() {
    let mut ring = ring();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let stale = ring.connect(sock.as_raw_fd(), listener.local_addr().unwrap(), 1);
    let done = wait_for(&mut ring, |c| c.tag == 1);
    assert_eq!(done.last().unwrap().result, 0, "connect succeeded");
    assert_eq!(ring.in_flight(), 0);

    // The freed index is reused at once by the next operation: a pending recv.
    let (mut a, b) = UnixStream::pair().unwrap();
    let live = ring.recv(b.as_raw_fd(), 2);
    assert_ne!(live, stale, "same index, new generation: a different id");
    ring.cancel(stale, 3);
    let got = wait_for(&mut ring, |c| c.tag == 3);
    let cancel = got.iter().find(|c| c.tag == 3).unwrap();
    assert_eq!(cancel.result, -libc::ENOENT, "the stale id matched nothing");
    assert!(
        got.iter().all(|c| c.tag != 2),
        "the recv that reused the index was not cancelled: {got:?}"
    );
    a.write_all(b"still armed").unwrap();
    let got = wait_for(&mut ring, |c| c.tag == 2);
    let recv = got.iter().find(|c| c.tag == 2).unwrap();
    assert_eq!(recv.result, 11, "the live recv still delivers");
    for c in got {
        if let Some(buf) = c.buf {
            ring.recycle(buf);
        }
    }
}

#[test]
fn send_ranges_outside_the_buffer_are_refused() {
    let mut ring = ring();
    let (c, _a, _b) = receive(&mut ring, b"0123456789");
    let buf = c.buf.unwrap();
    assert_eq!(buf.len(), 10);
    // Past the received bytes (into spare room): refused, buffer handed back.
    let err = TxBuf::pool(buf, HEADROOM..HEADROOM + 11).unwrap_err();
    assert_eq!(err.range, HEADROOM..HEADROOM + 11);
    let buf = err.buf;
    let reversed = std::ops::Range { start: 12, end: 4 };
    let err = TxBuf::pool(buf, reversed).unwrap_err();
    let buf = err.buf;
    // Headroom plus payload is fine.
    let tx = TxBuf::pool(buf, HEADROOM + 2..HEADROOM + 10).unwrap();
    assert_eq!(tx.len(), 8);
    assert_eq!(ring.tx_bytes(&tx), b"23456789");
    ring.recycle_tx(tx);
    assert_eq!(ring.buffers_lent(), 0);
}

#[test]
fn lent_memory_is_initialised_and_limited_to_what_was_received() {
    let mut ring = ring();
    let (c, _a, _b) = receive(&mut ring, b"abc");
    let buf = c.buf.unwrap();
    let slot = ring.slot(&buf);
    assert_eq!(slot.len(), HEADROOM + 3, "only headroom + received bytes");
    assert!(slot[..HEADROOM].iter().all(|&b| b == 0), "zeroed headroom");
    assert_eq!(&slot[HEADROOM..], b"abc");
    ring.recycle(buf);
}

#[test]
#[should_panic(expected = "belongs to another ring")]
fn a_buffer_of_another_ring_is_refused() {
    let mut first = ring();
    let mut second = ring();
    let (c, _a, _b) = receive(&mut first, b"x");
    let buf = c.buf.unwrap();
    second.recycle(buf);
}

#[test]
fn drop_with_operations_in_flight_cancels_and_reaps_them() {
    let mut ring = ring();
    let (mut a, b) = UnixStream::pair().unwrap();
    // The peer never reads and the socket buffer is full, so the send stays in flight.
    fill(&mut a);
    ring.send(a.as_raw_fd(), TxBuf::owned(vec![7u8; 8 << 20]), 1);
    let (_c, d) = UnixStream::pair().unwrap();
    ring.recv(d.as_raw_fd(), 2);
    ring.tick(Duration::from_secs(60), 3);
    let early = reap_for(&mut ring, Duration::from_millis(50));
    assert!(early.iter().all(|c| c.tag != 1), "the big send is pending");
    assert_eq!(ring.in_flight(), 3);
    let t = ring.shut_down(Duration::from_secs(2));
    assert_eq!(t.in_flight, 3);
    assert_eq!(
        t.leaked, 0,
        "every cancelled operation completed and was freed"
    );
    drop((a, b));
}

#[test]
fn drop_without_waiting_leaks_instead_of_freeing() {
    let mut ring = ring();
    let (mut a, mut b) = UnixStream::pair().unwrap();
    fill(&mut a);
    ring.send(a.as_raw_fd(), TxBuf::owned(vec![7u8; 8 << 20]), 1);
    let (_c, d) = UnixStream::pair().unwrap();
    ring.recv(d.as_raw_fd(), 2);
    ring.submit_and_wait(0).unwrap();
    let t = ring.shut_down(Duration::ZERO);
    assert_eq!(
        t.leaked, 2,
        "nothing reaped: the entries and the pool stay allocated"
    );
    // The kernel tears the requests down on its own; whatever it still does touches leaked
    // (still allocated) memory, never freed memory. Keep both ends busy meanwhile.
    let mut sink = [0u8; 65536];
    b.set_nonblocking(true).unwrap();
    while b.read(&mut sink).is_ok_and(|n| n > 0) {}
    let _ = a.write(b"late bytes");
}

/// A descriptor handed to another ring arrives there as that ring's own (tagged with the
/// payload), the sender learns it was delivered and no longer holds it; a handoff that cannot be
/// delivered (the target is not a ring) gives the descriptor back to the sender.
#[test]
fn a_descriptor_handed_to_another_ring_arrives_there_or_comes_back() {
    let mut a = ring();
    let mut b = ring();
    let (x, mut y) = UnixStream::pair().unwrap();
    let raw = x.as_raw_fd();
    a.send_fd(b.ring_fd(), x.into(), 42, 7);
    let sent = wait_for(&mut a, |c| c.tag == 7);
    let outcome = sent.iter().find(|c| c.tag == 7).unwrap();
    assert_eq!(outcome.result, 0, "delivered");
    assert!(outcome.fd.is_none(), "the sender no longer holds it");
    let mut got = wait_for(&mut b, |c| c.tag == 42);
    let arrived = got.iter_mut().find(|c| c.tag == 42).unwrap();
    assert_eq!(arrived.result, raw, "the same descriptor, now the target's");
    let fd = arrived.fd.take().expect("owned by the target");
    let mut x = UnixStream::from(fd);
    x.write_all(b"moved").unwrap();
    let mut buf = [0u8; 5];
    y.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"moved");

    let (not_a_ring, _peer) = UnixStream::pair().unwrap();
    let (z, _z_peer) = UnixStream::pair().unwrap();
    let z_raw = z.as_raw_fd();
    a.send_fd(not_a_ring.as_raw_fd(), z.into(), 43, 8);
    let mut back = wait_for(&mut a, |c| c.tag == 8);
    let outcome = back.iter_mut().find(|c| c.tag == 8).unwrap();
    assert!(outcome.result < 0, "not delivered: {}", outcome.result);
    let fd = outcome.fd.take().expect("handed back");
    assert_eq!(fd.as_raw_fd(), z_raw);
}
