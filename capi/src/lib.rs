//! The C ABI of segpool.
//!
//! Pools and segments cross the boundary as opaque 64-bit handles, never as pointers, and every
//! handle is checked before anything is touched (see the `handle` module for the layout): a null,
//! made-up, stale or double-released handle, or a segment handle of another pool, gets a status
//! code and changes nothing. Every function returns a [`SegpoolStatus`]; the message of the last
//! failure on the calling thread is [`segpool_last_error_message`]. A panic inside the library
//! becomes `SEGPOOL_STATUS_PANIC`; nothing unwinds into the caller.
//!
//! What a caller must still get right, and no library can check: a non-NULL pointer argument
//! points to memory valid for its type (and `classes_len` elements for arrays), and the memory of
//! a segment is used only until that segment is released or its pool freed.
//!
//! The header `include/segpool.h` is generated from this file by cbindgen at build time.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]

mod handle;
mod pools;
mod status;

use std::ffi::c_char;

use segpool::SegmentPool;

pub use status::SegpoolStatus;
use status::{null, run, run_value, Failure};

/// A pool handle. 0 is never a valid handle.
pub type SegpoolPool = u64;

/// A segment handle. 0 is never a valid handle.
pub type SegpoolSegment = u64;

/// `SegpoolConfig::flags`: do not advise regions `MADV_HUGEPAGE` (huge pages are on by default).
pub const SEGPOOL_FLAG_NO_HUGE_PAGES: u32 = 1;
/// `SegpoolConfig::flags`: no per-thread caches of free slices (on by default).
pub const SEGPOOL_FLAG_NO_THREAD_CACHE: u32 = 2;
/// `SegpoolConfig::flags`: prefault new regions with `MADV_POPULATE_WRITE` (off by default).
pub const SEGPOOL_FLAG_PREFAULT: u32 = 4;

const KNOWN_FLAGS: u32 =
    SEGPOOL_FLAG_NO_HUGE_PAGES | SEGPOOL_FLAG_NO_THREAD_CACHE | SEGPOOL_FLAG_PREFAULT;

/// More size classes than any valid configuration has (powers of two from 4096 up fit in 52).
const MAX_SIZE_CLASSES: usize = 64;

/// How to build a pool. A zeroed struct is the default pool: default size classes, default region
/// size, no budget, huge pages and thread caches on.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SegpoolConfig {
    /// The slice sizes in bytes: powers of two, at least 4096, strictly increasing. Ignored when
    /// `size_class_count` is 0 (the defaults are used: 4 KiB, 16 KiB, 64 KiB, 256 KiB, 1 MiB,
    /// then powers of two up to 1 GiB).
    pub size_classes: *const usize,
    /// Entries in `size_classes`; 0 for the defaults, at most 64.
    pub size_class_count: usize,
    /// Bytes per region (a multiple of the page size, at least the largest class, at most 1 GiB);
    /// 0 for the default.
    pub region_size: usize,
    /// The most bytes the pool maps at once; 0 for no budget.
    pub budget: usize,
    /// `SEGPOOL_FLAG_*` bits; any other bit is refused.
    pub flags: u32,
}

/// A pool's counts, filled by `segpool_stats`. Counts are exact when no other thread is using the
/// pool; each is exact for its own moment otherwise.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegpoolStats {
    /// Bytes mapped right now (regions and dedicated mappings): what the budget bounds.
    pub mapped_bytes: usize,
    /// Bytes of live segments (class size each, or page-rounded size for dedicated ones).
    pub in_use_bytes: usize,
    /// Bytes of free slices parked in per-thread caches.
    pub cached_bytes: usize,
    /// The budget in bytes; 0 when the pool has none.
    pub budget_bytes: usize,
    /// An upper bound of the peak of `in_use_bytes` (thread-cached slices count while cached).
    pub peak_in_use_bytes: usize,
    /// The highest `mapped_bytes` reached.
    pub peak_mapped_bytes: usize,
    /// Regions mapped right now.
    pub regions: usize,
    /// Regions mapped since the pool was created.
    pub regions_mapped: u64,
    /// Regions unmapped since the pool was created.
    pub regions_unmapped: u64,
    /// Live segments served by a dedicated mapping (above the largest class).
    pub dedicated_segments: usize,
    /// Bytes of those dedicated mappings.
    pub dedicated_bytes: usize,
    /// Threads waiting in `segpool_allocate` for room under the budget right now.
    pub budget_waiters: usize,
    /// Live segment handles of this pool (allocated and not yet released).
    pub live_segments: usize,
    /// Size classes of the pool: how many entries a `classes` array needs to get them all.
    pub class_count: usize,
}

