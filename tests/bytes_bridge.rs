//! The `bytes` feature: `Segment::into_bytes`, `BufMut` for `SegmentWriter`, `Buf` and
//! `Vec<Bytes>` for `SegmentChain`. (Built only with the feature: see `required-features` in
//! Cargo.toml; `cargo test --workspace` turns it on through the cli; alone:
//! `cargo test --features bytes --test bytes_bridge`.)

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread;

use bytes::{Buf, BufMut, Bytes};
use segpool::{Error, ErrorKind, SegmentPool};
use serde_json::{json, Value};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// A JSON document of several MiB: records with numbers, strings and nested arrays.
fn big_value() -> Value {
    let records: Vec<Value> = (0..40_000u64)
        .map(|i| {
            json!({
                "id": i,
                "name": format!("record-{i:08}"),
                // Integers only: serde_json's default float parsing does not round-trip every f64.
                "score": (i as i64 * 37 % 1001) - 500,
                "tags": ["segment", "pool", i.to_string()],
                "payload": "x".repeat((i % 64) as usize),
            })
        })
        .collect();
    json!({ "records": records, "complete": true })
}

#[test]
fn serde_json_writes_megabytes_into_a_writer_and_reads_back_through_buf() {
    let pool = SegmentPool::new().unwrap();
    let value = big_value();

    let mut w = pool.writer();
    serde_json::to_writer(&mut w, &value).unwrap();
    let len = w.len();
    assert!(len > 4 * MIB, "only {len} bytes");
    let mut chain = w.finish();
    assert_eq!(chain.len(), len);
    assert_eq!(chain.remaining(), len);

    // Every segment of the chain is out of the pool.
    let segments = chain.chunks().count();
    assert_eq!(segments, len.div_ceil(64 * KIB));
    let stats = pool.stats();
    assert_eq!(stats.in_use_bytes, segments * 64 * KIB);
    assert_eq!(stats.allocations - stats.releases, segments as u64);

    // Back through `Buf` (its `reader`), which releases each segment once read past.
    let back: Value = serde_json::from_reader((&mut chain).reader()).unwrap();
    assert!(back == value, "the value read back differs");
    assert_eq!(chain.remaining(), 0);
    assert_eq!(pool.stats().in_use_bytes, 0);
    drop(chain);
    let stats = pool.stats();
    assert_eq!(stats.in_use_bytes, 0);
    assert_eq!(stats.allocations, stats.releases);
}

#[test]
fn a_chain_becomes_bytes_without_copying_and_they_give_the_segments_back() {
    let pool = SegmentPool::new().unwrap();
    let value = big_value();
    let mut w = pool.writer();
    serde_json::to_writer(&mut w, &value).unwrap();
    let mut chain = w.finish();
    // Read a little first: the first `Bytes` starts where reading stopped.
    let mut head = [0u8; 10];
    chain.copy_to_slice(&mut head);
    let starts: Vec<*const u8> = chain.chunks().map(<[u8]>::as_ptr).collect();
    let in_use = pool.stats().in_use_bytes;

    let parts: Vec<Bytes> = chain.into();
    assert_eq!(
        parts.iter().map(|b| b.as_ptr()).collect::<Vec<_>>(),
        starts,
        "the same memory, not a copy"
    );
    assert_eq!(pool.stats().in_use_bytes, in_use);
    let mut text = head.to_vec();
    for p in &parts {
        text.extend_from_slice(p);
    }
    assert!(serde_json::from_slice::<Value>(&text).unwrap() == value);

    // A slice of one part keeps only that segment.
    let kept = parts[1].slice(5..100);
    drop(parts);
    assert_eq!(pool.stats().in_use_bytes, 64 * KIB);
    drop(kept);
    assert_eq!(pool.stats().in_use_bytes, 0);
}

#[test]
fn buf_mut_writes_read_back_through_buf() {
    let pool = SegmentPool::new().unwrap();
    let mut w = pool.writer_with_segment_size(4096).unwrap();
    assert_eq!(w.remaining_mut(), usize::MAX, "no budget: unbounded");
    for i in 0..5000u32 {
        w.put_u32(i);
        w.put_u8(b'|');
    }
    w.put_slice(&pattern(10_000));
    assert_eq!(w.remaining_mut(), usize::MAX - w.len());
    let mut chain = w.finish();
    assert_eq!(chain.remaining(), 5000 * 5 + 10_000);
    for i in 0..5000u32 {
        assert_eq!(chain.get_u32(), i);
        assert_eq!(chain.get_u8(), b'|');
    }
    let mut rest = vec![0; 10_000];
    chain.copy_to_slice(&mut rest);
    assert_eq!(rest, pattern(10_000));
    assert!(!chain.has_remaining());
}

#[test]
fn chunks_vectored_gives_every_segment() {
    let pool = SegmentPool::new().unwrap();
    let mut w = pool.writer_with_segment_size(4096).unwrap();
    w.write_all(&pattern(3 * 4096 + 5)).unwrap();
    let chain = w.finish();
    let mut slots = [std::io::IoSlice::new(&[]); 8];
    assert_eq!(chain.chunks_vectored(&mut slots), 4);
    let lens: Vec<usize> = slots[..4].iter().map(|s| s.len()).collect();
    assert_eq!(lens, [4096, 4096, 4096, 5]);
}

