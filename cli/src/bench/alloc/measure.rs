//! Timing the allocator cells: the rows of both tables, each allocator's pairs in one of the
//! three patterns, and the count of mapping calls above the largest class.

use std::hint::black_box;
use std::sync::mpsc::sync_channel;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{channel_bound, Pattern, Row, ABOVE_LARGEST, LARGE_PC_SIZES, LARGE_SIZES, PC_PAIRS};
use crate::peers::{self, Allocator};
use crate::Error;

/// Pairs between two reads of the clock.
const BATCH: u64 = 256;

/// System calls per allocate+release pair, by kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallsPerPair {
    pub pairs: u64,
    pub mmap: f64,
    pub munmap: f64,
    /// Every other kind (`madvise`, `mprotect`, `msync`, `mlock`).
    pub other: f64,
}

/// Counts the mapping system calls of `PAIRS` allocate+release pairs above the largest class on
/// a fresh default pool, after one pair of warm-up. The counters are process-wide: nothing else
/// runs meanwhile.
pub fn count_above_largest() -> Result<CallsPerPair, Error> {
    const PAIRS: u64 = 1000;
    let pool = segpool::SegmentPool::new()?;
    drop(pool.allocate(ABOVE_LARGEST)?);
    let before = segpool::diagnostics::mapping_calls();
    for _ in 0..PAIRS {
        black_box(pool.allocate(ABOVE_LARGEST)?);
    }
    let c = segpool::diagnostics::mapping_calls().since(&before);
    let per = |n: u64| n as f64 / PAIRS as f64;
    Ok(CallsPerPair {
        pairs: PAIRS,
        mmap: per(c.mmap),
        munmap: per(c.munmap),
        other: per(c.total() - c.mmap - c.munmap),
    })
}

/// The main table: every pattern at every size, segpool against the floor, glibc, mimalloc,
/// jemalloc and mmap (and the channel, in the producer/consumer rows), untouched.
pub fn measure(runs: u32, per_cell: Duration) -> Result<Vec<Row>, Error> {
    let pool = segpool::SegmentPool::new()?;
    let segpool = peers::Segpool(pool);
    let floor = peers::ThreadLocalFloor;
    let glibc = peers::system();
    let mimalloc = peers::mimalloc();
    let jemalloc = peers::jemalloc();
    let mmap = peers::MmapPerBuffer;
    let channel = peers::Nothing;

    let mut rows: Vec<Row> = Pattern::ALL
        .iter()
        .flat_map(|&p| {
            p.sizes()
                .into_iter()
                .map(move |size| Row::new(p, size, false))
        })
        .collect();
    for run in 0..runs {
        eprint!("\rrun {}/{runs}", run + 1);
        for row in rows.iter_mut() {
            let pc = row.pattern == Pattern::ProducerConsumer;
            // The contenders take turns going first from one run to the next, so whatever the
            // previous cell leaves behind (caches, frequency, the other core's state) favours
            // none of them.
            for k in 0..6 {
                match (k + run as usize) % 6 {
                    0 if pc => time_pairs_with_channel(row, &segpool, &channel, run, per_cell)?,
                    0 => time_cell(row, &segpool, per_cell)?,
                    1 => time_cell(row, &floor, per_cell)?,
                    2 => time_cell(row, &glibc, per_cell)?,
                    3 if peers::C_PEERS => time_cell(row, &mimalloc, per_cell)?,
                    4 if peers::C_PEERS => time_cell(row, &jemalloc, per_cell)?,
                    // Without the `peers` feature (only the tests measure then).
                    3 | 4 => {}
                    _ => time_cell(row, &mmap, per_cell)?,
                }
            }
        }
    }
    eprintln!();
    for row in &mut rows {
        row.cells.settle();
    }
    Ok(rows)
}

