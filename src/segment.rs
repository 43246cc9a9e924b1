//! `Segment`: an owned, page-aligned buffer from a pool.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::pool::{thread_cache, PoolShared};
use crate::region::{give_back, RegionRef, ZERO_TAG};
use crate::size_class::NO_CLASS;
use crate::sync::epoch;

/// An owned, page-aligned byte buffer carved from a [`SegmentPool`](crate::SegmentPool).
///
/// Dropping it releases the slice to the pool. `len()` equals [`capacity()`](Self::capacity):
/// the size class that served the request (or the request rounded up to pages, for requests above
/// the largest class). Every segment is aligned to at least 4096 bytes.
///
/// A segment stays valid after its pool is dropped; its memory is unmapped when the last segment of
/// its region is released.
///
/// # Invariants
///
/// `ptr..ptr + len` is a slice of `region`, counted in its state word, and owned by this value
/// alone: no other segment, cache or free stack holds it until `drop` gives it back. `len` is the
/// region's `slice_bytes` (the class size, or a dedicated mapping's length), read from the
/// region, which the segment keeps alive.
///
/// Two words, not three: a `Segment` (or `Option<Segment>`) comes back from a call in two
/// registers, and moves through memory as one 16-byte store and load. A three-word value is
/// copied with a 16-byte load of the 8-byte stores just made, which stalls on store forwarding
/// (see `docs/design.md`, "Two words").
pub struct Segment {
    ptr: NonNull<u8>,
    region: RegionRef,
}

const _: () = assert!(std::mem::size_of::<Segment>() == 16);
const _: () = assert!(std::mem::size_of::<Option<Segment>>() == 16);

// SAFETY: a segment owns its bytes exclusively (invariant above); releasing it from another thread
// is what the region protocol is built for (all shared state is atomic).
unsafe impl Send for Segment {}
// SAFETY: `&Segment` only gives `&[u8]`, which is `Sync`.
unsafe impl Sync for Segment {}

impl Segment {
    /// # Safety
    ///
    /// * `addr` (tag bits aside) is the start of a slice of `region` of at least `len` bytes,
    ///   counted in the region and handed to this segment alone.
    /// * `len` is the region's slice length (checked in debug builds only: the segment reads it
    ///   from the region).
    #[inline(always)]
    pub(crate) unsafe fn from_slice(addr: usize, region: RegionRef, len: usize) -> Self {
        // SAFETY: the caller's slice keeps the region alive.
        debug_assert_eq!(len, unsafe { region.get() }.slice_bytes());
        let _ = len;
        Self {
            // SAFETY: slices lie inside mappings, never at address zero (the caller's slice).
            ptr: unsafe { NonNull::new_unchecked((addr & !ZERO_TAG) as *mut u8) },
            region,
        }
    }

    /// The length of the slice, from the region (one load of a read-mostly field).
    #[inline(always)]
    fn slice_len(&self) -> usize {
        // SAFETY: the segment keeps its region alive.
        unsafe { self.region.get() }.slice_bytes()
    }

    /// The region this segment's slice belongs to.
    pub(crate) fn region_ref(&self) -> RegionRef {
        self.region
    }

    /// The size of the buffer in bytes (equal to `len()`).
    pub fn capacity(&self) -> usize {
        self.slice_len()
    }

    /// The first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The first byte, for writing.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Deref for Segment {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: the segment owns `len` initialised (mapped, zero-filled at first) bytes at `ptr`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.slice_len()) }
    }
}

impl DerefMut for Segment {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.slice_len()) }
    }
}

impl AsRef<[u8]> for Segment {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for Segment {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: the segment keeps its region alive.
        let region = unsafe { self.region.get() };
        f.debug_struct("Segment")
            .field("addr", &self.ptr)
            .field("len", &self.slice_len())
            .field("region", &region.id)
            .field("dedicated", &(region.class == NO_CLASS))
            .finish()
    }
}

impl Drop for Segment {
    // Kept small (the class path inline, the dedicated one a call) so that it inlines where a
    // segment is dropped: a drop left out of line takes the segment by reference, so the
    // segment is written to memory and read back on every release.
    #[inline]
    fn drop(&mut self) {
        let addr = self.ptr.as_ptr() as usize;
        // SAFETY: the segment keeps its region alive.
        let r = unsafe { self.region.get() };
        if r.class == NO_CLASS {
            // SAFETY: this segment owns the region's one slice and is never used again.
            unsafe { release_dedicated(self.region, addr, r.slice_bytes()) };
        } else {
            // SAFETY: this segment owns the slice; it is never used again. (With diagnostics on,
            // `release` takes its slow path, which tells the diagnostics first.)
            unsafe { thread_cache::release(self.region, addr) };
        }
    }
}

/// Releases a dedicated mapping (a segment above the largest class): its region holds this one
/// slice and was born retired, so the give-back destroys (unmaps) it. Out of line: it costs a
/// `munmap`, and keeps `Segment::drop` small.
///
/// # Safety
///
/// * The caller owned the segment of `len` bytes at `addr`, the one slice of `region` (a
///   dedicated region), and never uses it again.
#[inline(never)]
unsafe fn release_dedicated(region: RegionRef, addr: usize, len: usize) {
    // SAFETY: the caller's segment kept the region alive until now.
    let r = unsafe { region.get() };
    if r.diagnosed {
        // SAFETY: the caller owned the slice and gives it back right below.
        unsafe { PoolShared::diagnose_release(r, addr, len) };
    }
    let guard = epoch::pin();
    // SAFETY: the caller owned the region's one slice; pinned. The region was born retired, so
    // this give-back destroys (unmaps) it.
    unsafe { give_back(region, &[addr], &guard) };
}
