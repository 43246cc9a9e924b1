//! The budget: a hard limit on the bytes the pool has mapped, and the waiters for room under it.
//!
//! A budget is a promise about memory, so it counts what is mapped (regions and dedicated
//! mappings), not only what is handed out. Reservations are taken with a CAS loop before a
//! mapping is made and given back after it is unmapped, so the mapped total never exceeds the
//! limit, even for a moment.
//!
//! The waiter count shares one word with the pool's trim generation ([`Signals`]), so the release
//! fast path learns both "give your cache back" and "somebody waits, do not cache" from one load.
//!
//! Waiters (`allocate_timeout`) sleep on a condition variable. Whoever makes room (a slice given
//! back to a region, a region or dedicated mapping unmapped) calls [`Budget::notify`], which costs
//! one load when nobody waits. A waiter registers *before* it retries its allocation, and a
//! notifier publishes its room *before* it reads the waiter count (both sides `SeqCst`), so either
//! the waiter's retry sees the room or the notifier sees the waiter; the `wakeups` sequence number
//! closes the window between the retry and the sleep.

use std::time::Instant;

use crossbeam_utils::CachePadded;

use crate::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{Condvar, Mutex};

/// One word read on every allocate and release: the trim generation in the high bits, the number
/// of threads waiting for budget in the low [`WAITER_BITS`] bits.
#[derive(Debug)]
pub(crate) struct Signals {
    word: CachePadded<AtomicU64>,
}

/// Bits of the signals word that count waiters.
pub(crate) const WAITER_BITS: u32 = 20;
/// Mask of the waiter count.
pub(crate) const WAITER_MASK: u64 = (1 << WAITER_BITS) - 1;

impl Signals {
    fn new() -> Self {
        Self {
            word: CachePadded::new(AtomicU64::new(0)),
        }
    }

    /// The current word (trim generation and waiter count).
    #[inline(always)]
    pub(crate) fn load(&self) -> u64 {
        self.word.load(Ordering::Acquire)
    }

    /// Moves the trim generation: every thread gives its cache back on its next call.
    pub(crate) fn bump_generation(&self) {
        self.word.fetch_add(1 << WAITER_BITS, Ordering::AcqRel);
    }

    /// Whether two words have the same trim generation.
    #[inline(always)]
    pub(crate) fn same_generation(a: u64, b: u64) -> bool {
        (a ^ b) >> WAITER_BITS == 0
    }
}

#[derive(Debug)]
pub(crate) struct Budget {
    limit: Option<usize>,
    mapped: AtomicUsize,
    peak_mapped: AtomicUsize,
    pub(crate) signals: Signals,
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
            signals: Signals::new(),
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
        (self.signals.load() & WAITER_MASK) as usize
    }

    /// Whether anybody waits for room.
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiters() != 0
    }

    /// Wakes every waiter, if any. Call after the room was published.
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.signals.word.load(Ordering::SeqCst) & WAITER_MASK != 0 {
            let _g = self.lock.lock();
            self.wakeups.fetch_add(1, Ordering::SeqCst);
            self.cond.notify_all();
        }
    }

    /// Runs `attempt` until it returns `Some`, sleeping between attempts until a notification or
    /// `deadline` (`None`: no deadline). Returns `None` when the deadline passed with every
    /// attempt failing.
    pub(crate) fn wait_for<T>(
        &self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        // More than 2^20 - 1 simultaneous waiters would carry into the generation: harmless (every
        // cache gives back once), and far beyond any thread count.
        self.signals.word.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            let seen = self.wakeups.load(Ordering::SeqCst);
            if let Some(v) = attempt() {
                break Some(v);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break None;
            }
            let g = self.lock.lock();
            if self.wakeups.load(Ordering::SeqCst) == seen {
                // Room that sits in another thread's cache produces no notification until that
                // thread next calls the pool; a bounded sleep makes the waiter retry anyway.
                let retry = now + std::time::Duration::from_millis(20);
                let wake = deadline.map_or(retry, |d| d.min(retry));
                drop(self.cond.wait_until(&self.lock, g, wake));
            }
        };
        self.signals.word.fetch_sub(1, Ordering::SeqCst);
        result
    }
}
