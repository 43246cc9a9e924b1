//! Bad input gets a clear error, never a panic.

use segpool::{Backing, Error, SegmentPool};

fn invalid(b: segpool::SegmentPoolBuilder, needle: &str) {
    match b.build() {
        Err(Error::InvalidConfig(msg)) => assert!(
            msg.contains(needle),
            "message {msg:?} should name {needle:?}"
        ),
        other => panic!("expected InvalidConfig naming {needle:?}, got {other:?}"),
    }
}

#[test]
fn every_invalid_builder_value_is_named_in_the_error() {
    invalid(
        SegmentPool::builder().size_classes(&[]),
        "at least one class",
    );
    invalid(SegmentPool::builder().size_classes(&[4096, 12288]), "12288");
    invalid(SegmentPool::builder().size_classes(&[2048, 4096]), "2048");
    invalid(
        SegmentPool::builder().size_classes(&[0]),
        "0 is not a power of two",
    );
    invalid(
        SegmentPool::builder().size_classes(&[65536, 4096]),
        "strictly increasing",
    );
    invalid(
        SegmentPool::builder().size_classes(&[4096, 4096]),
        "strictly increasing",
    );
    invalid(SegmentPool::builder().region_size(0), "region_size: 0");
    invalid(
        SegmentPool::builder().region_size(5000),
        "region_size: 5000",
    );
    invalid(SegmentPool::builder().region_size(2 << 30), "maximum");
    invalid(
        SegmentPool::builder().region_size(8 << 20).budget(4 << 20),
        "larger than the budget",
    );
    invalid(SegmentPool::builder().budget(0), "budget: 0");
    invalid(SegmentPool::builder().budget(100), "budget: 100");
}

#[test]
fn a_missing_or_unusable_backing_directory_fails_at_build() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("does-not-exist");
    invalid(
        SegmentPool::builder().backing(Backing::File(missing.clone())),
        "does-not-exist",
    );
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    invalid(
        SegmentPool::builder().backing(Backing::File(file)),
        "a-file",
    );
    assert!(!missing.exists(), "a failed build creates nothing");
}

#[test]
fn zero_and_absurd_sizes_are_errors() {
    let pool = SegmentPool::new().unwrap();
    assert!(matches!(pool.allocate(0), Err(Error::ZeroSize)));
    assert!(matches!(pool.allocate_zeroed(0), Err(Error::ZeroSize)));
    assert!(matches!(
        pool.allocate(usize::MAX),
        Err(Error::TooLarge { .. })
    ));
    // Representable but more than the machine can map: the OS says no, and that is an error.
    match pool.allocate(1 << 62) {
        Err(Error::Map(e)) => assert!(e.raw_os_error().is_some(), "{e}"),
        other => panic!("expected Map error, got {other:?}"),
    }
    assert_eq!(pool.stats().mapped_bytes, 0);
    let msg = Error::BudgetExceeded {
        requested: 1,
        needed: 2,
        used: 3,
        budget: 4,
    }
    .to_string();
    assert!(
        msg.contains("requested 1") && msg.contains("3 of 4"),
        "{msg}"
    );
}
