//! Reading: the tuned fast path of `read_at` (a whole-file mapping, the range inside it and
//! before the end of the file, no resize pending), and the general read every other case takes.

use std::io;

use super::access::Step;
use super::MappedFile;
use super::View;
use crate::fs::copy::{copy_from_shared, copy_small_from_shared, SMALL};
use crate::fs::gate::AccessGuard;
use crate::sync::atomic::Ordering;

impl MappedFile {
    /// Reads up to `buf.len()` bytes at `offset`; `Ok(0)` at or past the end of the file.
    //
    // `#[inline]` on purpose, so the fast path is compiled in the caller's crate. Small random
    // reads are bound by how many of them the CPU keeps in flight, so every instruction counts
    // (docs/files.md, "The read path"): compiled in an executable, the thread's reader slot is
    // one load at a fixed offset from the thread pointer, while compiled in this library it is
    // reached through `__tls_get_addr`, a call that costs the fast path a stack frame and
    // saved registers. The rare cases go through cold functions out of line.
    #[inline]
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if buf.len() <= SMALL {
            self.read_small::<true>(buf, offset)
        } else {
            self.read_at_large(buf, offset)
        }
    }

    /// `read_at` of more than [`SMALL`] bytes: the same fast path, whose copy has a loop and a
    /// string move (and so registers to spare, which the small reads need not). Out of line, so
    /// the small path stays small where `read_at` is inlined.
    #[inline(never)]
    fn read_at_large(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.read_large::<true>(buf, offset)
    }

    /// [`read_at`](Self::read_at) without the fault guard on its fast path, for measuring what
    /// the guard costs (`benches/fault_guard.rs`). Built only with `--cfg segpool_unguarded_read`
    /// (`RUSTFLAGS="--cfg segpool_unguarded_read" cargo bench --bench fault_guard`), so never part
    /// of the API: a fault during the copy is not reported, and the bytes read may then be zeros.
    #[cfg(segpool_unguarded_read)]
    #[inline]
    pub fn read_at_unguarded(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if buf.len() <= SMALL {
            self.read_small::<false>(buf, offset)
        } else {
            self.read_large::<false>(buf, offset)
        }
    }

    /// The body of `read_at` for at most [`SMALL`] bytes, kept as short as it can be: small
    /// random reads are bound by memory latency, and the fewer instructions each read takes,
    /// the more of them the CPU overlaps (docs/files.md, "The read path"). It handles a read of
    /// a whole-file mapping that lies before the end of the file and at an offset below
    /// [`small_end`](Self::small_end) (so inside the mapping), with no resize pending and this
    /// thread in no other access (`Gate::fast_enter`). Everything else (windows, whose bound is
    /// 0; a read near or at the end of the file; a remap that is due; nested accesses) goes to
    /// the general path, and a fault or a poisoned file to [`read_faulted`](Self::read_faulted),
    /// both out of line. `GUARDED` is false only for
    /// `read_at_unguarded` (a build with `--cfg segpool_unguarded_read`).
    #[inline(always)]
    fn read_small<const GUARDED: bool>(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = buf.len();
        // Free where it is inlined: every caller has just checked it.
        assert!(n <= SMALL);
        let Some(access) = self.entry.gate.fast_enter() else {
            return self.read_at_general(buf, offset);
        };
        // Inside the access, so the bound and the mapping agree (invariant of `small_end`).
        // `offset < small_end <= i64::MAX`, so `offset + n` cannot overflow.
        if offset >= self.small_end.load(Ordering::Relaxed) || offset + n as u64 > self.entry.len()
        {
            drop(access);
            return self.read_at_general(buf, offset);
        }
        let View::Whole(w) = &self.view else {
            // SAFETY: `small_end` is 0 for a windowed view (its invariant), and `offset` is
            // below it, so the view is whole.
            unsafe { std::hint::unreachable_unchecked() }
        };
        let dst = buf.as_mut_ptr();
        // SAFETY: `offset + n <= small_end + SMALL <= mapping length` (the invariant of
        // `small_end`, which agrees with the mapping inside our access), and the mapping stays
        // mapped while the access lasts; `buf` is a `&mut`, which cannot overlap a mapping that
        // the safe API never lends out as a reference (and `with_bytes`' callers promise no
        // write overlaps their slice); mapped memory is only accessed atomically (copy.rs);
        // `n <= SMALL` (asserted above).
        let copy = || unsafe { copy_small_from_shared(w.base().add(offset as usize), dst, n) };
        self.finish_read::<GUARDED>(access, copy, n)
    }

    /// The body of `read_at` for more than [`SMALL`] bytes: the same protocol as
    /// [`read_small`](Self::read_small), with a bounds check of the mapping's length (the
    /// buffer may be of any length) and the general copy. Callers pass more than [`SMALL`] bytes.
    #[inline(always)]
    fn read_large<const GUARDED: bool>(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let View::Whole(w) = &self.view else {
            return self.read_at_general(buf, offset);
        };
        let Some(access) = self.entry.gate.fast_enter() else {
            return self.read_at_general(buf, offset);
        };
        let n = buf.len();
        // SAFETY: we are inside an access of the file's gate until `access` is dropped.
        let (base, cap) = unsafe { w.base_and_cap() };
        let end = offset.checked_add(n as u64);
        if end.is_none_or(|end| end > self.limit().min(cap as u64)) {
            // Not all of `buf` lies before the end of the file (a short read, or none) and in
            // the mapping (a remap is due): the general path.
            drop(access);
            return self.read_at_general(buf, offset);
        }
        let dst = buf.as_mut_ptr();
        // SAFETY: `offset + n <= cap` (checked above), and the mapping at `base` stays mapped
        // while the access lasts; `dst..dst + n` is `buf`, a `&mut` that cannot overlap the
        // mapping (as in `read_small`); mapped memory is only accessed atomically (copy.rs).
        let copy = || unsafe { copy_from_shared(base.add(offset as usize), dst, n) };
        self.finish_read::<GUARDED>(access, copy, n)
    }

    /// The end both fast reads share: runs `copy` (of `n` bytes, inside `access`) under the
    /// fault guard unless `GUARDED` is false, leaves the gate, and reports a fault out of line.
    #[inline(always)]
    fn finish_read<const GUARDED: bool>(
        &self,
        access: AccessGuard<'_>,
        copy: impl FnOnce(),
        n: usize,
    ) -> io::Result<usize> {
        let clean = if GUARDED {
            self.fault.guarded_read_ok(copy)
        } else {
            copy();
            true
        };
        drop(access);
        if !clean {
            return Err(self.read_faulted());
        }
        Ok(n)
    }

    /// The error of a read whose copy faulted: the handler poisoned the file before it replaced
    /// the page, so the fault state has the error.
    #[cold]
    #[inline(never)]
    fn read_faulted(&self) -> io::Error {
        fault_to_io(self.fault.error())
    }

    /// Every read the fast paths leave: windows, a read near or past the end of the file, a
    /// remap that is due, a pending resize, nested accesses.
    #[inline(never)]
    fn read_at_general(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.fail_fast()?;
        // As `pread`: a range past `off_t` is refused (even when empty or past the end).
        self.check_range(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len() as u64;
        let dst = buf.as_mut_ptr();
        let fault = self.fault();
        let (n, _access) = self.access(|round| {
            let limit = round.limit;
            // A read reaching past the known length depends on the real one (someone outside
            // may have grown or cut the file): stat once. Reads inside it never ask the kernel.
            if !round.refreshed && offset.saturating_add(want) > limit {
                return Err(Step::Refresh);
            }
            if offset >= limit {
                return Ok(0);
            }
            let n = want.min(limit - offset) as usize;
            round.pieces(offset, n, |extent, roff, boff, k| {
                fault
                    // SAFETY: `roff + k <= extent.len()` (pieces), the extent stays mapped
                    // (gate or the window's Arc), `dst + boff .. + k` lies in `buf`, and `buf`
                    // (a `&mut`) cannot overlap the mapping (as in `read_small`); mapped memory
                    // is only accessed atomically (copy.rs).
                    .guarded_read(|| unsafe {
                        copy_from_shared(extent.ptr().add(roff), dst.add(boff), k)
                    })
                    .map_err(io::Error::from)
            })?;
            Ok(n)
        })?;
        Ok(n)
    }

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
    pub fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset)? {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "end of file at offset {offset} ({} bytes left to read)",
                            buf.len()
                        ),
                    ))
                }
                n => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// The `io::Error` of a fault, out of line: the read fast path pays nothing for it until it
/// happens.
#[cold]
#[inline(never)]
fn fault_to_io(e: crate::Error) -> io::Error {
    io::Error::from(e)
}
