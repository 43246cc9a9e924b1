//! The access gate: lets any number of accesses to a file's mapped memory run at once, and lets
//! a resize (cutting the file, replacing a mapping) wait until none is running.
//!
//! Why it exists: cutting a file under a running copy makes that copy fault (SIGBUS), which
//! poisons the file for every handle; and a mapping may only be unmapped once nobody copies
//! through it.
//!
//! # The protocol: an asymmetric fence
//!
//! Accesses are the hot path (a warm 64-byte `read_at` is a few ns of copying), resizes are rare.
//! So an access does no locked read-modify-write on shared memory; the resizer pays instead, like
//! the readers and the writer of userspace RCU with `membarrier`.
//!
//! * Every thread owns a [`ReaderSlot`], one cache line that only it writes, listed in a
//!   process-wide registry. The slot says which gate the thread is inside, or 0.
//! * **Enter** (fast path, the thread's slot free): store the gate's address in the slot
//!   (`Relaxed`); a *reader fence*; load the gate's `state` (`Acquire`). If `RESIZING` is set,
//!   clear the slot, wake the resizer and take the slow path; else the access runs.
//! * **Leave**: store 0 in the slot (`Release`: the access's loads and stores come first); a
//!   reader fence; load `state`; if `RESIZING` is set, wake the resizer (lock, notify).
//! * **Resize**: set `RESIZING` in `state`; a *resizer barrier*; then, under the gate's mutex,
//!   wait (condition variable, with a timed re-check) until no slot names this gate and the
//!   count of counted accesses (below) is 0; mark the resize `ACTIVE` (a compare-exchange from
//!   "pending, count 0"); act; clear both bits and wake waiters.
//!
//! The two fences come in two forms, chosen once per process (`barrier::asymmetric`):
//!
//! * with `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` (registered once per process): the
//!   reader fence is a compiler fence only, and the resizer barrier is the `membarrier` call,
//!   which runs a full memory barrier on every CPU running a thread of the process (and a
//!   thread that is not running passes one at its next context switch);
//! * without it (an old kernel, a seccomp filter, the loom and shuttle models): both are
//!   `fence(SeqCst)`.
//!
//! Why a resize never acts while a fast-path access runs. Take a reader whose slot store `S`
//! precedes its state load `L` in program order (the compiler fence keeps that order in the
//! code). With `membarrier`, the reader executes a full barrier at some point `B` while the
//! resizer is inside the call. If `B` comes after `S`, `S` is visible to every load the resizer
//! makes after the call returns: the scan sees the slot and waits for the leave. If `B` comes
//! before `S`, then `L` comes after `B`, and `B` comes after the resizer's `RESIZING` store
//! (made before the call, whose entry is a full barrier): `L` sees `RESIZING` and the reader
//! backs out before touching the mapping. With fences, it is the store-buffering pattern with a
//! `SeqCst` fence on each side: the scan sees `S`, or `L` sees `RESIZING`, or both.
//!
//! Why a leave never leaves the resizer asleep: the same argument with `S` the store of 0 and
//! `L` the check for `RESIZING`: either the resizer's scan (after the barrier; it rescans under
//! the mutex before each wait) sees the slot free, or the leaving reader sees `RESIZING` and
//! notifies under the mutex, which orders the notification after the resizer's
//! check-then-wait. The timed re-check is a second line only.
//!
//! # Nested accesses
//!
//! A thread whose slot is taken (an access inside a `with_bytes` closure, maybe on another file)
//! uses the *counted* path: `fetch_add` on `state`, `fetch_sub` when leaving, as before. A
//! `with_bytes` closure may start another access; if a resize is pending, that nested access
//! must not wait for it (the resize waits for the outer access: a deadlock), so a thread inside
//! `with_bytes` enters even while a resize is pending, unless that resize is already `ACTIVE`
//! (then the thread holds no access on this gate, the resize waits for nothing it holds, and
//! waiting is safe). A resize only becomes active while the count is 0, in one compare-exchange
//! on `state`, so such an entry is either counted before (and the resize waits for it) or sees
//! `ACTIVE`. A resize from inside `with_bytes` is refused with an error for the same reason.

use std::cell::Cell;
use std::io;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{thread_local, Condvar, Mutex};

