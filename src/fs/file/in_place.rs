//! Bytes in place, without a copy: `with_view` (safe: copies out and atomics) and `with_bytes`
//! (an `unsafe fn` lending a `&[u8]`), both over [`scoped`](MappedFile::scoped), which holds one
//! contiguous mapping of the range while the caller's closure runs.

use std::io;

use super::access::Step;
use super::{MappedFile, View};
use crate::fs::config::MapMode;
use crate::fs::extent::MappedExtent;
use crate::fs::gate::ScopedAccess;
use crate::fs::view::MappedView;
use crate::os;
use crate::sync::Arc;

/// The first byte of a scoped range, and what keeps it mapped besides the gate until the
/// closure returns.
///
/// # Invariant
///
/// The offset of `Window` and `Own` lies inside the extent.
enum Hold {
    /// A pointer into the whole-file mapping (kept by the gate), or dangling (an empty range).
    Gate(*mut u8),
    /// At this offset in the window the range lies in.
    Window(Arc<MappedExtent>, usize),
    /// At this offset in a mapping of the range for this call only (it spans windows).
    Own(MappedExtent, usize),
}

impl Hold {
    fn ptr(&self) -> *mut u8 {
        match self {
            Hold::Gate(p) => *p,
            // SAFETY: the offset lies inside the extent (the type's invariant).
            Hold::Window(w, at) => unsafe { w.ptr().add(*at) },
            // SAFETY: as above.
            Hold::Own(r, at) => unsafe { r.ptr().add(*at) },
        }
    }
}

