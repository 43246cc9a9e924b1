//! `MappedFile` against `std::fs::File`: the differences once found, each as a test, then random
//! operation sequences run on both and compared result by result and byte by byte.
//!
//! The random part runs `SEGPOOL_DIFF_CASES` sequences per setup (32 by default: 256 in all); a
//! failure prints the setup, the seed and the last operations, and `SEGPOOL_DIFF_SEED=<seed>`
//! reruns exactly that sequence (the seed's low four bits name its setup). See docs/files.md ("Agreement with std::fs::File").

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use segpool::fs::{MapConfig, MapMode, MappedFile, MmapFs};
use segpool::Error;

mod common;
use common::{pattern, rw};

fn page() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) as u64
}

/// A plain descriptor on the same file, outside segpool (as another process would have).
fn outside(dir: &Path, name: &str) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(name))
        .unwrap()
}

fn is_faulted(e: &io::Error) -> bool {
    matches!(
        e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()),
        Some(Error::Faulted { .. })
    )
}

fn disk_len(dir: &Path, name: &str) -> u64 {
    std::fs::metadata(dir.join(name)).unwrap().len()
}

// ---- create / truncate while another handle is open --------------------------------------------

#[test]
fn create_over_an_open_file_cuts_it_for_every_handle() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let a = fs.create("f").unwrap();
    a.write_all_at(&pattern(3 * page() as usize + 100, 1), 0)
        .unwrap();
    let b = fs.create("f").unwrap();
    assert_eq!(disk_len(dir.path(), "f"), 0);
    assert_eq!(a.len(), 0, "the old handle sees the cut");
    assert_eq!(b.len(), 0);
    let mut buf = [7u8; 16];
    assert_eq!(a.read_at(&mut buf, 0).unwrap(), 0);
    assert_eq!(a.read_at(&mut buf, page()).unwrap(), 0);
    a.write_all_at(b"abc", 0).unwrap();
    assert_eq!(b.read_at(&mut buf, 0).unwrap(), 3);
    assert_eq!(&buf[..3], b"abc");
    b.write_all_at(b"z", 2 * page()).unwrap();
    assert_eq!(a.len(), 2 * page() + 1);
    assert_eq!(a.read_at(&mut buf, 2 * page()).unwrap(), 1);
    assert_eq!(buf[0], b'z');
    assert!(a.fault_state().check().is_ok());
}

#[test]
fn shared_memory_created_again_over_an_open_one_cuts_it_for_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shm");
    let a = segpool::fs::SharedMemory::create(&path, 3 * page()).unwrap();
    a.write_at(&vec![7u8; 3 * page() as usize], 0).unwrap();
    let b = segpool::fs::SharedMemory::create(&path, page()).unwrap();
    assert_eq!(disk_len(dir.path(), "shm"), page());
    let mut buf = vec![1u8; 64];
    b.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, vec![0u8; 64], "created again: zeros");
    a.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, vec![0u8; 64], "the old handle sees the new bytes");
    // Past the new length: nothing to read, and no fault.
    assert_eq!(a.read_at(&mut buf, 2 * page()).unwrap(), 0);
    a.write_at(b"ok", 10).unwrap();
    b.read_at(&mut buf[..2], 10).unwrap();
    assert_eq!(&buf[..2], b"ok");
}

/// The cut of a truncating open waits for running accesses like `set_len`: readers of another
/// handle never read a cut page (which would fault and poison the file).
#[test]
fn create_over_a_file_being_read_never_faults_the_readers() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    const LEN: usize = 64 * 1024;
    let a = fs.create("f").unwrap();
    a.write_all_at(&vec![5u8; LEN], 0).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (a, stop) = (&a, &stop);
            s.spawn(move || {
                let mut buf = vec![0u8; 4096];
                let mut i = t;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let off = (i * 7919) % LEN as u64;
                    let n = a.read_at(&mut buf, off).expect("a read racing create");
                    assert!(buf[..n].iter().all(|&b| b == 5 || b == 0));
                    i += 1;
                }
            });
        }
        for _ in 0..50 {
            let b = fs.create("f").unwrap();
            b.write_all_at(&vec![5u8; LEN], 0).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(a.fault_state().check().is_ok());
}

