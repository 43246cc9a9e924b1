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
//! let fs = MmapFs::new("/var/lib/app", MapConfig {
//!     mode: MapMode::ReadWrite,
//!     sync: SyncMode::OnClose,
//!     ..MapConfig::default()
//! })?;
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
mod file;
mod flusher;
pub(crate) mod gate;
mod path;
mod region;
mod registry;
mod shm;
mod whole;
mod window;

use std::fs::{File, Metadata, OpenOptions, ReadDir};
use std::io;
use std::path::{Path, PathBuf};

pub use config::{Advice, MapConfig, MapMode, SyncMode};
pub use direct::{DirectFile, DEFAULT_DIRECT_ALIGNMENT};
pub use file::MappedFile;
pub use flusher::FlusherStatus;
pub use shm::SharedMemory;

use crate::sync::Arc;
use flusher::Flusher;

/// How many reader slots the access gates have registered: one per live thread that accessed a
/// mapped file (tests: a slot leaves the registry when its thread exits).
#[doc(hidden)]
#[cfg(not(any(loom, shuttle)))]
pub fn reader_slots() -> usize {
    gate::reader_slots()
}

/// Whether the access gates use `membarrier(2)`, so a fast-path access has no hardware fence
/// (false on kernels or sandboxes without it: full fences then). Benchmarks and tests.
#[doc(hidden)]
#[cfg(not(any(loom, shuttle)))]
pub fn gate_uses_membarrier() -> bool {
    gate::uses_membarrier()
}

/// Makes the access gates use full fences instead of `membarrier(2)`, as on a kernel or sandbox
/// without it, provided no mapped file was accessed yet in the process (the form is chosen once);
/// returns whether the gates use fences. For tests of that form.
#[doc(hidden)]
#[cfg(not(any(loom, shuttle)))]
pub fn gates_without_membarrier() -> bool {
    gate::choose_fences()
}

/// A directory whose files are opened as memory-mapped [`MappedFile`]s.
///
/// Cloning is cheap and shares the root, the configuration and the periodic flusher.
#[derive(Debug, Clone)]
pub struct MmapFs {
    inner: Arc<FsInner>,
}

#[derive(Debug)]
struct FsInner {
    /// Canonical (symlinks resolved), so containment checks compare real paths.
    root: PathBuf,
    config: MapConfig,
    /// Present with `SyncMode::Periodic` in a mode that writes.
    flusher: Option<Arc<Flusher>>,
}

impl MmapFs {
    /// A file layer over the existing directory `root`. Fails if `root` is missing or not a
    /// directory, or if the configuration cannot work.
    pub fn new(root: impl AsRef<Path>, config: MapConfig) -> io::Result<MmapFs> {
        config.validate()?;
        let given = root.as_ref();
        let root = std::fs::canonicalize(given)
            .map_err(|e| io::Error::new(e.kind(), format!("root {}: {e}", given.display())))?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("root {} is not a directory", given.display()),
            ));
        }
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

    /// The root directory (canonical).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The configuration every file is opened with.
    pub fn config(&self) -> &MapConfig {
        &self.inner.config
    }

    /// The periodic flusher's status (`None` unless `SyncMode::Periodic` with `ReadWrite`).
    pub fn flusher(&self) -> Option<FlusherStatus> {
        self.inner.flusher.as_ref().map(|f| f.status())
    }

    fn resolve(&self, path: &Path, follow_final: bool) -> io::Result<PathBuf> {
        path::resolve(&self.inner.root, path, follow_final)
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
        let full = self.resolve(rel, true)?;
        let file = options
            .open(&full)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", full.display())))?;
        path::check_opened(&self.inner.root, rel, &file)?;
        MappedFile::from_file(file, full, &self.inner.config, self.inner.flusher.as_ref())
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
        let (file, full) = self.open_under_root(path.as_ref(), options)?;
        DirectFile::from_file(file, full)
    }

    /// Opens `rel` under the root: the path is resolved and the opened descriptor checked to
    /// lie under the root (see `path.rs`).
    fn open_under_root(&self, rel: &Path, options: &OpenOptions) -> io::Result<(File, PathBuf)> {
        let full = self.resolve(rel, true)?;
        let file = options
            .open(&full)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", full.display())))?;
        path::check_opened(&self.inner.root, rel, &file)?;
        Ok((file, full))
    }

    /// `std::fs::metadata` of a path under the root.
    pub fn metadata(&self, path: impl AsRef<Path>) -> io::Result<Metadata> {
        std::fs::metadata(self.resolve(path.as_ref(), true)?)
    }

    /// Removes a file under the root (a symlink itself, not its target). Open handles keep
    /// their mapping; the file is gone when they close.
    pub fn remove_file(&self, path: impl AsRef<Path>) -> io::Result<()> {
        std::fs::remove_file(self.resolve(path.as_ref(), false)?)
    }

    /// Renames within the root. Open handles follow the file (the registry keys on device and
    /// inode, not on the path).
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
        std::fs::rename(
            self.resolve(from.as_ref(), false)?,
            self.resolve(to.as_ref(), false)?,
        )
    }

    /// Creates a directory and its missing parents under the root.
    pub fn create_dir_all(&self, path: impl AsRef<Path>) -> io::Result<()> {
        std::fs::create_dir_all(self.resolve(path.as_ref(), true)?)
    }

    /// Lists a directory under the root (`"."` for the root itself).
    pub fn read_dir(&self, path: impl AsRef<Path>) -> io::Result<ReadDir> {
        let p = path.as_ref();
        if p.components().all(|c| c == std::path::Component::CurDir) {
            return std::fs::read_dir(&self.inner.root);
        }
        std::fs::read_dir(self.resolve(p, true)?)
    }
}
