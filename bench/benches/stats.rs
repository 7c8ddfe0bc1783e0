//! Cost of recording one latency sample in a worker's figures (`ringway::stats::WorkerStats`:
//! the route's histogram for the phase, 1 µs to 1 h at 2 significant digits), the work the relay
//! does per send completion while `[admin] latency_histograms` is on, against the same call with
//! recording off. A relayed message costs a worker about 12 µs of CPU on this machine
//! (bench/scripts/hist-cost.sh), so this figure over 12 µs is the recording's share.
//! Run with `cargo bench -p ringway-bench --bench stats`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ringway::stats::{Phase, WorkerStats};

fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("stats_record");
    // Latencies spread over four decades, as relay samples are.
    let samples: Vec<Duration> = (0..4096u64)
        .map(|i| Duration::from_micros(1 + (i * 7919) % 20_000))
        .collect();
    for (name, on) in [("histograms_on", true), ("histograms_off", false)] {
        let mut stats = WorkerStats::new(on);
        let slot = stats.slot("/db");
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                stats.record(black_box(slot), Phase::RelayToClient, black_box(samples[i]));
            })
        });
    }
    g.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
