//! The guard table's capacity under `Diagnostics::Full`: past it, segments are still handed out
//! (and guarded), and a warning says once that their overruns will go unexplained. One test in
//! this binary: the table and the warning are per process.

mod diagnostics_support;

use diagnostics_support::{capture, named};
use segpool::{Diagnostics, SegmentPool};

/// The table's capacity (`guard::CAPACITY`), as the event reports it.
const CAPACITY: usize = 4096;

#[test]
fn a_full_guard_table_warns_once_and_still_hands_out_segments() {
    let pool = SegmentPool::builder()
        .size_classes(&[4096])
        .diagnostics(Diagnostics::Full)
        .huge_pages(false)
        .thread_cache(false)
        .build()
        .unwrap();
    let (held, events) = capture(|| {
        (0..CAPACITY)
            .map(|_| pool.allocate(4096).unwrap())
            .collect::<Vec<_>>()
    });
    assert!(
        named(&events, "guard table full").is_empty(),
        "{CAPACITY} segments fit: {events:?}"
    );
    let (mut held, events) = capture(|| {
        let mut held = held;
        // Two past the capacity: one warning, not two.
        for _ in 0..2 {
            let mut s = pool.allocate(4096).unwrap();
            s.fill(7);
            held.push(s);
        }
        held
    });
    let full = named(&events, "guard table full");
    assert_eq!(full.len(), 1, "{events:?}");
    assert_eq!(full[0].number("capacity"), CAPACITY as u64);
    assert_eq!(
        full[0].number("segment"),
        held[CAPACITY].as_ptr() as u64,
        "the first segment past the capacity"
    );
    // A released segment frees its entry; nothing more is reported either way.
    held.truncate(CAPACITY - 1);
    let (_, events) = capture(|| {
        let _again: Vec<_> = (0..3).map(|_| pool.allocate(4096).unwrap()).collect();
    });
    assert!(named(&events, "guard table full").is_empty(), "{events:?}");
}
