//! The large classes (2 MiB to 1 GiB by default): pooled, reused without a system call,
//! 2 MiB-aligned with huge-page advice, counted against the budget, given back by `trim()` and by
//! a thread's exit; requests above the largest class stay dedicated mappings.
//!
//! The mapping-call counters are process-wide, so the tests of this binary take one lock each:
//! a test never sees another one's calls.

use std::sync::{Mutex, MutexGuard};
use std::thread;

use segpool::diagnostics::mapping_calls;
use segpool::{Error, ErrorKind, SegmentPool};

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `VmFlags` line of the mapping that contains `addr`, from `/proc/self/smaps`.
fn vm_flags(addr: usize) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((lo, hi)) = range.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.trim().to_string();
            }
        }
    }
    panic!("no mapping holds {addr:#x}");
}

/// A default pool without the background purger: a slice that sits free in its region (the
/// 1 GiB class is not thread-cached) must not be purged, nor the purger's `madvise` counted,
/// while a test counts calls.
fn unpurged_pool() -> SegmentPool {
    SegmentPool::builder().purge_decay(None).build().unwrap()
}

#[test]
fn large_segments_are_reused_without_a_system_call() {
    let _s = serial();
    let pool = unpurged_pool();
    for size in [2 * MIB, 3 * MIB, 16 * MIB, 64 * MIB, 256 * MIB, GIB] {
        let class = size.next_power_of_two();
        let mut seg = pool.allocate(size).unwrap();
        assert_eq!(seg.len(), class, "request {size}");
        assert_eq!(seg.as_ptr() as usize % (2 * MIB), 0, "2 MiB-aligned");
        assert!(
            vm_flags(seg.as_ptr() as usize)
                .split(' ')
                .any(|f| f == "hg"),
            "the region of the {class}-byte class is advised MADV_HUGEPAGE"
        );
        seg[0] = 1;
        seg[class - 1] = 2;
        let addr = seg.as_ptr() as usize;
        drop(seg);

        let before = mapping_calls();
        for _ in 0..100 {
            let seg = pool.allocate(size).unwrap();
            assert_eq!(seg.as_ptr() as usize, addr, "the same slice comes back");
            assert_eq!((seg[0], seg[class - 1]), (1, 2), "and is not cleared");
        }
        let cost = mapping_calls().since(&before);
        assert_eq!(cost.total(), 0, "{class}-byte class: {cost:?}");
    }
    assert_eq!(pool.stats().dedicated_segments, 0);
}

#[test]
fn a_large_segment_released_on_another_thread_is_reused() {
    let _s = serial();
    let pool = SegmentPool::new().unwrap();
    let seg = pool.allocate(8 * MIB).unwrap();
    let addr = seg.as_ptr() as usize;
    thread::spawn(move || drop(seg)).join().unwrap();
    // The releasing thread exited: its cache gave the slice back to the region. (A refill of a
    // class above 4 MiB takes one slice, so this thread's cache holds no other.)
    let before = mapping_calls();
    let seg = pool.allocate(8 * MIB).unwrap();
    assert_eq!(seg.as_ptr() as usize, addr);
    assert_eq!(mapping_calls().since(&before).total(), 0);
}

#[test]
fn large_classes_count_against_the_budget() {
    let _s = serial();
    // A 4 MiB budget still serves four 1 MiB segments: no class maps a big region up front.
    let pool = SegmentPool::builder().budget(4 * MIB).build().unwrap();
    let ones: Vec<_> = (0..4).map(|_| pool.allocate(MIB).unwrap()).collect();
    assert_eq!(pool.stats().mapped_bytes, 4 * MIB);
    drop(ones);
    pool.trim();
    assert_eq!(pool.stats().mapped_bytes, 0);

    // Two 2 MiB segments fill it; a third is refused with the numbers.
    let twos: Vec<_> = (0..2).map(|_| pool.allocate(2 * MIB).unwrap()).collect();
    let stats = pool.stats();
    assert_eq!(stats.mapped_bytes, 4 * MIB);
    assert_eq!(stats.in_use_bytes, 4 * MIB);
    match pool.allocate(2 * MIB).map_err(Error::into_kind) {
        Err(ErrorKind::BudgetExceeded { needed, budget, .. }) => {
            assert_eq!((needed, budget), (2 * MIB, 4 * MIB));
        }
        other => panic!("expected BudgetExceeded, got {other:?}"),
    }
    drop(twos);

    // A class larger than the budget is refused at once, and maps nothing.
    assert!(matches!(
        pool.allocate(8 * MIB).map_err(Error::into_kind),
        Err(ErrorKind::BudgetExceeded { needed, .. }) if needed == 8 * MIB
    ));

    // Under a 64 MiB budget a 32 MiB segment maps exactly one 32 MiB region.
    let pool = SegmentPool::builder().budget(64 * MIB).build().unwrap();
    let big = pool.allocate(20 * MIB).unwrap();
    assert_eq!(big.len(), 32 * MIB);
    assert_eq!(pool.stats().mapped_bytes, 32 * MIB);
    let second = pool.allocate(32 * MIB).unwrap();
    assert_eq!(pool.stats().mapped_bytes, 64 * MIB);
    assert!(pool.allocate(32 * MIB).is_err());
    drop((big, second));
}

