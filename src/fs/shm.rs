//! `SharedMemory`: a fixed-size file mapped `MAP_SHARED` by several processes, for IPC.
//!
//! Put the file on tmpfs (`/dev/shm`) for memory that never reaches a disk, or on a disk for
//! memory that survives. Every process that maps it sees every other's writes (one page cache);
//! ordering between processes is the caller's protocol (a flag written last, a pipe, `wait`).

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

use super::config::{MapConfig, MapMode, SyncMode};
use super::file::MappedFile;
use super::view::MappedView;

/// A shared, fixed-size, read-write mapping of a file, for exchanging bytes between processes.
///
/// Access is by copy (`read_at`, `write_at`) or in place through a [`MappedView`]
/// ([`with_view`](Self::with_view), whose atomics processes synchronise through), with the same
/// fault protection as [`MappedFile`]: if the file is cut by someone else, accesses fail instead of
/// killing the process. Its size never changes through this type.
#[derive(Debug)]
pub struct SharedMemory {
    file: MappedFile,
    len: u64,
}

impl SharedMemory {
    fn config() -> MapConfig {
        MapConfig::default()
            .mode(MapMode::ReadWrite)
            .sync(SyncMode::Never)
    }

    /// Creates (or truncates) the file at `path` with `len` zero bytes (reserved on disk) and
    /// maps it. A zero `len` is an error.
    pub fn create(path: impl AsRef<Path>, len: u64) -> io::Result<SharedMemory> {
        let path = path.as_ref();
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "shared memory of zero bytes",
            ));
        }
        // Cut through the registry (`from_file`), not by the kernel at open: another handle of
        // the process on this file must see the cut instead of faulting.
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let file = MappedFile::from_file(f, path.to_path_buf(), &Self::config(), None, true)?;
        file.set_len(len)?;
        Ok(SharedMemory { file, len })
    }

    /// Maps the existing file at `path` with its current length (which must not be zero).
    pub fn open(path: impl AsRef<Path>) -> io::Result<SharedMemory> {
        let path = path.as_ref();
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        let file = MappedFile::from_file(f, path.to_path_buf(), &Self::config(), None, false)?;
        let len = file.len();
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is empty: nothing to share", path.display()),
            ));
        }
        Ok(SharedMemory { file, len })
    }

    /// The size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: shared memory has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn check(&self, offset: u64, n: usize) -> io::Result<()> {
        match offset.checked_add(n as u64) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{n} bytes at offset {offset} do not fit in shared memory of {} bytes",
                    self.len
                ),
            )),
        }
    }

    /// Copies up to `buf.len()` bytes from `offset`; `Ok(0)` at or past the end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = buf.len().min(self.len.saturating_sub(offset) as usize);
        self.file.read_at(&mut buf[..n], offset)
    }

    /// Copies all of `buf` to `offset`; the range must lie inside the memory.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len())?;
        self.file.write_all_at(buf, offset)
    }

    /// Runs `f` on `len` bytes at `offset` in place (see [`MappedFile::with_bytes`]); the range
    /// must lie inside the memory (`InvalidInput`).
    ///
    /// # Safety
    ///
    /// As for [`MappedFile::with_bytes`]: while `f` runs, no process, thread or handle writes
    /// the range (which is what shared memory is usually for: prefer
    /// [`with_view`](Self::with_view)) and nobody truncates the file.
    pub unsafe fn with_bytes<R>(
        &self,
        offset: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> io::Result<R> {
        self.check(offset, len)?;
        // SAFETY: the caller's promise (this fn's contract) is the one `with_bytes` asks for.
        unsafe { self.file.with_bytes(offset, len, f) }
    }

    /// Runs `f` on a [`MappedView`] of `len` bytes at `offset` (see [`MappedFile::with_view`]);
    /// the range must lie inside the memory (`InvalidInput`). The view's atomics are how
    /// processes sharing the memory synchronise:
    ///
    /// ```no_run
    /// use std::sync::atomic::Ordering;
    /// use segpool::fs::SharedMemory;
    /// # fn main() -> std::io::Result<()> {
    /// let shm = SharedMemory::create("/dev/shm/app-ring", 4096)?;
    /// shm.write_at(b"payload", 64)?;
    /// // Publish: readers that see the flag with Acquire also see the payload.
    /// shm.with_view(0, 8, |v| v.atomic_u64(0).store(1, Ordering::Release))?;
    /// # Ok(()) }
    /// ```
    pub fn with_view<R>(
        &self,
        offset: u64,
        len: usize,
        f: impl FnOnce(&MappedView) -> R,
    ) -> io::Result<R> {
        self.check(offset, len)?;
        self.file.with_view(offset, len, f)
    }

    /// Makes the bytes durable on the file's disk (`fsync`); nothing to do on tmpfs, harmless.
    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}
