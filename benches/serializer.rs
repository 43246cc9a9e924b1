//! A realistic workload (`benches/workloads/serializer.rs`): N threads serialize records (a few
//! hundred bytes each) into 64 KiB buffers until full, then hand each full buffer to one writer
//! thread that checksums its bytes and releases it. segpool segments against `Vec<u8>` buffers
//! from the global allocator (glibc here). Throughput is records per second. `segpool bench`
//! measures the same workload against the same peers and lgalloc, with 4 MiB blocks as well.
//!
//! `cargo bench --bench serializer -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use segpool::SegmentPool;

#[path = "workloads/serializer.rs"]
mod workload;

use workload::{pipeline, RECORDS};

const BUFFER: usize = 64 << 10;

fn serializer(c: &mut Criterion) {
    let mut g = c.benchmark_group("serializer");
    g.throughput(Throughput::Elements(RECORDS));
    g.sample_size(20);
    let pool = SegmentPool::new().expect("pool");
    for threads in [1u64, 2] {
        g.bench_with_input(BenchmarkId::new("segpool", threads), &threads, |b, &n| {
            let new = || pool.allocate(BUFFER).expect("allocate");
            b.iter(|| black_box(pipeline(n, BUFFER, &new)))
        });
        g.bench_with_input(BenchmarkId::new("vec", threads), &threads, |b, &n| {
            let new = || Vec::with_capacity(BUFFER);
            b.iter(|| black_box(pipeline(n, BUFFER, &new)))
        });
    }
    g.finish();
}

criterion_group!(benches, serializer);
criterion_main!(benches);
