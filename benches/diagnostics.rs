//! The cost of each diagnostics level: allocate+release pairs on one thread, memory untouched,
//! 4 KiB and 64 KiB classes, under `Off`, `Sampled(1000)` and `Full`.
//!
//! `cargo bench --bench diagnostics -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use segpool::{Diagnostics, SegmentPool};

fn levels(c: &mut Criterion) {
    for (name, level) in [
        ("off", Diagnostics::Off),
        ("sampled_1000", Diagnostics::Sampled(1000)),
        ("full", Diagnostics::Full),
    ] {
        let pool = SegmentPool::builder()
            .diagnostics(level)
            .build()
            .expect("pool");
        let mut g = c.benchmark_group(format!("diagnostics/{name}"));
        for size in [4usize << 10, 64 << 10] {
            g.bench_with_input(
                BenchmarkId::from_parameter(format!("{}KiB", size >> 10)),
                &size,
                |b, &s| {
                    b.iter(|| {
                        let seg = pool.allocate(s).expect("allocation failed");
                        black_box(seg.as_ptr());
                        drop(seg);
                    })
                },
            );
        }
        g.finish();
    }
}

criterion_group!(benches, levels);
criterion_main!(benches);
