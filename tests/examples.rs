//! Runs the examples' logic (their own `run` functions, compiled in here) with sizes small
//! enough for a debug build, and checks what each one promises.

#[allow(dead_code)]
#[path = "../examples/parallel_serializer.rs"]
mod parallel_serializer;

#[allow(dead_code)]
#[path = "../examples/page_cache.rs"]
mod page_cache;

#[allow(dead_code)]
#[path = "../examples/budget_server.rs"]
mod budget_server;

#[cfg(feature = "io-uring")]
#[allow(dead_code)]
#[path = "../examples/uring_reader.rs"]
mod uring_reader;

#[cfg(feature = "io-uring")]
#[test]
fn uring_reader_streams_every_byte_in_order_within_budget() {
    use std::io::Write as _;
    // Not a whole number of chunks, so the last read is short of a segment.
    let len = 3 * (1 << 20) + 12_345;
    let bytes: Vec<u8> = (0..len as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&bytes).unwrap();
    let cfg = uring_reader::Config {
        chunk: 64 << 10,
        // 32 reads of 64 KiB would need 2 MiB: the 1 MiB budget holds the reader back.
        depth: 32,
        budget: 1 << 20,
    };
    let r = uring_reader::run(f.path(), &cfg).unwrap();
    assert_eq!(r.bytes, len as u64);
    assert_eq!(
        r.checksum,
        uring_reader::fnv1a(uring_reader::FNV_START, &bytes),
        "the stream is the file, in order"
    );
    assert!(
        r.peak_mapped <= cfg.budget,
        "{} > {}",
        r.peak_mapped,
        cfg.budget
    );
    assert!(r.budget_waits > 0, "the budget limited the reads in flight");
    assert!(r.peak_in_flight < cfg.depth);
    assert!(r.fixed_reads >= (len / cfg.chunk) as u64);
    assert_eq!(r.plain_reads, 0, "every segment had a fixed index");
}

#[test]
fn parallel_serializer_writes_and_verifies_every_record_within_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = parallel_serializer::Config {
        threads: 3,
        records: 20_000,
        // 16 segments: small enough that workers must wait for the writer.
        budget: 1 << 20,
    };
    let r = parallel_serializer::run(dir.path(), &cfg).unwrap();
    assert_eq!(r.records, 20_000);
    assert!(r.bytes > 20_000 * 20, "every record is at least 20 bytes");
    assert!(r.peak_mapped > 0 && r.peak_mapped <= cfg.budget);
    let on_disk = std::fs::metadata(dir.path().join("records.bin"))
        .unwrap()
        .len();
    assert_eq!(on_disk, r.bytes);
}

#[test]
fn page_cache_evicts_under_its_budget_and_hits_the_hot_pages() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = page_cache::Config {
        pages: 2048,     // an 8 MiB file
        budget: 1 << 20, // 256 pages
        reads: 40_000,
        threads: 2,
        skew: 1.0,
        direct: false,
    };
    let r = page_cache::run(dir.path(), &cfg).unwrap();
    assert_eq!(r.hits + r.misses, 40_000);
    assert!(r.peak_mapped <= cfg.budget);
    assert!(r.peak_resident * 4096 <= cfg.budget);
    // Mapped misses leave the file's pages in the kernel's page cache too (more of them than the
    // cache holds): the double caching direct mode avoids.
    assert!(r.kernel_cached_pages > 256, "{}", r.kernel_cached_pages);
    // As the cache shrank, the pool's resident memory followed it (within the slack the
    // example allows: this thread's cache of free pages and a tenth of the budget).
    let slack = cfg.budget / 16 + cfg.budget / 10;
    for &(pages, resident) in &r.shrink[1..] {
        assert!(
            resident <= pages * 4096 + slack,
            "{pages} pages cached, {resident} bytes resident: {:?}",
            r.shrink
        );
    }
    assert_eq!(r.shrink.last().map(|s| s.0), Some(0));
    // The file is 8x the cache: without eviction the misses could not have been served.
    assert!(r.evictions > 0);
    assert!(r.misses > 256);
    // Zipf(1) over 2048 pages puts well over a third of the reads on the 256 hottest pages;
    // clock keeps most of them (no timing involved: counts only).
    assert!(
        r.hits * 3 > r.hits + r.misses,
        "hit rate {} / {}",
        r.hits,
        r.hits + r.misses
    );
}

#[test]
fn page_cache_direct_mode_reads_every_page_right_and_leaves_no_page_cache() {
    // On the crate's own disk: /tmp may be tmpfs, which has no direct I/O.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cfg = page_cache::Config {
        pages: 2048,
        budget: 1 << 20,
        reads: 20_000,
        threads: 2,
        skew: 1.0,
        direct: true,
    };
    let r = page_cache::run(dir.path(), &cfg).unwrap();
    assert_eq!(r.hits + r.misses, 20_000);
    assert!(r.misses > 256 && r.evictions > 0);
    assert!(r.peak_mapped <= cfg.budget);
    assert_eq!(
        r.kernel_cached_pages, 0,
        "direct misses filled the kernel's page cache"
    );
}

#[test]
fn page_cache_uniform_workload_still_stays_in_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = page_cache::Config {
        pages: 1024,
        budget: 256 << 10,
        reads: 10_000,
        threads: 3,
        skew: 0.0,
        direct: false,
    };
    let r = page_cache::run(dir.path(), &cfg).unwrap();
    assert_eq!(r.hits + r.misses, 9_999); // 10_000 split over 3 threads
    assert!(r.peak_mapped <= cfg.budget);
}

#[test]
fn budget_server_echoes_every_byte_and_applies_backpressure_within_budget() {
    let cfg = budget_server::Config {
        connections: 24,
        concurrency: 12,
        bytes_per_connection: 64 << 10,
        budget: 256 << 10, // 4 buffers for 12 connections at once
    };
    let r = budget_server::run(&cfg).unwrap();
    assert_eq!(r.connections, 24);
    assert_eq!(r.bytes_echoed, 24 * (64 << 10));
    assert!(r.peak_mapped <= cfg.budget);
}

#[test]
fn budget_server_async_serves_many_connections_on_one_thread_within_budget() {
    let cfg = budget_server::Config {
        connections: 96,
        concurrency: 48,
        bytes_per_connection: 64 << 10,
        budget: 256 << 10, // 4 buffers for 48 connections at once
    };
    let r = budget_server::run_async(&cfg).unwrap();
    assert_eq!(r.connections, 96);
    assert_eq!(r.bytes_echoed, 96 * (64 << 10));
    // Far more connections at once than buffers: most handlers awaited theirs.
    assert!(r.waited > 0);
    assert!(r.peak_mapped <= cfg.budget);
}