/// A pool's byte counts, filled by `segpool_usage`: the fields of the same names in
/// `SegpoolStats`, read from the pool's counters alone (no system call, no region visited), so a
/// program can poll them as often as it likes whatever the pool holds.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegpoolUsage {
    /// Bytes mapped right now (regions and dedicated mappings): what the budget bounds.
    pub mapped_bytes: usize,
    /// Bytes of live segments (class size each, or page-rounded size for dedicated ones).
    pub in_use_bytes: usize,
    /// Bytes of free slices parked in per-thread caches.
    pub cached_bytes: usize,
    /// The budget in bytes; 0 when the pool has none.
    pub budget_bytes: usize,
    /// Live segments served by a dedicated mapping (above the largest class).
    pub dedicated_segments: usize,
    /// Bytes of those dedicated mappings.
    pub dedicated_bytes: usize,
    /// Threads waiting in `segpool_allocate` for room under the budget right now.
    pub budget_waiters: usize,
    /// Live segment handles of this pool (allocated and not yet released).
    pub live_segments: usize,
}

/// The counts of one size class, filled by `segpool_stats`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegpoolClassStats {
    /// The slice size in bytes.
    pub size: usize,
    /// Slices held as live segments.
    pub in_use: usize,
    /// Slices on the regions' free lists.
    pub free: usize,
    /// Free slices parked in per-thread caches.
    pub cached: usize,
    /// Regions of this class mapped right now.
    pub regions: usize,
    /// Segments of this class handed out since the pool was created.
    pub allocations: u64,
    /// Segments of this class released since the pool was created.
    pub releases: u64,
}

/// Creates a pool from `config` and writes its handle to `*pool_out`.
///
/// Checks: `config` and `pool_out` are not NULL (`NULL_POINTER`); `size_class_count` is at most
/// 64 and `size_classes` is not NULL when the count is not 0 (`NULL_POINTER`), so a bogus count
/// is refused before the array is read; no unknown flag bit; then every value as the Rust
/// builder checks it (`INVALID_CONFIG`, the message names the value). `*pool_out` is set to 0 on
/// failure (when `pool_out` is not NULL).
///
/// # Safety
///
/// * `config`, when not NULL, points to a readable `SegpoolConfig`.
/// * `config->size_classes`, when `size_class_count` is between 1 and 64, points to that many
///   readable `size_t`.
/// * `pool_out`, when not NULL, points to a writable `SegpoolPool`.
#[no_mangle]
pub unsafe extern "C" fn segpool_pool_create(
    config: *const SegpoolConfig,
    pool_out: *mut SegpoolPool,
) -> SegpoolStatus {
    run(|| {
        if pool_out.is_null() {
            return Err(null("pool_out"));
        }
        // SAFETY: not NULL, and the caller promises a writable `SegpoolPool` (# Safety).
        unsafe { pool_out.write(0) };
        if config.is_null() {
            return Err(null("config"));
        }
        // SAFETY: not NULL, and the caller promises a readable `SegpoolConfig` (# Safety).
        let config = unsafe { config.read() };
        let mut builder = SegmentPool::builder();
        if config.size_class_count > MAX_SIZE_CLASSES {
            return Err(Failure::new(
                SegpoolStatus::InvalidConfig,
                format!(
                    "size_class_count: {} is more than the {MAX_SIZE_CLASSES} classes a pool can have",
                    config.size_class_count
                ),
            ));
        }
        if config.size_class_count > 0 {
            if config.size_classes.is_null() {
                return Err(null("config->size_classes"));
            }
            // SAFETY: not NULL, count at most 64, and the caller promises that many readable
            // `size_t` there (# Safety).
            let sizes =
                unsafe { std::slice::from_raw_parts(config.size_classes, config.size_class_count) };
            builder = builder.size_classes(sizes);
        }
        if config.flags & !KNOWN_FLAGS != 0 {
            return Err(Failure::new(
                SegpoolStatus::InvalidConfig,
                format!(
                    "flags: unknown bits {:#x} (known: {KNOWN_FLAGS:#x})",
                    config.flags & !KNOWN_FLAGS
                ),
            ));
        }
        if config.region_size != 0 {
            builder = builder.region_size(config.region_size);
        }
        if config.budget != 0 {
            builder = builder.budget(config.budget);
        }
        let pool = builder
            .huge_pages(config.flags & SEGPOOL_FLAG_NO_HUGE_PAGES == 0)
            .thread_cache(config.flags & SEGPOOL_FLAG_NO_THREAD_CACHE == 0)
            .prefault(config.flags & SEGPOOL_FLAG_PREFAULT != 0)
            .build()?;
        let handle = pools::register(pool)?;
        // SAFETY: as above.
        unsafe { pool_out.write(handle) };
        Ok(())
    })
}

