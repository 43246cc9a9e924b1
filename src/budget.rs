//! The budget: a limit on bytes shared by pools and reservations, and the queue of allocations
//! waiting for room under it.
//!
//! A budget is a promise about memory, so it counts what is mapped (regions and dedicated
//! mappings of every pool on it) plus what [`Reservation`]s hold, not only what is handed out.
//! Room is taken with a CAS loop before a mapping is made and given back after it is unmapped,
//! so the total never exceeds the limit, even for a moment.
//!
//! # The wait queue and hand-offs
//!
//! An allocation that found no room and is about to ask for memory (a pressure callback) or to
//! wait (`allocate_timeout`, `allocate_async`) enters the budget's queue, in arrival order, with
//! its pool and size class. While an allocation of a pool is queued, that pool's releases skip
//! the thread caches (the waiter count sits in the pool's signals word, which the release fast
//! path loads anyway) and come to [`Budget::offer`]: a released slice goes to the oldest queued
//! allocation of its pool and class, still counted in its region, so no other thread can take
//! it first. Only what nobody queued for goes back to the region's free list.
//!
//! Whoever makes room otherwise (a slice given back to a region, a region or dedicated mapping
//! unmapped, a reservation shrunk) calls [`Budget::notify`], which costs a fence, one load and a
//! thread-local count when nobody waits. A waiter registers *before* it retries, and a notifier publishes its room *before* it
//! reads the waiter count (both sides `SeqCst`), so either the waiter's retry sees the room or the
//! notifier sees the waiter; the `wakeups` sequence number, compared under the queue lock before a
//! waiter sleeps, closes the window between the retry and the sleep.
//!
//! Every `notify` and hand-off also counts, per thread, that this thread released something
//! ([`released_here`]): the pressure protocol (`crate::pool::wait`) calls a callback again only
//! while the previous call released something.
//!
//! # Members
//!
//! The pools on a budget are its [`BudgetMember`]s, held weakly. The budget knows them only
//! through that trait (the pool sits above the budget): [`ask_members`] unmaps their empty
//! regions and calls their pressure callbacks, for a [`Reservation`] here and for a short
//! allocation in the pool's pressure protocol.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc as StdArc, Weak};
use std::task::Waker;
use std::time::Instant;

use crossbeam_utils::CachePadded;

use crate::region::RegionRef;
use crate::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{const_thread_local, Arc, Condvar, Mutex};
use crate::{Error, ErrorKind, Result};

const_thread_local! {
    /// Releases this thread made (notifications and hand-offs), for the pressure protocol.
    static RELEASED: Cell<u64> = Cell::new(0);
}

/// How many releases this thread has made (a counter; compare two readings).
pub(crate) fn released_here() -> u64 {
    RELEASED.try_with(Cell::get).unwrap_or(0)
}

fn note_released_here() {
    let _ = RELEASED.try_with(|c| c.set(c.get().wrapping_add(1)));
}

/// A pool on a budget, as the budget's pressure calls reach it (the pool's hook implements it).
/// Called on the slow paths alone: a shortage, a reservation that does not fit.
pub(crate) trait BudgetMember: Send + Sync {
    /// Gives this thread's cached slices of the member back, then unmaps its empty regions.
    fn reclaim(&self);
    /// Calls the member's pressure callback with `needed` bytes; `false` when it has none.
    fn press(&self, needed: usize) -> bool;
}

const_thread_local! {
    /// Set while this thread runs pressure callbacks.
    static PRESSING: Cell<bool> = Cell::new(false);
}

/// Marks this thread as running pressure callbacks while it lives.
pub(crate) struct PressingScope;

impl PressingScope {
    /// `None` when the thread already runs callbacks (a nested shortage asks nobody).
    pub(crate) fn enter() -> Option<Self> {
        let was = PRESSING.try_with(|p| p.replace(true)).unwrap_or(true);
        (!was).then_some(PressingScope)
    }
}

impl Drop for PressingScope {
    fn drop(&mut self) {
        let _ = PRESSING.try_with(|p| p.set(false));
    }
}

/// Asks every member of a budget for room: unmaps their empty regions (after giving this
/// thread's cached slices back), then calls their callbacks with `needed` (all but `skip`) until
/// one releases something or `done` says the request can be served. Returns whether this thread
/// released anything.
pub(crate) fn ask_members(
    members: &[StdArc<dyn BudgetMember>],
    skip: Option<&dyn BudgetMember>,
    needed: usize,
    mut done: impl FnMut() -> bool,
) -> bool {
    let mark = released_here();
    for m in members {
        m.reclaim();
    }
    if released_here() != mark || done() {
        return true;
    }
    for m in members {
        if skip.is_some_and(|s| std::ptr::addr_eq(s, StdArc::as_ptr(m))) {
            continue;
        }
        if m.press(needed) {
            // What it released may sit in this thread's cache: give it back.
            m.reclaim();
            if released_here() != mark || done() {
                return true;
            }
        }
    }
    false
}

