//! Direct I/O (`DirectFile`): reads and writes between segments and the device, verified byte by
//! byte; alignment errors; the page cache stays out of it; file systems without direct I/O are
//! refused at open; the root jail applies to `MmapFs::open_direct`.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::path::Path;

use segpool::fs::{DirectFile, MapConfig, MapMode, MmapFs};
use segpool::SegmentPool;

/// A directory on the disk the crate is built on (never tmpfs, unlike `/tmp` on some systems).
fn disk_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Byte `i` of the test files: varies within and across pages, so a block read from the wrong
/// offset is caught.
fn byte(i: u64) -> u8 {
    (i ^ (i >> 9) ^ (i >> 17)).wrapping_mul(31) as u8
}

fn contents(len: u64) -> Vec<u8> {
    (0..len).map(byte).collect()
}

fn pool() -> SegmentPool {
    SegmentPool::builder()
        .size_classes(&[4096, 64 << 10, 1 << 20])
        .build()
        .unwrap()
}

fn rw() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    o
}

#[test]
fn reads_fill_segments_of_every_class_byte_by_byte() {
    let dir = disk_dir();
    let path = dir.path().join("data");
    // Not a multiple of any alignment: the last read ends inside a block.
    let len = (3 << 20) + 3000;
    let want = contents(len);
    std::fs::write(&path, &want).unwrap();
    let f = DirectFile::open(&path, OpenOptions::new().read(true)).unwrap();
    let a = f.alignment() as u64;
    let pool = pool();
    for size in [4096usize, 64 << 10, 1 << 20] {
        let mut seg = pool.allocate(size).unwrap();
        let mut offset = 0u64;
        // Offsets that are multiples of the alignment but not of the segment size.
        while offset < len {
            seg.fill(0xEE);
            let n = f.read_at(&mut seg, offset).unwrap();
            let expect = (len - offset).min(size as u64) as usize;
            assert_eq!(n, expect, "{size}-byte read at {offset}");
            for (k, &b) in seg[..n].iter().enumerate() {
                assert_eq!(
                    b,
                    want[offset as usize + k],
                    "{size}-byte read at {offset}, byte {k}"
                );
            }
            offset += size as u64 + a;
        }
        assert_eq!(f.read_at(&mut seg, len.next_multiple_of(a)).unwrap(), 0);
    }
}

#[test]
fn writes_reach_the_file_and_read_back() {
    let dir = disk_dir();
    let fs = MmapFs::new(dir.path(), MapConfig::default()).unwrap();
    let f = fs
        .open_direct_with("out", rw().create(true).truncate(true))
        .unwrap();
    assert!(f.is_empty().unwrap());
    let a = f.alignment();
    let len: usize = (2 << 20) + 5 * a + 100;
    let want = contents(len as u64);
    let pool = pool();
    // Blocks of a MiB, then the tail padded to the alignment, then the length cut to size.
    let mut offset = 0;
    while offset < len {
        let mut seg = pool.allocate(1 << 20).unwrap();
        let n = (len - offset).min(1 << 20);
        seg[..n].copy_from_slice(&want[offset..offset + n]);
        let padded = n.next_multiple_of(a);
        assert_eq!(f.write_at(&seg, padded, offset as u64).unwrap(), padded);
        offset += n;
    }
    f.set_len(len as u64).unwrap();
    f.sync_data().unwrap();
    f.sync_all().unwrap();
    assert_eq!(f.len().unwrap(), len as u64);
    let got = std::fs::read(dir.path().join("out")).unwrap();
    assert_eq!(got.len(), len);
    assert!(got == want, "the file differs from what was written");

    // And through the direct path again, into 4 KiB segments.
    let mut seg = pool.allocate(4096).unwrap();
    for offset in (0..len).step_by(4096) {
        let n = f.read_at(&mut seg, offset as u64).unwrap();
        assert_eq!(&seg[..n], &want[offset..(offset + 4096).min(len)]);
    }
}

#[test]
fn the_page_cache_stays_empty() {
    // What makes a file direct: after a direct read, the kernel holds none of its pages
    // (a buffered fallback would leave them resident).
    let dir = disk_dir();
    let path = dir.path().join("cold");
    let len = 1 << 20;
    std::fs::write(&path, contents(len)).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    file.sync_all().unwrap();
    // SAFETY: a plain advice call on a descriptor we own.
    let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0);
    assert_eq!(resident_pages(&file, len), 0, "the pages were evicted");

    let f = DirectFile::open(&path, OpenOptions::new().read(true)).unwrap();
    let mut seg = pool().allocate(1 << 20).unwrap();
    assert_eq!(f.read_at(&mut seg, 0).unwrap(), len as usize);
    assert_eq!(seg[12345], byte(12345));
    assert_eq!(
        resident_pages(&file, len),
        0,
        "a direct read filled the page cache"
    );
}

