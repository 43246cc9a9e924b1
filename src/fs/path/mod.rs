//! Paths under an `MmapFs` root: every path is resolved against a directory descriptor of the
//! root, by the kernel, in one step, so no path can leave the root even while its components are
//! swapped for symlinks (no check-then-use race).
//!
//! Resolution is `openat2(root_fd, path, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: every
//! component, `..` and the targets of symlinks included, must stay under the root; a component
//! that would leave it (an absolute path, an absolute symlink, a `..` above the root, a relative
//! symlink pointing outside) fails the whole call with `EXDEV`. Kernels without `openat2`
//! (before 5.6, or a sandbox that filters it) get the same rules from a walk in user space: one
//! component at a time with `openat(O_NOFOLLOW)` from the descriptor of the previous one,
//! symlinks read with `readlinkat` and expanded in place, `..` popping the stack of descriptors
//! walked through.
//!
//! Everything else acts on a descriptor obtained that way: files are opened (created, truncated)
//! by the resolving call itself; `remove_file`, `rename` and `create_dir_all` resolve the parent
//! directory and call `unlinkat`, `renameat`, `mkdirat` on its descriptor with the last name;
//! `metadata` is `statx` of the resolved descriptor; `read_dir` reads an opened directory
//! descriptor.
//!
//! Limit (documented in `docs/files.md`): a directory that another process moves out of the
//! root while a call walks through it is outside from then on; moving it there needs write access
//! outside the root, which is beyond what the jail defends against.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

mod walk;

use walk::walk;

/// Symlinks expanded in one resolution before it fails with `ELOOP` (the kernel's own limit).
pub(super) const MAX_SYMLINKS: usize = 40;

/// `openat2` retries after `EAGAIN` (a concurrent rename made the kernel unsure a `..` stayed
/// beneath the root) before the call fails.
const MAX_RETRIES: usize = 64;

fn escapes(root: &Path, rel: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "path {} escapes the root {} ({why})",
            rel.display(),
            root.display()
        ),
    )
}

fn with_path(e: impl Into<io::Error>, root: &Path, rel: &Path) -> io::Error {
    let e = e.into();
    io::Error::new(e.kind(), format!("{}: {e}", root.join(rel).display()))
}

/// The open flags std's `OpenOptions` would pass to `open(2)`: std offers no getters, so they are
/// read from its `Debug` form (field by field, by name). A form this code cannot read is an
/// `Unsupported` error, never a guess; a unit test pins the reading for every combination.
pub(crate) struct OpenSpec {
    pub(crate) flags: OFlags,
    pub(crate) mode: Mode,
}

impl OpenSpec {
    pub(crate) fn from_std(options: &OpenOptions) -> io::Result<OpenSpec> {
        let text = format!("{options:?}");
        let field = |name: &str| -> io::Result<&str> {
            let key = format!(" {name}: ");
            let at = text.find(&key).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("cannot read the open options {text} (no field `{name}`)"),
                )
            })?;
            let rest = &text[at + key.len()..];
            let end = rest.find([',', ' ', '}']).unwrap_or(rest.len());
            Ok(&rest[..end])
        };
        let flag = |name: &str| -> io::Result<bool> {
            match field(name)? {
                "true" => Ok(true),
                "false" => Ok(false),
                v => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("cannot read the open options {text} (`{name}: {v}`)"),
                )),
            }
        };
        // Decimal, or `0o`/`0x` prefixed (std prints `mode` in octal), possibly negative.
        let number = |name: &str| -> io::Result<i64> {
            let v = field(name)?;
            let (neg, v) = v.strip_prefix('-').map_or((false, v), |v| (true, v));
            let parsed = if let Some(o) = v.strip_prefix("0o") {
                i64::from_str_radix(o, 8)
            } else if let Some(x) = v.strip_prefix("0x") {
                i64::from_str_radix(x, 16)
            } else {
                v.parse()
            };
            parsed.map(|n| if neg { -n } else { n }).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("cannot read the open options {text} (`{name}`)"),
                )
            })
        };
        let (read, write, append) = (flag("read")?, flag("write")?, flag("append")?);
        let (truncate, create, create_new) =
            (flag("truncate")?, flag("create")?, flag("create_new")?);
        let custom = number("custom_flags")?;
        let mode = number("mode")?;
        let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_string());
        // The same rules and flags as std's `open` on Unix.
        let mut flags = match (read, write, append) {
            (true, false, false) => OFlags::RDONLY,
            (false, true, false) => OFlags::WRONLY,
            (true, true, false) => OFlags::RDWR,
            (false, _, true) => OFlags::WRONLY | OFlags::APPEND,
            (true, _, true) => OFlags::RDWR | OFlags::APPEND,
            (false, false, false) => {
                return Err(invalid(
                    "open options with neither read, write nor append access",
                ))
            }
        };
        if !write && !append && (truncate || create || create_new) {
            return Err(invalid(
                "open options that create or truncate need write or append access",
            ));
        }
        if append && truncate && !create_new {
            return Err(invalid("open options with both append and truncate"));
        }
        flags |= match (create, truncate, create_new) {
            (false, false, false) => OFlags::empty(),
            (true, false, false) => OFlags::CREATE,
            (false, true, false) => OFlags::TRUNC,
            (true, true, false) => OFlags::CREATE | OFlags::TRUNC,
            (_, _, true) => OFlags::CREATE | OFlags::EXCL,
        };
        let custom = custom as i32 as u32;
        // The caller's own flags, minus the access mode (std does the same) and minus what would
        // change how the path is resolved or what kind of descriptor results.
        let custom = OFlags::from_bits_retain(custom)
            - (OFlags::ACCMODE
                | OFlags::PATH
                | OFlags::DIRECTORY
                | OFlags::TMPFILE
                | OFlags::CREATE
                | OFlags::EXCL
                | OFlags::TRUNC);
        Ok(OpenSpec {
            flags: flags | custom,
            mode: Mode::from_raw_mode((mode as u32) & 0o7777),
        })
    }
}

