//! Scenarios of the access gate of mapped files, run by `gate.rs` in whatever fence form the
//! process chooses (`membarrier` where the kernel has it) and forced to full fences: a cut waits
//! for running accesses (fast path and nested, counted ones), nested accesses on two files, reads
//! racing cuts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;

use crate::fs::{MappedFile, MmapFs};

use super::{pattern, rw};

fn file(fs: &MmapFs, name: &str, len: usize, seed: u8) -> MappedFile {
    let f = fs.create(name).unwrap();
    f.write_all_at(&pattern(len, seed), 0).unwrap();
    f
}

/// The kernel's scheduler state of thread `tid` of this process ('R', 'S', ...).
fn thread_state(tid: libc::pid_t) -> char {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // "tid (comm) S ...": the state follows the last ')'.
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.trim_start().chars().next().unwrap()
}

/// Waits until thread `tid` sleeps in the kernel (blocked on a lock or a condition variable).
/// Polls an observable state; the assertions that follow hold whatever the timing.
fn wait_until_asleep(tid: libc::pid_t) {
    while thread_state(tid) != 'S' {
        thread::yield_now();
    }
}

fn gettid() -> libc::pid_t {
    // SAFETY: `gettid` has no preconditions.
    unsafe { libc::gettid() }
}

/// Runs `set_len(len)` on `f` in a new thread that first reports its thread id; returns the
/// thread's handle, its id and a flag set once `set_len` returned.
fn cut_in_thread(
    f: &Arc<MappedFile>,
    len: u64,
) -> (thread::JoinHandle<()>, libc::pid_t, Arc<AtomicBool>) {
    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let h = {
        let (f, done) = (Arc::clone(f), Arc::clone(&done));
        thread::spawn(move || {
            tx.send(gettid()).unwrap();
            f.set_len(len).unwrap();
            done.store(true, Ordering::SeqCst);
        })
    };
    let tid = rx.recv().unwrap();
    (h, tid, done)
}

pub(super) fn a_cut_waits_for_a_running_access() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let f = Arc::new(file(&fs, "a", 64 * 1024, 1));
    let expected = pattern(64 * 1024, 1);
    let mut cutter = None;
    let sum = f
        .with_view(0, 64 * 1024, |view| {
            // Inside the access (the fast path: this thread's first and only access): start the
            // cut and let it block.
            let (h, tid, done) = cut_in_thread(&f, 4096);
            wait_until_asleep(tid);
            assert!(
                !done.load(Ordering::SeqCst),
                "set_len returned during an access"
            );
            // The bytes past the coming cut are still readable: no fault.
            let bytes = view.to_vec();
            let sum: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
            assert_eq!(bytes, &expected[..]);
            assert!(
                !done.load(Ordering::SeqCst),
                "set_len returned during an access"
            );
            cutter = Some((h, done));
            sum
        })
        .unwrap();
    assert_eq!(sum, expected.iter().map(|&b| u64::from(b)).sum::<u64>());
    let (h, done) = cutter.unwrap();
    h.join().unwrap();
    assert!(done.load(Ordering::SeqCst));
    assert_eq!(f.len(), 4096);
    assert!(!f.fault_state().is_faulted());
}

pub(super) fn a_cut_waits_for_every_thread_inside() {
    // Several threads inside `with_view` at once (each on its own fast path), a cut behind
    // them: it returns only after the last one left.
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let f = Arc::new(file(&fs, "b", 16 * 1024, 2));
    const READERS: usize = 3;
    let inside = Arc::new(Barrier::new(READERS + 1));
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Arc::new(std::sync::Mutex::new(go_rx));
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (f, inside, go_rx, left) = (
                Arc::clone(&f),
                Arc::clone(&inside),
                Arc::clone(&go_rx),
                Arc::clone(&left),
            );
            thread::spawn(move || {
                f.with_view(0, 16 * 1024, |view| {
                    inside.wait();
                    go_rx.lock().unwrap().recv().unwrap();
                    let n = view.to_vec().len();
                    left.fetch_add(1, Ordering::SeqCst);
                    n
                })
                .unwrap()
            })
        })
        .collect();
    inside.wait();
    let (cut, tid, done) = cut_in_thread(&f, 0);
    for _ in 0..READERS {
        wait_until_asleep(tid);
        assert!(
            !done.load(Ordering::SeqCst),
            "set_len returned during an access"
        );
        go_tx.send(()).unwrap();
    }
    for r in readers {
        assert_eq!(r.join().unwrap(), 16 * 1024);
    }
    cut.join().unwrap();
    assert_eq!(left.load(Ordering::SeqCst), READERS);
    assert_eq!(f.len(), 0);
    assert!(!f.fault_state().is_faulted());
}

