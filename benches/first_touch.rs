//! Allocate fresh segments and write one byte in every 4 KiB page of them: the cost of the page
//! faults a new region pays, with transparent huge pages (the default, `MADV_HUGEPAGE`), without
//! (`huge_pages(false)`), and prefaulted at mapping time (`prefault(true)`, `MADV_POPULATE_WRITE`).
//!
//! Each iteration builds a new pool, so every segment is carved from freshly mapped memory; only
//! the allocations and the writes are timed (mapping included, unmapping not).
//!
//! `cargo bench --bench first_touch -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use segpool::{Segment, SegmentPool};

/// Bytes touched per iteration: whole regions of both classes measured (2 MiB regions of 64 KiB
/// slices, 32 MiB regions of 1 MiB slices), so prefaulting populates nothing that is not touched.
const TOUCHED: usize = 32 << 20;
const PAGE: usize = 4096;

fn touch_fresh(huge: bool, prefault: bool, size: usize) -> Duration {
    let pool = SegmentPool::builder()
        .huge_pages(huge)
        .prefault(prefault)
        .build()
        .expect("pool");
    let mut held: Vec<Segment> = Vec::with_capacity(TOUCHED / size);
    let t0 = Instant::now();
    for _ in 0..TOUCHED / size {
        let mut seg = pool.allocate(size).expect("allocate");
        for page in seg.chunks_mut(PAGE) {
            page[0] = 1;
        }
        held.push(seg);
    }
    let elapsed = t0.elapsed();
    black_box(&held);
    drop(held);
    drop(pool);
    elapsed
}

fn first_touch(c: &mut Criterion) {
    let mut g = c.benchmark_group("first_touch");
    g.throughput(Throughput::Bytes(TOUCHED as u64));
    g.sample_size(10);
    let configs = [
        ("huge_pages", true, false),
        ("no_huge_pages", false, false),
        ("prefault_huge_pages", true, true),
        ("prefault_no_huge_pages", false, true),
    ];
    for size in [64 << 10, 1 << 20] {
        for (name, huge, prefault) in configs {
            let id = BenchmarkId::new(name, format!("{}KiB", size >> 10));
            g.bench_function(id, |b| {
                b.iter_custom(|iters| (0..iters).map(|_| touch_fresh(huge, prefault, size)).sum())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, first_touch);
criterion_main!(benches);
