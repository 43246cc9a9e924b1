//! `DirectFile`: a file read and written with `O_DIRECT`, straight between the device and pool
//! segments.
//!
//! Direct I/O bypasses the kernel's page cache: a page cache built on the pool keeps each page
//! once (in its segment) instead of twice. The kernel asks for alignment in return: the buffer
//! address, the file offset and the length must be multiples of what the device and file system
//! accept. Segments are page-aligned, so the buffer address holds by construction (and is
//! checked); offsets and lengths are the caller's, and a misaligned one is an `InvalidInput`
//! error that names the alignment, before any system call.
//!
//! The descriptor gets `O_DIRECT` through `fcntl(F_SETFL)` after it is opened, so the same code
//! serves `DirectFile::open` and `MmapFs::open_direct` (whose open runs under the root), and the
//! caller's other flags survive. A file system that cannot do direct I/O is refused there, never
//! used buffered behind the caller's back: the kernel refuses `O_DIRECT` (`EINVAL`), or reports
//! a zero direct-I/O alignment, or the file is on tmpfs, which accepts `O_DIRECT` since Linux 6.6
//! but serves it from its page cache (its files are memory).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use super::gate;
use super::registry::{self, Registered};
use crate::os::file::{self as osf, DioAlign};
use crate::sync::atomic::Ordering;
use crate::Segment;

/// The alignment assumed where the kernel does not report one (before Linux 6.1, or a file
/// system that does not fill `STATX_DIOALIGN`): the page size of common devices and the largest
/// logical block size in use, so it is safe wherever direct I/O works at all.
pub const DEFAULT_DIRECT_ALIGNMENT: usize = 4096;

/// The largest file offset (`off_t` is signed).
const MAX_END: u64 = i64::MAX as u64;

/// A file opened with `O_DIRECT`: reads fill [`Segment`]s from the device and writes go from
/// segments to the device, bypassing the kernel's page cache.
///
/// Offsets and lengths must be multiples of [`alignment()`](Self::alignment); a misaligned one is
/// an [`io::ErrorKind::InvalidInput`] error naming the alignment. Segment addresses are always
/// page-aligned, which satisfies [`memory_alignment()`](Self::memory_alignment) on every device
/// known (it is checked anyway).
///
/// Durability: a direct write that returned has left the page cache, but the device may still
/// hold it in a volatile cache and the file's size or block map may not be on disk yet; call
/// [`sync_data`](Self::sync_data) (`fdatasync`) or [`sync_all`](Self::sync_all) (`fsync`) as with
/// any file.
///
/// The methods take `&self`: positioned reads and writes from several threads at once are fine
/// (the kernel orders overlapping ones as it does for `pread`/`pwrite`).
///
/// ```no_run
/// use std::fs::OpenOptions;
/// use segpool::{fs::DirectFile, SegmentPool};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = SegmentPool::new()?;
/// let f = DirectFile::open("/var/lib/app/table.db", OpenOptions::new().read(true).write(true))?;
/// let mut page = pool.allocate(4096)?;
/// let n = f.read_at(&mut page, 8 * 4096)?; // 4096, or less at the end of the file
/// page[..8].copy_from_slice(b"modified");
/// f.write_at(&page, 4096, 8 * 4096)?;
/// f.sync_data()?;
/// # let _ = n; Ok(()) }
/// ```
///
/// # Invariants
///
/// `file` has `O_DIRECT` set, without `O_APPEND`, and is a regular file; `align` and
/// `mem_align` are powers of two. A file opened through an [`MmapFs`](super::MmapFs) is a member
/// of the process's per-file registry (`reg`): every cut it makes (`set_len`, a truncating open)
/// goes through the registry's resize protocol, so the `MappedFile` handles of the process on
/// the same file see the new end instead of faulting past it.
#[derive(Debug)]
pub struct DirectFile {
    file: File,
    path: PathBuf,
    /// Offsets and lengths are multiples of this.
    align: usize,
    /// Buffer addresses are multiples of this.
    mem_align: usize,
    /// The registry entry of the file, when it was opened through an `MmapFs`.
    reg: Option<Registered>,
}

impl DirectFile {
    /// Opens `path` with `options` (any path: [`MmapFs::open_direct`](super::MmapFs::open_direct)
    /// opens under a root) and turns on `O_DIRECT`.
    ///
    /// Errors: the open's own; `Unsupported` if the file system has no direct I/O (see the
    /// module docs: never a buffered fallback); `InvalidInput` for a file that is not a regular
    /// file or for `append(true)` (positioned writes ignore the offset with `O_APPEND`).
    pub fn open(path: impl AsRef<Path>, options: &OpenOptions) -> io::Result<DirectFile> {
        let path = path.as_ref();
        let file = options
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        DirectFile::from_file(file, path.to_path_buf())
    }