/// Set in `state` while a resize is pending or running.
const RESIZING: u64 = 1 << 63;
/// Set in `state` (with `RESIZING`) once the resize saw no access and acts.
const ACTIVE: u64 = 1 << 62;
/// The bits of `state` that count the running counted accesses.
const COUNT: u64 = !(RESIZING | ACTIVE);

thread_local! {
    /// How many `with_bytes` closures this thread is inside.
    // Not `const { .. }`: loom's `thread_local!` does not take that form.
    #[allow(clippy::missing_const_for_thread_local)]
    static SCOPED_DEPTH: Cell<usize> = Cell::new(0);
}

/// One thread's announcement of the gate it is inside on the fast path.
///
/// # Invariants
///
/// * Only the owning thread writes `gate` (the owner changes only when a thread has exited and
///   a new one claims the slot). `gate` is 0, or the address of the [`Gate`] the owner is inside:
///   from its store in [`Gate::try_enter_in`] to the store of 0 when that access leaves (or when
///   the enter backs out). Other threads (resizers) only load it.
/// * `owned` is true while a thread owns the slot.
#[derive(Debug, Default)]
pub(crate) struct ReaderSlot {
    gate: AtomicUsize,
    // The models own their slots and have no registry.
    #[cfg_attr(any(loom, shuttle), allow(dead_code))]
    owned: AtomicBool,
}

impl ReaderSlot {
    /// Whether the owner is inside no gate on the fast path (owner only: it wrote the value).
    #[inline]
    fn is_free(&self) -> bool {
        self.gate.load(Ordering::Relaxed) == 0
    }

    /// Whether a thread announces being inside the gate at `addr`. `Acquire`: if the slot was
    /// cleared by a leave, that access's loads and stores happen before what the caller does
    /// next.
    #[cfg_attr(any(loom, shuttle), allow(dead_code))]
    pub(crate) fn names(&self, addr: usize) -> bool {
        self.gate.load(Ordering::Acquire) == addr
    }
}

/// # Invariants
///
/// `state & COUNT` counts the counted accesses that are running (entered and not yet left);
/// `RESIZING` is set while a resize is pending or running, `ACTIVE` only with `RESIZING`, once
/// the resize saw the count at 0 and no [`ReaderSlot`] naming this gate after the resizer
/// barrier (see the module docs). While `ACTIVE` is set no access runs: fast-path entries back
/// out on `RESIZING`, counted entries on `RESIZING` (or, inside `with_bytes`, on `ACTIVE`).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: AtomicU64,
    lock: Mutex<()>,
    cv: Condvar,
}

/// One running access; leaves the gate when dropped. Not `Send`: a fast-path access is
/// announced in the entering thread's slot, which only that thread may clear.
#[derive(Debug)]
pub(crate) struct AccessGuard<'a> {
    gate: &'a Gate,
    /// The slot that announces this access, or `None` for a counted access.
    slot: Option<&'a ReaderSlot>,
    _not_send: PhantomData<*const ()>,
}

/// An exclusive resize: no access runs while it lives.
#[derive(Debug)]
pub(crate) struct ResizeGuard<'a> {
    gate: &'a Gate,
}

impl Gate {
    fn addr(&self) -> usize {
        self as *const Gate as usize
    }

