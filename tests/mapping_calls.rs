//! `segpool::diagnostics::mapping_calls`: what an operation costs in memory-mapping system
//! calls. One test in this binary: the counters are process-wide, and a test running beside it
//! would add its own calls.

use segpool::diagnostics::mapping_calls;
use segpool::SegmentPool;

#[test]
fn warm_allocations_make_no_calls_and_a_dedicated_one_makes_one_mmap_and_one_munmap() {
    // No decay purger: its passes would count their `madvise` calls in the same process-wide
    // counters (tests/purge.rs checks the fast path with the purger running).
    let pool = SegmentPool::builder()
        .size_classes(&[4096, 65536])
        .purge_decay(None)
        .build()
        .unwrap();

    // The first allocation of a class maps its region: at least one mmap.
    let before = mapping_calls();
    let first = pool.allocate(4096).unwrap();
    let cost = mapping_calls().since(&before);
    assert!(cost.mmap >= 1, "a region was mapped: {cost:?}");
    drop(first);

    // Warm: allocate and release, on the fast path and through the thread cache's batches,
    // many times: no system call at all.
    let before = mapping_calls();
    for _ in 0..10_000 {
        let mut a = pool.allocate(4096).unwrap();
        a[0] = 1;
        let held: Vec<_> = (0..100).map(|_| pool.allocate(4096).unwrap()).collect();
        drop(held);
    }
    let cost = mapping_calls().since(&before);
    assert_eq!(
        cost.total(),
        0,
        "warm allocations made system calls: {cost:?}"
    );

    // Above the largest class: one mmap, one munmap, nothing else.
    let before = mapping_calls();
    let big = pool.allocate(3 << 20).unwrap();
    let mapped = mapping_calls().since(&before);
    drop(big);
    let cost = mapping_calls().since(&before);
    assert_eq!(mapped.mmap, 1, "{mapped:?}");
    assert_eq!(mapped.total(), 1, "{mapped:?}");
    assert_eq!(cost.munmap, 1, "{cost:?}");
    assert_eq!(cost.total(), 2, "one mmap and one munmap: {cost:?}");

    // And a thousand of them: exactly a thousand of each.
    let before = mapping_calls();
    for _ in 0..1000 {
        drop(pool.allocate(2 << 20).unwrap());
    }
    let cost = mapping_calls().since(&before);
    assert_eq!(
        (cost.mmap, cost.munmap, cost.total()),
        (1000, 1000, 2000),
        "{cost:?}"
    );

    // Trim gives the empty regions back: munmaps, no new mappings.
    let before = mapping_calls();
    pool.trim();
    let cost = mapping_calls().since(&before);
    assert!(cost.munmap >= 1, "the regions went back: {cost:?}");
    assert_eq!(cost.mmap, 0, "{cost:?}");
}
