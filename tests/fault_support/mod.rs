//! Shared by the `fault_*` tests: file contents every byte of which can be checked, a raw mapping
//! registered with the fault guard, and running a test body in a child process.

#![allow(dead_code)] // each test binary uses a different part

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};
use segpool::fault::{self, FileFaultState, RangeRegistration};

/// The env var that tells a re-executed test binary to run the child part of the named test.
pub const CHILD_ENV: &str = "SEGPOOL_FAULT_TEST_CHILD";

/// The env var naming a directory the parent owns and removes, for a child that may die before
/// it could clean up.
pub const CHILD_DIR_ENV: &str = "SEGPOOL_FAULT_TEST_DIR";

/// The child's scratch directory (owned and removed by the parent).
pub fn child_dir() -> std::path::PathBuf {
    std::env::var_os(CHILD_DIR_ENV)
        .expect("run as a child")
        .into()
}

/// The byte at `offset` of test file `id`: never zero (so a zero page is always detected) and
/// different between files and between nearby offsets.
pub fn pattern(id: u64, offset: u64) -> u8 {
    ((id.wrapping_mul(0x9E37) ^ offset.wrapping_mul(31) ^ (offset >> 12).wrapping_mul(7)) % 251 + 1)
        as u8
}

/// `len` bytes of file `id` starting at `offset`.
pub fn pattern_bytes(id: u64, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern(id, offset + i)).collect()
}

/// Creates `path` with `len` bytes of file `id`'s pattern.
pub fn create_pattern_file(path: &Path, id: u64, len: usize) -> File {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(&pattern_bytes(id, 0, len)).unwrap();
    f
}

/// A file mapping registered with the fault guard. Fields drop in order: the registration goes
/// before the mapping is unmapped, as `register` requires.
pub struct Guarded {
    pub registration: RangeRegistration,
    pub map: MmapRaw,
}

impl Guarded {
    /// Maps `len` bytes of `file` shared read-write (or read-only) and registers the mapping.
    pub fn map(
        file: &File,
        len: usize,
        writable: bool,
        state: &Arc<FileFaultState>,
    ) -> segpool::Result<Guarded> {
        let opts = {
            let mut o = MmapOptions::new();
            o.len(len);
            o
        };
        let map = if writable {
            opts.map_raw(file)
        } else {
            opts.map_raw_read_only(file)
        }
        .unwrap();
        let access = if writable {
            fault::Access::ReadWrite
        } else {
            fault::Access::Read
        };
        // SAFETY: `map` is a live file mapping we own; every access in the tests goes through
        // `guarded`, except the ones that are meant to crash; the registration is a field
        // declared before `map`, so it is dropped before the mapping is unmapped.
        let registration =
            unsafe { fault::register_with_access(map.as_ptr(), len, state, access) }?;
        Ok(Guarded { registration, map })
    }

    pub fn state(&self) -> &Arc<FileFaultState> {
        self.registration.state()
    }

    /// Copies `buf.len()` bytes at `offset` out of the mapping under the fault guard.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> segpool::Result<()> {
        assert!(offset + buf.len() <= self.map.len());
        self.state().guarded_read(|| {
            // SAFETY: the range is inside the live mapping (asserted above); the file may change
            // under it, which is why we copy through a raw pointer and never form a reference.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.map.as_ptr().add(offset),
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            // Callers often drop `buf` unread: without this an optimized build may skip the
            // copy (a dead store), and with it the fault the test is about.
            std::hint::black_box(&mut *buf);
        })
    }

    /// Like `read`, but through `guarded` (the full-fence variant).
    pub fn read_full_fence(&self, offset: usize, buf: &mut [u8]) -> segpool::Result<()> {
        assert!(offset + buf.len() <= self.map.len());
        self.state().guarded(|| {
            // SAFETY: as in `read`.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.map.as_ptr().add(offset),
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            // Callers often drop `buf` unread: without this an optimized build may skip the
            // copy (a dead store), and with it the fault the test is about.
            std::hint::black_box(&mut *buf);
        })
    }

    /// Copies `data` into the mapping at `offset` under the fault guard.
    pub fn write(&self, offset: usize, data: &[u8]) -> segpool::Result<()> {
        assert!(offset + data.len() <= self.map.len());
        self.state().guarded(|| {
            // SAFETY: inside the live, writable mapping; raw copy, no reference formed.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    self.map.as_mut_ptr().add(offset),
                    data.len(),
                )
            }
        })
    }
}

