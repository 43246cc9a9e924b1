//! The one place that talks to the operating system.
//!
//! Memory mappings (`mmap`, `munmap`, `madvise`, `mprotect`, `msync`, `mlock`) live here; file
//! operations the mapping code needs (`posix_fallocate`, `O_TMPFILE`) in [`file`](mod@file);
//! segpool's one SIGBUS and SIGSEGV handler, which the fault guard and the guard pages of
//! diagnostics register their claims with, in [`signal`]. The rest of the crate calls these
//! wrappers and never issues a syscall itself, so the portable logic has no `cfg` noise and every
//! raw pointer handed to the kernel is checked in one place.
//!
//! Linux only: the crate uses `MADV_HUGEPAGE`, `MADV_POPULATE_WRITE`, `O_TMPFILE` and
//! `posix_fallocate` semantics as Linux defines them.

pub(crate) mod file;
pub(crate) mod membarrier;
#[cfg(miri)]
mod miri;
pub(crate) mod signal;

use std::io;
use std::os::fd::AsFd;
use std::ptr::NonNull;

// Under Miri the mapping calls are emulated over the global allocator (see `miri.rs`).
#[cfg(miri)]
use self::miri as mm;
use mm::{MapFlags, ProtFlags};
#[cfg(not(miri))]
use rustix::mm;

pub(crate) use calls::{count, Call};

/// How many memory-mapping system calls segpool made in this process, by kind: every wrapper in
/// this module (and the fault handler's page replacement) counts its call before making it, so
/// `segpool::diagnostics::mapping_calls` can show what an operation cost in system calls.
pub(crate) mod calls {
    // Plain hardware atomics, not the `crate::sync` shim: the fault handler counts here too
    // (async-signal-safe), and the models never reach the OS layer.
    use core::sync::atomic::{AtomicU64, Ordering};

    /// A kind of call, an index into [`CALLS`].
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Call {
        Mmap,
        Munmap,
        Madvise,
        Mprotect,
        Msync,
        Mlock,
    }

    /// One counter per [`Call`], in its order.
    pub(crate) static CALLS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