#[test]
fn open_with_truncate_cuts_through_the_registry_and_keeps_stds_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let a = fs.create("f").unwrap();
    a.write_all_at(&pattern(10_000, 2), 0).unwrap();
    let b = fs
        .open_with(
            "f",
            OpenOptions::new().read(true).write(true).truncate(true),
        )
        .unwrap();
    assert_eq!((a.len(), b.len(), disk_len(dir.path(), "f")), (0, 0, 0));
    let mut buf = [0u8; 8];
    assert_eq!(a.read_at(&mut buf, 5000).unwrap(), 0);
    assert!(a.fault_state().check().is_ok());
    // std refuses truncation without write access, and with append: so do we, before any cut.
    a.write_all_at(b"keep", 0).unwrap();
    for opts in [
        OpenOptions::new().read(true).truncate(true).clone(),
        OpenOptions::new()
            .read(true)
            .append(true)
            .truncate(true)
            .clone(),
    ] {
        let std_err = opts.open(dir.path().join("f")).unwrap_err();
        let ours = fs.open_with("f", &opts).unwrap_err();
        assert_eq!(ours.kind(), std_err.kind(), "{opts:?}");
        assert_eq!(a.len(), 4);
    }
}

// ---- the real length after someone outside grew or cut the file --------------------------------

#[test]
fn set_len_below_a_length_grown_outside_cuts_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let a = fs.create("f").unwrap();
    a.write_all_at(&[1u8; 100], 0).unwrap();
    outside(dir.path(), "f")
        .write_all_at(&[2u8; 10_000], 100)
        .unwrap();
    a.set_len(5000).unwrap();
    assert_eq!(disk_len(dir.path(), "f"), 5000);
    assert_eq!(a.len(), 5000);
    let mut buf = [0u8; 4];
    assert_eq!(a.read_at(&mut buf, 4998).unwrap(), 2);
    assert_eq!(&buf[..2], &[2, 2]);
}

#[test]
fn seek_from_end_and_reads_across_the_end_use_the_real_length() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let mut a = fs.create("f").unwrap();
    a.write_all_at(&[1u8; 100], 0).unwrap();
    outside(dir.path(), "f")
        .write_all_at(&[2u8; 900], 100)
        .unwrap();
    assert_eq!(a.seek(SeekFrom::End(0)).unwrap(), 1000);
    assert_eq!(a.seek(SeekFrom::End(-10)).unwrap(), 990);
    outside(dir.path(), "f")
        .write_all_at(&[3u8; 1000], 1000)
        .unwrap();
    // A read that starts inside the known length and reaches past it sees the new bytes.
    let mut buf = vec![0u8; 1500];
    assert_eq!(a.read_at(&mut buf, 900).unwrap(), 1100);
    assert_eq!(buf[99], 2);
    assert_eq!(buf[100], 3);
    // Cut outside to 500: seeking to the end says 500, a read across the end stops there.
    outside(dir.path(), "f").set_len(500).unwrap();
    assert_eq!(a.seek(SeekFrom::End(0)).unwrap(), 500);
    assert_eq!(a.len(), 500);
    assert_eq!(a.read_at(&mut buf, 400).unwrap(), 100);
    assert!(a.fault_state().check().is_ok());
}

#[test]
fn a_read_across_the_end_after_an_outside_cut_is_short_and_does_not_fault() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let a = fs.create("f").unwrap();
    a.write_all_at(&pattern(5 * page() as usize, 3), 0).unwrap();
    outside(dir.path(), "f").set_len(page() + 10).unwrap();
    let mut buf = vec![0u8; 6 * page() as usize];
    assert_eq!(a.read_at(&mut buf, page()).unwrap(), 10);
    assert_eq!(a.len(), page() + 10);
    // The handle works on: grows again through the registry.
    a.write_all_at(b"x", 3 * page()).unwrap();
    assert_eq!(disk_len(dir.path(), "f"), 3 * page() + 1);
    assert!(a.fault_state().check().is_ok());
}