/// Takes `bytes` from `budget` for a reservation, asking its members for room first.
fn reserve(budget: &Budget, bytes: usize) -> Result<()> {
    if budget.try_reserve(bytes).is_ok() {
        return Ok(());
    }
    if bytes > budget.limit() {
        return Err(budget.exceeded(bytes, bytes));
    }
    let Some(_scope) = PressingScope::enter() else {
        return Err(budget.exceeded(bytes, bytes));
    };
    let members = budget.members();
    let mut got = false;
    while !got {
        let progress = ask_members(&members, None, bytes, || {
            got = budget.try_reserve(bytes).is_ok();
            got
        });
        if !progress {
            break;
        }
    }
    if got || budget.try_reserve(bytes).is_ok() {
        Ok(())
    } else {
        Err(budget.exceeded(bytes, bytes))
    }
}

/// What a queued allocation is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Running pressure callbacks inside `allocate`: it retries after every round, like any
    /// allocation would, and takes the slices handed to it.
    Pressing,
    /// Waiting (`allocate_timeout`, `allocate_async`): it retries only at the front of the
    /// queue, so waiters are served in arrival order.
    Waiting,
}

/// A slice handed to a queued allocation: its address and region (counted in the region).
pub(crate) type Handed = (usize, RegionRef);

#[derive(Debug)]
struct Entry {
    ticket: u64,
    /// The pool's shared state address (the `Waiter` holds the pool alive while queued).
    pool: usize,
    /// Its size class, or `NO_CLASS` (a dedicated mapping: nothing can be handed to it).
    class: u8,
    kind: Kind,
    handed: Option<Handed>,
    waker: Option<Waker>,
}

#[derive(Debug, Default)]
struct Queue {
    next_ticket: u64,
    entries: VecDeque<Entry>,
}

struct BudgetState {
    limit: usize,
    used: CachePadded<AtomicUsize>,
    peak: AtomicUsize,
    /// Entries in `queue`, read by `notify` without the lock.
    waiting: AtomicUsize,
    /// Bumped (under the queue lock) by every notification and hand-off while anybody waits.
    wakeups: AtomicU64,
    queue: Mutex<Queue>,
    cond: Condvar,
    /// The pools on this budget (their pressure callbacks and regions), weakly: the last handle
    /// of a pool drops its hook, and with it the callback and whatever the callback owns.
    members: Mutex<Vec<Weak<dyn BudgetMember>>>,
}

/// A limit on memory, shared by any number of pools and by [`Reservation`]s for memory that does
/// not come from a pool.
///
/// Cloning is cheap (a shared handle). Every pool built with
/// [`SegmentPoolBuilder::shared_budget`](crate::SegmentPoolBuilder::shared_budget) counts the
/// bytes it maps against it, every reservation the bytes it holds, and the sum never exceeds
/// [`limit`](Self::limit). A pool built with [`budget`](crate::SegmentPoolBuilder::budget) (or
/// none) has a budget of its own, [`SegmentPool::budget`](crate::SegmentPool::budget).
///
/// When a request does not fit, the pressure callbacks of the pools on the budget are asked to
/// free memory before the request fails (see `on_pressure` and `docs/design.md`).
///
/// ```
/// use segpool::{Budget, SegmentPool};
///
/// let budget = Budget::new(16 << 20);
/// let a = SegmentPool::builder().shared_budget(&budget).build()?;
/// let b = SegmentPool::builder().shared_budget(&budget).build()?;
/// let mut r = budget.reserve(1 << 20)?; // memory of our own, e.g. a hash table
/// let x = a.allocate(64 << 10)?;
/// let y = b.allocate(4096)?;
/// assert!(budget.used() <= budget.limit());
/// r.try_grow(1 << 20)?;
/// assert_eq!(r.size(), 2 << 20);
/// drop((x, y, r));
/// # Ok::<(), segpool::Error>(())
/// ```
#[derive(Clone)]
pub struct Budget {
    inner: Arc<BudgetState>,
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("limit", &self.limit_opt())
            .field("used", &self.used())
            .field("waiters", &self.waiters())
            .finish()
    }
}

impl Budget {
    /// A budget of `limit` bytes, nothing used.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(BudgetState {
                limit,
                used: CachePadded::new(AtomicUsize::new(0)),
                peak: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                wakeups: AtomicU64::new(0),
                queue: Mutex::new(Queue::default()),
                cond: Condvar::new(),
                members: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The budget of a pool built without one: no limit.
    pub(crate) fn unlimited() -> Self {
        Self::new(usize::MAX)
    }