    /// Counts one call of `kind` (a relaxed add: a few ns beside a system call).
    #[inline]
    pub(crate) fn count(kind: Call) {
        CALLS[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now, in [`Call`] order.
    pub(crate) fn snapshot() -> [u64; 6] {
        std::array::from_fn(|i| CALLS[i].load(Ordering::Relaxed))
    }
}

/// The size of a base page, read once from the kernel.
pub(crate) fn page_size() -> usize {
    rustix::param::page_size()
}

/// Rounds `n` up to a multiple of `align` (a power of two); `None` on overflow.
pub(crate) fn round_up(n: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    Some(n.checked_add(align - 1)? & !(align - 1))
}

/// Access a mapping allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protection {
    /// `PROT_READ`.
    Read,
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

impl Protection {
    fn flags(self) -> ProtFlags {
        match self {
            Protection::Read => ProtFlags::READ,
            Protection::ReadWrite => ProtFlags::READ | ProtFlags::WRITE,
        }
    }
}

/// How a file is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// `MAP_SHARED`: writes reach the file and every other mapping of it.
    Shared,
    /// `MAP_PRIVATE`: copy-on-write, writes stay in this mapping.
    Private,
}

/// An owned memory mapping, unmapped when dropped.
///
/// # Invariants
///
/// `ptr..ptr + len` is a live mapping created by this module and owned by this value alone: no
/// other `Mapping` covers any byte of it, and nothing else unmaps it. `len` is a non-zero multiple
/// of the page size.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mapping` is plain process memory with no thread affinity; whoever reads or writes
// through its pointer synchronises those accesses (the pool hands each slice to one owner).
unsafe impl Send for Mapping {}
// SAFETY: shared references only expose the address and length; see `Send`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of zeroed anonymous private memory whose start is aligned to `align`
    /// (a power of two, at least the page size). A larger alignment is obtained by mapping
    /// `len + align` and unmapping the unaligned head and tail.
    pub(crate) fn anonymous(len: usize, align: usize) -> io::Result<Mapping> {
        let page = page_size();
        let align = align.max(page);
        let len = round_up(len, page)
            .filter(|&l| l > 0)
            .ok_or_else(too_large)?;
        let extra = if align > page { align } else { 0 };
        let total = len.checked_add(extra).ok_or_else(too_large)?;
        count(Call::Mmap);
        // SAFETY: a new anonymous mapping at an address the kernel chooses aliases nothing.
        let raw = unsafe {
            mm::mmap_anonymous(
                std::ptr::null_mut(),
                total,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }?;
        let start = raw.addr();
        let aligned = round_up(start, align).ok_or_else(too_large)?;
        let head = aligned - start;
        let tail = total - head - len;
        // The aligned start and the tail are derived from `raw` (not cast from integers), so
        // they keep its provenance and Miri can check every access through them.
        let raw = raw.cast::<u8>();
        // SAFETY: `head + len + tail == total`: both offsets lie inside the mapping just created,
        // and are computed before any of it is unmapped.
        let (ptr, tail_ptr) = unsafe { (raw.add(head), raw.add(head + len)) };
        // SAFETY: head and tail lie inside the mapping just created, which nothing else uses yet.
        unsafe {
            if head > 0 {
                count(Call::Munmap);
                mm::munmap(raw.cast(), head)?;
            }
            if tail > 0 {
                count(Call::Munmap);
                mm::munmap(tail_ptr.cast(), tail)?;
            }
        }
        Ok(Mapping {
            ptr: NonNull::new(ptr).expect("mmap returned null"),
            len,
        })
    }

    /// Maps `len` bytes of `fd` starting at `offset` (a multiple of the page size).
    pub(crate) fn file(
        fd: impl AsFd,
        offset: u64,
        len: usize,
        protection: Protection,
        sharing: Sharing,
        populate: bool,
    ) -> io::Result<Mapping> {
        let len = round_up(len, page_size())
            .filter(|&l| l > 0)
            .ok_or_else(too_large)?;
        let mut flags = match sharing {
            Sharing::Shared => MapFlags::SHARED,
            Sharing::Private => MapFlags::PRIVATE,
        };
        if populate {
            flags |= MapFlags::POPULATE;
        }
        count(Call::Mmap);
        // SAFETY: a new mapping at an address the kernel chooses aliases no Rust object. The file
        // contents may change under it (other handles, threads, processes), so callers access it
        // through raw pointers with atomic copies and atomics (`fs::copy`, `fs::MappedView`);
        // the one `&[u8]` into it comes from the `unsafe` `MappedFile::with_bytes`, whose caller
        // promises nobody writes the range while the slice lives.
        let raw = unsafe {
            mm::mmap(
                std::ptr::null_mut(),
                len,
                protection.flags(),
                flags,
                fd,
                offset,
            )
        }?;
        Ok(Mapping {
            ptr: NonNull::new(raw.cast()).expect("mmap returned null"),
            len,
        })
    }

    /// The first byte of the mapping.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The length in bytes (a multiple of the page size).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Asks for transparent huge pages (`MADV_HUGEPAGE`). Failure is not an error: the kernel
    /// may not offer them, and the memory works the same without.
    pub(crate) fn advise_huge_pages(&self) {
        count(Call::Madvise);
        // SAFETY: the range is this mapping; MADV_HUGEPAGE changes no contents.
        let _ = unsafe {
            mm::madvise(
                self.ptr.as_ptr().cast(),
                self.len,
                mm::Advice::LinuxHugepage,
            )
        };
    }

    /// Prefaults the whole mapping for writing (`MADV_POPULATE_WRITE`, Linux 5.14+).
    /// `ENOMEM` and every other refusal come back as errors.
    pub(crate) fn populate_write(&self) -> io::Result<()> {
        self.advise_range(0, self.len, mm::Advice::LinuxPopulateWrite)
    }

    /// Applies `advice` to `offset..offset + len` of this mapping (page-aligned by the caller).
    ///
    /// Only advice that cannot change the bytes a live reference sees is accepted here; the
    /// destructive kinds (`MADV_DONTNEED`, `MADV_FREE`, `MADV_REMOVE`) are refused.
    pub(crate) fn advise_range(
        &self,
        offset: usize,
        len: usize,
        advice: mm::Advice,
    ) -> io::Result<()> {
        assert!(
            !matches!(
                advice,
                mm::Advice::LinuxDontNeed | mm::Advice::LinuxFree | mm::Advice::LinuxRemove
            ),
            "destructive advice through the safe path"
        );
        let end = offset.checked_add(len).filter(|&e| e <= self.len);
        if end.is_none() || len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        count(Call::Madvise);
        // SAFETY: the range lies inside this mapping, and the advice kinds allowed here do not
        // change its contents.
        unsafe { mm::madvise(self.ptr.as_ptr().add(offset).cast(), len, advice) }?;
        Ok(())
    }

    /// Gives the pages of `offset..offset + len` (page-aligned) back to the OS: `MADV_DONTNEED`
    /// for private anonymous memory (the next touch maps a zero page), `MADV_REMOVE` for a shared
    /// file mapping (the file's blocks in the range are freed, as with
    /// `fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`, and the range reads zero).
    ///
    /// # Safety
    ///
    /// * No reference into the range is alive and no other thread accesses it: its bytes change
    ///   to zero under anyone who does.
    /// * `file_backed` says truly which kind of mapping this is (`MADV_DONTNEED` on a shared
    ///   file mapping would keep the file's blocks and the old bytes).
    pub(crate) unsafe fn discard(
        &self,
        offset: usize,
        len: usize,
        file_backed: bool,
    ) -> io::Result<()> {
        let page = page_size();
        assert!(
            offset % page == 0
                && len % page == 0
                && len > 0
                && offset.checked_add(len).is_some_and(|e| e <= self.len),
            "discarded range outside the mapping or not page-aligned"
        );
        let advice = if file_backed {
            mm::Advice::LinuxRemove
        } else {
            mm::Advice::LinuxDontNeed
        };
        count(Call::Madvise);
        // SAFETY: the range lies inside this mapping (asserted); the caller guarantees nobody
        // uses its bytes, which this call sets to zero.
        unsafe { mm::madvise(self.ptr.as_ptr().add(offset).cast(), len, advice) }?;
        Ok(())
    }

    /// Writes dirty pages of `offset..offset + len` back to the file (`msync`); `wait` selects
    /// `MS_SYNC` (durable when it returns) over `MS_ASYNC`. Writeback errors (ENOSPC, EIO) come
    /// back here.
    pub(crate) fn sync_range(&self, offset: usize, len: usize, wait: bool) -> io::Result<()> {
        let page = page_size();
        let start = offset & !(page - 1);
        let end = offset
            .checked_add(len)
            .and_then(|e| round_up(e, page))
            .map(|e| e.min(self.len))
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        if end <= start {
            return Ok(());
        }
        let flags = if wait {
            mm::MsyncFlags::SYNC
        } else {
            mm::MsyncFlags::ASYNC
        };
        count(Call::Msync);
        // SAFETY: the range lies inside this mapping; msync does not change memory contents.
        unsafe { mm::msync(self.ptr.as_ptr().add(start).cast(), end - start, flags) }?;
        Ok(())
    }
}

impl Mapping {
    /// Prefaults `offset..offset + len` (page-aligned) for reading (`MADV_POPULATE_READ`,
    /// Linux 5.14+); `EINVAL` means the kernel lacks it (callers fall back to `MAP_POPULATE`).
    pub(crate) fn populate_range(&self, offset: usize, len: usize, write: bool) -> io::Result<()> {
        let advice = if write {
            mm::Advice::LinuxPopulateWrite
        } else {
            mm::Advice::LinuxPopulateRead
        };
        self.advise_range(offset, len, advice)
    }

