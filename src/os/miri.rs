//! The memory-mapping calls as the crate makes them under Miri, which cannot execute `mmap`,
//! `madvise` or `mprotect`.
//!
//! The functions have the signatures of `rustix::mm`'s and the types are rustix's own, so
//! `os/mod.rs` swaps one `use` line and the code above it runs unchanged. What each call does:
//!
//! * `mmap_anonymous`: a zeroed, page-aligned allocation (`std::alloc::alloc_zeroed`), so Miri
//!   checks every access against it and reports a use after the last `munmap` as a use after
//!   free. The allocation is recorded with the ranges of it still "mapped".
//! * `munmap`: removes the range from the record; the allocation is freed when nothing of it is
//!   mapped any more. Unmapping part of an allocation (the unaligned head and tail that
//!   `Mapping::anonymous` trims) cannot free those bytes, so an access to a trimmed head or tail
//!   is not reported; an access after the whole mapping went is.
//! * `madvise`: checks the range is mapped. `MADV_DONTNEED` zeroes it, as the kernel does for
//!   private anonymous memory (the next read sees zeros): written through the caller's pointer,
//!   so a reference that still covers the range is invalidated, as the real call would make it
//!   wrong. `MADV_FREE` keeps the bytes (one of the outcomes the kernel allows). Other advice
//!   changes no bytes and does nothing here.
//! * `mlock`, `msync`: check the range and do nothing (no contents change).
//! * `mprotect` (guard pages) and `mmap` of a file are refused with `ENOSYS`/`ENODEV`: Miri can
//!   neither make memory fault nor map a file. Pools with guard pages or file backing, and the
//!   mapped-file layer, do not run under Miri.
//!
//! The record is a `std::sync::Mutex`: Miri sees its synchronisation, which the kernel's page
//! tables would otherwise provide between the threads that map and unmap.

use core::ffi::c_void;
use std::alloc::Layout;
use std::os::fd::AsFd;
use std::sync::Mutex;

use rustix::io::{Errno, Result};
pub(crate) use rustix::mm::{Advice, MapFlags, MprotectFlags, MsyncFlags, ProtFlags};

/// One allocation standing in for an anonymous mapping.
///
/// # Invariants
///
/// `base` was returned by `alloc_zeroed(layout)` and is not freed yet; `mapped` holds disjoint,
/// non-empty byte ranges (offsets from `base`) of it, and is never empty (the allocation is
/// freed, and the record removed, when its last range is unmapped).
struct Allocation {
    base: *mut u8,
    layout: Layout,
    mapped: Vec<(usize, usize)>,
}

// SAFETY: the pointer is only used by `munmap`, under the `ALLOCATIONS` lock, to free the
// allocation; heap memory has no thread affinity.
unsafe impl Send for Allocation {}

static ALLOCATIONS: Mutex<Vec<Allocation>> = Mutex::new(Vec::new());

fn page() -> usize {
    super::page_size()
}

/// The allocation and mapped range that hold all of `addr..addr + len`, as (allocation index,
/// range index, offset of `addr` in the allocation).
fn find(all: &[Allocation], addr: usize, len: usize) -> Option<(usize, usize, usize)> {
    let end = addr.checked_add(len)?;
    all.iter().enumerate().find_map(|(i, a)| {
        let start = addr.checked_sub(a.base.addr())?;
        let stop = end - a.base.addr();
        let r = a
            .mapped
            .iter()
            .position(|&(s, e)| s <= start && stop <= e)?;
        Some((i, r, start))
    })
}

fn checked_range(addr: *mut c_void, len: usize) -> Result<()> {
    if len == 0 || addr.addr() % page() != 0 {
        return Err(Errno::INVAL);
    }
    let all = ALLOCATIONS.lock().unwrap_or_else(|e| e.into_inner());
    find(&all, addr.addr(), len).map(|_| ()).ok_or(Errno::NOMEM)
}

