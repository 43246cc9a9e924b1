//! Asking for memory and waiting for it: the pressure protocol behind `allocate`, the waits of
//! `allocate_timeout` and `allocate_async`.
//!
//! # The pressure protocol
//!
//! When an allocation of pool P finds no room under P's budget (after P unmapped its own empty
//! regions and told every thread to give its cached slices back), it:
//!
//! 1. queues itself on the budget with P and its size class (`crate::budget`). From then on
//!    every slice of P that is released on any thread skips the thread caches, and a slice of
//!    its class goes to the oldest queued allocation of that class, still counted in its region:
//!    another thread's allocation cannot take it first.
//! 2. calls P's callback on this thread, with no pool or budget lock held, with what would
//!    satisfy the request: the class's slice size when the class has regions (one released
//!    segment of the class is enough), otherwise the bytes of a new region or dedicated mapping.
//! 3. takes a slice handed to it, or tries again. If the callback released something (a slice
//!    handed to any queued allocation counts: the oldest one is served first), it goes back to
//!    2. If it released nothing, the other pools on the budget unmap their empty regions and
//!    their callbacks are asked (with the bytes needed), this thread's cached slices go back to
//!    their regions, and if none of that released anything either, the request fails with
//!    `BudgetExceeded`.
//!
//! So a callback that evicts one segment per call never lets an allocation fail while it still
//! has something to evict. A callback is never called again from inside itself: a shortage in an
//! allocation the callback makes fails without asking anybody.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::budget::{ask_members, released_here, BudgetMember, Kind, PressingScope};
use crate::pool::{Attempt, PoolHook, PoolShared, SegmentPool};
use crate::segment::Segment;
use crate::size_class::NO_CLASS;
use crate::sync::Arc;
use crate::{ErrorKind, Result};

/// An allocation queued on its pool's budget. Dropping it leaves the queue and gives back a
/// slice that was handed to it and not taken (to the next one queued for it, if any): a
/// cancelled wait leaves nothing behind.
pub(crate) struct Waiter {
    shared: Arc<PoolShared>,
    ticket: u64,
    class: u8,
}

impl Waiter {
    pub(crate) fn new(shared: &Arc<PoolShared>, class: u8, kind: Kind) -> Self {
        // Releases of this pool skip the caches before the queue can hand anything out.
        shared.signals.add_waiter();
        let ticket = shared
            .budget
            .enqueue(&**shared as *const PoolShared as usize, class, kind);
        Self {
            shared: Arc::clone(shared),
            ticket,
            class,
        }
    }

    /// A slice handed to this allocation, as its segment.
    fn handed(&self) -> Option<Segment> {
        let (addr, region) = self.shared.budget.take_handed(self.ticket)?;
        self.shared.count_direct_allocation(self.class as usize);
        let len = self.shared.classes[self.class as usize].size;
        // SAFETY: the releasing thread handed this slice (still counted in `region`, a region of
        // this class of this pool) to this entry alone, and `take_handed` took it out.
        Some(unsafe { Segment::from_slice(addr, region, len) })
    }

    fn is_front(&self) -> bool {
        self.shared.budget.is_front(self.ticket)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let left = self.shared.budget.dequeue(self.ticket);
        self.shared.signals.remove_waiter();
        if let Some((addr, region)) = left {
            self.shared.count_direct_allocation(self.class as usize);
            // SAFETY: the slice was handed to this entry alone and is counted in `region`.
            unsafe { crate::pool::thread_cache::release_direct(region, addr) };
        }
    }
}

impl BudgetMember for PoolHook {
    fn reclaim(&self) {
        self.shared.reclaim();
    }

    fn press(&self, needed: usize) -> bool {
        match &self.on_pressure {
            Some(f) => {
                call(self, f, needed);
                true
            }
            None => false,
        }
    }
}

/// Calls a pressure callback, and logs what it did.
fn call(hook: &PoolHook, f: &crate::pool::PressureFn, needed: usize) {
    let shared = &hook.shared;
    let (mapped, in_use) = (shared.mapped_now(), shared.out_bytes_now());
    f(needed);
    tracing::info!(
        target: "segpool",
        needed,
        freed_mapped = mapped.saturating_sub(shared.mapped_now()),
        freed_in_use = in_use.saturating_sub(shared.out_bytes_now()),
        "pressure callback"
    );
}