/// Which resolver this kernel has: 0 unknown, 1 `openat2`, 2 the user-space walk.
static RESOLVER: AtomicU8 = AtomicU8::new(0);

/// The root of an `MmapFs`: a directory descriptor (`O_PATH`) opened once, and the canonical path
/// it had then (for messages and `MmapFs::root`).
///
/// Invariant: `fd` refers to a directory; every path of the layer is resolved against it.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Opens `given` as a root. Missing: `NotFound`; not a directory: `InvalidInput`.
    pub(crate) fn open(given: &Path) -> io::Result<Root> {
        let fd = match rfs::open(
            given,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOTDIR) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("root {} is not a directory", given.display()),
                ))
            }
            Err(e) => {
                let e = io::Error::from(e);
                return Err(io::Error::new(
                    e.kind(),
                    format!("root {}: {e}", given.display()),
                ));
            }
        };
        // The path is informational (messages, `MmapFs::root`): resolution uses the descriptor.
        let path = crate::os::file::real_path(&fd).or_else(|_| std::fs::canonicalize(given))?;
        Ok(Root { fd, path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the shape of `rel`: not empty, not absolute.
    fn check(&self, rel: &Path) -> io::Result<()> {
        if rel.as_os_str().is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("empty path {rel:?}"),
            ));
        }
        if rel.has_root() {
            return Err(escapes(&self.path, rel, "absolute paths are not allowed"));
        }
        Ok(())
    }

    /// Opens `rel` (symlinks followed, all under the root) with `flags` (plus `O_CLOEXEC` and
    /// `O_NOCTTY`) and, with `O_CREAT`, `mode`.
    pub(crate) fn resolve(&self, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        self.check(rel)?;
        // `openat2` refuses `O_PATH` with anything but `O_DIRECTORY`, `O_NOFOLLOW`, `O_CLOEXEC`.
        let flags = if flags.contains(OFlags::PATH) {
            flags | OFlags::CLOEXEC
        } else {
            flags | OFlags::CLOEXEC | OFlags::NOCTTY
        };
        // `openat2` refuses a mode without `O_CREAT` (`open` ignores it).
        let mode = if flags.intersects(OFlags::CREATE | OFlags::TMPFILE) {
            mode
        } else {
            Mode::empty()
        };
        let r = match RESOLVER.load(Ordering::Relaxed) {
            2 => walk(self.fd.as_fd(), rel, flags, mode),
            known => match beneath(self.fd.as_fd(), rel, flags, mode) {
                Err(Errno::NOSYS) if known == 0 => {
                    RESOLVER.store(2, Ordering::Relaxed);
                    walk(self.fd.as_fd(), rel, flags, mode)
                }
                r => {
                    if known == 0 && r.is_ok() {
                        RESOLVER.store(1, Ordering::Relaxed);
                    }
                    r
                }
            },
        };
        r.map_err(|e| match e {
            Errno::XDEV => escapes(
                &self.path,
                rel,
                "it leaves the root through `..`, an absolute symlink or a symlink pointing outside",
            ),
            e => with_path(e, &self.path, rel),
        })
    }

    /// A directory descriptor (`O_PATH`) of `rel`.
    pub(crate) fn dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.resolve(rel, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
    }

    /// The parent directory of `rel` (resolved) and `rel`'s last name, for the calls that act on
    /// a name itself rather than on what it points to (`unlinkat`, `renameat`).
    pub(crate) fn parent(&self, rel: &Path) -> io::Result<(OwnedFd, OsString)> {
        self.check(rel)?;
        let name = match rel.components().next_back() {
            Some(Component::Normal(n)) => n.to_os_string(),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("path {} does not end in a name", rel.display()),
                ))
            }
        };
        let parent = match rel.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Ok((self.dir(parent)?, name))
    }

    /// Opens a regular file with `spec`, refusing anything else (a FIFO, socket, device or
    /// directory) without blocking: the open is `O_NONBLOCK`, cleared once `fstat` said regular.
    pub(crate) fn open_file(&self, rel: &Path, spec: &OpenSpec) -> io::Result<std::fs::File> {
        let nonblock = spec.flags.contains(OFlags::NONBLOCK);
        let fd = self.resolve(rel, spec.flags | OFlags::NONBLOCK, spec.mode)?;
        let st = rfs::fstat(&fd).map_err(|e| with_path(e, &self.path, rel))?;
        let kind = rfs::FileType::from_raw_mode(st.st_mode);
        if kind != rfs::FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a regular file (a {})",
                    self.path.join(rel).display(),
                    kind_name(kind)
                ),
            ));
        }
        if !nonblock {
            let fl = rfs::fcntl_getfl(&fd)?;
            rfs::fcntl_setfl(&fd, fl - OFlags::NONBLOCK)?;
        }
        Ok(std::fs::File::from(fd))
    }

    /// `mkdir -p` under the root: each missing component is made with `mkdirat` in the
    /// descriptor of its resolved parent.
    pub(crate) fn create_dir_all(&self, rel: &Path) -> io::Result<()> {
        self.check(rel)?;
        let mut prefix = PathBuf::new();
        for c in rel.components() {
            let name = c.as_os_str();
            let parent = if prefix.as_os_str().is_empty() {
                Path::new(".")
            } else {
                prefix.as_path()
            };
            if let Component::Normal(_) = c {
                let dir = self.dir(parent)?;
                match rfs::mkdirat(&dir, name, Mode::from_raw_mode(0o777)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(with_path(e, &self.path, &prefix.join(name))),
                }
            }
            prefix.push(name);
        }
        // The whole path must now be a directory under the root (an existing file or a symlink
        // pointing outside on the way fails here).
        self.dir(rel).map(drop)
    }
}

