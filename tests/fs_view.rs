//! `MappedView`: the safe zero-copy view of `MappedFile::with_view` and
//! `SharedMemory::with_view`. It reads the bytes in place, its atomics are shared with other
//! handles, threads and processes, a truncation while it lives is an error, and misuse panics
//! with a clear message.

use std::io::ErrorKind;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;

use segpool::fs::{MapConfig, MapMode, MmapFs, SharedMemory};
use segpool::Error;

const PAGE: u64 = 4096;

fn fs_with(dir: &std::path::Path, mode: MapMode, window: Option<u64>) -> MmapFs {
    MmapFs::new(dir, MapConfig::default().mode(mode).window(window)).unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The message of the panic `f` raises.
fn panic_message(f: impl FnOnce()) -> String {
    let e = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn a_view_reads_the_bytes_in_place() {
    let dir = tempfile::tempdir().unwrap();
    for window in [None, Some(2 * PAGE)] {
        let fs = fs_with(dir.path(), MapMode::ReadWrite, window);
        let f = fs.create("v").unwrap();
        let data = pattern(5 * PAGE as usize + 77, 7);
        f.write_all_at(&data, 0).unwrap();
        // Every alignment and length, including ranges across window boundaries.
        for (off, len) in [
            (0u64, 1usize),
            (3, 64),
            (PAGE - 5, 10),
            (2 * PAGE - 9, 4000),
            (1, 5 * PAGE as usize + 76),
        ] {
            let (whole, part, meta) = f
                .with_view(off, len, |v| {
                    let mut part = vec![0u8; len / 2];
                    v.copy_to_slice(len - len / 2, &mut part);
                    (v.to_vec(), part, (v.len(), v.is_empty(), v.file_offset()))
                })
                .unwrap();
            let want = &data[off as usize..off as usize + len];
            assert_eq!(whole, want, "window {window:?} off {off} len {len}");
            assert_eq!(part, want[len - len / 2..], "copy_to_slice at an offset");
            assert_eq!(meta, (len, false, off));
        }
        assert!(
            format!("{:?}", f.with_view(8, 16, |v| format!("{v:?}")).unwrap())
                .contains("file_offset: 8")
        );
        // Past the end: UnexpectedEof, as for with_bytes.
        assert_eq!(
            f.with_view(data.len() as u64 - 1, 2, |_| ())
                .unwrap_err()
                .kind(),
            ErrorKind::UnexpectedEof
        );
        drop(f);
        fs.remove_file("v").unwrap();
    }
}

#[test]
fn atomics_are_shared_between_handles_and_threads() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_with(dir.path(), MapMode::ReadWrite, None);
    let a = Arc::new(fs.create("sync").unwrap());
    a.set_len(PAGE).unwrap();
    // A second handle: its own mapping of the same page-cache pages.
    let b = Arc::new(fs.open("sync").unwrap());
    const ADDS: u64 = 20_000;
    let workers: Vec<_> = [Arc::clone(&a), Arc::clone(&b)]
        .into_iter()
        .map(|h| {
            thread::spawn(move || {
                for _ in 0..ADDS {
                    h.with_view(64, 16, |v| {
                        v.atomic_u64(0).fetch_add(1, Ordering::Relaxed);
                        v.atomic_u32(8).fetch_add(1, Ordering::Relaxed);
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    // No update lost: both handles' atomics are the same memory.
    let (x, y) = b
        .with_view(64, 16, |v| {
            (
                v.atomic_u64(0).load(Ordering::Relaxed),
                v.atomic_u32(8).load(Ordering::Relaxed),
            )
        })
        .unwrap();
    assert_eq!((x, y), (2 * ADDS, 2 * ADDS as u32));
    // And the file holds them (in the CPU's byte order).
    let mut word = [0u8; 8];
    a.read_exact_at(&mut word, 64).unwrap();
    assert_eq!(u64::from_ne_bytes(word), 2 * ADDS);

    // Release/acquire through the file: a payload written with write_at before a flag store is
    // seen by a reader that sees the flag.
    let reader = {
        let b = Arc::clone(&b);
        thread::spawn(move || loop {
            let seen = b
                .with_view(0, 8, |v| v.atomic_u64(0).load(Ordering::Acquire))
                .unwrap();
            if seen == 1 {
                let mut payload = [0u8; 7];
                b.read_exact_at(&mut payload, 200).unwrap();
                return payload;
            }
            std::hint::spin_loop();
        })
    };
    a.write_all_at(b"payload", 200).unwrap();
    a.with_view(0, 8, |v| v.atomic_u64(0).store(1, Ordering::Release))
        .unwrap();
    assert_eq!(&reader.join().unwrap(), b"payload");
}

const CHILD_ENV: &str = "SEGPOOL_FS_TEST_VIEW_CHILD";
const PROCESS_ADDS: u64 = 100_000;

#[test]
fn atomics_are_shared_between_processes() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        let shm = SharedMemory::open(&path).unwrap();
        // The parent published the payload before the flag.
        while shm
            .with_view(0, 8, |v| v.atomic_u64(0).load(Ordering::Acquire))
            .unwrap()
            != 1
        {
            std::hint::spin_loop();
        }
        let mut payload = [0u8; 5];
        shm.read_at(&mut payload, 100).unwrap();
        assert_eq!(&payload, b"hello");
        for _ in 0..PROCESS_ADDS {
            shm.with_view(8, 8, |v| v.atomic_u64(0).fetch_add(1, Ordering::Relaxed))
                .unwrap();
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ipc");
    let shm = SharedMemory::create(&path, PAGE).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "atomics_are_shared_between_processes",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    shm.write_at(b"hello", 100).unwrap();
    shm.with_view(0, 8, |v| v.atomic_u64(0).store(1, Ordering::Release))
        .unwrap();
    // Both processes add at the same time; an add that is not atomic across processes loses
    // updates.
    for _ in 0..PROCESS_ADDS {
        shm.with_view(8, 8, |v| v.atomic_u64(0).fetch_add(1, Ordering::Relaxed))
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    assert!(stdout.contains("1 passed"), "the child ran its test");
    let total = shm
        .with_view(8, 8, |v| v.atomic_u64(0).load(Ordering::Acquire))
        .unwrap();
    assert_eq!(total, 2 * PROCESS_ADDS);
}

#[test]
fn a_truncation_during_the_view_is_an_error_and_poisons_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_with(dir.path(), MapMode::ReadWrite, None);
    let f = fs.create("cut").unwrap();
    f.write_all_at(&pattern(4 * PAGE as usize, 3), 0).unwrap();
    let path = dir.path().join("cut");
    let r = f.with_view(0, 4 * PAGE as usize, |v| {
        // Someone outside segpool cuts the file under the view.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(PAGE)
            .unwrap();
        // A load and a store in the lost pages: both caught, neither kills the process.
        let lost = v.to_vec()[3 * PAGE as usize];
        v.atomic_u64(2 * PAGE as usize).store(7, Ordering::Release);
        lost
    });
    let e = r.expect_err("the view's result must be discarded after a fault");
    assert!(
        matches!(
            e.get_ref()
                .and_then(|i| i.downcast_ref::<Error>())
                .map(Error::kind),
            Some(segpool::ErrorKind::Faulted { .. })
        ),
        "{e:?}"
    );
    assert!(f.fault_state().is_faulted());
    assert!(
        f.with_view(0, 8, |v| v.to_vec()).is_err(),
        "fails fast once poisoned"
    );
}

#[test]
fn a_store_alone_into_a_cut_page_is_an_error() {
    // Only a store touches the lost page: the full fence after the closure must still see it.
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_with(dir.path(), MapMode::ReadWrite, None);
    let f = fs.create("cut").unwrap();
    f.set_len(4 * PAGE).unwrap();
    let path = dir.path().join("cut");
    let r = f.with_view(0, 4 * PAGE as usize, |v| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(PAGE)
            .unwrap();
        v.atomic_u32(3 * PAGE as usize).store(1, Ordering::Relaxed);
    });
    assert!(r.is_err());
    assert!(f.fault_state().is_faulted());
}

#[test]
fn misuse_panics_with_a_clear_message_and_leaves_the_file_usable() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_with(dir.path(), MapMode::ReadWrite, None);
    let f = fs.create("m").unwrap();
    f.write_all_at(&pattern(PAGE as usize, 1), 0).unwrap();

    let m = panic_message(|| {
        f.with_view(0, 16, |v| v.copy_to_slice(10, &mut [0u8; 7]))
            .unwrap();
    });
    assert!(
        m.contains("7 bytes at offset 10 are out of range for a view of 16 bytes"),
        "{m}"
    );
    let m = panic_message(|| {
        f.with_view(0, 16, |v| v.copy_to_slice(usize::MAX, &mut [0u8; 2]))
            .unwrap();
    });
    assert!(m.contains("out of range"), "{m}");
    let m = panic_message(|| {
        f.with_view(0, 16, |v| {
            v.atomic_u64(12);
        })
        .unwrap();
    });
    assert!(
        m.contains("atomic_u64") && m.contains("out of range"),
        "{m}"
    );
    let m = panic_message(|| {
        f.with_view(0, 16, |v| {
            v.atomic_u64(4);
        })
        .unwrap();
    });
    assert!(
        m.contains("offset 4 (file offset 4) is not aligned to 8 bytes"),
        "{m}"
    );
    // Alignment is the file offset's: a view starting at 4 has its u64s at odd multiples of 4.
    let m = panic_message(|| {
        f.with_view(4, 16, |v| {
            v.atomic_u64(0);
        })
        .unwrap();
    });
    assert!(m.contains("offset 0 (file offset 4)"), "{m}");
    assert_eq!(
        f.with_view(4, 16, |v| v.atomic_u64(4).load(Ordering::Relaxed))
            .unwrap(),
        u64::from_ne_bytes(pattern(16, 1)[8..16].try_into().unwrap())
    );
    let m = panic_message(|| {
        f.with_view(0, 16, |v| {
            v.atomic_u32(2);
        })
        .unwrap();
    });
    assert!(
        m.contains("atomic_u32") && m.contains("not aligned to 4 bytes"),
        "{m}"
    );

    // A read-only handle: copies work, atomics (which allow stores) are refused.
    let ro = fs_with(dir.path(), MapMode::ReadOnly, None)
        .open("m")
        .unwrap();
    assert_eq!(ro.with_view(0, 4, |v| v.to_vec()).unwrap(), pattern(4, 1));
    let m = panic_message(|| {
        ro.with_view(0, 8, |v| {
            v.atomic_u64(0);
        })
        .unwrap();
    });
    assert!(m.contains("read-only"), "{m}");

    // After the panics, nothing is left held: the file works, and a cut does not wait forever.
    let mut buf = [0u8; 8];
    f.read_exact_at(&mut buf, 0).unwrap();
    f.set_len(100).unwrap();
    assert_eq!(f.len(), 100);
    assert!(!f.fault_state().is_faulted());
}

#[test]
fn shared_memory_views_are_bounded_by_the_memory() {
    let dir = tempfile::tempdir().unwrap();
    let shm = SharedMemory::create(dir.path().join("s"), 100).unwrap();
    assert_eq!(
        shm.with_view(96, 8, |_| ()).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    shm.with_view(96, 4, |v| {
        v.atomic_u32(0).store(0xdead_beef, Ordering::Relaxed)
    })
    .unwrap();
    let mut b = [0u8; 4];
    shm.read_at(&mut b, 96).unwrap();
    assert_eq!(u32::from_ne_bytes(b), 0xdead_beef);
}

#[test]
fn racing_reads_and_writes_see_only_bytes_that_were_written() {
    // Two writers fill the same ranges with 0xaa and 0x55 bytes while readers copy them out
    // (small and large reads, aligned and not): every byte read is one of the values written
    // (reads may be torn across bytes, never anything else), and views see the same.
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_with(dir.path(), MapMode::ReadWrite, None);
    let f = Arc::new(fs.create("race").unwrap());
    f.write_all_at(&vec![0xaa; 3 * PAGE as usize], 0).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = [0xaau8, 0x55]
        .into_iter()
        .map(|b| {
            let (f, stop) = (Arc::clone(&f), Arc::clone(&stop));
            thread::spawn(move || {
                let block = vec![b; 5000];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (off, len) = [(3, 61), (0, 64), (100, 5000), (4095, 2)][(i % 4) as usize];
                    f.write_all_at(&block[..len], off).unwrap();
                    i += 1;
                }
            })
        })
        .collect();
    let mut buf = vec![0u8; 5000];
    for i in 0..20_000u64 {
        let (off, len) = [(0u64, 64usize), (5, 40), (64, 5000), (4090, 13)][(i % 4) as usize];
        let n = if i % 8 == 7 {
            f.with_view(off, len, |v| v.copy_to_slice(0, &mut buf[..len]))
                .unwrap();
            len
        } else {
            f.read_at(&mut buf[..len], off).unwrap()
        };
        assert_eq!(n, len);
        assert!(
            buf[..len].iter().all(|&b| b == 0xaa || b == 0x55),
            "a byte that was never written, reading {len} at {off}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
}
