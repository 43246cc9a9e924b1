//! `Backing::File`: regions are nameless files in a directory, reserved before they are mapped.

mod common;
mod diagnostics_support;

use segpool::{Backing, Error, Segment, SegmentPool};

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
    match &err {
        Error::Map(io) => assert_eq!(io.raw_os_error(), Some(libc::ENOSPC), "{io}"),
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

#[test]
fn a_fault_in_a_file_backed_region_is_survived_and_quarantines_the_region() {
    let dir = tempfile::tempdir().unwrap();
    let pool = SegmentPool::builder()
        .size_classes(&[65536])
        .region_size(1 << 20)
        .thread_cache(false)
        .backing(Backing::File(dir.path().into()))
        .build()
        .unwrap();
    let mut seg = pool.allocate(65536).unwrap();
    seg.fill(1);
    // The region's file has no name; as root, /proc/self/map_files opens it, as another process
    // truncating a file under the pool would.
    let range = mapping_of(seg.as_ptr() as usize);
    let file = match std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/map_files/{range}"))
    {
        Ok(f) => f,
        Err(e) => {
            println!("skipped: cannot open the region's file through /proc/self/map_files (needs root): {e}");
            return;
        }
    };
    file.set_len(0).unwrap();
    // This read faults (SIGBUS): the guard replaces the page, the process lives, the bytes are gone.
    // SAFETY: `seg` is live and at least one byte long, so its first byte is in bounds and owned
    // by this test; the page behind it stays mapped (the guard maps a zero page in its place).
    let first = unsafe { std::ptr::read_volatile(seg.as_ptr()) };
    assert_eq!(first, 0, "the lost page reads as zeros");
    let stats = pool.stats();
    assert_eq!(stats.faulted_regions, 1, "{stats}");
    // The faulted region hands out nothing more: the next segment comes from a new region. The
    // pool finds the fault when it goes to take from the region: one `region fault` event, and
    // the count in the stats.
    let (other, events) = diagnostics_support::capture(|| pool.allocate(65536).unwrap());
    let faults = diagnostics_support::named(&events, "region fault");
    assert_eq!(faults.len(), 1, "{events:?}");
    let e = faults[0];
    assert_eq!(e.level, tracing::Level::ERROR);
    assert_eq!(e.number("class"), 65536);
    assert_eq!(e.field("path"), dir.path().display().to_string());
    let addr = e.number("addr") as usize;
    assert!(
        (seg.as_ptr() as usize..seg.as_ptr() as usize + 65536).contains(&addr),
        "addr {addr:#x} is the faulting read's"
    );
    assert_eq!(pool.stats().faults, 1);
    assert!(
        mapping_of(other.as_ptr() as usize) != range,
        "a faulted region must not be reused"
    );
    drop(seg);
    pool.trim();
    let stats = pool.stats();
    assert_eq!(
        stats.faulted_regions, 0,
        "the faulted region is unmapped once empty: {stats}"
    );
    assert_eq!(stats.regions, 1);
}
