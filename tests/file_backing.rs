//! `Backing::File`: regions are nameless files in a directory, reserved before they are mapped.

mod common;

use segpool::{Backing, ErrorKind, Segment, SegmentPool};

#[test]
fn a_file_backed_pool_works_and_its_files_are_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let pool = SegmentPool::builder()
        .backing(Backing::File(dir.path().into()))
        .build()
        .unwrap();
    let mut segs: Vec<Segment> = [4096, 20_000, 1 << 20, 3 << 20]
        .iter()
        .map(|&n| pool.allocate(n).unwrap())
        .collect();
    for (i, s) in segs.iter_mut().enumerate() {
        assert!(
            s.iter().all(|&b| b == 0),
            "fresh file-backed memory is zero"
        );
        s.fill(i as u8 + 1);
    }
    for (i, s) in segs.iter().enumerate() {
        assert!(s.iter().all(|&b| b == i as u8 + 1));
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "region files have no name"
    );
    assert!(pool.stats().mapped_bytes > 0);
    drop(segs);
    pool.trim();
    assert_eq!(pool.stats().mapped_bytes, 0);
}

#[test]
fn a_full_filesystem_is_an_error_not_a_crash() {
    let (status, out) = common::run_child("tiny_filesystem_child", true, &[]);
    if status.code() == Some(common::SKIP) {
        println!("skipped: {out}");
        return;
    }
    assert!(status.success(), "child failed: {status:?}\n{out}");
    assert!(out.contains("ENOSPC as an error"), "{out}");
}

/// Runs in a child in a private mount namespace: mounts a 4 MiB tmpfs and fills it.
#[test]
#[ignore = "child process of a_full_filesystem_is_an_error_not_a_crash"]
fn tiny_filesystem_child() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(dir.path())
        .status();
    if !matches!(mounted, Ok(s) if s.success()) {
        println!("cannot mount a tmpfs here (needs root or a user+mount namespace): {mounted:?}");
        std::process::exit(common::SKIP);
    }
    let pool = SegmentPool::builder()
        .size_classes(&[1 << 20])
        .region_size(1 << 20)
        .backing(Backing::File(dir.path().into()))
        .build()
        .unwrap();
    let mut held = Vec::new();
    let err = loop {
        match pool.allocate(1 << 20) {
            Ok(mut s) => {
                s.fill(0xEE);
                held.push(s);
                assert!(held.len() <= 4, "a 4 MiB filesystem cannot hold more");
            }
            Err(e) => break e,
        }
    };
    match err.kind() {
        ErrorKind::Map(io) => assert_eq!(io.raw_os_error(), Some(libc::ENOSPC), "{io}"),
        other => panic!("expected a Map error with ENOSPC, got {other:?}"),
    }
    // What was handed out before is intact, and the pool keeps working after a release.
    assert!(held.iter().all(|s| s.iter().all(|&b| b == 0xEE)));
    held.pop();
    pool.trim();
    assert!(pool.allocate(1 << 20).is_ok());
    println!("ENOSPC as an error after {} segments: {err}", held.len());
}

/// The mapping of this process that contains `addr`, as `start-end` in hex (a `/proc/self/maps`
/// range, which is also the name of its `/proc/self/map_files` entry).
fn mapping_of(addr: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .find(|r| {
            let (a, b) = r.split_once('-').unwrap();
            (usize::from_str_radix(a, 16).unwrap()..usize::from_str_radix(b, 16).unwrap())
                .contains(&addr)
        })
        .expect("segment is mapped")
}

/// A lost page of a file-backed segment is not caught, even with segpool's SIGBUS handler
/// installed for a `MappedFile` in the same process: the process dies of SIGBUS instead of
/// carrying on with the segment's bytes silently turned to zeros.
#[test]
fn a_lost_page_of_a_file_backed_segment_kills_the_process_with_sigbus() {
    use std::os::unix::process::ExitStatusExt as _;
    let (status, out) = common::run_child("lost_page_child", false, &[]);
    if status.code() == Some(common::SKIP) {
        println!("skipped: {out}");
        return;
    }
    assert_eq!(
        status.signal(),
        Some(libc::SIGBUS),
        "the child should die of SIGBUS, ended with {status:?}\n{out}"
    );
    assert!(
        out.contains("handler installed; cutting the region's file"),
        "{out}"
    );
    assert!(!out.contains("survived"), "{out}");
}

/// Runs in a child: cuts the file under a live segment of a file-backed pool and reads it.
#[test]
#[ignore = "child process of a_lost_page_of_a_file_backed_segment_kills_the_process_with_sigbus"]
fn lost_page_child() {
    // No core file for the crash this child exists to show.
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit struct; lowering our own core limit has no memory-safety effect.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
    let dir = tempfile::tempdir().unwrap();
    // A mapped file, so that segpool's SIGBUS handler is installed in this process.
    let fs = segpool::fs::MmapFs::new(dir.path(), common::rw()).unwrap();
    let f = fs.create("guarded.bin").unwrap();
    f.write_all_at(b"guarded", 0).unwrap();
    assert!(segpool::fault::handler_installed());
    let pool = SegmentPool::builder()
        .size_classes(&[65536])
        .region_size(1 << 20)
        .backing(Backing::File(dir.path().into()))
        .build()
        .unwrap();
    let mut seg = pool.allocate(65536).unwrap();
    seg.fill(1);
    // The region's file has no name; as root, /proc/self/map_files opens it, as another process
    // cutting a file under the pool would.
    let range = mapping_of(seg.as_ptr() as usize);
    let file = match std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/map_files/{range}"))
    {
        Ok(f) => f,
        Err(e) => {
            println!(
                "cannot open the region's file through /proc/self/map_files (needs root): {e}"
            );
            std::process::exit(common::SKIP);
        }
    };
    println!("handler installed; cutting the region's file");
    file.set_len(0).unwrap();
    // SAFETY: in bounds of a live segment; the page behind it is gone, so this raises SIGBUS,
    // which is what the test shows (a plain volatile load, no reference formed).
    let b = unsafe { std::ptr::read_volatile(seg.as_ptr()) };
    println!("survived a lost page of a file-backed segment (read {b})");
}
