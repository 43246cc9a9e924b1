//! Sync policies and the periodic flusher's lifetime, seen through a handle's dirty flag and
//! the last range made durable.

use std::time::Duration;

use crate::fs::{MapConfig, MapMode, MmapFs, SyncMode};

fn config(sync: SyncMode) -> MapConfig {
    MapConfig::default().mode(MapMode::ReadWrite).sync(sync)
}

#[test]
fn immediate_syncs_exactly_the_written_range_before_returning() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), config(SyncMode::Immediate)).unwrap();
    let f = fs.create("i").unwrap();
    f.set_len(1 << 20).unwrap();
    f.sync_all().unwrap();
    f.write_all_at(&[7u8; 300], 5000).unwrap();
    assert_eq!(f.last_synced_range(), Some((5000, 300)));
    assert!(!f.is_dirty(), "nothing is left for a later sync");
    f.write_all_at(b"z", 999_999).unwrap();
    assert_eq!(f.last_synced_range(), Some((999_999, 1)));
}

#[test]
fn never_leaves_dirty_but_explicit_sync_always_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), config(SyncMode::Never)).unwrap();
    let f = fs.create("n").unwrap();
    f.write_all_at(b"abc", 0).unwrap();
    assert!(f.is_dirty());
    assert_eq!(f.last_synced_range(), None);
    f.sync_all().unwrap();
    assert_eq!(f.last_synced_range(), Some((0, 3)));
    assert!(!f.is_dirty());
    f.write_all_at(b"def", 3).unwrap();
    f.sync_range(3, 3).unwrap();
    assert_eq!(f.last_synced_range(), Some((3, 3)));
}

#[test]
fn on_close_syncs_at_close_and_at_drop() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), config(SyncMode::OnClose)).unwrap();
    // An observer handle keeps the registry entry (where the last sync is recorded) alive.
    let observer = fs.create("c").unwrap();
    let f = fs.open("c").unwrap();
    f.write_all_at(b"closing", 0).unwrap();
    assert!(f.is_dirty());
    assert_eq!(
        observer.last_synced_range(),
        None,
        "OnClose does not sync at write"
    );
    f.close().unwrap();
    assert_eq!(observer.last_synced_range(), Some((0, 7)), "close synced");
    assert!(!observer.fault_state().is_faulted());
    let g = fs.open("c").unwrap();
    g.write_all_at(b"more", 7).unwrap();
    drop(g);
    assert_eq!(observer.last_synced_range(), Some((0, 11)), "drop synced");
    assert_eq!(std::fs::read(dir.path().join("c")).unwrap(), b"closingmore");
}

#[test]
fn never_does_not_sync_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), config(SyncMode::Never)).unwrap();
    let observer = fs.create("n").unwrap();
    let f = fs.open("n").unwrap();
    f.write_all_at(b"left to the kernel", 0).unwrap();
    f.close().unwrap();
    assert_eq!(observer.last_synced_range(), None);
}

#[test]
fn periodic_flushes_dirty_files_from_one_thread_that_stops() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(
        dir.path(),
        config(SyncMode::Periodic(Duration::from_millis(20))),
    )
    .unwrap();
    let status = fs.flusher().expect("a periodic MmapFs has a flusher");
    assert!(status.is_running());
    let clone = fs.clone();
    let f = fs.create("p1").unwrap();
    let g = clone.create("p2").unwrap();
    f.write_all_at(b"one", 0).unwrap();
    g.write_all_at(b"two", 0).unwrap();
    assert!(
        status.wait_for_flushes(2, Duration::from_secs(30)),
        "both dirty files are flushed"
    );
    assert!(!f.is_dirty() && !g.is_dirty());
    // Clones share the thread: one flusher per MmapFs.
    assert!(fs.flusher().unwrap().rounds() >= 1);
    drop(fs);
    drop(clone);
    drop(f);
    assert!(status.is_running(), "an open file keeps the flusher alive");
    g.write_all_at(b"TWO", 0).unwrap();
    let before = status.files_flushed();
    assert!(status.wait_for_flushes(before + 1, Duration::from_secs(30)));
    drop(g);
    assert!(
        !status.is_running(),
        "the thread stopped when the MmapFs and its files were gone"
    );
}

#[test]
fn non_periodic_fs_has_no_flusher() {
    let dir = tempfile::tempdir().unwrap();
    assert!(MmapFs::new(dir.path(), config(SyncMode::OnClose))
        .unwrap()
        .flusher()
        .is_none());
    let ro = MapConfig::default().sync(SyncMode::Periodic(Duration::from_secs(1)));
    assert!(
        MmapFs::new(dir.path(), ro).unwrap().flusher().is_none(),
        "read-only has nothing to flush"
    );
}
