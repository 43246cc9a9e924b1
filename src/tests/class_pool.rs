//! The size classes' region lists: a refill does not scan full regions, older regions fill
//! first.

use crate::sync::atomic::Ordering;
use crate::SegmentPool;

const PAGE: usize = 4096;

/// One 4 KiB class, `slices` per region, no thread caches (every allocation is a refill of
/// one slice, every release a give-back), empty regions unmapped at once.
fn pool(slices: usize) -> SegmentPool {
    retaining_pool(slices, 0, std::time::Duration::ZERO)
}

/// As [`pool`], keeping `retain` empty regions and `grace` after a mapping.
fn retaining_pool(slices: usize, retain: usize, grace: std::time::Duration) -> SegmentPool {
    SegmentPool::builder()
        .size_classes(&[PAGE])
        .region_size(slices * PAGE)
        .retain_empty_regions(retain)
        .empty_region_grace(grace)
        .thread_cache(false)
        .huge_pages(false)
        .purge_decay(None)
        .build()
        .unwrap()
}

/// With thousands of full regions, a refill looks at the region with room and at most the
/// one it just filled: it never scans the full ones, not even after a give-back to the
/// oldest region (which the next refill takes first).
#[test]
fn a_refill_does_not_scan_the_full_regions() {
    const SLICES: usize = 4;
    const REGIONS: usize = 3_000;
    let pool = pool(SLICES);
    let class = &pool.shared().classes[0];
    let mut held: Vec<_> = (0..REGIONS * SLICES)
        .map(|_| pool.allocate(PAGE).unwrap())
        .collect();
    assert_eq!(pool.shared().classes[0].snapshot().regions, REGIONS);
    let visits = |f: &mut dyn FnMut()| {
        let before = class.visited.load(Ordering::Relaxed);
        f();
        class.visited.load(Ordering::Relaxed) - before
    };
    // Growing on: each allocation looks at no more than two regions.
    let more = 10 * SLICES;
    let seen = visits(&mut || held.extend((0..more).map(|_| pool.allocate(PAGE).unwrap())));
    assert!(
        seen <= 2 * more as u64,
        "{seen} regions visited for {more} refills"
    );
    // A slice of the oldest region comes back: the next refill goes straight to it.
    let oldest = held.swap_remove(0);
    let region = oldest.region_ref();
    drop(oldest);
    let mut again = None;
    let seen = visits(&mut || again = Some(pool.allocate(PAGE).unwrap()));
    let again = again.unwrap();
    assert_eq!(
        again.region_ref(),
        region,
        "the oldest region with room fills first"
    );
    assert_eq!(seen, 1, "one region visited");
    held.push(again);
    class.check_with_room();
    let seen = visits(&mut || held.push(pool.allocate(PAGE).unwrap()));
    assert!(seen <= 2, "{seen} regions visited after a give-back");
    class.check_with_room();
}

