//! Allocate+release pairs across threads, memory untouched: one thread; two threads each
//! allocating and releasing its own (time per pair per thread); producer/consumer (allocate on
//! one thread, release on the other, through a bounded channel), with the bare channel measured
//! alone so the allocator's share can be computed. mimalloc and jemalloc are built from C, so
//! they are measured only with the `peers` feature:
//!
//! `cargo bench --features peers --bench threads -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::sync::mpsc::sync_channel;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

#[allow(dead_code)]
#[path = "../cli/src/peers.rs"]
mod peers;
use peers::Allocator;

const SIZES: [usize; 3] = [4 << 10, 64 << 10, 1 << 20];
/// Channel capacity as in `segpool bench`: deep enough that the threads rarely park, at most
/// 64 MiB of buffers in flight.
fn channel_bound(size: usize) -> usize {
    ((64 << 20) / size.max(1)).clamp(64, 1024)
}

fn label(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{}MiB", size >> 20)
    } else {
        format!("{}KiB", size >> 10)
    }
}

fn pairs<A: Allocator>(a: &A, size: usize, n: u64) {
    for _ in 0..n {
        let buf = a.alloc(size).expect("allocation failed");
        black_box(A::addr(&buf));
        a.release(buf, size);
    }
}

/// `threads` threads each run `iters` pairs at once; returns the mean time per thread.
fn each_own<A: Allocator>(a: &A, size: usize, threads: usize, iters: u64) -> Duration {
    let barrier = Barrier::new(threads);
    let total: Duration = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    pairs(a, size, 64); // warm this thread's cache
                    barrier.wait();
                    let t0 = Instant::now();
                    pairs(a, size, iters);
                    t0.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .sum()
    });
    total / threads as u32
}

fn producer_consumer<A: Allocator>(a: &A, size: usize, iters: u64) -> Duration {
    let (tx, rx) = sync_channel::<A::Buf>(channel_bound(size));
    let barrier = Barrier::new(2);
    let b = &barrier;
    std::thread::scope(|s| {
        let consumer = s.spawn(move || {
            b.wait();
            while let Ok(buf) = rx.recv() {
                a.release(buf, size);
            }
            Instant::now()
        });
        b.wait();
        let t0 = Instant::now();
        for _ in 0..iters {
            tx.send(a.alloc(size).expect("allocation failed"))
                .expect("consumer");
        }
        drop(tx);
        consumer.join().expect("consumer thread") - t0
    })
}

fn group<A: Allocator>(c: &mut Criterion, a: &A) {
    let mut g = c.benchmark_group(format!("threads/{}", a.name()));
    for size in SIZES {
        let l = label(size);
        g.bench_with_input(BenchmarkId::new("1_thread", &l), &size, |b, &s| {
            b.iter_custom(|iters| each_own(a, s, 1, iters))
        });
        g.bench_with_input(
            BenchmarkId::new("2_threads_each_own", &l),
            &size,
            |b, &s| b.iter_custom(|iters| each_own(a, s, 2, iters)),
        );
        g.bench_with_input(BenchmarkId::new("producer_consumer", &l), &size, |b, &s| {
            b.iter_custom(|iters| producer_consumer(a, s, iters))
        });
    }
    g.finish();
}

fn threads(c: &mut Criterion) {
    let pool = segpool::SegmentPool::new().expect("pool");
    group(c, &peers::Segpool(pool));
    group(c, &peers::ThreadLocalFloor);
    group(c, &peers::system());
    #[cfg(feature = "peers")]
    group(c, &peers::mimalloc());
    #[cfg(feature = "peers")]
    group(c, &peers::jemalloc());
    let mut g = c.benchmark_group("threads/channel");
    for size in SIZES {
        g.bench_with_input(
            BenchmarkId::new("producer_consumer", label(size)),
            &size,
            |b, &s| b.iter_custom(|iters| producer_consumer(&peers::Nothing, s, iters)),
        );
    }
    g.finish();
}

criterion_group!(benches, threads);
criterion_main!(benches);
