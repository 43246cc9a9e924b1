//! File operation sequences on `segpool::fs::MappedFile`, checked against `std::fs::File`.
//!
//! Both files start empty and get the same operations; every result (the error kind, or the
//! count and the bytes returned) must agree, and so must the contents and the length at the end.
//! The mapping is whole or windowed (a small window, so window edges are crossed often).
#![no_main]

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use segpool::fs::{MapConfig, MapMode, MmapFs};

/// Keeps every offset and length inside a few windows, so the cases stay fast.
const SPAN: u64 = 64 << 10;

#[derive(Arbitrary, Debug)]
enum Op {
    WriteAt { offset: u16, len: u16, byte: u8 },
    ReadAt { offset: u16, len: u16 },
    Write { len: u16, byte: u8 },
    Read { len: u16 },
    Seek { whence: u8, delta: i16 },
    SetLen(u16),
    Len,
    Sync,
}

#[derive(Arbitrary, Debug)]
struct Input {
    windowed: bool,
    ops: Vec<Op>,
}

fn kind<T>(r: &std::io::Result<T>) -> Option<ErrorKind> {
    r.as_ref().err().map(std::io::Error::kind)
}

fuzz_target!(|input: Input| {
    // tmpfs when there is one: `sync_all` would otherwise spend the run waiting for a disk.
    let dir = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    };
    let config = MapConfig::default()
        .mode(MapMode::ReadWrite)
        .window(input.windowed.then_some(8192));
    let fs = MmapFs::new(dir.path(), config).unwrap();
    let mut mapped = fs.create("mapped").unwrap();
    let mut model = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("model"))
        .unwrap();

    for op in input.ops.iter().take(128) {
        match *op {
            Op::WriteAt { offset, len, byte } => {
                let buf = vec![byte; usize::from(len) % 9000];
                let off = u64::from(offset) % SPAN;
                let a = mapped.write_all_at(&buf, off);
                let b = model.write_all_at(&buf, off);
                assert_eq!(kind(&a), kind(&b), "write_all_at({off}, {})", buf.len());
            }
            Op::ReadAt { offset, len } => {
                let off = u64::from(offset) % SPAN;
                let mut x = vec![0xAA; usize::from(len) % 9000];
                let mut y = x.clone();
                let a = mapped.read_at(&mut x, off);
                let b = model.read_at(&mut y, off);
                assert_eq!(kind(&a), kind(&b));
                if let (Ok(n), Ok(m)) = (&a, &b) {
                    // A read may return fewer bytes than std's; what it returns must match.
                    let n = (*n).min(*m);
                    assert_eq!(x[..n], y[..n], "read_at({off}) bytes differ");
                    assert!(a.as_ref().unwrap() <= m);
                }
            }
            Op::Write { len, byte } => {
                let buf = vec![byte; usize::from(len) % 9000];
                let a = mapped.write_all(&buf);
                let b = model.write_all(&buf);
                assert_eq!(kind(&a), kind(&b), "write_all({})", buf.len());
            }
            Op::Read { len } => {
                let mut x = vec![0x55; usize::from(len) % 9000];
                let mut y = x.clone();
                let a = read_full(&mut mapped, &mut x);
                let b = read_full(&mut model, &mut y);
                assert_eq!(a, b, "read lengths differ");
                assert_eq!(x[..a], y[..b], "read bytes differ");
            }
            Op::Seek { whence, delta } => {
                let d = i64::from(delta);
                let pos = match whence % 3 {
                    0 => SeekFrom::Start(d.unsigned_abs() % SPAN),
                    1 => SeekFrom::Current(d),
                    _ => SeekFrom::End(d),
                };
                let a = mapped.seek(pos);
                let b = model.seek(pos);
                assert_eq!(kind(&a), kind(&b), "seek({pos:?})");
                if let (Ok(x), Ok(y)) = (&a, &b) {
                    assert_eq!(x, y, "seek({pos:?}) positions differ");
                }
            }
            Op::SetLen(len) => {
                let len = u64::from(len) % SPAN;
                let a = mapped.set_len(len);
                let b = model.set_len(len);
                assert_eq!(kind(&a), kind(&b), "set_len({len})");
            }
            Op::Len => {
                assert_eq!(
                    mapped.len(),
                    model.metadata().unwrap().len(),
                    "lengths differ"
                );
            }
            Op::Sync => {
                mapped.sync_all().unwrap();
            }
        }
    }
    assert_eq!(
        mapped.len(),
        model.metadata().unwrap().len(),
        "lengths differ at the end"
    );
    let mut a = vec![0; mapped.len() as usize];
    mapped.read_exact_at(&mut a, 0).unwrap();
    mapped.close().unwrap();
    let b = std::fs::read(dir.path().join("model")).unwrap();
    assert_eq!(a, b, "contents differ at the end");
    assert_eq!(
        std::fs::read(dir.path().join("mapped")).unwrap(),
        b,
        "the file on disk differs"
    );
});

/// Reads until `buf` is full or the end of the file; returns the count.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => panic!("read failed: {e}"),
        }
    }
    n
}
