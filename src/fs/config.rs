//! How files are mapped: the mode, the sync policy, windows and hints.

use std::time::Duration;

/// How a file's bytes are mapped into the process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MapMode {
    /// `PROT_READ`: reads only; every write, `set_len` or growth is
    /// [`PermissionDenied`](std::io::ErrorKind::PermissionDenied), never a signal.
    #[default]
    ReadOnly,
    /// `MAP_SHARED`, read and write: writes go to the page cache of the file, are seen by every
    /// other mapping and reader of it, and reach the disk according to the [`SyncMode`].
    ReadWrite,
    /// `MAP_PRIVATE`: writes are copied into private pages of this handle; they are never seen by
    /// other handles and never reach the file. The handle cannot change the file's length.
    CopyOnWrite,
}

/// When written bytes are made durable (written back to the disk).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// Every write syncs exactly the pages it wrote (`msync(MS_SYNC)`) before it returns.
    Immediate,
    /// One background thread per [`MmapFs`](super::MmapFs) syncs every dirty file at this
    /// interval (and the file is synced when it is closed).
    Periodic(Duration),
    /// The file is synced when it is closed or dropped.
    OnClose,
    /// Write-back is left to the kernel; only an explicit
    /// [`sync_all`](super::MappedFile::sync_all)/[`sync_range`](super::MappedFile::sync_range)
    /// syncs (and those always do).
    #[default]
    Never,
}

/// Access-pattern advice (`madvise`). Only advice that cannot change the bytes a reader sees is
/// here: `MADV_DONTNEED`, `MADV_FREE`, `MADV_REMOVE` and the like are deliberately absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Advice {
    /// `MADV_NORMAL`: "No special treatment. This is the default."
    #[default]
    Normal,
    /// `MADV_RANDOM`: "Expect page references in random order. (Hence, read ahead may be less
    /// useful than normally.)"
    Random,
    /// `MADV_SEQUENTIAL`: "Expect page references in sequential order. (Hence, pages in the given
    /// range can be aggressively read ahead, and may be freed soon after they are accessed.)"
    Sequential,
    /// `MADV_WILLNEED`: "Expect access in the near future. (Hence, it might be a good idea to
    /// read some pages ahead.)"
    WillNeed,
}

impl Advice {
    pub(crate) fn to_os(self) -> rustix::mm::Advice {
        match self {
            Advice::Normal => rustix::mm::Advice::Normal,
            Advice::Random => rustix::mm::Advice::Random,
            Advice::Sequential => rustix::mm::Advice::Sequential,
            Advice::WillNeed => rustix::mm::Advice::WillNeed,
        }
    }
}

/// Configuration of an [`MmapFs`](super::MmapFs): applies to every file it opens.
///
/// The default is a read-only, never-synced, unwindowed mapping without hints. Start from it and
/// change what differs with the setters, one per field; each says what its value means and its
/// default. The fields are public for reading (and can be assigned one by one); the struct is
/// `#[non_exhaustive]`, so options can be added without breaking code that builds one this way.
/// Values that cannot work are refused by [`MmapFs::new`](super::MmapFs::new), not by the setters.
///
/// ```
/// use segpool::fs::{MapConfig, MapMode, SyncMode};
/// let config = MapConfig::default()
///     .mode(MapMode::ReadWrite)
///     .sync(SyncMode::OnClose)
///     .window(Some(64 << 20));
/// assert_eq!(config.max_windows, 4);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MapConfig {
    /// How the bytes are mapped: see [`mode`](Self::mode()).
    pub mode: MapMode,
    /// When written bytes are made durable: see [`sync`](Self::sync()).
    pub sync: SyncMode,
    /// The window size in bytes, `None` for whole files: see [`window`](Self::window()).
    pub window: Option<u64>,
    /// How many windows a handle keeps mapped: see [`max_windows`](Self::max_windows()).
    pub max_windows: usize,
    /// Whether mapped pages are prefaulted: see [`populate`](Self::populate()).
    pub populate: bool,
    /// Advice applied to every mapping: see [`advice`](Self::advice()).
    pub advice: Advice,
    /// Whether transparent huge pages are asked for: see [`huge_pages`](Self::huge_pages()).
    pub huge_pages: bool,
    /// Whether mapped pages are locked in memory: see [`lock`](Self::lock()).
    pub lock: bool,
}

