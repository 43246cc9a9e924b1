//! The pool may be dropped before its segments: they stay valid, and their regions are unmapped
//! when the last of them is released, on whichever thread releases it.

mod common;

use std::thread;

use segpool::{Segment, SegmentPool};

#[test]
fn segments_outlive_their_pool_and_unmap_their_regions_on_release() {
    let pool = SegmentPool::builder()
        .size_classes(&[4096, 65536])
        .build()
        .unwrap();
    let mut segs: Vec<Segment> = (0..40)
        .map(|i| {
            pool.allocate(if i % 2 == 0 { 4096 } else { 65536 })
                .unwrap()
        })
        .collect();
    let big = pool.allocate(5 << 20).unwrap();
    let addrs: Vec<usize> = segs
        .iter()
        .map(|s| s.as_ptr() as usize)
        .chain([big.as_ptr() as usize])
        .collect();
    drop(pool);
    for (i, s) in segs.iter_mut().enumerate() {
        s.fill(i as u8);
    }
    assert!(addrs.iter().all(|&a| common::is_mapped(a)));
    // Release half here, half (and the big one) on two other threads.
    let rest = segs.split_off(20);
    let handles: Vec<_> = [rest, Vec::new()]
        .into_iter()
        .enumerate()
        .map(|(k, part)| {
            let big = (k == 1).then_some(());
            let part: Vec<Segment> = part;
            thread::spawn(move || {
                for (i, s) in part.iter().enumerate() {
                    assert!(s.iter().all(|&b| b == (i + 20) as u8));
                }
                drop(part);
                big
            })
        })
        .collect();
    for (i, s) in segs.iter().enumerate() {
        assert!(s.iter().all(|&b| b == i as u8));
    }
    drop(segs);
    for h in handles {
        h.join().unwrap();
    }
    thread::spawn(move || drop(big)).join().unwrap();
    for a in addrs {
        assert!(
            !common::is_mapped(a),
            "{a:#x} is still mapped after its last segment was released"
        );
    }
}
