//! Purging: free slices inside regions that stay mapped give their pages back, by `trim()` and
//! after the decay time, read zero afterwards, and are never handed out half-purged.

mod common;

use std::time::{Duration, Instant};

use segpool::{Backing, Segment, SegmentPool};

const PAGE: usize = 4096;
const MIB: usize = 1 << 20;

/// Allocates `total` bytes of 4 KiB segments, writes every byte, then releases all but every
/// tenth: every region keeps live slices, so none can be unmapped. Returns the live ones.
fn fill_then_release_90_percent(pool: &SegmentPool, total: usize) -> Vec<Segment> {
    let mut segs: Vec<Segment> = (0..total / PAGE)
        .map(|_| pool.allocate(PAGE).unwrap())
        .collect();
    for (i, s) in segs.iter_mut().enumerate() {
        s.fill(i as u8 | 1);
    }
    let live: Vec<Segment> = segs
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| (i % 10 == 0).then_some(s))
        .collect();
    live
}

/// The target: resident at most in use + 10% + 4 MiB.
fn target(in_use: usize) -> usize {
    in_use + in_use / 10 + 4 * MIB
}

/// Polls `f` until it returns true or `limit` has passed; returns whether it did.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn trim_purges_free_slices_inside_live_regions() {
    let pool = SegmentPool::builder()
        .size_classes(&[PAGE])
        .purge_decay(None)
        .build()
        .unwrap();
    let live = fill_then_release_90_percent(&pool, 100 * MIB);
    let before = pool.stats();
    assert!(
        before.resident_bytes >= 90 * MIB,
        "the written memory is resident: {before}"
    );
    assert_eq!(pool.trim(), 0, "no region is empty, none is unmapped");
    let after = pool.stats();
    assert_eq!(after.mapped_bytes, before.mapped_bytes, "{after}");
    assert!(
        after.resident_bytes <= target(after.in_use_bytes),
        "resident {} for {} in use after trim:\n{after}",
        after.resident_bytes,
        after.in_use_bytes
    );
    assert!(after.purged_bytes >= 80 * MIB as u64, "{after}");
    // The live segments kept their bytes.
    for s in &live {
        let b = s[0];
        assert!(s.iter().all(|&x| x == b) && b & 1 == 1);
    }
    // A second trim finds nothing more to purge.
    pool.trim();
    assert_eq!(pool.stats().purged_bytes, after.purged_bytes);
}

#[test]
fn resident_follows_use_after_the_decay_time_without_any_call() {
    let decay = Duration::from_millis(200);
    let pool = SegmentPool::builder()
        .size_classes(&[PAGE])
        .purge_decay(decay)
        .build()
        .unwrap();
    let _live = fill_then_release_90_percent(&pool, 100 * MIB);
    let released = Instant::now();
    let before = pool.stats();
    // `stats()` only reads (mincore); it purges nothing. The purger adds a pass's bytes to
    // `purged_bytes` when the pass ends, after the pages went: both must be seen.
    let ok = eventually(decay + Duration::from_secs(1), || {
        let s = pool.stats();
        s.resident_bytes <= target(s.in_use_bytes) && s.purged_bytes > 0
    });
    let s = pool.stats();
    assert!(
        ok,
        "resident {} for {} in use, {:?} after the release:\n{s}",
        s.resident_bytes,
        s.in_use_bytes,
        released.elapsed()
    );
    assert!(
        s.purged_bytes > 0,
        "nothing purged; before:\n{before}\nafter:\n{s}"
    );
}

