//! The pool end to end under Miri: allocate, write, release, trim, stats, the budget's errors,
//! dedicated mappings, and segments that outlive their pool.

use crate::{Error, ErrorKind, SegmentPool};

const KIB: usize = 1024;

fn pool() -> SegmentPool {
    SegmentPool::builder()
        .size_classes(&[4 * KIB, 16 * KIB])
        .region_size(64 * KIB)
        // The budget also bounds the thread caches (a sixteenth of it per class): 16 and 4
        // slices, so a refill stays small under Miri.
        .budget(1024 * KIB)
        .huge_pages(false)
        .retain_empty_regions(0)
        .empty_region_grace(std::time::Duration::ZERO)
        .build()
        .unwrap()
}

/// Segments are disjoint buffers whose bytes are their own; stats count them exactly.
#[test]
fn segments_are_disjoint_and_counted() {
    let pool = pool();
    let mut segs: Vec<_> = (0..6).map(|_| pool.allocate(3 * KIB).unwrap()).collect();
    for (i, s) in segs.iter_mut().enumerate() {
        assert_eq!(s.len(), 4 * KIB);
        assert_eq!(s.as_ptr() as usize % 4096, 0);
        s.fill(i as u8 + 1);
    }
    for (i, s) in segs.iter().enumerate() {
        assert!(
            s.iter().all(|&b| b == i as u8 + 1),
            "segment {i} was overwritten"
        );
    }
    let stats = pool.stats();
    assert_eq!(stats.in_use_bytes, 6 * 4 * KIB);
    assert_eq!(stats.allocations, 6);
    drop(segs);
    assert_eq!(pool.stats().in_use_bytes, 0);
    assert_eq!(pool.stats().releases, 6);
}

/// `allocate_zeroed` clears a reused slice; fresh memory is zero.
#[test]
fn zeroed_segments_are_zero_after_reuse() {
    let pool = pool();
    let mut s = pool.allocate(4 * KIB).unwrap();
    assert!(s.iter().all(|&b| b == 0));
    s.fill(0xAB);
    drop(s);
    let z = pool.allocate_zeroed(4 * KIB).unwrap();
    assert!(z.iter().all(|&b| b == 0));
}

/// Trim gives every cached slice back and unmaps the empty regions.
#[test]
fn trim_unmaps_empty_regions() {
    let pool = pool();
    let segs: Vec<_> = (0..4).map(|_| pool.allocate(16 * KIB).unwrap()).collect();
    assert!(pool.stats().mapped_bytes >= 64 * KIB);
    drop(segs);
    pool.trim();
    let stats = pool.stats();
    assert_eq!(stats.mapped_bytes, 0, "{stats:?}");
    assert_eq!(stats.regions_unmapped, stats.regions_mapped);
}

/// Requests above the largest class get a mapping of their own, unmapped on release.
#[test]
fn dedicated_segments_are_mapped_and_unmapped() {
    let pool = pool();
    let mut big = pool.allocate(40 * KIB).unwrap();
    assert!(big.len() >= 40 * KIB);
    big[40 * KIB - 1] = 7;
    assert_eq!(pool.stats().dedicated_segments, 1);
    drop(big);
    assert_eq!(pool.stats().dedicated_segments, 0);
}

/// A segment stays usable after its pool is dropped; its region goes with the segment.
#[test]
fn a_segment_outlives_its_pool() {
    let pool = pool();
    let mut keep = pool.allocate(4 * KIB).unwrap();
    let other = std::thread::spawn({
        let s = pool.allocate(4 * KIB).unwrap();
        move || s.iter().all(|&b| b == 0)
    });
    drop(pool);
    keep.fill(9);
    assert!(keep.iter().all(|&b| b == 9));
    assert!(other.join().unwrap());
    drop(keep);
}

/// Two threads allocate, write and release through their caches at once.
#[test]
fn two_threads_allocate_and_release() {
    let pool = pool();
    let rounds = if cfg!(miri) { 4 } else { 500 };
    std::thread::scope(|s| {
        for t in 0..2u8 {
            let pool = &pool;
            s.spawn(move || {
                for r in 0..rounds {
                    let mut a = pool.allocate(4 * KIB).unwrap();
                    let mut b = pool.allocate(16 * KIB).unwrap();
                    a.fill(t);
                    b.fill(r as u8);
                    assert!(a.iter().all(|&x| x == t));
                    assert!(b.iter().all(|&x| x == r as u8));
                }
            });
        }
    });
    pool.trim();
    assert_eq!(pool.stats().in_use_bytes, 0);
}

/// Bad requests and a spent budget come back as errors that carry the numbers.
#[test]
fn errors_name_what_went_wrong() {
    let pool = pool();
    assert!(matches!(
        pool.allocate(0).map_err(Error::into_kind),
        Err(ErrorKind::ZeroSize)
    ));
    assert!(matches!(
        pool.allocate(usize::MAX).map_err(Error::into_kind),
        Err(ErrorKind::TooLarge { .. })
    ));
    let small = SegmentPool::builder()
        .size_classes(&[16 * KIB])
        .budget(64 * KIB)
        .thread_cache(false)
        .huge_pages(false)
        .build()
        .unwrap();
    let held: Vec<_> = (0..4).map(|_| small.allocate(16 * KIB).unwrap()).collect();
    match small.allocate(16 * KIB) {
        Err(e) if matches!(e.kind(), ErrorKind::BudgetExceeded { .. }) => {
            let ErrorKind::BudgetExceeded { budget, used, .. } = e.kind() else {
                unreachable!()
            };
            assert_eq!((*budget, *used), (64 * KIB, 64 * KIB));
            assert!(e.to_string().contains("budget exceeded"), "{e}");
        }
        other => panic!("expected BudgetExceeded, got {other:?}"),
    }
    drop(held);
    assert!(small.allocate(16 * KIB).is_ok());
    let bad = SegmentPool::builder().region_size(1000).build();
    assert!(matches!(
        bad.map_err(Error::into_kind),
        Err(ErrorKind::InvalidConfig(_))
    ));
}
