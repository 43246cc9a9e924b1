//! The pressure protocol: a cache that evicts from `on_pressure` never sees an error while it can
//! evict, on any number of threads; released slices go to the allocation that asked first; the
//! callback (and what it owns) is dropped with the pool's last handle.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};

use segpool::{Budget, Segment, SegmentPool};

const PAGE: usize = 4096;
const BUDGET_PAGES: usize = 256;
const KEYS: u64 = 4096;

/// Lookups per thread: 10^5 in release builds (`cargo test --release --test pressure`); fewer in
/// debug builds so the test stays quick. `SEGPOOL_PRESSURE_LOOKUPS` overrides both.
fn lookups() -> usize {
    std::env::var("SEGPOOL_PRESSURE_LOOKUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            20_000
        } else {
            100_000
        })
}

/// A page cache as a new user writes it from the rustdoc: a table under a mutex, allocation
/// without the table's lock, eviction of one page (the oldest) per pressure call.
#[derive(Default)]
struct Table {
    pages: HashMap<u64, Segment>,
    order: VecDeque<u64>,
}

struct Cache {
    pool: SegmentPool,
    table: Arc<Mutex<Table>>,
}

impl Cache {
    fn new(budget: usize, evictions: Arc<AtomicUsize>) -> Cache {
        let table: Arc<Mutex<Table>> = Arc::default();
        let t = Arc::clone(&table);
        let pool = SegmentPool::builder()
            .size_classes(&[PAGE])
            .budget(budget)
            .on_pressure(move |needed| {
                assert_eq!(needed, PAGE, "one page of the class is what is needed");
                let mut t = t.lock().unwrap();
                while let Some(k) = t.order.pop_front() {
                    if let Some(seg) = t.pages.remove(&k) {
                        evictions.fetch_add(1, Ordering::Relaxed);
                        drop(t);
                        drop(seg);
                        return;
                    }
                }
            })
            .build()
            .unwrap();
        Cache { pool, table }
    }

    /// Returns whether the page's bytes were right; panics on an allocation error.
    fn lookup(&self, key: u64) -> bool {
        if let Some(seg) = self.table.lock().unwrap().pages.get(&key) {
            return seg[..8] == key.to_le_bytes();
        }
        let mut seg = self
            .pool
            .allocate(PAGE)
            .unwrap_or_else(|e| panic!("a cache that can evict got an error: {e}"));
        seg[..8].copy_from_slice(&key.to_le_bytes());
        let mut t = self.table.lock().unwrap();
        if let std::collections::hash_map::Entry::Vacant(v) = t.pages.entry(key) {
            v.insert(seg);
            t.order.push_back(key);
        }
        true
    }
}

/// Zipf(1) over `0..n` by inverse transform over the CDF.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: u64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / k as f64;
                acc
            })
            .collect();
        cdf.iter_mut().for_each(|c| *c /= acc);
        Zipf(cdf)
    }

    fn sample(&self, rng: &mut u64) -> u64 {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let u = (*rng >> 11) as f64 / (1u64 << 53) as f64;
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1) as u64
    }
}

fn run_cache(threads: usize) {
    let budget = BUDGET_PAGES * PAGE;
    let evictions = Arc::new(AtomicUsize::new(0));
    let cache = Cache::new(budget, Arc::clone(&evictions));
    let zipf = Zipf::new(KEYS);
    let n = lookups();
    std::thread::scope(|s| {
        for t in 0..threads as u64 {
            let (cache, zipf) = (&cache, &zipf);
            s.spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (t + 1);
                for _ in 0..n {
                    let k = zipf.sample(&mut rng);
                    assert!(cache.lookup(k), "page {k} has the wrong bytes");
                    assert!(cache.pool.budget().used() <= budget);
                }
            });
        }
    });
    let stats = cache.pool.stats();
    assert!(stats.peak_mapped_bytes <= budget, "{stats}");
    assert!(cache.pool.budget().peak_used() <= budget);
    // The key space is 16 times the budget: the cache had to evict to serve the misses.
    assert!(evictions.load(Ordering::Relaxed) > 0);
}

#[test]
fn a_page_cache_on_two_threads_never_fails_while_it_can_evict() {
    run_cache(2);
}

#[test]
fn a_page_cache_on_four_threads_never_fails_while_it_can_evict() {
    run_cache(4);
}

#[test]
fn a_page_cache_on_eight_threads_never_fails_while_it_can_evict() {
    run_cache(8);
}

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_slice_released_in_the_callback_goes_to_the_allocation_that_asked_first() {
    let victims: Arc<Mutex<Vec<Segment>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let pool = {
        let (v, c) = (Arc::clone(&victims), Arc::clone(&calls));
        SegmentPool::builder()
            .size_classes(&[PAGE])
            .budget(16 * PAGE)
            .region_size(16 * PAGE)
            .thread_cache(false)
            .on_pressure(move |needed| {
                assert_eq!(needed, PAGE);
                c.fetch_add(1, Ordering::SeqCst);
                let seg = v.lock().unwrap().pop();
                drop(seg);
            })
            .build()
            .unwrap()
    };
    // Fill the budget, then park the pages somewhere the first waiter's callback run cannot
    // reach them (so it queues without evicting).
    let all: Vec<Segment> = (0..16).map(|_| pool.allocate(PAGE).unwrap()).collect();
    let counter = Arc::new(Counter::default());
    let waker = Waker::from(Arc::clone(&counter));
    let mut cx = Context::from_waker(&waker);
    let mut first = pin!(pool.allocate_async(PAGE));
    assert!(first.as_mut().poll(&mut cx).is_pending(), "no room yet");
    assert_eq!(pool.budget().waiters(), 1);
    calls.store(0, Ordering::SeqCst);
    victims.lock().unwrap().extend(all);
    // A newcomer runs the callback: its first eviction goes to the older waiter, the second to
    // the newcomer.
    let second = pool.allocate(PAGE).expect("the cache can still evict");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the waiter was woken");
    let Poll::Ready(Ok(got)) = first.as_mut().poll(&mut cx) else {
        panic!("the first waiter was handed the first slice");
    };
    assert_eq!(victims.lock().unwrap().len(), 14);
    assert_eq!(pool.budget().waiters(), 0);
    drop((got, second));
}

/// Counts its drops.
struct DropCounter(Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn dropping_the_last_pool_handle_drops_the_callback_and_the_segments_it_owns() {
    let budget = Budget::new(4 << 20);
    let dropped = Arc::new(AtomicUsize::new(0));
    let victims: Arc<Mutex<Vec<Segment>>> = Arc::default();
    let weak: Weak<Mutex<Vec<Segment>>> = Arc::downgrade(&victims);
    let pool = {
        let v = Arc::clone(&victims);
        let marker = DropCounter(Arc::clone(&dropped));
        SegmentPool::builder()
            .shared_budget(&budget)
            .on_pressure(move |_| {
                let _ = &marker;
                drop(v.lock().unwrap().pop());
            })
            .build()
            .unwrap()
    };
    victims
        .lock()
        .unwrap()
        .extend((0..8).map(|_| pool.allocate(64 << 10).unwrap()));
    drop(victims);
    let clone = pool.clone();
    drop(pool);
    assert_eq!(dropped.load(Ordering::SeqCst), 0, "a handle is still alive");
    assert!(budget.used() > 0);
    drop(clone);
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the callback was dropped"
    );
    assert!(weak.upgrade().is_none(), "what it captured was dropped");
    // Its segments went back, so every region of the pool was unmapped.
    assert_eq!(budget.used(), 0);
}
