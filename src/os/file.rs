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
                match rfs::open(&name, flags | OFlags::CREATE | OFlags::EXCL, Mode::from_raw_mode(0o600)) {
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
