//! Diagnostics levels, leak reports, write-after-release detection, structured events and the
//! richer stats.

mod diagnostics_support;

use diagnostics_support::{capture, named};
use segpool::{Diagnostics, Error, ErrorKind, SegmentPool};

const PAGE: usize = 4096;

fn pool(level: Diagnostics) -> SegmentPool {
    SegmentPool::builder()
        .size_classes(&[PAGE, 16 * PAGE])
        .region_size(64 * PAGE)
        .huge_pages(false)
        .diagnostics(level)
        .build()
        .unwrap()
}

#[test]
fn sampled_zero_is_refused() {
    let r = SegmentPool::builder()
        .diagnostics(Diagnostics::Sampled(0))
        .build();
    assert!(
        matches!(
            r.as_ref().map_err(Error::kind),
            Err(ErrorKind::InvalidConfig(_))
        ),
        "{r:?}"
    );
}

#[test]
fn leaks_list_outstanding_segments_with_class_age_and_backtrace_under_full() {
    let p = pool(Diagnostics::Full);
    let kept = p.allocate(16 * PAGE).unwrap();
    let gone = p.allocate(PAGE).unwrap();
    drop(gone);
    let report = p.leaks();
    assert_eq!(report.level, Diagnostics::Full);
    assert_eq!(report.outstanding, 1);
    assert_eq!(report.segments.len(), 1);
    let leak = &report.segments[0];
    assert_eq!(leak.addr, kept.as_ptr() as usize);
    assert_eq!(leak.class_size, Some(16 * PAGE));
    assert_eq!(leak.len, 16 * PAGE);
    assert!(leak.allocated_at.file().ends_with("diagnostics.rs"));
    let later = p.leaks();
    assert!(later.segments[0].age >= leak.age, "age grows");
    let text = report.to_string();
    assert!(
        text.contains("1 segments outstanding, 1 recorded"),
        "{text}"
    );
    assert!(text.contains("class 65536"), "{text}");
    assert!(
        text.contains("leaks_list_outstanding_segments_with_class_age_and_backtrace_under_full"),
        "the backtrace names the allocating function:\n{text}"
    );
    drop(kept);
    assert!(p.leaks().is_empty());
    assert!(p.leaks().segments.is_empty());
}

#[test]
fn dedicated_segments_are_reported_too() {
    let p = pool(Diagnostics::Full);
    let big = p.allocate(64 * PAGE).unwrap();
    let report = p.leaks();
    assert_eq!(report.outstanding, 1);
    assert_eq!(report.segments[0].class_size, None);
    assert!(report.to_string().contains("dedicated"));
    drop(big);
    assert!(p.leaks().is_empty());
}

#[test]
fn sampled_records_one_allocation_in_n() {
    let p = pool(Diagnostics::Sampled(10));
    let segs: Vec<_> = (0..200).map(|_| p.allocate(PAGE).unwrap()).collect();
    let report = p.leaks();
    assert_eq!(report.outstanding, 200);
    assert_eq!(
        report.segments.len(),
        20,
        "every 10th allocation is recorded"
    );
    drop(segs);
    let report = p.leaks();
    assert_eq!(report.outstanding, 0);
    assert!(report.segments.is_empty(), "records go with their release");
}

#[test]
fn off_counts_outstanding_but_records_nothing() {
    let p = pool(Diagnostics::Off);
    let seg = p.allocate(PAGE).unwrap();
    let report = p.leaks();
    assert_eq!(report.level, Diagnostics::Off);
    assert_eq!(report.outstanding, 1);
    assert!(report.segments.is_empty());
    drop(seg);
}

/// Releases a segment, then writes through a pointer kept from it: the bug being diagnosed.
/// Returns the address written.
fn write_after_release(p: &SegmentPool) -> usize {
    let mut seg = p.allocate(PAGE).unwrap();
    seg.fill(1);
    let stale = seg.as_mut_ptr();
    drop(seg);
    // SAFETY: deliberately not safe in the Rust sense: the slice was released, but it stays
    // mapped (its region keeps other slices' worth of memory, and the pool is alive), so the write
    // lands in pool memory no segment owns right now. That is the bug diagnostics must report.
    unsafe { stale.add(100).write_volatile(0x42) };
    stale as usize
}

#[test]
fn write_after_release_is_reported_and_counted_under_full() {
    let p = pool(Diagnostics::Full);
    let (again, events) = capture(|| {
        let addr = write_after_release(&p);
        let again = p.allocate(PAGE).unwrap();
        // The thread cache hands the same slice back (last in, first out).
        assert_eq!(again.as_ptr() as usize, addr);
        again
    });
    assert_eq!(p.stats().write_after_release, 1);
    let reports = named(&events, "write after release");
    assert_eq!(reports.len(), 1, "{events:#?}");
    let e = reports[0];
    assert_eq!(e.level, tracing::Level::ERROR);
    assert_eq!(e.number("addr"), again.as_ptr() as u64);
    assert_eq!(e.number("class"), PAGE as u64);
    assert_eq!(e.number("offset"), 100);
    assert!(e.number("region") >= 1);
    assert!(e.field("allocated_at").contains("diagnostics.rs"), "{e:?}");
    assert!(
        e.field("allocated_backtrace")
            .contains("write_after_release"),
        "{e:?}"
    );
    assert!(e.field("released_backtrace").contains("drop"), "{e:?}");
    // The segment handed out is usable, and a clean release/reuse reports nothing more.
    drop(again);
    let (_, events) = capture(|| drop(p.allocate(PAGE).unwrap()));
    assert!(named(&events, "write after release").is_empty());
    assert_eq!(p.stats().write_after_release, 1);
}

