//! The access gate of mapped files: its scenarios (`gate_scenarios.rs`) in the fence form the
//! process chooses (`membarrier` where the kernel has it) and, alone in a process, in the
//! fallback form with full fences on both sides, as on a kernel or in a sandbox without
//! `membarrier(2)`; reader slots across thread exits.

use std::cell::RefCell;
use std::sync::{mpsc, Arc};
use std::thread;

use super::gate_scenarios as scenarios;
use super::{alone_in_a_process, pattern, rw};
use crate::fs::gate;
use crate::fs::{MappedFile, MmapFs};

#[test]
fn a_cut_waits_for_a_running_access() {
    scenarios::a_cut_waits_for_a_running_access();
}

#[test]
fn a_cut_waits_for_every_thread_inside() {
    scenarios::a_cut_waits_for_every_thread_inside();
}

#[test]
fn nested_accesses_on_two_files() {
    scenarios::nested_accesses_on_two_files();
}

#[test]
fn a_nested_access_enters_while_a_cut_of_its_file_waits() {
    scenarios::a_nested_access_enters_while_a_cut_of_its_file_waits();
}

#[test]
fn reads_from_many_threads_race_cuts_and_growth_without_faults() {
    scenarios::reads_from_many_threads_race_cuts_and_growth_without_faults();
}

#[test]
fn nested_reads_of_a_file_being_cut_never_fault() {
    scenarios::nested_reads_of_a_file_being_cut_never_fault();
}

/// Alone in a process, so the form is chosen before any mapped file is touched.
#[test]
fn every_gate_scenario_with_fences_instead_of_membarrier() {
    if !alone_in_a_process(concat!(
        module_path!(),
        "::every_gate_scenario_with_fences_instead_of_membarrier"
    )) {
        return;
    }
    assert!(gate::choose_fences());
    assert!(!gate::uses_membarrier());
    scenarios::all();
    assert!(!gate::uses_membarrier());
}

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

/// Alone in a process: the count of reader slots is the whole process's.
#[test]
fn slots_leave_the_list_at_thread_exit() {
    if !alone_in_a_process(concat!(
        module_path!(),
        "::slots_leave_the_list_at_thread_exit"
    )) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let data = pattern(1 << 16, 0);
    let f = Arc::new(fs.create("t").unwrap());
    f.write_all_at(&data, 0).unwrap();
    let mut buf = [0u8; 64];
    f.read_exact_at(&mut buf, 0).unwrap(); // this thread's slot
    let listed = gate::reader_slot_count();
    assert!(listed >= 1);

    // Threads one after the other: each lists a slot, which leaves when it exits.
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
        assert_eq!(gate::reader_slot_count(), listed);
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
        assert_eq!(gate::reader_slot_count(), listed, "case {case}");
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
                let now = gate::reader_slot_count();
                // No thread exits before every one has counted.
                barrier.wait();
                now
            })
        })
        .collect();
    for h in hs {
        assert!(h.join().unwrap() >= listed + 4);
    }
    assert_eq!(gate::reader_slot_count(), listed);
    assert!(!f.fault_state().is_faulted());
}
