//! The budget: exhaustion, waiting, pressure, and requests that can never fit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use segpool::{Error, ErrorKind, Segment, SegmentPool};

const MIB: usize = 1 << 20;

/// A 4 MiB pool whose pressure callback frees nothing and only counts its calls.
fn pool_counting_pressure_calls() -> (SegmentPool, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let pool = SegmentPool::builder()
        .budget(4 * MIB)
        .on_pressure(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    (pool, calls)
}

fn four_mib_pool() -> SegmentPool {
    SegmentPool::builder().budget(4 * MIB).build().unwrap()
}

#[test]
fn a_small_budget_serves_segments_up_to_about_the_budget() {
    let pool = four_mib_pool();
    let segs: Vec<Segment> = (0..4)
        .map(|_| {
            pool.allocate(MIB)
                .expect("four 1 MiB segments fit in 4 MiB")
        })
        .collect();
    assert_eq!(pool.stats().mapped_bytes, 4 * MIB);
    match pool.allocate(MIB).map_err(Error::into_kind) {
        Err(ErrorKind::BudgetExceeded {
            requested,
            needed,
            used,
            budget,
        }) => {
            assert_eq!(requested, MIB);
            assert_eq!(needed, MIB);
            assert_eq!(used, 4 * MIB);
            assert_eq!(budget, 4 * MIB);
        }
        other => panic!("expected BudgetExceeded, got {other:?}"),
    }
    let mut segs = segs;
    segs.pop();
    let again = pool.allocate(MIB).expect("room after a release");
    assert_eq!(again.len(), MIB);
    assert!(pool.stats().peak_mapped_bytes <= 4 * MIB);
}

#[test]
fn the_pool_unmaps_its_own_empty_regions_of_other_classes_before_failing() {
    let pool = four_mib_pool();
    // Map a 4 KiB region (1 MiB under this budget), then release its segment: the region is empty.
    drop(pool.allocate(4096).unwrap());
    assert_eq!(pool.stats().mapped_bytes, MIB);
    let segs: Vec<Segment> = (0..4)
        .map(|_| pool.allocate(MIB).expect("the empty region makes room"))
        .collect();
    assert_eq!(pool.stats().mapped_bytes, 4 * MIB);
    assert_eq!(pool.stats().classes[0].regions, 0);
    drop(segs);
}

#[test]
fn a_blocked_allocate_timeout_is_woken_by_a_release_on_another_thread() {
    let pool = four_mib_pool();
    let mut segs: Vec<Segment> = (0..4).map(|_| pool.allocate(MIB).unwrap()).collect();
    let waiter = {
        let pool = pool.clone();
        thread::spawn(move || pool.allocate_timeout(MIB, Duration::from_secs(60)))
    };
    // Wait until the other thread is blocked on the budget (observed, not slept on).
    while pool.stats().budget_waiters == 0 {
        thread::yield_now();
    }
    drop(segs.pop());
    let seg = waiter.join().unwrap().expect("woken by the release");
    assert_eq!(seg.len(), MIB);
    assert_eq!(pool.stats().budget_waiters, 0);
}

#[test]
fn allocate_timeout_gives_up_with_budget_exceeded_when_nothing_is_released() {
    let pool = four_mib_pool();
    let _segs: Vec<Segment> = (0..4).map(|_| pool.allocate(MIB).unwrap()).collect();
    match pool
        .allocate_timeout(MIB, Duration::from_millis(30))
        .map_err(Error::into_kind)
    {
        Err(ErrorKind::BudgetExceeded { budget, used, .. }) => {
            assert_eq!(budget, 4 * MIB);
            assert_eq!(used, 4 * MIB);
        }
        other => panic!("expected BudgetExceeded, got {other:?}"),
    }
}

#[test]
fn the_pressure_callback_can_free_memory_and_the_allocation_then_succeeds() {
    let victims: Arc<Mutex<Vec<Segment>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let asked = Arc::new(AtomicUsize::new(0));
    let pool = {
        let (victims, calls, asked) =
            (Arc::clone(&victims), Arc::clone(&calls), Arc::clone(&asked));
        SegmentPool::builder()
            .budget(4 * MIB)
            .on_pressure(move |needed| {
                calls.fetch_add(1, Ordering::SeqCst);
                asked.store(needed, Ordering::SeqCst);
                // Evict: releasing a segment from inside the callback must not deadlock.
                drop(victims.lock().unwrap().pop());
            })
            .build()
            .unwrap()
    };
    victims
        .lock()
        .unwrap()
        .extend((0..4).map(|_| pool.allocate(MIB).unwrap()));
    let seg = pool.allocate(MIB).expect("the callback freed a segment");
    assert_eq!(seg.len(), MIB);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "called once");
    assert_eq!(asked.load(Ordering::SeqCst), MIB, "told what was needed");
    assert_eq!(victims.lock().unwrap().len(), 3);
}

