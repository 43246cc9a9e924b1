//! The thread caches (`src/pool/thread_cache/`) over the region protocol: pools built with
//! `thread_cache(true)`, driven through the public API, so every allocation and release takes the
//! path it takes by default (the `const` thread-local mirror, then the per-thread slots). The
//! slots are the sync shim's `UnsafeCell`, loom's under `cfg(loom)`: a slot access that another
//! thread's could race is reported. Thread-locals are loom's too, dropped when a model thread
//! ends, so a thread's exit gives its cache back inside the model.

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

use super::{model, PAGE};
use crate::pool::thread_cache::exit_current_thread;
use crate::{Segment, SegmentPool};

/// A model thread that ends as a std thread does: its caches are given back before it can be
/// joined (see `exit_current_thread`).
fn spawn<T: 'static>(f: impl FnOnce() -> T + 'static) -> thread::JoinHandle<T> {
    thread::spawn(move || {
        let r = f();
        exit_current_thread();
        r
    })
}

/// Classes of `sizes`, `slices` slices per region, thread caches on, nothing retained.
fn cached_pool(sizes: &[usize], slices: usize) -> SegmentPool {
    cached_pool_retaining(sizes, slices, 0)
}

fn cached_pool_retaining(sizes: &[usize], slices: usize, retain: usize) -> SegmentPool {
    SegmentPool::builder()
        .size_classes(sizes)
        .region_size(slices * sizes[sizes.len() - 1])
        .retain_empty_regions(retain)
        .empty_region_grace(std::time::Duration::ZERO)
        .thread_cache(true)
        .huge_pages(false)
        .build()
        .expect("model pool")
}

/// A loom cell per slice of the first region, standing for the slice's bytes: each owner
/// writes it, so loom reports two owners whose accesses are not ordered by the protocol.
struct Shadows(Vec<(usize, UnsafeCell<u8>)>);

impl Shadows {
    fn of(segs: &[&Segment]) -> Arc<Self> {
        Arc::new(Self(
            segs.iter()
                .map(|s| (s.as_ptr() as usize, UnsafeCell::new(0)))
                .collect(),
        ))
    }

    /// The owner of `seg` writes its bytes (and its shadow, when it has one: a slice of a
    /// region mapped later has none).
    fn own(&self, seg: &mut Segment, byte: u8) {
        let addr = seg.as_ptr() as usize;
        if let Some((_, cell)) = self.0.iter().find(|(a, _)| *a == addr) {
            // SAFETY: loom checks this access against every other owner's.
            cell.with_mut(|p| unsafe { *p = byte });
        }
        // SAFETY: the segment is ours; an unmapped page would crash the model.
        unsafe { seg.as_mut_ptr().write_volatile(byte) };
    }
}

#[test]
fn cache_give_back_at_thread_exit_racing_trim_and_a_refill() {
    // A slice allocated here is released on another thread (into that thread's cache) and
    // given back when the thread exits, while this thread trims (its own cache goes back, the
    // generation moves, empty regions are unmapped) and refills its cache from the region.
    model(|| {
        let pool = cached_pool(&[PAGE], 2);
        // One refill brings both slices of the region: one handed out, one cached.
        let mut a = pool.allocate(PAGE).unwrap();
        let mut b = pool.allocate(PAGE).unwrap();
        assert_eq!(pool.stats().mapped_bytes, 2 * PAGE, "one region");
        let shadows = Shadows::of(&[&a, &b]);
        shadows.own(&mut a, 1);
        shadows.own(&mut b, 1);
        let sh = shadows.clone();
        let t = spawn(move || {
            sh.own(&mut a, 2);
            // Into this thread's cache; back to the region when the thread exits.
            drop(a);
        });
        drop(b);
        pool.trim();
        let mut c = pool.allocate(PAGE).unwrap();
        shadows.own(&mut c, 3);
        t.join().unwrap();
        shadows.own(&mut c, 4);
        drop(c);
        pool.trim();
        let stats = pool.stats();
        assert_eq!(stats.cached_bytes, 0, "{stats}");
        assert_eq!(stats.classes[0].in_use, 0, "{stats}");
        assert_eq!(stats.mapped_bytes, 0, "every region unmapped: {stats}");
        drop(pool);
        exit_current_thread();
    });
}

#[test]
fn two_caches_refill_from_one_region_and_give_back_at_exit() {
    // Two threads allocate through their caches at once: both refills race for the slices of
    // one empty region (a batch each, or one thread gets both), each owner writes its slice,
    // and each thread's exit gives its cache back to the region the other may be taking from.
    model(|| {
        let pool = cached_pool_retaining(&[PAGE], 2, 1);
        let mut a = pool.allocate(PAGE).unwrap();
        let mut b = pool.allocate(PAGE).unwrap();
        let shadows = Shadows::of(&[&a, &b]);
        shadows.own(&mut a, 1);
        shadows.own(&mut b, 1);
        drop((a, b));
        // Both slices back in the region, which stays mapped (one empty region is kept).
        exit_current_thread();
        let threads: Vec<_> = (0..2u8)
            .map(|i| {
                let (p, sh) = (pool.clone(), shadows.clone());
                spawn(move || {
                    let mut s = p.allocate(PAGE).unwrap();
                    sh.own(&mut s, 2 + i);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let stats = pool.stats();
        assert_eq!(stats.classes[0].in_use, 0, "{stats}");
        assert_eq!(
            stats.cached_bytes, 0,
            "every cache went back at exit: {stats}"
        );
        pool.trim();
        assert_eq!(pool.stats().mapped_bytes, 0, "every region unmapped");
        drop(pool);
        exit_current_thread();
    });
}

#[test]
fn trim_generation_bump_reaches_a_caching_thread() {
    // A thread with a cached slice of class 0 makes calls into the pool (in class 1) while
    // another thread trims. Its first call after the trim returned gives its whole cache
    // back before caching anything: whatever the interleaving, the cache of class 0 holds
    // just the slice released after the trim.
    model(|| {
        let pool = cached_pool(&[PAGE, 2 * PAGE], 2);
        let ready = Arc::new(AtomicBool::new(false));
        let trimmed = Arc::new(AtomicBool::new(false));
        let (p, r, tr) = (pool.clone(), ready.clone(), trimmed.clone());
        let t = spawn(move || {
            let a1 = p.allocate(PAGE).unwrap();
            drop(p.allocate(PAGE).unwrap());
            // One slice of class 0 cached, one out.
            r.store(true, Ordering::Release);
            // Racing the trim.
            drop(p.allocate(2 * PAGE).unwrap());
            while !tr.load(Ordering::Acquire) {
                thread::yield_now();
            }
            drop(a1);
            let cached = p.stats().classes[0].cached;
            assert_eq!(cached, 1, "the cache was given back after the trim");
        });
        while !ready.load(Ordering::Acquire) {
            thread::yield_now();
        }
        pool.trim();
        trimmed.store(true, Ordering::Release);
        t.join().unwrap();
        pool.trim();
        assert_eq!(pool.stats().mapped_bytes, 0, "every region unmapped");
        drop(pool);
        exit_current_thread();
    });
}
