//! File operations the mapping code needs: anonymous files in a directory and space reservation.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{self as rfs, Mode, OFlags};

/// Opens a new, nameless file in `dir` that no other process can open (`O_TMPFILE`).
///
/// Filesystems without `O_TMPFILE` get a uniquely named file that is unlinked at once, so it is
/// never visible in the directory listing for longer than those two syscalls.
pub(crate) fn anonymous_file(dir: &Path) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::CLOEXEC;
    match rfs::open(dir, flags | OFlags::TMPFILE, Mode::from_raw_mode(0o600)) {
        Ok(fd) => Ok(File::from(fd)),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::ISDIR => {
            use std::sync::atomic::{AtomicU64, Ordering};
            static NEXT: AtomicU64 = AtomicU64::new(0);
            loop {
                let name = dir.join(format!(
                    ".segpool-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                match rfs::open(
                    &name,
                    flags | OFlags::CREATE | OFlags::EXCL,
                    Mode::from_raw_mode(0o600),
                ) {
                    Ok(fd) => {
                        rfs::unlink(&name)?;
                        return Ok(File::from(fd));
                    }
                    Err(e) if e == rustix::io::Errno::EXIST => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Reserves `offset..offset + len` of `fd` on disk (`posix_fallocate` semantics: the file grows
/// if needed and a later write fault cannot hit a full disk). A full disk is `ENOSPC` here.
pub(crate) fn reserve(fd: impl AsFd, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    loop {
        match rfs::fallocate(fd.as_fd(), rfs::FallocateFlags::empty(), offset, len) {
            Err(rustix::io::Errno::INTR) => continue,
            // Filesystems without fallocate: grow the file instead (no reservation possible).
            Err(rustix::io::Errno::OPNOTSUPP) => {
                let st = rfs::fstat(fd.as_fd())?;
                let end = offset.checked_add(len).ok_or(io::ErrorKind::InvalidInput)?;
                if (st.st_size as u64) < end {
                    rfs::ftruncate(fd.as_fd(), end)?;
                }
                return Ok(());
            }
            r => return r.map_err(Into::into),
        }
    }
}

/// What the file layer needs to know about an open file: which file it is and how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    /// `st_dev`: the device holding the file.
    pub(crate) dev: u64,
    /// `st_ino`: the inode on that device.
    pub(crate) ino: u64,
    /// `st_size` in bytes.
    pub(crate) size: u64,
    /// Whether it is a regular file (only those can be mapped).
    pub(crate) regular: bool,
}

/// `fstat`: identity and size of an open file.
pub(crate) fn stat(fd: impl AsFd) -> io::Result<FileId> {
    let st = rfs::fstat(fd.as_fd())?;
    Ok(FileId {
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        size: st.st_size as u64,
        regular: rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::RegularFile,
    })
}

/// `ftruncate`: sets the length of the file (grows sparsely or cuts).
pub(crate) fn truncate(fd: impl AsFd, len: u64) -> io::Result<()> {
    loop {
        match rfs::ftruncate(fd.as_fd(), len) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map_err(Into::into),
        }
    }
}

/// `fsync`: data and metadata durable when it returns. Writeback errors (EIO, ENOSPC) come back.
pub(crate) fn sync_all(fd: impl AsFd) -> io::Result<()> {
    loop {
        match rfs::fsync(fd.as_fd()) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map_err(Into::into),
        }
    }
}

/// `fdatasync`: data (and the metadata needed to read it back, such as the size) durable when it
/// returns. On Linux this includes pages dirtied through shared mappings of the file.
pub(crate) fn sync_data(fd: impl AsFd) -> io::Result<()> {
    loop {
        match rfs::fdatasync(fd.as_fd()) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map_err(Into::into),
        }
    }
}

/// Whether the descriptor was opened for writing (`O_WRONLY` or `O_RDWR`), and for reading.
pub(crate) fn access_mode(fd: impl AsFd) -> io::Result<(bool, bool)> {
    let fl = rfs::fcntl_getfl(fd.as_fd())?;
    let acc = fl & OFlags::RWMODE;
    let readable = acc == OFlags::RDONLY || acc == OFlags::RDWR;
    let writable = acc == OFlags::WRONLY || acc == OFlags::RDWR;
    Ok((readable, writable))
}

/// Whether the descriptor was opened with `O_APPEND`.
pub(crate) fn appends(fd: impl AsFd) -> io::Result<bool> {
    Ok(rfs::fcntl_getfl(fd.as_fd())?.contains(OFlags::APPEND))
}

/// The path the kernel has for an open descriptor (`/proc/self/fd/N`): where the file really is
/// after every symlink was followed, which is what a containment check must look at.
pub(crate) fn real_path(fd: impl AsFd) -> io::Result<std::path::PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// The soft `RLIMIT_MEMLOCK` in bytes (`None` = unlimited), for error messages about `mlock`.
pub(crate) fn memlock_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Memlock).current
}

/// The direct-I/O alignment the kernel reports for an open file (`statx` with
/// `STATX_DIOALIGN`, Linux 6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DioAlign {
    /// `stx_dio_mem_align` (buffer addresses) and `stx_dio_offset_align` (offsets and lengths).
    Reported { memory: u32, offset: u32 },
    /// The file system supports no direct I/O on this file (both fields reported as zero).
    Unsupported,
    /// The kernel or file system does not say (before Linux 6.1, or a file system that does not
    /// fill the field).
    Unknown,
}

/// `statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN)`.
pub(crate) fn dio_align(fd: impl AsFd) -> io::Result<DioAlign> {
    let st = match rfs::statx(
        fd.as_fd(),
        "",
        rfs::AtFlags::EMPTY_PATH,
        rfs::StatxFlags::DIOALIGN,
    ) {
        Ok(st) => st,
        // A kernel without statx (before 4.11) says nothing either.
        Err(rustix::io::Errno::NOSYS) => return Ok(DioAlign::Unknown),
        Err(e) => return Err(e.into()),
    };
    if st.stx_mask & rfs::StatxFlags::DIOALIGN.bits() == 0 {
        return Ok(DioAlign::Unknown);
    }
    Ok(match (st.stx_dio_mem_align, st.stx_dio_offset_align) {
        (0, _) | (_, 0) => DioAlign::Unsupported,
        (memory, offset) => DioAlign::Reported { memory, offset },
    })
}

/// Whether the file lives on tmpfs (`fstatfs` magic `TMPFS_MAGIC`).
pub(crate) fn on_tmpfs(fd: impl AsFd) -> io::Result<bool> {
    let st = rfs::fstatfs(fd.as_fd())?;
    // `f_type`'s integer type differs between targets; the magic fits in 32 bits.
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as u64 & 0xffff_ffff == libc::TMPFS_MAGIC as u64)
}

/// `pread`: at most `buf.len()` bytes at `offset` (0 at the end of the file), retried on `EINTR`.
pub(crate) fn pread(fd: impl AsFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        match rustix::io::pread(fd.as_fd(), &mut *buf, offset) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map_err(Into::into),
        }
    }
}

/// `pwrite`: at most `buf.len()` bytes at `offset`, retried on `EINTR`.
pub(crate) fn pwrite(fd: impl AsFd, buf: &[u8], offset: u64) -> io::Result<usize> {
    loop {
        match rustix::io::pwrite(fd.as_fd(), buf, offset) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map_err(Into::into),
        }
    }
}