/// The documented limit: a read wholly inside the length the process knows does not ask the
/// kernel. After a cut made outside the process (not seen yet), the bytes between the new end
/// and the end of its page read as zeros; a page wholly past the new end faults.
#[test]
fn an_outside_cut_not_seen_yet_reads_zeros_in_the_last_page_and_faults_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let a = fs.create("f").unwrap();
    a.write_all_at(&vec![9u8; 3 * page() as usize], 0).unwrap();
    outside(dir.path(), "f").set_len(page() + 100).unwrap();
    let mut buf = [1u8; 32];
    // Within the last page: zeros, returned as data (std would return Ok(0)).
    assert_eq!(a.read_at(&mut buf, page() + 200).unwrap(), 32);
    assert_eq!(buf, [0u8; 32]);
    // A page wholly past the new end: the fault error, and the file is poisoned.
    let e = a.read_at(&mut buf, 2 * page() + 8).unwrap_err();
    assert!(is_faulted(&e), "{e:?}");
    assert!(a.fault_state().check().is_err());
}

// ---- append -------------------------------------------------------------------------------------

#[test]
fn append_writes_go_to_the_current_end_and_write_at_keeps_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let other = fs.create("f").unwrap();
    other.write_all_at(b"0123456789", 0).unwrap();
    let mut ap = fs
        .open_with("f", OpenOptions::new().read(true).append(true))
        .unwrap();
    assert_eq!(ap.write(b"ab").unwrap(), 2);
    assert_eq!(ap.stream_position().unwrap(), 12);
    other.write_all_at(b"XYZ", 12).unwrap(); // another handle grew it
    ap.write_all(b"cd").unwrap();
    outside(dir.path(), "f").write_all_at(b"!!", 17).unwrap(); // and someone outside
    ap.seek(SeekFrom::Start(0)).unwrap();
    ap.write_all(b"ef").unwrap();
    assert_eq!(ap.stream_position().unwrap(), 21);
    // Positioned writes keep their offset (POSIX pwrite; std on Linux appends instead).
    assert_eq!(ap.write_at(b"--", 1).unwrap(), 2);
    let mut all = String::new();
    ap.seek(SeekFrom::Start(0)).unwrap();
    ap.read_to_string(&mut all).unwrap();
    assert_eq!(all, "0--3456789abXYZcd!!ef");
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), all.as_bytes());
}

#[test]
fn appends_from_many_threads_and_handles_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let opts = OpenOptions::new()
        .read(true)
        .create(true)
        .append(true)
        .clone();
    let handles: Vec<MappedFile> = (0..2).map(|_| fs.open_with("f", &opts).unwrap()).collect();
    const THREADS: u64 = 4;
    const RECORDS: u64 = 300;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let mut f = &handles[(t % 2) as usize];
            s.spawn(move || {
                for r in 0..RECORDS {
                    f.write_all(&(t * RECORDS + r).to_le_bytes()).unwrap();
                }
            });
        }
    });
    let bytes = std::fs::read(dir.path().join("f")).unwrap();
    assert_eq!(bytes.len() as u64, THREADS * RECORDS * 8);
    let mut ids: Vec<u64> = bytes
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    ids.sort_unstable();
    assert!(
        ids.iter().copied().eq(0..THREADS * RECORDS),
        "every record once"
    );
}

// ---- random operation sequences -----------------------------------------------------------------

/// splitmix64: a small, seedable generator, enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One configuration of the suite.
#[derive(Clone, Copy, Debug)]
struct Setup {
    name: &'static str,
    /// Window size in pages for the handles that use windows (`None`: whole-file mappings).
    window: Option<u64>,
    /// Two handles on the file (the second one windowed if `window` is set, the first whole).
    two: bool,
    /// A writer outside segpool changes the file between operations.
    outside: bool,
    /// Opened with `append(true)`.
    append: bool,
    /// Copy-on-write, compared with an in-memory model.
    cow: bool,
}

