//! Mapped files: an mmap-backed file layer over a directory.
//!
//! [`MmapFs`] is a root directory and a [`MapConfig`]; it opens [`MappedFile`]s under that root,
//! read and written through memory mappings with positioned I/O, `Read`/`Write`/`Seek`, sync
//! policies ([`SyncMode`]), windows over files larger than the address space budget, and access
//! hints. Every handle on the same file in the process shares one registry entry (length,
//! generation, fault state), so handles agree on the file's length and a fault poisons the file
//! for all of them. [`DirectFile`] reads and writes pool segments with `O_DIRECT` instead,
//! bypassing the kernel's page cache. See `docs/files.md`.
//!
//! ```no_run
//! use segpool::fs::{MmapFs, MapConfig, MapMode, SyncMode};
//! # fn main() -> std::io::Result<()> {
//! let config = MapConfig::default()
//!     .mode(MapMode::ReadWrite)
//!     .sync(SyncMode::OnClose);
//! let fs = MmapFs::new("/var/lib/app", config)?;
//! let f = fs.create("data.bin")?;
//! f.write_all_at(b"hello", 0)?;
//! let mut buf = [0u8; 5];
//! f.read_exact_at(&mut buf, 0)?;
//! f.close()?;
//! # Ok(()) }
//! ```

mod config;
mod copy;
mod direct;
mod extent;
mod file;
mod flusher;
pub(crate) mod gate;
mod path;
mod registry;
mod shm;
#[cfg(all(test, not(any(miri, loom, shuttle))))]
mod tests;
mod view;
mod whole;
mod window;

use std::ffi::OsString;
use std::fs::{Metadata, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

pub use config::{Advice, MapConfig, MapMode, SyncMode};
pub use direct::{DirectFile, DEFAULT_DIRECT_ALIGNMENT};
pub use file::MappedFile;
pub use flusher::FlusherStatus;
pub use shm::SharedMemory;
pub use view::MappedView;

use crate::sync::Arc;
use flusher::Flusher;
use rustix::fs::{self as rfs, Mode, OFlags};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;

/// A directory whose files are opened as memory-mapped [`MappedFile`]s.
///
/// Cloning is cheap and shares the root, the configuration and the periodic flusher.
#[derive(Debug, Clone)]
pub struct MmapFs {
    inner: Arc<FsInner>,
}

#[derive(Debug)]
struct FsInner {
    /// A directory descriptor of the root; every path is resolved against it (`path/`).
    root: path::Root,
    config: MapConfig,
    /// Present with `SyncMode::Periodic` in a mode that writes.
    flusher: Option<Arc<Flusher>>,
}

impl MmapFs {
    /// A file layer over the existing directory `root`. Fails if `root` is missing or not a
    /// directory, or if the configuration cannot work.
    pub fn new(root: impl AsRef<Path>, config: MapConfig) -> io::Result<MmapFs> {
        config.validate()?;
        let root = path::Root::open(root.as_ref())?;
        let flusher = match (config.sync, config.mode) {
            (SyncMode::Periodic(d), MapMode::ReadWrite) => Some(Flusher::start(d)?),
            _ => None,
        };
        Ok(MmapFs {
            inner: Arc::new(FsInner {
                root,
                config,
                flusher,
            }),
        })
    }

    /// The root directory: the canonical path it had when this `MmapFs` was made. Paths are
    /// resolved against a descriptor of that directory, so they stay under it even if it is
    /// renamed later.
    pub fn root(&self) -> &Path {
        self.inner.root.path()
    }

    /// The configuration every file is opened with.
    pub fn config(&self) -> &MapConfig {
        &self.inner.config
    }

    /// The periodic flusher's status (`None` unless `SyncMode::Periodic` with `ReadWrite`).
    pub fn flusher(&self) -> Option<FlusherStatus> {
        self.inner.flusher.as_ref().map(|f| f.status())
    }

    /// Opens an existing file (for writing too if the mode is `ReadWrite`).
    pub fn open(&self, path: impl AsRef<Path>) -> io::Result<MappedFile> {
        let write = self.inner.config.mode == MapMode::ReadWrite;
        self.open_with(path, OpenOptions::new().read(true).write(write))
    }

    /// Creates a file, or truncates an existing one, and opens it read-write.
    pub fn create(&self, path: impl AsRef<Path>) -> io::Result<MappedFile> {
        self.open_with(
            path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true),
        )
    }

    /// Opens with the given options (which must include `read(true)`: a mapping reads). If they
    /// do not include write access, the handle is read-only whatever the mode.
    pub fn open_with(
        &self,
        path: impl AsRef<Path>,
        options: &OpenOptions,
    ) -> io::Result<MappedFile> {
        let rel = path.as_ref();
        let mut spec = path::OpenSpec::from_std(options)?;
        // The truncation is the registry's to make (other handles must see it), not the kernel's.
        let truncate = spec.flags.contains(OFlags::TRUNC);
        spec.flags.remove(OFlags::TRUNC);
        let file = self.inner.root.open_file(rel, &spec)?;
        MappedFile::from_file(
            file,
            self.inner.root.path().join(rel),
            &self.inner.config,
            self.inner.flusher.as_ref(),
            truncate,
        )
    }

    /// Opens an existing file under the root for direct I/O (`O_DIRECT`, see [`DirectFile`]):
    /// for writing too if the mode is `ReadWrite`. The root jail applies as for
    /// [`open`](Self::open); the configuration's sync policy and hints do not (direct I/O has no
    /// mapping and no page cache to sync).
    pub fn open_direct(&self, path: impl AsRef<Path>) -> io::Result<DirectFile> {
        let write = self.inner.config.mode == MapMode::ReadWrite;
        self.open_direct_with(path, OpenOptions::new().read(true).write(write))
    }

    /// Opens a file under the root for direct I/O with the given options (`create`, `truncate`,
    /// write access; `append` is refused).
    pub fn open_direct_with(
        &self,
        path: impl AsRef<Path>,
        options: &OpenOptions,
    ) -> io::Result<DirectFile> {
        let rel = path.as_ref();
        let mut spec = path::OpenSpec::from_std(options)?;
        // As for mapped files: the registry makes the cut, so mapped handles see it.
        let truncate = spec.flags.contains(OFlags::TRUNC);
        spec.flags.remove(OFlags::TRUNC);
        let file = self.inner.root.open_file(rel, &spec)?;
        DirectFile::from_file_registered(file, self.inner.root.path().join(rel), truncate)
    }

    /// `std::fs::metadata` of a path under the root (symlinks followed, all under the root).
    pub fn metadata(&self, path: impl AsRef<Path>) -> io::Result<Metadata> {
        let fd = self
            .inner
            .root
            .resolve(path.as_ref(), OFlags::PATH, Mode::empty())?;
        std::fs::File::from(fd).metadata()
    }

    /// Removes a file under the root (a symlink itself, not its target). Open handles keep
    /// their mapping; the file is gone when they close.
    pub fn remove_file(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let rel = path.as_ref();
        let (dir, name) = self.inner.root.parent(rel)?;
        rfs::unlinkat(&dir, name.as_os_str(), rfs::AtFlags::empty()).map_err(|e| self.err(e, rel))
    }

    /// Renames within the root (a symlink itself, not its target). Open handles follow the file
    /// (the registry keys on device and inode, not on the path).
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        let (from_dir, from_name) = self.inner.root.parent(from)?;
        let (to_dir, to_name) = self.inner.root.parent(to)?;
        rfs::renameat(
            &from_dir,
            from_name.as_os_str(),
            &to_dir,
            to_name.as_os_str(),
        )
        .map_err(|e| self.err(e, from))
    }

    /// Creates a directory and its missing parents under the root.
    pub fn create_dir_all(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.inner.root.create_dir_all(path.as_ref())
    }

    /// Lists a directory under the root (`"."` for the root itself). Like `std::fs::read_dir`,
    /// `.` and `..` are not listed and the order is the directory's own.
    pub fn read_dir(&self, path: impl AsRef<Path>) -> io::Result<ReadDir> {
        let rel = path.as_ref();
        let fd = self.inner.root.resolve(
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        let dir = rfs::Dir::read_from(&fd).map_err(|e| self.err(e, rel))?;
        Ok(ReadDir {
            dir,
            fd: std::sync::Arc::new(fd),
            rel: rel.to_path_buf(),
        })
    }

    fn err(&self, e: rustix::io::Errno, rel: &Path) -> io::Error {
        let e = io::Error::from(e);
        io::Error::new(
            e.kind(),
            format!("{}: {e}", self.inner.root.path().join(rel).display()),
        )
    }
}

