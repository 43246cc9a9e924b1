//! `SegmentPool`: the public handle, and the pieces of a pool behind it.
//!
//! * `builder`: [`SegmentPoolBuilder`] and [`Backing`], every value checked in `build`;
//! * `shared`: `PoolShared`, the state the handles, the regions and the thread caches share,
//!   with its counts and the region reports;
//! * `signals`: the one word the fast paths read (trim generation, budget waiters);
//! * `alloc`: the allocation paths (thread cache, refill, dedicated mapping, zeroed, waiting);
//! * `stats`: [`PoolStats`](crate::PoolStats) and the leak report, from one fold of the counts.

use std::fmt;

use crate::budget::Budget;
use crate::sync::Arc;
use crate::Result;
use stats::leaks;

mod alloc;
mod builder;
pub(crate) mod purge;
mod regions;
mod shared;
mod signals;
mod stats;
pub(crate) mod thread_cache;
pub(crate) mod wait;

pub(crate) use alloc::Attempt;
pub(crate) use builder::PressureFn;
pub use builder::{Backing, SegmentPoolBuilder, DEFAULT_PURGE_DECAY};
pub(crate) use shared::PoolShared;
pub(crate) use signals::{Signals, WAITER_MASK};

/// What a pool's budget reaches it by: the pool's state and its pressure callback. The last
/// `SegmentPool` handle owns it; the budget holds it weakly, so dropping that handle drops the
/// callback and what it owns (a cache's segments keep the pool's shared state alive, and the
/// callback would keep them: held by the shared state, it would never be dropped).
pub(crate) struct PoolHook {
    pub(crate) shared: Arc<PoolShared>,
    pub(crate) on_pressure: Option<Box<PressureFn>>,
}

/// The last `SegmentPool` handle closes the pool when it is dropped, then drops the pressure
/// callback (field order).
struct PoolHandle {
    shared: Arc<PoolShared>,
    hook: std::sync::Arc<PoolHook>,
}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        if self.shared.diag.is_some() {
            let report = leaks(&self.shared);
            if !report.is_empty() {
                tracing::warn!(
                    target: "segpool",
                    pool = self.shared.id,
                    outstanding = report.outstanding,
                    recorded = report.segments.len(),
                    report = %report,
                    "pool dropped with segments outstanding"
                );
            }
        }
        self.shared.close();
    }
}

/// A pool of page-aligned segments in size classes, carved from mmap'd regions.
///
/// Cloning is cheap (a shared handle). The pool is closed when the last clone is dropped: its empty
/// regions are unmapped at once, and regions that still have live segments are unmapped when the
/// last of those segments is released.
#[derive(Clone)]
pub struct SegmentPool {
    /// The pool's state, reached in one step by the fast path (the same `Arc` as
    /// `handle.shared`).
    shared: Arc<PoolShared>,
    /// Counts the user's handles: the last one closes the pool.
    _handle: Arc<PoolHandle>,
}

impl fmt::Debug for SegmentPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.shared, f)
    }
}

impl SegmentPool {
    /// A builder with the defaults (see [`SegmentPoolBuilder`]).
    pub fn builder() -> SegmentPoolBuilder {
        SegmentPoolBuilder::default()
    }

    /// A pool with every default: the default size classes, anonymous memory, no budget.
    pub fn new() -> Result<Self> {
        Self::builder().build()
    }

    #[inline(always)]
    pub(crate) fn shared(&self) -> &Arc<PoolShared> {
        &self.shared
    }

    pub(crate) fn hook(&self) -> &std::sync::Arc<PoolHook> {
        &self._handle.hook
    }

    /// The budget the pool's mappings count against: the one given to
    /// [`SegmentPoolBuilder::shared_budget`], or the pool's own.
    pub fn budget(&self) -> &Budget {
        &self.shared.budget
    }

    /// Unmaps every region that has no segment in use, now, and returns the bytes unmapped. This
    /// thread's cached slices go back first; other threads give theirs back on their next call
    /// into the pool (or when they exit), so regions they hold are unmapped by a later `trim()`.
    ///
    /// Then purges the free slices of the regions that stay mapped: their pages go back to the
    /// OS (`MADV_DONTNEED`, or `MADV_REMOVE` for file-backed pools) while the address space
    /// stays; they read zero when handed out again. Those bytes are not in the return value
    /// (nothing was unmapped) but in [`PoolStats::purged_bytes`](crate::PoolStats::purged_bytes).
    pub fn trim(&self) -> usize {
        self.shared().trim()
    }
}