const SETUPS: &[Setup] = &[
    Setup {
        name: "whole",
        window: None,
        two: false,
        outside: false,
        append: false,
        cow: false,
    },
    Setup {
        name: "windowed",
        window: Some(1),
        two: false,
        outside: false,
        append: false,
        cow: false,
    },
    Setup {
        name: "two handles",
        window: None,
        two: true,
        outside: false,
        append: false,
        cow: false,
    },
    Setup {
        name: "two handles, one windowed",
        window: Some(2),
        two: true,
        outside: false,
        append: false,
        cow: false,
    },
    Setup {
        name: "writer outside",
        window: None,
        two: false,
        outside: true,
        append: false,
        cow: false,
    },
    Setup {
        name: "writer outside, windowed",
        window: Some(1),
        two: false,
        outside: true,
        append: false,
        cow: false,
    },
    Setup {
        name: "append, writer outside",
        window: None,
        two: true,
        outside: true,
        append: true,
        cow: false,
    },
    Setup {
        name: "copy-on-write",
        window: None,
        two: false,
        outside: false,
        append: false,
        cow: true,
    },
];

/// What the reference side is: `std::fs::File` handles on a second file, or (copy-on-write) an
/// in-memory model.
enum Reference {
    Std {
        /// One per handle of ours, with its own cursor (and `O_APPEND` if ours has it).
        handles: Vec<File>,
        /// Positioned writes: POSIX `pwrite` keeps its offset, which is what `write_at` does;
        /// std on Linux appends instead when the descriptor has `O_APPEND` (a documented
        /// difference), so positioned writes go through a descriptor without it.
        positioned: File,
    },
    Model {
        bytes: Vec<u8>,
        cursor: u64,
    },
}

type Outcome = Result<u64, io::ErrorKind>;

fn outcome<T: TryInto<u64>>(r: io::Result<T>) -> Outcome
where
    T::Error: std::fmt::Debug,
{
    r.map(|v| v.try_into().unwrap()).map_err(|e| e.kind())
}

const MAX_LEN: u64 = i64::MAX as u64;

