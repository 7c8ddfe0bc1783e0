//! The socket machine without a ring: operations are collected as the worker would submit them.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ringway_uring::TxBuf;

use super::{Expired, Socket, SocketLimits, SocketOp, Stage, COALESCE_BYTES};

type Op = SocketOp<u32>;

const LIMITS: SocketLimits = SocketLimits {
    backpressure: 100,
    linger: Duration::from_millis(500),
    send_stall: Duration::from_secs(3),
};

fn fd() -> OwnedFd {
    let (a, _b) = UnixStream::pair().unwrap();
    a.into()
}

fn open(now: Instant) -> Socket<u32> {
    Socket::new(Some(fd()), LIMITS, now)
}

/// An open socket whose backpressure cap (1 MiB) does not get in the way.
fn roomy(now: Instant) -> Socket<u32> {
    Socket::new(
        Some(fd()),
        SocketLimits {
            backpressure: 1 << 20,
            ..LIMITS
        },
        now,
    )
}

/// Drains `poll_op`, reporting recv ids as the worker does (ids start at 1).
fn ops(s: &mut Socket<u32>, now: Instant, paused: bool) -> Vec<Op> {
    let mut out = Vec::new();
    while let Some(op) = s.poll_op(now, paused, true) {
        if matches!(op, SocketOp::Recv) {
            s.recv_submitted(out.len() as u32 + 1);
        }
        out.push(op);
        assert!(out.len() < 64, "poll_op does not settle: {out:?}");
    }
    out
}

fn kinds(ops: &[Op]) -> Vec<&'static str> {
    ops.iter()
        .map(|o| match o {
            SocketOp::Recv => "recv",
            SocketOp::CancelRecv(_) => "cancel-recv",
            SocketOp::Send(..) => "send",
            SocketOp::Shutdown => "shutdown",
            SocketOp::CancelAll => "cancel-all",
            SocketOp::Close(_) => "close",
            SocketOp::Discard(_) => "discard",
        })
        .collect()
}

fn take_send(ops: Vec<Op>) -> TxBuf {
    ops.into_iter()
        .find_map(|o| match o {
            SocketOp::Send(t, _) => Some(t),
            _ => None,
        })
        .expect("a send")
}

#[test]
fn one_send_in_flight_in_order() {
    let now = Instant::now();
    let mut s = open(now);
    assert_eq!(kinds(&ops(&mut s, now, false)), ["recv"]);
    s.queue(TxBuf::owned(b"one".to_vec()), now).unwrap();
    s.queue(TxBuf::owned(b"two".to_vec()), now).unwrap();
    let first = take_send(ops(&mut s, now, false));
    assert_eq!(first.owned_bytes(), Some(&b"one"[..]));
    assert!(
        ops(&mut s, now, false).is_empty(),
        "second waits for the first"
    );
    // A short send puts the rest back at the head.
    let sent = s.on_send_completion(first, 1, now);
    assert!(sent.done.is_none() && sent.failed.is_none());
    let rest = take_send(ops(&mut s, now, false));
    assert_eq!(rest.owned_bytes(), Some(&b"ne"[..]));
    let sent = s.on_send_completion(rest, 2, now);
    assert!(sent.done.is_some());
    let second = take_send(ops(&mut s, now, false));
    assert_eq!(second.owned_bytes(), Some(&b"two"[..]));
}

#[test]
fn backpressure_pauses_reads_and_resumes_at_half() {
    let now = Instant::now();
    let mut s = open(now);
    assert_eq!(kinds(&ops(&mut s, now, false)), ["recv"]);
    s.queue_copy(&[0; 60], now);
    assert!(!s.is_paused());
    s.queue_copy(&[0; 60], now);
    assert!(s.is_paused(), "120 > 100: pause the source");
    assert!(s.is_paused());
    // The worker passes the pause to the socket it reads from; here: this one reads itself.
    let o = ops(&mut s, now, true);
    assert_eq!(kinds(&o), ["send", "cancel-recv"]);
    let tx = take_send(o);
    assert_eq!(tx.len(), 120, "two small copies coalesced into one send");
    s.on_recv_completion(true); // the cancelled recv's last completion
    let sent = s.on_send_completion(tx, 120, now);
    assert!(sent.done.is_some() && !s.is_paused());
    assert_eq!(kinds(&ops(&mut s, now, false)), ["recv"]);
}

#[test]
fn copies_coalesce_up_to_the_limit() {
    let now = Instant::now();
    let mut s = roomy(now);
    for _ in 0..64 {
        s.queue_copy(&[1; 1000], now);
    }
    let mut sends = Vec::new();
    while let Some(op) = s.poll_op(now, false, true) {
        if let SocketOp::Send(t, _) = op {
            assert!(t.len() <= COALESCE_BYTES);
            sends.push(t.len());
            s.on_send_completion(t, sends[sends.len() - 1] as i32, now);
        }
    }
    assert_eq!(sends.iter().sum::<usize>(), 64_000);
    assert_eq!(sends.len(), 4, "64 payloads in 4 sends: {sends:?}");
}

