//! Visibility of synced bytes to another process. (The sync policies and the periodic flusher,
//! which need a handle's internals, are tested in the crate: `src/fs/tests/sync.rs`.)

use std::process::Command;

use segpool::fs::{MapConfig, MapMode, MmapFs, SyncMode};

fn config(sync: SyncMode) -> MapConfig {
    MapConfig::default().mode(MapMode::ReadWrite).sync(sync)
}

const CHILD_ENV: &str = "SEGPOOL_FS_TEST_CHILD_READ";

/// Parent: writes through the mapping and syncs. Child (this same test, run by the parent with
/// the env var set): reads the file with plain `read` and checks every byte.
#[test]
fn synced_data_is_visible_to_another_process() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        let bytes = std::fs::read(&path).unwrap();
        let expect: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        assert!(bytes == expect, "child saw different bytes");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), config(SyncMode::Never)).unwrap();
    let f = fs.create("shared.bin").unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    f.write_all_at(&data, 0).unwrap();
    f.sync_all().unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "synced_data_is_visible_to_another_process",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path().join("shared.bin"))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&status.stdout)
    );
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("1 passed"),
        "the child ran its test"
    );
    drop(f);
}