    /// Locks `offset..offset + len` (page-aligned) in memory (`mlock`); `RLIMIT_MEMLOCK`
    /// refusals come back as errors.
    pub(crate) fn lock_range(&self, offset: usize, len: usize) -> io::Result<()> {
        assert!(offset.checked_add(len).is_some_and(|e| e <= self.len));
        count(Call::Mlock);
        // SAFETY: the range lies inside this mapping (asserted); mlock does not change contents.
        unsafe { mm::mlock(self.ptr.as_ptr().add(offset).cast(), len) }?;
        Ok(())
    }
}

/// Pages asked of `mincore` at a time (16 MiB of 4 KiB pages; a 4 KiB buffer on the stack).
const MINCORE_CHUNK: usize = 4096;

/// How many entries of a `mincore` vector say "resident" (bit 0; the other bits are reserved).
/// Eight entries at a time: a region of 32 MiB has 8,192 entries, and `stats()` reads every
/// region's.
fn resident_pages(vec: &[u8]) -> usize {
    const LOW_BITS: u64 = u64::from_ne_bytes([1; 8]);
    let words = vec.chunks_exact(8);
    let tail = words.remainder().iter().filter(|&&b| b & 1 != 0).count();
    words
        .map(|w| {
            (u64::from_ne_bytes(w.try_into().expect("chunks of 8")) & LOW_BITS).count_ones()
                as usize
        })
        .sum::<usize>()
        + tail
}

impl Mapping {
    /// Bytes of this mapping resident in memory right now (`mincore(2)`, counted in whole pages).
    /// Asks in pieces of [`MINCORE_CHUNK`] pages into a buffer on the stack, so `stats()`, which
    /// asks for every region, allocates nothing for it.
    pub(crate) fn resident_bytes(&self) -> io::Result<usize> {
        if cfg!(miri) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "mincore is not available under Miri",
            ));
        }
        let page = page_size();
        let pages = self.len / page;
        let mut vec = [0u8; MINCORE_CHUNK];
        let mut resident = 0;
        let mut first = 0;
        while first < pages {
            let n = (pages - first).min(MINCORE_CHUNK);
            // SAFETY: `first * page .. (first + n) * page` lies inside this live mapping
            // (page-aligned start, `first + n <= pages`), and `vec` has a byte for each of its
            // `n` pages; mincore only writes `vec`.
            let r = unsafe {
                libc::mincore(
                    self.ptr.as_ptr().add(first * page).cast(),
                    n * page,
                    vec.as_mut_ptr(),
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            resident += resident_pages(&vec[..n]);
            first += n;
        }
        Ok(resident * page)
    }

    /// Makes `offset..offset + len` (page-aligned) inaccessible (`mprotect(PROT_NONE)`): any
    /// access faults with SIGSEGV. Used for guard pages.
    pub(crate) fn protect_none(&self, offset: usize, len: usize) -> io::Result<()> {
        let page = page_size();
        assert!(
            offset % page == 0
                && len % page == 0
                && offset.checked_add(len).is_some_and(|e| e <= self.len),
            "guard range outside the mapping or not page-aligned"
        );
        count(Call::Mprotect);
        // SAFETY: the range lies inside this mapping (asserted); removing access changes no
        // contents, and callers only protect pages no Rust reference covers (guard pages between
        // slices, never handed out).
        unsafe {
            mm::mprotect(
                self.ptr.as_ptr().add(offset).cast(),
                len,
                mm::MprotectFlags::empty(),
            )
        }?;
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        count(Call::Munmap);
        // SAFETY: by the type invariant this value owns the whole range and nobody else unmaps
        // it; whoever drops it guarantees no pointer into it is used afterwards (the pool's
        // retire protocol, the file layer's handle lifetime).
        let r = unsafe { mm::munmap(self.ptr.as_ptr().cast(), self.len) };
        debug_assert!(r.is_ok(), "munmap failed: {r:?}");
    }
}

