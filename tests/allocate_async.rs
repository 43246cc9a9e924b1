//! `SegmentPool::allocate_async`: woken by releases, served in arrival order with blocking
//! waiters, cancellation-safe. Polled by hand with counting wakers (no runtime needed).

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use segpool::{Error, ErrorKind, Segment, SegmentPool};

const PAGE: usize = 4096;

#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn waker() -> (Arc<Counter>, Waker) {
    let c = Arc::new(Counter::default());
    (Arc::clone(&c), Waker::from(c))
}

fn poll<F: Future>(f: Pin<&mut F>, w: &Waker) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(w))
}

/// A pool of 8 pages (one region, no thread caches), filled.
fn full_pool() -> (SegmentPool, Vec<Segment>) {
    let pool = SegmentPool::builder()
        .size_classes(&[PAGE])
        .budget(8 * PAGE)
        .region_size(8 * PAGE)
        .build()
        .unwrap();
    let held = (0..8).map(|_| pool.allocate(PAGE).unwrap()).collect();
    (pool, held)
}

#[test]
fn completes_at_once_when_there_is_room() {
    let pool = SegmentPool::new().unwrap();
    let (_, w) = waker();
    let mut f = pin!(pool.allocate_async(10_000));
    let Poll::Ready(Ok(seg)) = poll(f.as_mut(), &w) else {
        panic!("room was there");
    };
    assert_eq!(seg.len(), 16 << 10);
}

#[test]
fn a_request_that_can_never_fit_fails_at_once() {
    let (pool, _held) = full_pool();
    let (_, w) = waker();
    let mut f = pin!(pool.allocate_async(1 << 20));
    assert!(matches!(
        poll(f.as_mut(), &w).map_err(Error::into_kind),
        Poll::Ready(Err(ErrorKind::BudgetExceeded { .. }))
    ));
    let mut z = pin!(pool.allocate_async(0));
    assert!(matches!(
        poll(z.as_mut(), &w).map_err(Error::into_kind),
        Poll::Ready(Err(ErrorKind::ZeroSize))
    ));
}

#[test]
fn a_release_wakes_the_waiter_and_hands_it_the_slice() {
    let (pool, mut held) = full_pool();
    let (count, w) = waker();
    let mut f = pin!(pool.allocate_async(PAGE));
    assert!(poll(f.as_mut(), &w).is_pending());
    assert!(
        poll(f.as_mut(), &w).is_pending(),
        "polling again changes nothing"
    );
    assert_eq!(pool.stats().budget_waiters, 1);
    let released = held.pop().unwrap();
    let addr = released.as_ptr();
    drop(released);
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    // A newcomer cannot take the slice that was handed to the waiter.
    assert!(matches!(
        pool.allocate(PAGE).map_err(Error::into_kind),
        Err(ErrorKind::BudgetExceeded { .. })
    ));
    let Poll::Ready(Ok(seg)) = poll(f.as_mut(), &w) else {
        panic!("woken with its slice");
    };
    assert_eq!(seg.as_ptr(), addr);
    assert_eq!(pool.stats().budget_waiters, 0);
    held.push(seg);
    let st = pool.stats();
    assert_eq!(st.in_use_bytes, 8 * PAGE, "{st}");
}

#[test]
fn waiters_are_served_in_arrival_order_async_and_blocking_alike() {
    let (pool, mut held) = full_pool();
    let (c1, w1) = waker();
    let (c2, w2) = waker();
    let mut f1 = pin!(pool.allocate_async(PAGE));
    let mut f2 = pin!(pool.allocate_async(PAGE));
    assert!(poll(f1.as_mut(), &w1).is_pending());
    assert!(poll(f2.as_mut(), &w2).is_pending());
    std::thread::scope(|s| {
        // A blocking waiter queues third.
        let blocking = s.spawn(|| pool.allocate_timeout(PAGE, Duration::from_secs(60)));
        while pool.budget().waiters() < 3 {
            std::thread::yield_now();
        }
        drop(held.pop());
        assert_eq!(
            c1.0.load(Ordering::SeqCst),
            1,
            "the oldest waiter was served"
        );
        assert!(
            poll(f2.as_mut(), &w2).is_pending(),
            "the second one still waits"
        );
        let Poll::Ready(Ok(a)) = poll(f1.as_mut(), &w1) else {
            panic!("first served");
        };
        drop(held.pop());
        assert!(c2.0.load(Ordering::SeqCst) >= 1);
        let Poll::Ready(Ok(b)) = poll(f2.as_mut(), &w2) else {
            panic!("second served");
        };
        drop(held.pop());
        let c = blocking.join().unwrap().expect("third served");
        drop((a, b, c));
    });
}

#[test]
fn a_dropped_future_leaves_no_waiter_and_no_slice_behind() {
    let (pool, mut held) = full_pool();
    let (_, w) = waker();
    {
        let mut f = pin!(pool.allocate_async(PAGE));
        assert!(poll(f.as_mut(), &w).is_pending());
        // Handed a slice, then cancelled before it was polled again.
        drop(held.pop());
    }
    assert_eq!(pool.budget().waiters(), 0);
    let st = pool.stats();
    assert_eq!(st.allocations - st.releases, 7, "{st}");
    // The slice went back to the pool: a plain allocation gets it.
    held.push(
        pool.allocate(PAGE)
            .expect("the cancelled waiter's slice is free"),
    );
    // And a cancelled waiter's slice goes to the next waiter when there is one.
    let (c2, w2) = waker();
    let mut second = pin!(pool.allocate_async(PAGE));
    {
        let mut first = pin!(pool.allocate_async(PAGE));
        assert!(poll(first.as_mut(), &w).is_pending());
        assert!(poll(second.as_mut(), &w2).is_pending());
        drop(held.pop());
    }
    assert!(c2.0.load(Ordering::SeqCst) >= 1);
    assert!(matches!(poll(second.as_mut(), &w2), Poll::Ready(Ok(_))));
    assert_eq!(pool.budget().waiters(), 0);
}

#[test]
fn a_waiter_gets_room_freed_by_another_class_emptying_while_it_waits() {
    let pool = SegmentPool::builder()
        .size_classes(&[PAGE, 64 << 10])
        .budget(512 << 10)
        .region_size(256 << 10)
        .retain_empty_regions(2)
        .build()
        .unwrap();
    let mut big: Vec<Segment> = (0..8).map(|_| pool.allocate(64 << 10).unwrap()).collect();
    let (count, w) = waker();
    let mut f = pin!(pool.allocate_async(PAGE));
    assert!(poll(f.as_mut(), &w).is_pending());
    // The last slice of a 64 KiB region comes back: the region is empty (and retained), the
    // waiter is woken, and its retry unmaps the region to map one of its own class.
    big.truncate(4);
    assert!(count.0.load(Ordering::SeqCst) >= 1);
    assert!(matches!(poll(f.as_mut(), &w), Poll::Ready(Ok(_))));
    assert!(pool.budget().used() <= 512 << 10);
}
