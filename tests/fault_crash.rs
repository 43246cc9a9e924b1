//! What is not ours still crashes exactly as before; a handler installed before ours still runs.
//! Each case runs in a child process (this test binary, re-executed) and the parent checks how
//! the child ended.

mod fault_support;

use std::os::unix::process::ExitStatusExt as _;

use fault_support::*;
use segpool::fault::{self, FileFaultState};

const PAGE: usize = 4096;

#[test]
fn sigbus_outside_our_ranges_kills_with_sigbus() {
    const NAME: &str = "sigbus_outside_our_ranges_kills_with_sigbus";
    if is_child(NAME) {
        no_core_dumps();
        let dir = child_dir();
        let _ours = register_one(&dir);
        recover_one_of_ours(&dir);
        let b = fault_outside_our_ranges(&dir);
        println!("survived a fault outside our ranges (read {b})");
        return;
    }
    let out = run_child(NAME, &[]);
    assert_killed_by(&out, libc::SIGBUS);
    assert!(String::from_utf8_lossy(&out.stdout).contains("recovered a fault in our range"));
}

#[test]
fn sigsegv_on_our_read_only_mapping_kills_with_sigsegv() {
    const NAME: &str = "sigsegv_on_our_read_only_mapping_kills_with_sigsegv";
    if is_child(NAME) {
        no_core_dumps();
        let dir = child_dir();
        let p = dir.join("ro");
        let f = create_pattern_file(&p, 13, PAGE);
        let s = FileFaultState::new(Some(p));
        let g = Guarded::map(&f, PAGE, false, &s).unwrap();
        // SAFETY: none; a write to a read-only mapping raises SIGSEGV, which is the point.
        let _ = s.guarded(|| unsafe { std::ptr::write_volatile(g.map.as_mut_ptr(), 1) });
        println!("survived a write to a read-only mapping");
        return;
    }
    assert_killed_by(&run_child(NAME, &[]), libc::SIGSEGV);
}

#[test]
fn sigbus_sent_by_kill_ends_as_without_segpool() {
    const NAME: &str = "sigbus_sent_by_kill_ends_as_without_segpool";
    if is_child(NAME) {
        no_core_dumps();
        let dir = child_dir();
        let ours = std::env::var("WITH_SEGPOOL")
            .is_ok()
            .then(|| register_one(&dir));
        // SAFETY: raise has no memory-safety preconditions.
        unsafe { libc::raise(libc::SIGBUS) };
        println!(
            "survived raise(SIGBUS), segpool registered: {}",
            ours.is_some()
        );
        return;
    }
    // Whatever the process does with a SIGBUS sent by kill without segpool (std's handler for
    // stack overflows is installed in test binaries), it does the same with segpool.
    let without = run_child(NAME, &[]);
    let with = run_child_with(NAME, &[], &[("WITH_SEGPOOL", "1")]);
    assert_eq!(with.status.signal(), without.status.signal());
    assert_eq!(with.status.code(), without.status.code());
    println!(
        "raise(SIGBUS) ends the same way with and without segpool: {:?}",
        with.status
    );
}

#[test]
fn sigbus_sent_by_kill_with_default_action_kills_with_sigbus() {
    const NAME: &str = "sigbus_sent_by_kill_with_default_action_kills_with_sigbus";
    if is_child(NAME) {
        no_core_dumps();
        // No previous handler at all (std's stack-overflow handler removed): SIG_DFL before us.
        // SAFETY: SIG_DFL for SIGBUS.
        unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
        let dir = child_dir();
        let _ours = register_one(&dir);
        // SAFETY: raise has no memory-safety preconditions.
        unsafe { libc::raise(libc::SIGBUS) };
        println!("survived raise(SIGBUS)");
        return;
    }
    assert_killed_by(&run_child(NAME, &[]), libc::SIGBUS);
}

extern "C" fn previous_siginfo_handler(
    _: libc::c_int,
    info: *mut libc::siginfo_t,
    _: *mut libc::c_void,
) {
    // SAFETY: the kernel's siginfo for this SIGBUS.
    let code = unsafe { (*info).si_code };
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(if code == libc::BUS_ADRERR { 42 } else { 41 }) };
}

extern "C" fn previous_plain_handler(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(43) };
}

#[test]
fn previous_siginfo_handler_runs_for_faults_outside_our_ranges() {
    const NAME: &str = "previous_siginfo_handler_runs_for_faults_outside_our_ranges";
    if is_child(NAME) {
        // SAFETY: zeroed sigaction is valid; the handler has the SA_SIGINFO signature.
        unsafe {
            let mut a: libc::sigaction = std::mem::zeroed();
            a.sa_sigaction = previous_siginfo_handler as *const () as usize;
            a.sa_flags = libc::SA_SIGINFO;
            assert_eq!(libc::sigaction(libc::SIGBUS, &a, std::ptr::null_mut()), 0);
        }
        let dir = child_dir();
        let _ours = register_one(&dir);
        recover_one_of_ours(&dir); // ours: the previous handler is not called
        let b = fault_outside_our_ranges(&dir); // not ours: the previous handler exits 42
        println!("survived a fault outside our ranges (read {b})");
        return;
    }
    let out = run_child(NAME, &[]);
    assert_eq!(out.status.code(), Some(42), "{:?}", out.status);
    assert!(String::from_utf8_lossy(&out.stdout).contains("recovered a fault in our range"));
}

#[test]
fn previous_plain_handler_runs_for_faults_outside_our_ranges() {
    const NAME: &str = "previous_plain_handler_runs_for_faults_outside_our_ranges";
    if is_child(NAME) {
        // SAFETY: installing a one-argument handler for SIGBUS.
        unsafe {
            libc::signal(
                libc::SIGBUS,
                previous_plain_handler as *const () as libc::sighandler_t,
            )
        };
        let dir = child_dir();
        let _ours = register_one(&dir);
        recover_one_of_ours(&dir);
        let b = fault_outside_our_ranges(&dir);
        println!("survived a fault outside our ranges (read {b})");
        return;
    }
    let out = run_child(NAME, &[]);
    assert_eq!(out.status.code(), Some(43), "{:?}", out.status);
    assert!(String::from_utf8_lossy(&out.stdout).contains("recovered a fault in our range"));
}

#[test]
fn replaced_handler_is_reported_and_recovery_stops() {
    const NAME: &str = "replaced_handler_is_reported_and_recovery_stops";
    if is_child(NAME) {
        no_core_dumps();
        assert!(
            !fault::handler_installed(),
            "not installed before the first registration"
        );
        let dir = child_dir();
        let _ours = register_one(&dir);
        assert!(fault::handler_installed());
        // Another library takes SIGBUS over (here: back to the default action).
        // SAFETY: SIG_DFL for SIGBUS.
        unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
        assert!(!fault::handler_installed());
        println!("replacement detected");
        // Now a fault in our range is no longer recovered: the process dies of SIGBUS.
        recover_one_of_ours(&dir);
        return;
    }
    let out = run_child(NAME, &[]);
    assert_killed_by(&out, libc::SIGBUS);
    assert!(String::from_utf8_lossy(&out.stdout).contains("replacement detected"));
}

#[test]
fn handler_installed_after_first_registration() {
    let dir = tempfile::tempdir().unwrap();
    let _ours = register_one(dir.path());
    assert!(fault::handler_installed());
    // Not an exit status check, just keeping the import used in every configuration.
    let _ = std::process::ExitStatus::from_raw(0);
}
