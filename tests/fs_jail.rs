//! The root jail of `MmapFs` under attack: one path component keeps being swapped between a real
//! directory and a symlink to a directory outside the root while other threads open, create,
//! truncate, remove, rename and stat through it. Nothing outside may be touched. Also: non-regular
//! files are refused without blocking, and bad roots and escaping paths are refused.
//!
//! `SEGPOOL_JAIL_OPS` sets the number of operations of each kind (default 100000).

mod common;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use segpool::fs::{MapConfig, MapMode, MmapFs, SyncMode};

const NAMES: usize = 8;
/// A file that exists only outside: no listing through the root may ever show it.
const MARKER: &str = "CANARY-ONLY";

fn rw() -> MapConfig {
    MapConfig::default()
        .mode(MapMode::ReadWrite)
        .sync(SyncMode::Never)
}

/// Everything observable about a directory outside the root: each entry's name, inode, size,
/// modification time and content.
fn snapshot(dir: &Path) -> BTreeMap<String, (u64, u64, SystemTime, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            let data = if md.is_file() {
                std::fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (
                e.file_name().into_string().unwrap(),
                (md.ino(), md.len(), md.modified().unwrap(), data),
            )
        })
        .collect()
}

fn ops_per_kind() -> u64 {
    std::env::var("SEGPOOL_JAIL_OPS")
        .ok()
        .map(|v| v.parse().expect("SEGPOOL_JAIL_OPS is a number"))
        .unwrap_or(100_000)
}

