//! Absurd but well-typed input (the largest durations and sizes) is an error or saturates; it
//! never panics, in debug builds and in `.ci/overflow`'s release build with overflow checks.

use std::io::ErrorKind;
use std::time::Duration;

use segpool::fs::{MapConfig, MapMode, MmapFs, SyncMode};
use segpool::{Error, SegmentPool};

const MIB: usize = 1 << 20;

#[test]
fn allocate_timeout_with_duration_max_succeeds_or_waits_without_deadline() {
    let pool = SegmentPool::builder().budget(4 * MIB).build().unwrap();
    // Room now: the timeout is never used.
    let a = pool.allocate_timeout(MIB, Duration::MAX).unwrap();
    let mut held: Vec<_> = (0..3).map(|_| pool.allocate(MIB).unwrap()).collect();
    held.push(a);
    // No room: it waits (without a deadline) until a release.
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.allocate_timeout(MIB, Duration::MAX))
    };
    while pool.stats().budget_waiters == 0 {
        std::thread::yield_now();
    }
    drop(held.pop());
    assert_eq!(waiter.join().unwrap().unwrap().len(), MIB);
    // A request that can never fit fails at once, whatever the timeout.
    assert!(matches!(
        pool.allocate_timeout(8 * MIB, Duration::MAX)
            .map_err(Error::into_kind),
        Err(segpool::ErrorKind::BudgetExceeded { .. })
    ));
    assert!(pool.allocate_timeout(usize::MAX, Duration::MAX).is_err());
}

#[test]
fn the_largest_sizes_are_errors_at_build_or_allocation() {
    for classes in [
        &[1usize << 62][..],
        &[4096, 1 << 62],
        &[1 << 31],
        &[1 << 63],
    ] {
        match SegmentPool::builder()
            .size_classes(classes)
            .build()
            .map_err(Error::into_kind)
        {
            Err(segpool::ErrorKind::InvalidConfig(m)) => {
                assert!(m.contains("larger than the largest region"), "{m}")
            }
            other => panic!("{classes:?}: {other:?}"),
        }
    }
    // The largest class still accepted works.
    let pool = SegmentPool::builder()
        .size_classes(&[4096, 1 << 30])
        .build()
        .unwrap();
    assert!(pool.allocate(usize::MAX).is_err());
    assert!(pool.allocate(usize::MAX / 2).is_err());
    for r in [usize::MAX, usize::MAX - 4095, 1 << 62] {
        assert!(matches!(
            SegmentPool::builder()
                .region_size(r)
                .build()
                .map_err(Error::into_kind),
            Err(segpool::ErrorKind::InvalidConfig(_))
        ));
    }
    let pool = SegmentPool::builder()
        .budget(usize::MAX)
        .retain_empty_regions(usize::MAX)
        .empty_region_grace(Duration::MAX)
        .build()
        .unwrap();
    drop(pool.allocate(4096).unwrap());
    pool.trim();
}

fn rw(sync: SyncMode) -> MapConfig {
    MapConfig::default().mode(MapMode::ReadWrite).sync(sync)
}

/// Threads of this process named `segpool-flush` (only the test below makes flushers in this
/// binary, so these are its own).
fn flusher_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|t| {
            let comm = t.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|c| c.trim() == "segpool-flush")
        })
        .count()
}

#[test]
fn periodic_sync_with_the_largest_durations() {
    let dir = tempfile::tempdir().unwrap();
    // A period of `Duration::MAX` is "only at close": the thread lives and waits.
    let fs = MmapFs::new(dir.path(), rw(SyncMode::Periodic(Duration::MAX))).unwrap();
    let status = fs.flusher().unwrap();
    let f = fs.create("p").unwrap();
    f.write_all_at(b"data", 0).unwrap();
    // A timeout (not a synchronisation): no round can come within it, the thread must be alive.
    assert!(!status.wait_for_flushes(1, Duration::from_millis(100)));
    assert!(status.is_running());
    assert_eq!(flusher_threads(), 1, "the flusher thread is alive");
    assert_eq!(status.rounds(), 0);
    f.close().unwrap();
    drop(fs);
    assert!(!status.is_running(), "the thread stopped with its users");
    assert!(
        !status.wait_for_flushes(1, Duration::MAX),
        "a stopped thread ends the wait"
    );
    assert_eq!(flusher_threads(), 0);

    // Waiting with `Duration::MAX` for a flush that comes.
    let fs = MmapFs::new(dir.path(), rw(SyncMode::Periodic(Duration::from_millis(1)))).unwrap();
    let status = fs.flusher().unwrap();
    let f = fs.create("q").unwrap();
    f.write_all_at(b"data", 0).unwrap();
    assert!(status.wait_for_flushes(1, Duration::MAX));
    assert!(status.is_running());
    drop(f);
    drop(fs);
    assert!(!status.is_running());
}

#[test]
fn huge_max_windows_is_refused_or_harmless() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), vec![7u8; 3 * 4096]).unwrap();
    for max_windows in [usize::MAX, usize::MAX / 2, 1 << 52] {
        let cfg = MapConfig::default()
            .window(Some(4096))
            .max_windows(max_windows);
        let e = MmapFs::new(dir.path(), cfg).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("max_windows"), "{e}");
    }
    // Large but within the address space: windows are mapped on demand, nothing is reserved.
    let cfg = MapConfig::default().window(Some(4096)).max_windows(1 << 40);
    let fs = MmapFs::new(dir.path(), cfg).unwrap();
    let f = fs.open("f").unwrap();
    let mut b = [0u8; 3];
    f.read_exact_at(&mut b, 4095).unwrap();
    assert_eq!(b, [7; 3]);
    // Without windows the bound is unused.
    let cfg = MapConfig::default().max_windows(usize::MAX);
    let fs = MmapFs::new(dir.path(), cfg).unwrap();
    assert_eq!(fs.open("f").unwrap().len(), 3 * 4096);
}

#[test]
fn the_largest_file_lengths_and_offsets_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    for len in [u64::MAX, i64::MAX as u64 + 1] {
        let p = dir.path().join("shm");
        assert!(segpool::fs::SharedMemory::create(&p, len).is_err(), "{len}");
    }
    let fs = MmapFs::new(dir.path(), rw(SyncMode::Never)).unwrap();
    let f = fs.create("f").unwrap();
    assert!(f.set_len(u64::MAX).is_err());
    assert!(f.write_at(b"x", u64::MAX).is_err());
    assert!(f.write_at(b"x", u64::MAX - 1).is_err());
    // As `pread` does: an offset past the largest file size is invalid, not the end of the file.
    assert_eq!(
        f.read_at(&mut [0u8; 4], u64::MAX).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
    assert!(f.sync_range(u64::MAX, u64::MAX).is_err());
}
