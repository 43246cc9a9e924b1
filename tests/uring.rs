//! io_uring fixed buffers over a pool's regions, with a real ring (feature `io-uring`).
//!
//! Fixed reads of a file into segments of several classes are checked byte by byte while another
//! thread allocates, releases and trims (so regions are mapped and unmapped, and their slots
//! registered and cleared, under the reads); a region unmapped by a trim frees its slot; every
//! refusal at `register` names its cause.

use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use io_uring::{opcode, types, IoUring};
use segpool::uring::FixedBuffers;
use segpool::{Backing, Diagnostics, Error, ErrorKind, Segment, SegmentPool};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// The byte at `offset` of the test file (not periodic in any power of two below 2^32).
fn pattern(offset: u64) -> u8 {
    let x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8 ^ (offset >> 12) as u8
}

fn pattern_file(len: usize) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let bytes: Vec<u8> = (0..len as u64).map(pattern).collect();
    f.write_all(&bytes).unwrap();
    f.flush().unwrap();
    f
}

/// Four classes, 1 MiB regions, every empty region unmapped at once.
fn four_class_pool() -> SegmentPool {
    SegmentPool::builder()
        .size_classes(&[4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB])
        .region_size(MIB)
        .retain_empty_regions(0)
        .empty_region_grace(Duration::ZERO)
        .build()
        .unwrap()
}

fn fixed_buffers_error(r: segpool::Result<FixedBuffers>) -> String {
    match r {
        Err(e) if matches!(e.kind(), ErrorKind::FixedBuffers { .. }) => e.to_string(),
        other => panic!("expected a FixedBuffers error, got {other:?}"),
    }
}

/// Reads `segs[i].len()` bytes at `offsets[i]` into each segment with `ReadFixed`, all in flight
/// at once, and checks every byte.
fn read_fixed_and_verify(
    ring: &mut IoUring,
    fixed: &FixedBuffers,
    file: &std::fs::File,
    segs: &mut [Segment],
    offsets: &[u64],
) {
    for (i, (seg, &off)) in segs.iter_mut().zip(offsets).enumerate() {
        let index = fixed
            .index_of(seg)
            .unwrap_or_else(|| panic!("segment of {} bytes has no fixed index", seg.len()));
        seg.fill(0xEE);
        let sqe = opcode::ReadFixed::new(
            types::Fd(file.as_raw_fd()),
            seg.as_mut_ptr(),
            seg.len() as u32,
            index,
        )
        .offset(off)
        .build()
        .user_data(i as u64);
        // SAFETY: the segment outlives the operation: we wait for every completion below before
        // it can be dropped, and nothing else touches it meanwhile.
        unsafe { ring.submission().push(&sqe).unwrap() };
    }
    ring.submit_and_wait(segs.len()).unwrap();
    let mut done = 0;
    while done < segs.len() {
        let cqes: Vec<_> = ring.completion().collect();
        if cqes.is_empty() {
            ring.submit_and_wait(1).unwrap();
            continue;
        }
        for cqe in cqes {
            let i = cqe.user_data() as usize;
            assert_eq!(
                cqe.result(),
                segs[i].len() as i32,
                "fixed read of {} bytes at {}",
                segs[i].len(),
                offsets[i]
            );
            done += 1;
        }
    }
    for (seg, &off) in segs.iter().zip(offsets) {
        for (j, &b) in seg.iter().enumerate() {
            assert_eq!(b, pattern(off + j as u64), "byte {j} of the read at {off}");
        }
    }
}