#[test]
fn only_the_latest_pong_waits() {
    let now = Instant::now();
    let mut s = open(now);
    ops(&mut s, now, false);
    s.queue(TxBuf::owned(b"data".to_vec()), now).unwrap();
    let data = take_send(ops(&mut s, now, false));
    for i in 0..1000u32 {
        s.queue_pong(i.to_be_bytes().to_vec(), now);
    }
    assert_eq!(s.queued(), 4 + 4, "one pending pong, whatever the flood");
    assert!(
        s.take_held_pong().is_none(),
        "over plain TCP the socket sends its pong itself"
    );
    s.on_send_completion(data, 4, now);
    let pong = take_send(ops(&mut s, now, false));
    assert_eq!(pong.owned_bytes(), Some(&999u32.to_be_bytes()[..]));
}

#[test]
fn under_records_one_pong_is_sealed_and_one_held_whatever_the_flood() {
    let now = Instant::now();
    let mut s = open(now);
    s.set_records();
    ops(&mut s, now, false);
    // The first pong is for the owner to seal and queue at once.
    s.queue_pong(b"p0".to_vec(), now);
    let first = s.take_held_pong().expect("nothing unsent: seal now");
    s.queue_sealed_pong([b"sealed-".as_ref(), &first].concat(), now)
        .unwrap();
    assert!(!s.has_pending_pong());
    let sealed = take_send(ops(&mut s, now, false));
    // Later pings while it is unsent: only the latest is held, and the client's reads pause.
    for i in 1..1000u32 {
        s.queue_pong(i.to_be_bytes().to_vec(), now);
        assert!(s.take_held_pong().is_none());
    }
    assert!(
        s.has_pending_pong(),
        "a held pong pauses the client's reads"
    );
    assert_eq!(
        s.queued(),
        9 + 4,
        "one sealed pong and one held, whatever the flood"
    );
    assert!(
        ops(&mut s, now, false).is_empty(),
        "a held pong is never sent as it is"
    );
    assert!(
        s.take_held_pong().is_none(),
        "not before the sealed one is out"
    );
    // A short send leaves part of the sealed pong unsent: still held.
    let sent = s.on_send_completion(sealed, 5, now);
    assert!(sent.done.is_none());
    assert!(s.take_held_pong().is_none());
    let rest = take_send(ops(&mut s, now, false));
    s.on_send_completion(rest, 4, now);
    assert_eq!(
        s.take_held_pong().as_deref(),
        Some(&999u32.to_be_bytes()[..]),
        "the latest, once the sealed one is out"
    );
    assert!(!s.has_pending_pong());
}

#[test]
fn under_records_a_held_pong_is_dropped_when_the_socket_closes() {
    let now = Instant::now();
    let mut s = open(now);
    s.set_records();
    ops(&mut s, now, false);
    s.queue_pong(b"p0".to_vec(), now);
    let first = s.take_held_pong().unwrap();
    s.queue_sealed_pong(first, now).unwrap();
    let sealed = take_send(ops(&mut s, now, false));
    s.queue_pong(b"p1".to_vec(), now);
    assert!(s.take_held_pong().is_none());
    s.request_close(now);
    s.on_send_completion(sealed, 2, now);
    assert!(
        s.take_held_pong().is_none(),
        "nothing is sealed after the close"
    );
    assert_eq!(kinds(&ops(&mut s, now, false)), ["shutdown"]);
    assert_eq!(s.queued(), 0);
}

#[test]
fn sealed_records_behind_a_backlog_coalesce() {
    let now = Instant::now();
    let mut s = roomy(now);
    ops(&mut s, now, false);
    // Nothing queued: the sealed buffer goes as it is.
    s.queue_sealed(vec![1; 100], now).unwrap();
    let first = take_send(ops(&mut s, now, false));
    assert_eq!(first.len(), 100);
    // Behind it, 1,000 small records share 16 KiB chunks instead of a buffer each.
    for _ in 0..1000 {
        s.queue_sealed(vec![2; 40], now).unwrap();
    }
    s.on_send_completion(first, 100, now);
    let mut sends = Vec::new();
    while let Some(op) = s.poll_op(now, false, true) {
        if let SocketOp::Send(t, _) = op {
            sends.push(t.len());
            s.on_send_completion(t, sends[sends.len() - 1] as i32, now);
        }
        assert!(sends.len() < 100, "bounded");
    }
    assert_eq!(sends.iter().sum::<usize>(), 40_000);
    assert!(sends.len() <= 4, "1,000 records in {} sends", sends.len());
}

