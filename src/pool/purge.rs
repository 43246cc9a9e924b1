//! The decay purger: one background thread for the whole process that gives back the pages of
//! slices left free longer than their pool's decay time (`SegmentPoolBuilder::purge_decay`).
//!
//! * **Lazy.** The thread starts when the first pool with a decay maps its first region (a pool
//!   that never maps anything never needs it), and is shared by every such pool.
//! * **Stops with the last pool.** Dropping a pool's last handle takes it off the list and wakes
//!   the thread; a thread that finds the list empty ends. The next pool starts a new one.
//! * **Off the fast path.** Allocate and release never call into this module and make no system
//!   call for it; the thread does its work (`PoolShared::purge`, which joins the region
//!   protocol as one more taker: `region::purge`) on its own time.
//! * **Aging.** Each pool is passed over every half decay time (at least every millisecond). A
//!   pass marks the dirty free slices it finds (`AGED`) and purges those a previous pass had
//!   marked and nobody took since (a take and a give-back clear the mark): a slice is purged
//!   after it sat free between half the decay and the whole decay, plus the time of a pass.
//!   A zero decay purges every free slice on every pass.
//!
//! The thread holds only weak references: a pool's shared state can outlive its handles (its
//! segments are still out), and the purger must not keep it alive. Under the loom and shuttle
//! models there is no thread; the models call the passes themselves.

#[cfg(not(any(loom, shuttle)))]
pub(crate) use imp::{register, unregister};

#[cfg(any(loom, shuttle))]
pub(crate) fn register(_pool: &crate::sync::Arc<crate::pool::PoolShared>, _decay: Duration) {}
#[cfg(any(loom, shuttle))]
pub(crate) fn unregister(_pool: &crate::pool::PoolShared) {}

use std::time::Duration;

/// The shortest time between two passes over one pool.
#[cfg(not(any(loom, shuttle)))]
const MIN_PERIOD: Duration = Duration::from_millis(1);

/// The time between two passes over a pool with decay `decay`, and what a pass purges.
#[cfg(not(any(loom, shuttle)))]
fn schedule(decay: Duration) -> (Duration, crate::region::PurgeMode) {
    use crate::region::PurgeMode;
    if decay.is_zero() {
        (MIN_PERIOD, PurgeMode::All)
    } else {
        ((decay / 2).max(MIN_PERIOD), PurgeMode::Aged)
    }
}

#[cfg(not(any(loom, shuttle)))]
mod imp {
    use std::sync::{Arc, Condvar, Mutex, Weak};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use crate::pool::PoolShared;
    use crate::region::PurgeMode;

    /// The name of the purger thread (as `/proc/self/task/*/comm` shows it).
    pub(crate) const THREAD_NAME: &str = "segpool-purge";

    struct Entry {
        pool: Weak<PoolShared>,
        /// The pool's address, to find the entry when the pool closes.
        key: usize,
        period: Duration,
        mode: PurgeMode,
        next: Instant,
    }

    /// The pools the thread serves, and whether a thread runs.
    ///
    /// # Invariants
    ///
    /// * `running` is true from the spawn until the thread is told to end (the last pool
    ///   unregistered: `generation` moves on) or, holding the lock, found `entries` empty and
    ///   ended: so at most one thread serves the list, and a registration while one runs is seen
    ///   by it (it re-reads `entries` under the lock after each wait).
    /// * A thread serves while `generation` is the one it was spawned with; a thread that sees
    ///   another ends without touching the list (a newer thread may serve it already).
    /// * `thread` is the running thread's handle, taken by whoever ends it: the last pool's
    ///   `unregister` joins it, so when the last pool is closed no purger thread (and nothing it
    ///   allocated) outlives it.
    struct Purger {
        entries: Vec<Entry>,
        running: bool,
        generation: u64,
        thread: Option<JoinHandle<()>>,
    }

    static PURGER: Mutex<Purger> = Mutex::new(Purger {
        entries: Vec::new(),
        running: false,
        generation: 0,
        thread: None,
    });
    static WAKE: Condvar = Condvar::new();

