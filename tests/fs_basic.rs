//! Positioned I/O, growth, set_len, modes and bad input of `segpool::fs`.

use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};

use segpool::fs::{MapConfig, MapMode, MmapFs, SyncMode};

mod common;
use common::{pattern, rw};

#[test]
fn read_at_end_and_past_end_is_zero() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a"), b"hello").unwrap();
    let fs = MmapFs::new(dir.path(), MapConfig::default()).unwrap();
    let f = fs.open("a").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(f.read_at(&mut buf, 0).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(f.read_at(&mut buf, 5).unwrap(), 0);
    assert_eq!(f.read_at(&mut buf, 6).unwrap(), 0);
    assert_eq!(f.read_at(&mut buf, (i64::MAX - 8) as u64).unwrap(), 0);
    // Past `off_t`, as `pread` (std): refused, not "past the end".
    assert_eq!(
        f.read_at(&mut buf, u64::MAX).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
    assert_eq!(f.read_at(&mut buf, 3).unwrap(), 2);
    assert_eq!(&buf[..2], b"lo");
}

#[test]
fn empty_file_opens_and_grows() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let f = fs.create("e").unwrap();
    assert_eq!(f.len(), 0);
    let mut buf = [0u8; 4];
    assert_eq!(f.read_at(&mut buf, 0).unwrap(), 0);
    f.write_all_at(b"abcd", 0).unwrap();
    assert_eq!(f.len(), 4);
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"abcd");
    drop(f);
    assert_eq!(std::fs::read(dir.path().join("e")).unwrap(), b"abcd");
}

#[test]
fn writes_past_end_grow_the_file_with_zeros_between() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let f = fs.create("g").unwrap();
    f.write_all_at(b"x", 0).unwrap();
    // Far past the first mapping: forces a remap.
    let far = 3 * 1024 * 1024 + 17;
    f.write_all_at(b"tail", far).unwrap();
    assert_eq!(f.len(), far + 4);
    let mut mid = vec![1u8; 4096];
    f.read_exact_at(&mut mid, 100_000).unwrap();
    assert!(mid.iter().all(|&b| b == 0));
    let mut t = [0u8; 4];
    f.read_exact_at(&mut t, far).unwrap();
    assert_eq!(&t, b"tail");
    assert_eq!(
        std::fs::metadata(dir.path().join("g")).unwrap().len(),
        far + 4
    );
}

#[test]
fn set_len_shrinks_and_grows_a_mapped_file() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let f = fs.create("s").unwrap();
    let data = pattern(100_000, 7);
    f.write_all_at(&data, 0).unwrap();
    f.set_len(10).unwrap();
    assert_eq!(f.len(), 10);
    assert_eq!(std::fs::metadata(dir.path().join("s")).unwrap().len(), 10);
    let mut buf = vec![0u8; 100];
    assert_eq!(f.read_at(&mut buf, 0).unwrap(), 10);
    assert_eq!(&buf[..10], &data[..10]);
    assert_eq!(f.read_at(&mut buf, 10).unwrap(), 0);
    f.set_len(50_000).unwrap();
    assert_eq!(f.len(), 50_000);
    let mut big = vec![9u8; 50_000];
    f.read_exact_at(&mut big, 0).unwrap();
    assert_eq!(&big[..10], &data[..10]);
    assert!(
        big[10..].iter().all(|&b| b == 0),
        "bytes past a cut come back as zeros"
    );
    f.set_len(0).unwrap();
    assert!(f.is_empty());
}

