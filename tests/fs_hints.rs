//! Hints: populate, advice, huge pages, mlock (and its refusal).

use std::io::ErrorKind;
use std::process::Command;

use segpool::fs::{Advice, MapConfig, MapMode, MmapFs};

fn data() -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 241) as u8).collect()
}

#[test]
fn every_hint_keeps_the_bytes_right() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("h"), data()).unwrap();
    for (populate, advice, huge_pages, window) in [
        (true, Advice::Normal, false, None),
        (true, Advice::Sequential, true, Some(65536)),
        (false, Advice::Random, true, None),
        (true, Advice::WillNeed, false, Some(4096)),
    ] {
        let fs = MmapFs::new(
            dir.path(),
            MapConfig::default()
                .mode(MapMode::ReadWrite)
                .populate(populate)
                .advice(advice)
                .huge_pages(huge_pages)
                .window(window),
        )
        .unwrap();
        let f = fs.open("h").unwrap();
        let mut back = vec![0u8; 300_000];
        f.read_exact_at(&mut back, 0).unwrap();
        assert!(back == data());
        f.advise(0, 300_000, Advice::Sequential).unwrap();
        f.advise(4097, 10, Advice::Random).unwrap();
        f.write_all_at(b"still writable", 1000).unwrap();
        f.write_all_at(&data()[1000..1014], 1000).unwrap();
    }
}

#[test]
fn lock_pins_the_mapping() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("l"), data()).unwrap();
    let fs = MmapFs::new(dir.path(), MapConfig::default().lock(true)).unwrap();
    // Root (CAP_IPC_LOCK) or a large enough limit: locking 300 KB works; otherwise the error
    // must name the limit.
    match fs.open("l") {
        Ok(f) => assert_eq!(f.len(), 300_000),
        Err(e) => assert!(e.to_string().contains("RLIMIT_MEMLOCK"), "{e}"),
    }
}

const CHILD_ENV: &str = "SEGPOOL_FS_TEST_MEMLOCK_CHILD";

/// Child: drops every capability, sets RLIMIT_MEMLOCK to 0, and checks that `lock: true` is a
/// clear error rather than a silent success or a crash.
#[test]
fn refused_lock_is_a_clear_error() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        // SAFETY: (test) plain syscalls on this process's own limits and capabilities.
        unsafe {
            let lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim), 0);
            #[repr(C)]
            struct Header {
                version: u32,
                pid: i32,
            }
            #[repr(C)]
            #[derive(Clone, Copy)]
            struct Data {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            let hdr = Header {
                version: 0x2008_0522,
                pid: 0,
            };
            let d = [Data {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            }; 2];
            assert_eq!(libc::syscall(libc::SYS_capset, &hdr, d.as_ptr()), 0);
        }
        let fs = MmapFs::new(&dir, MapConfig::default().lock(true)).unwrap();
        let e = fs.open("l").unwrap_err();
        assert!(
            matches!(
                e.kind(),
                ErrorKind::OutOfMemory | ErrorKind::PermissionDenied
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("RLIMIT_MEMLOCK is 0 bytes"), "{e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("l"), data()).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "refused_lock_is_a_clear_error",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child ran its test"
    );
}