/// The large section: like [`measure`], with lgalloc among the peers, at large sizes, untouched
/// and touched. A pool of its own, so the main table's pool is not mixed in.
pub fn measure_large(runs: u32, per_cell: Duration) -> Result<Vec<Row>, Error> {
    let segpool = peers::Segpool(segpool::SegmentPool::new()?);
    let lgalloc = peers::lgalloc();
    let mimalloc = peers::mimalloc();
    let jemalloc = peers::jemalloc();
    let channel = peers::Nothing;
    let mut rows = Vec::new();
    for touched in [false, true] {
        for pattern in [Pattern::OneThread, Pattern::TwoThreads] {
            for size in LARGE_SIZES {
                rows.push(Row::new(pattern, size, touched));
            }
        }
    }
    rows.extend(
        LARGE_PC_SIZES
            .iter()
            .map(|&s| Row::new(Pattern::ProducerConsumer, s, false)),
    );
    for run in 0..runs {
        eprint!("\rlarge sizes: run {}/{runs}", run + 1);
        for row in rows.iter_mut() {
            let pc = row.pattern == Pattern::ProducerConsumer;
            for k in 0..4 {
                match (k + run as usize) % 4 {
                    0 if pc => time_pairs_with_channel(row, &segpool, &channel, run, per_cell)?,
                    0 => time_cell(row, &segpool, per_cell)?,
                    1 => time_cell(row, &lgalloc, per_cell)?,
                    2 if peers::C_PEERS => time_cell(row, &mimalloc, per_cell)?,
                    3 if peers::C_PEERS => time_cell(row, &jemalloc, per_cell)?,
                    _ => {}
                }
            }
        }
    }
    eprintln!();
    for row in &mut rows {
        row.cells.settle();
    }
    Ok(rows)
}

/// Times one cell of `a` in `row` and records it under `a`'s name (its column).
fn time_cell<A: Allocator>(row: &mut Row, a: &A, per_cell: Duration) -> Result<(), Error> {
    let ns = time(a, row.pattern, row.size, row.touched, per_cell)?;
    row.cells.record(a.name(), ns);
    Ok(())
}

/// One run of a producer/consumer row's segpool and channel cells: `PC_PAIRS` pairs of
/// half-length cells timed back to back, segpool first in even runs and second in odd ones, so
/// neither side of a pair is always the one that follows the other.
fn time_pairs_with_channel(
    row: &mut Row,
    segpool: &peers::Segpool,
    channel: &peers::Nothing,
    run: u32,
    per_cell: Duration,
) -> Result<(), Error> {
    let (p, s, t) = (row.pattern, row.size, row.touched);
    let half = per_cell / 2;
    for _ in 0..PC_PAIRS {
        let (sp, ch) = if run % 2 == 0 {
            let sp = time(segpool, p, s, t, half)?;
            (sp, time(channel, p, s, t, half)?)
        } else {
            let ch = time(channel, p, s, t, half)?;
            (time(segpool, p, s, t, half)?, ch)
        };
        row.cells.record(segpool.name(), sp);
        row.cells.record(channel.name(), ch);
        row.paired_over_channel_ns.push(sp - ch);
    }
    Ok(())
}

/// ns per pair of `a` in pattern `p` at `size` (writing one byte per page of every buffer when
/// `touch`), timed for about `per_cell`.
fn time<A: Allocator>(
    a: &A,
    p: Pattern,
    size: usize,
    touch: bool,
    per_cell: Duration,
) -> Result<f64, Error> {
    match p {
        Pattern::OneThread => own_pairs(a, size, touch, per_cell, None),
        Pattern::TwoThreads => {
            let barrier = Barrier::new(2);
            let b = &barrier;
            std::thread::scope(|s| {
                let t = s.spawn(move || own_pairs(a, size, touch, per_cell, Some(b)));
                let mine = own_pairs(a, size, touch, per_cell, Some(b));
                let theirs = t.join().map_err(|_| "benchmark thread panicked")?;
                Ok((mine? + theirs?) / 2.0)
            })
        }
        Pattern::ProducerConsumer => producer_consumer(a, size, per_cell),
    }
    .map_err(|e: Error| format!("{} ({}, {size} bytes): {e}", a.name(), p.label()).into())
}

