//! The purger (`SegmentPool::purge`) racing an allocation, releases and the retire of the region
//! it purges (docs/design.md, "Purging free slices").

use loom::thread;

use super::{class, model, pool, purge_all, read, take_tagged, unmapped_regions, write};
use crate::pool::thread_cache::release_direct;
use crate::sync::atomic::Ordering;

#[test]
fn purge_racing_allocate_and_release() {
    // A two-slice region: one slice live, one free and dirty. The purger purges while another
    // thread takes a slice, writes it, and releases it and the live one. Whatever the
    // interleaving: a slice handed out marked known-zero reads zero (it was not handed out
    // half-purged), a slice that is out never has its bytes changed (the purge never touched
    // a live slice), and every region is destroyed exactly once in the end.
    model(|| {
        let (pool, shared) = pool(2, 1);
        let (ra, a, _) = take_tagged(&shared);
        let (rb, b, _) = take_tagged(&shared);
        write(a, 7);
        write(b, 9);
        // SAFETY: taken above, released once.
        unsafe { release_direct(rb, b) };
        let s1 = shared.clone();
        let taker = thread::spawn(move || {
            let (r, x, zero) = take_tagged(&s1);
            if zero {
                assert_eq!(read(x), 0, "a slice marked zero was not purged yet");
            }
            write(x, 5);
            assert_eq!(read(a), 7, "a live slice was purged");
            // SAFETY: taken above, released once; `a` was taken by the model and is released
            // once, here.
            unsafe {
                release_direct(r, x);
                release_direct(ra, a);
            }
        });
        purge_all(&shared);
        taker.join().unwrap();
        drop(pool);
        assert_eq!(shared.budget.used(), 0, "every region unmapped in the end");
        let mapped = class(&shared).regions_mapped.load(Ordering::Relaxed);
        assert_eq!(unmapped_regions(&shared), mapped, "each destroyed once");
    });
}

#[test]
fn purge_racing_the_retire_of_its_region() {
    // The last live slice is released and the pool closes (retiring the region) while the
    // purger holds the free slice: the region is unmapped exactly once, never under the purge.
    model(|| {
        let (pool, shared) = pool(2, 0);
        let (ra, a, _) = take_tagged(&shared);
        let (rb, b, _) = take_tagged(&shared);
        write(b, 9);
        // SAFETY: taken above, released once.
        unsafe { release_direct(rb, b) };
        let s1 = shared.clone();
        let purger = thread::spawn(move || purge_all(&s1));
        write(a, 3);
        // SAFETY: taken above, released once.
        unsafe { release_direct(ra, a) };
        drop(pool);
        purger.join().unwrap();
        assert_eq!(unmapped_regions(&shared), 1, "destroyed exactly once");
        assert_eq!(shared.budget.used(), 0);
    });
}
