//! Criterion micro-benchmarks of the protocol core: unmask throughput (aligned and unaligned,
//! 16 B to 1 MiB), frame header parse and emit, Upgrade request parse, decoder over a stream of
//! frames, and route lookup in a 10,000-route table. Run with `cargo bench -p ringway-bench`.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringway_proto::route::{Route, RouteTable};
use ringway_proto::ws::decoder::{Decoder, DecoderLimits};
use ringway_proto::ws::frame::FrameHeader;
use ringway_proto::ws::handshake::parse_upgrade;
use ringway_proto::ws::mask::apply_mask;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    for size in [
        16usize,
        64,
        256,
        1024,
        4096,
        16 * 1024,
        64 * 1024,
        1024 * 1024,
    ] {
        g.throughput(Throughput::Bytes(size as u64));
        // One extra byte so the unaligned case starts at an odd address.
        let mut buf = vec![0xa5u8; size + 64];
        let aligned_at = buf.as_ptr().align_offset(64);
        g.bench_with_input(BenchmarkId::new("aligned", size), &size, |b, &n| {
            b.iter(|| apply_mask(black_box(&mut buf[aligned_at..aligned_at + n]), KEY, 0))
        });
        g.bench_with_input(BenchmarkId::new("unaligned", size), &size, |b, &n| {
            b.iter(|| {
                apply_mask(
                    black_box(&mut buf[aligned_at + 1..aligned_at + 1 + n]),
                    KEY,
                    3,
                )
            })
        });
    }
    g.finish();
}

fn frame_header(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_header");
    g.throughput(Throughput::Elements(1));
    for len in [64u64, 16 * 1024, 1 << 20] {
        let h = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: 2,
            mask: Some(KEY),
            payload_len: len,
        };
        let mut wire = [0u8; FrameHeader::MAX_LEN];
        let n = h.emit(&mut wire);
        g.bench_with_input(BenchmarkId::new("parse", len), &wire[..n], |b, w| {
            b.iter(|| FrameHeader::parse(black_box(w)))
        });
        g.bench_with_input(BenchmarkId::new("emit", len), &h, |b, h| {
            let mut out = [0u8; FrameHeader::MAX_LEN];
            b.iter(|| black_box(h).emit(black_box(&mut out)))
        });
    }
    g.finish();
}

fn decoder(c: &mut Criterion) {
    let mut g = c.benchmark_group("decoder");
    for (count, size) in [(256usize, 64usize), (4, 16 * 1024)] {
        let mut stream = Vec::new();
        for _ in 0..count {
            let h = FrameHeader {
                fin: true,
                rsv: 0,
                opcode: 2,
                mask: Some(KEY),
                payload_len: size as u64,
            };
            let mut hdr = [0u8; FrameHeader::MAX_LEN];
            let n = h.emit(&mut hdr);
            stream.extend_from_slice(&hdr[..n]);
            stream.extend(std::iter::repeat_n(0x5au8, size));
        }
        g.throughput(Throughput::Bytes(stream.len() as u64));
        let id = format!("{count}x{size}B");
        g.bench_function(BenchmarkId::new("decode_in_place", id), |b| {
            let mut work = stream.clone();
            b.iter(|| {
                work.copy_from_slice(&stream);
                let mut d = Decoder::new(DecoderLimits::default());
                let mut pos = 0;
                let mut data = 0;
                while pos < work.len() {
                    let r = d.decode(&mut work[pos..]);
                    data += r.data.len();
                    if r.consumed == 0 {
                        break;
                    }
                    pos += r.consumed;
                }
                black_box(data)
            })
        });
    }
    g.finish();
}

fn upgrade_parse(c: &mut Criterion) {
    let req = b"GET /db?address=db.internal:5432 HTTP/1.1\r\nHost: edge.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\nOrigin: https://app.example.com\r\n\r\n";
    let mut g = c.benchmark_group("upgrade");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_and_accept_key", |b| {
        b.iter(|| parse_upgrade(black_box(req), 8192))
    });
    g.finish();
}

fn route_lookup(c: &mut Criterion) {
    let routes: Vec<Route> = (0..10_000)
        .map(|i| Route {
            name: format!("r{i}"),
            host: (i % 3 == 0).then(|| format!("tenant{}.example.com", i % 100)),
            sni: None,
            path: format!("/t{}/db{}", i % 500, i),
            origin: SocketAddr::from(([127, 0, 0, 1], 5432)),
            idle_timeout: None,
            pool: None,
            max_tunnels: None,
        })
        .collect();
    let table = RouteTable::new(1, routes).expect("valid table");
    let mut g = c.benchmark_group("route_lookup");
    g.throughput(Throughput::Elements(1));
    g.bench_function("10k_routes_hit", |b| {
        b.iter(|| {
            table.lookup(
                black_box(Some("edge.example.com")),
                black_box("/t7/db7507/x"),
            )
        })
    });
    g.bench_function("10k_routes_miss", |b| {
        b.iter(|| table.lookup(black_box(None), black_box("/nope/at/all")))
    });
    g.finish();
}

criterion_group!(
    benches,
    unmask,
    frame_header,
    decoder,
    upgrade_parse,
    route_lookup
);
criterion_main!(benches);
