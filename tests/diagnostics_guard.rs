//! Guard pages under `Diagnostics::Full`: a segment is writable to its last byte, and one byte
//! past it the process dies of SIGSEGV with a message naming the segment and where it was
//! allocated. The crash runs in a child process (this test binary, re-executed).

use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::Command;

use segpool::{Diagnostics, SegmentPool};

const PAGE: usize = 4096;

fn full_pool() -> SegmentPool {
    SegmentPool::builder()
        .size_classes(&[PAGE, 16 * PAGE])
        .region_size(64 * PAGE)
        .diagnostics(Diagnostics::Full)
        .build()
        .unwrap()
}

#[test]
fn guarded_segments_are_writable_to_their_last_byte() {
    let p = full_pool();
    let mut segs: Vec<_> = (0..80)
        .map(|i| {
            p.allocate(if i % 2 == 0 { PAGE } else { 16 * PAGE })
                .unwrap()
        })
        .collect();
    for (i, s) in segs.iter_mut().enumerate() {
        s.fill(i as u8);
    }
    for (i, s) in segs.iter().enumerate() {
        assert!(s.iter().all(|&b| b == i as u8));
    }
    let stats = p.stats();
    // 40 slices of each class: 64 slices per region of the small class (64 KiB of slices plus
    // 64 guard pages), four per region of the large one.
    assert_eq!(stats.classes[0].mapped_bytes, 64 * 2 * PAGE);
    assert_eq!(stats.classes[1].mapped_bytes, 10 * 4 * 17 * PAGE);
    drop(segs);
    assert_eq!(p.stats().write_after_release, 0);
}

const CHILD: &str = "overrun_child";

#[test]
#[ignore = "run in a child process by overrun_under_full_dies_with_sigsegv_naming_the_segment"]
fn overrun_child() {
    // No core file for the crash we provoke.
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit; lowering our own core limit has no memory-safety effect.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
    let p = full_pool();
    let mut seg = p.allocate(PAGE).unwrap();
    seg.fill(1);
    println!("segment at {:#x}", seg.as_ptr() as usize);
    std::io::stdout().flush().unwrap();
    // SAFETY: deliberately not safe: one byte past the segment's end, the bug whose report is
    // being tested. It lands on the guard page and faults; nothing is written.
    unsafe { seg.as_mut_ptr().add(PAGE).write_volatile(2) };
    println!("survived the overrun");
}

#[test]
fn overrun_under_full_dies_with_sigsegv_naming_the_segment() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            CHILD,
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "child: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{:?}", out.status);
    assert!(!stdout.contains("survived"));
    let addr = stdout
        .lines()
        // libtest prints "test overrun_child ... " on the same line first.
        .find_map(|l| l.split("segment at ").nth(1))
        .expect("the child printed its segment");
    let report = stderr
        .lines()
        .find(|l| l.starts_with("segpool: SIGSEGV in the guard page"))
        .expect("the hook printed its message");
    assert!(
        report.contains(&format!("segment {addr} (4096 bytes, class 4096")),
        "{report}"
    );
    assert!(report.contains("tests/diagnostics_guard.rs:"), "{report}");
}
