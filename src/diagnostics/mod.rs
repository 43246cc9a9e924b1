//! Diagnostics: where segments were allocated, leak reports, poison on release, guard pages.
//!
//! A pool is built with one [`Diagnostics`] level. Everything here runs only when the level is
//! not [`Off`](Diagnostics::Off): the allocate and release fast paths test one `bool` (on the pool
//! for an allocation, on the segment's region for a release, next to a field they read anyway)
//! and call in here, out of line, when it is set.
//!
//! * **Records.** An allocation that is recorded stores its caller (`#[track_caller]`, free to
//!   obtain), the time, and a captured [`Backtrace`] (captured at once, symbolised only when a
//!   report is printed). `Sampled(n)` records every n-th allocation of the pool (a counter, so
//!   exactly one in n); `Full` records every allocation. Records live in a map keyed by slice
//!   address, removed on release; [`leaks`](crate::SegmentPool::leaks) lists them.
//! * **Poison** (`Full`): a released class slice is filled with the poison byte `0xdb`
//!   before it goes back (to a thread cache or a region); when a slice that was handed out before
//!   is handed out again it is checked, and any other byte is a write after release: an error
//!   event naming the segment, its class and region, where it was allocated and where released,
//!   and `PoolStats::write_after_release` counts it. Thread caches stay on: the check is made when
//!   a segment is handed out, whoever held the slice in between.
//! * **Guard pages** (`Full`): every class slice is followed by one inaccessible page,
//!   so an overrun faults at its first byte; a SIGSEGV hook prints which segment was overrun and
//!   where it was allocated, then lets the process die as it would have.

pub(crate) mod guard;
pub(crate) mod poison;

use std::backtrace::Backtrace;
use std::collections::HashMap;
use std::fmt;
use std::panic::Location;
use std::time::{Duration, Instant};

use crate::region::{Region, RegionRef, ZERO_TAG};
use crate::size_class::NO_CLASS;
use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use crate::sync::Mutex;

/// The memory-mapping system calls segpool made in this process, by kind, counted from the start
/// of the process: every pool and every mapped file, and the fault handler's replacement pages.
/// Take one snapshot before an operation and one after ([`since`](Self::since)) to see what it
/// cost in system calls: a warm allocate and release makes none, a segment above the largest
/// class one `mmap` and one `munmap`. The counters are process-wide, so other threads' work
/// shows too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct MappingCalls {
    /// `mmap` (new mappings, and zero pages mapped over pages lost to a fault).
    pub mmap: u64,
    /// `munmap` (mappings given back, and the trimmed ends of aligned mappings).
    pub munmap: u64,
    /// `madvise` (huge-page advice, prefaulting, `MappedFile::advise`).
    pub madvise: u64,
    /// `mprotect` (guard pages under [`Diagnostics::Full`]).
    pub mprotect: u64,
    /// `msync` (mapped-file syncs).
    pub msync: u64,
    /// `mlock` (mapped files with `lock`).
    pub mlock: u64,
}

impl MappingCalls {
    /// The calls made between `earlier` and this snapshot.
    pub fn since(&self, earlier: &MappingCalls) -> MappingCalls {
        MappingCalls {
            mmap: self.mmap.wrapping_sub(earlier.mmap),
            munmap: self.munmap.wrapping_sub(earlier.munmap),
            madvise: self.madvise.wrapping_sub(earlier.madvise),
            mprotect: self.mprotect.wrapping_sub(earlier.mprotect),
            msync: self.msync.wrapping_sub(earlier.msync),
            mlock: self.mlock.wrapping_sub(earlier.mlock),
        }
    }

    /// All calls, of every kind.
    pub fn total(&self) -> u64 {
        self.mmap + self.munmap + self.madvise + self.mprotect + self.msync + self.mlock
    }
}

/// The memory-mapping system calls segpool made in this process so far ([`MappingCalls`]).
pub fn mapping_calls() -> MappingCalls {
    let [mmap, munmap, madvise, mprotect, msync, mlock] = crate::os::calls::snapshot();
    MappingCalls {
        mmap,
        munmap,
        madvise,
        mprotect,
        msync,
        mlock,
    }
}

/// How much a pool records about its segments, chosen with
/// [`SegmentPoolBuilder::diagnostics`](crate::SegmentPoolBuilder::diagnostics).
///
/// `docs/diagnostics.md` gives the measured cost of each level. More levels may come: a `match`
/// on it needs a wildcard arm.
///
/// `Sampled` takes a plain `u32` rather than a `NonZeroU32`, so `Sampled(1000)` can be written as
/// is; `Sampled(0)` is refused by [`build`](crate::SegmentPoolBuilder::build) with
/// [`InvalidConfig`](crate::ErrorKind::InvalidConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Diagnostics {
    /// Nothing is recorded (the default). The fast paths pay one predictable branch each.
    #[default]
    Off,
    /// One allocation in `n` (every n-th, per pool) records where it was made, for
    /// [`leaks`](crate::SegmentPool::leaks). `n` must be at least 1; `Sampled(1)` records every
    /// allocation without poison or guard pages.
    Sampled(u32),
    /// Every allocation records where it was made; released slices are poisoned and checked when
    /// handed out again; every class slice is followed by a guard page. Slow, for finding bugs.
    Full,
}

