//! `SegmentWriter` through `std::io::Write` and `SegmentChain` through `std::io::Read`: no
//! feature needed. The `bytes` side is in `tests/bytes_bridge.rs`.

use std::io::{BufRead, ErrorKind, Read, Write};

use segpool::{Error, SegmentPool};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn read_all(mut chain: segpool::SegmentChain) -> Vec<u8> {
    let mut out = Vec::new();
    chain.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn writes_of_every_shape_read_back_in_order() {
    let pool = SegmentPool::new().unwrap();
    let data = pattern(3 * 4096 + 17);
    // One byte at a time, then pieces that straddle segment ends, then one large write.
    for piece in [1, 7, 4095, 4096, 4097, data.len()] {
        let mut w = pool.writer_with_segment_size(4096).unwrap();
        for part in data.chunks(piece) {
            w.write_all(part).unwrap();
        }
        assert_eq!(w.len(), data.len());
        let chain = w.finish();
        assert_eq!(chain.len(), data.len());
        assert_eq!(chain.chunks().count(), 4, "piece {piece}");
        assert!(chain.chunks().all(|c| c.as_ptr() as usize % 4096 == 0));
        assert_eq!(read_all(chain), data, "piece {piece}");
    }
    assert_eq!(pool.stats().in_use_bytes, 0);
}

#[test]
fn the_default_segment_size_fits_the_pool() {
    let pool = SegmentPool::new().unwrap();
    assert_eq!(pool.writer().segment_size(), 64 * KIB);
    // A pool whose largest class is smaller: the writer never asks for a dedicated mapping.
    let small = SegmentPool::builder()
        .size_classes(&[4096, 16 * KIB])
        .build()
        .unwrap();
    let mut w = small.writer();
    assert_eq!(w.segment_size(), 16 * KIB);
    w.write_all(&pattern(100 * KIB)).unwrap();
    assert_eq!(small.stats().dedicated_segments, 0);
}

#[test]
fn a_partial_write_reports_what_it_wrote_and_the_next_call_the_refusal() {
    let pool = SegmentPool::builder().budget(MIB).build().unwrap();
    let mut w = pool.writer();
    let data = pattern(2 * MIB);
    let n = w.write(&data).unwrap();
    assert!(n > 0 && n < data.len(), "wrote {n}");
    assert_eq!(w.len(), n);
    let e = w.write(&data[n..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfMemory);
    let inner = e
        .get_ref()
        .and_then(|e| e.downcast_ref::<Error>())
        .map(Error::kind);
    assert!(
        matches!(inner, Some(segpool::ErrorKind::BudgetExceeded { budget, .. }) if *budget == MIB),
        "{e:?}"
    );
    assert_eq!(w.len(), n);
    assert_eq!(read_all(w.finish()), data[..n]);
}

#[test]
fn a_budget_refusal_keeps_every_byte_and_the_writer_goes_on_after_memory_comes_back() {
    let pool = SegmentPool::builder().budget(MIB).build().unwrap();
    // Another user of the pool holds a quarter of the budget.
    let blocker = pool.allocate(256 * KIB).unwrap();
    let data = pattern(MIB - 4096);
    let mut w = pool.writer();
    let e = w.write_all(&data).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfMemory);
    assert!(matches!(
        e.get_ref()
            .and_then(|e| e.downcast_ref::<Error>())
            .map(Error::kind),
        Some(segpool::ErrorKind::BudgetExceeded { .. })
    ));
    let written = w.len();
    assert_eq!(written, 768 * KIB, "three regions of the 64 KiB class");
    drop(blocker);
    w.write_all(&data[written..]).unwrap();
    assert_eq!(read_all(w.finish()), data);
    assert_eq!(pool.stats().in_use_bytes, 0);
}

#[test]
fn try_reserve_is_all_or_nothing() {
    let pool = SegmentPool::builder().budget(MIB).build().unwrap();
    let mut w = pool.writer();
    w.write_all(b"kept").unwrap();
    let before = pool.stats().in_use_bytes;
    let e = w.try_reserve(2 * MIB).unwrap_err();
    assert!(
        matches!(e.kind(), segpool::ErrorKind::BudgetExceeded { .. }),
        "{e:?}"
    );
    assert_eq!(
        pool.stats().in_use_bytes,
        before,
        "the failed reserve gave back its segments"
    );
    assert_eq!(w.reserved(), 64 * KIB - 4);

    w.try_reserve(512 * KIB).unwrap();
    assert!(w.reserved() >= 512 * KIB);
    // Someone else takes the rest of the budget: the reserved bytes are still writable.
    let mut others = Vec::new();
    while let Ok(s) = pool.allocate(64 * KIB) {
        others.push(s);
    }
    let data = pattern(512 * KIB);
    w.write_all(&data).unwrap();
    let chain = w.finish();
    assert_eq!(chain.len(), 4 + data.len());
    let mut back = read_all(chain);
    assert_eq!(&back[..4], b"kept");
    back.drain(..4);
    assert_eq!(back, data);
}

#[test]
fn reading_releases_each_segment_once_read_past() {
    let pool = SegmentPool::new().unwrap();
    let mut w = pool.writer_with_segment_size(4096).unwrap();
    let data = pattern(4 * 4096);
    w.write_all(&data).unwrap();
    let mut chain = w.finish();
    assert_eq!(pool.stats().in_use_bytes, 4 * 4096);
    let mut first = vec![0; 4096 + 10];
    chain.read_exact(&mut first).unwrap();
    assert_eq!(first, data[..4096 + 10]);
    assert_eq!(pool.stats().in_use_bytes, 3 * 4096);
    assert_eq!(chain.len(), data.len() - first.len());
    // BufRead sees the rest of the current segment.
    assert_eq!(chain.fill_buf().unwrap(), &data[4096 + 10..2 * 4096]);
    chain.consume(4096 - 10);
    assert_eq!(pool.stats().in_use_bytes, 2 * 4096);
    drop(chain);
    assert_eq!(pool.stats().in_use_bytes, 0);
}

#[test]
fn zero_length_cases() {
    let pool = SegmentPool::new().unwrap();
    assert!(matches!(
        pool.writer_with_segment_size(0).map_err(Error::into_kind),
        Err(segpool::ErrorKind::ZeroSize)
    ));
    let allocations = pool.stats().allocations;
    let mut w = pool.writer();
    assert_eq!(w.write(&[]).unwrap(), 0);
    w.write_all(&[]).unwrap();
    w.flush().unwrap();
    assert!(w.is_empty());
    assert_eq!(
        pool.stats().allocations,
        allocations,
        "no segment for nothing"
    );
    let mut chain = w.finish();
    assert!(chain.is_empty());
    assert_eq!(chain.chunks().count(), 0);
    assert_eq!(chain.fill_buf().unwrap(), b"");
    assert_eq!(chain.read(&mut [0; 8]).unwrap(), 0);

    // A reserve that is never written goes back at `finish`.
    let mut w = pool.writer();
    w.try_reserve(100 * KIB).unwrap();
    assert!(pool.stats().in_use_bytes >= 100 * KIB);
    let chain = w.finish();
    assert!(chain.is_empty());
    assert_eq!(chain.chunks().count(), 0);
    assert_eq!(pool.stats().in_use_bytes, 0);
}

#[test]
fn writers_and_chains_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<segpool::SegmentWriter>();
    send_sync::<segpool::SegmentChain>();

    let pool = SegmentPool::new().unwrap();
    let mut w = pool.writer();
    let chain = std::thread::spawn(move || {
        w.write_all(&pattern(200 * KIB)).unwrap();
        w.finish()
    })
    .join()
    .unwrap();
    assert_eq!(read_all(chain), pattern(200 * KIB));
}