    /// Enters an access unless a resize is pending or running (then `None`, and the caller
    /// takes a path that waits).
    #[inline]
    pub(crate) fn try_enter(&self) -> Option<AccessGuard<'_>> {
        match readers::current() {
            Some(slot) if slot.is_free() => self.try_enter_in(slot),
            _ => self.try_enter_counted(),
        }
    }

    /// The fast path, announced in `slot` (see the module docs).
    ///
    /// `slot` must be the calling thread's own slot, free; the guard must be dropped on the
    /// calling thread (it is not `Send`). Crate-visible for the loom model, which owns its slots.
    #[inline]
    pub(crate) fn try_enter_in<'a>(&'a self, slot: &'a ReaderSlot) -> Option<AccessGuard<'a>> {
        debug_assert!(slot.is_free(), "one fast-path access per thread");
        slot.gate.store(self.addr(), Ordering::Relaxed);
        barrier::reader();
        // Acquire: pairs with the `Release` that ends a resize, so the mapping and length a
        // finished resize installed are what the access reads.
        if self.state.load(Ordering::Acquire) & RESIZING == 0 {
            return Some(AccessGuard {
                gate: self,
                slot: Some(slot),
                _not_send: PhantomData,
            });
        }
        // A resize is pending: the resizer may have seen the slot and wait for it.
        slot.gate.store(0, Ordering::Release);
        self.wake_resizer();
        None
    }

    #[inline]
    fn try_enter_counted(&self) -> Option<AccessGuard<'_>> {
        let s = self.state.fetch_add(1, Ordering::Acquire);
        if s & RESIZING == 0 {
            return Some(AccessGuard::counted(self));
        }
        self.leave_counted();
        None
    }

    /// Enters an access, waiting while a resize runs.
    pub(crate) fn enter(&self) -> AccessGuard<'_> {
        loop {
            if let Some(g) = self.try_enter() {
                return g;
            }
            if in_scoped_access() {
                // Nested in a `with_bytes` closure, which may hold an access on this gate that
                // the pending resize waits for: enter anyway unless the resize already acts.
                let s = self.state.fetch_add(1, Ordering::Acquire);
                if s & ACTIVE == 0 {
                    return AccessGuard::counted(self);
                }
                self.leave_counted();
            }
            let mut g = self.lock.lock();
            while self.state.load(Ordering::Acquire) & RESIZING != 0 {
                g = self
                    .cv
                    .wait_until(&self.lock, g, Instant::now() + Duration::from_millis(50));
            }
        }
    }

    #[inline]
    fn leave_slot(&self, slot: &ReaderSlot) {
        slot.gate.store(0, Ordering::Release);
        barrier::reader();
        if self.state.load(Ordering::Relaxed) & RESIZING != 0 {
            self.wake_resizer();
        }
    }

    #[inline]
    fn leave_counted(&self) {
        let s = self.state.fetch_sub(1, Ordering::Release);
        if s & RESIZING != 0 && s & COUNT == 1 {
            self.wake_resizer();
        }
    }

    #[cold]
    fn wake_resizer(&self) {
        // An access left (or backed out) while a resize waits: wake it. Taking the lock orders
        // this notification after the resizer's check-then-wait (it checks under the lock).
        let _g = self.lock.lock();
        self.cv.notify_all();
    }

    /// Waits until no access runs and keeps new ones out until the guard is dropped. Callers
    /// serialise resizes among themselves (the registry entry's resize mutex).
    pub(crate) fn resize(&self) -> io::Result<ResizeGuard<'_>> {
        self.resize_with(readers::any_names)
    }

    /// [`resize`](Self::resize), with `any_names(addr)` saying whether a reader slot names the
    /// gate at `addr` (all registered slots; the loom model passes its own).
    pub(crate) fn resize_with(
        &self,
        any_names: impl Fn(usize) -> bool,
    ) -> io::Result<ResizeGuard<'_>> {
        refuse_in_scoped_access()?;
        let prev = self.state.fetch_or(RESIZING, Ordering::SeqCst);
        debug_assert_eq!(prev & RESIZING, 0, "resizes are serialised by the caller");
        // From here on the guard clears the bits again, also if the barrier panics.
        let guard = ResizeGuard { gate: self };
        // After the `RESIZING` store, before any scan (the module docs' argument).
        barrier::resizer();
        let mut g = self.lock.lock();
        loop {
            if !any_names(self.addr())
                && self
                    .state
                    .compare_exchange(
                        RESIZING,
                        RESIZING | ACTIVE,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
            {
                break;
            }
            g = self
                .cv
                .wait_until(&self.lock, g, Instant::now() + Duration::from_millis(50));
        }
        drop(g);
        Ok(guard)
    }
}

impl<'a> AccessGuard<'a> {
    fn counted(gate: &'a Gate) -> Self {
        AccessGuard {
            gate,
            slot: None,
            _not_send: PhantomData,
        }
    }
}

impl Drop for AccessGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        match self.slot {
            Some(slot) => self.gate.leave_slot(slot),
            None => self.gate.leave_counted(),
        }
    }
}

impl Drop for ResizeGuard<'_> {
    fn drop(&mut self) {
        self.gate
            .state
            .fetch_and(!(RESIZING | ACTIVE), Ordering::Release);
        let _g = self.gate.lock.lock();
        self.gate.cv.notify_all();
    }
}

