//! Memory goes back to the OS: after `trim()` the pool's mapped bytes and the process's resident
//! set drop by what was unmapped. One test in this binary, so no other test moves the RSS.

mod common;

use segpool::{Segment, SegmentPool};

const MIB: usize = 1 << 20;

/// How much of the unmapped memory must leave the resident set: at least 90%. The rest is slack
/// for the allocator and test harness of this process, which may grow its heap meanwhile.
const RSS_TOLERANCE: f64 = 0.90;

#[test]
fn trim_returns_mapped_and_resident_memory() {
    // Keep every empty region until `trim()`, so the test sees trim alone give memory back.
    let pool = SegmentPool::builder()
        .retain_empty_regions(usize::MAX)
        .build()
        .unwrap();
    let mut segs: Vec<Segment> = (0..96).map(|_| pool.allocate(MIB).unwrap()).collect();
    for s in &mut segs {
        for page in s.chunks_mut(4096) {
            page[0] = 1;
        }
    }
    drop(segs);
    let mapped_full = pool.stats().mapped_bytes;
    let rss_full = common::resident_bytes();
    assert!(mapped_full >= 96 * MIB);
    let freed = pool.trim();
    let stats = pool.stats();
    let rss_after = common::resident_bytes();
    assert_eq!(
        stats.mapped_bytes,
        mapped_full - freed,
        "mapped bytes drop by exactly what trim freed"
    );
    assert_eq!(stats.mapped_bytes, 0, "{stats}");
    assert!(freed >= 96 * MIB);
    let rss_drop = rss_full.saturating_sub(rss_after);
    // Only the touched 96 MiB was resident; it must be gone.
    let touched = 96 * MIB;
    assert!(
        rss_drop as f64 >= touched as f64 * RSS_TOLERANCE,
        "resident set fell by {rss_drop} bytes, expected at least {:.0}% of {touched}",
        RSS_TOLERANCE * 100.0
    );
}