#[test]
fn buf_mut_panics_at_the_budget_and_keeps_what_it_wrote() {
    let pool = SegmentPool::builder().budget(MIB).build().unwrap();
    let blocker = pool.allocate(256 * KIB).unwrap();
    let mut w = pool.writer();
    assert_eq!(w.remaining_mut(), MIB, "at most the budget");
    let data = pattern(900 * KIB);
    let panic = catch_unwind(AssertUnwindSafe(|| w.put_slice(&data))).unwrap_err();
    let msg = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or("");
    assert!(msg.contains("budget exceeded"), "{msg}");
    // Three regions of the 64 KiB class fit beside the blocker.
    assert_eq!(w.len(), 768 * KIB);
    assert_eq!(w.remaining_mut(), 256 * KIB);

    // More than the budget could ever hold is refused up front by `put_slice`'s own check.
    let too_big = pattern(MIB);
    assert!(catch_unwind(AssertUnwindSafe(|| w.put_slice(&too_big))).is_err());
    assert_eq!(w.len(), 768 * KIB, "nothing written by a refused put");

    drop(blocker);
    w.put_slice(&data[768 * KIB..]);
    let mut chain = w.finish();
    let mut back = vec![0; data.len()];
    chain.copy_to_slice(&mut back);
    assert_eq!(back, data);
}

#[test]
fn try_reserve_makes_buf_mut_safe_under_the_budget() {
    let pool = SegmentPool::builder().budget(MIB).build().unwrap();
    let mut w = pool.writer();
    assert!(matches!(
        w.try_reserve(2 * MIB).map_err(Error::into_kind),
        Err(ErrorKind::BudgetExceeded { .. })
    ));
    w.try_reserve(300 * KIB).unwrap();
    let mut others = Vec::new();
    while let Ok(s) = pool.allocate(64 * KIB) {
        others.push(s);
    }
    let data = pattern(300 * KIB);
    w.put_slice(&data);
    assert_eq!(w.finish().copy_to_bytes(data.len()), data);
}

#[test]
fn into_bytes_clones_dropped_on_other_threads_return_the_slice() {
    let pool = SegmentPool::new().unwrap();
    let mut seg = pool.allocate(4096).unwrap();
    seg[..11].copy_from_slice(b"hello world");
    let bytes = seg.into_bytes(11);
    assert_eq!(&bytes[..], b"hello world");

    let mut gates = Vec::new();
    let mut threads = Vec::new();
    for i in 0..4 {
        let (go, wait) = mpsc::channel::<()>();
        let clone = if i % 2 == 0 {
            bytes.clone()
        } else {
            bytes.slice(6..)
        };
        gates.push(go);
        threads.push(thread::spawn(move || {
            wait.recv().unwrap();
            assert!(clone == b"hello world"[..] || clone == b"world"[..]);
            drop(clone);
        }));
    }
    drop(bytes);
    // The threads' clones still hold the segment.
    assert_eq!(pool.stats().in_use_bytes, 4096);
    for g in gates {
        g.send(()).unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    let stats = pool.stats();
    assert_eq!(stats.in_use_bytes, 0);
    assert_eq!(stats.allocations, stats.releases);
}

#[test]
fn zero_length_cases() {
    let pool = SegmentPool::new().unwrap();
    // An empty `Bytes` does not keep its segment.
    let empty = pool.allocate(4096).unwrap().into_bytes(0);
    assert!(empty.is_empty());
    assert_eq!(pool.stats().in_use_bytes, 0);

    // A whole segment.
    let full = pool.allocate(4096).unwrap().into_bytes(4096);
    assert_eq!(full.len(), 4096);
    drop(full);

    // A writer that wrote nothing.
    let mut chain = pool.writer().finish();
    assert_eq!(chain.remaining(), 0);
    assert_eq!(chain.chunk(), b"");
    chain.advance(0);
    assert!(chain.into_bytes_vec().is_empty());

    // A chunk asked for and not written: the segment goes back at `finish`.
    let mut w = pool.writer();
    assert_eq!(w.chunk_mut().len(), 64 * KIB);
    let chain = w.finish();
    assert_eq!(chain.remaining(), 0);
    assert_eq!(pool.stats().in_use_bytes, 0);

    // A chain read to its end converts to nothing.
    let mut w = pool.writer();
    w.put_slice(b"abc");
    let mut chain = w.finish();
    chain.advance(3);
    assert!(chain.into_bytes_vec().is_empty());
    assert_eq!(pool.stats().in_use_bytes, 0);
}

#[test]
#[should_panic(expected = "Segment::into_bytes: 4097 bytes asked of a segment of 4096 bytes")]
fn into_bytes_past_the_end_panics() {
    let pool = SegmentPool::new().unwrap();
    let _ = pool.allocate(4096).unwrap().into_bytes(4097);
}

#[test]
#[should_panic(expected = "only 3 are left")]
fn advancing_a_chain_past_its_end_panics() {
    let pool = SegmentPool::new().unwrap();
    let mut w = pool.writer();
    w.put_slice(b"abc");
    w.finish().advance(4);
}