pub(super) fn nested_accesses_on_two_files() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let a = file(&fs, "a", 8192, 3);
    let b = file(&fs, "b", 8192, 4);
    let (pa, pb) = (pattern(8192, 3), pattern(8192, 4));
    let r = a
        .with_view(100, 64, |outer| {
            // Nested reads on the other file and on this one (counted: the slot is taken).
            let mut buf = [0u8; 64];
            assert_eq!(b.read_at(&mut buf, 1000).unwrap(), 64);
            assert_eq!(&buf[..], &pb[1000..1064]);
            assert_eq!(a.read_at(&mut buf, 2000).unwrap(), 64);
            assert_eq!(&buf[..], &pa[2000..2064]);
            let inner = b
                .with_view(4000, 16, |inner| {
                    let mut buf = [0u8; 8];
                    a.read_exact_at(&mut buf, 8000).unwrap();
                    assert_eq!(&buf[..], &pa[8000..8008]);
                    inner.to_vec()
                })
                .unwrap();
            assert_eq!(&inner[..], &pb[4000..4016]);
            outer.to_vec()
        })
        .unwrap();
    assert_eq!(&r[..], &pa[100..164]);
    // After the nesting, both gates are open again: a cut of each goes through at once.
    a.set_len(10).unwrap();
    b.set_len(20).unwrap();
    assert_eq!((a.len(), b.len()), (10, 20));
    let mut buf = [0u8; 64];
    assert_eq!(a.read_at(&mut buf, 0).unwrap(), 10);
    assert_eq!(&buf[..10], &pa[..10]);
}

pub(super) fn a_nested_access_enters_while_a_cut_of_its_file_waits() {
    // The cut waits for the outer access; a nested access on the same file must not wait for
    // the cut (a deadlock), and one on another file is not held up either.
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let a = Arc::new(file(&fs, "a", 8192, 5));
    let b = file(&fs, "b", 8192, 6);
    let (pa, pb) = (pattern(8192, 5), pattern(8192, 6));
    let mut cutter = None;
    a.with_view(0, 16, |_| {
        let (h, tid, done) = cut_in_thread(&a, 100);
        wait_until_asleep(tid);
        let mut buf = [0u8; 64];
        assert_eq!(a.read_at(&mut buf, 4096).unwrap(), 64);
        assert_eq!(&buf[..], &pa[4096..4160]);
        assert_eq!(b.read_at(&mut buf, 4096).unwrap(), 64);
        assert_eq!(&buf[..], &pb[4096..4160]);
        let n = a.with_view(200, 8, |s| s.to_vec()).unwrap();
        assert_eq!(&n[..], &pa[200..208]);
        assert!(
            !done.load(Ordering::SeqCst),
            "set_len returned during an access"
        );
        cutter = Some(h);
    })
    .unwrap();
    cutter.unwrap().join().unwrap();
    assert_eq!(a.len(), 100);
    assert!(!a.fault_state().is_faulted());
}

pub(super) fn reads_from_many_threads_race_cuts_and_growth_without_faults() {
    // Readers on the fast path while another thread cuts and regrows the file (each cut waits
    // for them): no read ever faults.
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    const LEN: usize = 256 * 1024;
    let f = Arc::new(file(&fs, "race", LEN, 7));
    let data = Arc::new(pattern(LEN, 7));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let (f, data, stop) = (Arc::clone(&f), Arc::clone(&data), Arc::clone(&stop));
            thread::spawn(move || {
                let mut buf = [0u8; 64];
                let mut i = t as u64;
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) || reads < 1000 {
                    i = i
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let off = (i >> 20) % (LEN as u64 - 64);
                    let n = f.read_at(&mut buf, off).unwrap();
                    let off = off as usize;
                    // Bytes of the pattern, or zeros where a growing write reserved the space
                    // (a stat by the reader may publish the length first, as with `pwrite`).
                    for (k, &b) in buf[..n].iter().enumerate() {
                        assert!(b == data[off + k] || b == 0, "byte {} is {b}", off + k);
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for round in 0..50u64 {
        f.set_len(4096 * (round % 7)).unwrap();
        f.write_all_at(&data, 0).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() >= 1000);
    }
    assert!(!f.fault_state().is_faulted());
}

pub(super) fn nested_reads_of_a_file_being_cut_never_fault() {
    // A thread inside `with_view` on one file reads another file that a second thread keeps
    // cutting and regrowing. The nested read may enter while a cut of its file is pending (the
    // with_view rule), but never while the cut acts: no read faults.
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    const LEN: usize = 64 * 1024;
    let a = Arc::new(file(&fs, "a", 4096, 8));
    let b = Arc::new(file(&fs, "b", LEN, 9));
    let data = Arc::new(pattern(LEN, 9));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (a, b, data, stop) = (a.clone(), b.clone(), data.clone(), stop.clone());
        thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) || reads < 1000 {
                a.with_view(0, 16, |_| {
                    let mut buf = [0u8; 64];
                    for k in 0..50u64 {
                        let off = (k * 4160) % (LEN as u64 - 64);
                        let n = b.read_at(&mut buf, off).unwrap();
                        let off = off as usize;
                        for (j, &x) in buf[..n].iter().enumerate() {
                            assert!(x == data[off + j] || x == 0);
                        }
                        reads += 1;
                    }
                })
                .unwrap();
            }
            reads
        })
    };
    for _ in 0..100 {
        b.set_len(4096).unwrap();
        b.write_all_at(&data, 0).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() >= 1000);
    assert!(!b.fault_state().is_faulted());
    assert!(!a.fault_state().is_faulted());
}

/// Every scenario, one after the other.
pub(super) fn all() {
    a_cut_waits_for_a_running_access();
    a_cut_waits_for_every_thread_inside();
    nested_accesses_on_two_files();
    a_nested_access_enters_while_a_cut_of_its_file_waits();
    reads_from_many_threads_race_cuts_and_growth_without_faults();
    nested_reads_of_a_file_being_cut_never_fault();
}
