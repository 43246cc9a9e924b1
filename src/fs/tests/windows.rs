//! Windowed mappings: bounded windows, boundary-crossing I/O, files far larger than a window.

use std::io::Read;

use crate::fs::{MapConfig, MapMode, MmapFs};

const W: u64 = 64 * 1024;

fn windowed(max_windows: usize) -> MapConfig {
    MapConfig::default()
        .mode(MapMode::ReadWrite)
        .window(Some(W))
        .max_windows(max_windows)
}

/// A tiny deterministic generator (no dependency): xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn byte_at(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

#[test]
fn reads_and_writes_across_window_boundaries_are_complete() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), windowed(2)).unwrap();
    let f = fs.create("w").unwrap();
    // A write spanning four windows.
    let data: Vec<u8> = (0..3 * W + 100).map(byte_at).collect();
    f.write_all_at(&data, W - 50).unwrap();
    assert!(f.mapped_windows() <= 2);
    let mut back = vec![0u8; data.len()];
    assert_eq!(
        f.read_at(&mut back, W - 50).unwrap(),
        data.len(),
        "one call, no short read"
    );
    assert_eq!(back, data);
    // with_view across a boundary.
    let ok = f
        .with_view(2 * W - 10, 20, |v| {
            v.to_vec() == data[(W + 40) as usize..(W + 60) as usize]
        })
        .unwrap();
    assert!(ok);
}

#[test]
fn sequential_read_of_a_windowed_file_returns_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let len = 10 * W + 123;
    let data: Vec<u8> = (0..len).map(byte_at).collect();
    std::fs::write(dir.path().join("seq"), &data).unwrap();
    let fs = MmapFs::new(dir.path(), windowed(3)).unwrap();
    let mut f = fs.open("seq").unwrap();
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 10_000]; // not a divisor of the window
    loop {
        let n = f.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
        assert!(f.mapped_windows() <= 3);
    }
    assert_eq!(out.len() as u64, len);
    assert!(out == data);
}

#[test]
fn random_io_on_a_file_far_larger_than_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), windowed(4)).unwrap();
    let f = fs.create("big").unwrap();
    let len: u64 = 64 * 1024 * 1024; // 1024 windows
    f.set_len(len).unwrap();
    let mut model = std::collections::HashMap::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..2000u64 {
        let off = rng.next() % (len - 300);
        let n = (rng.next() % 300 + 1) as usize;
        let buf: Vec<u8> = (0..n as u64).map(|j| byte_at(i * 7919 + j)).collect();
        f.write_all_at(&buf, off).unwrap();
        for (j, b) in buf.iter().enumerate() {
            model.insert(off + j as u64, *b);
        }
        assert!(f.mapped_windows() <= 4, "at most max_windows stay mapped");
    }
    // Check every written byte through random reads, and a few untouched zeros.
    let mut keys: Vec<_> = model.keys().copied().collect();
    keys.sort_unstable();
    for chunk in keys.chunks(97) {
        let off = chunk[0];
        let mut b = [0u8; 1];
        for &k in chunk {
            f.read_exact_at(&mut b, k).unwrap();
            assert_eq!(b[0], model[&k], "byte at {k}");
        }
        let _ = off;
    }
    let mut z = [1u8; 16];
    let mut probe = 1u64;
    while model.contains_key(&probe) || (probe..probe + 16).any(|p| model.contains_key(&p)) {
        probe += 4096;
    }
    f.read_exact_at(&mut z, probe).unwrap();
    assert_eq!(z, [0u8; 16]);
    drop(f);
    // The file itself holds the bytes (read back without the layer).
    use std::os::unix::fs::FileExt;
    let raw = std::fs::File::open(dir.path().join("big")).unwrap();
    for &k in keys.iter().step_by(101) {
        let mut b = [0u8; 1];
        raw.read_exact_at(&mut b, k).unwrap();
        assert_eq!(b[0], model[&k]);
    }
}

#[test]
fn windowed_read_only_file_grows_through_another_handle() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), windowed(2)).unwrap();
    let w = fs.create("g").unwrap();
    let ro = MmapFs::new(dir.path(), MapConfig::default().window(Some(W)))
        .unwrap()
        .open("g")
        .unwrap();
    assert_eq!(ro.len(), 0);
    w.write_all_at(b"late bytes", 5 * W).unwrap();
    let mut b = [0u8; 10];
    ro.read_exact_at(&mut b, 5 * W).unwrap();
    assert_eq!(&b, b"late bytes");
}

#[test]
fn immediate_write_across_windows_syncs_the_whole_range() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(
        dir.path(),
        windowed(1)
            .sync(crate::fs::SyncMode::Immediate)
            .populate(true)
            .lock(false),
    )
    .unwrap();
    let f = fs.create("imm").unwrap();
    let data: Vec<u8> = (0..2 * W + 10).map(byte_at).collect();
    f.write_all_at(&data, W / 2).unwrap();
    assert_eq!(f.last_synced_range(), Some((W / 2, data.len() as u64)));
    assert!(!f.is_dirty());
    assert!(f.mapped_windows() <= 1);
    let mut empty = fs.create("empty").unwrap();
    let mut v = Vec::new();
    assert_eq!(empty.read_to_end(&mut v).unwrap(), 0);
    f.sync_range(0, 3 * W).unwrap();
    assert_eq!(
        f.last_synced_range(),
        Some((0, W / 2 + data.len() as u64)),
        "clipped at the end"
    );
    drop(f);
    assert_eq!(
        std::fs::read(dir.path().join("imm")).unwrap()[(W / 2) as usize..],
        data[..]
    );
}
