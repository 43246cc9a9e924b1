//! Stress: 8 threads read random ranges of several registered files while another thread
//! truncates them and brings them back (rewriting the lost pages, or recreating the file). Not one
//! read may return `Ok` with bytes that differ from the file's content: every byte of every file is
//! `pattern(file, offset)`, never zero, so a replacement zero page read as data would be caught.

mod fault_support;

use std::os::unix::fs::FileExt as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use fault_support::*;
use segpool::fault::{self, FileFaultState};
use segpool::ErrorKind;

const PAGE: usize = 4096;
const FILES: usize = 4;
const PAGES: usize = 16;
const LEN: usize = PAGES * PAGE;
const READERS: usize = 8;
const MIN_READS: u64 = 400_000;
const MIN_CYCLES: u64 = 40;
/// After a truncation, the truncator waits until a reader faulted on the file or this many reads
/// happened, so the readers get to run into the lost pages (a counter, not a sleep).
const READS_PER_WINDOW: u64 = 2_000;

/// xorshift64*: enough randomness for offsets, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One file as the readers see it: its current mapping (replaced after a fault, like a reopen).
struct Slot {
    id: u64,
    path: std::path::PathBuf,
    current: RwLock<Arc<Mapped>>,
}

struct Mapped {
    guarded: Guarded,
    _file: std::fs::File,
}

fn open_mapped(slot_path: &std::path::Path) -> Arc<Mapped> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(slot_path)
        .unwrap();
    let state = FileFaultState::new(Some(slot_path.to_owned()));
    let guarded = Guarded::map(&file, LEN, true, &state).unwrap();
    Arc::new(Mapped {
        guarded,
        _file: file,
    })
}

#[test]
fn stress_truncation_never_returns_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let slots: Vec<Slot> = (0..FILES as u64)
        .map(|id| {
            let path = dir.path().join(format!("file-{id}"));
            create_pattern_file(&path, id, LEN);
            let current = RwLock::new(open_mapped(&path));
            Slot { id, path, current }
        })
        .collect();
    let (ok, faulted, bad, stop) = (
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicBool::new(false),
    );
    let recovered_before = fault::recovered_faults();
    let mut cycles = 0u64;

    std::thread::scope(|s| {
        for t in 0..READERS as u64 {
            let (slots, ok, faulted, bad, stop) = (&slots, &ok, &faulted, &bad, &stop);
            s.spawn(move || {
                let mut rng =
                    Rng(0x9E37_79B9_7F4A_7C15 ^ (t + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
                let mut buf = vec![0u8; 2 * PAGE];
                while !stop.load(Ordering::Relaxed) {
                    let slot = &slots[rng.below(FILES as u64) as usize];
                    let len = 1 + rng.below(1024) as usize;
                    let offset = rng.below((LEN - len + 1) as u64) as usize;
                    let mapped = Arc::clone(&slot.current.read().unwrap());
                    match mapped.guarded.read(offset, &mut buf[..len]) {
                        Ok(()) => {
                            let wrong =
                                (0..len).find(|&i| buf[i] != pattern(slot.id, (offset + i) as u64));
                            if let Some(i) = wrong {
                                bad.fetch_add(1, Ordering::Relaxed);
                                eprintln!(
                                    "WRONG BYTES: file {} offset {} byte {}: {:#x} != {:#x}",
                                    slot.id,
                                    offset,
                                    i,
                                    buf[i],
                                    pattern(slot.id, (offset + i) as u64)
                                );
                            }
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if matches!(e.kind(), ErrorKind::Faulted { .. }) => {
                            faulted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
            });
        }

        // The truncating thread (this one).
        let mut rng = Rng(0x1234_5678_9ABC_DEF1);
        let reads = || ok.load(Ordering::Relaxed) + faulted.load(Ordering::Relaxed);
        while reads() < MIN_READS || cycles < MIN_CYCLES {
            let slot = &slots[(cycles % FILES as u64) as usize];
            let keep = rng.below(PAGES as u64) as usize;
            let state = Arc::clone(slot.current.read().unwrap().guarded.state());
            truncate_elsewhere(&slot.path, (keep * PAGE) as u64);
            let start = reads();
            while !state.is_faulted() && reads() - start < READS_PER_WINDOW {
                std::thread::yield_now();
            }
            if cycles % 8 == 7 {
                // Recreate: a new file (new inode) renamed over the old one.
                let tmp = dir.path().join("recreate.tmp");
                create_pattern_file(&tmp, slot.id, LEN);
                std::fs::rename(&tmp, &slot.path).unwrap();
            } else {
                // Restore the lost pages, whole page by whole page (so the size only ever covers
                // fully written pages).
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&slot.path)
                    .unwrap();
                for p in keep..PAGES {
                    f.write_all_at(
                        &pattern_bytes(slot.id, (p * PAGE) as u64, PAGE),
                        (p * PAGE) as u64,
                    )
                    .unwrap();
                }
            }
            if state.is_faulted() || cycles % 8 == 7 {
                // "Reopen": a fresh state and mapping; the old one goes when its last reader does.
                *slot.current.write().unwrap() = open_mapped(&slot.path);
            }
            cycles += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });

    let (ok, faulted, bad) = (ok.into_inner(), faulted.into_inner(), bad.into_inner());
    let signals = fault::recovered_faults() - recovered_before;
    println!("stress: {ok} ok, {faulted} faulted ({signals} SIGBUS recovered), {bad} wrong, {cycles} truncations");
    assert_eq!(bad, 0, "reads returned Ok with wrong bytes");
    assert!(ok + faulted >= 100_000);
    assert!(
        ok > 0 && faulted > 0 && signals > 0,
        "the stress never exercised both outcomes"
    );
}
