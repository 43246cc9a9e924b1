//! The one place that chooses the synchronisation primitives.
//!
//! Everything in segpool imports atomics, `Arc`, locks, thread-locals and epoch reclamation from
//! here, never from `std` directly, so that the same code runs:
//!
//! * normally, on `std` atomics, `parking_lot` locks and `crossbeam-epoch`;
//! * under `--cfg loom` (with `--cfg crossbeam_loom`), on loom's model-checked primitives and a
//!   loom-instrumented crossbeam-epoch, for the models in `loom/`;
//! * under `--cfg shuttle`, on shuttle's randomized scheduler, for the tests in `tests/shuttle.rs`.
//!
//! The lock wrappers expose one API (`lock()` returns the guard; a poisoned std-like lock is a bug
//! in a model and panics) so call sites do not change between the three.

#![allow(unused_imports, dead_code)]

#[cfg(loom)]
mod imp {
    pub(crate) use loom::sync::atomic;
    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::thread_local;
    pub(crate) type RawMutex<T> = loom::sync::Mutex<T>;
    pub(crate) type RawMutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;
    pub(crate) type RawCondvar = loom::sync::Condvar;
    pub(crate) fn spin_hint() {
        loom::thread::yield_now();
    }
}

#[cfg(all(shuttle, not(loom)))]
mod imp {
    pub(crate) use shuttle::sync::atomic;
    pub(crate) use shuttle::sync::Arc;
    pub(crate) use shuttle::thread_local;
    pub(crate) type RawMutex<T> = shuttle::sync::Mutex<T>;
    pub(crate) type RawMutexGuard<'a, T> = shuttle::sync::MutexGuard<'a, T>;
    pub(crate) type RawCondvar = shuttle::sync::Condvar;
    pub(crate) fn spin_hint() {
        shuttle::thread::yield_now();
    }
}

#[cfg(not(any(loom, shuttle)))]
mod imp {
    pub(crate) use std::sync::atomic;
    pub(crate) use std::sync::Arc;
    pub(crate) use std::thread_local;
    pub(crate) fn spin_hint() {
        std::hint::spin_loop();
    }
}

pub(crate) use imp::*;

/// An `Arc<[T]>` of `items` (loom's `Arc` is built from a std one).
pub(crate) fn arc_slice<T>(items: Vec<T>) -> Arc<[T]> {
    #[cfg(loom)]
    return Arc::from_std(items.into());
    #[cfg(not(loom))]
    items.into()
}

/// Epoch-based reclamation: region metadata that another thread may have loaded from a shared
/// list is freed only after every thread pinned at the time has unpinned.
pub(crate) mod epoch {
    pub(crate) use crossbeam_epoch::{pin, unprotected, Atomic, Guard, Owned, Shared};
}

/// A cell for data that the crate's own protocol keeps from being shared unsafely, in loom's
/// style: every access is a closure over a raw pointer, `with` for reading and `with_mut` for
/// writing. Under loom it is loom's own cell, so a model checks that every pair of accesses from
/// two threads is ordered by the protocol (and reports a data race otherwise); elsewhere it is
/// `std`'s, and the closures compile away.
///
/// The pointer must not be kept past the closure: an access outside it is one no model sees.
#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// See the loom form above: the same API over `std::cell::UnsafeCell`, at no cost.
#[cfg(not(loom))]
#[derive(Debug, Default)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` on a pointer for reading. Its dereferences are the caller's to justify: no
    /// write to the value may happen while `f` runs.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` on a pointer for writing. Its dereferences are the caller's to justify: no
    /// other access to the value may happen while `f` runs.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// A mutex with `parking_lot`'s API on every backend.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T> {
    #[cfg(not(any(loom, shuttle)))]
    inner: parking_lot::Mutex<T>,
    #[cfg(any(loom, shuttle))]
    inner: imp::RawMutex<T>,
}