/// `mmap(NULL, len, prot, flags | MAP_ANONYMOUS, -1, 0)` as an allocation. Only what the crate
/// asks for is accepted: no address hint, no `MAP_FIXED`, read-write private memory.
///
/// # Safety
///
/// None beyond the real call's: the memory is new and aliases nothing.
pub(crate) unsafe fn mmap_anonymous(
    addr: *mut c_void,
    len: usize,
    prot: ProtFlags,
    flags: MapFlags,
) -> Result<*mut c_void> {
    if !addr.is_null()
        || flags.contains(MapFlags::FIXED)
        || flags.contains(MapFlags::SHARED)
        || prot != ProtFlags::READ | ProtFlags::WRITE
    {
        return Err(Errno::NOSYS);
    }
    let len = super::round_up(len, page())
        .filter(|&l| l > 0)
        .ok_or(Errno::INVAL)?;
    let layout = Layout::from_size_align(len, page()).map_err(|_| Errno::NOMEM)?;
    // SAFETY: `layout` has a non-zero size.
    let base = unsafe { std::alloc::alloc_zeroed(layout) };
    if base.is_null() {
        return Err(Errno::NOMEM);
    }
    ALLOCATIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Allocation {
            base,
            layout,
            mapped: vec![(0, len)],
        });
    Ok(base.cast())
}

/// A file mapping: refused (`ENODEV`, "the file system does not support memory mapping").
///
/// # Safety
///
/// None: nothing is mapped.
pub(crate) unsafe fn mmap<Fd: AsFd>(
    _addr: *mut c_void,
    _len: usize,
    _prot: ProtFlags,
    _flags: MapFlags,
    _fd: Fd,
    _offset: u64,
) -> Result<*mut c_void> {
    Err(Errno::NODEV)
}

/// `munmap`: the range stops being mapped; the allocation is freed with its last range.
///
/// # Safety
///
/// As for the real call: nothing uses memory of the range afterwards.
pub(crate) unsafe fn munmap(addr: *mut c_void, len: usize) -> Result<()> {
    if len == 0 || addr.addr() % page() != 0 {
        return Err(Errno::INVAL);
    }
    let len = super::round_up(len, page()).ok_or(Errno::INVAL)?;
    let mut all = ALLOCATIONS.lock().unwrap_or_else(|e| e.into_inner());
    // Unmapping memory that is not mapped succeeds for the kernel, but in this crate it would
    // be a double unmap: refuse it so `Mapping::drop`'s check reports it.
    let (i, r, start) = find(&all, addr.addr(), len).ok_or(Errno::INVAL)?;
    let a = &mut all[i];
    let (s, e) = a.mapped.swap_remove(r);
    let stop = start + len;
    if s < start {
        a.mapped.push((s, start));
    }
    if stop < e {
        a.mapped.push((stop, e));
    }
    if a.mapped.is_empty() {
        let a = all.swap_remove(i);
        // SAFETY: `base` came from `alloc_zeroed(layout)` and is freed once, now that none of it
        // is mapped (the record is gone with it).
        unsafe { std::alloc::dealloc(a.base, a.layout) };
    }
    Ok(())
}

/// `madvise`: `MADV_DONTNEED` zeroes the range; `MADV_REMOVE` is refused (`EINVAL`, as for
/// private anonymous memory); every other advice only checks the range.
///
/// # Safety
///
/// As for the real call: for `MADV_DONTNEED`, no reference relies on the bytes of the range.
pub(crate) unsafe fn madvise(addr: *mut c_void, len: usize, advice: Advice) -> Result<()> {
    checked_range(addr, len)?;
    match advice {
        Advice::LinuxDontNeed => {
            // SAFETY: the range is mapped (checked above) and `addr` is the caller's pointer into
            // it; the caller guarantees no reference relies on these bytes.
            unsafe { addr.cast::<u8>().write_bytes(0, len) };
            Ok(())
        }
        Advice::LinuxRemove => Err(Errno::INVAL),
        _ => Ok(()),
    }
}

/// `mlock`: checks the range; locking changes nothing Miri could observe.
///
/// # Safety
///
/// None beyond the range being the caller's.
pub(crate) unsafe fn mlock(addr: *mut c_void, len: usize) -> Result<()> {
    checked_range(addr, len)
}

/// `msync`: checks the range; anonymous memory has nothing to write back.
///
/// # Safety
///
/// None beyond the range being the caller's.
pub(crate) unsafe fn msync(addr: *mut c_void, len: usize, _flags: MsyncFlags) -> Result<()> {
    checked_range(addr, len)
}

/// `mprotect`: refused (`ENOSYS`); Miri cannot make memory fault.
///
/// # Safety
///
/// None: nothing changes.
pub(crate) unsafe fn mprotect(
    _addr: *mut c_void,
    _len: usize,
    _flags: MprotectFlags,
) -> Result<()> {
    Err(Errno::NOSYS)
}
