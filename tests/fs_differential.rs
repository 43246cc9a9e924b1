//! `MappedFile` against `std::fs::File`: the differences once found, each as a test, then random
//! operation sequences run on both and compared result by result and byte by byte.
//!
//! The random part runs `SEGPOOL_DIFF_CASES` sequences per configuration (a few hundred by
//! default); a failure prints the seed and the configuration, and `SEGPOOL_DIFF_SEED=<seed>`
//! reruns exactly that sequence. See docs/files.md ("Agreement with std::fs::File").

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use segpool::fs::{MapConfig, MapMode, MappedFile, MmapFs};
use segpool::Error;

mod common;
use common::{pattern, rw};

fn page() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) as u64
}

/// A plain descriptor on the same file, outside segpool (as another process would have).
fn outside(dir: &Path, name: &str) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(name))
        .unwrap()
}

fn is_faulted(e: &io::Error) -> bool {
    matches!(
        e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()),
        Some(Error::Faulted { .. })
    )
}

fn disk_len(dir: &Path, name: &str) -> u64 {
    std::fs::metadata(dir.join(name)).unwrap().len()
}

// ---- create / truncate while another handle is open --------------------------------------------

#[test]
fn create_over_an_open_file_cuts_it_for_every_handle() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let a = fs.create("f").unwrap();
    a.write_all_at(&pattern(3 * page() as usize + 100, 1), 0)
        .unwrap();
    let b = fs.create("f").unwrap();
    assert_eq!(disk_len(dir.path(), "f"), 0);
    assert_eq!(a.len(), 0, "the old handle sees the cut");
    assert_eq!(b.len(), 0);
    let mut buf = [7u8; 16];
    assert_eq!(a.read_at(&mut buf, 0).unwrap(), 0);
    assert_eq!(a.read_at(&mut buf, page()).unwrap(), 0);
    a.write_all_at(b"abc", 0).unwrap();
    assert_eq!(b.read_at(&mut buf, 0).unwrap(), 3);
    assert_eq!(&buf[..3], b"abc");
    b.write_all_at(b"z", 2 * page()).unwrap();
    assert_eq!(a.len(), 2 * page() + 1);
    assert_eq!(a.read_at(&mut buf, 2 * page()).unwrap(), 1);
    assert_eq!(buf[0], b'z');
    assert!(a.fault_state().check().is_ok());
}

#[test]
fn open_with_truncate_cuts_through_the_registry_and_keeps_stds_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let a = fs.create("f").unwrap();
    a.write_all_at(&pattern(10_000, 2), 0).unwrap();
    let b = fs
        .open_with(
            "f",
            OpenOptions::new().read(true).write(true).truncate(true),
        )
        .unwrap();
    assert_eq!((a.len(), b.len(), disk_len(dir.path(), "f")), (0, 0, 0));
    let mut buf = [0u8; 8];
    assert_eq!(a.read_at(&mut buf, 5000).unwrap(), 0);
    assert!(a.fault_state().check().is_ok());
    // std refuses truncation without write access, and with append: so do we, before any cut.
    a.write_all_at(b"keep", 0).unwrap();
    for opts in [
        OpenOptions::new().read(true).truncate(true).clone(),
        OpenOptions::new()
            .read(true)
            .append(true)
            .truncate(true)
            .clone(),
    ] {
        let std_err = opts.open(dir.path().join("f")).unwrap_err();
        let ours = fs.open_with("f", &opts).unwrap_err();
        assert_eq!(ours.kind(), std_err.kind(), "{opts:?}");
        assert_eq!(a.len(), 4);
    }
}

// ---- the real length after someone outside grew or cut the file --------------------------------

#[test]
fn set_len_below_a_length_grown_outside_cuts_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let a = fs.create("f").unwrap();
    a.write_all_at(&[1u8; 100], 0).unwrap();
    outside(dir.path(), "f")
        .write_all_at(&[2u8; 10_000], 100)
        .unwrap();
    a.set_len(5000).unwrap();
    assert_eq!(disk_len(dir.path(), "f"), 5000);
    assert_eq!(a.len(), 5000);
    let mut buf = [0u8; 4];
    assert_eq!(a.read_at(&mut buf, 4998).unwrap(), 2);
    assert_eq!(&buf[..2], &[2, 2]);
}