/// Older regions fill first, so after a drain the newer ones empty and are unmapped: the
/// region count drops back.
#[test]
fn older_regions_fill_first_so_newer_ones_drain() {
    const SLICES: usize = 4;
    const REGIONS: usize = 10;
    let pool = pool(SLICES);
    let class = &pool.shared().classes[0];
    let segs: Vec<_> = (0..REGIONS * SLICES)
        .map(|_| pool.allocate(PAGE).unwrap())
        .collect();
    assert_eq!(class.snapshot().regions, REGIONS);
    // Every region gives back half its slices (newest regions first, so a structure that
    // preferred recently freed room would pick the new ones).
    let mut kept = Vec::new();
    for (i, s) in segs.into_iter().enumerate().rev() {
        if i % SLICES < SLICES / 2 {
            kept.push(s);
        }
    }
    class.check_with_room();
    // Half as many allocations as were given back: they fill the oldest half of the regions.
    let refill = REGIONS * SLICES / 4;
    let fresh: Vec<_> = (0..refill).map(|_| pool.allocate(PAGE).unwrap()).collect();
    assert_eq!(
        class.snapshot().regions,
        REGIONS,
        "no region mapped for them"
    );
    let ids: Vec<u64> = fresh
        .iter()
        // SAFETY: the segment keeps its region alive.
        .map(|s| unsafe { s.region_ref().get() }.id)
        .collect();
    let oldest: Vec<u64> = {
        let mut all: Vec<u64> = kept
            .iter()
            // SAFETY: the segment keeps its region alive.
            .map(|s| unsafe { s.region_ref().get() }.id)
            .collect();
        all.sort_unstable();
        all.dedup();
        all.truncate(REGIONS / 2);
        all
    };
    for id in &ids {
        assert!(
            oldest.contains(id),
            "region {id} is not one of the oldest half"
        );
    }
    // The drain: the segments still out of the newer half come back, and those regions go.
    kept.retain(|s| {
        // SAFETY: the segment keeps its region alive.
        oldest.contains(&unsafe { s.region_ref().get() }.id)
    });
    assert_eq!(
        class.snapshot().regions,
        REGIONS / 2,
        "the newer half was unmapped"
    );
    assert_eq!(
        class.regions_unmapped.load(Ordering::Relaxed),
        (REGIONS / 2) as u64
    );
    class.check_with_room();
    drop((kept, fresh));
    assert_eq!(class.snapshot().regions, 0);
    class.check_with_room();
}

/// A region that empties beyond the retained count is retired on its own, found by its id: a
/// drain of thousands of regions, oldest first (the order that leaves the most regions between
/// the newest and the one emptying), looks at no other region.
#[test]
fn a_drain_retires_each_emptied_region_without_a_walk() {
    const SLICES: usize = 4;
    // Fewer under Miri, which runs it too (the count of regions looked at is zero at any size).
    const REGIONS: usize = if cfg!(miri) { 40 } else { 3_000 };
    let pool = pool(SLICES);
    let class = &pool.shared().classes[0];
    let held: Vec<_> = (0..REGIONS * SLICES)
        .map(|_| pool.allocate(PAGE).unwrap())
        .collect();
    assert_eq!(class.snapshot().regions, REGIONS);
    let before = class.retire_visited.load(Ordering::Relaxed);
    let mut half = held;
    let rest = half.split_off(REGIONS / 2 * SLICES);
    // `Vec`'s drop releases front to back: the oldest region first.
    drop(half);
    assert_eq!(class.snapshot().regions, REGIONS / 2);
    class.check_with_room();
    drop(rest);
    assert_eq!(
        class.retire_visited.load(Ordering::Relaxed) - before,
        0,
        "a region was looked at to find the one that emptied"
    );
    assert_eq!(class.snapshot().regions, 0);
    assert_eq!(
        class.regions_unmapped.load(Ordering::Relaxed),
        REGIONS as u64
    );
    class.check_with_room();
}

/// Regions that emptied during the grace period stay mapped; the first region to empty after it
/// takes them along (the surplus is looked for then, newest first), and the retained count holds.
#[test]
fn the_surplus_of_the_grace_period_goes_with_the_next_region_that_empties() {
    const SLICES: usize = 4;
    const REGIONS: usize = 20;
    const RETAIN: usize = 2;
    let pool = retaining_pool(SLICES, RETAIN, std::time::Duration::from_secs(3600));
    let class = &pool.shared().classes[0];
    let mut held: Vec<_> = (0..REGIONS * SLICES)
        .map(|_| pool.allocate(PAGE).unwrap())
        .collect();
    // The oldest half empties within the grace period: all of it stays mapped.
    let later = held.split_off(REGIONS / 2 * SLICES);
    drop(held);
    assert_eq!(class.snapshot().regions, REGIONS);
    assert_eq!(class.regions_unmapped.load(Ordering::Relaxed), 0);
    class.end_grace();
    // One more region empties: it and the surplus go, `RETAIN` empty regions stay.
    let mut later = later.into_iter();
    for seg in later.by_ref().take(SLICES) {
        drop(seg);
    }
    let live = REGIONS / 2 - 1;
    assert_eq!(class.snapshot().regions, live + RETAIN);
    assert_eq!(
        class.regions_unmapped.load(Ordering::Relaxed),
        (REGIONS / 2 + 1 - RETAIN) as u64
    );
    class.check_with_room();
    drop(later);
    assert_eq!(class.snapshot().regions, RETAIN);
    class.check_with_room();
}