/// How many pages of the file's first `len` bytes are in the page cache (`mincore`).
fn resident_pages(file: &std::fs::File, len: u64) -> usize {
    // SAFETY: the mapping is only passed to mincore, never read; the test owns the file.
    let map = unsafe { memmap2::Mmap::map(file) }.unwrap();
    let pages = (len as usize).div_ceil(4096);
    let mut vec = vec![0u8; pages];
    // SAFETY: `map` is a live mapping of `len` bytes; `vec` has one byte per page.
    let r = unsafe { libc::mincore(map.as_ptr() as *mut _, len as usize, vec.as_mut_ptr()) };
    assert_eq!(r, 0);
    vec.iter().filter(|&&v| v & 1 != 0).count()
}

#[test]
fn alignment_comes_from_the_kernel() {
    let dir = disk_dir();
    let path = dir.path().join("a");
    std::fs::write(&path, [1u8; 10]).unwrap();
    let f = DirectFile::open(&path, OpenOptions::new().read(true)).unwrap();
    let (a, m) = (f.alignment(), f.memory_alignment());
    assert!(a.is_power_of_two() && (512..=4096).contains(&a), "{a}");
    assert!(m.is_power_of_two() && m <= 4096, "{m}");
    // The segment's page alignment satisfies the memory alignment: a one-block read works.
    let mut seg = pool().allocate(4096).unwrap();
    assert_eq!(f.read_at(&mut seg, 0).unwrap(), 10);
    assert_eq!(&seg[..10], &[1u8; 10]);
}

#[test]
fn misaligned_offsets_and_lengths_are_refused_naming_the_alignment() {
    let dir = disk_dir();
    let path = dir.path().join("m");
    std::fs::write(&path, contents(1 << 16)).unwrap();
    let f = DirectFile::open(&path, &rw()).unwrap();
    let a = f.alignment();
    let pool = pool();
    let mut seg = pool.allocate(4096).unwrap();
    let named = |e: std::io::Error, what: &str| {
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let msg = e.to_string();
        assert!(msg.contains(what), "{msg}");
        assert!(msg.contains(&format!("alignment ({a} bytes)")), "{msg}");
    };
    named(f.read_at(&mut seg, 1).unwrap_err(), "offset 1 ");
    named(f.read_at(&mut seg, a as u64 / 2).unwrap_err(), "offset");
    named(f.write_at(&seg, 4096, 100).unwrap_err(), "offset 100 ");
    named(f.write_at(&seg, 100, 0).unwrap_err(), "length 100 ");
    named(f.write_at(&seg, a + 1, 0).unwrap_err(), "length");
    // More than the segment holds.
    let e = f.write_at(&seg, 8192, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("segment of 4096"), "{e}");
    // Nothing was written by the refused calls.
    assert_eq!(std::fs::read(&path).unwrap(), contents(1 << 16));
    assert_eq!(f.read_at(&mut seg, 0).unwrap(), 4096);
    assert_eq!(&seg[..], &contents(4096)[..]);
}

#[test]
fn tmpfs_is_refused_at_open() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        println!("skipped: /dev/shm is absent here, no tmpfs to try");
        return;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    let path = dir.path().join("t");
    std::fs::write(&path, [0u8; 4096]).unwrap();
    let check = |e: std::io::Error| {
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(e.to_string().contains("tmpfs"), "{e}");
    };
    check(DirectFile::open(&path, OpenOptions::new().read(true)).unwrap_err());
    let fs = MmapFs::new(dir.path(), MapConfig::default()).unwrap();
    check(fs.open_direct("t").unwrap_err());
}

