//! The order in which a signal is handled when both of segpool's claims are active (the fault
//! guard on SIGBUS, the guard pages of `Diagnostics::Full` on SIGSEGV) and the program had its
//! own handlers first: segpool's claim decides for what is segpool's, and everything else (and a
//! reported overrun, after its report) reaches the program's handler. Each case runs in a child
//! process (this test binary, re-executed) and the parent checks how the child ended.

mod fault_support;

use fault_support::*;
use segpool::fault::{self, FileFaultState};
use segpool::{Diagnostics, Segment, SegmentPool};

const PAGE: usize = 4096;

/// What the program's SIGBUS handler exits with for a lost page.
const USER_SIGBUS_EXIT: i32 = 50;
/// What the program's SIGSEGV handler exits with for an access the mapping does not allow.
const USER_SIGSEGV_EXIT: i32 = 60;

/// `si_code` of a SIGSEGV for an access the mapping does not allow (`<asm-generic/siginfo.h>`;
/// the libc crate does not define it).
const SEGV_ACCERR: libc::c_int = 2;

/// The line segpool's guard-page report starts with.
const REPORT: &str = "segpool: SIGSEGV in the guard page";

extern "C" fn user_handler(signum: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo for this signal.
    let code = unsafe { (*info).si_code };
    let exit = match (signum, code) {
        (libc::SIGBUS, libc::BUS_ADRERR) => USER_SIGBUS_EXIT,
        (libc::SIGSEGV, SEGV_ACCERR) => USER_SIGSEGV_EXIT,
        _ => 1,
    };
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(exit) };
}

/// The program's own SA_SIGINFO handlers for SIGBUS and SIGSEGV, installed before segpool's.
fn install_user_handlers() {
    for signal in [libc::SIGBUS, libc::SIGSEGV] {
        // SAFETY: a zeroed sigaction is valid; the handler has the SA_SIGINFO signature.
        unsafe {
            let mut a: libc::sigaction = std::mem::zeroed();
            a.sa_sigaction = user_handler as *const () as usize;
            a.sa_flags = libc::SA_SIGINFO;
            assert_eq!(libc::sigaction(signal, &a, std::ptr::null_mut()), 0);
        }
    }
}

/// Both claims active: a registered file mapping (SIGBUS) and a `Full` pool (SIGSEGV), with one
/// live segment of it. The caller keeps them alive.
struct Armed {
    _file: std::fs::File,
    _mapping: Guarded,
    _pool: SegmentPool,
    segment: Segment,
}

fn arm_both(dir: &std::path::Path) -> Armed {
    let p = dir.join("ours");
    let file = create_pattern_file(&p, 20, 2 * PAGE);
    let state = FileFaultState::new(Some(p));
    let mapping = Guarded::map(&file, 2 * PAGE, true, &state).unwrap();
    assert!(fault::handler_installed());
    let pool = SegmentPool::builder()
        .size_classes(&[PAGE])
        .region_size(16 * PAGE)
        .diagnostics(Diagnostics::Full)
        .build()
        .unwrap();
    let mut segment = pool.allocate(PAGE).unwrap();
    segment.fill(1);
    Armed {
        _file: file,
        _mapping: mapping,
        _pool: pool,
        segment,
    }
}

/// Recovers one SIGBUS in a registered range: the fault guard's claim, the program's handler
/// not called.
fn recover_one_of_ours(dir: &std::path::Path) {
    let p = dir.join("ours-faulting");
    let f = create_pattern_file(&p, 21, 2 * PAGE);
    let s = FileFaultState::new(Some(p.clone()));
    let g = Guarded::map(&f, 2 * PAGE, true, &s).unwrap();
    truncate_elsewhere(&p, 0);
    let mut buf = [0u8; 8];
    assert!(g.read(PAGE, &mut buf).is_err());
    assert!(s.is_faulted());
    println!("recovered a fault in our range");
}

/// A lost page of a file mapping segpool does not know: a SIGBUS that is not segpool's.
fn sigbus_outside_our_ranges(dir: &std::path::Path) -> u8 {
    let p = dir.join("not-ours");
    let f = create_pattern_file(&p, 22, 2 * PAGE);
    let map = memmap2::MmapOptions::new()
        .len(2 * PAGE)
        .map_raw_read_only(&f)
        .unwrap();
    truncate_elsewhere(&p, 0);
    // SAFETY: in bounds of a live mapping; the page is gone, so this raises SIGBUS, which is the
    // point of the test (a plain volatile load, no reference formed).
    unsafe { std::ptr::read_volatile(map.as_ptr().add(PAGE)) }
}