/// Frees a pool: its handle and the handles of every segment it still holds are refused from now
/// on, and those segments' memory is released (pointers into them must not be used any more).
/// Calls other threads are making on the pool finish first or fail with `STALE_HANDLE`.
///
/// Checks: `pool` is not 0 (`NULL_HANDLE`), is a pool handle this library issued
/// (`INVALID_HANDLE`), and its pool was not freed already (`STALE_HANDLE`: freeing twice is
/// refused and changes nothing).
#[no_mangle]
pub extern "C" fn segpool_pool_free(pool: SegpoolPool) -> SegpoolStatus {
    run(|| pools::free(pool))
}

/// Allocates a segment of at least `size` bytes and writes its handle to `*segment_out`.
/// With `timeout_ms` > 0, waits up to that long (at most about 34 years) for room under the
/// budget; with 0 it fails at once when the budget is full.
///
/// Checks: `segment_out` is not NULL (`NULL_POINTER`); `pool` as `segpool_pool_free` does;
/// `size` is not 0 (`ZERO_SIZE`) and representable (`TOO_LARGE`); the budget (`BUDGET_EXCEEDED`),
/// the operating system (`MAP_FAILED`), and 2^24 live segments per pool (`LIMIT_REACHED`).
/// `*segment_out` is set to 0 on failure (when `segment_out` is not NULL).
///
/// # Safety
///
/// * `segment_out`, when not NULL, points to a writable `SegpoolSegment`.
#[no_mangle]
pub unsafe extern "C" fn segpool_allocate(
    pool: SegpoolPool,
    size: usize,
    timeout_ms: u64,
    segment_out: *mut SegpoolSegment,
) -> SegpoolStatus {
    run(|| {
        if segment_out.is_null() {
            return Err(null("segment_out"));
        }
        // SAFETY: not NULL, and the caller promises a writable `SegpoolSegment` (# Safety).
        unsafe { segment_out.write(0) };
        let handle = pools::lookup(pool)?.allocate(size, timeout_ms)?;
        // SAFETY: as above.
        unsafe { segment_out.write(handle) };
        Ok(())
    })
}

/// Writes the address of the segment's first byte to `*ptr_out`. The memory is
/// `segpool_segment_len` bytes, page-aligned, readable and writable until the segment is released
/// or its pool freed.
///
/// Checks: `ptr_out` is not NULL (`NULL_POINTER`); `pool` as `segpool_pool_free` does; `segment`
/// is not 0 (`NULL_HANDLE`), is a segment handle issued by this pool (`INVALID_HANDLE`, or
/// `WRONG_POOL` when another pool issued it) and is still live (`STALE_HANDLE`). `*ptr_out` is
/// set to NULL on failure (when `ptr_out` is not NULL).
///
/// # Safety
///
/// * `ptr_out`, when not NULL, points to a writable `uint8_t *`.
#[no_mangle]
pub unsafe extern "C" fn segpool_segment_ptr(
    pool: SegpoolPool,
    segment: SegpoolSegment,
    ptr_out: *mut *mut u8,
) -> SegpoolStatus {
    run(|| {
        if ptr_out.is_null() {
            return Err(null("ptr_out"));
        }
        // SAFETY: not NULL, and the caller promises a writable pointer slot (# Safety).
        unsafe { ptr_out.write(std::ptr::null_mut()) };
        let ptr = pools::lookup(pool)?.with_segment(segment, |s| s.as_mut_ptr())?;
        // SAFETY: as above.
        unsafe { ptr_out.write(ptr) };
        Ok(())
    })
}