    /// Makes an open descriptor direct (`path` is for messages).
    pub(crate) fn from_file(file: File, path: PathBuf) -> io::Result<DirectFile> {
        let refuse = |kind: io::ErrorKind, why: &str| {
            io::Error::new(kind, format!("{}: no direct I/O: {why}", path.display()))
        };
        if !osf::stat(&file)?.regular {
            return Err(refuse(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        if osf::on_tmpfs(&file)? {
            return Err(refuse(
                io::ErrorKind::Unsupported,
                "the file is on tmpfs, whose files live in the page cache (O_DIRECT there is \
                 buffered); use a file system on a block device, or a MappedFile",
            ));
        }
        let flags = rustix::fs::fcntl_getfl(&file)?;
        if flags.contains(rustix::fs::OFlags::APPEND) {
            return Err(refuse(
                io::ErrorKind::InvalidInput,
                "opened for append, where positioned writes ignore their offset",
            ));
        }
        match rustix::fs::fcntl_setfl(&file, flags | rustix::fs::OFlags::DIRECT) {
            Ok(()) => {}
            Err(rustix::io::Errno::INVAL) => {
                return Err(refuse(
                    io::ErrorKind::Unsupported,
                    "the file system refuses O_DIRECT",
                ))
            }
            Err(e) => return Err(e.into()),
        }
        let (mem_align, align) = match osf::dio_align(&file)? {
            DioAlign::Reported { memory, offset } => (memory as usize, offset as usize),
            DioAlign::Unsupported => {
                return Err(refuse(
                    io::ErrorKind::Unsupported,
                    "the file system reports no direct-I/O alignment for this file",
                ))
            }
            DioAlign::Unknown => (DEFAULT_DIRECT_ALIGNMENT, DEFAULT_DIRECT_ALIGNMENT),
        };
        if !align.is_power_of_two() || !mem_align.is_power_of_two() {
            return Err(refuse(
                io::ErrorKind::Unsupported,
                &format!("the kernel reports alignments {mem_align} (memory) and {align} (offsets), not powers of two"),
            ));
        }
        Ok(DirectFile {
            file,
            path,
            align,
            mem_align,
            reg: None,
        })
    }

    /// Like [`from_file`](Self::from_file), for a file opened through an `MmapFs`: joins the
    /// file's registry entry, and with `truncate` cuts the file to 0 bytes through it (the
    /// descriptor was opened without `O_TRUNC`: the kernel must not cut a file that mapped
    /// handles of this process may be reading).
    pub(crate) fn from_file_registered(
        file: File,
        path: PathBuf,
        truncate: bool,
    ) -> io::Result<DirectFile> {
        let mut direct = DirectFile::from_file(file, path)?;
        let id = osf::stat(&direct.file)?;
        let reg = registry::join(&direct.file, id.dev, id.ino, direct.path.clone())?;
        reg.entry.fault.check().map_err(io::Error::from)?;
        direct.reg = Some(reg);
        if truncate {
            direct.set_len(0)?;
        }
        Ok(direct)
    }

    /// The alignment of file offsets and lengths for direct I/O, in bytes: what the kernel
    /// reports (`statx`, `stx_dio_offset_align`), or [`DEFAULT_DIRECT_ALIGNMENT`] where it does
    /// not say.
    pub fn alignment(&self) -> usize {
        self.align
    }

    /// The alignment of buffer addresses (`stx_dio_mem_align`, or the default). Segments are
    /// page-aligned, so this only matters above 4096.
    pub fn memory_alignment(&self) -> usize {
        self.mem_align
    }

    /// The path the file was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills `seg` from the file at `offset`: reads until the segment is full or the file ends,
    /// and returns how many bytes were read (less than `seg.len()` only at the end of the file).
    /// The device transfers whole blocks: after a short read, the segment's bytes past the
    /// returned count may have been overwritten (the file system zero-fills the block that holds
    /// the end of the file, and may fill more). `offset` must be a multiple of
    /// [`alignment()`](Self::alignment); so must the segment's length (every size class is a
    /// multiple of 4096).
    pub fn read_at(&self, seg: &mut Segment, offset: u64) -> io::Result<usize> {
        let len = seg.len();
        self.check(seg.as_ptr(), len, offset, "read")?;
        let mut done = 0;
        while done < len {
            let n = osf::pread(&self.file, &mut seg[done..], offset + done as u64)
                .map_err(|e| self.failed(e, "read", len, offset))?;
            done += n;
            // Zero: the end of the file. A count off the alignment: the end of the file inside
            // a block (the next offset would be misaligned, and there is nothing there).
            if n == 0 || n % self.align != 0 {
                break;
            }
        }
        Ok(done)
    }

    /// Writes the first `len` bytes of `seg` at `offset` and returns `len`. Both `len` and
    /// `offset` must be multiples of [`alignment()`](Self::alignment), and `len` at most
    /// `seg.len()`. A write past the end grows the file; to give a file a length that is not a
    /// multiple of the alignment, write the last block whole, then [`set_len`](Self::set_len).
    pub fn write_at(&self, seg: &Segment, len: usize, offset: u64) -> io::Result<usize> {
        if len > seg.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: direct write of {len} bytes from a segment of {}",
                    self.path.display(),
                    seg.len()
                ),
            ));
        }
        self.check(seg.as_ptr(), len, offset, "write")?;
        let mut done = 0;
        while done < len {
            let n = osf::pwrite(&self.file, &seg[done..len], offset + done as u64)
                .map_err(|e| self.failed(e, "write", len, offset))?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!(
                        "{}: direct write of {len} bytes at {offset} stopped after {done}",
                        self.path.display()
                    ),
                ));
            }
            done += n;
        }
        Ok(len)
    }

    /// The file's length in bytes (`fstat`).
    pub fn len(&self) -> io::Result<u64> {
        Ok(osf::stat(&self.file)?.size)
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Sets the file's length (`ftruncate`: cuts, or grows sparsely). Any length: only reads and
    /// writes are aligned.
    ///
    /// Opened through an [`MmapFs`](super::MmapFs), the change goes through the file's registry
    /// entry as `MappedFile::set_len` does: a cut waits until no access of a mapped handle of the
    /// process runs on the file, and those handles then stop at the new end. From inside a
    /// `MappedFile::with_view`/`with_bytes` closure such a change is refused (`WouldBlock`),
    /// since it would wait for that very access.
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        if len > MAX_END {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: length {len} is past the largest file size ({MAX_END})",
                    self.path.display()
                ),
            ));
        }
        let Some(reg) = &self.reg else {
            return osf::truncate(&self.file, len);
        };
        gate::refuse_in_scoped_access()?;
        let entry = &reg.entry;
        let _r = entry.resize.lock();
        // The real size, under the lock: a cut made outside the process is taken first.
        entry.adopt(osf::stat(&self.file)?.size)?;
        if len < entry.reserved.load(Ordering::Acquire) {
            entry.cut(&self.file, len)
        } else {
            osf::truncate(&self.file, len)?;
            entry.catch_up(len);
            Ok(())
        }
    }

    /// `fsync`: data, size and metadata durable when it returns (including the device's
    /// volatile cache, where it has one).
    pub fn sync_all(&self) -> io::Result<()> {
        osf::sync_all(&self.file)
    }

    /// `fdatasync`: data, and the metadata needed to read it back (the size), durable when it
    /// returns.
    pub fn sync_data(&self) -> io::Result<()> {
        osf::sync_data(&self.file)
    }

    /// Refuses a misaligned access before any system call.
    fn check(&self, addr: *const u8, len: usize, offset: u64, op: &str) -> io::Result<()> {
        let at = |what: String| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: direct {op}: {what}", self.path.display()),
            )
        };
        let a = self.align as u64;
        if offset % a != 0 {
            return Err(at(format!(
                "offset {offset} is not a multiple of the direct-I/O alignment ({} bytes)",
                self.align
            )));
        }
        if len % self.align != 0 {
            return Err(at(format!(
                "length {len} is not a multiple of the direct-I/O alignment ({} bytes)",
                self.align
            )));
        }
        if addr as usize % self.mem_align != 0 {
            return Err(at(format!(
                "buffer address {addr:p} is not a multiple of the direct-I/O memory alignment \
                 ({} bytes)",
                self.mem_align
            )));
        }
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > MAX_END)
        {
            return Err(at(format!(
                "{len} bytes at {offset} end past the largest file offset"
            )));
        }
        Ok(())
    }

    /// Names the file and the access in a system call's error (its kind kept).
    fn failed(&self, e: io::Error, op: &str, len: usize, offset: u64) -> io::Error {
        io::Error::new(
            e.kind(),
            format!(
                "{}: direct {op} of {len} bytes at {offset}: {e}",
                self.path.display()
            ),
        )
    }
}

impl AsFd for DirectFile {
    /// The descriptor (for `io_uring` or other direct submissions; it has `O_DIRECT`).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
