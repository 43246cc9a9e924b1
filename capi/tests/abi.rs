//! The ABI called from Rust in-process: races on one handle, freeing a pool under other threads,
//! and pool indices reused many times.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use segpool_capi::*;

fn config() -> SegpoolConfig {
    SegpoolConfig {
        size_classes: std::ptr::null(),
        size_class_count: 0,
        region_size: 0,
        budget: 0,
        flags: SEGPOOL_FLAG_NO_HUGE_PAGES,
    }
}

fn create() -> SegpoolPool {
    let mut pool = 0;
    // SAFETY: both pointers are to live locals of the right types.
    let st = unsafe { segpool_pool_create(&config(), &mut pool) };
    assert_eq!(st, SegpoolStatus::Ok);
    pool
}

fn allocate(pool: SegpoolPool, size: usize) -> Result<SegpoolSegment, SegpoolStatus> {
    let mut seg = 0;
    // SAFETY: `seg` is a live local.
    match unsafe { segpool_allocate(pool, size, 0, &mut seg) } {
        SegpoolStatus::Ok => Ok(seg),
        st => Err(st),
    }
}

fn stats(pool: SegpoolPool) -> SegpoolStats {
    let mut s = SegpoolStats::default();
    assert_eq!(
        // SAFETY: `s` is a live local; no class array.
        unsafe { segpool_stats(pool, &mut s, std::ptr::null_mut(), 0) },
        SegpoolStatus::Ok
    );
    s
}

#[test]
fn racing_releases_of_one_handle_release_it_once() {
    let pool = create();
    for _ in 0..50 {
        let seg = allocate(pool, 4096).unwrap();
        let threads = 4;
        let barrier = Arc::new(Barrier::new(threads));
        let results: Vec<SegpoolStatus> = (0..threads)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    barrier.wait();
                    segpool_release(pool, seg)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let ok = results.iter().filter(|s| **s == SegpoolStatus::Ok).count();
        assert_eq!(ok, 1, "exactly one release wins: {results:?}");
        assert!(results
            .iter()
            .all(|s| matches!(s, SegpoolStatus::Ok | SegpoolStatus::StaleHandle)));
        assert_eq!(stats(pool).live_segments, 0);
    }
    assert_eq!(segpool_pool_free(pool), SegpoolStatus::Ok);
}

#[test]
fn freeing_a_pool_under_other_threads_refuses_their_later_calls() {
    let pool = create();
    let progress = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let progress = Arc::clone(&progress);
            thread::spawn(move || {
                // Until the pool is freed every call succeeds; once a call is refused, every later
                // one is refused too, with STALE_HANDLE (never a crash, never another code).
                let mut refused = false;
                for _ in 0..10_000_000 {
                    let step = match allocate(pool, 5000) {
                        Ok(seg) => {
                            let mut p = std::ptr::null_mut();
                            // SAFETY: `p` is a live local.
                            let a = unsafe { segpool_segment_ptr(pool, seg, &mut p) };
                            assert!(a != SegpoolStatus::Ok || !p.is_null());
                            [a, segpool_release(pool, seg)]
                        }
                        Err(st) => [st, st],
                    };
                    for st in step {
                        match st {
                            SegpoolStatus::Ok => {
                                assert!(!refused, "a call succeeded after a refusal")
                            }
                            SegpoolStatus::StaleHandle => refused = true,
                            other => panic!("unexpected status {other:?}"),
                        }
                    }
                    progress.fetch_add(1, Ordering::Relaxed);
                    if refused {
                        break;
                    }
                }
                assert!(refused, "the pool was never seen freed");
                for _ in 0..100 {
                    assert_eq!(allocate(pool, 5000), Err(SegpoolStatus::StaleHandle));
                }
            })
        })
        .collect();
    // Free the pool while both workers are in their loops.
    while progress.load(Ordering::Relaxed) < 200 {
        thread::yield_now();
    }
    assert_eq!(segpool_pool_free(pool), SegpoolStatus::Ok);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(segpool_pool_free(pool), SegpoolStatus::StaleHandle);
}

#[test]
fn reused_pool_indices_refuse_the_segments_of_earlier_pools() {
    let mut old: Vec<(SegpoolPool, SegpoolSegment)> = Vec::new();
    for round in 0..200 {
        let pool = create();
        // Every segment handle kept from a freed pool is refused by the new pool, even when it
        // got the same pool table index.
        for &(old_pool, seg) in &old {
            assert_ne!(old_pool, pool, "pool handles never repeat");
            let st = segpool_release(pool, seg);
            assert!(
                matches!(
                    st,
                    SegpoolStatus::StaleHandle
                        | SegpoolStatus::InvalidHandle
                        | SegpoolStatus::WrongPool
                ),
                "round {round}: old segment {seg:#x} got {st:?}"
            );
            assert_eq!(segpool_pool_free(old_pool), SegpoolStatus::StaleHandle);
        }
        assert_eq!(stats(pool).live_segments, 0);
        let a = allocate(pool, 4096).unwrap();
        let b = allocate(pool, 4096).unwrap();
        assert_eq!(segpool_release(pool, a), SegpoolStatus::Ok);
        old.push((pool, a));
        old.push((pool, b));
        assert_eq!(segpool_pool_free(pool), SegpoolStatus::Ok);
    }
}

#[test]
fn usage_reports_what_stats_reports_and_refuses_what_stats_refuses() {
    let pool = create();
    let segs: Vec<SegpoolSegment> = [4096, 5000, 64 << 10, 1 << 20]
        .iter()
        .map(|&size| allocate(pool, size).unwrap())
        .collect();
    let mut u = SegpoolUsage::default();
    // SAFETY: `u` is a live local.
    assert_eq!(unsafe { segpool_usage(pool, &mut u) }, SegpoolStatus::Ok);
    let s = stats(pool);
    assert_eq!(u.live_segments, 4);
    assert_eq!(
        (
            u.mapped_bytes,
            u.in_use_bytes,
            u.cached_bytes,
            u.budget_bytes
        ),
        (
            s.mapped_bytes,
            s.in_use_bytes,
            s.cached_bytes,
            s.budget_bytes
        )
    );
    assert_eq!(
        (
            u.dedicated_segments,
            u.dedicated_bytes,
            u.budget_waiters,
            u.live_segments
        ),
        (
            s.dedicated_segments,
            s.dedicated_bytes,
            s.budget_waiters,
            s.live_segments
        )
    );
    assert!(
        u.in_use_bytes >= 4096 + 5000 + (64 << 10) + (1 << 20),
        "{u:?}"
    );

    // SAFETY: a NULL `usage_out` is refused before anything is written.
    let st = unsafe { segpool_usage(pool, std::ptr::null_mut()) };
    assert_eq!(st, SegpoolStatus::NullPointer);
    for seg in segs {
        assert_eq!(segpool_release(pool, seg), SegpoolStatus::Ok);
    }
    assert_eq!(segpool_pool_free(pool), SegpoolStatus::Ok);
    let mut after = SegpoolUsage::default();
    // SAFETY: `after` is a live local; the freed handle is refused.
    let st = unsafe { segpool_usage(pool, &mut after) };
    assert_eq!(st, SegpoolStatus::StaleHandle);
    assert_eq!(
        after,
        SegpoolUsage::default(),
        "a refused call wrote nothing"
    );
    // SAFETY: as above; a handle that was never issued.
    let st = unsafe { segpool_usage(0xdead_beef, &mut after) };
    assert_ne!(st, SegpoolStatus::Ok);
}