/// The pressure protocol (module docs) for an allocation of `size` from `pool` that is short by
/// `needed` bytes after the pool's own trim.
pub(crate) fn press(pool: &SegmentPool, size: usize, needed: usize) -> Result<(Segment, bool)> {
    let shared = pool.shared();
    let budget = &shared.budget;
    let Some(_scope) = PressingScope::enter() else {
        return Err(budget.exceeded(size, needed));
    };
    let members = budget.members();
    let own = pool.hook();
    let class = shared.size_classes.class_of(size);
    let waiter = class.map(|c| Waiter::new(shared, c as u8, Kind::Pressing));
    loop {
        if let Some(seg) = waiter.as_ref().and_then(Waiter::handed) {
            return Ok((seg, false));
        }
        let needed = match pool.attempt(size)? {
            Attempt::Done(seg, zero) => return Ok((seg, zero)),
            Attempt::Short { needed } => needed,
        };
        let hint = match class {
            Some(c) if shared.class_has_regions(c) => shared.classes[c].size,
            _ => needed,
        };
        let mark = released_here();
        if own.press(hint) && released_here() != mark {
            continue;
        }
        let handed = || {
            waiter
                .as_ref()
                .is_some_and(|w| w.shared.budget.has_handed(w.ticket))
        };
        if !ask_members(&members, Some(&**own), needed, handed) {
            if let Some(seg) = waiter.as_ref().and_then(Waiter::handed) {
                return Ok((seg, false));
            }
            return match pool.attempt(size)? {
                Attempt::Done(seg, zero) => Ok((seg, zero)),
                Attempt::Short { needed } => Err(budget.exceeded(size, needed)),
            };
        }
    }
}

/// One try for a queued allocation, unmapping empty regions of other classes if it comes up
/// short (they may have emptied while it waited).
fn retry(pool: &SegmentPool, size: usize) -> Result<Attempt> {
    let attempt = pool.attempt(size)?;
    if matches!(attempt, Attempt::Short { .. }) && pool.shared().unmap_empty_regions() > 0 {
        return pool.attempt(size);
    }
    Ok(attempt)
}

fn class_index(shared: &PoolShared, size: usize) -> u8 {
    shared
        .size_classes
        .class_of(size)
        .map_or(NO_CLASS, |c| c as u8)
}

/// `allocate_timeout` after its first try failed for lack of room: waits in the queue until
/// served or `deadline`.
pub(crate) fn wait_blocking(
    pool: &SegmentPool,
    size: usize,
    mut needed: usize,
    deadline: Option<Instant>,
) -> Result<(Segment, bool)> {
    let shared = pool.shared();
    let waiter = Waiter::new(shared, class_index(shared, size), Kind::Waiting);
    let mut first = true;
    loop {
        let seen = shared.budget.wakeups();
        if let Some(seg) = waiter.handed() {
            return Ok((seg, false));
        }
        if first || waiter.is_front() {
            first = false;
            match retry(pool, size)? {
                Attempt::Done(seg, zero) => return Ok((seg, zero)),
                Attempt::Short { needed: n } => needed = n,
            }
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(shared.budget.exceeded(size, needed));
        }
        // Room that sits in another thread's cache produces no notification until that thread
        // next calls the pool; a bounded sleep makes the waiter retry anyway.
        let retry = now + Duration::from_millis(20);
        let wake = deadline.map_or(retry, |d| d.min(retry));
        shared.budget.sleep(waiter.ticket, seen, wake);
    }
}

/// The future of [`SegmentPool::allocate_async`].
pub(crate) struct AllocateFuture {
    pool: SegmentPool,
    size: usize,
    at: &'static Location<'static>,
    /// Set once the first try found no room; dropping the future drops it (leaves the queue).
    waiter: Option<Waiter>,
    first: bool,
    done: bool,
}

impl AllocateFuture {
    pub(crate) fn new(pool: SegmentPool, size: usize, at: &'static Location<'static>) -> Self {
        Self {
            pool,
            size,
            at,
            waiter: None,
            first: true,
            done: false,
        }
    }

    fn finish(&mut self, r: Result<(Segment, bool)>) -> Poll<Result<Segment>> {
        self.waiter = None;
        self.done = true;
        Poll::Ready(r.map(|(seg, zero)| {
            self.pool.diagnose_segment(&seg, zero, self.at);
            seg
        }))
    }
}

impl Future for AllocateFuture {
    type Output = Result<Segment>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "AllocateFuture polled after it completed");
        if this.waiter.is_none() {
            match this.pool.allocate_located(this.size, this.at) {
                // Waiting cannot help a request larger than the whole budget.
                Err(e) if matches!(*e.kind(), ErrorKind::BudgetExceeded { needed, budget, .. } if needed <= budget) =>
                    {}
                other => {
                    this.done = true;
                    return Poll::Ready(other);
                }
            }
            let shared = this.pool.shared();
            let class = class_index(shared, this.size);
            this.waiter = Some(Waiter::new(shared, class, Kind::Waiting));
        }
        loop {
            let w = this.waiter.as_ref().expect("set above");
            let seen = w.shared.budget.wakeups();
            if let Some(seg) = w.handed() {
                return this.finish(Ok((seg, false)));
            }
            if this.first || w.is_front() {
                this.first = false;
                match retry(&this.pool, this.size) {
                    Ok(Attempt::Done(seg, zero)) => return this.finish(Ok((seg, zero))),
                    Ok(Attempt::Short { .. }) => {}
                    Err(e) => return this.finish(Err(e)),
                }
            }
            let w = this.waiter.as_ref().expect("set above");
            if w.shared.budget.set_waker(w.ticket, seen, cx.waker()) {
                return Poll::Pending;
            }
        }
    }
}