#[cfg(not(any(loom, shuttle)))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
#[cfg(any(loom, shuttle))]
pub(crate) type MutexGuard<'a, T> = imp::RawMutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            #[cfg(not(any(loom, shuttle)))]
            inner: parking_lot::Mutex::new(value),
            #[cfg(any(loom, shuttle))]
            inner: imp::RawMutex::new(value),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(any(loom, shuttle)))]
        {
            self.inner.lock()
        }
        #[cfg(any(loom, shuttle))]
        {
            self.inner.lock().expect("segpool lock poisoned")
        }
    }
}

/// The instant `timeout` from now, or `None` when that is past what an `Instant` can hold
/// (`Duration::MAX`, say): the caller then waits without a deadline. Timeouts given by users
/// saturate instead of overflowing.
pub(crate) fn deadline_after(timeout: std::time::Duration) -> Option<std::time::Instant> {
    std::time::Instant::now().checked_add(timeout)
}

/// A condition variable paired with [`Mutex`], with a deadline-based wait on every backend.
#[derive(Debug, Default)]
pub(crate) struct Condvar {
    #[cfg(not(any(loom, shuttle)))]
    inner: parking_lot::Condvar,
    #[cfg(any(loom, shuttle))]
    inner: imp::RawCondvar,
}

impl Condvar {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn notify_all(&self) {
        self.inner.notify_all();
    }

    /// Waits until notified or until `deadline`; returns the guard. Spurious wake-ups happen:
    /// callers re-check their condition and the deadline.
    #[cfg(not(any(loom, shuttle)))]
    pub(crate) fn wait_until<'a, T>(
        &self,
        _mutex: &'a Mutex<T>,
        mut guard: MutexGuard<'a, T>,
        deadline: std::time::Instant,
    ) -> MutexGuard<'a, T> {
        let _ = self.inner.wait_until(&mut guard, deadline);
        guard
    }

    /// Waits until notified or until `deadline`, or only until notified when there is none (a
    /// timeout too long to be an `Instant`: see [`deadline_after`]). Spurious wake-ups happen.
    #[cfg(not(any(loom, shuttle)))]
    pub(crate) fn wait_deadline<'a, T>(
        &self,
        mutex: &'a Mutex<T>,
        mut guard: MutexGuard<'a, T>,
        deadline: Option<std::time::Instant>,
    ) -> MutexGuard<'a, T> {
        match deadline {
            Some(d) => self.wait_until(mutex, guard, d),
            None => {
                self.inner.wait(&mut guard);
                guard
            }
        }
    }

    /// The models have no clock: as `wait_until`.
    #[cfg(any(loom, shuttle))]
    pub(crate) fn wait_deadline<'a, T>(
        &self,
        mutex: &'a Mutex<T>,
        guard: MutexGuard<'a, T>,
        _deadline: Option<std::time::Instant>,
    ) -> MutexGuard<'a, T> {
        drop(guard);
        spin_hint();
        mutex.lock()
    }

    /// The models have no clock: a timed wait is an unlock, a yield and a re-lock, which is one of
    /// the behaviours a real timed wait may have (a spurious wake-up).
    #[cfg(any(loom, shuttle))]
    pub(crate) fn wait_until<'a, T>(
        &self,
        mutex: &'a Mutex<T>,
        guard: MutexGuard<'a, T>,
        _deadline: std::time::Instant,
    ) -> MutexGuard<'a, T> {
        drop(guard);
        spin_hint();
        mutex.lock()
    }
}

/// Declares a thread-local, with a `const` initializer (no lazy-init check on access) on std, and
/// through loom's or shuttle's `thread_local!` under the models.
macro_rules! const_thread_local {
    ($(#[$m:meta])* $vis:vis static $name:ident : $t:ty = $init:expr;) => {
        #[cfg(not(any(loom, shuttle)))]
        std::thread_local!($(#[$m])* $vis static $name: $t = const { $init });
        #[cfg(any(loom, shuttle))]
        $crate::sync::thread_local!($(#[$m])* $vis static $name: $t = $init);
    };
}
pub(crate) use const_thread_local;