fn kind_name(kind: rfs::FileType) -> &'static str {
    match kind {
        rfs::FileType::Directory => "directory",
        rfs::FileType::Fifo => "FIFO",
        rfs::FileType::Socket => "socket",
        rfs::FileType::CharacterDevice => "character device",
        rfs::FileType::BlockDevice => "block device",
        rfs::FileType::Symlink => "symlink",
        _ => "file of unknown type",
    }
}

/// One `openat2` resolution, retried while a concurrent rename makes the kernel answer `EAGAIN`.
fn beneath(root: BorrowedFd<'_>, rel: &Path, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let mut tries = 0;
    loop {
        match rfs::openat2(root, rel, flags, mode, how) {
            Err(Errno::AGAIN | Errno::INTR) if tries < MAX_RETRIES => tries += 1,
            r => return r,
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn spec(o: &OpenOptions) -> io::Result<OFlags> {
        OpenSpec::from_std(o).map(|s| s.flags)
    }

    #[test]
    fn open_options_are_read_for_every_combination() {
        use std::os::unix::fs::OpenOptionsExt;
        for bits in 0u32..64 {
            let b = |i: u32| bits & (1 << i) != 0;
            let mut o = OpenOptions::new();
            o.read(b(0))
                .write(b(1))
                .append(b(2))
                .truncate(b(3))
                .create(b(4))
                .create_new(b(5));
            // What std itself does with these options: open a scratch file and compare the
            // outcome kinds (invalid or not) and the access flags.
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("f");
            std::fs::write(&p, b"x").unwrap();
            let ours = spec(&o);
            let theirs = o.open(&p);
            match (&ours, &theirs) {
                (Err(a), Err(b)) if b.kind() == io::ErrorKind::InvalidInput => {
                    assert_eq!(a.kind(), io::ErrorKind::InvalidInput, "{o:?}")
                }
                (Ok(f), Ok(file)) => {
                    let fl = rfs::fcntl_getfl(file).unwrap();
                    assert_eq!(fl & OFlags::ACCMODE, *f & OFlags::ACCMODE, "{o:?}");
                    assert_eq!(
                        fl.contains(OFlags::APPEND),
                        f.contains(OFlags::APPEND),
                        "{o:?}"
                    );
                    assert_eq!(f.contains(OFlags::CREATE), b(4) || b(5), "{o:?}");
                    assert_eq!(f.contains(OFlags::EXCL), b(5), "{o:?}");
                    assert_eq!(f.contains(OFlags::TRUNC), b(3) && !b(5), "{o:?}");
                }
                // create_new on an existing file: std's error, our flags have EXCL.
                (Ok(f), Err(e)) if e.kind() == io::ErrorKind::AlreadyExists => {
                    assert!(f.contains(OFlags::EXCL), "{o:?}")
                }
                _ => panic!("{o:?}: ours {ours:?}, std {theirs:?}"),
            }
        }
        let mut o = OpenOptions::new();
        o.read(true).mode(0o640).custom_flags(libc::O_NOATIME);
        let s = OpenSpec::from_std(&o).unwrap();
        assert_eq!(s.mode, Mode::from_raw_mode(0o640));
        assert!(s.flags.contains(OFlags::NOATIME));
        o.custom_flags(libc::O_PATH | libc::O_DIRECTORY);
        let s = OpenSpec::from_std(&o).unwrap();
        assert!(!s.flags.intersects(OFlags::PATH | OFlags::DIRECTORY));
    }
}