impl Diagnostics {
    /// Whether slices are poisoned and guarded.
    pub(crate) fn is_full(self) -> bool {
        self == Diagnostics::Full
    }
}

/// Where and when a recorded segment was allocated.
#[derive(Debug, Clone)]
struct Record {
    len: usize,
    class: u8,
    region: u64,
    since: Instant,
    at: &'static Location<'static>,
    backtrace: std::sync::Arc<Backtrace>,
}

/// A recorded segment that was released (`Full` only): what a write-after-release report needs.
#[derive(Debug)]
struct ReleasedRecord {
    allocated: Option<Record>,
    released: Backtrace,
}

/// The diagnostics state of one pool (absent when the level is `Off`).
///
/// # Invariants
///
/// * `live` holds one record per recorded segment that is still out, keyed by its address; it
///   is removed by that segment's release before the slice goes back.
/// * `released` (`Full`) holds, per slice address that was released and not handed out again,
///   where it was allocated and released; inserted before the slice goes back, removed when it is
///   handed out again, so a reader that finds poison damage finds the record.
#[derive(Debug)]
pub(crate) struct DiagState {
    level: Diagnostics,
    every: u64,
    counter: AtomicU64,
    /// `live.len()`, readable without the lock: a release skips the lock when it is 0. A record
    /// is counted before its segment reaches the user, so the release of a recorded segment
    /// (ordered after its allocation) always sees a non-zero count.
    recorded: AtomicUsize,
    live: Mutex<HashMap<usize, Record>>,
    released: Mutex<HashMap<usize, ReleasedRecord>>,
    pub(crate) write_after_release: AtomicU64,
}

impl DiagState {
    /// The state for `level`, or `None` when it is `Off`.
    pub(crate) fn new(level: Diagnostics) -> Option<Box<Self>> {
        let every = match level {
            Diagnostics::Off => return None,
            Diagnostics::Sampled(n) => u64::from(n.max(1)),
            Diagnostics::Full => 1,
        };
        Some(Box::new(Self {
            level,
            every,
            counter: AtomicU64::new(0),
            recorded: AtomicUsize::new(0),
            live: Mutex::new(HashMap::new()),
            released: Mutex::new(HashMap::new()),
            write_after_release: AtomicU64::new(0),
        }))
    }

    pub(crate) fn level(&self) -> Diagnostics {
        self.level
    }

