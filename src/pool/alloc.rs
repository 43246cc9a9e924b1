//! The allocation paths: the thread cache's fast path, the refill, the dedicated mapping of a
//! request above the largest class, zeroed segments, and the pressure and waiting paths that
//! `crate::pool::wait` runs.

use std::panic::Location;
use std::time::Duration;

use super::thread_cache;
use super::{PoolShared, SegmentPool};
use crate::class_pool::Shortage;
use crate::region::{RegionRef, ZERO_TAG};
use crate::segment::Segment;
use crate::{ErrorKind, Result};

/// The outcome of one attempt to serve an allocation.
pub(crate) enum Attempt {
    /// A segment, and whether its bytes are known to be zero.
    Done(Segment, bool),
    Short {
        needed: usize,
    },
}

impl SegmentPool {
    /// A segment of at least `size` bytes: the smallest class that fits, or a dedicated mapping
    /// (rounded up to pages) above the largest class. Its contents are unspecified (zero when the
    /// memory is fresh; use [`allocate_zeroed`](Self::allocate_zeroed) to be sure).
    ///
    /// Fails with `ZeroSize`, `TooLarge`, `BudgetExceeded` (after unmapping the pool's own empty
    /// regions and asking the pressure callbacks, see
    /// [`on_pressure`](crate::SegmentPoolBuilder::on_pressure)), or `Map`.
    #[inline]
    #[track_caller]
    pub fn allocate(&self, size: usize) -> Result<Segment> {
        self.allocate_inner(size).map(|(seg, _)| seg)
    }

    /// Like [`allocate`](Self::allocate), and the bytes are zero. Slices never handed out before
    /// are known to be zero already and are not written; reused ones are cleared.
    #[track_caller]
    pub fn allocate_zeroed(&self, size: usize) -> Result<Segment> {
        let (mut seg, zero) = self.allocate_inner(size)?;
        if !zero {
            seg.fill(0);
        }
        Ok(seg)
    }

    #[inline(always)]
    #[track_caller]
    fn allocate_inner(&self, size: usize) -> Result<(Segment, bool)> {
        let shared = self.shared();
        if size == 0 {
            return Err(ErrorKind::ZeroSize.into());
        }
        if let Some(class) = shared.size_classes.class_of(size) {
            // A pool with diagnostics is never on the fast path: it takes the slow path, which
            // pops the thread cache itself and then records the allocation.
            // SAFETY: `class_of` gives a class of this pool.
            if let Some((addr, region, len)) = unsafe { thread_cache::pop(shared, class) } {
                // SAFETY: the cache handed this slice to us alone; it belongs to `region`, whose
                // class size is `len`.
                let seg = unsafe { Segment::from_slice(addr, region, len) };
                return Ok((seg, addr & ZERO_TAG != 0));
            }
        }
        self.allocate_slow(size, Location::caller())
    }

    /// Hands a segment that is about to be returned to the diagnostics (records, poison check):
    /// the slice at `addr` (tag bits included) of `region`, `len` bytes.
    #[cold]
    #[inline(never)]
    fn diagnose(&self, addr: usize, region: RegionRef, len: usize, at: &'static Location<'static>) {
        if let Some(d) = &self.shared().diag {
            d.on_allocate(addr, region, len, at);
        }
    }

    /// Like [`allocate`](Self::allocate), but when the budget is exhausted it waits up to
    /// `timeout` for segments to be released (or regions unmapped) instead of failing at once.
    /// Waiters (this and [`allocate_async`](Self::allocate_async)) are served in the order they
    /// started waiting. A request that could never fit the budget fails at once.
    #[track_caller]
    pub fn allocate_timeout(&self, size: usize, timeout: Duration) -> Result<Segment> {
        let at = Location::caller();
        // A timeout too long for an `Instant` waits without a deadline.
        let deadline = crate::sync::deadline_after(timeout);
        let needed = match self.allocate(size) {
            Err(e) => match *e.kind() {
                // Waiting cannot help a request larger than the whole budget.
                ErrorKind::BudgetExceeded { needed, budget, .. } if needed <= budget => needed,
                _ => return Err(e),
            },
            ok => return ok,
        };
        let (seg, zero) = super::wait::wait_blocking(self, size, needed, deadline)?;
        self.diagnose_segment(&seg, zero, at);
        Ok(seg)
    }

