//! `SegmentPool::usage`: the byte counts from the counters alone, equal to what `stats()`
//! reports under the same names whenever the pool is quiet.

use segpool::{PoolStats, PoolUsage, Segment, SegmentPool};

const CLASSES: [usize; 2] = [4096, 64 << 10];
/// Above the largest class: a dedicated mapping.
const DEDICATED: usize = 200 << 10;
const BUDGET: usize = 64 << 20;

fn pool(thread_cache: bool) -> SegmentPool {
    SegmentPool::builder()
        .size_classes(&CLASSES)
        .budget(BUDGET)
        .thread_cache(thread_cache)
        .build()
        .unwrap()
}

/// Every field of `u` against the field of the same name in `s`.
fn assert_agree(u: &PoolUsage, s: &PoolStats) {
    let of_usage = (
        u.mapped_bytes,
        u.in_use_bytes,
        u.cached_bytes,
        (u.dedicated_bytes, u.dedicated_segments),
        (u.budget_bytes, u.budget_waiters),
    );
    let of_stats = (
        s.mapped_bytes,
        s.in_use_bytes,
        s.cached_bytes,
        (s.dedicated_bytes, s.dedicated_segments),
        (s.budget_bytes, s.budget_waiters),
    );
    assert_eq!(of_usage, of_stats, "{u}\n{s}");
}

/// `pool.usage()`, checked against `pool.stats()` taken right after it.
fn checked_usage(pool: &SegmentPool) -> PoolUsage {
    let u = pool.usage();
    assert_agree(&u, &pool.stats());
    u
}

fn live_bytes(live: &[Segment]) -> usize {
    live.iter().map(|s| s.len()).sum()
}

#[test]
fn usage_counts_what_the_user_holds_and_agrees_with_stats() {
    for thread_cache in [true, false] {
        let pool = pool(thread_cache);
        let u = checked_usage(&pool);
        assert_eq!(u.budget_bytes, Some(BUDGET));
        assert_eq!((u.in_use_bytes, u.mapped_bytes, u.cached_bytes), (0, 0, 0));

        let mut live: Vec<Segment> = Vec::new();
        for i in 0..40 {
            let size = [1, 4096, 5000, 64 << 10, DEDICATED][i % 5];
            live.push(pool.allocate(size).unwrap());
        }
        // Release every third: with thread caches on, those slices are parked in this thread's
        // cache (cached, not in use).
        let mut i = 0;
        live.retain(|_| {
            i += 1;
            i % 3 != 0
        });
        let u = checked_usage(&pool);
        assert_eq!(
            u.in_use_bytes,
            live_bytes(&live),
            "thread cache {thread_cache}: {u}"
        );
        let dedicated: Vec<&Segment> = live.iter().filter(|s| s.len() >= DEDICATED).collect();
        assert_eq!(u.dedicated_segments, dedicated.len());
        assert_eq!(
            u.dedicated_bytes,
            dedicated.iter().map(|s| s.len()).sum::<usize>()
        );
        assert!(u.mapped_bytes >= u.in_use_bytes + u.cached_bytes, "{u}");
        assert_eq!(thread_cache, u.cached_bytes > 0, "{u}");

        drop(live);
        let u = checked_usage(&pool);
        assert_eq!(u.in_use_bytes, 0, "{u}");
        assert_eq!(u.dedicated_segments, 0, "{u}");
        pool.trim();
        let u = checked_usage(&pool);
        assert_eq!(u.cached_bytes, 0, "trim gives the caches back: {u}");
    }
}

/// Segments allocated on threads that have exited (their counts moved to the pool), and
/// segments allocated on one thread and released on another.
#[test]
fn usage_counts_segments_of_threads_that_have_exited() {
    let pool = pool(true);
    let from_others: Vec<Segment> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let pool = &pool;
                s.spawn(move || {
                    (0..5)
                        .map(|_| pool.allocate(64 << 10).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let u = checked_usage(&pool);
    assert_eq!(u.in_use_bytes, 15 * (64 << 10), "{u}");
    // Released here, on a thread that allocated none of them.
    drop(from_others);
    let u = checked_usage(&pool);
    assert_eq!(u.in_use_bytes, 0, "{u}");
}

#[test]
fn usage_prints_on_one_line() {
    let pool = pool(false);
    let _seg = pool.allocate(64 << 10).unwrap();
    let text = pool.usage().to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(text.contains("in use 0.06 MiB"), "{text}");
    assert!(text.contains("budget 64.00 MiB (0 waiting)"), "{text}");
    let unbounded = SegmentPool::builder().build().unwrap().usage().to_string();
    assert!(unbounded.contains("budget none"), "{unbounded}");
}