#[test]
fn a_purged_slice_reads_zero_and_allocate_zeroed_leaves_it_untouched() {
    let pool = SegmentPool::builder()
        .size_classes(&[PAGE])
        .region_size(2 * MIB)
        .thread_cache(false)
        .huge_pages(false)
        .purge_decay(None)
        .build()
        .unwrap();
    // One region of 512 slices, every byte written; keep one live so the region stays mapped.
    let mut segs: Vec<Segment> = (0..512).map(|_| pool.allocate(PAGE).unwrap()).collect();
    for s in &mut segs {
        s.fill(0xAB);
    }
    let keep = segs.remove(0);
    drop(segs);
    pool.trim();
    let purged = pool.stats();
    assert_eq!(purged.purged_bytes, 511 * PAGE as u64, "{purged}");
    assert_eq!(purged.resident_bytes, PAGE, "{purged}");
    // `allocate_zeroed` hands the purged slices out without writing them: had it cleared them,
    // every page would be resident again.
    let zeroed: Vec<Segment> = (0..511)
        .map(|_| pool.allocate_zeroed(PAGE).unwrap())
        .collect();
    let after = pool.stats();
    assert_eq!(
        after.resident_bytes, PAGE,
        "allocate_zeroed wrote purged slices:\n{after}"
    );
    // And they do read zero.
    for s in &zeroed {
        assert!(s.iter().all(|&b| b == 0));
    }
    // Written again and released, they are dirty: `allocate_zeroed` must clear them.
    let mut zeroed = zeroed;
    for s in &mut zeroed {
        s.fill(0xCD);
    }
    drop(zeroed);
    let again: Vec<Segment> = (0..511)
        .map(|_| pool.allocate_zeroed(PAGE).unwrap())
        .collect();
    for s in &again {
        assert!(s.iter().all(|&b| b == 0));
    }
    // Plain `allocate` of purged slices reads zero too.
    drop(again);
    pool.trim();
    let plain: Vec<Segment> = (0..511).map(|_| pool.allocate(PAGE).unwrap()).collect();
    for s in &plain {
        assert!(s.iter().all(|&b| b == 0));
    }
    assert!(keep.iter().all(|&b| b == 0xAB));
}

/// The region files of `dir`'s pool, found through `/proc/self/map_files` (they have no name),
/// and their allocated bytes (`st_blocks`).
fn region_file_blocks(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let dir = dir.to_str().unwrap();
    maps.lines()
        .filter(|l| l.contains(dir))
        .map(|l| {
            let range = l.split_whitespace().next().unwrap();
            let meta = std::fs::metadata(format!("/proc/self/map_files/{range}")).unwrap();
            meta.blocks() * 512
        })
        .sum()
}

#[test]
fn file_backed_regions_punch_holes() {
    let dir = tempfile::tempdir().unwrap();
    let pool = SegmentPool::builder()
        .size_classes(&[PAGE])
        .backing(Backing::File(dir.path().into()))
        .purge_decay(None)
        .build()
        .unwrap();
    let live = fill_then_release_90_percent(&pool, 16 * MIB);
    let before = region_file_blocks(dir.path());
    assert!(
        before >= 16 * MIB as u64,
        "the files are reserved: {before}"
    );
    pool.trim();
    let after = region_file_blocks(dir.path());
    assert!(
        after <= before - 12 * MIB as u64,
        "st_blocks went from {before} to {after} bytes"
    );
    for s in &live {
        let b = s[0];
        assert!(s.iter().all(|&x| x == b) && b & 1 == 1);
    }
    // A purged file slice reads zero.
    let s = pool.allocate(PAGE).unwrap();
    assert!(s.iter().all(|&b| b == 0));
}

