//! The region protocol: allocate, release, retire and close racing each other (the state word
//! and the reclamation protocol of docs/design.md).

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use super::{class, model, pool, take_one, unmapped_regions, write, PAGE};
use crate::pool::thread_cache::release_direct;
use crate::pool::PoolShared;
use crate::region::RegionRef;
use crate::sync::atomic::Ordering;
use crate::sync::epoch;

#[test]
fn release_racing_the_retire_of_its_region() {
    // The release empties the region (and, with nothing retained, retires it) while `trim`
    // retires empty regions: one of them wins, the region is destroyed exactly once.
    model(|| {
        let (pool, shared) = pool(1, 0);
        let (region, addr) = take_one(&shared);
        let t = thread::spawn(move || {
            write(addr, 1);
            // SAFETY: the slice was taken above and is released once.
            unsafe { release_direct(region, addr) };
        });
        let trimmed = class(&shared).retire_empty(usize::MAX, &epoch::pin());
        t.join().unwrap();
        assert!(trimmed == 0 || trimmed == PAGE);
        assert_eq!(unmapped_regions(&shared), 1, "destroyed exactly once");
        assert_eq!(shared.budget.used(), 0);
        drop(pool);
    });
}

#[test]
fn release_racing_the_close_of_the_pool() {
    // The pool is dropped (every region retired, in use or not) while a segment is released.
    model(|| {
        let (pool, shared) = pool(1, 1);
        let (region, addr) = take_one(&shared);
        let t = thread::spawn(move || {
            write(addr, 1);
            // SAFETY: the slice was taken above and is released once.
            unsafe { release_direct(region, addr) };
        });
        drop(pool);
        t.join().unwrap();
        assert_eq!(unmapped_regions(&shared), 1, "destroyed exactly once");
        assert_eq!(shared.budget.used(), 0);
    });
}

#[test]
fn allocate_racing_the_retire() {
    // A free slice in an empty region: one thread takes it while another retires empty regions.
    // Either the take wins (the region survives and its memory stays mapped while the slice is
    // out) or the retire wins (the taker maps a fresh region).
    model(|| {
        let (pool, shared) = pool(1, 1);
        let (region, addr) = take_one(&shared);
        // SAFETY: the slice taken above keeps the region alive.
        let original = unsafe { region.get() }.id;
        // SAFETY: taken above, released once; the region stays (one empty region is retained).
        unsafe { release_direct(region, addr) };
        let s2 = shared.clone();
        let t = thread::spawn(move || {
            let (r, a) = take_one(&s2);
            write(a, 2);
            (r, a)
        });
        let trimmed = class(&shared).retire_empty(usize::MAX, &epoch::pin());
        let (r, a) = t.join().unwrap();
        // SAFETY: the slice the thread took keeps its region alive.
        let same = unsafe { r.get() }.id == original;
        if trimmed == 0 {
            assert!(
                same && a == addr,
                "the retire lost, so the take got the original slice"
            );
        } else {
            // A region mapped after the unmap may reuse the address: its id tells.
            assert!(
                !same,
                "the retire won, so no slice of its region is handed out"
            );
        }
        write(a, 3);
        // SAFETY: taken by the thread above, released once.
        unsafe { release_direct(r, a) };
        drop(pool);
        assert_eq!(shared.budget.used(), 0, "every region unmapped in the end");
    });
}

/// Both slices of a fresh two-slice region, taken in one batch.
fn take_both(shared: &Arc<PoolShared>) -> (RegionRef, [usize; 2]) {
    let guard = epoch::pin();
    let mut out = [0usize; 2];
    let (region, n) = class(shared).take(shared, &mut out, &guard).unwrap();
    assert_eq!(n, 2);
    (region, out.map(|x| x & !crate::region::ZERO_TAG))
}

