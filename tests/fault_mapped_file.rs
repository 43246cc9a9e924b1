//! The fault guard under `segpool::fs::MappedFile`: a file truncated by someone else makes
//! `read_at`, `with_view`, `Read::read` and `write_at` into the lost range return an `io::Error`
//! wrapping a `segpool::Error` of kind `Faulted`; the other handles of that file fail fast; other files work;
//! the file works again once restored and reopened.

mod fault_support;

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

use fault_support::*;
use segpool::fs::{MapConfig, MapMode, MappedFile, MmapFs};
use segpool::{Error, ErrorKind};

const PAGE: usize = 4096;
const LEN: usize = 8 * PAGE;

fn read_write_fs(root: &Path) -> MmapFs {
    MmapFs::new(root, MapConfig::default().mode(MapMode::ReadWrite)).unwrap()
}

/// Creates `name` under `fs` with file `id`'s pattern, through the mapped-file layer.
fn create(fs: &MmapFs, name: &str, id: u64) -> MappedFile {
    let f = fs.create(name).unwrap();
    f.write_all_at(&pattern_bytes(id, 0, LEN), 0).unwrap();
    f
}

/// Asserts `r` is the fault error of the file at `path`, as an `io::Error` wrapping ours.
fn assert_io_faulted<T: std::fmt::Debug>(r: std::io::Result<T>, path: &Path) {
    let e = r.expect_err("expected the fault error");
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
        .map(Error::kind)
    {
        Some(ErrorKind::Faulted {
            path: Some(p),
            addr,
        }) => {
            assert_eq!(p.file_name(), path.file_name());
            assert_ne!(*addr, 0);
        }
        other => panic!("expected an io::Error wrapping ErrorKind::Faulted, got {e:?} ({other:?})"),
    }
}

/// One access kind into the lost range of a freshly truncated file: it must be caught by the
/// signal handler (the fault count goes from 0 to 1), not refused by the fail-fast check.
fn caught_by_the_handler(
    kind: &str,
    id: u64,
    access: impl FnOnce(&MappedFile) -> std::io::Result<()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let fs = read_write_fs(dir.path());
    let f = create(&fs, kind, id);
    let path = dir.path().join(kind);
    truncate_elsewhere(&path, PAGE as u64);
    assert_eq!(f.fault_state().fault_count(), 0);
    assert_io_faulted(access(&f), &path);
    assert_eq!(
        f.fault_state().fault_count(),
        1,
        "{kind}: the fault was not caught by the handler"
    );
    drop(f);
}

#[test]
fn read_at_into_truncated_range_is_a_fault_error() {
    caught_by_the_handler("read_at", 1, |f| {
        let mut buf = [0u8; 64];
        f.read_at(&mut buf, 5 * PAGE as u64).map(drop)
    });
}

#[test]
fn with_view_on_truncated_range_is_a_fault_error() {
    caught_by_the_handler("with_view", 2, |f| {
        f.with_view(4 * PAGE as u64, 128, |v| {
            v.to_vec().iter().map(|&x| x as u64).sum::<u64>()
        })
        .map(drop)
    });
}

#[test]
fn read_trait_on_truncated_range_is_a_fault_error() {
    caught_by_the_handler("read", 3, |mut f| {
        f.seek(SeekFrom::Start(6 * PAGE as u64))?;
        let mut buf = [0u8; 100];
        f.read(&mut buf).map(drop)
    });
}

#[test]
fn write_at_into_truncated_range_is_a_fault_error() {
    caught_by_the_handler("write_at", 4, |f| {
        f.write_at(b"lost", 3 * PAGE as u64).map(drop)
    });
}

#[test]
fn other_handles_fail_fast_other_files_work_reopen_works() {
    let dir = tempfile::tempdir().unwrap();
    let fs = read_write_fs(dir.path());
    let f = create(&fs, "poisoned", 5);
    let g = fs.open("poisoned").unwrap();
    let other = create(&fs, "healthy", 6);
    let path = dir.path().join("poisoned");
    assert!(segpool::fault::handler_installed());

    truncate_elsewhere(&path, 2 * PAGE as u64);
    let mut buf = [0u8; 64];
    assert_io_faulted(f.read_at(&mut buf, 7 * PAGE as u64), &path);
    let faults = f.fault_state().fault_count();

    // Every handle of the file refuses at once, even for bytes that are still in the file, and
    // nothing touches the mapping (no new fault).
    assert_io_faulted(g.read_at(&mut buf, 0), &path);
    assert_io_faulted(g.with_view(0, 8, |b| b.to_vec()), &path);
    assert_io_faulted(g.write_at(b"x", 0), &path);
    assert_io_faulted((&g).read(&mut buf), &path);
    assert_io_faulted(f.read_at(&mut buf, 0), &path);
    assert_eq!(g.fault_state().fault_count(), faults);

    // Another file is unaffected.
    other.read_exact_at(&mut buf, 7 * PAGE as u64).unwrap();
    assert_eq!(buf.to_vec(), pattern_bytes(6, 7 * PAGE as u64, 64));
    other.write_all_at(b"fine", 0).unwrap();
    assert!(!other.fault_state().is_faulted());

    // Close every handle (closing a poisoned file reports the fault), restore, reopen.
    let _ = f.close();
    let _ = g.close();
    restore_elsewhere(&path, 5, 2 * PAGE as u64, LEN as u64);
    let h = fs.open("poisoned").unwrap();
    assert!(
        !h.fault_state().is_faulted(),
        "a reopened file starts healthy"
    );
    h.read_exact_at(&mut buf, 7 * PAGE as u64).unwrap();
    assert_eq!(buf.to_vec(), pattern_bytes(5, 7 * PAGE as u64, 64));
    h.write_all_at(b"works again", 3 * PAGE as u64).unwrap();
}