impl Reference {
    fn read_at(&mut self, h: usize, buf: &mut [u8], off: u64) -> Outcome {
        match self {
            Reference::Std { handles, .. } => outcome(handles[h].read_at(buf, off)),
            Reference::Model { bytes, .. } => model_read(bytes, buf, off),
        }
    }
    fn read(&mut self, h: usize, buf: &mut [u8]) -> Outcome {
        match self {
            Reference::Std { handles, .. } => outcome(handles[h].read(buf)),
            Reference::Model { bytes, cursor } => {
                let n = model_read(bytes, buf, *cursor)?;
                *cursor += n;
                Ok(n)
            }
        }
    }
    fn read_exact(&mut self, h: usize, buf: &mut [u8]) -> Outcome {
        match self {
            Reference::Std { handles, .. } => outcome(handles[h].read_exact(buf).map(|()| 0u64)),
            Reference::Model { bytes, cursor } => {
                let n = model_read(bytes, buf, *cursor)?;
                *cursor += n;
                if n < buf.len() as u64 {
                    Err(io::ErrorKind::UnexpectedEof)
                } else {
                    Ok(0)
                }
            }
        }
    }
    fn write_at(&mut self, _h: usize, data: &[u8], off: u64) -> Outcome {
        match self {
            Reference::Std { positioned, .. } => outcome(positioned.write_at(data, off)),
            Reference::Model { bytes, .. } => model_write(bytes, data, off),
        }
    }
    fn write(&mut self, h: usize, data: &[u8]) -> Outcome {
        match self {
            Reference::Std { handles, .. } => outcome(handles[h].write(data)),
            Reference::Model { bytes, cursor } => {
                let r = model_write(bytes, data, *cursor);
                if let Ok(n) = r {
                    *cursor += n;
                }
                r
            }
        }
    }
    fn write_all(&mut self, h: usize, data: &[u8]) -> Outcome {
        match self {
            Reference::Std { handles, .. } => outcome(handles[h].write_all(data).map(|()| 0u64)),
            Reference::Model { .. } => self.write(h, data).map(|_| 0),
        }
    }
    fn seek(&mut self, h: usize, pos: SeekFrom) -> Outcome {
        match self {
            Reference::Std { handles, .. } => outcome(handles[h].seek(pos)),
            Reference::Model { bytes, cursor } => {
                let (base, d) = match pos {
                    SeekFrom::Start(n) => (n, 0),
                    SeekFrom::End(d) => (bytes.len() as u64, d),
                    SeekFrom::Current(d) => (*cursor, d),
                };
                match base.checked_add_signed(d).filter(|&p| p <= MAX_LEN) {
                    Some(p) => {
                        *cursor = p;
                        Ok(p)
                    }
                    None => Err(io::ErrorKind::InvalidInput),
                }
            }
        }
    }
    fn set_len(&mut self, h: usize, n: u64) -> Outcome {
        match self {
            Reference::Std { handles, .. } => outcome(handles[h].set_len(n).map(|()| 0u64)),
            // A copy-on-write handle never changes the file's length.
            Reference::Model { .. } => Err(io::ErrorKind::Unsupported),
        }
    }
    fn sync(&mut self) -> Outcome {
        match self {
            // `fsync` of a regular file succeeds on a healthy disk; the reference skips it (it
            // costs milliseconds on a journalling filesystem).
            Reference::Std { .. } | Reference::Model { .. } => Ok(0),
        }
    }
    fn contents(&self, path: &Path) -> Vec<u8> {
        match self {
            Reference::Std { .. } => std::fs::read(path).unwrap(),
            Reference::Model { bytes, .. } => bytes.clone(),
        }
    }
}

/// As `pread`: a range past `off_t` is refused, a read past the end is `Ok(0)`.
fn model_read(bytes: &[u8], buf: &mut [u8], off: u64) -> Outcome {
    if off
        .checked_add(buf.len() as u64)
        .is_none_or(|end| end > MAX_LEN)
    {
        return Err(io::ErrorKind::InvalidInput);
    }
    if off >= bytes.len() as u64 {
        return Ok(0);
    }
    let n = buf.len().min(bytes.len() - off as usize);
    buf[..n].copy_from_slice(&bytes[off as usize..off as usize + n]);
    Ok(n as u64)
}

/// A copy-on-write handle's write: in place only (it cannot grow the file).
fn model_write(bytes: &mut [u8], data: &[u8], off: u64) -> Outcome {
    match off.checked_add(data.len() as u64) {
        Some(end) if end <= MAX_LEN => {
            if data.is_empty() {
                Ok(0)
            } else if end > bytes.len() as u64 {
                Err(io::ErrorKind::Unsupported)
            } else {
                bytes[off as usize..end as usize].copy_from_slice(data);
                Ok(data.len() as u64)
            }
        }
        _ => Err(io::ErrorKind::InvalidInput),
    }
}

/// Prints what reruns a failing case when the case panics.
struct Rerun<'a> {
    setup: &'a Setup,
    seed: u64,
    log: Vec<String>,
}

impl Drop for Rerun<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let tail = self.log.len().saturating_sub(25);
            eprintln!(
                "differential case failed: setup {:?}, seed {:#x}\n  rerun: SEGPOOL_DIFF_SEED={:#x} cargo test -p segpool --test fs_differential random_\n  last operations:\n    {}",
                self.setup.name,
                self.seed,
                self.seed,
                self.log[tail..].join("\n    ")
            );
        }
    }
}