/// A write to a read-only page that is no segment's guard page: a SIGSEGV that is not segpool's.
fn sigsegv_outside_guard_pages() {
    // SAFETY: a fresh private anonymous mapping, not fixed: nothing else is affected.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED);
    // SAFETY: none; a write to a read-only page raises SIGSEGV, which is the point.
    unsafe { page.cast::<u8>().write_volatile(1) };
}

/// One byte past a live segment: its guard page.
fn overrun(segment: &mut Segment) {
    // SAFETY: deliberately not safe: one byte past the segment's end lands on its guard page and
    // faults; nothing is written.
    unsafe { segment.as_mut_ptr().add(PAGE).write_volatile(2) };
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn sigbus_ours_is_recovered_others_reach_the_programs_handler() {
    const NAME: &str = "sigbus_ours_is_recovered_others_reach_the_programs_handler";
    if is_child(NAME) {
        install_user_handlers();
        let dir = child_dir();
        let _armed = arm_both(&dir);
        recover_one_of_ours(&dir);
        let b = sigbus_outside_our_ranges(&dir);
        println!("survived a SIGBUS outside our ranges (read {b})");
        return;
    }
    let out = run_child(NAME, &[]);
    assert_eq!(
        out.status.code(),
        Some(USER_SIGBUS_EXIT),
        "{:?}",
        out.status
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("recovered a fault in our range"));
    assert!(!stderr(&out).contains(REPORT));
}

#[test]
fn overrun_is_reported_then_reaches_the_programs_handler() {
    const NAME: &str = "overrun_is_reported_then_reaches_the_programs_handler";
    if is_child(NAME) {
        install_user_handlers();
        let dir = child_dir();
        let mut armed = arm_both(&dir);
        recover_one_of_ours(&dir);
        overrun(&mut armed.segment);
        println!("survived the overrun");
        return;
    }
    let out = run_child(NAME, &[]);
    assert_eq!(
        out.status.code(),
        Some(USER_SIGSEGV_EXIT),
        "{:?}",
        out.status
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("recovered a fault in our range"));
    assert_eq!(stderr(&out).matches(REPORT).count(), 1, "{}", stderr(&out));
}

#[test]
fn sigsegv_elsewhere_reaches_the_programs_handler_unreported() {
    const NAME: &str = "sigsegv_elsewhere_reaches_the_programs_handler_unreported";
    if is_child(NAME) {
        install_user_handlers();
        let dir = child_dir();
        let _armed = arm_both(&dir);
        sigsegv_outside_guard_pages();
        println!("survived a write to a read-only page");
        return;
    }
    let out = run_child(NAME, &[]);
    assert_eq!(
        out.status.code(),
        Some(USER_SIGSEGV_EXIT),
        "{:?}",
        out.status
    );
    assert!(!stderr(&out).contains(REPORT));
}

#[test]
fn with_default_actions_both_signals_still_kill() {
    const NAME: &str = "with_default_actions_both_signals_still_kill";
    if is_child(NAME) {
        no_core_dumps();
        // No previous handlers at all (std's stack-overflow handler removed): SIG_DFL before us.
        for signal in [libc::SIGBUS, libc::SIGSEGV] {
            // SAFETY: SIG_DFL for a fault signal.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
        let dir = child_dir();
        let mut armed = arm_both(&dir);
        recover_one_of_ours(&dir);
        match std::env::var("FAULT").as_deref() {
            Ok("sigbus") => drop(sigbus_outside_our_ranges(&dir)),
            Ok("overrun") => overrun(&mut armed.segment),
            _ => sigsegv_outside_guard_pages(),
        }
        println!("survived");
        return;
    }
    for (fault, signal, reported) in [
        ("sigbus", libc::SIGBUS, false),
        ("overrun", libc::SIGSEGV, true),
        ("sigsegv", libc::SIGSEGV, false),
    ] {
        let out = run_child_with(NAME, &[], &[("FAULT", fault)]);
        assert_killed_by(&out, signal);
        assert!(String::from_utf8_lossy(&out.stdout).contains("recovered a fault in our range"));
        assert_eq!(stderr(&out).contains(REPORT), reported, "{fault}");
    }
}
