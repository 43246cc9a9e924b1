//! `MappedView`: zero-copy access to a range of a mapped file that never claims the bytes hold
//! still.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64};

use super::copy::copy_from_shared;

/// A range of a mapped file (or of [`SharedMemory`](super::SharedMemory)), lent to the closure
/// of [`MappedFile::with_view`](super::MappedFile::with_view) for the duration of the call.
///
/// It reads by copy ([`copy_to_slice`](Self::copy_to_slice), [`to_vec`](Self::to_vec)) and
/// gives aligned atomics ([`atomic_u32`](Self::atomic_u32), [`atomic_u64`](Self::atomic_u64))
/// through which threads and processes that map the same file can synchronise, without copying
/// the rest of the range.
///
/// ## Safety
///
/// A view never gives out a `&[u8]` (or `&mut [u8]`). A shared reference to bytes promises they do
/// not change while it lives, and a `MAP_SHARED` mapping cannot keep that promise: another handle,
/// another thread through `write_at`, or another process may write the bytes at any time, and a
/// truncation by someone else can replace them by zeros. Building such a reference is undefined
/// behaviour even if the program never looks at a changed byte. So everything a view does treats
/// the memory as shared: copies use relaxed atomic loads (see `docs/files.md`, "Memory model"),
/// and the only references it hands out are to atomic types, whose contract is exactly that others
/// may change them. [`MappedFile::with_bytes`](super::MappedFile::with_bytes) is the `unsafe`
/// alternative for callers who can promise nobody writes the range.
///
/// A fault while the closure runs (the file was cut under the view) does not kill the process:
/// loads read zeros, stores are lost, the file is poisoned, and `with_view` returns the error
/// instead of the closure's result.
///
/// ## Misuse panics
///
/// Like slice indexing, an offset out of the view's range, or an atomic at a misaligned offset,
/// is a bug at the call site and panics with a message naming the offsets (see each method's
/// `# Panics`). A `Result` would make every atomic access of a synchronisation protocol handle an
/// error that a correct program never sees; the length and alignment are known to the caller
/// before the call (`len()`, and the view starts at a file offset the caller chose).
pub struct MappedView {
    ptr: *mut u8,
    len: usize,
    /// The file offset of the first byte (for messages).
    offset: u64,
    /// Whether the mapping is writable: atomics need it (see [`MappedView::atomic_u32`]).
    writable: bool,
}

// SAFETY: a view is the address and length of memory that is only accessed atomically through
// it (copies with atomic loads, references to atomics). Sharing it with another thread (a scoped
// thread inside the closure) adds no access that a second `with_view` on that thread could not
// make; the mapping stays mapped until `with_view` returns, which is after any such thread ended
// (the view is lent to the closure by reference and cannot escape it).
unsafe impl Sync for MappedView {}

impl MappedView {
    /// # Safety
    ///
    /// * `ptr..ptr + len` lies in a live mapping of file offset `offset..offset + len` that stays
    ///   mapped, and inside the file, for as long as the view is reachable (the caller lends the
    ///   view to a closure by reference and drops it before unmapping).
    /// * Within this process that memory is only accessed atomically, or through raw pointers
    ///   whose users promised (`with_bytes`) that nobody writes while they read.
    /// * `writable` is true only if the mapping is `PROT_WRITE`.
    pub(crate) unsafe fn new(ptr: *mut u8, len: usize, offset: u64, writable: bool) -> MappedView {
        MappedView {
            ptr,
            len,
            offset,
            writable,
        }
    }

    /// The length of the view in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file offset of the view's first byte.
    pub fn file_offset(&self) -> u64 {
        self.offset
    }

