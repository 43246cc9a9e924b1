//! The access gate of mapped files (`src/fs/gate/`), in its fallback form: under loom both the
//! reader fence and the resizer barrier are `fence(SeqCst)` (there is no `membarrier`). A shadow
//! cell stands for the mapping: readers read it inside an access, the resizer writes it while it
//! holds the resize (as a cut or an unmap would); loom reports a read that is not ordered before
//! or after that write as a data race, that is a resize that acted while an access ran.

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use super::model;
use crate::fs::gate::{Gate, ReaderSlot, ScopedAccess};

struct Shared {
    gate: Gate,
    slots: [ReaderSlot; 2],
    mapping: UnsafeCell<u32>,
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared {
        gate: Gate::default(),
        slots: [ReaderSlot::fenced(), ReaderSlot::fenced()],
        mapping: UnsafeCell::new(0),
    })
}

fn read(s: &Shared) -> u32 {
    // SAFETY: loom checks that no resize writes the cell concurrently.
    s.mapping.with(|p| unsafe { *p })
}

/// A resize scanning the model's slots; writes the shadow mapping while it holds the gate.
fn resize(s: &Shared, value: u32) {
    let g = s
        .gate
        .resize_with(|addr| s.slots.iter().any(|slot| slot.names(addr)))
        .unwrap();
    // SAFETY: loom checks that no access reads the cell concurrently.
    s.mapping.with_mut(|p| unsafe { *p = value });
    drop(g);
}

#[test]
fn gate_fast_path_access_racing_a_resize() {
    model(|| {
        let s = shared();
        let s2 = s.clone();
        let reader = thread::spawn(move || {
            // Enter, read, leave; then once more (the slot is reused).
            let mut seen = 0;
            for _ in 0..2 {
                if let Some(g) = s2.gate.try_enter_in(&s2.slots[0]) {
                    seen = seen.max(read(&s2));
                    drop(g);
                }
            }
            seen
        });
        resize(&s, 1);
        let seen = reader.join().unwrap();
        assert!(seen <= 1);
        // Both slots free, the gate open again.
        let g = s.gate.try_enter_in(&s.slots[1]).expect("gate reopened");
        assert_eq!(read(&s), 1);
        drop(g);
    });
}

#[test]
fn gate_fast_and_counted_accesses_racing_a_resize() {
    // A counted access (under loom `try_enter` always counts) beside a fast-path one.
    model(|| {
        let s = shared();
        let (s2, s3) = (s.clone(), s.clone());
        let fast = thread::spawn(move || {
            if let Some(g) = s2.gate.try_enter_in(&s2.slots[0]) {
                read(&s2);
                drop(g);
            }
        });
        let counted = thread::spawn(move || {
            if let Some(g) = s3.gate.try_enter() {
                read(&s3);
                drop(g);
            }
        });
        resize(&s, 1);
        fast.join().unwrap();
        counted.join().unwrap();
    });
}

#[test]
fn gate_nested_entry_never_joins_an_active_resize() {
    // A thread inside a `with_bytes` closure (of another file) enters while a resize of this
    // gate is pending, but never once the resize acts.
    model(|| {
        let s = shared();
        let s2 = s.clone();
        let nested = thread::spawn(move || {
            let _scope = ScopedAccess::begin();
            let g = s2.gate.enter();
            read(&s2);
            drop(g);
        });
        resize(&s, 1);
        nested.join().unwrap();
    });
}
