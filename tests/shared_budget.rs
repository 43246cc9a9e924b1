//! One budget for several pools and for memory outside them (`Budget`, `Reservation`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use segpool::{Budget, Error, ErrorKind, Segment, SegmentPool};

const MIB: usize = 1 << 20;

fn pool_on(budget: &Budget) -> SegmentPool {
    SegmentPool::builder()
        .shared_budget(budget)
        .build()
        .unwrap()
}

/// A pool on `budget` whose callback evicts one segment of `victims` per call and counts calls.
fn evicting_pool_on(
    budget: &Budget,
    victims: &Arc<Mutex<Vec<Segment>>>,
    calls: &Arc<AtomicUsize>,
) -> SegmentPool {
    let (v, c) = (Arc::clone(victims), Arc::clone(calls));
    SegmentPool::builder()
        .shared_budget(budget)
        .on_pressure(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            let seg = v.lock().unwrap().pop();
            drop(seg);
        })
        .build()
        .unwrap()
}

#[test]
fn two_pools_and_a_reservation_share_sixteen_mib_and_the_sum_never_exceeds_it() {
    let budget = Budget::new(16 * MIB);
    let pools = [pool_on(&budget), pool_on(&budget)];
    let max_seen = AtomicUsize::new(0);
    let mut r = budget.reserve(MIB).unwrap();
    std::thread::scope(|s| {
        let mut threads = Vec::new();
        for (t, pool) in pools.iter().enumerate() {
            for k in 0..2u64 {
                let (budget, max_seen) = (&budget, &max_seen);
                threads.push(s.spawn(move || {
                    let mut held: Vec<Segment> = Vec::new();
                    let mut rng = 0x2545_F491_4F6C_DD1D ^ (t as u64 * 2 + k + 1);
                    for _ in 0..4000 {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let size = 4096 << (rng % 9); // 4 KiB .. 1 MiB
                        match pool.allocate(size).map_err(Error::into_kind) {
                            Ok(seg) => held.push(seg),
                            Err(ErrorKind::BudgetExceeded {
                                used, budget: b, ..
                            }) => {
                                assert!(used <= b);
                                held.clear();
                            }
                            Err(e) => panic!("{e}"),
                        }
                        if held.len() > 12 {
                            held.swap_remove((rng >> 8) as usize % held.len());
                        }
                        max_seen.fetch_max(budget.used(), Ordering::Relaxed);
                    }
                }));
            }
        }
        let (budget, max_seen, r) = (&budget, &max_seen, &mut r);
        s.spawn(move || {
            for _ in 0..4000 {
                let _ = r.try_grow(256 << 10);
                max_seen.fetch_max(budget.used(), Ordering::Relaxed);
                if r.size() > 4 * MIB {
                    r.shrink(r.size() - MIB);
                }
            }
        });
        // Joined by hand: a joined thread has also run its thread-local destructors, which give
        // its cached slices back (the scope's own wait does not wait for those).
        for t in threads {
            t.join().unwrap();
        }
    });
    assert!(r.size() >= MIB);
    drop(r);
    assert!(max_seen.load(Ordering::Relaxed) <= 16 * MIB);
    assert!(budget.peak_used() <= 16 * MIB);
    assert!(budget.peak_used() > 8 * MIB, "the load reached the limit");
    // Quiet now: what the budget counts is what the two pools map (the reservation is gone).
    let mapped: usize = pools.iter().map(|p| p.stats().mapped_bytes).sum();
    assert_eq!(budget.used(), mapped);
    for p in &pools {
        let st = p.stats();
        assert!(st.peak_mapped_bytes <= 16 * MIB);
        assert!(st.peak_in_use_bytes <= st.peak_mapped_bytes, "{st}");
    }
    drop(pools);
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_reservation_that_cannot_grow_gets_the_pools_callbacks_run_first() {
    let budget = Budget::new(4 * MIB);
    let victims: Arc<Mutex<Vec<Segment>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let pool = evicting_pool_on(&budget, &victims, &calls);
    victims
        .lock()
        .unwrap()
        .extend((0..4).map(|_| pool.allocate(MIB).unwrap()));
    assert_eq!(budget.used(), 4 * MIB);
    let mut r = budget.reserve(0).unwrap();
    r.try_grow(2 * MIB).expect("the pool's callback made room");
    assert_eq!(r.size(), 2 * MIB);
    assert!(calls.load(Ordering::SeqCst) >= 2);
    assert_eq!(victims.lock().unwrap().len(), 2);
    assert!(budget.used() <= 4 * MIB);
    // 3 MiB more cannot fit beside the reservation's own 2 MiB: the pool is asked until it has
    // nothing left, then the growth fails and the reservation is unchanged.
    let err = r.try_grow(3 * MIB).unwrap_err();
    assert!(
        matches!(err.into_kind(), ErrorKind::BudgetExceeded { requested, budget: b, .. }
        if requested == 3 * MIB && b == 4 * MIB)
    );
    assert_eq!(r.size(), 2 * MIB);
    assert!(victims.lock().unwrap().is_empty());
    assert_eq!(budget.used(), 2 * MIB);
    r.shrink(MIB);
    assert_eq!(budget.used(), MIB);
    drop(r);
    drop(victims.lock().unwrap().drain(..));
    drop(pool);
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_pool_short_of_room_asks_the_other_pools_on_its_budget() {
    let budget = Budget::new(4 * MIB);
    let victims: Arc<Mutex<Vec<Segment>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let holder = evicting_pool_on(&budget, &victims, &calls);
    let asker = pool_on(&budget);
    victims
        .lock()
        .unwrap()
        .extend((0..4).map(|_| holder.allocate(MIB).unwrap()));
    let seg = asker
        .allocate(MIB)
        .expect("the other pool's callback made room");
    assert!(calls.load(Ordering::SeqCst) >= 1);
    assert!(budget.used() <= 4 * MIB);
    assert_eq!(
        asker.stats().mapped_bytes + holder.stats().mapped_bytes,
        budget.used()
    );
    drop(seg);
}

#[test]
fn reservations_count_against_the_budget_and_are_released_on_drop() {
    let budget = Budget::new(4 * MIB);
    assert_eq!(budget.limit(), 4 * MIB);
    let pool = pool_on(&budget);
    let r = budget.reserve(3 * MIB).unwrap();
    assert_eq!(budget.used(), 3 * MIB);
    // A 2 MiB dedicated mapping does not fit beside it, and nobody can free anything.
    match pool.allocate(2 * MIB).map_err(Error::into_kind) {
        Err(ErrorKind::BudgetExceeded {
            used, budget: b, ..
        }) => {
            assert_eq!(used, 3 * MIB);
            assert_eq!(b, 4 * MIB);
        }
        other => panic!("expected BudgetExceeded, got {other:?}"),
    }
    assert!(matches!(
        budget.reserve(5 * MIB).map_err(Error::into_kind),
        Err(ErrorKind::BudgetExceeded { .. })
    ));
    drop(r);
    assert_eq!(budget.used(), 0);
    let seg = pool.allocate(2 * MIB).unwrap();
    assert_eq!(budget.used(), 2 * MIB);
    assert!(pool.budget().ptr_eq(&budget));
    drop(seg);
}

#[test]
fn a_pool_takes_either_a_budget_or_a_shared_one() {
    let budget = Budget::new(4 * MIB);
    let err = SegmentPool::builder()
        .budget(MIB)
        .shared_budget(&budget)
        .build()
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidConfig(_)), "{err}");
}