#[test]
fn seek_from_end_and_reads_across_the_end_use_the_real_length() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let mut a = fs.create("f").unwrap();
    a.write_all_at(&[1u8; 100], 0).unwrap();
    outside(dir.path(), "f")
        .write_all_at(&[2u8; 900], 100)
        .unwrap();
    assert_eq!(a.seek(SeekFrom::End(0)).unwrap(), 1000);
    assert_eq!(a.seek(SeekFrom::End(-10)).unwrap(), 990);
    outside(dir.path(), "f")
        .write_all_at(&[3u8; 1000], 1000)
        .unwrap();
    // A read that starts inside the known length and reaches past it sees the new bytes.
    let mut buf = vec![0u8; 1500];
    assert_eq!(a.read_at(&mut buf, 900).unwrap(), 1100);
    assert_eq!(buf[99], 2);
    assert_eq!(buf[100], 3);
    // Cut outside to 500: seeking to the end says 500, a read across the end stops there.
    outside(dir.path(), "f").set_len(500).unwrap();
    assert_eq!(a.seek(SeekFrom::End(0)).unwrap(), 500);
    assert_eq!(a.len(), 500);
    assert_eq!(a.read_at(&mut buf, 400).unwrap(), 100);
    assert!(a.fault_state().check().is_ok());
}

#[test]
fn a_read_across_the_end_after_an_outside_cut_is_short_and_does_not_fault() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let a = fs.create("f").unwrap();
    a.write_all_at(&pattern(5 * page() as usize, 3), 0).unwrap();
    outside(dir.path(), "f").set_len(page() + 10).unwrap();
    let mut buf = vec![0u8; 6 * page() as usize];
    assert_eq!(a.read_at(&mut buf, page()).unwrap(), 10);
    assert_eq!(a.len(), page() + 10);
    // The handle works on: grows again through the registry.
    a.write_all_at(b"x", 3 * page()).unwrap();
    assert_eq!(disk_len(dir.path(), "f"), 3 * page() + 1);
    assert!(a.fault_state().check().is_ok());
}

/// The documented limit: a read wholly inside the length the process knows does not ask the
/// kernel. After a cut made outside the process (not seen yet), the bytes between the new end
/// and the end of its page read as zeros; a page wholly past the new end faults.
#[test]
fn an_outside_cut_not_seen_yet_reads_zeros_in_the_last_page_and_faults_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let a = fs.create("f").unwrap();
    a.write_all_at(&vec![9u8; 3 * page() as usize], 0).unwrap();
    outside(dir.path(), "f").set_len(page() + 100).unwrap();
    let mut buf = [1u8; 32];
    // Within the last page: zeros, returned as data (std would return Ok(0)).
    assert_eq!(a.read_at(&mut buf, page() + 200).unwrap(), 32);
    assert_eq!(buf, [0u8; 32]);
    // A page wholly past the new end: the fault error, and the file is poisoned.
    let e = a.read_at(&mut buf, 2 * page() + 8).unwrap_err();
    assert!(is_faulted(&e), "{e:?}");
    assert!(a.fault_state().check().is_err());
}

// ---- append -------------------------------------------------------------------------------------

#[test]
fn append_writes_go_to_the_current_end_and_write_at_keeps_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let other = fs.create("f").unwrap();
    other.write_all_at(b"0123456789", 0).unwrap();
    let mut ap = fs
        .open_with("f", OpenOptions::new().read(true).append(true))
        .unwrap();
    assert_eq!(ap.write(b"ab").unwrap(), 2);
    assert_eq!(ap.stream_position().unwrap(), 12);
    other.write_all_at(b"XYZ", 12).unwrap(); // another handle grew it
    ap.write_all(b"cd").unwrap();
    outside(dir.path(), "f").write_all_at(b"!!", 17).unwrap(); // and someone outside
    ap.seek(SeekFrom::Start(0)).unwrap();
    ap.write_all(b"ef").unwrap();
    assert_eq!(ap.stream_position().unwrap(), 21);
    // Positioned writes keep their offset (POSIX pwrite; std on Linux appends instead).
    assert_eq!(ap.write_at(b"--", 1).unwrap(), 2);
    let mut all = String::new();
    ap.seek(SeekFrom::Start(0)).unwrap();
    ap.read_to_string(&mut all).unwrap();
    assert_eq!(all, "0--3456789abXYZcd!!ef");
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), all.as_bytes());
}