#[test]
fn orderly_close_flushes_then_shuts_down_then_closes_after_eof() {
    let now = Instant::now();
    let mut s = open(now);
    ops(&mut s, now, false);
    s.queue(TxBuf::owned(b"last".to_vec()), now).unwrap();
    s.request_close(now);
    s.queue_copy(b"late", now);
    assert_eq!(s.queued(), 4, "nothing queued after close");
    let o = ops(&mut s, now, false);
    assert_eq!(kinds(&o), ["send"]);
    s.on_send_completion(take_send(o), 4, now);
    assert_eq!(kinds(&ops(&mut s, now, false)), ["shutdown"]);
    assert_eq!(s.stage(), Stage::ShutSent);
    // Reads go on (discarding) until the peer's EOF.
    assert!(
        !s.on_eof(),
        "EOF during teardown is not news for the session"
    );
    s.on_recv_completion(true);
    let o = ops(&mut s, now, false);
    assert_eq!(kinds(&o), ["close"]);
    assert!(!s.is_closed(), "the close itself is in flight");
    s.on_close_completion();
    assert!(s.is_closed());
}

#[test]
fn closing_cancels_every_operation_before_close() {
    let now = Instant::now();
    let mut s = open(now);
    ops(&mut s, now, false);
    s.queue(TxBuf::owned(vec![0; 10]), now).unwrap();
    let tx = take_send(ops(&mut s, now, false));
    s.queue(TxBuf::owned(vec![0; 10]), now).unwrap();
    s.abort();
    let o = ops(&mut s, now, false);
    assert_eq!(kinds(&o), ["discard", "cancel-all"]);
    // recv and send still in flight: no close yet.
    assert!(ops(&mut s, now, false).is_empty());
    s.on_recv_completion(true);
    assert!(ops(&mut s, now, false).is_empty());
    let sent = s.on_send_completion(tx, -libc::ECANCELED, now);
    assert!(
        sent.failed.is_none(),
        "already closing: not reported as a failure"
    );
    assert_eq!(kinds(&ops(&mut s, now, false)), ["close"]);
}

#[test]
fn a_peer_that_never_reads_stalls_after_send_stall() {
    let start = Instant::now();
    let mut s = open(start);
    ops(&mut s, start, false);
    assert_eq!(s.next_deadline(), None, "nothing queued: no stall timer");
    s.queue(TxBuf::owned(vec![0; 10]), start).unwrap();
    let tx = take_send(ops(&mut s, start, false));
    let due = s.next_deadline().expect("bytes pending: a stall deadline");
    assert_eq!(due, start + LIMITS.send_stall);
    // Progress pushes the deadline back.
    let t1 = start + Duration::from_secs(2);
    s.on_send_completion(tx, 5, t1);
    assert_eq!(s.next_deadline(), Some(t1 + LIMITS.send_stall));
    assert_eq!(s.handle_timeout(start + LIMITS.send_stall), None);
    let late = t1 + LIMITS.send_stall;
    assert!(!s.resets_on_close());
    assert_eq!(s.handle_timeout(late), Some(Expired::Stalled));
    assert_eq!(s.stage(), Stage::Closing);
    assert!(
        s.resets_on_close(),
        "bytes were lost: the peer gets a reset, not a clean end"
    );
    // An abort with nothing unsent is an ordinary close.
    let mut quiet = open(start);
    ops(&mut quiet, start, false);
    quiet.abort();
    assert!(!quiet.resets_on_close());
}

#[test]
fn draining_to_a_silent_peer_ends_at_the_linger_deadline() {
    let now = Instant::now();
    let mut s = open(now);
    ops(&mut s, now, false);
    s.queue(TxBuf::owned(vec![0; 10]), now).unwrap();
    s.request_close(now);
    let _tx = take_send(ops(&mut s, now, false));
    assert_eq!(s.next_deadline(), Some(now + LIMITS.linger));
    assert_eq!(s.handle_timeout(now + LIMITS.linger), Some(Expired::Linger));
    assert_eq!(kinds(&ops(&mut s, now, false)), ["cancel-all"]);
}

#[test]
fn an_unconnected_socket_closes_without_operations() {
    let now = Instant::now();
    let mut s = Socket::<u32>::new(None, LIMITS, now);
    assert!(
        ops(&mut s, now, false).is_empty(),
        "nothing to read before connect"
    );
    s.request_close(now);
    assert!(ops(&mut s, now, false).is_empty());
    assert!(s.is_closed());
}

