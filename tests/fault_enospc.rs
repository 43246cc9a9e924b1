//! Disk full at a write fault: a sparse file on a tiny tmpfs. The write that needs a new page
//! raises SIGBUS (BUS_ADRERR), which the guard turns into `Err(Faulted)`. Reserving the space
//! first (`posix_fallocate`, what `os::file::reserve` does) gives an ordinary ENOSPC instead.
//!
//! The tmpfs is mounted in a private mount namespace: the test re-runs itself under
//! `unshare --mount --propagation private` (as root), or with a user namespace as well when not
//! root; when neither is allowed, it skips and says why.

mod fault_support;

use std::os::fd::AsFd as _;
use std::path::Path;
use std::process::Command;

use fault_support::*;
use segpool::fault::FileFaultState;
use segpool::ErrorKind;

const PAGE: usize = 4096;
const NAME: &str = "enospc_at_write_fault_is_an_error_and_fallocate_reports_it";
const TMPFS_PAGES: usize = 16;

fn mount_tiny_tmpfs(dir: &Path) -> Result<(), String> {
    let out = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={}", TMPFS_PAGES * PAGE),
            "segpool-test",
        ])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Unmounts on drop, so the temporary directory can be removed (the mounts live in the child's
/// private namespace and vanish with it anyway).
struct Unmount(Vec<std::path::PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = Command::new("umount").arg(d).status();
        }
    }
}

fn child() {
    let base = child_dir();
    let mut mounted = Unmount(Vec::new());
    let (faults_dir, reserve_dir) = (base.join("faults"), base.join("reserve"));
    std::fs::create_dir(&faults_dir).unwrap();
    std::fs::create_dir(&reserve_dir).unwrap();
    for d in [&faults_dir, &reserve_dir] {
        if let Err(why) = mount_tiny_tmpfs(d) {
            println!("SKIP: {why}");
            return;
        }
        mounted.0.push(d.clone());
    }

    // 1. A sparse file four times larger than the filesystem, written through a mapping page by
    //    page: the write fault that finds no free page is SIGBUS, recovered as Err(Faulted).
    let path = faults_dir.join("sparse");
    let file = std::fs::File::create_new(&path).unwrap();
    let len = 4 * TMPFS_PAGES * PAGE;
    file.set_len(len as u64).unwrap();
    let state = FileFaultState::new(Some(path.clone()));
    let map = Guarded::map(&file, len, true, &state).unwrap();
    let page = vec![0xA5u8; PAGE];
    let mut written = 0;
    let err = loop {
        assert!(
            written < len / PAGE,
            "the whole sparse file was written: no ENOSPC"
        );
        match map.write(written * PAGE, &page) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err.kind(), ErrorKind::Faulted { .. }), "{err:?}");
    assert!(state.is_faulted());
    assert!(
        written <= TMPFS_PAGES,
        "{written} pages fit in a {TMPFS_PAGES}-page tmpfs?"
    );
    println!("ENOSPC at write fault: Err after {written} pages written: {err}");
    // The written pages are in the file; nothing after them.
    drop(map);
    let mut buf = vec![0u8; PAGE];
    use std::os::unix::fs::FileExt as _;
    file.read_exact_at(&mut buf, 0).unwrap();
    assert!(written == 0 || buf == page);

    // 2. Growing with posix_fallocate semantics (the same call os::file::reserve makes) on a full
    //    disk is an ordinary ENOSPC, and the process never sees a signal.
    let grow = std::fs::File::create_new(reserve_dir.join("grown")).unwrap();
    let r = rustix::fs::fallocate(
        grow.as_fd(),
        rustix::fs::FallocateFlags::empty(),
        0,
        len as u64,
    );
    assert_eq!(r, Err(rustix::io::Errno::NOSPC));
    // A reservation that fits works and then the mapping can be written without a fault.
    rustix::fs::fallocate(
        grow.as_fd(),
        rustix::fs::FallocateFlags::empty(),
        0,
        (4 * PAGE) as u64,
    )
    .unwrap();
    let s2 = FileFaultState::new(None);
    let m2 = Guarded::map(&grow, 4 * PAGE, true, &s2).unwrap();
    for i in 0..4 {
        m2.write(i * PAGE, &page).unwrap();
    }
    println!(
        "fallocate on a full tmpfs: ordinary error {}",
        rustix::io::Errno::NOSPC
    );
    drop((m2, grow, file));
    drop(mounted);
    println!("DONE");
}

fn can_run(prefix: &[&str]) -> bool {
    Command::new(prefix[0])
        .args(&prefix[1..])
        .arg("true")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn enospc_at_write_fault_is_an_error_and_fallocate_reports_it() {
    if is_child(NAME) {
        child();
        return;
    }
    let as_root: &[&str] = &["unshare", "--mount", "--propagation", "private"];
    let as_user: &[&str] = &[
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "--propagation",
        "private",
    ];
    let Some(prefix) = [as_root, as_user].into_iter().find(|p| can_run(p)) else {
        println!("SKIP {NAME}: neither `unshare --mount` (root) nor a user+mount namespace is allowed here");
        return;
    };
    let out = run_child(NAME, prefix);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if let Some(line) = stdout.lines().find(|l| l.contains("SKIP:")) {
        println!("SKIP {NAME}: {line}");
        return;
    }
    assert!(out.status.success(), "{:?}", out.status);
    assert!(stdout.contains("DONE"));
}
