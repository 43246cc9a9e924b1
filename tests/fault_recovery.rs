//! Faults on registered mappings become errors, the process lives, the file stays poisoned.

mod fault_support;

use fault_support::*;
use segpool::fault::{self, FileFaultState};
use segpool::{Error, ErrorKind};

const PAGE: usize = 4096;

fn assert_faulted<T: std::fmt::Debug>(r: segpool::Result<T>, state: &FileFaultState) {
    match r.map_err(Error::into_kind) {
        Err(ErrorKind::Faulted { path, addr }) => {
            assert_eq!(path.as_deref(), state.path());
            assert_ne!(addr, 0);
        }
        other => panic!("expected Err(Faulted), got {other:?}"),
    }
}

#[test]
fn truncated_file_read_and_write_return_faulted_and_poison_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (dir.path().join("one"), dir.path().join("two"));
    let len = 8 * PAGE;
    let f1 = create_pattern_file(&p1, 1, len);
    let f2 = create_pattern_file(&p2, 2, len);
    let s1 = FileFaultState::new(Some(p1.clone()));
    let s2 = FileFaultState::new(Some(p2.clone()));
    let m1 = Guarded::map(&f1, len, true, &s1).unwrap();
    let m2 = Guarded::map(&f2, len, true, &s2).unwrap();
    assert!(fault::handler_installed());

    // Healthy first: a read sees the file.
    let mut buf = vec![0u8; 100];
    m1.read(5 * PAGE + 7, &mut buf).unwrap();
    assert_eq!(buf, pattern_bytes(1, (5 * PAGE + 7) as u64, 100));
    let recovered_before = fault::recovered_faults();

    // Someone else truncates file one to two pages: pages 2.. are gone.
    truncate_elsewhere(&p1, 2 * PAGE as u64);
    let r = m1.read(5 * PAGE, &mut buf);
    assert_faulted(r, &s1);
    assert!(s1.is_faulted());
    assert_eq!(s1.fault_count(), 1);
    // Other tests in this binary may recover faults at the same time: at least ours counted.
    assert!(fault::recovered_faults() > recovered_before);
    let Err(ErrorKind::Faulted { addr, .. }) = s1.check().map_err(Error::into_kind) else {
        panic!("not poisoned")
    };
    // The faulting address lies in the range read (which byte `memcpy` touches first depends on
    // how it was compiled: an optimized copy may load the tail first).
    let start = m1.map.as_ptr() as usize + 5 * PAGE;
    assert!(
        (start..start + buf.len()).contains(&addr),
        "fault address {addr:#x} outside the range read ({start:#x}, {} bytes)",
        buf.len()
    );

    // Fail fast: a read of a page that is still there, and a write into the lost range, are
    // refused without touching memory: no new fault is counted.
    assert_faulted(m1.read(0, &mut buf), &s1);
    assert_faulted(m1.write(6 * PAGE, b"lost"), &s1);
    assert_eq!(s1.fault_count(), 1);

    // The other file is unaffected.
    m2.read(5 * PAGE, &mut buf).unwrap();
    assert_eq!(buf, pattern_bytes(2, (5 * PAGE) as u64, 100));
    m2.write(3 * PAGE, b"still fine").unwrap();
    assert!(!s2.is_faulted());
}

#[test]
fn write_into_truncated_range_returns_faulted() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w");
    let len = 4 * PAGE;
    let f = create_pattern_file(&p, 3, len);
    let s = FileFaultState::new(Some(p.clone()));
    let m = Guarded::map(&f, len, true, &s).unwrap();
    truncate_elsewhere(&p, PAGE as u64);
    assert_faulted(m.write(2 * PAGE + 10, b"into the void"), &s);
    assert!(s.is_faulted());
    // The write landed in the replacement page, not in the file: the file is still one page.
    assert_eq!(std::fs::metadata(&p).unwrap().len(), PAGE as u64);
}