#[test]
fn slices_purged_while_other_threads_allocate_are_never_handed_out_half_purged() {
    let pool = SegmentPool::builder()
        .size_classes(&[PAGE, 16 * 1024])
        .region_size(256 * 1024)
        .purge_decay(Duration::ZERO)
        .huge_pages(false)
        .build()
        .unwrap();
    let stop = &std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2u8 {
            let pool = &pool;
            s.spawn(move || {
                let mut held: Vec<(Segment, u8)> = Vec::new();
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n = n.wrapping_add(1);
                    let size = if n % 3 == 0 { 16 * 1024 } else { PAGE };
                    let mut seg = if n % 2 == 0 {
                        let seg = pool.allocate_zeroed(size).unwrap();
                        assert!(seg.iter().all(|&b| b == 0), "allocate_zeroed not zero");
                        seg
                    } else {
                        pool.allocate(size).unwrap()
                    };
                    let tag = (n as u8) ^ (t << 7) | 1;
                    seg.fill(tag);
                    held.push((seg, tag));
                    if held.len() > 200 || n % 7 == 0 {
                        let keep = held.len() / 4;
                        for (seg, tag) in held.drain(keep..) {
                            assert!(
                                seg.iter().all(|&b| b == tag),
                                "a live segment's bytes changed"
                            );
                        }
                    }
                }
            });
        }
        let pool = &pool;
        s.spawn(move || {
            // Trim until 50 trims have purged something while the other threads run (how many
            // trims that takes depends on the scheduling: the count, not the time, is what the
            // test needs). The deadline only turns a purge that never happens into a failure.
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            let mut purging_trims = 0;
            while purging_trims < 50 && std::time::Instant::now() < deadline {
                let before = pool.stats().purged_bytes;
                pool.trim();
                if pool.stats().purged_bytes > before {
                    purging_trims += 1;
                }
                std::thread::yield_now();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(
                purging_trims, 50,
                "trims purged nothing while others allocated"
            );
        });
    });
}

#[test]
fn the_purger_starts_lazily_stops_with_the_last_pool_and_costs_the_fast_path_nothing() {
    let (status, out) = common::run_child("purger_lifecycle_child", false, &[]);
    assert!(status.success(), "child failed: {status:?}\n{out}");
}

fn purger_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "segpool-purge")
        .count()
}

/// Runs alone in a child process: the thread list and the system-call counters are its own.
#[test]
#[ignore = "child process of the_purger_starts_lazily_stops_with_the_last_pool_and_costs_the_fast_path_nothing"]
fn purger_lifecycle_child() {
    use segpool::diagnostics::mapping_calls;
    let wait = Duration::from_secs(5);
    assert_eq!(purger_threads(), 0);
    // Building maps nothing, and starts nothing.
    let a = SegmentPool::builder()
        .purge_decay(Duration::from_secs(3600))
        .build()
        .unwrap();
    let no_decay = SegmentPool::builder().purge_decay(None).build().unwrap();
    drop(no_decay.allocate(PAGE).unwrap());
    assert_eq!(
        purger_threads(),
        0,
        "no pool with a decay has mapped memory"
    );
    let seg = a.allocate(PAGE).unwrap();
    assert!(eventually(wait, || purger_threads() == 1), "started");

    // The fast path makes no system call while the purger runs (a pass is an hour away here).
    let before = mapping_calls();
    for _ in 0..10_000 {
        let held: Vec<_> = (0..100).map(|_| a.allocate(PAGE).unwrap()).collect();
        drop(held);
    }
    let cost = mapping_calls().since(&before);
    assert_eq!(
        cost.total(),
        0,
        "warm allocations made system calls: {cost:?}"
    );

    // A second pool shares the thread; dropping the first keeps it for the second.
    // (No thread cache: a released slice goes straight to its region, where the purger sees it.)
    let b = SegmentPool::builder()
        .purge_decay(Duration::from_millis(50))
        .thread_cache(false)
        .build()
        .unwrap();
    drop(b.allocate(PAGE).unwrap());
    assert_eq!(purger_threads(), 1, "one thread for every pool");
    drop(a);
    // A pass over the second pool after the first is gone shows the thread still serves it.
    let purged = b.stats().purged_bytes;
    let mut s = b.allocate(PAGE).unwrap();
    s.fill(1);
    drop(s);
    assert!(
        eventually(wait, || b.stats().purged_bytes > purged),
        "the purger stopped serving the second pool"
    );
    assert_eq!(purger_threads(), 1, "the second pool still has a decay");
    // The last pool gone (a segment of the first still out does not keep the thread).
    drop(b);
    assert!(eventually(wait, || purger_threads() == 0), "stopped");
    drop(seg);
    // And a new pool starts it again.
    let c = SegmentPool::new().unwrap();
    drop(c.allocate(PAGE).unwrap());
    assert!(eventually(wait, || purger_threads() == 1), "restarted");
    drop(c);
    assert!(eventually(wait, || purger_threads() == 0), "stopped again");
}