#[test]
fn a_pressure_callback_that_frees_nothing_leads_to_budget_exceeded() {
    let (pool, calls) = pool_counting_pressure_calls();
    let _segs: Vec<Segment> = (0..4).map(|_| pool.allocate(MIB).unwrap()).collect();
    assert!(matches!(
        pool.allocate(MIB).map_err(Error::into_kind),
        Err(ErrorKind::BudgetExceeded { .. })
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn requests_that_can_never_fit_fail_at_once() {
    let (pool, calls) = pool_counting_pressure_calls();
    match pool.allocate(5 * MIB).map_err(Error::into_kind) {
        Err(ErrorKind::BudgetExceeded {
            requested,
            needed,
            budget,
            ..
        }) => {
            assert_eq!(requested, 5 * MIB);
            assert_eq!(needed, 8 * MIB, "one region (one slice) of the 8 MiB class");
            assert_eq!(budget, 4 * MIB);
        }
        other => panic!("expected BudgetExceeded, got {other:?}"),
    }
    // Even with a long timeout: it can never fit, so no waiting.
    assert!(matches!(
        pool.allocate_timeout(5 * MIB, Duration::from_secs(3600))
            .map_err(Error::into_kind),
        Err(ErrorKind::BudgetExceeded { .. })
    ));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no pressure for the impossible"
    );
    assert!(matches!(
        pool.allocate(usize::MAX).map_err(Error::into_kind),
        Err(ErrorKind::TooLarge { .. })
    ));
    assert!(matches!(
        pool.allocate(usize::MAX - 4095).map_err(Error::into_kind),
        Err(ErrorKind::TooLarge { .. })
    ));
    assert_eq!(pool.stats().mapped_bytes, 0, "failed requests map nothing");
}

#[test]
fn dedicated_mappings_count_against_the_budget() {
    let pool = SegmentPool::builder()
        .size_classes(&[4096, MIB])
        .budget(8 * MIB)
        .build()
        .unwrap();
    let big = pool.allocate(6 * MIB).unwrap();
    let stats = pool.stats();
    assert_eq!(stats.mapped_bytes, 6 * MIB);
    assert_eq!(stats.in_use_bytes, 6 * MIB);
    assert!(matches!(
        pool.allocate(3 * MIB).map_err(Error::into_kind),
        Err(ErrorKind::BudgetExceeded { .. })
    ));
    drop(big);
    assert_eq!(
        pool.stats().mapped_bytes,
        0,
        "a dedicated mapping is unmapped on release"
    );
    assert!(pool.allocate(7 * MIB).is_ok());
}

#[test]
fn a_waiter_gets_room_freed_by_another_class_emptying_while_it_waits() {
    let pool = SegmentPool::builder().budget(4 * MIB).build().unwrap();
    // 3 MiB of 1 MiB segments and a 1 MiB region of 4 KiB slices fill the budget.
    let _big: Vec<Segment> = (0..3).map(|_| pool.allocate(MIB).unwrap()).collect();
    let small = pool.allocate(4096).unwrap();
    assert_eq!(pool.stats().mapped_bytes, 4 * MIB);
    let waiter = {
        let pool = pool.clone();
        thread::spawn(move || pool.allocate_timeout(MIB, Duration::from_secs(60)))
    };
    while pool.stats().budget_waiters == 0 {
        thread::yield_now();
    }
    // Releasing the 4 KiB segment empties its region; the waiter must unmap it and take the room.
    drop(small);
    let seg = waiter
        .join()
        .unwrap()
        .expect("the emptied region of another class makes room");
    assert_eq!(seg.len(), MIB);
}