#[test]
fn read_only_write_is_permission_denied() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r"), b"data").unwrap();
    let fs = MmapFs::new(dir.path(), MapConfig::default()).unwrap();
    let f = fs.open("r").unwrap();
    assert_eq!(
        f.write_at(b"zz", 0).unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        f.write_at(b"zz", 100).unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        f.set_len(0).unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        (&f).write(b"q").unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    assert_eq!(std::fs::read(dir.path().join("r")).unwrap(), b"data");
    // create() with a read-only configuration maps read-only too.
    let g = fs.create("r2").unwrap();
    assert_eq!(
        g.write_at(b"a", 0).unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
}

#[test]
fn read_write_config_on_a_read_only_descriptor_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r"), b"data").unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let f = fs
        .open_with("r", std::fs::OpenOptions::new().read(true))
        .unwrap();
    assert_eq!(f.mode(), MapMode::ReadOnly);
    assert_eq!(
        f.write_at(b"zz", 0).unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
}

#[test]
fn copy_on_write_stays_in_the_handle() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c"), b"original").unwrap();
    let fs = MmapFs::new(
        dir.path(),
        MapConfig::default()
            .mode(MapMode::CopyOnWrite)
            .sync(SyncMode::OnClose),
    )
    .unwrap();
    let f = fs.open("c").unwrap();
    let other = fs.open("c").unwrap();
    f.write_all_at(b"CHANGED", 0).unwrap();
    let mut buf = [0u8; 8];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"CHANGEDl");
    other.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"original");
    assert_eq!(
        f.write_at(b"x", 8).unwrap_err().kind(),
        ErrorKind::Unsupported
    );
    assert_eq!(f.set_len(2).unwrap_err().kind(), ErrorKind::Unsupported);
    f.sync_all().unwrap();
    f.close().unwrap();
    assert_eq!(std::fs::read(dir.path().join("c")).unwrap(), b"original");
}

#[test]
fn read_write_seek_through_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let mut f = fs.create("rws").unwrap();
    f.write_all(b"0123456789").unwrap();
    assert_eq!(f.stream_position().unwrap(), 10);
    f.seek(SeekFrom::Start(2)).unwrap();
    let mut b = [0u8; 3];
    f.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"234");
    assert_eq!(f.seek(SeekFrom::End(-1)).unwrap(), 9);
    assert_eq!(f.seek(SeekFrom::Current(-9)).unwrap(), 0);
    assert_eq!(
        f.seek(SeekFrom::Current(-1)).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let mut all = Vec::new();
    (&f).read_to_end(&mut all).unwrap();
    assert_eq!(all, b"0123456789");
}

#[test]
fn absurd_offsets_and_lengths_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let f = fs.create("bad").unwrap();
    f.write_all_at(b"abc", 0).unwrap();
    assert_eq!(
        f.write_at(b"x", u64::MAX).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        f.write_at(b"x", i64::MAX as u64).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        f.set_len(u64::MAX).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        f.sync_range(0, 0).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        f.sync_range(u64::MAX, 2).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        f.advise(0, 0, segpool::fs::Advice::Random)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        // SAFETY: nothing else writes or truncates the file while the slice lives.
        unsafe { f.with_bytes(2, 5, |b| b.len()) }
            .unwrap_err()
            .kind(),
        ErrorKind::UnexpectedEof
    );
    assert_eq!(
        // SAFETY: as above.
        unsafe { f.with_bytes(u64::MAX, 1, |b| b.len()) }
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    // SAFETY: as above.
    let empty = unsafe { f.with_bytes(1, 0, |b| b.len()) };
    assert_eq!(empty.unwrap(), 0);
    assert_eq!(
        f.with_view(2, 5, |v| v.len()).unwrap_err().kind(),
        ErrorKind::UnexpectedEof
    );
    assert_eq!(
        f.with_view(u64::MAX, 1, |v| v.len()).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        f.with_view(1, 0, |v| (v.len(), v.is_empty())).unwrap(),
        (0, true)
    );
    assert_eq!(f.write_at(&[], 10).unwrap(), 0);
    assert_eq!(f.len(), 3, "failed and empty writes do not grow the file");
    let mut b = [0u8; 4];
    assert_eq!(
        f.read_exact_at(&mut b, 1).unwrap_err().kind(),
        ErrorKind::UnexpectedEof
    );
}

