//! The thread caches through the pool: slices cached by one thread and given back from another,
//! the bound, trim's generation bump and thread exit. Under Miri, every slot access of a cache is
//! checked against the other threads' accesses.

use crate::SegmentPool;

const SIZE: usize = 4096;

fn pool() -> SegmentPool {
    SegmentPool::builder()
        .size_classes(&[SIZE, 4 * SIZE])
        .region_size(64 * SIZE)
        // The budget also bounds the thread caches (a sixteenth of it per class): 16 and 4
        // slices, so a refill stays small under Miri.
        .budget(256 * SIZE)
        .huge_pages(false)
        .build()
        .unwrap()
}

/// A thread's cache is handed back when the thread exits, and the bytes each segment carried
/// are its own while it lived.
#[test]
fn a_caching_thread_gives_its_slices_back_at_exit() {
    let pool = pool();
    let cap = pool.shared().classes[0].cache_capacity;
    assert!(cap >= 2);
    let n = cap + 4;
    // `spawn` and `join`, not `thread::scope`: a scope may return before the thread's
    // thread-local destructors (which give its cache back) have run; `join` waits for them.
    let p = pool.clone();
    std::thread::spawn(move || {
        let mut segs: Vec<_> = (0..n).map(|_| p.allocate(SIZE).unwrap()).collect();
        for (i, seg) in segs.iter_mut().enumerate() {
            seg.fill(i as u8);
        }
        for (i, seg) in segs.iter().enumerate() {
            assert!(seg.iter().all(|&b| b == i as u8));
        }
        drop(segs);
        // The slices sit in this thread's cache now.
        assert!(p.stats().cached_bytes > 0);
    })
    .join()
    .unwrap();
    let stats = pool.stats();
    assert_eq!(stats.cached_bytes, 0, "the exited thread's cache came back");
    assert_eq!(stats.in_use_bytes, 0);
}

/// Segments allocated on one thread and released on another: the releasing thread caches them,
/// and the allocating thread gets slices again after a trim empties every cache.
#[test]
fn cross_thread_release_then_trim() {
    let pool = pool();
    let rounds = if cfg!(miri) { 2 } else { 50 };
    for _ in 0..rounds {
        let segs: Vec<_> = (0..3).map(|_| pool.allocate(SIZE).unwrap()).collect();
        let mapped = pool.stats().regions_mapped;
        std::thread::spawn(move || drop(segs)).join().unwrap();
        assert_eq!(pool.stats().in_use_bytes, 0);
        let again: Vec<_> = (0..3).map(|_| pool.allocate(SIZE).unwrap()).collect();
        let mut addrs: Vec<_> = again.iter().map(|s| s.as_ptr() as usize).collect();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), 3, "three live segments, three addresses");
        assert_eq!(
            pool.stats().regions_mapped,
            mapped,
            "the slices released on the other thread were reused"
        );
        drop(again);
        pool.trim();
        let stats = pool.stats();
        assert_eq!(stats.in_use_bytes, 0);
        assert_eq!(stats.cached_bytes, 0, "trim emptied this thread's cache");
    }
}

/// An idle thread's cache is given back on its next call after a trim (the generation bump).
#[test]
fn an_idle_cache_goes_back_after_trim() {
    let pool = pool();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let pool = &pool;
        s.spawn(move || {
            drop(pool.allocate(SIZE).unwrap());
            done.send(()).unwrap();
            wait.recv().unwrap();
            // The first call after the trim gives the stale cache back.
            drop(pool.allocate(4 * SIZE).unwrap());
            done.send(()).unwrap();
            wait.recv().unwrap();
        });
        finished.recv().unwrap();
        assert!(pool.stats().cached_bytes >= SIZE);
        pool.trim();
        go.send(()).unwrap();
        finished.recv().unwrap();
        assert_eq!(
            pool.stats().classes[0].cached,
            0,
            "the stale cache went back"
        );
        go.send(()).unwrap();
    });
}

/// Slices given back by a thread cache reach the pool's out-of-free-list counts late (at most
/// `UNCOUNTED_CACHES` caches' worth per thread), never early, and all of them once the
/// thread exits: the counts stay upper bounds of what the regions hold out, and come back to
/// zero when everything is back.
#[test]
fn returns_are_counted_late_never_early_and_all_at_exit() {
    const SIZE: usize = 64 << 10;
    // No decay purger: a purge pass reserves the free slices it purges in their regions' words,
    // so `exact` below would count them as out while the pass runs (under Miri, whose clock
    // runs slowly enough for the purger to start, it did).
    let pool = SegmentPool::builder()
        .size_classes(&[SIZE])
        .huge_pages(false)
        .purge_decay(None)
        .build()
        .unwrap();
    let shared = pool.shared().clone();
    let class = &shared.classes[0];
    let cap = class.cache_capacity;
    assert!(cap > 1);
    // Slices out of the regions' free lists, as the regions count them.
    let exact = || class.snapshot().out;
    let segs: Vec<_> = (0..10 * cap)
        .map(|_| pool.allocate(SIZE).unwrap())
        .collect();
    let (to_main, from_releaser) = std::sync::mpsc::channel();
    let (to_releaser, from_main) = std::sync::mpsc::channel::<()>();
    let releaser = std::thread::spawn(move || {
        drop(segs);
        to_main.send(()).unwrap();
        // Stay alive (its cache and its uncounted returns with it) until told to exit.
        from_main.recv().unwrap();
    });
    from_releaser.recv().unwrap();
    let out = &shared.counts.classes[0].out;
    let (counted, peak) = (out.now(), out.peak());
    assert!(
        counted >= exact(),
        "counted {counted} below the regions' {}",
        exact()
    );
    assert!(
        counted <= exact() + crate::pool::thread_cache::UNCOUNTED_CACHES * cap,
        "counted {counted}, regions {}",
        exact()
    );
    assert!(peak >= 10 * cap);
    to_releaser.send(()).unwrap();
    releaser.join().unwrap();
    // The releaser's cache and its uncounted returns went back when it exited; this
    // thread's cache goes back with `trim`.
    pool.trim();
    assert_eq!(exact(), 0);
    assert_eq!(out.now(), 0);
    assert_eq!(shared.out_bytes_now(), 0);
}