/// Truncates the file at `path` to `len` through a descriptor of its own, as another process
/// would.
pub fn truncate_elsewhere(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Rewrites `[from, to)` of file `id` at `path` with its pattern, through another descriptor.
pub fn restore_elsewhere(path: &Path, id: u64, from: u64, to: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&pattern_bytes(id, from, (to - from) as usize), from)
        .unwrap();
}

/// Whether this process is the child of test `name`.
pub fn is_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|v| v == name)
}

/// Runs test `name` of this test binary again in a child process (with `prefix` in front of the
/// binary, e.g. `unshare ...`), in the mode where it runs its child part. Its output is captured
/// and printed, so a failing parent shows what the child said.
pub fn run_child(name: &str, prefix: &[&str]) -> Output {
    run_child_with(name, prefix, &[])
}

/// `run_child` with extra environment variables for the child.
pub fn run_child_with(name: &str, prefix: &[&str], envs: &[(&str, &str)]) -> Output {
    let exe = std::env::current_exe().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut cmd = match prefix.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .env(CHILD_DIR_ENV, scratch.path())
        .envs(envs.iter().copied());
    let out = cmd.output().unwrap();
    println!("child {name}: {:?}", out.status);
    println!("child stdout:\n{}", String::from_utf8_lossy(&out.stdout));
    println!("child stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Asserts that the child ended because of `signal`.
pub fn assert_killed_by(out: &Output, signal: i32) {
    assert_eq!(
        out.status.signal(),
        Some(signal),
        "child should have died of signal {signal}, ended with {:?}",
        out.status
    );
}

/// Called first in a child that is meant to crash: no core file for the expected crash.
pub fn no_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit struct; lowering our own core limit has no memory-safety effect.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
}

/// The page size the crash helpers below assume.
const CRASH_PAGE: usize = 4096;

/// A registered, healthy mapping (so our handler is installed), kept alive by the caller.
pub fn register_one(dir: &Path) -> (File, Guarded) {
    let p = dir.join("ours");
    let f = create_pattern_file(&p, 10, 2 * CRASH_PAGE);
    let s = FileFaultState::new(Some(p));
    let g = Guarded::map(&f, 2 * CRASH_PAGE, true, &s).unwrap();
    assert!(fault::handler_installed());
    (f, g)
}

/// Maps a file we never register, truncates it and reads the lost page with a plain load: a
/// SIGBUS that is not segpool's.
pub fn fault_outside_our_ranges(dir: &Path) -> u8 {
    let p = dir.join("not-ours");
    let f = create_pattern_file(&p, 11, 2 * CRASH_PAGE);
    let map = MmapOptions::new()
        .len(2 * CRASH_PAGE)
        .map_raw_read_only(&f)
        .unwrap();
    truncate_elsewhere(&p, 0);
    // SAFETY: in bounds of a live mapping; the page is gone, so this raises SIGBUS, which is the
    // point of the test (a plain volatile load, no reference formed).
    unsafe { std::ptr::read_volatile(map.as_ptr().add(CRASH_PAGE)) }
}

/// Recovers one fault in our range, proving the handler works in this process; prints
/// `recovered a fault in our range`.
pub fn recover_one_of_ours(dir: &Path) {
    let p = dir.join("ours-faulting");
    let f = create_pattern_file(&p, 12, 2 * CRASH_PAGE);
    let s = FileFaultState::new(Some(p.clone()));
    let g = Guarded::map(&f, 2 * CRASH_PAGE, true, &s).unwrap();
    truncate_elsewhere(&p, 0);
    let mut buf = [0u8; 8];
    assert!(g.read(CRASH_PAGE, &mut buf).is_err());
    assert!(s.is_faulted());
    println!("recovered a fault in our range");
}