/// A class whose demand comes back to its surplus of empty regions starts the grace period
/// again, so the next fall does not unmap what the next rise would map again; a class that
/// keeps no surplus does not.
#[test]
fn demand_that_comes_back_to_a_surplus_starts_the_grace_period_again() {
    const SLICES: usize = 4;
    const REGIONS: usize = 3;
    let pool = retaining_pool(SLICES, 1, std::time::Duration::from_secs(3600));
    let class = &pool.shared().classes[0];
    let burst = || -> Vec<_> {
        (0..REGIONS * SLICES)
            .map(|_| pool.allocate(PAGE).unwrap())
            .collect()
    };
    // A burst maps three regions and ends: all three stay (the grace period of the mapping).
    drop(burst());
    assert_eq!(class.snapshot().regions, REGIONS);
    // The grace period runs out; the next burst takes the three empty regions again, and ends.
    class.end_grace();
    drop(burst());
    assert_eq!(
        class.regions_unmapped.load(Ordering::Relaxed),
        0,
        "the burst came back to the surplus: nothing is unmapped at its end"
    );
    assert_eq!(class.snapshot().regions, REGIONS);
    assert_eq!(class.regions_mapped.load(Ordering::Relaxed), REGIONS as u64);
    // Once the grace period is over, the next fall unmaps the surplus.
    class.end_grace();
    let held: Vec<_> = (0..SLICES).map(|_| pool.allocate(PAGE).unwrap()).collect();
    assert!(
        class.in_grace(),
        "the first of them came back to the surplus"
    );
    class.end_grace();
    drop(held);
    assert_eq!(class.snapshot().regions, 1);
    assert_eq!(
        class.regions_unmapped.load(Ordering::Relaxed),
        (REGIONS - 1) as u64
    );
    // With no surplus, taking from the one retained empty region starts nothing.
    let one = pool.allocate(PAGE).unwrap();
    assert!(!class.in_grace());
    drop(one);
    assert_eq!(class.snapshot().regions, 1);
    class.check_with_room();
}

/// The regions that emptied during the grace period and were not touched again are unmapped
/// by the next decay pass after it, without another emptying.
#[test]
fn a_decay_pass_unmaps_the_surplus_left_from_the_grace_period() {
    const SLICES: usize = 4;
    const REGIONS: usize = 3;
    let pool = retaining_pool(SLICES, 1, std::time::Duration::from_secs(3600));
    let shared = pool.shared().clone();
    let class = &shared.classes[0];
    drop(
        (0..REGIONS * SLICES)
            .map(|_| pool.allocate(PAGE).unwrap())
            .collect::<Vec<_>>(),
    );
    // Within the grace period a pass unmaps nothing.
    shared.purge(crate::region::PurgeMode::Aged);
    shared.purge(crate::region::PurgeMode::Aged);
    assert_eq!(class.snapshot().regions, REGIONS);
    class.end_grace();
    // The slices were never written: the pass has nothing to purge, and no region empties in it.
    shared.purge(crate::region::PurgeMode::Aged);
    assert_eq!(
        class.snapshot().regions,
        1,
        "the surplus goes at the first pass after"
    );
    assert_eq!(
        class.regions_unmapped.load(Ordering::Relaxed),
        (REGIONS - 1) as u64
    );
    class.check_with_room();
}