#[test]
fn allocate_zeroed_under_full_clears_the_poison() {
    let p = pool(Diagnostics::Full);
    drop(p.allocate(PAGE).unwrap());
    let seg = p.allocate_zeroed(PAGE).unwrap();
    assert!(seg.iter().all(|&b| b == 0));
}

#[test]
fn write_after_release_is_not_checked_under_off() {
    let p = pool(Diagnostics::Off);
    let (_, events) = capture(|| {
        let addr = write_after_release(&p);
        let again = p.allocate(PAGE).unwrap();
        assert_eq!(again.as_ptr() as usize, addr);
        // No poison: the released bytes are as the user left them, plus the stray write.
        assert_eq!(again[0], 1);
        assert_eq!(again[100], 0x42);
    });
    assert!(named(&events, "write after release").is_empty());
    assert_eq!(p.stats().write_after_release, 0);
}

#[test]
fn region_lifecycle_and_trim_events_carry_fields() {
    let p = pool(Diagnostics::Off);
    let (trimmed, events) = capture(|| {
        drop(p.allocate(PAGE).unwrap());
        p.trim()
    });
    assert_eq!(trimmed, 64 * PAGE);
    let mapped = named(&events, "region mapped");
    assert_eq!(mapped.len(), 1, "{events:#?}");
    let region = mapped[0].number("region");
    assert_eq!(mapped[0].number("class"), PAGE as u64);
    assert_eq!(mapped[0].number("bytes"), 64 * PAGE as u64);
    for name in ["region retired", "region unmapped"] {
        let e = named(&events, name);
        assert_eq!(e.len(), 1, "{name}: {events:#?}");
        assert_eq!(e[0].number("region"), region);
        assert_eq!(e[0].number("class"), PAGE as u64);
        assert_eq!(e[0].number("bytes"), 64 * PAGE as u64);
    }
    let trim = named(&events, "trim");
    assert_eq!(trim.len(), 1);
    assert_eq!(trim[0].number("bytes"), 64 * PAGE as u64);
}

#[test]
fn budget_exhaustion_and_pressure_events_carry_fields() {
    let p = SegmentPool::builder()
        .size_classes(&[PAGE])
        .region_size(16 * PAGE)
        .budget(64 * PAGE)
        .thread_cache(false)
        .huge_pages(false)
        .on_pressure(|_| {})
        .build()
        .unwrap();
    let (held, events) = capture(|| {
        let held: Vec<_> = (0..64).map(|_| p.allocate(PAGE).unwrap()).collect();
        assert!(matches!(
            p.allocate(PAGE).map_err(Error::into_kind),
            Err(ErrorKind::BudgetExceeded { .. })
        ));
        held
    });
    let pressure = named(&events, "pressure callback");
    assert_eq!(pressure.len(), 1, "{events:#?}");
    // One page of the class would do: the class has regions.
    assert_eq!(pressure[0].number("needed"), PAGE as u64);
    assert_eq!(pressure[0].number("freed_mapped"), 0);
    assert_eq!(pressure[0].number("freed_in_use"), 0);
    let exhausted = named(&events, "budget exhausted");
    assert_eq!(exhausted.len(), 1, "{events:#?}");
    let e = exhausted[0];
    assert_eq!(e.level, tracing::Level::WARN);
    assert_eq!(e.number("requested"), PAGE as u64);
    assert_eq!(e.number("needed"), 16 * PAGE as u64);
    assert_eq!(e.number("used"), 64 * PAGE as u64);
    assert_eq!(e.number("budget"), 64 * PAGE as u64);
    drop(held);
}

#[test]
fn dropping_a_pool_with_segments_out_warns_once_with_the_report() {
    let p = pool(Diagnostics::Sampled(1));
    let seg = p.allocate(PAGE).unwrap();
    let (_, events) = capture(|| drop(p));
    let warnings: Vec<_> = events
        .iter()
        .filter(|e| e.level == tracing::Level::WARN)
        .collect();
    assert_eq!(warnings.len(), 1, "{events:#?}");
    assert_eq!(warnings[0].number("outstanding"), 1);
    assert_eq!(warnings[0].number("recorded"), 1);
    assert!(warnings[0].field("report").contains("class 4096"));
    drop(seg);
    // A pool dropped with nothing out says nothing.
    let p = pool(Diagnostics::Full);
    drop(p.allocate(PAGE).unwrap());
    let (_, events) = capture(|| drop(p));
    assert!(events.iter().all(|e| e.level != tracing::Level::WARN));
}

#[test]
fn stats_count_resident_totals_and_peaks() {
    let p = pool(Diagnostics::Off);
    let mut a = p.allocate(16 * PAGE).unwrap();
    a.fill(7);
    let b = p.allocate(16 * PAGE).unwrap();
    let c = p.allocate(PAGE).unwrap();
    drop(b);
    let s = p.stats();
    assert!(s.resident_bytes >= 16 * PAGE, "{s}");
    assert!(s.resident_bytes <= s.mapped_bytes, "{s}");
    assert_eq!(s.allocations, 3);
    assert_eq!(s.releases, 1);
    let big = &s.classes[1];
    assert!(big.resident_bytes >= 16 * PAGE);
    assert!(big.peak_in_use >= 2, "{s}");
    assert_eq!(big.in_use, 1);
    assert_eq!(big.mapped_bytes, 64 * PAGE * big.regions);
    assert_eq!(s.write_after_release, 0);
    let text = s.to_string();
    assert!(text.contains("resident"), "{text}");
    assert!(text.contains("allocations 3, releases 1"), "{text}");
    drop((a, c));
    assert_eq!(p.stats().releases, 3);
}