/// The entries of a directory under an [`MmapFs`] root ([`MmapFs::read_dir`]).
pub struct ReadDir {
    dir: rfs::Dir,
    /// The directory, for the entries' `metadata` (`statx` relative to it, never by path).
    fd: std::sync::Arc<std::os::fd::OwnedFd>,
    rel: PathBuf,
}

impl std::fmt::Debug for ReadDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadDir").field("path", &self.rel).finish()
    }
}

impl Iterator for ReadDir {
    type Item = io::Result<DirEntry>;

    fn next(&mut self) -> Option<io::Result<DirEntry>> {
        loop {
            let e = match self.dir.read()? {
                Ok(e) => e,
                Err(e) => return Some(Err(e.into())),
            };
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            return Some(Ok(DirEntry {
                name: OsString::from_vec(name.to_vec()),
                dir: std::sync::Arc::clone(&self.fd),
                rel: self.rel.clone(),
            }));
        }
    }
}

/// One entry of a [`ReadDir`].
#[derive(Debug)]
pub struct DirEntry {
    name: OsString,
    dir: std::sync::Arc<std::os::fd::OwnedFd>,
    rel: PathBuf,
}

impl DirEntry {
    /// The entry's name.
    pub fn file_name(&self) -> OsString {
        self.name.clone()
    }

    /// The entry's path relative to the root, as `MmapFs`'s methods take it.
    pub fn path(&self) -> PathBuf {
        self.rel.join(&self.name)
    }

    /// The entry's metadata, not following a symlink (like `std::fs::DirEntry::metadata`).
    pub fn metadata(&self) -> io::Result<Metadata> {
        let fd = rfs::openat(
            self.dir.as_fd(),
            self.name.as_os_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        std::fs::File::from(fd).metadata()
    }

    /// The entry's file type, not following a symlink.
    pub fn file_type(&self) -> io::Result<std::fs::FileType> {
        Ok(self.metadata()?.file_type())
    }
}