#[test]
fn a_starved_recv_waits_for_buffers() {
    let now = Instant::now();
    let mut s = open(now);
    ops(&mut s, now, false);
    s.on_starved();
    s.on_recv_completion(true);
    assert!(s.poll_op(now, false, false).is_none(), "pool still low");
    assert!(matches!(s.poll_op(now, false, true), Some(SocketOp::Recv)));
}

#[test]
fn shut_write_sends_fin_after_the_queue_and_keeps_reading() {
    let now = Instant::now();
    let mut s = open(now);
    assert_eq!(kinds(&ops(&mut s, now, false)), ["recv"]);
    s.queue(TxBuf::owned(b"close frame".to_vec()), now).unwrap();
    s.shut_write();
    assert!(
        s.queue(TxBuf::owned(b"late".to_vec()), now).is_err(),
        "nothing after the FIN"
    );
    let o = ops(&mut s, now, false);
    assert_eq!(kinds(&o), ["send"], "the FIN waits for the queue");
    s.on_send_completion(take_send(o), 11, now);
    assert_eq!(kinds(&ops(&mut s, now, false)), ["shutdown"]);
    assert_eq!(s.stage(), Stage::Open, "still reading the peer's frames");
    assert!(ops(&mut s, now, false).is_empty(), "the recv stays armed");
    // The session ends: no second shutdown, only the wait for the peer's EOF.
    s.request_close(now);
    assert!(ops(&mut s, now, false).is_empty());
    assert_eq!(s.stage(), Stage::ShutSent);
    assert!(!s.on_eof());
    s.on_recv_completion(true);
    assert_eq!(kinds(&ops(&mut s, now, false)), ["close"]);
}

#[test]
fn only_a_small_pool_buffer_is_taken_back_for_merging() {
    let now = Instant::now();
    let mut s = open(now);
    s.queue(TxBuf::owned(vec![1; 10]), now).unwrap();
    assert!(
        s.pop_back_small_pool(4096).is_none(),
        "owned bytes are not a pool buffer"
    );
    assert_eq!(s.queued(), 10);
}

#[test]
fn only_the_send_right_before_the_fin_is_corked() {
    let now = Instant::now();
    let last = |o: &[Op]| {
        o.iter()
            .find_map(|o| match o {
                SocketOp::Send(_, last) => Some(*last),
                _ => None,
            })
            .expect("a send")
    };
    // Half-close: two messages, then the FIN.
    let mut s = open(now);
    ops(&mut s, now, false);
    s.queue(TxBuf::owned(b"echo".to_vec()), now).unwrap();
    s.queue(TxBuf::owned(b"close frame".to_vec()), now).unwrap();
    s.shut_write();
    let o = ops(&mut s, now, false);
    assert!(!last(&o), "more follows: sent at once");
    s.on_send_completion(take_send(o), 4, now);
    let o = ops(&mut s, now, false);
    assert!(last(&o), "only the FIN follows: corked, to leave with it");
    // A short send's rest is the last message too.
    s.on_send_completion(take_send(o), 5, now);
    let o = ops(&mut s, now, false);
    assert!(last(&o));
    s.on_send_completion(take_send(o), 6, now);
    assert_eq!(kinds(&ops(&mut s, now, false)), ["shutdown"]);
    // Drain on close: the last message is corked as well.
    let mut s = open(now);
    ops(&mut s, now, false);
    s.queue(TxBuf::owned(b"bye".to_vec()), now).unwrap();
    s.request_close(now);
    let o = ops(&mut s, now, false);
    assert!(last(&o));
    s.on_send_completion(take_send(o), 3, now);
    assert_eq!(kinds(&ops(&mut s, now, false)), ["shutdown"]);
    // No FIN wanted: never corked.
    let mut s = open(now);
    ops(&mut s, now, false);
    s.queue(TxBuf::owned(b"data".to_vec()), now).unwrap();
    assert!(!last(&ops(&mut s, now, false)));
}

#[test]
fn while_the_pool_is_low_no_socket_rearms_and_each_waits_in_line() {
    let now = Instant::now();
    let mut s = open(now);
    assert!(
        s.poll_op(now, false, false).is_none(),
        "a fresh socket waits too"
    );
    assert!(s.waits_for_buffers());
    assert!(matches!(s.poll_op(now, false, true), Some(SocketOp::Recv)));
    assert!(!s.waits_for_buffers());
    // A recv that just ended does not re-arm ahead of the line either.
    s.recv_submitted(1);
    s.on_recv_completion(true);
    assert!(s.poll_op(now, false, false).is_none());
    assert!(s.waits_for_buffers());
    // A paused socket does not want to read: it is not in the line.
    let mut p = open(now);
    assert!(p.poll_op(now, true, false).is_none());
    assert!(!p.waits_for_buffers());
}