/// The two fences of the protocol (module docs), and the choice between their forms.
#[cfg(not(any(loom, shuttle)))]
mod barrier {
    // A compiler fence is no synchronisation a model checker tracks (the models use real
    // fences), so it comes from core, not from the `crate::sync` shim.
    use core::sync::atomic::compiler_fence;
    use std::sync::OnceLock;

    use super::{fence, AtomicBool, Ordering};
    use crate::os;

    /// Whether the process registered for `membarrier` and readers may use compiler fences.
    /// Only [`init`] sets it, and only from false to true.
    static ASYMMETRIC: AtomicBool = AtomicBool::new(false);

    /// Chooses the form once per process; returns whether it is `membarrier`.
    pub(super) fn init() -> bool {
        static CHOSEN: OnceLock<bool> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let ok = os::membarrier::register_private_expedited();
            // Set before any resizer can read `CHOSEN` as true, so a reader that sees it true
            // meets a resizer that calls `membarrier`. A reader that still sees false uses a
            // real fence, which is correct with either resizer barrier.
            ASYMMETRIC.store(ok, Ordering::Relaxed);
            if !ok {
                tracing::debug!("membarrier unavailable: mapped-file accesses use full fences");
            }
            ok
        })
    }

    /// The reader fence: between the slot store and the state load, and between the slot
    /// clear and the state check. Relaxed load of a flag that is set once: a predictable branch.
    #[inline(always)]
    pub(super) fn reader() {
        if ASYMMETRIC.load(Ordering::Relaxed) {
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }

    /// The resizer barrier: after the `RESIZING` store, before the scan of the slots.
    pub(super) fn resizer() {
        if init() {
            // Registered, so the call cannot fail (EPERM is "not registered"); if it still did,
            // readers relying on it would be unprotected: stop here (the resize guard reopens
            // the gate while the panic unwinds).
            if let Err(e) = os::membarrier::private_expedited() {
                panic!("membarrier failed after registration: {e}");
            }
        } else {
            fence(Ordering::SeqCst);
        }
    }
}

/// Under the models there is no `membarrier`: both fences are `fence(SeqCst)`.
#[cfg(any(loom, shuttle))]
mod barrier {
    use super::{fence, Ordering};

    #[inline]
    pub(super) fn reader() {
        fence(Ordering::SeqCst);
    }

    pub(super) fn resizer() {
        fence(Ordering::SeqCst);
    }
}

/// The registry of reader slots: one per live thread that entered a gate, reused after the
/// thread exits (slots are never freed, so the registry is as long as the most threads that
/// used mapped files at once).
#[cfg(not(any(loom, shuttle)))]
mod readers {
    use std::cell::Cell;
    use std::ptr;
    use std::sync::OnceLock;

    use crossbeam_utils::CachePadded;

    use super::{barrier, Ordering, ReaderSlot};
    use crate::sync::Mutex;

    /// Every slot ever handed out (owned or free for reuse), each on its own cache line.
    fn registry() -> &'static Mutex<Vec<&'static ReaderSlot>> {
        static REGISTRY: OnceLock<Mutex<Vec<&'static ReaderSlot>>> = OnceLock::new();
        REGISTRY.get_or_init(|| Mutex::new(Vec::new()))
    }

    /// Stands for the slot of a thread that is exiting (or whose registration failed): never
    /// free, so such a thread takes the counted path. No thread owns it and it is not in the
    /// registry.
    static EXITED: ReaderSlot = ReaderSlot {
        gate: super::AtomicUsize::new(usize::MAX),
        owned: super::AtomicBool::new(true),
    };

    std::thread_local! {
        /// This thread's slot: null until the first access, then a slot from the registry, or
        /// `EXITED` once the thread's `OWNER` is dropped. No destructor, so usable at any time,
        /// also from other thread-locals' destructors.
        static SLOT: Cell<*const ReaderSlot> = const { Cell::new(ptr::null()) };
        /// Gives the slot back when the thread exits.
        static OWNER: Owner = const { Owner(Cell::new(None)) };
    }