impl Default for MapConfig {
    fn default() -> Self {
        Self {
            mode: MapMode::ReadOnly,
            sync: SyncMode::Never,
            window: None,
            max_windows: 4,
            populate: false,
            advice: Advice::Normal,
            huge_pages: false,
            lock: false,
        }
    }
}

/// The setters: by value, so a configuration reads as one chain from `MapConfig::default()`.
impl MapConfig {
    /// How the bytes are mapped (see [`MapMode`]). Default [`MapMode::ReadOnly`].
    #[must_use]
    pub fn mode(mut self, mode: MapMode) -> Self {
        self.mode = mode;
        self
    }

    /// When written bytes are made durable (see [`SyncMode`]). Default [`SyncMode::Never`]; a
    /// [`SyncMode::Periodic`] interval of zero is refused.
    #[must_use]
    pub fn sync(mut self, sync: SyncMode) -> Self {
        self.sync = sync;
        self
    }

    /// `Some(w)`: map at most `w` bytes (rounded up to whole pages) of a file at a time, in
    /// windows aligned to multiples of `w`; at most [`max_windows`](Self::max_windows()) of them
    /// stay mapped per handle. `None`: the whole file is mapped. Default `None`.
    ///
    /// `Some(0)`, a window larger than the address space, and windows with
    /// [`MapMode::CopyOnWrite`] (an evicted window would lose its private writes) are refused.
    #[must_use]
    pub fn window(mut self, window: Option<u64>) -> Self {
        self.window = window;
        self
    }

    /// How many windows a handle keeps mapped (least recently used is unmapped first). Only
    /// used with a [`window`](Self::window()); then at least 1, and `max_windows` windows must
    /// fit in the address space. Default 4.
    #[must_use]
    pub fn max_windows(mut self, max_windows: usize) -> Self {
        self.max_windows = max_windows;
        self
    }

    /// Prefault the mapped pages (`MADV_POPULATE_READ`/`WRITE`, else `MAP_POPULATE`). Default
    /// `false`.
    #[must_use]
    pub fn populate(mut self, populate: bool) -> Self {
        self.populate = populate;
        self
    }

    /// Advice applied to every mapping (`madvise`, see [`Advice`]). Default [`Advice::Normal`].
    #[must_use]
    pub fn advice(mut self, advice: Advice) -> Self {
        self.advice = advice;
        self
    }

    /// Ask for transparent huge pages (`MADV_HUGEPAGE`); ignored where the filesystem has none.
    /// Default `false`.
    #[must_use]
    pub fn huge_pages(mut self, huge_pages: bool) -> Self {
        self.huge_pages = huge_pages;
        self
    }

    /// Lock mapped pages in memory (`mlock`); a refusal (`RLIMIT_MEMLOCK`) is an error that says
    /// the limit. Default `false`.
    #[must_use]
    pub fn lock(mut self, lock: bool) -> Self {
        self.lock = lock;
        self
    }
}

impl MapConfig {
    /// Checks values that cannot work; the error names the value.
    pub(crate) fn validate(&self) -> std::io::Result<()> {
        let bad = |m: String| Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, m));
        if self.window == Some(0) {
            return bad("window of 0 bytes: use None to map whole files".into());
        }
        if let Some(w) = self.window {
            if w > isize::MAX as u64 / 2 {
                return bad(format!(
                    "window of {w} bytes is larger than the address space"
                ));
            }
        }
        if self.window.is_some() && self.max_windows == 0 {
            return bad("max_windows is 0: at least one window must stay mapped".into());
        }
        if let Some(w) = self.window {
            // Windows are mapped on demand, but a bound that could never be reached is a mistake.
            if (self.max_windows as u128) * (w as u128) > isize::MAX as u128 / 2 {
                return bad(format!(
                    "max_windows of {} windows of {w} bytes is larger than the address space",
                    self.max_windows
                ));
            }
        }
        if self.window.is_some() && self.mode == MapMode::CopyOnWrite {
            return bad(
                "CopyOnWrite with windows: an evicted window would lose its private writes".into(),
            );
        }
        if let SyncMode::Periodic(d) = self.sync {
            if d.is_zero() {
                return bad("SyncMode::Periodic with a zero interval".into());
            }
        }
        Ok(())
    }
}
