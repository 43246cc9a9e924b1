//! Reader slots of the access gate across thread exits: a thread's slot leaves the registry
//! when the thread exits, and accesses from thread-local destructors (before or after that)
//! still work. One test in this binary, so the slot counts are this test's alone.

use std::cell::RefCell;
use std::sync::{mpsc, Arc};
use std::thread;

use segpool::fs::{MappedFile, MmapFs};

mod common;
use common::{pattern, rw};

/// Reads 64 bytes at `off` from a thread-local destructor and sends them.
struct ReadAtExit {
    file: Arc<MappedFile>,
    off: u64,
    tx: mpsc::Sender<Vec<u8>>,
}

impl Drop for ReadAtExit {
    fn drop(&mut self) {
        let mut buf = vec![0u8; 64];
        let n = self.file.read_at(&mut buf, self.off).unwrap();
        buf.truncate(n);
        self.tx.send(buf).unwrap();
    }
}

thread_local! {
    static AT_EXIT: RefCell<Option<ReadAtExit>> = const { RefCell::new(None) };
}

#[test]
fn slots_leave_the_registry_at_thread_exit() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let data = pattern(1 << 16, 0);
    let f = Arc::new(fs.create("t").unwrap());
    f.write_all_at(&data, 0).unwrap();
    let mut buf = [0u8; 64];
    f.read_exact_at(&mut buf, 0).unwrap(); // this thread's slot
    let registered = segpool::fs::reader_slots();
    assert!(registered >= 1);

    // Threads one after the other: each registers a slot, which leaves when it exits.
    for t in 0..20u64 {
        let f = Arc::clone(&f);
        let got = thread::spawn(move || {
            let mut buf = [0u8; 64];
            f.read_exact_at(&mut buf, t * 64).unwrap();
            buf
        })
        .join()
        .unwrap();
        assert_eq!(&got[..], &data[t as usize * 64..][..64]);
        assert_eq!(segpool::fs::reader_slots(), registered);
    }

    // Accesses from a thread-local destructor: with the reader slot taken before the
    // thread-local is set (so the slot may outlive the destructor) and after (the slot may be
    // retired first: the access then takes the counted path), and with no access before at all.
    for (case, off) in [(0, 640u64), (1, 1280), (2, 1920)] {
        let (tx, rx) = mpsc::channel();
        let f2 = Arc::clone(&f);
        thread::spawn(move || {
            let mut buf = [0u8; 64];
            if case == 0 {
                f2.read_exact_at(&mut buf, 0).unwrap();
            }
            AT_EXIT.with(|a| {
                *a.borrow_mut() = Some(ReadAtExit {
                    file: Arc::clone(&f2),
                    off,
                    tx,
                })
            });
            if case == 1 {
                f2.read_exact_at(&mut buf, 0).unwrap();
            }
        })
        .join()
        .unwrap();
        let got = rx.recv().unwrap();
        assert_eq!(&got[..], &data[off as usize..][..64], "case {case}");
        assert_eq!(segpool::fs::reader_slots(), registered, "case {case}");
    }

    // Threads alive at once have distinct slots; all leave.
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let (f, barrier) = (Arc::clone(&f), Arc::clone(&barrier));
            thread::spawn(move || {
                let mut buf = [0u8; 64];
                f.read_exact_at(&mut buf, 64).unwrap();
                barrier.wait();
                let now = segpool::fs::reader_slots();
                // No thread exits before every one has counted.
                barrier.wait();
                now
            })
        })
        .collect();
    for h in hs {
        assert!(h.join().unwrap() >= registered + 4);
    }
    assert_eq!(segpool::fs::reader_slots(), registered);
    assert!(!f.fault_state().is_faulted());
}