#[test]
fn bad_roots_and_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = MmapFs::new(dir.path().join("missing"), MapConfig::default()).unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    std::fs::write(dir.path().join("file"), b"").unwrap();
    assert!(MmapFs::new(dir.path().join("file"), MapConfig::default()).is_err());
    let w0 = MapConfig::default().window(Some(0));
    assert_eq!(
        MmapFs::new(dir.path(), w0).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let p0 = MapConfig::default().sync(SyncMode::Periodic(std::time::Duration::ZERO));
    assert_eq!(
        MmapFs::new(dir.path(), p0).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let cow_w = MapConfig::default()
        .mode(MapMode::CopyOnWrite)
        .window(Some(4096));
    assert_eq!(
        MmapFs::new(dir.path(), cow_w).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let fs = MmapFs::new(dir.path(), MapConfig::default()).unwrap();
    assert_eq!(fs.open("nope").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        fs.open("no/such/dir/f").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    std::fs::create_dir(dir.path().join("d")).unwrap();
    assert!(fs.open("d").is_err(), "a directory is not a mappable file");
    assert_eq!(fs.open("").unwrap_err().kind(), ErrorKind::InvalidInput);
}

#[test]
fn paths_escaping_the_root_are_refused() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(outer.path().join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(outer.path().join("secret"), root.join("link")).unwrap();
    std::os::unix::fs::symlink(outer.path(), root.join("dirlink")).unwrap();
    std::os::unix::fs::symlink(outer.path().join("nothing"), root.join("dangling")).unwrap();
    // `..` is resolved physically, so the directory it climbs out of must exist.
    std::fs::create_dir(root.join("a")).unwrap();
    let fs = MmapFs::new(&root, common::rw()).unwrap();
    for p in [
        "../secret",
        "/etc/passwd",
        "link",
        "dirlink/secret",
        "a/../../secret",
    ] {
        let e = fs.open(p).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{p}: {e}");
        assert!(e.to_string().contains("escapes the root"), "{p}: {e}");
    }
    assert_eq!(
        fs.create("dangling").unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    assert!(
        !outer.path().join("nothing").exists(),
        "nothing was created outside"
    );
    assert_eq!(
        fs.create("dirlink/new").unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    assert!(!outer.path().join("new").exists());
    assert_eq!(
        fs.metadata("../secret").unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        fs.remove_file("../secret").unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        fs.rename("link", "../x").unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        fs.read_dir("dirlink").unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        fs.create_dir_all("dirlink/sub").unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    // A relative symlink inside the root to a file inside the root is followed, and so is a
    // `..` that stays inside; an absolute symlink is refused even when it points inside.
    std::fs::write(root.join("inner"), b"in").unwrap();
    std::os::unix::fs::symlink("inner", root.join("innerlink")).unwrap();
    std::os::unix::fs::symlink("../inner", root.join("a/uplink")).unwrap();
    assert_eq!(fs.open("innerlink").unwrap().len(), 2);
    assert_eq!(fs.open("a/uplink").unwrap().len(), 2);
    assert_eq!(fs.open("a/../inner").unwrap().len(), 2);
    std::os::unix::fs::symlink(root.join("inner"), root.join("abslink")).unwrap();
    assert_eq!(
        fs.open("abslink").unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        std::fs::read(outer.path().join("secret")).unwrap(),
        b"secret"
    );
}

#[test]
fn pass_through_operations_work_under_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    fs.create_dir_all("a/b/c").unwrap();
    let f = fs.create("a/b/c/f").unwrap();
    f.write_all_at(b"12345", 0).unwrap();
    assert_eq!(fs.metadata("a/b/c/f").unwrap().len(), 5);
    fs.rename("a/b/c/f", "a/g").unwrap();
    // The open handle follows the file (registry keys on device and inode).
    f.write_all_at(b"6", 5).unwrap();
    drop(f);
    assert_eq!(std::fs::read(dir.path().join("a/g")).unwrap(), b"123456");
    let names: Vec<String> = fs
        .read_dir("a")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(names, ["b", "g"]);
    assert!(fs.read_dir(".").unwrap().count() == 1);
    fs.remove_file("a/g").unwrap();
    assert_eq!(fs.metadata("a/g").unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn with_bytes_sees_the_file_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let f = fs.create("wb").unwrap();
    let data = pattern(10_000, 3);
    f.write_all_at(&data, 0).unwrap();
    // SAFETY: nothing writes or truncates the file while the slice lives.
    let sum =
        unsafe { f.with_bytes(100, 5000, |b| b.iter().map(|&x| x as u64).sum::<u64>()) }.unwrap();
    assert_eq!(sum, data[100..5100].iter().map(|&x| x as u64).sum::<u64>());
    // Writing what a view of the same mapping copied, to an overlapping range, is fine.
    f.with_view(0, 100, |v| f.write_at(&v.to_vec(), 50).unwrap())
        .unwrap();
    let mut out = vec![0u8; 100];
    f.read_exact_at(&mut out, 50).unwrap();
    assert_eq!(out, data[..100]);
    // Cutting the file from inside the closure is refused instead of deadlocking.
    // SAFETY: the cut is refused, and nothing else writes the file.
    let e = unsafe { f.with_bytes(0, 10, |_| f.set_len(1)) }
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    let e = f.with_view(0, 10, |_| f.set_len(1)).unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    assert_eq!(f.len(), 10_000);
}

#[test]
fn mapped_types_are_send_sync_clone() {
    fn send_sync<T: Send + Sync>() {}
    fn clone<T: Clone>() {}
    send_sync::<MmapFs>();
    send_sync::<segpool::fs::MappedFile>();
    send_sync::<segpool::fs::SharedMemory>();
    clone::<MmapFs>();
    clone::<MapConfig>();
}

#[test]
fn growth_and_cuts_inside_with_view_are_refused_not_deadlocked() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let f = fs.create("nest").unwrap();
    f.write_all_at(b"0123456789", 0).unwrap();
    let g = fs.open("nest").unwrap();
    f.with_view(0, 10, |v| {
        assert_eq!(v.to_vec(), b"0123456789");
        // Reads and in-place writes through any handle work inside the closure.
        let mut x = [0u8; 3];
        g.read_exact_at(&mut x, 2).unwrap();
        assert_eq!(&x, b"234");
        g.write_all_at(b"A", 0).unwrap();
        // Anything that changes the length waits for accesses, this one included: refused.
        assert_eq!(
            g.write_at(b"grow", 10).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        assert_eq!(g.set_len(20).unwrap_err().kind(), ErrorKind::WouldBlock);
        // Opening another handle inside works.
        assert_eq!(fs.open("nest").unwrap().len(), 10);
    })
    .unwrap();
    assert_eq!(f.len(), 10);
    g.write_all_at(b"grow", 10).unwrap();
    assert_eq!(f.len(), 14);
}

/// Reads of up to 64 bytes (the inline fast path) at every offset near the end, after another
/// handle grew the file past this handle's mapping, through a copy-on-write handle (which keeps
/// the length it opened with) and through windows: each returns exactly the file's bytes.
#[test]
fn small_reads_are_exact_at_the_end_after_growth_and_in_every_view() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let len = 10_000usize;
    let big = 3 << 20;
    let data = pattern(big, 9);
    let grower = fs.create("s").unwrap();
    grower.write_all_at(&data[..len], 0).unwrap();
    let f = fs.open("s").unwrap();
    let cow_fs = MmapFs::new(dir.path(), MapConfig::default().mode(MapMode::CopyOnWrite)).unwrap();
    let cow = cow_fs.open("s").unwrap();
    let win_fs = MmapFs::new(dir.path(), rw().window(Some(64 << 10))).unwrap();
    let win = win_fs.open("s").unwrap();

    let check =
        |h: &segpool::fs::MappedFile, visible: usize, offsets: &mut dyn Iterator<Item = usize>| {
            let mut buf = [0u8; 64];
            for off in offsets {
                for n in [1usize, 7, 63, 64] {
                    let want = n.min(visible.saturating_sub(off));
                    let got = h.read_at(&mut buf[..n], off as u64).unwrap();
                    assert_eq!(
                        got, want,
                        "length of {n} bytes at {off} (visible {visible})"
                    );
                    assert!(
                        got == 0 || buf[..got] == data[off..off + got],
                        "{n} bytes at {off}"
                    );
                }
            }
        };
    for h in [&f, &cow, &win] {
        check(h, len, &mut (len - 130..len + 2));
    }

    grower.write_all_at(&data[len..], len as u64).unwrap();
    let spread = |k: usize| (0..400).map(move |i| (i * 7919 + k) % (big + 10));
    check(&f, big, &mut spread(1));
    check(&f, big, &mut (big - 130..big + 2));
    check(&win, big, &mut spread(2));
    // The copy-on-write handle still ends where it opened, although its mapping's last page
    // and the file go further.
    check(&cow, len, &mut spread(3));
    check(&cow, len, &mut (len - 130..len + 200));
}