#[test]
fn fixed_reads_into_several_classes_while_another_thread_allocates_releases_and_trims() {
    const FILE: usize = 4 * MIB;
    let file = pattern_file(FILE);
    let pool = four_class_pool();
    let mut ring = IoUring::new(32).unwrap();
    let fixed = FixedBuffers::register(&pool, &ring, 64).unwrap();
    assert_eq!(fixed.registered(), 0, "no region is mapped yet");

    let stop = AtomicBool::new(false);
    let churned = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let sizes = [4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut held: Vec<Segment> = (0..8)
                    .map(|k| pool.allocate(sizes[(n as usize + k) % 4]).unwrap())
                    .collect();
                for (k, seg) in held.iter_mut().enumerate() {
                    seg.fill(k as u8);
                }
                held.clear();
                if n % 4 == 0 {
                    pool.trim();
                }
                n += 1;
            }
            // Give this thread's cached slices back now, not at some point of its exit.
            pool.trim();
            churned.store(n, Ordering::Relaxed);
        });

        let sizes = [4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB];
        for round in 0..150u64 {
            let mut segs: Vec<Segment> = sizes.iter().map(|&s| pool.allocate(s).unwrap()).collect();
            // Offsets that are not multiples of the segment sizes, and differ every round.
            let offsets: Vec<u64> = segs
                .iter()
                .enumerate()
                .map(|(i, seg)| {
                    let span = (FILE - seg.len()) as u64;
                    (round * 7919 * 4096 + i as u64 * 12_345) % span
                })
                .collect();
            read_fixed_and_verify(&mut ring, &fixed, file.as_file(), &mut segs, &offsets);
            if round % 10 == 0 {
                // Our own segments go back too, so our regions are unmapped under the reads.
                drop(segs);
                pool.trim();
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(churned.load(Ordering::Relaxed) > 0);
    assert_eq!(fixed.refused(), 0);
    let stats = pool.stats();
    assert!(
        stats.regions_unmapped > 0,
        "regions were unmapped under the reads"
    );
    // Everything back and trimmed: every slot is free again.
    pool.trim();
    assert_eq!(pool.stats().regions, 0);
    assert_eq!(fixed.registered(), 0);
}

#[test]
fn a_region_unmapped_by_trim_frees_its_slot() {
    let pool = four_class_pool();
    let ring = IoUring::new(8).unwrap();
    // Two slots, four classes: without freed slots the table would be full after two regions.
    let fixed = FixedBuffers::register(&pool, &ring, 2).unwrap();
    for i in 0..40 {
        let size = [4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB][i % 4];
        let seg = pool.allocate(size).unwrap();
        assert!(fixed.index_of(&seg).is_some(), "round {i}");
        assert_eq!(fixed.registered(), 1);
        drop(seg);
        pool.trim();
        assert_eq!(fixed.registered(), 0, "round {i}");
    }
    assert_eq!(fixed.refused(), 0);
    assert!(pool.stats().regions_mapped >= 40);
}

#[test]
fn a_pool_with_fixed_buffers_is_never_purged() {
    // Free slices inside a live region: purging would drop pages the kernel has pinned.
    let pool = SegmentPool::builder()
        .size_classes(&[4 * KIB])
        .purge_decay(Duration::ZERO)
        .build()
        .unwrap();
    let ring = IoUring::new(8).unwrap();
    let fixed = FixedBuffers::register(&pool, &ring, 8).unwrap();
    let mut segs: Vec<Segment> = (0..64).map(|_| pool.allocate(4 * KIB).unwrap()).collect();
    for s in &mut segs {
        s.fill(0x5a);
    }
    let keep = segs.split_off(60);
    drop(segs);
    pool.trim();
    assert_eq!(pool.stats().purged_bytes, 0, "a registered pool was purged");
    assert!(keep.iter().all(|s| fixed.index_of(s).is_some()));
    // Without the table, the same pool purges.
    drop(fixed);
    pool.trim();
    assert!(
        pool.stats().purged_bytes > 0,
        "the check above could not fail"
    );
}

#[test]
fn a_full_table_leaves_new_regions_without_index_until_a_slot_frees() {
    let pool = four_class_pool();
    let ring = IoUring::new(8).unwrap();
    let fixed = FixedBuffers::register(&pool, &ring, 1).unwrap();
    let a = pool.allocate(4 * KIB).unwrap();
    let b = pool.allocate(16 * KIB).unwrap();
    assert_eq!(fixed.index_of(&a), Some(0));
    assert_eq!(fixed.index_of(&b), None, "the one slot is taken");
    assert_eq!(fixed.refused(), 1);
    drop(a);
    pool.trim();
    // `b`'s region stays unregistered (it was mapped while the table was full); a region mapped
    // now gets the freed slot.
    let c = pool.allocate(64 * KIB).unwrap();
    assert_eq!(fixed.index_of(&c), Some(0));
    assert_eq!(fixed.index_of(&b), None);
}

#[test]
fn register_takes_the_regions_already_mapped() {
    let pool = four_class_pool();
    let segs: Vec<Segment> = [4 * KIB, 64 * KIB]
        .iter()
        .map(|&s| pool.allocate(s).unwrap())
        .collect();
    let ring = IoUring::new(8).unwrap();
    let fixed = FixedBuffers::register(&pool, &ring, 4).unwrap();
    assert_eq!(fixed.registered(), 2);
    let idx: Vec<_> = segs.iter().map(|s| fixed.index_of(s).unwrap()).collect();
    assert_ne!(idx[0], idx[1]);
}

#[test]
fn dedicated_segments_and_other_pools_have_no_index() {
    let pool = four_class_pool();
    let other = four_class_pool();
    let ring = IoUring::new(8).unwrap();
    let fixed = FixedBuffers::register(&pool, &ring, 4).unwrap();
    let big = pool.allocate(MIB + 1).unwrap();
    assert_eq!(fixed.index_of(&big), None, "above the largest class");
    let foreign = other.allocate(4 * KIB).unwrap();
    assert_eq!(fixed.index_of(&foreign), None, "a segment of another pool");
    let own = pool.allocate(4 * KIB).unwrap();
    assert!(fixed.index_of(&own).is_some());
}

#[test]
fn dropping_the_table_unregisters_it_and_the_pool_goes_on() {
    let pool = four_class_pool();
    let ring = IoUring::new(8).unwrap();
    let fixed = FixedBuffers::register(&pool, &ring, 4).unwrap();
    let seg = pool.allocate(4 * KIB).unwrap();
    assert!(fixed.index_of(&seg).is_some());
    drop(fixed);
    // The ring's table is gone: a new one can be registered.
    let again = FixedBuffers::register(&pool, &ring, 4).unwrap();
    assert!(
        again.index_of(&seg).is_some(),
        "the live region is registered again"
    );
    drop(again);
    drop(seg);
    pool.trim();
    assert_eq!(
        pool.stats().regions,
        0,
        "the region is unmapped without a table"
    );
}

#[test]
fn register_refusals_name_their_cause() {
    let pool = four_class_pool();
    let ring = IoUring::new(8).unwrap();

    match FixedBuffers::register(&pool, &ring, 0).map_err(Error::into_kind) {
        Err(ErrorKind::InvalidConfig(m)) => assert!(m.contains("slots"), "{m}"),
        other => panic!("{other:?}"),
    }
    match FixedBuffers::register(&pool, &ring, (1 << 16) + 1).map_err(Error::into_kind) {
        Err(ErrorKind::InvalidConfig(m)) => assert!(m.contains("65537"), "{m}"),
        other => panic!("{other:?}"),
    }

    let dir = tempfile::tempdir().unwrap();
    let file_pool = SegmentPool::builder()
        .backing(Backing::File(dir.path().to_path_buf()))
        .build()
        .unwrap();
    let m = fixed_buffers_error(FixedBuffers::register(&file_pool, &ring, 4));
    assert!(m.contains("file-backed"), "{m}");

    let guarded = SegmentPool::builder()
        .diagnostics(Diagnostics::Full)
        .build()
        .unwrap();
    let m = fixed_buffers_error(FixedBuffers::register(&guarded, &ring, 4));
    assert!(m.contains("Diagnostics::Full"), "{m}");

    let single: IoUring = IoUring::builder().setup_single_issuer().build(8).unwrap();
    let m = fixed_buffers_error(FixedBuffers::register(&pool, &single, 4));
    assert!(m.contains("SINGLE_ISSUER"), "{m}");

    let first = FixedBuffers::register(&pool, &ring, 4).unwrap();
    let m = fixed_buffers_error(FixedBuffers::register(&pool, &ring, 4));
    assert!(m.contains("already has a fixed-buffer table"), "{m}");
    drop(first);

    let big = IoUring::new(8).unwrap();
    let m = fixed_buffers_error(FixedBuffers::register(&pool, &big, 1 << 16));
    assert!(m.contains("65536 slots"), "{m}");

    // More regions mapped than slots: refused at register, and the ring is left without a table.
    let held: Vec<Segment> = [4 * KIB, 16 * KIB, 64 * KIB]
        .iter()
        .map(|&s| pool.allocate(s).unwrap())
        .collect();
    let m = fixed_buffers_error(FixedBuffers::register(&pool, &ring, 2));
    assert!(
        m.contains("more regions mapped than the table's 2 slots"),
        "{m}"
    );
    let ok = FixedBuffers::register(&pool, &ring, 3).unwrap();
    assert_eq!(ok.registered(), 3);
    drop(held);
}

/// Run in a child process (this test binary, re-executed): drops `CAP_IPC_LOCK` from its thread
/// and lowers `RLIMIT_MEMLOCK` below one region, so the kernel refuses to pin it.
#[test]
fn a_region_beyond_rlimit_memlock_is_a_clear_error_at_register() {
    const NAME: &str = "a_region_beyond_rlimit_memlock_is_a_clear_error_at_register";
    const CHILD: &str = "SEGPOOL_URING_MEMLOCK_CHILD";
    if std::env::var_os(CHILD).is_some() {
        use rustix::process::{setrlimit, Resource, Rlimit};
        use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
        let mut caps = capabilities(None).unwrap();
        caps.effective.remove(CapabilitySet::IPC_LOCK);
        caps.permitted.remove(CapabilitySet::IPC_LOCK);
        set_capabilities(None, caps).unwrap();
        // Created without CAP_IPC_LOCK, so the ring and what it pins are charged to the user's
        // locked memory; created before the limit drops, because that charge is counted per
        // user, not per process: another process of the same user pinning memory at this moment
        // (a `perf record` buffer, another ring) could take a 64 KiB limit on its own and fail
        // the ring's creation instead of the registration this test is about.
        let ring = IoUring::new(8).unwrap();
        setrlimit(
            Resource::Memlock,
            Rlimit {
                current: Some(64 * KIB as u64),
                maximum: Some(64 * KIB as u64),
            },
        )
        .unwrap();
        let pool = four_class_pool();
        let _seg = pool.allocate(4 * KIB).unwrap(); // one 1 MiB region
        let m = fixed_buffers_error(FixedBuffers::register(&pool, &ring, 4));
        assert!(m.contains("RLIMIT_MEMLOCK (65536 bytes)"), "{m}");
        println!("refused: {m}");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("refused: "), "{stdout}");
}
