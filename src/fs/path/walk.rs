//! The walk without `openat2`: the same resolution beneath the root as `openat2`'s
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`, one component at a time in user space, for kernels
//! before 5.6 or sandboxes that filter `openat2`.

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;

use super::MAX_SYMLINKS;

/// The same resolution as `beneath`, in user space, for kernels without `openat2`.
///
/// Every directory is entered with `openat(O_PATH | O_NOFOLLOW)` from the descriptor of the
/// previous one and kept on a stack; `..` pops it (an empty stack means the root, and `..` there
/// is `EXDEV`, as with `RESOLVE_BENEATH`); a symlink's target (read from the descriptor of the
/// link itself) replaces it in the queue of components still to walk, and an absolute target is
/// `EXDEV`. The last component is opened with the caller's flags plus `O_NOFOLLOW`, so a symlink
/// there is never followed by the kernel.
pub(crate) fn walk(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    let mut todo: std::collections::VecDeque<OsString> = rel
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    fn top<'a>(stack: &'a [OwnedFd], root: BorrowedFd<'a>) -> BorrowedFd<'a> {
        stack.last().map(|f| f.as_fd()).unwrap_or(root)
    }
    let mut follow =
        |target: OsString, todo: &mut std::collections::VecDeque<OsString>| -> Result<(), Errno> {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Errno::LOOP);
            }
            let target = PathBuf::from(target);
            if target.has_root() {
                return Err(Errno::XDEV);
            }
            for c in target.components().rev() {
                todo.push_front(c.as_os_str().to_os_string());
            }
            Ok(())
        };
    while let Some(name) = todo.pop_front() {
        let last = todo.is_empty();
        if name == "." {
            if last {
                return rfs::openat(top(&stack, root), ".", flags, mode);
            }
            continue;
        }
        if name == ".." {
            if stack.pop().is_none() {
                return Err(Errno::XDEV);
            }
            if last {
                return rfs::openat(top(&stack, root), ".", flags, mode);
            }
            continue;
        }
        if last {
            let r = rfs::openat(
                top(&stack, root),
                name.as_os_str(),
                flags | OFlags::NOFOLLOW,
                mode,
            );
            let target = match r {
                // `O_PATH | O_NOFOLLOW` opens a symlink itself: follow it like any other.
                Ok(fd) if flags.contains(OFlags::PATH) => {
                    let st = rfs::fstat(&fd)?;
                    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::Symlink {
                        return Ok(fd);
                    }
                    rfs::readlinkat(&fd, "", Vec::new())?
                }
                Ok(fd) => return Ok(fd),
                // A symlink refused by `O_NOFOLLOW` (`ENOTDIR` instead of `ELOOP` when
                // `O_DIRECTORY` is asked for too): read it and follow it.
                Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                    match rfs::readlinkat(top(&stack, root), name.as_os_str(), Vec::new()) {
                        Ok(t) => t,
                        // Not a symlink (any more): the open's own answer stands.
                        Err(_) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            follow(OsString::from_vec(target.into_bytes()), &mut todo)?;
            continue;
        }
        let fd = rfs::openat(
            top(&stack, root),
            name.as_os_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rfs::fstat(&fd)?;
        match rfs::FileType::from_raw_mode(st.st_mode) {
            rfs::FileType::Directory => stack.push(fd),
            rfs::FileType::Symlink => {
                let target = rfs::readlinkat(&fd, "", Vec::new())?;
                follow(OsString::from_vec(target.into_bytes()), &mut todo)?;
            }
            _ => return Err(Errno::NOTDIR),
        }
    }
    // Only an empty path gets here (the caller refuses those).
    Err(Errno::INVAL)
}

#[cfg(test)]
mod tests {
    use super::super::{beneath, Root};
    use super::*;

    /// The user-space walk obeys the same rules as `openat2(RESOLVE_BENEATH)` (it runs only on
    /// kernels without `openat2`, so it is tested here directly, side by side with the kernel).
    #[test]
    fn the_walk_agrees_with_openat2() {
        let outer = tempfile::tempdir().unwrap();
        std::fs::write(outer.path().join("secret"), b"s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::write(r.join("a/b/f"), b"f").unwrap();
        let sl = |t: &Path, l: &str| std::os::unix::fs::symlink(t, r.join(l)).unwrap();
        sl(Path::new("a/b/f"), "rel");
        sl(Path::new("b/../b"), "a/up");
        sl(Path::new("../../secret"), "a/out");
        sl(&outer.path().join("secret"), "abs");
        sl(outer.path(), "absdir");
        sl(Path::new("loop1"), "loop2");
        sl(Path::new("loop2"), "loop1");
        sl(Path::new("a"), "adir");
        let root = Root::open(r).unwrap();
        if let Err(Errno::NOSYS) =
            beneath(root.fd.as_fd(), Path::new("."), OFlags::PATH, Mode::empty())
        {
            eprintln!("no openat2 on this kernel: nothing to compare the walk with");
            return;
        }
        let cases = [
            "a/b/f",
            "rel",
            "a/up/f",
            "adir/b/f",
            "adir/up/../b/f",
            "a/../a/b/f",
            "./a/./b/f",
            "a/out",
            "abs",
            "absdir/secret",
            "../x",
            "a/../../x",
            "loop1",
            "missing",
            "a/b/f/x",
            "a/b",
            "adir",
            "a/up",
            ".",
            "a/..",
        ];
        for p in cases {
            for flags in [
                OFlags::RDONLY,
                OFlags::PATH,
                OFlags::RDONLY | OFlags::DIRECTORY,
                OFlags::PATH | OFlags::DIRECTORY,
            ] {
                let flags = flags | OFlags::CLOEXEC;
                let k = beneath(root.fd.as_fd(), Path::new(p), flags, Mode::empty());
                let w = walk(root.fd.as_fd(), Path::new(p), flags, Mode::empty());
                match (&k, &w) {
                    (Ok(a), Ok(b)) => {
                        let (a, b) = (rfs::fstat(a).unwrap(), rfs::fstat(b).unwrap());
                        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino), "{p}");
                    }
                    (Err(a), Err(b)) => assert_eq!(a, b, "{p}"),
                    _ => panic!("{p}: openat2 {k:?}, walk {w:?}"),
                }
            }
        }
        // Creation through the walk happens inside only.
        let create = OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC;
        let m = Mode::from_raw_mode(0o600);
        assert!(walk(root.fd.as_fd(), Path::new("adir/new"), create, m).is_ok());
        assert!(r.join("a/new").exists());
        assert_eq!(
            walk(root.fd.as_fd(), Path::new("absdir/new"), create, m).unwrap_err(),
            Errno::XDEV
        );
        sl(&outer.path().join("made"), "dangling");
        assert_eq!(
            walk(root.fd.as_fd(), Path::new("dangling"), create, m).unwrap_err(),
            Errno::XDEV
        );
        assert!(!outer.path().join("made").exists());
        assert!(!outer.path().join("new").exists());
    }
}