#[test]
fn swapping_a_component_for_a_symlink_never_reaches_outside() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path().join("root");
    let canary = top.path().join("canary");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&canary).unwrap();
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    for name in (0..NAMES)
        .map(|i| format!("f{i}"))
        .chain([MARKER.to_string()])
    {
        let p = canary.join(&name);
        std::fs::write(&p, format!("outside {name}")).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let canary_inodes: Vec<u64> = std::fs::read_dir(&canary)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().ino())
        .collect();
    let before = snapshot(&canary);

    // `sw` is a real directory, `other` a symlink to the canary; the swapper exchanges the two
    // names atomically, so `sw` is one or the other at every instant. A second pair swaps a
    // relative symlink (`../canary`) the same way.
    std::fs::create_dir(root.join("sw")).unwrap();
    std::os::unix::fs::symlink(&canary, root.join("other")).unwrap();
    std::fs::create_dir(root.join("sw2")).unwrap();
    std::os::unix::fs::symlink("../canary", root.join("other2")).unwrap();
    for i in 0..NAMES {
        std::fs::write(root.join(format!("sw/f{i}")), b"inside").unwrap();
    }
    let fs = MmapFs::new(&root, rw()).unwrap();
    let n = ops_per_kind();
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps, root) = (Arc::clone(&stop), Arc::clone(&swaps), root.clone());
        std::thread::spawn(move || {
            let dir = rustix::fs::open(
                &root,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (a, b) = if i % 2 == 0 {
                    ("sw", "other")
                } else {
                    ("sw2", "other2")
                };
                rustix::fs::renameat_with(&dir, a, &dir, b, rustix::fs::RenameFlags::EXCHANGE)
                    .expect("RENAME_EXCHANGE");
                i += 1;
                swaps.store(i, Ordering::Relaxed);
            }
        })
    };

    // Each worker does one kind of operation `n` times, through both swapped names.
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let kinds = [
        "open", "create", "truncate", "remove", "rename", "stat", "list",
    ];
    let workers: Vec<_> = kinds
        .iter()
        .map(|&kind| {
            let (fs, ok, refused) = (fs.clone(), Arc::clone(&ok), Arc::clone(&refused));
            let canary_inodes = canary_inodes.clone();
            std::thread::spawn(move || {
                for i in 0..n {
                    let d = if i % 2 == 0 { "sw" } else { "sw2" };
                    let f = format!("{d}/f{}", i as usize % NAMES);
                    let g = format!("{d}/f{}", (i as usize + 3) % NAMES);
                    let r: std::io::Result<()> = match kind {
                        "open" => fs.open(&f).map(|m| {
                            // Another thread's `create` or truncating open may cut the file
                            // under this handle: through the registry, so the read sees the
                            // new end (a short count) and never faults. It shows inside bytes.
                            let mut b = [0u8; 7];
                            let got = m.read_at(&mut b, 0).unwrap_or_else(|e| {
                                panic!("{f}: a read of an open file failed: {e}")
                            });
                            assert_ne!(&b[..got], b"outside", "{f} read a file outside");
                        }),
                        "create" => fs.create(&f).map(drop),
                        "truncate" => fs
                            .open_with(
                                &f,
                                std::fs::OpenOptions::new()
                                    .read(true)
                                    .write(true)
                                    .truncate(true),
                            )
                            .map(drop),
                        "remove" => fs.remove_file(&f),
                        "rename" => {
                            if i % 4 < 2 {
                                fs.rename(&f, &g)
                            } else {
                                // Across the swapped component, both ways.
                                fs.rename(&f, format!("top{i}"))
                                    .and_then(|()| fs.rename(format!("top{i}"), &g))
                            }
                        }
                        "stat" => fs.metadata(&f).map(|md| {
                            assert!(
                                !canary_inodes.contains(&md.ino()),
                                "{f} stat a file outside"
                            );
                        }),
                        "list" => fs.read_dir(d).map(|rd| {
                            for e in rd {
                                let name = e.unwrap().file_name();
                                assert_ne!(name, MARKER, "{d} listed the outside directory");
                            }
                        }),
                        _ => unreachable!(),
                    };
                    match r {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();

    assert_eq!(snapshot(&canary), before, "the directory outside changed");
    let (ok, refused) = (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    eprintln!(
        "{n} operations of each kind: {ok} done inside, {refused} refused, {} swaps",
        swaps.load(Ordering::Relaxed)
    );
    // Both sides were exercised: operations went through the real directory, and through the
    // symlink they were refused.
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
}

/// Runs `f` on a thread and fails the test if it has not returned within a minute: a watchdog
/// against an `open` that blocks, not a synchronisation.
fn within_a_minute<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} blocked"))
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.path().join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let fs = MmapFs::new(dir.path(), MapConfig::default()).unwrap();
    let rwfs = MmapFs::new(dir.path(), rw()).unwrap();
    let e = within_a_minute("opening a FIFO read-only", move || fs.open("fifo"))
        .expect_err("a FIFO is not a mappable file");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("not a regular file"), "{e}");
    assert!(e.to_string().contains("FIFO"), "{e}");
    // Writing (no reader: the non-blocking open itself fails) and creating over it.
    let e = within_a_minute("opening a FIFO read-write", {
        let fs = rwfs.clone();
        move || fs.open("fifo")
    })
    .expect_err("a FIFO is not a mappable file");
    assert!(e.to_string().contains("not a regular file"), "{e}");
    within_a_minute("creating over a FIFO", move || rwfs.create("fifo"))
        .expect_err("a FIFO is not a mappable file");
    assert!(dir.path().join("fifo").exists());
}

#[test]
fn a_socket_and_a_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    let fs = MmapFs::new(dir.path(), MapConfig::default()).unwrap();
    let e = within_a_minute("opening a socket", move || {
        (fs.open("sock").map(drop), fs.open("d").map(drop))
    });
    assert!(e.0.is_err());
    let e = e.1.unwrap_err();
    assert!(
        e.to_string().contains("not a regular file (a directory)"),
        "{e}"
    );
}

#[test]
fn bad_roots_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = MmapFs::new(dir.path().join("missing"), rw()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("missing"), "{e}");
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let e = MmapFs::new(dir.path().join("file"), rw()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("not a directory"), "{e}");
}

#[test]
fn escaping_and_absolute_paths_are_refused_by_every_operation() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path().join("root");
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::write(top.path().join("secret"), b"secret").unwrap();
    let fs = MmapFs::new(&root, rw()).unwrap();
    let secret = top.path().join("secret");
    let abs = secret.to_str().unwrap().to_string();
    for p in ["../secret", "a/../../secret", "a/b/../../../secret", &abs] {
        let denied = |r: std::io::Result<()>, op: &str| {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{op} {p}: {e}");
            assert!(e.to_string().contains("escapes the root"), "{op} {p}: {e}");
        };
        denied(fs.open(p).map(drop), "open");
        denied(fs.create(p).map(drop), "create");
        denied(fs.metadata(p).map(drop), "metadata");
        denied(fs.remove_file(p), "remove_file");
        denied(fs.rename(p, "x"), "rename from");
        denied(fs.rename("a", p), "rename to");
        denied(fs.read_dir(format!("{p}/..")).map(drop), "read_dir");
        denied(fs.create_dir_all(format!("{p}.d")), "create_dir_all");
    }
    assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
    let names: Vec<_> = std::fs::read_dir(top.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "nothing was created outside: {names:?}");
    // `..` that stays inside works.
    fs.create("a/b/../f").unwrap();
    assert!(root.join("a/f").exists());
    fs.create_dir_all("a/b/../c/d").unwrap();
    assert!(root.join("a/c/d").is_dir());
    assert_eq!(fs.read_dir("a/b/..").unwrap().count(), 3);
}
