//! The budget: a hard limit on the bytes the pool has mapped, and the waiters for room under it.
//!
//! A budget is a promise about memory, so it counts what is mapped (regions and dedicated
//! mappings), not only what is handed out. Reservations are taken with a CAS loop before a
//! mapping is made and given back after it is unmapped, so the mapped total never exceeds the
//! limit, even for a moment.
//!
//! Waiters (`allocate_timeout`) sleep on a condition variable. Whoever makes room (a slice given
//! back to a region, a region or dedicated mapping unmapped) calls [`Budget::notify`], which costs
//! one load when nobody waits. A waiter registers *before* it retries its allocation, and a
//! notifier publishes its room *before* it reads the waiter count (both sides `SeqCst`), so either
//! the waiter's retry sees the room or the notifier sees the waiter; the `wakeups` sequence number
//! closes the window between the retry and the sleep.

use std::time::Instant;

use crate::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{Condvar, Mutex};

#[derive(Debug)]
pub(crate) struct Budget {
    limit: Option<usize>,
    mapped: AtomicUsize,
    peak_mapped: AtomicUsize,
    waiters: AtomicUsize,
    wakeups: AtomicU64,
    lock: Mutex<()>,
    cond: Condvar,
}

impl Budget {
    pub(crate) fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            mapped: AtomicUsize::new(0),
            peak_mapped: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            wakeups: AtomicU64::new(0),
            lock: Mutex::new(()),
            cond: Condvar::new(),
        }
    }

    pub(crate) fn limit(&self) -> Option<usize> {
        self.limit
    }

    pub(crate) fn mapped(&self) -> usize {
        self.mapped.load(Ordering::Acquire)
    }

    pub(crate) fn peak_mapped(&self) -> usize {
        self.peak_mapped.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` under the limit; on failure returns the bytes mapped at that moment.
    pub(crate) fn try_reserve(&self, bytes: usize) -> Result<(), usize> {
        let mut cur = self.mapped.load(Ordering::Relaxed);
        loop {
            let next = match cur.checked_add(bytes) {
                Some(n) if self.limit.is_none_or(|l| n <= l) => n,
                _ => return Err(cur),
            };
            match self
                .mapped
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak_mapped.fetch_max(next, Ordering::Relaxed);
                    return Ok(());
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Gives back `bytes` after they were unmapped, and wakes waiters.
    pub(crate) fn release(&self, bytes: usize) {
        self.mapped.fetch_sub(bytes, Ordering::AcqRel);
        self.notify();
    }

    /// Threads waiting for room right now.
    pub(crate) fn waiters(&self) -> usize {
        self.waiters.load(Ordering::Relaxed)
    }

    /// Whether anybody waits for room; a relaxed load, for the release fast path.
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiters.load(Ordering::Relaxed) != 0
    }

    /// Wakes every waiter, if any. Call after the room was published.
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) != 0 {
            let _g = self.lock.lock();
            self.wakeups.fetch_add(1, Ordering::SeqCst);
            self.cond.notify_all();
        }
    }

    /// Runs `attempt` until it returns `Some`, sleeping between attempts until a notification or
    /// `deadline`. Returns `None` when the deadline passed with every attempt failing.
    pub(crate) fn wait_for<T>(
        &self,
        deadline: Instant,
        mut attempt: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            let seen = self.wakeups.load(Ordering::SeqCst);
            if let Some(v) = attempt() {
                break Some(v);
            }
            let now = Instant::now();
            if now >= deadline {
                break None;
            }
            let g = self.lock.lock();
            if self.wakeups.load(Ordering::SeqCst) == seen {
                // Room that sits in another thread's cache produces no notification until that
                // thread next calls the pool; a bounded sleep makes the waiter retry anyway.
                let wake = deadline.min(now + std::time::Duration::from_millis(20));
                drop(self.cond.wait_until(&self.lock, g, wake));
            }
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        result
    }
}