    /// Copies `dst.len()` bytes starting at `offset` (from the start of the view) into `dst`.
    ///
    /// Bytes another thread or process writes meanwhile may be seen torn: each byte is either
    /// its old or its new value.
    ///
    /// # Panics
    ///
    /// If `offset + dst.len()` is past the end of the view.
    #[track_caller]
    pub fn copy_to_slice(&self, offset: usize, dst: &mut [u8]) {
        self.check(offset, dst.len(), "copy_to_slice");
        // SAFETY: `offset + dst.len() <= len` (checked), so the source lies in the live mapping
        // (the view's invariant), only accessed atomically in this process; `dst` is a `&mut`,
        // which cannot overlap memory that is never lent out as a reference.
        unsafe { copy_from_shared(self.ptr.add(offset), dst.as_mut_ptr(), dst.len()) };
    }

    /// Copies the whole view into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len];
        self.copy_to_slice(0, &mut v);
        v
    }

    /// The 4 bytes at `offset` as an [`AtomicU32`] (in the CPU's byte order), shared with every
    /// thread and process that maps the same bytes of the file: a flag, a counter or a sequence
    /// number they synchronise through. Use the orderings as for any atomic (`Release` on the
    /// store that publishes, `Acquire` on the load that observes).
    ///
    /// # Panics
    ///
    /// If `offset + 4` is past the end of the view, if the file offset of the value
    /// (`file_offset() + offset`) is not a multiple of 4, or if the mapping is not writable (a
    /// `ReadOnly` handle: `&AtomicU32` allows stores, which would crash on a read-only page).
    #[track_caller]
    pub fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        let p = self.atomic_ptr(offset, 4, "atomic_u32");
        // SAFETY: `p..p + 4` lies in the view (checked), which stays mapped and writable for the
        // lifetime of `&self` (the view's invariant); `p` is 4-aligned (checked; mappings start
        // on a page, so address and file offset agree modulo the page size); in this process
        // the bytes are only accessed atomically, so handing out an atomic adds no data race.
        unsafe { AtomicU32::from_ptr(p.cast()) }
    }

    /// The 8 bytes at `offset` as an [`AtomicU64`]; see [`atomic_u32`](Self::atomic_u32).
    ///
    /// # Panics
    ///
    /// If `offset + 8` is past the end of the view, if `file_offset() + offset` is not a
    /// multiple of 8, or if the mapping is not writable.
    #[track_caller]
    pub fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        let p = self.atomic_ptr(offset, 8, "atomic_u64");
        // SAFETY: as in `atomic_u32`, with 8 bytes and 8-byte alignment (checked).
        unsafe { AtomicU64::from_ptr(p.cast()) }
    }

    #[track_caller]
    fn atomic_ptr(&self, offset: usize, size: usize, what: &str) -> *mut u8 {
        self.check(offset, size, what);
        let file_offset = self.offset + offset as u64;
        if file_offset % size as u64 != 0 {
            misaligned(what, offset, file_offset, size);
        }
        if !self.writable {
            read_only(what);
        }
        // SAFETY: `offset + size <= len` (checked).
        let p = unsafe { self.ptr.add(offset) };
        debug_assert_eq!(p as usize % size, 0);
        p
    }

    #[inline]
    #[track_caller]
    fn check(&self, offset: usize, n: usize, what: &str) {
        if offset.checked_add(n).is_none_or(|e| e > self.len) {
            out_of_range(what, offset, n, self.len);
        }
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn out_of_range(what: &str, offset: usize, n: usize, len: usize) -> ! {
    panic!("MappedView::{what}: {n} bytes at offset {offset} are out of range for a view of {len} bytes")
}

#[cold]
#[inline(never)]
#[track_caller]
fn misaligned(what: &str, offset: usize, file_offset: u64, size: usize) -> ! {
    panic!("MappedView::{what}: offset {offset} (file offset {file_offset}) is not aligned to {size} bytes")
}

#[cold]
#[inline(never)]
#[track_caller]
fn read_only(what: &str) -> ! {
    panic!("MappedView::{what}: the mapping is read-only (open the file ReadWrite or CopyOnWrite to use atomics)")
}

impl fmt::Debug for MappedView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedView")
            .field("file_offset", &self.offset)
            .field("len", &self.len)
            .field("writable", &self.writable)
            .finish_non_exhaustive()
    }
}
