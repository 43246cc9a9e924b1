//! Bad input gets a clear error, never a panic.

use segpool::{Backing, Error, ErrorKind, Segment, SegmentPool};

fn invalid(b: segpool::SegmentPoolBuilder, needle: &str) {
    match b.build().map_err(Error::into_kind) {
        Err(ErrorKind::InvalidConfig(msg)) => assert!(
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
    assert!(matches!(
        pool.allocate(0).map_err(Error::into_kind),
        Err(ErrorKind::ZeroSize)
    ));
    assert!(matches!(
        pool.allocate_zeroed(0).map_err(Error::into_kind),
        Err(ErrorKind::ZeroSize)
    ));
    assert!(matches!(
        pool.allocate(usize::MAX).map_err(Error::into_kind),
        Err(ErrorKind::TooLarge { .. })
    ));
    // Representable but more than the machine can map: the OS says no, and that is an error.
    match pool.allocate(1 << 62).map_err(Error::into_kind) {
        Err(ErrorKind::Map(e)) => assert!(e.raw_os_error().is_some(), "{e}"),
        other => panic!("expected Map error, got {other:?}"),
    }
    assert_eq!(pool.stats().mapped_bytes, 0);
    let msg = Error::from(ErrorKind::BudgetExceeded {
        requested: 1,
        needed: 2,
        used: 3,
        budget: 4,
    })
    .to_string();
    assert!(
        msg.contains("requested 1") && msg.contains("3 of 4"),
        "{msg}"
    );
}

#[test]
fn an_error_is_one_word_and_keeps_its_kind() {
    use std::mem::size_of;
    // The box makes `Error` one word, so a `Result<Segment>` is two and comes back in registers.
    #[cfg(target_pointer_width = "64")]
    {
        assert_eq!(size_of::<segpool::Result<Segment>>(), 16);
        assert_eq!(size_of::<Error>(), 8);
    }
    assert_eq!(size_of::<Error>(), size_of::<usize>());

    // `Error::from(kind)` gives the kind back, with its fields, and shows as the kind does.
    let budget = || ErrorKind::BudgetExceeded {
        requested: 1,
        needed: 2,
        used: 3,
        budget: 4,
    };
    let e = Error::from(budget());
    assert!(matches!(
        e.kind(),
        ErrorKind::BudgetExceeded {
            requested: 1,
            needed: 2,
            used: 3,
            budget: 4
        }
    ));
    assert_eq!(e.to_string(), budget().to_string());
    assert_eq!(format!("{e:?}"), format!("{:?}", budget()));
    assert!(matches!(
        Error::from(ErrorKind::ZeroSize).kind(),
        ErrorKind::ZeroSize
    ));
    assert!(matches!(
        Error::from(ErrorKind::TooLarge { requested: 7 }).into_kind(),
        ErrorKind::TooLarge { requested: 7 }
    ));
    assert!(matches!(
        Error::from(ErrorKind::InvalidConfig("x".into())).kind(),
        ErrorKind::InvalidConfig(m) if m == "x"
    ));
    assert!(matches!(
        Error::from(ErrorKind::Faulted {
            path: None,
            addr: 0x1000
        })
        .kind(),
        ErrorKind::Faulted {
            path: None,
            addr: 0x1000
        }
    ));
    let map = Error::from(ErrorKind::Map(std::io::Error::from_raw_os_error(12)));
    assert!(matches!(map.kind(), ErrorKind::Map(io) if io.raw_os_error() == Some(12)));
    let source = std::error::Error::source(&map).expect("the OS error is the source");
    assert_eq!(
        source
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error()),
        Some(12)
    );

    // As an `io::Error`, a budget refusal is OutOfMemory and still holds the `Error`.
    let io = std::io::Error::from(Error::from(budget()));
    assert_eq!(io.kind(), std::io::ErrorKind::OutOfMemory);
    assert!(matches!(
        io.get_ref()
            .and_then(|inner| inner.downcast_ref::<Error>())
            .map(Error::kind),
        Some(ErrorKind::BudgetExceeded {
            requested: 1,
            budget: 4,
            ..
        })
    ));
}
