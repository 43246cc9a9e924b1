//! Randomized whole-pool scenarios under shuttle's scheduler: several threads, several classes,
//! thread caches, trims and a tight budget, with every handed-out range checked for overlap and
//! every byte checked before release.
//!
//! Run with `RUSTFLAGS="--cfg shuttle" cargo test --release --test shuttle` (`.ci/shuttle`).
//! `SHUTTLE_ITERATIONS` sets the number of random schedules (default 1000).
#![cfg(shuttle)]

use std::collections::BTreeMap;

use segpool::{ErrorKind, Segment, SegmentPool};
use shuttle::sync::{Arc, Mutex};
use shuttle::thread;

fn iterations() -> usize {
    std::env::var("SHUTTLE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[derive(Default)]
struct Live(Mutex<BTreeMap<usize, usize>>);

impl Live {
    fn insert(&self, seg: &Segment) {
        let (start, end) = (seg.as_ptr() as usize, seg.as_ptr() as usize + seg.len());
        let mut m = self.0.lock().unwrap();
        if let Some((&s, &e)) = m.range(..end).next_back() {
            assert!(
                e <= start,
                "{start:#x}..{end:#x} overlaps live {s:#x}..{e:#x}"
            );
        }
        m.insert(start, end);
    }
    fn remove(&self, seg: &Segment) {
        assert!(self
            .0
            .lock()
            .unwrap()
            .remove(&(seg.as_ptr() as usize))
            .is_some());
    }
}

fn scenario(retain_empty: usize) {
    let pool = SegmentPool::builder()
        .size_classes(&[4096, 16384])
        .region_size(32 << 10)
        .budget(160 << 10)
        .retain_empty_regions(retain_empty)
        .empty_region_grace(std::time::Duration::ZERO)
        .huge_pages(false)
        .build()
        .unwrap();
    let live = Arc::new(Live::default());
    let handles: Vec<_> = (0..3u8)
        .map(|t| {
            let (pool, live) = (pool.clone(), live.clone());
            thread::spawn(move || {
                let mut held: Vec<(Segment, u8)> = Vec::new();
                for i in 0..6u8 {
                    let size = if (t + i) % 3 == 0 { 16384 } else { 4096 };
                    match pool.allocate(size) {
                        Ok(mut seg) => {
                            live.insert(&seg);
                            let tag = t.wrapping_mul(16).wrapping_add(i) | 1;
                            seg[0] = tag;
                            let last = seg.len() - 1;
                            seg[last] = tag;
                            held.push((seg, tag));
                        }
                        Err(e) if matches!(e.kind(), ErrorKind::BudgetExceeded { .. }) => {}
                        Err(e) => panic!("unexpected error {e}"),
                    }
                    if t == 0 && i % 2 == 1 {
                        pool.trim();
                    }
                    if i % 2 == 0 && !held.is_empty() {
                        let (seg, tag) = held.remove(0);
                        assert_eq!(seg[0], tag);
                        assert_eq!(seg[seg.len() - 1], tag);
                        live.remove(&seg);
                    }
                }
                for (seg, tag) in held {
                    assert_eq!(seg[0], tag);
                    live.remove(&seg);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stats = pool.stats();
    assert_eq!(stats.in_use_bytes, 0, "{stats}");
    assert!(stats.mapped_bytes <= 160 << 10);
    pool.trim();
    assert_eq!(pool.stats().mapped_bytes, 0, "{}", pool.stats());
}

#[test]
fn whole_pool_random_schedules_retaining_one_empty_region() {
    shuttle::check_random(|| scenario(1), iterations());
}

#[test]
fn whole_pool_random_schedules_unmapping_every_empty_region() {
    shuttle::check_random(|| scenario(0), iterations());
}

#[test]
fn whole_pool_pct_schedules() {
    shuttle::check_pct(|| scenario(0), iterations(), 3);
}

/// Thread caches at full size (no budget): one thread allocates and hands every segment to
/// another, which releases it (so its cache fills and spills while the first one's empties and
/// refills), while a third allocates and releases its own and trims. Every range is checked for
/// overlap while live; at the end every cache has gone back (threads exited) and a trim unmaps
/// everything.
fn cross_thread_scenario() {
    let pool = SegmentPool::builder()
        .size_classes(&[4096])
        .region_size(16 << 10)
        .retain_empty_regions(0)
        .empty_region_grace(std::time::Duration::ZERO)
        .huge_pages(false)
        .build()
        .unwrap();
    let live = Arc::new(Live::default());
    let handoff: Arc<Mutex<Vec<(Segment, u8)>>> = Arc::default();
    let producer = {
        let (pool, live, handoff) = (pool.clone(), live.clone(), handoff.clone());
        thread::spawn(move || {
            for i in 0..10u8 {
                let mut seg = pool.allocate(4096).unwrap();
                live.insert(&seg);
                seg[0] = i | 0x80;
                handoff.lock().unwrap().push((seg, i | 0x80));
            }
        })
    };
    let consumer = {
        let (live, handoff) = (live.clone(), handoff.clone());
        thread::spawn(move || {
            let mut released = 0;
            while released < 10 {
                let batch: Vec<_> = std::mem::take(&mut *handoff.lock().unwrap());
                for (seg, tag) in batch {
                    assert_eq!(seg[0], tag);
                    live.remove(&seg);
                    drop(seg);
                    released += 1;
                }
                thread::yield_now();
            }
        })
    };
    let own = {
        let (pool, live) = (pool.clone(), live.clone());
        thread::spawn(move || {
            for i in 0..4u8 {
                let mut seg = pool.allocate(4096).unwrap();
                live.insert(&seg);
                seg[4095] = i;
                if i % 2 == 1 {
                    pool.trim();
                }
                assert_eq!(seg[4095], i);
                live.remove(&seg);
            }
        })
    };
    for h in [producer, consumer, own] {
        h.join().unwrap();
    }
    let stats = pool.stats();
    assert_eq!(stats.in_use_bytes, 0, "{stats}");
    assert_eq!(stats.cached_bytes, 0, "every thread exited: {stats}");
    pool.trim();
    assert_eq!(pool.stats().mapped_bytes, 0, "{}", pool.stats());
}

#[test]
fn thread_caches_across_threads_random_schedules() {
    shuttle::check_random(cross_thread_scenario, iterations());
}

/// The pressure protocol: a cache of 8 pages (the whole budget) evicts one page per callback
/// while 3 threads miss; the evicted slices are handed to the queued allocations. No allocation
/// may fail (the cache always has a page to evict), no range may be handed out twice, and every
/// count comes back to zero.
fn pressure_scenario() {
    let victims: Arc<Mutex<Vec<Segment>>> = Arc::default();
    let pool = {
        let v = victims.clone();
        SegmentPool::builder()
            .size_classes(&[4096])
            .region_size(32 << 10)
            .budget(32 << 10)
            .huge_pages(false)
            .on_pressure(move |needed| {
                assert_eq!(needed, 4096);
                let seg = v.lock().unwrap().pop();
                drop(seg);
            })
            .build()
            .unwrap()
    };
    let live = Arc::new(Live::default());
    {
        let mut v = victims.lock().unwrap();
        for _ in 0..8 {
            let seg = pool.allocate(4096).unwrap();
            live.insert(&seg);
            live.remove(&seg);
            v.push(seg);
        }
    }
    let handles: Vec<_> = (0..3u8)
        .map(|t| {
            let (pool, live, victims) = (pool.clone(), live.clone(), victims.clone());
            thread::spawn(move || {
                for i in 0..3u8 {
                    let mut seg = pool
                        .allocate(4096)
                        .unwrap_or_else(|e| panic!("a cache that can evict got {e}"));
                    live.insert(&seg);
                    seg[0] = t;
                    seg[4095] = i;
                    thread::yield_now();
                    assert_eq!((seg[0], seg[4095]), (t, i));
                    live.remove(&seg);
                    victims.lock().unwrap().push(seg);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(pool.budget().waiters(), 0);
    assert!(pool.budget().peak_used() <= 32 << 10);
    victims.lock().unwrap().clear();
    let stats = pool.stats();
    assert_eq!(stats.in_use_bytes, 0, "{stats}");
}

#[test]
fn pressure_hand_offs_random_schedules() {
    shuttle::check_random(pressure_scenario, iterations());
}
