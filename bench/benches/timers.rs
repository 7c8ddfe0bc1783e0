//! Cost of one worker tick with 10,000 and 100,000 idle tunnels: the old tick (walk every slot,
//! ask each tunnel for its deadline and check both sockets' linger deadlines, as `worker.rs` did
//! before the deadline heap) against the deadline heap of `ringway::timers` (pop what is due).
//! Idle tunnels are relaying tunnels with no bytes moving, without an idle timeout (no heap
//! entry at all) and with a one-hour idle timeout (one entry each, far in the future).
//! Run with `cargo bench -p ringway-bench --bench timers`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ringway::slab::{Key, Slab};
use ringway::timers::Deadlines;
use ringway_proto::route::{Route, RouteTable};
use ringway_proto::tunnel::{Tunnel, TunnelConfig};

const UPGRADE: &[u8] = b"GET /db HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

/// What the old tick looked at per slot: the tunnel and each socket's linger deadline.
struct OldSlot {
    tunnel: Tunnel,
    linger: [Option<Instant>; 2],
}

fn routes(idle: Option<Duration>) -> RouteTable {
    let route = Route {
        name: "db".into(),
        host: None,
        sni: None,
        path: "/db".into(),
        origin: SocketAddr::from(([127, 0, 0, 1], 5432)),
        idle_timeout: idle,
        pool: None,
        max_tunnels: None,
    };
    RouteTable::new(1, vec![route]).expect("one route")
}

/// A relaying tunnel with no traffic.
fn idle_tunnel(routes: &RouteTable, now: Instant) -> Tunnel {
    let mut t = Tunnel::new(TunnelConfig::default(), now);
    let mut head = UPGRADE.to_vec();
    t.handle_client_bytes(&mut head, routes, now);
    t.handle_origin_connected(now);
    while t.poll_intent().is_some() {}
    assert!(t.is_relaying());
    t
}

/// The old tick: O(slots).
fn old_tick(slots: &mut [Option<OldSlot>], now: Instant) -> usize {
    let mut touched = 0;
    for slot in slots.iter_mut().flatten() {
        if slot.tunnel.poll_timeout().is_some_and(|t| t <= now) {
            slot.tunnel.handle_timeout(now);
            touched += 1;
        }
        for l in &slot.linger {
            if l.is_some_and(|t| t <= now) {
                touched += 1;
            }
        }
    }
    touched
}

/// The new tick: pop what is due, O(expired · log n).
fn new_tick(heap: &mut Deadlines, now: Instant) -> usize {
    let mut n = 0;
    while let Some(e) = heap.pop_due(now) {
        black_box(e);
        n += 1;
    }
    n
}

fn tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("tick");
    g.sample_size(20);
    for (label, idle) in [
        ("no idle timeout", None),
        ("idle timeout 1 h", Some(Duration::from_secs(3600))),
    ] {
        let table = routes(idle);
        for n in [10_000usize, 100_000] {
            let now = Instant::now();
            let mut slots: Vec<Option<OldSlot>> = (0..n)
                .map(|_| {
                    Some(OldSlot {
                        tunnel: idle_tunnel(&table, now),
                        linger: [None, None],
                    })
                })
                .collect();
            let mut slab: Slab<Tunnel> = Slab::default();
            let mut heap = Deadlines::default();
            for _ in 0..n {
                let t = idle_tunnel(&table, now);
                let at = t.poll_timeout();
                let key: Key = slab.insert_with(|_| t);
                if let Some(at) = at {
                    heap.push(at, key);
                }
            }
            let at = now + Duration::from_millis(100);
            g.bench_with_input(BenchmarkId::new(format!("scan, {label}"), n), &n, |b, _| {
                b.iter(|| old_tick(black_box(&mut slots), at))
            });
            g.bench_with_input(BenchmarkId::new(format!("heap, {label}"), n), &n, |b, _| {
                b.iter(|| new_tick(black_box(&mut heap), at))
            });
            assert_eq!(heap.len(), if idle.is_some() { n } else { 0 });
        }
    }
    g.finish();
}

criterion_group!(benches, tick);
criterion_main!(benches);
