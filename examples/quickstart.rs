//! Allocate, write, release and print the pool's stats: the smallest useful tour of segpool.

use segpool::{Segment, SegmentPool};

fn main() -> segpool::Result<()> {
    let pool = SegmentPool::builder().budget(64 << 20).build()?;

    // A few segments of every class, each filled with its own pattern.
    let mut held: Vec<Segment> = Vec::new();
    for (i, size) in [1000, 10_000, 60_000, 200_000, 1 << 20, 3 << 20]
        .iter()
        .cycle()
        .take(24)
        .enumerate()
    {
        let mut seg = pool.allocate(*size)?;
        seg.fill(i as u8);
        held.push(seg);
    }
    for (i, seg) in held.iter().enumerate() {
        assert!(
            seg.iter().all(|&b| b == i as u8),
            "segment {i} lost its pattern"
        );
        assert_eq!(seg.as_ptr() as usize % 4096, 0);
    }
    println!("with {} segments held:\n{}", held.len(), pool.stats());

    drop(held);
    let freed = pool.trim();
    println!(
        "after release and trim ({} bytes unmapped):\n{}",
        freed,
        pool.stats()
    );
    Ok(())
}
