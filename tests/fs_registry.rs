//! The per-file registry: shared generation, length and fault state across handles.

use std::sync::Arc;

use segpool::fs::{MapConfig, MmapFs};

mod common;
use common::rw;

#[test]
fn a_shorter_mapping_reads_bytes_another_handle_added() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let grower = fs.create("f").unwrap();
    grower.write_all_at(b"start", 0).unwrap();
    let ro_fs = MmapFs::new(dir.path(), MapConfig::default()).unwrap();
    let reader = ro_fs.open("f").unwrap(); // mapped at 5 bytes (one page)
    let gen = reader.generation();
    let tail: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    grower.write_all_at(&tail, 5).unwrap();
    assert!(reader.generation() > gen);
    assert_eq!(reader.len(), 5 + tail.len() as u64);
    let mut back = vec![0u8; tail.len()];
    reader.read_exact_at(&mut back, 5).unwrap();
    assert!(back == tail);
    assert_eq!(
        reader
            .with_view(5 + tail.len() as u64 - 3, 3, |b| b.to_vec())
            .unwrap(),
        &tail[tail.len() - 3..]
    );
}

#[test]
fn growth_by_another_process_is_seen_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"abc").unwrap();
    let fs = MmapFs::new(dir.path(), MapConfig::default()).unwrap();
    let f = fs.open("f").unwrap();
    // Grown behind the layer's back (plain std write, as another process would).
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("f"))
        .unwrap()
        .write_all(b"defgh")
        .unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(&b, b"abcdefgh");
}

#[test]
fn two_handles_writing_disjoint_ranges_from_many_threads_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let a = Arc::new(fs.create("f").unwrap());
    let b = Arc::new(fs.open("f").unwrap());
    const THREADS: u64 = 8;
    const RECORDS: u64 = 500;
    const REC: u64 = 37; // odd size: records straddle pages
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let h = if t % 2 == 0 {
                Arc::clone(&a)
            } else {
                Arc::clone(&b)
            };
            s.spawn(move || {
                for r in 0..RECORDS {
                    // Interleaved slots, written in increasing order: the file keeps growing
                    // through both handles while others write below.
                    let slot = r * THREADS + t;
                    let rec = [(t as u8) ^ (r as u8); REC as usize];
                    h.write_all_at(&rec, slot * REC).unwrap();
                }
            });
        }
    });
    assert_eq!(a.len(), THREADS * RECORDS * REC);
    for slot in 0..THREADS * RECORDS {
        let (t, r) = (slot % THREADS, slot / THREADS);
        let mut rec = [0u8; REC as usize];
        b.read_exact_at(&mut rec, slot * REC).unwrap();
        assert_eq!(rec, [(t as u8) ^ (r as u8); REC as usize], "slot {slot}");
    }
}

#[test]
fn concurrent_readers_survive_cuts_and_growth() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let f = Arc::new(fs.create("f").unwrap());
    f.write_all_at(&vec![5u8; 1 << 20], 0).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..3 {
            let f = Arc::clone(&f);
            let stop = &stop;
            s.spawn(move || {
                let mut buf = vec![0u8; 8192];
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let off = (i * 7919 * 4096) % (1 << 20);
                    let n = f.read_at(&mut buf, off).unwrap();
                    assert!(buf[..n].iter().all(|&b| b == 5 || b == 0));
                    i += 1;
                }
            });
        }
        for k in 0..50u64 {
            f.set_len(4096 * (k % 7 + 1)).unwrap();
            f.set_len(1 << 20).unwrap();
            f.write_all_at(&vec![5u8; 1 << 20], 0).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(
        !f.fault_state().is_faulted(),
        "cuts through the layer never fault a reader"
    );
}

fn is_faulted(e: &std::io::Error) -> bool {
    matches!(
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<segpool::Error>())
            .map(segpool::Error::kind),
        Some(segpool::ErrorKind::Faulted { .. })
    )
}

#[test]
fn a_poisoned_file_fails_fast_for_every_handle_until_all_close() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let a = fs.create("p").unwrap();
    a.write_all_at(b"data", 0).unwrap();
    let b = fs.open("p").unwrap();
    // What the SIGBUS guard (or a failed msync) does to the shared state.
    a.fault_state().poison(0x1000);
    let mut buf = [0u8; 4];
    assert!(is_faulted(&b.read_at(&mut buf, 0).unwrap_err()));
    assert!(is_faulted(&b.write_at(b"x", 0).unwrap_err()));
    assert!(is_faulted(&b.with_view(0, 1, |_| ()).unwrap_err()));
    assert!(is_faulted(&b.set_len(1).unwrap_err()));
    assert!(is_faulted(&b.sync_all().unwrap_err()));
    assert!(is_faulted(&b.sync_range(0, 1).unwrap_err()));
    assert!(
        is_faulted(&fs.open("p").unwrap_err()),
        "no new handle on a poisoned file"
    );
    assert!(
        is_faulted(&a.close().unwrap_err()),
        "close reports the fault"
    );
    drop(b);
    let c = fs.open("p").unwrap();
    assert!(
        !c.fault_state().is_faulted(),
        "reopened after every handle closed: healthy"
    );
    c.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"data");
}

#[test]
fn readers_on_another_handle_follow_a_growing_file() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let writer = fs.create("grow").unwrap();
    let reader = Arc::new(
        MmapFs::new(dir.path(), MapConfig::default())
            .unwrap()
            .open("grow")
            .unwrap(),
    );
    let byte = |i: u64| (i / 4096) as u8 ^ 0xa5;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let reader = Arc::clone(&reader);
            let done = &done;
            s.spawn(move || {
                let mut seen = 0u64;
                let mut buf = vec![0u8; 4096];
                let mut k = t;
                while !done.load(std::sync::atomic::Ordering::Acquire) || seen < reader.len() {
                    let len = reader.len();
                    if len == 0 {
                        continue;
                    }
                    k = k
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let off = (k >> 11) % len / 4096 * 4096;
                    let n = reader.read_at(&mut buf, off).unwrap();
                    assert!(n > 0);
                    assert!(
                        buf[..n].iter().all(|&b| b == byte(off)),
                        "stale or torn bytes at {off}"
                    );
                    seen = seen.max(len);
                }
            });
        }
        for page in 0..2048u64 {
            writer
                .write_all_at(&[byte(page * 4096); 4096], page * 4096)
                .unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Release);
    });
    assert_eq!(reader.len(), 2048 * 4096);
}
