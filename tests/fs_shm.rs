//! SharedMemory between processes: a child (this test binary, re-run) writes, the parent reads.

use std::process::Command;

use segpool::fs::SharedMemory;

const CHILD_ENV: &str = "SEGPOOL_FS_TEST_SHM_CHILD";
const LEN: u64 = 3 * 4096 + 100;

fn expected(i: u64) -> u8 {
    (i * 13 % 256) as u8
}

#[test]
fn child_writes_parent_reads() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        let shm = SharedMemory::open(&path).unwrap();
        assert_eq!(shm.len(), LEN);
        // The parent's greeting is visible here.
        let mut hello = [0u8; 5];
        shm.read_at(&mut hello, LEN - 5).unwrap();
        assert_eq!(&hello, b"hello");
        let data: Vec<u8> = (0..LEN - 5).map(expected).collect();
        shm.write_at(&data, 0).unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ipc");
    let shm = SharedMemory::create(&path, LEN).unwrap();
    shm.write_at(b"hello", LEN - 5).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writes_parent_reads", "--test-threads=1"])
        .env(CHILD_ENV, &path)
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
    let mut back = vec![0u8; (LEN - 5) as usize];
    assert_eq!(shm.read_at(&mut back, 0).unwrap(), back.len());
    assert!(
        back.iter()
            .enumerate()
            .all(|(i, &b)| b == expected(i as u64)),
        "parent sees the child's bytes"
    );
    assert!(shm
        .with_view(0, 4, |v| v.to_vec() == [0, 13, 26, 39])
        .unwrap());
}

#[test]
fn shared_memory_bounds_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(SharedMemory::create(dir.path().join("z"), 0).is_err());
    std::fs::write(dir.path().join("empty"), b"").unwrap();
    assert!(SharedMemory::open(dir.path().join("empty")).is_err());
    assert!(SharedMemory::open(dir.path().join("missing")).is_err());
    let shm = SharedMemory::create(dir.path().join("s"), 10).unwrap();
    assert!(shm.write_at(b"toolong!!!!", 0).is_err());
    assert!(shm.write_at(b"x", 10).is_err());
    assert!(shm.write_at(b"x", u64::MAX).is_err());
    assert!(shm.with_view(5, 6, |_| ()).is_err());
    // SAFETY: nothing writes or truncates the memory while the (refused) slice would live.
    assert!(unsafe { shm.with_bytes(5, 6, |_| ()) }.is_err());
    let mut b = [0u8; 4];
    assert_eq!(shm.read_at(&mut b, 10).unwrap(), 0);
    assert_eq!(shm.read_at(&mut b, 8).unwrap(), 2);
    assert_eq!(
        std::fs::metadata(dir.path().join("s")).unwrap().len(),
        10,
        "never grows"
    );
    shm.flush().unwrap();
}
