//! The free stack under two threads: every index is handed out to exactly one party at a time.

use std::sync::Arc;

use crate::free_stack::FreeStack;

/// Two threads pop batches and push them back; the indices each holds are disjoint, and all of
/// them are back on the stack at the end.
#[test]
fn two_threads_never_hold_the_same_index() {
    const LEN: u32 = 8;
    let rounds = if cfg!(miri) { 20 } else { 2_000 };
    let stack = Arc::new(FreeStack::full(LEN));
    let held: Arc<[std::sync::atomic::AtomicBool]> = (0..LEN)
        .map(|_| std::sync::atomic::AtomicBool::new(false))
        .collect();
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let (stack, held) = (stack.clone(), held.clone());
            std::thread::spawn(move || {
                let mut out = [0usize; 3];
                for _ in 0..rounds {
                    let n = stack.pop_into(&mut out[..1 + t]);
                    for &i in &out[..n] {
                        assert!(
                            !held[i].swap(true, std::sync::atomic::Ordering::Relaxed),
                            "index {i} handed out twice"
                        );
                    }
                    for &i in &out[..n] {
                        held[i].store(false, std::sync::atomic::Ordering::Relaxed);
                    }
                    stack.push_all(out[..n].iter().map(|&i| i as u32));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut all = [usize::MAX; LEN as usize + 1];
    assert_eq!(stack.pop_into(&mut all), LEN as usize);
    let mut got = all[..LEN as usize].to_vec();
    got.sort_unstable();
    assert_eq!(got, (0..LEN as usize).collect::<Vec<_>>());
}

/// A stack with no slices hands out nothing.
#[test]
fn an_empty_stack_pops_nothing() {
    let stack = FreeStack::full(0);
    let mut out = [0usize; 2];
    assert_eq!(stack.pop_into(&mut out), 0);
}