    /// Like [`allocate_timeout`](Self::allocate_timeout) without a timeout, as a future: when the
    /// budget is exhausted it waits, without blocking the thread, until segments are released,
    /// regions unmapped (a release, a `trim()`, a pressure callback) or room is given back to a
    /// shared budget. It needs no particular runtime (it keeps the waker it is polled with).
    ///
    /// Waiters, async and blocking, are served in the order they started waiting. Dropping the
    /// future before it completes leaves nothing behind: it leaves the queue, and a segment that
    /// was handed to it goes to the next waiter or back to the pool. The first poll tries at
    /// once (and may run the pressure callback, see
    /// [`on_pressure`](crate::SegmentPoolBuilder::on_pressure)); a request that could never fit the
    /// budget fails at once.
    #[track_caller]
    pub fn allocate_async(
        &self,
        size: usize,
    ) -> impl std::future::Future<Output = Result<Segment>> + Send + 'static {
        super::wait::AllocateFuture::new(self.clone(), size, Location::caller())
    }

    /// [`allocate`](Self::allocate) for a caller location recorded elsewhere.
    pub(crate) fn allocate_located(
        &self,
        size: usize,
        at: &'static Location<'static>,
    ) -> Result<Segment> {
        if size == 0 {
            return Err(ErrorKind::ZeroSize.into());
        }
        self.allocate_slow(size, at).map(|(seg, _)| seg)
    }

    #[cold]
    fn allocate_slow(
        &self,
        size: usize,
        at: &'static Location<'static>,
    ) -> Result<(Segment, bool)> {
        let shared = self.shared();
        if !shared.diagnosed {
            return self.allocate_slow_inner(size);
        }
        let cached = shared
            .size_classes
            .class_of(size)
            .and_then(|class| Some((class, thread_cache::pop_slow(shared, class)?)));
        let (seg, zero) = match cached {
            Some((class, (addr, region))) => (
                // SAFETY: the cache handed this slice to us alone; it belongs to `region`.
                unsafe { Segment::from_slice(addr, region, shared.classes[class].size) },
                addr & ZERO_TAG != 0,
            ),
            None => self.allocate_slow_inner(size)?,
        };
        self.diagnose_segment(&seg, zero, at);
        Ok((seg, zero))
    }

    pub(crate) fn diagnose_segment(
        &self,
        seg: &Segment,
        zero: bool,
        at: &'static Location<'static>,
    ) {
        if !self.shared().diagnosed {
            return;
        }
        let tag = if zero { ZERO_TAG } else { 0 };
        self.diagnose(seg.as_ptr() as usize | tag, seg.region_ref(), seg.len(), at);
    }

    fn allocate_slow_inner(&self, size: usize) -> Result<(Segment, bool)> {
        let shared = self.shared();
        let needed = match self.attempt(size)? {
            Attempt::Done(seg, zero) => return Ok((seg, zero)),
            Attempt::Short { needed } => needed,
        };
        if needed > shared.budget.limit() {
            return Err(shared.budget.exceeded(size, needed));
        }
        // 1. Unmap our own empty regions (any class) and tell other threads to give their cached
        //    slices back, then try again.
        shared.reclaim();
        let needed = match self.attempt(size)? {
            Attempt::Done(seg, zero) => return Ok((seg, zero)),
            Attempt::Short { needed } => needed,
        };
        // 2. The pressure protocol (`crate::pool::wait`).
        super::wait::press(self, size, needed)
    }

    /// One try at serving `size` without pressure handling.
    pub(crate) fn attempt(&self, size: usize) -> Result<Attempt> {
        let shared = self.shared();
        match shared.size_classes.class_of(size) {
            Some(class) => match thread_cache::refill(shared, class) {
                // SAFETY: `refill` handed this slice to us alone; it belongs to `region`.
                Ok((addr, region)) => Ok(Attempt::Done(
                    unsafe { Segment::from_slice(addr, region, shared.classes[class].size) },
                    addr & ZERO_TAG != 0,
                )),
                Err(Shortage::Budget { needed }) => Ok(Attempt::Short { needed }),
                Err(Shortage::Map(e)) => Err(ErrorKind::Map(e).into()),
            },
            None => self.attempt_dedicated(size),
        }
    }

    fn attempt_dedicated(&self, size: usize) -> Result<Attempt> {
        let shared = self.shared();
        let len = crate::os::round_up(size, crate::os::page_size())
            .filter(|&l| l <= isize::MAX as usize)
            .ok_or(ErrorKind::TooLarge { requested: size })?;
        let region = match PoolShared::map_dedicated(shared, len) {
            Ok(r) => r,
            Err(Shortage::Budget { needed }) => return Ok(Attempt::Short { needed }),
            Err(Shortage::Map(e)) => return Err(ErrorKind::Map(e).into()),
        };
        // SAFETY: the region was born with its one slice out, for this segment.
        let base = unsafe { region.get() }.base();
        // SAFETY: the dedicated region's one slice is this segment's alone.
        Ok(Attempt::Done(
            unsafe { Segment::from_slice(base, region, len) },
            true,
        ))
    }
}