/// Writes the segment's length in bytes to `*len_out`: its size class, or the request rounded up
/// to pages above the largest class (at least the size that was asked for).
///
/// Checks: as `segpool_segment_ptr`, with `len_out` (set to 0 on failure).
///
/// # Safety
///
/// * `len_out`, when not NULL, points to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn segpool_segment_len(
    pool: SegpoolPool,
    segment: SegpoolSegment,
    len_out: *mut usize,
) -> SegpoolStatus {
    run(|| {
        if len_out.is_null() {
            return Err(null("len_out"));
        }
        // SAFETY: not NULL, and the caller promises a writable `size_t` (# Safety).
        unsafe { len_out.write(0) };
        let len = pools::lookup(pool)?.with_segment(segment, |s| s.len())?;
        // SAFETY: as above.
        unsafe { len_out.write(len) };
        Ok(())
    })
}

/// Releases a segment to its pool. Its handle (and any copy of it) is refused from now on.
///
/// Checks: `pool` as `segpool_pool_free` does; `segment` is not 0 (`NULL_HANDLE`), is a segment
/// handle issued by this pool (`INVALID_HANDLE`, `WRONG_POOL`) and still live (`STALE_HANDLE`: a
/// second release of the same handle lands here). A refused release changes nothing: no segment
/// is released, no count moves.
#[no_mangle]
pub extern "C" fn segpool_release(pool: SegpoolPool, segment: SegpoolSegment) -> SegpoolStatus {
    run(|| pools::lookup(pool)?.release(segment))
}

/// Fills `*stats_out` with the pool's counts, and the first `classes_len` entries of `classes`
/// with the per-class counts, smallest class first (`stats_out->class_count` says how many
/// classes there are; entries past that are left untouched).
///
/// Checks: `stats_out` is not NULL (`NULL_POINTER`); `classes` is not NULL unless `classes_len`
/// is 0 (`NULL_POINTER`); `pool` as `segpool_pool_free` does. Nothing is written past
/// `min(classes_len, class_count)` entries, so a `classes_len` larger than the array is only a
/// problem when the pool really has that many classes.
///
/// # Safety
///
/// * `stats_out`, when not NULL, points to a writable `SegpoolStats`.
/// * `classes`, when not NULL, points to `classes_len` writable `SegpoolClassStats`.
#[no_mangle]
pub unsafe extern "C" fn segpool_stats(
    pool: SegpoolPool,
    stats_out: *mut SegpoolStats,
    classes: *mut SegpoolClassStats,
    classes_len: usize,
) -> SegpoolStatus {
    run(|| {
        if stats_out.is_null() {
            return Err(null("stats_out"));
        }
        if classes.is_null() && classes_len != 0 {
            return Err(null("classes (with classes_len > 0)"));
        }
        let (stats, live) = pools::lookup(pool)?.stats();
        let out = SegpoolStats {
            mapped_bytes: stats.mapped_bytes,
            in_use_bytes: stats.in_use_bytes,
            cached_bytes: stats.cached_bytes,
            budget_bytes: stats.budget_bytes.unwrap_or(0),
            peak_in_use_bytes: stats.peak_in_use_bytes,
            peak_mapped_bytes: stats.peak_mapped_bytes,
            regions: stats.regions,
            regions_mapped: stats.regions_mapped,
            regions_unmapped: stats.regions_unmapped,
            dedicated_segments: stats.dedicated_segments,
            dedicated_bytes: stats.dedicated_bytes,
            budget_waiters: stats.budget_waiters,
            live_segments: live,
            class_count: stats.classes.len(),
        };
        // SAFETY: not NULL, and the caller promises a writable `SegpoolStats` (# Safety).
        unsafe { stats_out.write(out) };
        for (i, c) in stats.classes.iter().take(classes_len).enumerate() {
            let entry = SegpoolClassStats {
                size: c.size,
                in_use: c.in_use,
                free: c.free,
                cached: c.cached,
                regions: c.regions,
                allocations: c.allocations,
                releases: c.releases,
            };
            // SAFETY: `classes` is not NULL here (checked above when `classes_len` > 0, and the
            // loop runs only then), `i < classes_len`, and the caller promises `classes_len`
            // writable entries (# Safety).
            unsafe { classes.add(i).write(entry) };
        }
        Ok(())
    })
}

