//! Figures that cannot contradict the budget: every peak `stats()` reports is at most what could
//! exist (no out-of-free-list peak above the mapped peak, no class peak above the class's slices,
//! nothing above the budget), even when thread caches count their give-backs late.

use std::sync::mpsc::sync_channel;
use std::time::Duration;

use segpool::{Segment, SegmentPool};

const SEGMENT: usize = 64 << 10;
const BUDGET: usize = 16 << 20;

/// The `segpool demo` shape: workers allocate, one writer thread releases everything, so every
/// slice crosses threads and thread caches give back in batches counted late.
#[test]
fn peaks_stay_within_what_was_mapped_when_slices_cross_threads() {
    let pool = SegmentPool::builder()
        .size_classes(&[SEGMENT])
        .budget(BUDGET)
        .build()
        .unwrap();
    let (tx, rx) = sync_channel::<Segment>(BUDGET / SEGMENT + 1);
    std::thread::scope(|s| {
        s.spawn(move || {
            for seg in rx {
                drop(seg);
            }
        });
        for _ in 0..4 {
            let (pool, tx) = (&pool, tx.clone());
            s.spawn(move || {
                for _ in 0..5_000 {
                    let mut seg = pool
                        .allocate_timeout(SEGMENT, Duration::from_secs(60))
                        .unwrap();
                    seg[0] = 1;
                    tx.send(seg).unwrap();
                }
            });
        }
        drop(tx);
    });
    let st = pool.stats();
    assert!(st.peak_mapped_bytes <= BUDGET, "{st}");
    assert!(st.peak_in_use_bytes <= st.peak_mapped_bytes, "{st}");
    let class = &st.classes[0];
    let max_slices = st.peak_mapped_bytes / SEGMENT;
    assert!(
        class.peak_in_use <= max_slices,
        "class peak {} above the {} slices that ever existed: {st}",
        class.peak_in_use,
        max_slices
    );
    assert!(st.in_use_bytes <= st.mapped_bytes, "{st}");
    assert_eq!(st.in_use_bytes, 0, "everything was released: {st}");
    assert_eq!(pool.budget().used(), st.mapped_bytes);
}