fn too_large() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "mapping size overflows")
}

#[cfg(test)]
mod tests {
    use super::{page_size, resident_pages, Mapping, MINCORE_CHUNK};

    #[test]
    fn resident_pages_counts_bit_zero_of_every_entry() {
        // Lengths around the eight-entry step, entries with reserved bits set around bit 0.
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 8192, 8195] {
            let vec: Vec<u8> = (0..len)
                .map(|i| [0x01, 0x00, 0xFE, 0xFF, 0x03][i % 5])
                .collect();
            let expected = vec.iter().filter(|&&b| b & 1 != 0).count();
            assert_eq!(resident_pages(&vec), expected, "{len} entries");
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "mincore is not available under Miri")]
    fn resident_bytes_counts_the_touched_pages_across_the_pieces_mincore_is_asked_in() {
        let page = page_size();
        // Two and a half pieces, huge pages off (a mapping that is never advised stays in
        // base pages unless the system forces huge pages on every mapping: then the count is
        // whole huge pages, and only the lower bound below is asserted).
        let pages = MINCORE_CHUNK * 2 + MINCORE_CHUNK / 2;
        let m = Mapping::anonymous(pages * page, page).unwrap();
        assert_eq!(
            m.resident_bytes().unwrap(),
            0,
            "an untouched mapping is not resident"
        );
        let touched = [
            0,
            1,
            MINCORE_CHUNK - 1,
            MINCORE_CHUNK,
            2 * MINCORE_CHUNK + 7,
            pages - 1,
        ];
        for &p in &touched {
            // SAFETY: `p < pages`, so the byte lies inside the live mapping, which nothing else
            // reads or writes.
            unsafe { m.as_ptr().add(p * page).write_volatile(1) };
        }
        let resident = m.resident_bytes().unwrap();
        let thp_always = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| s.contains("[always]"));
        if thp_always {
            assert!(
                resident >= touched.len() * page,
                "{resident} bytes resident"
            );
        } else {
            assert_eq!(resident, touched.len() * page, "one page per touched page");
        }
    }
}