/// Fills `*usage_out` with the pool's byte counts. Unlike `segpool_stats`, whose cost grows with
/// the regions the pool has mapped (it visits each and asks the kernel which pages are
/// resident), this reads counters only: no system call, no allocation.
///
/// Checks: `usage_out` is not NULL (`NULL_POINTER`); `pool` as `segpool_pool_free` does.
///
/// # Safety
///
/// * `usage_out`, when not NULL, points to a writable `SegpoolUsage`.
#[no_mangle]
pub unsafe extern "C" fn segpool_usage(
    pool: SegpoolPool,
    usage_out: *mut SegpoolUsage,
) -> SegpoolStatus {
    run(|| {
        if usage_out.is_null() {
            return Err(null("usage_out"));
        }
        let (u, live) = pools::lookup(pool)?.usage();
        let out = SegpoolUsage {
            mapped_bytes: u.mapped_bytes,
            in_use_bytes: u.in_use_bytes,
            cached_bytes: u.cached_bytes,
            budget_bytes: u.budget_bytes.unwrap_or(0),
            dedicated_segments: u.dedicated_segments,
            dedicated_bytes: u.dedicated_bytes,
            budget_waiters: u.budget_waiters,
            live_segments: live,
        };
        // SAFETY: not NULL, and the caller promises a writable `SegpoolUsage` (# Safety).
        unsafe { usage_out.write(out) };
        Ok(())
    })
}

/// Unmaps every region of the pool that holds no segment, and writes the bytes unmapped to
/// `*bytes_out`. Slices cached by the calling thread go back first; other threads' caches go back
/// on their next call.
///
/// Checks: `bytes_out` is not NULL (`NULL_POINTER`); `pool` as `segpool_pool_free` does.
///
/// # Safety
///
/// * `bytes_out`, when not NULL, points to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn segpool_trim(pool: SegpoolPool, bytes_out: *mut usize) -> SegpoolStatus {
    run(|| {
        if bytes_out.is_null() {
            return Err(null("bytes_out"));
        }
        let bytes = pools::lookup(pool)?.trim();
        // SAFETY: not NULL, and the caller promises a writable `size_t` (# Safety).
        unsafe { bytes_out.write(bytes) };
        Ok(())
    })
}

/// The message of the last failed `segpool_*` call on this thread ("" after a success), as a
/// NUL-terminated string owned by the library. Never NULL. The pointer stays valid until this
/// thread's next `segpool_*` call other than `segpool_last_error_message`,
/// `segpool_last_error_copy` and `segpool_status_name`, or until the thread exits: copy the text
/// if you need it longer (or use `segpool_last_error_copy`).
#[no_mangle]
pub extern "C" fn segpool_last_error_message() -> *const c_char {
    run_value(c"".as_ptr(), status::last_error_ptr)
}

/// Copies the message of the last failed `segpool_*` call on this thread into `buf` (at most
/// `buf_len - 1` bytes, then a NUL) and returns the message's full length in bytes, without the
/// NUL, like `snprintf`: a return value `>= buf_len` means the copy was cut short. With
/// `buf_len` 0 nothing is written and `buf` may be NULL, which asks for the length alone.
///
/// Checks: `buf` is not NULL when `buf_len` > 0 (then nothing is written and 0 is returned).
///
/// # Safety
///
/// * `buf`, when not NULL, points to `buf_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn segpool_last_error_copy(buf: *mut c_char, buf_len: usize) -> usize {
    run_value(0, || {
        if buf_len == 0 {
            return status::copy_last_error(&mut []);
        }
        if buf.is_null() {
            return 0;
        }
        // SAFETY: not NULL, and the caller promises `buf_len` writable bytes (# Safety).
        let buf = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), buf_len) };
        status::copy_last_error(buf)
    })
}

/// The name of a status code as this header spells it (`"SEGPOOL_STATUS_STALE_HANDLE"`), a
/// static NUL-terminated string; `"SEGPOOL_STATUS_UNKNOWN"` for a value that is not a status.
#[no_mangle]
pub extern "C" fn segpool_status_name(status: i32) -> *const c_char {
    run_value(SegpoolStatus::Unknown.name().as_ptr(), || {
        SegpoolStatus::ALL
            .iter()
            .find(|s| **s as i32 == status)
            .unwrap_or(&SegpoolStatus::Unknown)
            .name()
            .as_ptr()
    })
}