    struct Owner(Cell<Option<&'static ReaderSlot>>);

    impl Drop for Owner {
        fn drop(&mut self) {
            if let Some(slot) = self.0.take() {
                SLOT.with(|s| s.set(&EXITED));
                debug_assert!(slot.is_free(), "a thread exits inside an access");
                slot.owned.store(false, Ordering::Release);
            }
        }
    }

    /// This thread's slot.
    #[inline]
    pub(super) fn current() -> Option<&'static ReaderSlot> {
        let p = SLOT.with(Cell::get);
        if p.is_null() {
            return Some(register());
        }
        // SAFETY: `SLOT` holds null, a pointer to a leaked slot of the registry or to `EXITED`:
        // never freed, so valid for `'static`.
        Some(unsafe { &*p })
    }

    #[cold]
    #[inline(never)]
    fn register() -> &'static ReaderSlot {
        barrier::init();
        let slot = {
            let mut all = registry().lock();
            match all.iter().find(|s| {
                s.owned
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            }) {
                Some(s) => *s,
                None => {
                    let padded: &'static CachePadded<ReaderSlot> =
                        Box::leak(Box::new(CachePadded::new(ReaderSlot {
                            gate: super::AtomicUsize::new(0),
                            owned: super::AtomicBool::new(true),
                        })));
                    let s: &'static ReaderSlot = padded;
                    all.push(s);
                    s
                }
            }
        };
        let slot = match OWNER.try_with(|o| o.0.set(Some(slot))) {
            Ok(()) => slot,
            Err(_) => {
                // Called from a thread-local destructor after `OWNER` is gone: nobody would
                // give the slot back.
                slot.owned.store(false, Ordering::Release);
                &EXITED
            }
        };
        SLOT.with(|s| s.set(slot));
        slot
    }

    /// Whether any registered slot names the gate at `addr`.
    pub(super) fn any_names(addr: usize) -> bool {
        registry().lock().iter().any(|s| s.names(addr))
    }

    /// How many slots the registry holds (tests).
    pub(super) fn registered() -> usize {
        registry().lock().len()
    }

    /// How many registered slots a live thread owns (tests).
    pub(super) fn owned() -> usize {
        registry()
            .lock()
            .iter()
            .filter(|s| s.owned.load(Ordering::Acquire))
            .count()
    }
}

/// Under the models every access is counted; the loom model drives the fast path with slots of
/// its own through [`Gate::try_enter_in`] and [`Gate::resize_with`].
#[cfg(any(loom, shuttle))]
mod readers {
    use super::ReaderSlot;

    #[inline]
    pub(super) fn current() -> Option<&'static ReaderSlot> {
        None
    }

    pub(super) fn any_names(_addr: usize) -> bool {
        false
    }
}

/// How many reader slots the registry holds, and how many of them live threads own (tests).
#[cfg(not(any(loom, shuttle)))]
pub(crate) fn reader_slots() -> (usize, usize) {
    (readers::registered(), readers::owned())
}

/// Whether the gates use `membarrier` (compiler fences on the fast path) rather than full
/// fences; chooses the form on the first call.
#[cfg(not(any(loom, shuttle)))]
pub(crate) fn uses_membarrier() -> bool {
    barrier::init()
}

/// Whether the current thread runs inside a `with_bytes` closure. Such a thread holds an
/// access, so it must not wait for anything a resizer holds while waiting for accesses (the
/// entry's resize mutex): callers refuse or skip that work instead.
pub(crate) fn in_scoped_access() -> bool {
    SCOPED_DEPTH.with(Cell::get) > 0
}

fn refuse() -> io::Error {
    io::Error::new(
        io::ErrorKind::WouldBlock,
        "cannot resize or remap a mapped file from inside a with_bytes closure",
    )
}

/// `Err(WouldBlock)` inside a `with_bytes` closure (see [`in_scoped_access`]).
pub(crate) fn refuse_in_scoped_access() -> io::Result<()> {
    if in_scoped_access() {
        Err(refuse())
    } else {
        Ok(())
    }
}

/// Marks the current thread as inside a `with_bytes` closure for the guard's lifetime.
#[derive(Debug)]
pub(crate) struct ScopedAccess(());

impl ScopedAccess {
    pub(crate) fn begin() -> Self {
        SCOPED_DEPTH.with(|d| d.set(d.get() + 1));
        ScopedAccess(())
    }
}

impl Drop for ScopedAccess {
    fn drop(&mut self) {
        SCOPED_DEPTH.with(|d| d.set(d.get() - 1));
    }
}