/// An offset near the data: inside, at or past the end, across page boundaries.
fn offset(rng: &mut Rng, len: u64) -> u64 {
    let p = page();
    match rng.below(10) {
        0 => len,
        1 => len + rng.below(3 * p),
        2 => (rng.below(6) * p).saturating_sub(rng.below(3)),
        3 if rng.chance(20) => [u64::MAX, MAX_LEN, MAX_LEN - 3][rng.below(3) as usize],
        _ => rng.below(len + p / 2 + 1),
    }
}

fn size(rng: &mut Rng) -> usize {
    match rng.below(8) {
        0 => 0,
        1 => 1 + rng.below(64) as usize,
        2 => page() as usize + rng.below(200) as usize,
        3 => 2 * page() as usize + 7,
        _ => 1 + rng.below(300) as usize,
    }
}

fn seek_target(rng: &mut Rng) -> SeekFrom {
    let d = |rng: &mut Rng| rng.below(3 * page()) as i64 - page() as i64;
    match rng.below(7) {
        0 => SeekFrom::Start(rng.below(4 * page())),
        1 => SeekFrom::Start(u64::MAX),
        2 | 3 => SeekFrom::End(d(rng)),
        _ => SeekFrom::Current(d(rng)),
    }
}

fn run_case(dir: &Path, setup: &Setup, seed: u64) {
    let mut rng = Rng(seed);
    let mut rerun = Rerun {
        setup,
        seed,
        log: Vec::new(),
    };
    let p = page();
    let name = format!("ours-{seed:x}");
    let ref_path = dir.join(format!("ref-{seed:x}"));
    let n = rng.below(4 * p) as usize;
    let initial = rng.bytes(n);
    std::fs::write(dir.join(&name), &initial).unwrap();
    std::fs::write(&ref_path, &initial).unwrap();

    let base = MapConfig {
        mode: if setup.cow {
            MapMode::CopyOnWrite
        } else {
            MapMode::ReadWrite
        },
        ..MapConfig::default()
    };
    let whole_fs = MmapFs::new(dir, base.clone()).unwrap();
    let window_fs = MmapFs::new(
        dir,
        MapConfig {
            window: setup.window.map(|w| w * p),
            max_windows: 2,
            ..base
        },
    )
    .unwrap();
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).append(setup.append);
    let mut ours: Vec<MappedFile> = if setup.two {
        vec![
            whole_fs.open_with(&name, &opts).unwrap(),
            window_fs.open_with(&name, &opts).unwrap(),
        ]
    } else {
        vec![window_fs.open_with(&name, &opts).unwrap()]
    };
    let mut reference = if setup.cow {
        Reference::Model {
            bytes: initial.clone(),
            cursor: 0,
        }
    } else {
        Reference::Std {
            handles: ours.iter().map(|_| opts.open(&ref_path).unwrap()).collect(),
            positioned: OpenOptions::new()
                .read(true)
                .write(true)
                .open(&ref_path)
                .unwrap(),
        }
    };
    let outside_ours = setup.outside.then(|| outside(dir, &name));
    let outside_ref = setup
        .outside
        .then(|| outside(dir, ref_path.file_name().unwrap().to_str().unwrap()));

    let ops = 20 + rng.below(60);
    for i in 0..ops {
        let cur_len = ours[0].len();
        if let (Some(o), Some(r)) = (&outside_ours, &outside_ref) {
            if rng.chance(15) {
                let real = r.metadata().unwrap().len();
                if rng.chance(60) {
                    let off = rng.below(real + p);
                    let n = size(&mut rng).max(1);
                    let data = rng.bytes(n);
                    rerun.log.push(format!(
                        "#{i} outside write_at({} bytes, {off})",
                        data.len()
                    ));
                    o.write_all_at(&data, off).unwrap();
                    r.write_all_at(&data, off).unwrap();
                } else {
                    let n = rng.below(real + 2 * p);
                    rerun.log.push(format!("#{i} outside set_len({n})"));
                    o.set_len(n).unwrap();
                    r.set_len(n).unwrap();
                    let known = ours[0].len();
                    if n < known {
                        // The documented limit: a read inside the length the process knows
                        // does not ask the kernel. Past the new end it reads zeros up to the end
                        // of that page, and faults past that page.
                        let page_end = n.div_ceil(p) * p;
                        if page_end > n && rng.chance(50) {
                            let off = n + rng.below(page_end.min(known) - n);
                            let k = rng.below(page_end.min(known) - off) + 1;
                            let mut buf = vec![1u8; k as usize];
                            rerun
                                .log
                                .push(format!("#{i} probe read_at({k}, {off}) after outside cut"));
                            assert_eq!(ours[0].read_at(&mut buf, off).unwrap(), k as usize);
                            assert!(buf.iter().all(|&b| b == 0), "zeros past an outside cut");
                        } else if known > page_end && rng.chance(10) {
                            let off = page_end + rng.below(known - page_end);
                            let mut buf = [0u8; 1];
                            rerun
                                .log
                                .push(format!("#{i} probe read_at(1, {off}) past the cut page"));
                            let e = ours[0].read_at(&mut buf, off).unwrap_err();
                            assert!(is_faulted(&e), "{e:?}");
                            for h in &ours {
                                assert!(is_faulted(&h.read_at(&mut buf, 0).unwrap_err()));
                            }
                            return; // the file is poisoned for every handle
                        }
                        // An operation that asks for the real length makes the handle see it.
                        let mut h = &ours[0];
                        let pos = h.stream_position().unwrap();
                        assert_eq!(h.seek(SeekFrom::End(0)).unwrap(), n);
                        h.seek(SeekFrom::Start(pos)).unwrap();
                    }
                }
                continue;
            }
        }
        let h = rng.below(ours.len() as u64) as usize;
        if setup.two && rng.chance(3) {
            // Create (truncate) the file again while the other handle keeps it open.
            rerun.log.push(format!("#{i} handle {h}: create"));
            let fs = if h == 0 { &whole_fs } else { &window_fs };
            ours[h] = fs.create(&name).unwrap();
            if let Reference::Std { handles, .. } = &mut reference {
                handles[h] = File::create(&ref_path).unwrap();
                handles[h] = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&ref_path)
                    .unwrap();
            }
            continue;
        }
        let mut f = &ours[h];
        let op = rng.below(14);
        let (desc, got, want) = match op {
            0 | 1 => {
                let off = offset(&mut rng, cur_len);
                let n = size(&mut rng);
                let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
                let got = outcome(f.read_at(&mut a, off));
                let want = reference.read_at(h, &mut b, off);
                if let Ok(k) = got {
                    assert_eq!(a[..k as usize], b[..k as usize], "bytes of read_at");
                }
                (format!("read_at({n}, {off})"), got, want)
            }
            2 | 3 => {
                let n = size(&mut rng);
                let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
                let got = outcome(f.read(&mut a));
                let want = reference.read(h, &mut b);
                if let Ok(k) = got {
                    assert_eq!(a[..k as usize], b[..k as usize], "bytes of read");
                }
                (format!("read({n})"), got, want)
            }
            4 => {
                let n = size(&mut rng);
                let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
                let got = outcome(f.read_exact(&mut a).map(|()| 0u64));
                let want = reference.read_exact(h, &mut b);
                if got.is_ok() {
                    assert_eq!(a, b, "bytes of read_exact");
                }
                (format!("read_exact({n})"), got, want)
            }
            5 | 6 => {
                let off = offset(&mut rng, cur_len);
                let n = size(&mut rng);
                let data = rng.bytes(n);
                let got = outcome(f.write_at(&data, off));
                let want = reference.write_at(h, &data, off);
                (format!("write_at({} bytes, {off})", data.len()), got, want)
            }
            7 | 8 => {
                let n = size(&mut rng);
                let data = rng.bytes(n);
                let got = outcome(f.write(&data));
                let want = reference.write(h, &data);
                (format!("write({} bytes)", data.len()), got, want)
            }
            9 => {
                let n = size(&mut rng);
                let data = rng.bytes(n);
                let got = outcome(f.write_all(&data).map(|()| 0u64));
                let want = reference.write_all(h, &data);
                (format!("write_all({} bytes)", data.len()), got, want)
            }
            10 | 11 => {
                let pos = seek_target(&mut rng);
                let got = outcome(f.seek(pos));
                let want = reference.seek(h, pos);
                (format!("seek({pos:?})"), got, want)
            }
            // fsync costs milliseconds on a journalling filesystem: rare, to keep the suite fast.
            13 if rng.chance(4) => {
                let got = outcome(f.sync_all().map(|()| 0u64));
                let want = reference.sync();
                ("sync_all".to_string(), got, want)
            }
            _ => {
                let n = match rng.below(4) {
                    0 => 0,
                    1 => cur_len / 2,
                    _ => rng.below(6 * p),
                };
                let got = outcome(f.set_len(n).map(|()| 0u64));
                let want = reference.set_len(h, n);
                (format!("set_len({n})"), got, want)
            }
        };
        rerun
            .log
            .push(format!("#{i} handle {h}: {desc} -> {got:?}"));
        assert_eq!(got, want, "{desc} on handle {h}");
    }

    // Byte by byte: what every handle reads, and the files on disk.
    let want = reference.contents(&ref_path);
    for (h, f) in ours.iter().enumerate() {
        let mut f = f;
        assert_eq!(
            f.seek(SeekFrom::End(0)).unwrap(),
            want.len() as u64,
            "length seen by handle {h}"
        );
        let mut got = vec![0u8; want.len()];
        f.read_exact_at(&mut got, 0).unwrap();
        assert!(got == want, "contents read through handle {h}");
        let mut past = [0u8; 8];
        assert_eq!(f.read_at(&mut past, want.len() as u64).unwrap(), 0);
    }
    let on_disk = std::fs::read(dir.join(&name)).unwrap();
    if setup.cow {
        assert!(
            on_disk == initial,
            "a copy-on-write handle never changes the file"
        );
    } else {
        assert!(on_disk == want, "contents on disk");
    }
    drop(ours);
    let _ = std::fs::remove_file(dir.join(&name));
    let _ = std::fs::remove_file(&ref_path);
}