#[test]
fn open_direct_applies_the_root_jail_and_the_mode() {
    let outer = disk_dir();
    let root = outer.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(outer.path().join("secret"), [7u8; 4096]).unwrap();
    std::fs::write(root.join("inside"), [9u8; 4096]).unwrap();
    std::os::unix::fs::symlink(outer.path().join("secret"), root.join("link")).unwrap();

    let ro = MmapFs::new(&root, MapConfig::default()).unwrap();
    for escape in ["../secret", "link", "/etc/passwd"] {
        let e = ro.open_direct(escape).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{escape}: {e}");
    }
    let pool = pool();
    let mut seg = pool.allocate(4096).unwrap();
    let f = ro.open_direct("inside").unwrap();
    assert_eq!(f.read_at(&mut seg, 0).unwrap(), 4096);
    assert!(seg.iter().all(|&b| b == 9));
    // A read-only file layer opens read-only: the write is the kernel's EBADF.
    assert!(f.write_at(&seg, 4096, 0).is_err());

    let rw_fs = MmapFs::new(&root, MapConfig::default().mode(MapMode::ReadWrite)).unwrap();
    let f = rw_fs.open_direct("inside").unwrap();
    seg.fill(3);
    f.write_at(&seg, 4096, 4096).unwrap();
    let got = std::fs::read(root.join("inside")).unwrap();
    assert_eq!(got.len(), 8192);
    assert!(got[..4096].iter().all(|&b| b == 9) && got[4096..].iter().all(|&b| b == 3));
}

#[test]
fn append_and_non_regular_files_are_refused() {
    let dir = disk_dir();
    let path = dir.path().join("ap");
    std::fs::write(&path, [0u8; 4096]).unwrap();
    let e = DirectFile::open(&path, OpenOptions::new().append(true)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("append"), "{e}");
    let e = DirectFile::open(dir.path(), OpenOptions::new().read(true)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let e =
        DirectFile::open(dir.path().join("missing"), OpenOptions::new().read(true)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn threads_read_and_write_disjoint_blocks_at_once() {
    let dir = disk_dir();
    let path = dir.path().join("par");
    let f = DirectFile::open(&path, rw().create(true)).unwrap();
    let pool = pool();
    let blocks = 64u64;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (f, pool) = (&f, &pool);
            s.spawn(move || {
                let mut seg = pool.allocate(64 << 10).unwrap();
                for b in (t..blocks).step_by(4) {
                    let off = b * (64 << 10);
                    for (k, x) in seg.iter_mut().enumerate() {
                        *x = byte(off + k as u64);
                    }
                    f.write_at(&seg, 64 << 10, off).unwrap();
                    seg.fill(0);
                    assert_eq!(f.read_at(&mut seg, off).unwrap(), 64 << 10);
                    assert!(seg
                        .iter()
                        .enumerate()
                        .all(|(k, &x)| x == byte(off + k as u64)));
                }
            });
        }
    });
    assert_eq!(std::fs::read(&path).unwrap(), contents(blocks * (64 << 10)));
}

/// A cut made through a `DirectFile` of an `MmapFs` goes through the file's registry entry: a
/// `MappedFile` of the same file in the process sees the new end (short reads, its length)
/// instead of faulting past it and being poisoned, and a truncating direct open cuts the same
/// way. Without the registry, the mapped handle's next read past the cut would fault: an error
/// that poisons the file.
#[test]
fn direct_cuts_go_through_the_registry_and_mapped_handles_see_them() {
    let dir = disk_dir();
    let fs = MmapFs::new(dir.path(), MapConfig::default().mode(MapMode::ReadWrite)).unwrap();
    let data = contents(64 << 10);
    std::fs::write(dir.path().join("f"), &data).unwrap();
    let mapped = fs.open("f").unwrap();
    let mut buf = vec![0u8; 8192];
    assert_eq!(mapped.read_at(&mut buf, 40 << 10).unwrap(), 8192);

    let direct = fs.open_direct("f").unwrap();
    direct.set_len(16 << 10).unwrap();
    assert_eq!(
        mapped.len(),
        16 << 10,
        "the mapped handle did not see the cut"
    );
    assert_eq!(
        mapped.read_at(&mut buf, 40 << 10).unwrap(),
        0,
        "a read past the cut"
    );
    assert_eq!(mapped.read_at(&mut buf, 12 << 10).unwrap(), 4096);
    assert_eq!(buf[..4096], data[12 << 10..16 << 10]);

    // Growth is seen too, and reads zero past the old end.
    direct.set_len(32 << 10).unwrap();
    assert_eq!(mapped.len(), 32 << 10);
    assert_eq!(mapped.read_at(&mut buf, 16 << 10).unwrap(), 8192);
    assert!(buf.iter().all(|&b| b == 0));

    // A truncating direct open cuts through the registry as well.
    let _t = fs.open_direct_with("f", rw().truncate(true)).unwrap();
    assert_eq!(mapped.len(), 0);
    assert_eq!(mapped.read_at(&mut buf, 0).unwrap(), 0);
    // Nothing faulted: the mapped handle is healthy and writes again.
    mapped.write_all_at(b"alive", 0).unwrap();
    let mut five = [0u8; 5];
    mapped.read_exact_at(&mut five, 0).unwrap();
    assert_eq!(&five, b"alive");
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"alive");
}