    /// Called for every segment handed out by a pool with diagnostics on, before the caller sees
    /// it: the slice at `tagged` of `region_ref`, `len` bytes. [`ZERO_TAG`] on `tagged` says the
    /// slice was never handed out before (so it holds no poison to check).
    #[cold]
    #[inline(never)]
    pub(crate) fn on_allocate(
        &self,
        tagged: usize,
        region_ref: RegionRef,
        len: usize,
        at: &'static Location<'static>,
    ) {
        let addr = tagged & !ZERO_TAG;
        let zero = tagged & ZERO_TAG != 0;
        // SAFETY: the segment being handed out holds a slice of the region: it is alive.
        let region = unsafe { region_ref.get() };
        if self.level.is_full() && region.class != NO_CLASS {
            let before = self.released.lock().remove(&addr);
            if !zero {
                // SAFETY: `addr..addr + len` is the slice of the segment being handed out; the
                // caller holds that segment and has not given it to anyone yet, so nothing else
                // accesses these bytes while we read them.
                let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
                if let Some(offset) = poison::first_damaged(bytes) {
                    self.report_write_after_release(region, addr, len, offset, before);
                }
            }
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        if n % self.every != 0 {
            return;
        }
        let record = Record {
            len,
            class: region.class,
            region: region.id,
            since: Instant::now(),
            at,
            backtrace: std::sync::Arc::new(Backtrace::force_capture()),
        };
        if self.level.is_full() && region.class != NO_CLASS {
            guard::note_allocated(addr, len, region, at);
        }
        self.recorded.fetch_add(1, Ordering::Relaxed);
        self.live.lock().insert(addr, record);
    }

    /// Called by a segment's release while it still owns `bytes`, before the slice goes back.
    #[cold]
    #[inline(never)]
    pub(crate) fn on_release(&self, region: &Region, bytes: &mut [u8]) {
        let addr = bytes.as_ptr() as usize;
        let record = if self.recorded.load(Ordering::Relaxed) == 0 {
            None
        } else {
            self.live.lock().remove(&addr)
        };
        if record.is_some() {
            self.recorded.fetch_sub(1, Ordering::Relaxed);
        }
        if self.level.is_full() && region.class != NO_CLASS {
            guard::note_released(addr, bytes.len());
            poison::fill(bytes);
            self.released.lock().insert(
                addr,
                ReleasedRecord {
                    allocated: record,
                    released: Backtrace::force_capture(),
                },
            );
        }
    }

    #[cold]
    fn report_write_after_release(
        &self,
        region: &Region,
        addr: usize,
        len: usize,
        offset: usize,
        released: Option<ReleasedRecord>,
    ) {
        self.write_after_release.fetch_add(1, Ordering::Relaxed);
        let (allocated_at, allocated, released) = match &released {
            Some(r) => (
                r.allocated
                    .as_ref()
                    .map_or_else(|| "unknown".to_string(), |a| a.at.to_string()),
                r.allocated
                    .as_ref()
                    .map_or_else(|| "unknown".to_string(), |a| a.backtrace.to_string()),
                r.released.to_string(),
            ),
            None => ("unknown".into(), "unknown".into(), "unknown".into()),
        };
        tracing::error!(
            target: "segpool",
            addr,
            len,
            class = region.slice_size(),
            region = region.id,
            offset,
            allocated_at = %allocated_at,
            allocated_backtrace = %allocated,
            released_backtrace = %released,
            "write after release"
        );
    }

    /// Forgets the release records of a region that was unmapped (its addresses may be mapped
    /// again by anyone).
    #[cold]
    pub(crate) fn forget_range(&self, base: usize, len: usize) {
        if self.level.is_full() {
            self.released
                .lock()
                .retain(|&addr, _| !(base..base + len).contains(&addr));
        }
    }

    /// The recorded segments still out, oldest first; `class_size` gives the slice size of a
    /// class of the pool.
    pub(crate) fn leaks(&self, class_size: impl Fn(usize) -> usize) -> Vec<Leak> {
        let now = Instant::now();
        let mut leaks: Vec<Leak> = self
            .live
            .lock()
            .iter()
            .map(|(&addr, r)| Leak {
                addr,
                len: r.len,
                class_size: (r.class != NO_CLASS).then(|| class_size(r.class as usize)),
                region: r.region,
                age: now.saturating_duration_since(r.since),
                allocated_at: r.at,
                backtrace: Some(std::sync::Arc::clone(&r.backtrace)),
            })
            .collect();
        leaks.sort_by_key(|l| std::cmp::Reverse(l.age));
        leaks
    }
}

/// One outstanding segment in a [`LeakReport`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Leak {
    /// The segment's first byte.
    pub addr: usize,
    /// Its length in bytes.
    pub len: usize,
    /// The size class that served it; `None` for a dedicated mapping (above the largest class).
    pub class_size: Option<usize>,
    /// The id of the region it was carved from (ids are unique within a pool).
    pub region: u64,
    /// Time since it was handed out.
    pub age: Duration,
    /// The caller of `allocate` (or `allocate_zeroed`, `allocate_timeout`).
    pub allocated_at: &'static Location<'static>,
    /// The stack at the allocation, symbolised when printed.
    pub backtrace: Option<std::sync::Arc<Backtrace>>,
}

/// What [`SegmentPool::leaks`](crate::SegmentPool::leaks) returns: the segments still out.
///
/// `outstanding` counts every live segment (from the pool's counters, whatever the level);
/// `segments` lists those that were recorded: all of them under `Full`, about one in `n` under
/// `Sampled(n)`, none under `Off`. `Display` prints one paragraph per recorded segment, with
/// its backtrace.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LeakReport {
    /// The pool's diagnostics level.
    pub level: Diagnostics,
    /// Live segments of the pool right now (recorded or not).
    pub outstanding: usize,
    /// The recorded ones, oldest first.
    pub segments: Vec<Leak>,
}

impl LeakReport {
    /// Whether no segment is out.
    pub fn is_empty(&self) -> bool {
        self.outstanding == 0
    }
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = self
            .class_size
            .map_or_else(|| "dedicated".to_string(), |s| format!("class {s}"));
        writeln!(
            f,
            "segment {:#x} ({} bytes, {class}, region {}), age {:.3?}, allocated at {}",
            self.addr, self.len, self.region, self.age, self.allocated_at
        )?;
        if let Some(bt) = &self.backtrace {
            for line in bt.to_string().lines() {
                writeln!(f, "    {line}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} segments outstanding, {} recorded (diagnostics {:?})",
            self.outstanding,
            self.segments.len(),
            self.level
        )?;
        for leak in &self.segments {
            write!(f, "{leak}")?;
        }
        Ok(())
    }
}