fn cases() -> u64 {
    std::env::var("SEGPOOL_DIFF_CASES")
        .ok()
        .map(|v| {
            v.parse()
                .expect("SEGPOOL_DIFF_CASES is a number of cases per setup")
        })
        .unwrap_or(32)
}

fn run_setup(index: usize) {
    let setup = &SETUPS[index];
    let dir = tempfile::tempdir().unwrap();
    if let Ok(seed) = std::env::var("SEGPOOL_DIFF_SEED") {
        let s = seed.trim_start_matches("0x");
        let seed = u64::from_str_radix(s, 16).expect("SEGPOOL_DIFF_SEED in hex");
        if seed & 0xF == index as u64 {
            run_case(dir.path(), setup, seed);
        }
        return;
    }
    let mut seeds = Rng(0x5E6_9001 ^ (index as u64) << 32);
    for _ in 0..cases() {
        // The setup's index is in the seed, so a printed seed names its setup too.
        let seed = (seeds.next() & !0xF) | index as u64;
        run_case(dir.path(), setup, seed);
    }
}

#[test]
fn random_whole() {
    run_setup(0);
}
#[test]
fn random_windowed() {
    run_setup(1);
}
#[test]
fn random_two_handles() {
    run_setup(2);
}
#[test]
fn random_two_handles_one_windowed() {
    run_setup(3);
}
#[test]
fn random_writer_outside() {
    run_setup(4);
}
#[test]
fn random_writer_outside_windowed() {
    run_setup(5);
}
#[test]
fn random_append_with_writer_outside() {
    run_setup(6);
}
#[test]
fn random_copy_on_write() {
    run_setup(7);
}