    fn lock() -> std::sync::MutexGuard<'static, Purger> {
        // A panic in a pass does not leave the list half-written (it is only read then).
        PURGER.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `pool` to the purger, starting the thread if none runs.
    pub(crate) fn register(pool: &Arc<PoolShared>, decay: Duration) {
        let (period, mode) = super::schedule(decay);
        let mut p = lock();
        p.entries.push(Entry {
            pool: Arc::downgrade(pool),
            key: Arc::as_ptr(pool) as usize,
            period,
            mode,
            next: Instant::now() + period,
        });
        if !p.running {
            let generation = p.generation;
            let spawned = std::thread::Builder::new()
                .name(THREAD_NAME.into())
                .spawn(move || run(generation));
            match spawned {
                Ok(handle) => {
                    p.running = true;
                    p.thread = Some(handle);
                }
                // The pool still works; only `trim()` gives free pages back then.
                Err(e) => tracing::warn!(target: "segpool", error = %e, "purger not started"),
            }
        }
        WAKE.notify_all();
    }

    /// Takes `pool` off the purger's list (its last handle was dropped). When the list is empty
    /// then, the thread is told to end and joined: it finishes the pass it may be in (over pools
    /// that are closing too) and allocates nothing after. Called with no lock of the pool held.
    pub(crate) fn unregister(pool: &PoolShared) {
        let key = pool as *const PoolShared as usize;
        let mut p = lock();
        p.entries.retain(|e| e.key != key);
        let ending = if p.entries.is_empty() && p.running {
            p.running = false;
            p.generation = p.generation.wrapping_add(1);
            p.thread.take()
        } else {
            None
        };
        WAKE.notify_all();
        drop(p);
        if let Some(handle) = ending {
            // The purger itself never closes a pool (it holds no handle), but if it ever did it
            // must not wait for itself: it ends on its own at its next look at the list.
            if handle.thread().id() != std::thread::current().id() {
                // A panic in a pass ended the thread already; nothing is left to clean.
                let _ = handle.join();
            }
        }
    }

    fn run(generation: u64) {
        let mut p = lock();
        loop {
            if p.generation != generation {
                return;
            }
            p.entries.retain(|e| e.pool.strong_count() > 0);
            if p.entries.is_empty() {
                p.running = false;
                // Nobody joins a thread that ended on its own: its handle is dropped (detached).
                p.thread = None;
                return;
            }
            let now = Instant::now();
            let mut due = Vec::new();
            for e in p.entries.iter_mut().filter(|e| e.next <= now) {
                if let Some(pool) = e.pool.upgrade() {
                    due.push((pool, e.mode));
                }
                e.next = now + e.period;
            }
            if due.is_empty() {
                let next = p.entries.iter().map(|e| e.next).min().unwrap_or(now);
                p = WAKE
                    .wait_timeout(p, next.saturating_duration_since(now))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
            drop(p);
            for (pool, mode) in due {
                let bytes = pool.purge(mode);
                if bytes > 0 {
                    tracing::trace!(target: "segpool", pool = pool.id, bytes, "decay purge");
                }
                // The last reference to a closed pool's state may be dropped here: the pool is
                // off the list by then (it unregistered when it closed).
            }
            p = lock();
        }
    }
}

#[cfg(all(test, not(loom), not(shuttle)))]
mod tests {
    use crate::region::PurgeMode;
    use crate::SegmentPool;

    /// A decay pass purges only what the previous pass already found free; handing a slice out
    /// and back clears its age.
    #[test]
    fn a_slice_is_purged_on_the_second_pass_that_finds_it_free() {
        const PAGE: usize = 4096;
        let pool = SegmentPool::builder()
            .size_classes(&[PAGE])
            .thread_cache(false)
            .huge_pages(false)
            .purge_decay(None)
            .build()
            .unwrap();
        let shared = pool.shared().clone();
        let mut segs: Vec<_> = (0..8).map(|_| pool.allocate(PAGE).unwrap()).collect();
        for s in &mut segs {
            s.fill(1);
        }
        let keep = segs.remove(0);
        drop(segs);
        assert_eq!(shared.purge(PurgeMode::Aged), 0, "first pass: only marks");
        assert_eq!(
            shared.purge(PurgeMode::Aged),
            7 * PAGE,
            "second pass: purges"
        );
        assert_eq!(shared.purge(PurgeMode::Aged), 0, "nothing dirty is left");
        let mut again = pool.allocate(PAGE).unwrap();
        again.fill(2);
        drop(again);
        assert_eq!(
            shared.purge(PurgeMode::Aged),
            0,
            "released since: only marked"
        );
        assert_eq!(shared.purge(PurgeMode::Aged), PAGE);
        drop(keep);
    }
}