    /// The limit in bytes (`usize::MAX` for the budget of a pool built without a limit).
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// The limit, `None` when there is none.
    pub(crate) fn limit_opt(&self) -> Option<usize> {
        (self.inner.limit != usize::MAX).then_some(self.inner.limit)
    }

    /// Bytes counted against the budget right now: mapped by its pools, plus held by
    /// reservations. Never above [`limit`](Self::limit).
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Acquire)
    }

    /// The highest [`used`](Self::used) has been.
    pub fn peak_used(&self) -> usize {
        self.inner.peak.load(Ordering::Relaxed)
    }

    /// Allocations queued for room right now: waiting in `allocate_timeout` or
    /// `allocate_async`, or running a pressure callback inside `allocate`.
    pub fn waiters(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    /// Takes `bytes` for memory outside the pools, released when the reservation is dropped.
    /// When they do not fit, the pools on this budget first unmap their empty regions, then
    /// their pressure callbacks are asked (again while they release something); fails with
    /// `BudgetExceeded` when that does not make room.
    pub fn reserve(&self, bytes: usize) -> Result<Reservation> {
        reserve(self, bytes)?;
        Ok(Reservation {
            budget: self.clone(),
            size: bytes,
        })
    }

    /// Whether two handles are the same budget.
    pub fn ptr_eq(&self, other: &Budget) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The error for a request of `requested` bytes that needed `needed` bytes of room.
    pub(crate) fn exceeded(&self, requested: usize, needed: usize) -> Error {
        tracing::warn!(
            target: "segpool",
            requested,
            needed,
            used = self.used(),
            budget = self.limit(),
            "budget exhausted"
        );
        ErrorKind::BudgetExceeded {
            requested,
            needed,
            used: self.used(),
            budget: self.limit(),
        }
        .into()
    }

    /// Takes `bytes` under the limit; on failure returns the bytes used at that moment.
    pub(crate) fn try_reserve(&self, bytes: usize) -> std::result::Result<(), usize> {
        let s = &*self.inner;
        let mut cur = s.used.load(Ordering::Relaxed);
        loop {
            let next = match cur.checked_add(bytes) {
                Some(n) if n <= s.limit => n,
                _ => return Err(cur),
            };
            match s
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    if next > s.peak.load(Ordering::Relaxed) {
                        s.peak.fetch_max(next, Ordering::Relaxed);
                    }
                    return Ok(());
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Gives back `bytes` (unmapped, or no longer reserved), and wakes waiters.
    pub(crate) fn release(&self, bytes: usize) {
        self.inner.used.fetch_sub(bytes, Ordering::AcqRel);
        self.notify();
    }

    /// A pool joins the budget (for pressure from other members and reservations).
    pub(crate) fn join<M: BudgetMember + 'static>(&self, member: &StdArc<M>) {
        let member: Weak<dyn BudgetMember> = StdArc::downgrade(member) as Weak<M>;
        let mut m = self.inner.members.lock();
        m.retain(|w| w.strong_count() > 0);
        m.push(member);
    }

    /// The pools on the budget whose last handle is not dropped yet.
    pub(crate) fn members(&self) -> Vec<StdArc<dyn BudgetMember>> {
        self.inner
            .members
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Room was made (published before this call): counts a release of this thread and wakes
    /// every waiter, if any.
    pub(crate) fn notify(&self) {
        note_released_here();
        fence(Ordering::SeqCst);
        if self.inner.waiting.load(Ordering::SeqCst) != 0 {
            self.wake_all();
        }
    }

    fn wake_all(&self) {
        let s = &*self.inner;
        let wakers: Vec<Waker> = {
            let mut q = s.queue.lock();
            s.wakeups.fetch_add(1, Ordering::SeqCst);
            s.cond.notify_all();
            q.entries
                .iter_mut()
                .filter_map(|e| e.waker.take())
                .collect()
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Queues an allocation of `class` of the pool at `pool`; returns its ticket.
    pub(crate) fn enqueue(&self, pool: usize, class: u8, kind: Kind) -> u64 {
        let s = &*self.inner;
        let mut q = s.queue.lock();
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.entries.push_back(Entry {
            ticket,
            pool,
            class,
            kind,
            handed: None,
            waker: None,
        });
        s.waiting.fetch_add(1, Ordering::SeqCst);
        ticket
    }

    /// Takes the allocation out of the queue; returns a slice handed to it and not taken (the
    /// caller gives it back). When it was at the front, the next one is woken to retry.
    pub(crate) fn dequeue(&self, ticket: u64) -> Option<Handed> {
        let s = &*self.inner;
        let (handed, was_front, more) = {
            let mut q = s.queue.lock();
            let pos = q.entries.iter().position(|e| e.ticket == ticket)?;
            let front = q.entries.iter().position(|e| e.kind == Kind::Waiting) == Some(pos);
            let e = q.entries.remove(pos).expect("position is in range");
            s.waiting.fetch_sub(1, Ordering::SeqCst);
            (e.handed, front, !q.entries.is_empty())
        };
        if was_front && more {
            self.wake_all();
        }
        handed
    }

    /// A slice handed to the allocation with `ticket`, if any.
    pub(crate) fn take_handed(&self, ticket: u64) -> Option<Handed> {
        let mut q = self.inner.queue.lock();
        q.entries
            .iter_mut()
            .find(|e| e.ticket == ticket)
            .and_then(|e| e.handed.take())
    }

    /// Whether a slice was handed to the allocation with `ticket` and not taken yet.
    pub(crate) fn has_handed(&self, ticket: u64) -> bool {
        let q = self.inner.queue.lock();
        q.entries
            .iter()
            .any(|e| e.ticket == ticket && e.handed.is_some())
    }

    /// Whether the allocation with `ticket` is the oldest one waiting (allocations running
    /// pressure callbacks retry on their own and do not hold waiters back).
    pub(crate) fn is_front(&self, ticket: u64) -> bool {
        let q = self.inner.queue.lock();
        q.entries
            .iter()
            .find(|e| e.kind == Kind::Waiting)
            .is_some_and(|e| e.ticket == ticket)
    }

    /// The wake-up sequence number, read before a retry and compared before sleeping.
    pub(crate) fn wakeups(&self) -> u64 {
        self.inner.wakeups.load(Ordering::SeqCst)
    }

    /// Offers a released slice of `class` of the pool at `pool` to the oldest allocation queued
    /// for it. `true`: it took the slice (which stays counted in its region, now the waiter's).
    pub(crate) fn offer(&self, pool: usize, class: u8, addr: usize, region: RegionRef) -> bool {
        let s = &*self.inner;
        let waker = {
            let mut q = s.queue.lock();
            let Some(e) = q
                .entries
                .iter_mut()
                .find(|e| e.pool == pool && e.class == class && e.handed.is_none())
            else {
                return false;
            };
            e.handed = Some((addr, region));
            let waker = e.waker.take();
            s.wakeups.fetch_add(1, Ordering::SeqCst);
            s.cond.notify_all();
            waker
        };
        note_released_here();
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Sleeps until a notification, a hand-off or `deadline`, unless one came since `seen`.
    pub(crate) fn sleep(&self, ticket: u64, seen: u64, deadline: Instant) {
        let s = &*self.inner;
        let q = s.queue.lock();
        if s.wakeups.load(Ordering::SeqCst) != seen
            || q.entries
                .iter()
                .any(|e| e.ticket == ticket && e.handed.is_some())
        {
            return;
        }
        drop(s.cond.wait_until(&s.queue, q, deadline));
    }

    /// Stores `waker` for the allocation with `ticket`; `false` (retry now) when a notification
    /// or hand-off came since `seen`.
    pub(crate) fn set_waker(&self, ticket: u64, seen: u64, waker: &Waker) -> bool {
        let s = &*self.inner;
        let mut q = s.queue.lock();
        if s.wakeups.load(Ordering::SeqCst) != seen {
            return false;
        }
        match q.entries.iter_mut().find(|e| e.ticket == ticket) {
            Some(e) if e.handed.is_none() => {
                match &mut e.waker {
                    Some(w) if w.will_wake(waker) => {}
                    slot => *slot = Some(waker.clone()),
                }
                true
            }
            _ => false,
        }
    }
}

/// Bytes taken from a [`Budget`] for memory that does not come from a pool, given back when
/// dropped. The shape of DataFusion's `MemoryReservation`: grow before you allocate, shrink
/// after you free.
#[derive(Debug)]
#[must_use = "dropping the reservation gives its bytes back to the budget at once"]
pub struct Reservation {
    budget: Budget,
    size: usize,
}

impl Reservation {
    /// The bytes held.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The budget the bytes are held from.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Takes `bytes` more, as [`Budget::reserve`] does (pools unmap their empty regions, then
    /// pressure callbacks are asked); on failure the reservation is unchanged.
    pub fn try_grow(&mut self, bytes: usize) -> Result<()> {
        reserve(&self.budget, bytes)?;
        self.size += bytes;
        Ok(())
    }

    /// Gives `bytes` back to the budget now.
    ///
    /// # Panics
    ///
    /// If `bytes` is more than the reservation holds.
    pub fn shrink(&mut self, bytes: usize) {
        assert!(
            bytes <= self.size,
            "Reservation::shrink: {bytes} bytes, but the reservation holds {}",
            self.size
        );
        self.size -= bytes;
        self.budget.release(bytes);
    }

    /// Gives everything back now (the reservation stays, holding zero bytes).
    pub fn free(&mut self) {
        self.shrink(self.size);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.size > 0 {
            self.budget.release(self.size);
        }
    }
}