/// Both slices of a two-slice region come back, one on a new thread and one on this thread
/// after the pool's close, which runs before the new thread starts (`close_first`) or while it
/// releases. The region is destroyed exactly once, by whoever moves its word to `RETIRED | 0`.
/// (This thread has pinned before: only the new thread joins crossbeam-epoch during the race, see
/// docs/design.md, "Loom".)
fn two_releases_and_the_close(close_first: bool) {
    model(move || {
        let (pool, shared) = pool(2, 1);
        let (region, [a, b]) = take_both(&shared);
        let mut pool = Some(pool);
        if close_first {
            drop(pool.take());
        }
        let releaser = thread::spawn(move || {
            write(a, 4);
            // SAFETY: taken above, released once, here.
            unsafe { release_direct(region, a) };
        });
        drop(pool);
        write(b, 5);
        // SAFETY: taken above, released once, here.
        unsafe { release_direct(region, b) };
        releaser.join().unwrap();
        assert_eq!(unmapped_regions(&shared), 1, "destroyed exactly once");
        assert_eq!(shared.budget.used(), 0);
    });
}

#[test]
fn two_releases_racing_to_be_last_out_of_a_retired_region() {
    // The pool closes (retiring the region with both slices out), then both slices come back at
    // once: whichever release is last destroys the region.
    two_releases_and_the_close(true);
}

#[test]
fn a_release_racing_the_close_with_another_slice_out() {
    // One slice comes back while the pool closes; the other is released after the close, by the
    // closing thread. The release lands before the retire (the region is not empty: the close
    // retires it and the second release destroys it), between the retire and the second release
    // (the second destroys it), or after both (it destroys it itself).
    two_releases_and_the_close(false);
}

#[test]
fn allocate_racing_a_release_on_a_one_slice_region() {
    // The new owner's access must be ordered after the old owner's last access: loom reports
    // an unsynchronised pair of accesses to the shadow cell as a data race.
    model(|| {
        let (pool, shared) = pool(1, 1);
        let (region, addr) = take_one(&shared);
        let shadow = Arc::new(UnsafeCell::new(0u8));
        let sh = shadow.clone();
        let releaser = thread::spawn(move || {
            // SAFETY: loom checks this access; the old owner writes its last byte.
            sh.with_mut(|p| unsafe { *p = 1 });
            write(addr, 1);
            // SAFETY: taken above, released once.
            unsafe { release_direct(region, addr) };
        });
        let s2 = shared.clone();
        let sh = shadow.clone();
        let taker = thread::spawn(move || {
            let (r, a) = take_one(&s2);
            if a == addr {
                // SAFETY: loom checks this access against the previous owner's.
                sh.with_mut(|p| unsafe { *p = 2 });
            }
            write(a, 2);
            // SAFETY: taken above, released once.
            unsafe { release_direct(r, a) };
        });
        releaser.join().unwrap();
        taker.join().unwrap();
        drop(pool);
        assert_eq!(shared.budget.used(), 0);
    });
}

#[test]
fn a_release_out_of_full_racing_a_refill() {
    // A two-slice region with both slices out: one comes back (the region goes from full to not
    // full, and the give-back lists it as having room again) while another thread refills, which
    // either finds that slice or maps a second region. Afterwards every region with room is
    // listed, and the next refill takes from the oldest of them without mapping.
    model(|| {
        let (pool, shared) = pool(2, 1);
        let (r0, a) = take_one(&shared);
        let (r1, b) = take_one(&shared);
        assert_eq!(r0, r1, "one region");
        let releaser = thread::spawn(move || {
            // SAFETY: taken above, released once.
            unsafe { release_direct(r0, a) };
        });
        let (r2, c) = take_one(&shared);
        releaser.join().unwrap();
        let class = class(&shared);
        class.check_with_room();
        let mapped = class.regions_mapped.load(Ordering::Relaxed);
        let snapshot = class.snapshot();
        let (r3, d) = take_one(&shared);
        if snapshot.out < snapshot.slices {
            assert_eq!(
                class.regions_mapped.load(Ordering::Relaxed),
                mapped,
                "a region had room, yet the refill mapped one"
            );
            if mapped == 2 {
                assert_eq!(r3, r0, "the older region fills first");
            }
        }
        class.check_with_room();
        for (r, x) in [(r1, b), (r2, c), (r3, d)] {
            // SAFETY: each taken above, released once.
            unsafe { release_direct(r, x) };
        }
        drop(pool);
        assert_eq!(shared.budget.used(), 0);
    });
}
