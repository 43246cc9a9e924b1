//! The differences from `std::fs::File` once found, one test each (each failed before its fix).

use super::*;

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
fn shared_memory_created_again_over_an_open_one_cuts_it_for_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shm");
    let a = segpool::fs::SharedMemory::create(&path, 3 * page()).unwrap();
    a.write_at(&vec![7u8; 3 * page() as usize], 0).unwrap();
    let b = segpool::fs::SharedMemory::create(&path, page()).unwrap();
    assert_eq!(disk_len(dir.path(), "shm"), page());
    let mut buf = vec![1u8; 64];
    b.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, vec![0u8; 64], "created again: zeros");
    a.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, vec![0u8; 64], "the old handle sees the new bytes");
    // Past the new length: nothing to read, and no fault.
    assert_eq!(a.read_at(&mut buf, 2 * page()).unwrap(), 0);
    a.write_at(b"ok", 10).unwrap();
    b.read_at(&mut buf[..2], 10).unwrap();
    assert_eq!(&buf[..2], b"ok");
}

/// The cut of a truncating open waits for running accesses like `set_len`: readers of another
/// handle never read a cut page (which would fault and poison the file).
#[test]
fn create_over_a_file_being_read_never_faults_the_readers() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    const LEN: usize = 64 * 1024;
    let a = fs.create("f").unwrap();
    a.write_all_at(&vec![5u8; LEN], 0).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (a, stop) = (&a, &stop);
            s.spawn(move || {
                let mut buf = vec![0u8; 4096];
                let mut i = t;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let off = (i * 7919) % LEN as u64;
                    let n = a.read_at(&mut buf, off).expect("a read racing create");
                    assert!(buf[..n].iter().all(|&b| b == 5 || b == 0));
                    i += 1;
                }
            });
        }
        for _ in 0..50 {
            let b = fs.create("f").unwrap();
            b.write_all_at(&vec![5u8; LEN], 0).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
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

#[test]
fn appends_from_many_threads_and_handles_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let opts = OpenOptions::new()
        .read(true)
        .create(true)
        .append(true)
        .clone();
    let handles: Vec<MappedFile> = (0..2).map(|_| fs.open_with("f", &opts).unwrap()).collect();
    const THREADS: u64 = 4;
    const RECORDS: u64 = 300;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let mut f = &handles[(t % 2) as usize];
            s.spawn(move || {
                for r in 0..RECORDS {
                    f.write_all(&(t * RECORDS + r).to_le_bytes()).unwrap();
                }
            });
        }
    });
    let bytes = std::fs::read(dir.path().join("f")).unwrap();
    assert_eq!(bytes.len() as u64, THREADS * RECORDS * 8);
    let mut ids: Vec<u64> = bytes
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    ids.sort_unstable();
    assert!(
        ids.iter().copied().eq(0..THREADS * RECORDS),
        "every record once"
    );
}
