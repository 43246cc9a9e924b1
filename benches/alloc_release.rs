//! Allocate+release pairs on one thread, memory untouched, every size class: segpool against
//! glibc (page-aligned), mimalloc, jemalloc, one mmap per buffer, and the thread-local floor.
//! mimalloc and jemalloc are built from C, so only with the `peers` feature:
//!
//! `cargo bench --features peers --bench alloc_release -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

#[allow(dead_code)]
#[path = "../cli/src/peers.rs"]
mod peers;
use peers::Allocator;

const CLASSES: [usize; 5] = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20];

fn label(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{}MiB", size >> 20)
    } else {
        format!("{}KiB", size >> 10)
    }
}

fn pair<A: Allocator>(c: &mut Criterion, a: &A) {
    let mut g = c.benchmark_group(format!("alloc_release/{}", a.name()));
    for size in CLASSES {
        g.bench_with_input(BenchmarkId::from_parameter(label(size)), &size, |b, &s| {
            b.iter(|| {
                let buf = a.alloc(s).expect("allocation failed");
                black_box(A::addr(&buf));
                a.release(buf, s);
            })
        });
    }
    g.finish();
}

fn alloc_release(c: &mut Criterion) {
    let pool = segpool::SegmentPool::new().expect("pool");
    pair(c, &peers::Segpool(pool));
    pair(c, &peers::ThreadLocalFloor);
    pair(c, &peers::system());
    #[cfg(feature = "peers")]
    pair(c, &peers::mimalloc());
    #[cfg(feature = "peers")]
    pair(c, &peers::jemalloc());
    pair(c, &peers::MmapPerBuffer);
}

criterion_group!(benches, alloc_release);
criterion_main!(benches);
