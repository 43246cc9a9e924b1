//! Paths under an `MmapFs` root: every path is relative to the root and may not leave it.
//!
//! Two checks, because one is not enough: before opening, the path is refused if it has `..`,
//! is absolute, or resolves (symlinks followed) outside the root; after opening, the kernel's
//! own name for the opened descriptor (`/proc/self/fd/N`) must lie under the root, which closes
//! the race where a directory is swapped for a symlink between the check and the open.

use std::io;
use std::path::{Component, Path, PathBuf};

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

/// Resolves `rel` under `root` (canonical). `follow_final`: whether the last component is
/// followed if it is a symlink (opening follows it; removing or renaming acts on the link).
pub(crate) fn resolve(root: &Path, rel: &Path, follow_final: bool) -> io::Result<PathBuf> {
    let mut clean = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => clean.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err(escapes(root, rel, "`..` is not allowed")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(escapes(root, rel, "absolute paths are not allowed"))
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("empty path {:?}", rel),
        ));
    }
    let full = root.join(&clean);
    let checked = match std::fs::symlink_metadata(&full) {
        Ok(md) if md.file_type().is_symlink() && follow_final => match std::fs::canonicalize(&full)
        {
            Ok(p) => p,
            Err(_) => {
                return Err(escapes(
                    root,
                    rel,
                    "a symlink whose target cannot be checked",
                ))
            }
        },
        Ok(_) if follow_final => std::fs::canonicalize(&full)?,
        _ => {
            // The last component need not exist (create) or is not followed: check the deepest
            // existing ancestor.
            let mut anc = full.parent();
            loop {
                match anc {
                    Some(a) if a.exists() => break std::fs::canonicalize(a)?,
                    Some(a) => anc = a.parent(),
                    None => break root.to_path_buf(),
                }
            }
        }
    };
    if !checked.starts_with(root) {
        return Err(escapes(root, rel, "it resolves outside through a symlink"));
    }
    Ok(full)
}

/// Refuses an opened descriptor whose real location is outside `root`.
pub(crate) fn check_opened(root: &Path, rel: &Path, file: &std::fs::File) -> io::Result<()> {
    let real = crate::os::file::real_path(file)?;
    if !real.starts_with(root) {
        return Err(escapes(root, rel, "it was opened outside the root"));
    }
    Ok(())
}