#[test]
fn mapping_past_end_of_file_faults_on_whole_pages_past_eof() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("short");
    // One and a half pages of data, mapped as four pages.
    let f = create_pattern_file(&p, 4, PAGE + PAGE / 2);
    let s = FileFaultState::new(None);
    let m = Guarded::map(&f, 4 * PAGE, false, &s).unwrap();
    // The partial last page reads (zeros past EOF are what the file shows there).
    let mut buf = vec![0u8; 16];
    m.read(PAGE + 8, &mut buf).unwrap();
    assert_eq!(buf, pattern_bytes(4, (PAGE + 8) as u64, 16));
    // A whole page past EOF faults.
    let r = m.read(3 * PAGE, &mut buf);
    assert!(
        matches!(
            r.as_ref().map_err(Error::kind),
            Err(ErrorKind::Faulted { path: None, .. })
        ),
        "{r:?}"
    );
    assert!(s.is_faulted());
}

#[test]
fn read_through_full_fence_variant_also_faults() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ff");
    let f = create_pattern_file(&p, 5, 2 * PAGE);
    let s = FileFaultState::new(Some(p.clone()));
    let m = Guarded::map(&f, 2 * PAGE, true, &s).unwrap();
    truncate_elsewhere(&p, 0);
    let mut buf = [0u8; 8];
    assert_faulted(m.read_full_fence(PAGE, &mut buf), &s);
}

#[test]
fn reopening_after_restore_works() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("again");
    let len = 2 * PAGE;
    let f = create_pattern_file(&p, 6, len);
    let s = FileFaultState::new(Some(p.clone()));
    let m = Guarded::map(&f, len, true, &s).unwrap();
    truncate_elsewhere(&p, 0);
    let mut buf = [0u8; 32];
    assert_faulted(m.read(PAGE, &mut buf), &s);
    drop(m);
    // The file comes back; a fresh state and mapping (a "reopen") work.
    restore_elsewhere(&p, 6, 0, len as u64);
    let s2 = FileFaultState::new(Some(p.clone()));
    let m2 = Guarded::map(&f, len, true, &s2).unwrap();
    m2.read(PAGE, &mut buf).unwrap();
    assert_eq!(buf.to_vec(), pattern_bytes(6, PAGE as u64, 32));
}

#[test]
fn poison_without_signal_fails_fast() {
    let s = FileFaultState::new(None);
    assert!(s.guarded(|| 1).is_ok());
    s.poison(0x1000);
    let mut ran = false;
    let r = s.guarded(|| ran = true);
    assert!(matches!(
        r.map_err(Error::into_kind),
        Err(ErrorKind::Faulted { addr: 0x1000, .. })
    ));
    assert!(!ran, "a poisoned file must not be touched");
    let io: std::io::Error = s.error().into();
    assert!(matches!(
        io.get_ref()
            .and_then(|e| e.downcast_ref::<Error>())
            .map(Error::kind),
        Some(ErrorKind::Faulted { .. })
    ));
}

#[test]
fn empty_and_wrapping_ranges_are_refused() {
    let s = FileFaultState::new(None);
    let x = 0u8;
    // SAFETY: both are refused before anything is registered.
    assert!(unsafe { fault::register(&x, 0, &s) }.is_err());
    // SAFETY: as above.
    assert!(unsafe { fault::register(std::ptr::null(), 10, &s) }.is_err());
    // SAFETY: as above.
    assert!(unsafe { fault::register(usize::MAX as *const u8, 10, &s) }.is_err());
}

#[test]
fn full_fault_ranges_refuse_a_new_mapping() {
    const NAME: &str = "full_fault_ranges_refuse_a_new_mapping";
    if is_child(NAME) {
        // Alone in this process, so the count is exact.
        let p = child_dir().join("full");
        let f = create_pattern_file(&p, 7, PAGE);
        let s = FileFaultState::new(None);
        let mut regs = Vec::new();
        for _ in 0..fault::MAX_RANGES {
            regs.push(Guarded::map(&f, PAGE, false, &s).expect("the ranges have room"));
        }
        assert_eq!(fault::registered_ranges(), fault::MAX_RANGES);
        let err = Guarded::map(&f, PAGE, false, &s)
            .err()
            .expect("the ranges are full");
        assert!(matches!(err.kind(), ErrorKind::Map(_)), "{err:?}");
        println!("refused: {err}");
        // Freeing one slot makes room again.
        regs.pop();
        regs.push(Guarded::map(&f, PAGE, false, &s).expect("a slot was freed"));
        drop(regs);
        assert_eq!(fault::registered_ranges(), 0);
        return;
    }
    let out = run_child(NAME, &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("the fault ranges are full"));
}