/// Writes one byte into every 4 KiB page of the `size` bytes at `addr`.
fn touch_pages(addr: usize, size: usize) {
    for off in (0..size).step_by(peers::PAGE) {
        // SAFETY: `addr` is a buffer of at least `size` bytes that the caller owns and that no
        // one else reads or writes.
        unsafe { std::ptr::write_volatile((addr + off) as *mut u8, 1) };
    }
}

/// Allocate+release pairs on this thread (writing one byte per page of each buffer when
/// `touch`); after warming up, waits at `start` (if any) so two threads time the same period.
fn own_pairs<A: Allocator>(
    a: &A,
    size: usize,
    touch: bool,
    per_cell: Duration,
    start: Option<&Barrier>,
) -> Result<f64, Error> {
    let pairs = |n: u64| -> Result<(), String> {
        for _ in 0..n {
            let b = a.alloc(size)?;
            if touch {
                touch_pages(A::addr(&b), size);
            }
            black_box(A::addr(&b));
            a.release(b, size);
        }
        Ok(())
    };
    // Touched pairs cost microseconds to milliseconds: fewer per clock read.
    let batch = if touch {
        (BATCH * (64 << 10) / size as u64).max(1)
    } else {
        BATCH
    };
    pairs(batch)?;
    if let Some(b) = start {
        b.wait();
    }
    let t0 = Instant::now();
    let mut done = 0u64;
    loop {
        pairs(batch)?;
        done += batch;
        let el = t0.elapsed();
        if el >= per_cell {
            return Ok(el.as_nanos() as f64 / done as f64);
        }
    }
}

/// One thread allocates and sends through a bounded channel; another receives and releases.
/// ns per pair = time until the consumer has released everything / pairs.
fn producer_consumer<A: Allocator>(a: &A, size: usize, per_cell: Duration) -> Result<f64, Error> {
    let (tx, rx) = sync_channel::<A::Buf>(channel_bound(size));
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let b = &barrier;
        let consumer = s.spawn(move || {
            // Warm-up: the producer sends BATCH buffers before the barrier.
            for _ in 0..BATCH {
                match rx.recv() {
                    Ok(buf) => a.release(buf, size),
                    Err(_) => return None,
                }
            }
            b.wait();
            let mut n = 0u64;
            while let Ok(buf) = rx.recv() {
                a.release(buf, size);
                n += 1;
            }
            Some((Instant::now(), n))
        });
        let produced = (|| -> Result<(Instant, u64), String> {
            for _ in 0..BATCH {
                tx.send(a.alloc(size)?).map_err(|_| "consumer is gone")?;
            }
            b.wait();
            let t0 = Instant::now();
            let mut n = 0u64;
            loop {
                for _ in 0..BATCH {
                    tx.send(a.alloc(size)?).map_err(|_| "consumer is gone")?;
                }
                n += BATCH;
                if t0.elapsed() >= per_cell {
                    return Ok((t0, n));
                }
            }
        })();
        drop(tx);
        let consumed = consumer.join().map_err(|_| "consumer thread panicked")?;
        let (t0, n) = produced?;
        let (end, got) = consumed.ok_or("consumer ended early")?;
        if got != n {
            return Err(format!("consumer released {got} of {n} buffers").into());
        }
        Ok((end - t0).as_nanos() as f64 / n as f64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_consumer_rows_pair_segpool_with_the_channel() {
        let rows = measure(2, Duration::from_millis(2)).unwrap();
        for row in &rows {
            let cells = |name: &str| &row.cells.0.iter().find(|c| c.name == name).unwrap().runs_ns;
            if row.pattern != Pattern::ProducerConsumer {
                assert!(row.paired_over_channel_ns.is_empty());
                assert_eq!(cells("segpool").len(), 2);
                continue;
            }
            let (sp, ch) = (cells("segpool"), cells("channel"));
            assert_eq!(sp.len(), 2 * PC_PAIRS as usize);
            assert_eq!(ch.len(), 2 * PC_PAIRS as usize);
            assert_eq!(cells("glibc").len(), 2);
            let expected: Vec<f64> = sp.iter().zip(ch).map(|(s, c)| s - c).collect();
            assert_eq!(row.paired_over_channel_ns, expected);
        }
    }
}