impl MappedFile {
    /// Runs `f` on the file's bytes `offset..offset + len` in place, without a copy, and returns
    /// its result, or an error if the file faulted while `f` ran (the bytes `f` saw may then be
    /// zeros, so its result is discarded). The range must lie inside the file (`UnexpectedEof`
    /// otherwise).
    ///
    /// [`with_view`](Self::with_view) is the safe way to look at mapped bytes without a copy.
    ///
    /// The slice is only valid inside `f`. Changing the file's length from inside `f` (a growing
    /// write, `set_len`, through any handle of this file), or a read that needs a remap, fails
    /// with `WouldBlock` instead of deadlocking: those wait until no access runs, and `f`'s runs.
    ///
    /// # Safety
    ///
    /// A `&[u8]` promises that its bytes do not change while it lives; the file is mapped
    /// `MAP_SHARED` and nothing in segpool can stop others from changing it. The caller promises,
    /// for the whole time `f` runs:
    ///
    /// * no other handle, thread or process writes any byte of `offset..offset + len` (through
    ///   this or another `MappedFile` or `SharedMemory`, `std::fs::File`, another mapping, or a
    ///   [`MappedView`] atomic), and neither does `f` itself (a `write_at` from the slice into
    ///   a range that overlaps it breaks this promise too);
    /// * nobody truncates the file below `offset + len` (a truncation is caught, poisons the file
    ///   and discards `f`'s result, but `f` has then seen its bytes change to zeros).
    ///
    /// This is the stance of `memmap2`, whose `Mmap::map` is `unsafe` for the same reason.
    pub unsafe fn with_bytes<R>(
        &self,
        offset: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> io::Result<R> {
        self.scoped(offset, len, false, |ptr| {
            // SAFETY: `ptr..ptr + len` lies in a live mapping inside the file for as long as `f`
            // runs (`scoped`'s promise), or is dangling with `len == 0`; the slice cannot outlive
            // `f`. That its bytes do not change while it lives is the caller's promise (this
            // fn's contract); a fault is caught by the guard, which discards the result.
            f(unsafe { std::slice::from_raw_parts(ptr, len) })
        })
    }

    /// Runs `f` on a [`MappedView`] of the file's bytes `offset..offset + len`, without a copy,
    /// and returns its result, or an error if the file faulted while `f` ran (the view may then
    /// have read zeros and its stores may be lost, so the result is discarded and the file is
    /// poisoned). The range must lie inside the file (`UnexpectedEof` otherwise).
    ///
    /// The view reads by copy and hands out aligned atomics, never a `&[u8]`, so bytes that
    /// another thread or process changes meanwhile are no undefined behaviour (see
    /// [`MappedView`]'s `## Safety`). It lives only inside `f`. Changing the file's length from
    /// inside `f`, or a read that needs a remap, fails with `WouldBlock`, as in
    /// [`with_bytes`](Self::with_bytes).
    ///
    /// ```no_run
    /// use std::sync::atomic::Ordering;
    /// use segpool::fs::{MmapFs, MapConfig, MapMode};
    /// # fn main() -> std::io::Result<()> {
    /// let fs = MmapFs::new("/tmp/app", MapConfig::default().mode(MapMode::ReadWrite))?;
    /// let f = fs.create("state")?;
    /// f.set_len(4096)?;
    /// // A sequence number at offset 0, shared with every process that maps the file.
    /// let seq = f.with_view(0, 64, |v| v.atomic_u64(0).fetch_add(1, Ordering::AcqRel))?;
    /// # let _ = seq; Ok(()) }
    /// ```
    pub fn with_view<R>(
        &self,
        offset: u64,
        len: usize,
        f: impl FnOnce(&MappedView) -> R,
    ) -> io::Result<R> {
        let writable = self.mode != MapMode::ReadOnly;
        self.scoped(offset, len, writable, |ptr| {
            // SAFETY: `ptr..ptr + len` lies in a live mapping of the file offsets `offset..`
            // inside the file while `f` runs (`scoped`'s promise), and the view is lent to `f`
            // by reference only, so it is gone when `scoped` releases the mapping; mapped memory
            // is only accessed atomically in this process (copy.rs, the view); the mapping is
            // `PROT_WRITE` unless the mode is `ReadOnly`.
            let view = unsafe { MappedView::new(ptr, len, offset, writable) };
            f(&view)
        })
    }

    /// Resolves `offset..offset + len` to a pointer into a live mapping inside the file and runs
    /// `f` on it inside the file's gate, under the fault guard (`write`: the full guard, for an
    /// `f` that may store), and returns its result or the fault's error. The mapping stays
    /// mapped, and no cut of the range runs through this process, until `f` returns. `len == 0`
    /// passes a dangling pointer.
    fn scoped<R>(
        &self,
        offset: u64,
        len: usize,
        write: bool,
        f: impl FnOnce(*mut u8) -> R,
    ) -> io::Result<R> {
        self.fail_fast()?;
        let end = self.check_range(offset, len as u64)?;
        let (hold, access) = self.access(|round| {
            let limit = round.limit;
            if end > limit {
                if !round.refreshed {
                    return Err(Step::Refresh);
                }
                return Err(Step::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("bytes {offset}..{end} are past the end of the file ({limit} bytes)"),
                )));
            }
            if len == 0 {
                return Ok(Hold::Gate(std::ptr::NonNull::dangling().as_ptr()));
            }
            match &self.view {
                View::Whole(w) => {
                    // SAFETY: a round runs inside an access of the gate.
                    let r = unsafe { w.current() };
                    if end > r.len() as u64 {
                        return Err(Step::Remap(end));
                    }
                    // SAFETY: `offset < end <= r.len()`.
                    Ok(Hold::Gate(unsafe { r.ptr().add(offset as usize) }))
                }
                View::Windows(cache) => {
                    let size = cache.size();
                    if offset / size == (end - 1) / size {
                        let w = cache.get(
                            &self.core.file,
                            offset,
                            self.mode,
                            &self.cfg,
                            limit,
                            self.fault(),
                        )?;
                        // `offset` lies in this window (same window index as computed).
                        let at = (offset - w.offset()) as usize;
                        Ok(Hold::Window(w, at))
                    } else {
                        // Spans windows: one mapping of exactly the range, for this call only.
                        let page = os::page_size() as u64;
                        let start = offset / page * page;
                        let r = MappedExtent::map(
                            &self.core.file,
                            start,
                            (end - start) as usize,
                            self.mode,
                            &self.cfg,
                            limit,
                            self.fault(),
                        )?;
                        // `offset - start < page <= r.len()`.
                        Ok(Hold::Own(r, (offset - start) as usize))
                    }
                }
            }
        })?;
        let ptr = hold.ptr();
        if len == 0 {
            drop(access);
            return Ok(f(ptr));
        }
        let scope = ScopedAccess::begin();
        // `f` runs inside the fault guard; a view's atomics may store, so then the guard
        // is the full one (a store into a replacement page must be seen before the check).
        let r = if write {
            self.fault().guarded(|| f(ptr))
        } else {
            self.fault().guarded_read(|| f(ptr))
        };
        drop(scope);
        drop(access);
        drop(hold);
        r.map_err(io::Error::from)
    }
}