#[test]
fn trim_gives_large_regions_back() {
    let _s = serial();
    let pool = SegmentPool::new().unwrap();
    let segs: Vec<_> = [2 * MIB, 2 * MIB, 4 * MIB, 64 * MIB, 128 * MIB, 512 * MIB]
        .iter()
        .map(|&s| pool.allocate(s).unwrap())
        .collect();
    let mapped = pool.stats().mapped_bytes;
    // 32 MiB regions for the 2 and 4 MiB classes, one slice each above.
    assert_eq!(mapped, (32 + 32 + 64 + 128 + 512) * MIB);
    drop(segs);
    assert_eq!(
        pool.stats().mapped_bytes,
        mapped,
        "released large slices stay mapped for reuse"
    );
    let before = mapping_calls();
    assert_eq!(pool.trim(), mapped);
    let cost = mapping_calls().since(&before);
    assert_eq!((cost.munmap, cost.mmap), (5, 0), "{cost:?}");
    assert_eq!(pool.stats().mapped_bytes, 0);
}

#[test]
fn a_thread_exit_returns_its_cached_large_slices() {
    let _s = serial();
    let pool = SegmentPool::new().unwrap();
    let worker = {
        let pool = pool.clone();
        thread::spawn(move || {
            let segs: Vec<_> = [2 * MIB, 2 * MIB, 16 * MIB, 64 * MIB]
                .iter()
                .map(|&s| pool.allocate(s).unwrap())
                .collect();
            drop(segs);
            // All four are cached by this thread now.
            pool.stats().cached_bytes
        })
    };
    let cached = worker.join().unwrap();
    assert_eq!(cached, (2 + 2 + 16 + 64) * MIB);
    let stats = pool.stats();
    assert_eq!(stats.cached_bytes, 0, "the exited thread's cache is gone");
    assert_eq!(stats.in_use_bytes, 0);
    // Nothing is out, so trim unmaps every region.
    pool.trim();
    assert_eq!(pool.stats().mapped_bytes, 0);
}

#[test]
fn a_thread_caches_one_slice_of_each_large_class_within_1_gib_in_all() {
    let _s = serial();
    let pool = unpurged_pool();
    let sizes: Vec<usize> = (3..=10).map(|b| MIB << b).collect(); // 8 MiB ..= 1 GiB
    let worker = {
        let pool = pool.clone();
        thread::spawn(move || {
            let segs: Vec<_> = sizes.iter().map(|&s| pool.allocate(s).unwrap()).collect();
            drop(segs);
            let after_one = pool.usage().cached_bytes;
            // A second round: each cached class hands its slice out and takes it back; the
            // thread never holds more.
            let segs: Vec<_> = sizes.iter().map(|&s| pool.allocate(s).unwrap()).collect();
            drop(segs);
            (after_one, pool.usage().cached_bytes)
        })
    };
    let (after_one, after_two) = worker.join().unwrap();
    // One slice of every class from 8 MiB to 512 MiB; the 1 GiB slice went to its region.
    assert_eq!(after_one, 1016 * MIB);
    assert_eq!(after_two, 1016 * MIB);
    let usage = pool.usage();
    assert_eq!((usage.cached_bytes, usage.in_use_bytes), (0, 0), "{usage}");
}

#[test]
fn a_gib_segment_is_pooled() {
    let _s = serial();
    let pool = unpurged_pool();
    let before = mapping_calls();
    let mut seg = pool.allocate(GIB).unwrap();
    assert_eq!(mapping_calls().since(&before).mmap, 1);
    assert_eq!(seg.len(), GIB);
    assert_eq!(pool.stats().dedicated_segments, 0);
    assert_eq!(pool.stats().mapped_bytes, GIB);
    seg[GIB / 2] = 7;
    let addr = seg.as_ptr() as usize;
    drop(seg);
    let before = mapping_calls();
    let seg = pool.allocate(GIB - 4096).unwrap();
    assert_eq!((seg.as_ptr() as usize, seg[GIB / 2]), (addr, 7));
    assert_eq!(mapping_calls().since(&before).total(), 0);
}

#[test]
fn sizes_above_the_largest_class_are_dedicated() {
    let _s = serial();
    let pool = SegmentPool::new().unwrap();
    let before = mapping_calls();
    let seg = pool.allocate(GIB + 1).unwrap();
    assert_eq!(seg.len(), GIB + 4096);
    let stats = pool.stats();
    assert_eq!(stats.dedicated_segments, 1);
    assert_eq!(stats.regions, 0, "no class region was mapped");
    drop(seg);
    let cost = mapping_calls().since(&before);
    assert_eq!(
        (cost.mmap, cost.munmap, cost.total()),
        (1, 1, 2),
        "{cost:?}"
    );
    assert_eq!(pool.stats().mapped_bytes, 0);

    // With classes up to 4 MiB, 4 MiB + 1 is dedicated.
    let pool = SegmentPool::builder()
        .size_classes(&[4096, 4 * MIB])
        .build()
        .unwrap();
    let seg = pool.allocate(4 * MIB + 1).unwrap();
    assert_eq!(pool.stats().dedicated_segments, 1);
    assert_eq!(seg.len(), 4 * MIB + 4096);
}
