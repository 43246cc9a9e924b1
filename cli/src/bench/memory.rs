//! The memory section of `segpool bench`: does resident memory follow use?
//!
//! The scenario: 100 MiB of 4 KiB buffers (page-aligned for the peers) written, then 90% of them
//! released (every tenth kept, so every span or region keeps live neighbours). Each allocator
//! runs in a child process of its own (this binary, `segpool bench-memory-child`), so the
//! process's resident set (`/proc/self/statm`, minus what it was before the scenario) is that
//! allocator's alone, and nothing one allocator keeps shows up in another's column.
//!
//! segpool runs twice: with its default purge decay and no call at all, and with `trim()`
//! called right after the release (decay off). The claims: resident at most in use + 10% +
//! 4 MiB right after `trim()`, and within the decay plus one second without any call.

use std::process::Command;
use std::time::{Duration, Instant};

use segpool::{SegmentPool, DEFAULT_PURGE_DECAY};

use super::claim::{claim_lines, Claim};
use super::table::{size_text, Align, Table};
use crate::peers::{self, Allocator, PAGE};
use crate::Error;

/// Bytes written before the release.
const TOTAL: usize = 100 << 20;
/// When resident is sampled, in ms after the release (or after `trim()`).
const SAMPLES_MS: [u64; 7] = [0, 250, 500, 1000, 1500, 2000, 3000];

/// The rows, in order: (name given to the child, label in the table).
const RUNS: [(&str, &str); 5] = [
    ("segpool", "segpool, no call"),
    ("segpool-trim", "segpool, trim()"),
    ("glibc", "glibc"),
    ("jemalloc", "jemalloc"),
    ("mimalloc", "mimalloc"),
];

/// Arguments of the child that runs one allocator.
#[derive(Debug, clap::Args)]
pub struct ChildArgs {
    /// segpool, segpool-trim, glibc, jemalloc or mimalloc.
    allocator: String,
}

/// What one child measured.
struct Run {
    label: &'static str,
    in_use: usize,
    /// (ms after the release, resident bytes over the process's own before the scenario).
    samples: Vec<(u64, usize)>,
}

fn rss() -> Result<usize, Error> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .ok_or("/proc/self/statm has no resident field")?
        .parse()?;
    Ok(pages * PAGE) // statm counts base pages: 4 KiB on the machines segpool runs on
}

/// Runs the scenario on `a` in this process and prints what it saw (one line per sample).
fn scenario<A: Allocator>(
    a: &A,
    write: impl Fn(&mut A::Buf, u8),
    after_release: impl FnOnce(),
) -> Result<(), Error> {
    let n = TOTAL / PAGE;
    let mut kept = Vec::with_capacity(n / 10 + 1);
    let mut released = Vec::with_capacity(n);
    let base = rss()?;
    for i in 0..n {
        let mut b = a.alloc(PAGE)?;
        write(&mut b, i as u8 | 1);
        if i % 10 == 0 {
            kept.push(b);
        } else {
            released.push(b);
        }
    }
    for b in released {
        a.release(b, PAGE);
    }
    after_release();
    let start = Instant::now();
    println!("in_use {}", kept.len() * PAGE);
    for ms in SAMPLES_MS {
        let at = start + Duration::from_millis(ms);
        if let Some(d) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        println!("sample {ms} {}", rss()?.saturating_sub(base));
    }
    for b in kept {
        a.release(b, PAGE);
    }
    Ok(())
}

fn write_raw(b: &mut peers::RawBuf, byte: u8) {
    let p = <peers::Global<std::alloc::System> as Allocator>::addr(b) as *mut u8;
    // SAFETY: `b` is an exclusively owned allocation of at least PAGE bytes (asked for PAGE).
    unsafe { std::ptr::write_bytes(p, byte, PAGE) };
}

/// `segpool bench-memory-child NAME`: one allocator's run (the parent parses its output).
pub fn child(args: ChildArgs) -> Result<(), Error> {
    match args.allocator.as_str() {
        "segpool" => {
            let pool = peers::Segpool(SegmentPool::new()?);
            scenario(&pool, |s, b| s.fill(b), || {})
        }
        "segpool-trim" => {
            let pool = peers::Segpool(SegmentPool::builder().purge_decay(None).build()?);
            scenario(
                &pool,
                |s, b| s.fill(b),
                || {
                    pool.0.trim();
                },
            )
        }
        "glibc" => scenario(&peers::system(), write_raw, || {}),
        "jemalloc" => scenario(&peers::jemalloc(), write_raw, || {}),
        "mimalloc" => scenario(&peers::mimalloc(), write_raw, || {}),
        other => Err(format!("unknown allocator {other}").into()),
    }
}

fn run_child(name: &str, label: &'static str) -> Result<Run, Error> {
    let out = Command::new(std::env::current_exe()?)
        .args(["bench-memory-child", name])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "the {name} run failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    let mut run = Run {
        label,
        in_use: 0,
        samples: Vec::new(),
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["in_use", n] => run.in_use = n.parse()?,
            ["sample", ms, bytes] => run.samples.push((ms.parse()?, bytes.parse()?)),
            _ => {}
        }
    }
    if run.samples.len() != SAMPLES_MS.len() {
        return Err(format!("the {name} run printed {} samples", run.samples.len()).into());
    }
    Ok(run)
}

fn mib(bytes: usize) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64)
}

/// Measures every allocator and prints the table and the claims.
pub fn run() -> Result<(), Error> {
    let mut runs = Vec::new();
    for (name, label) in RUNS {
        runs.push(run_child(name, label)?);
    }
    println!(
        "resident MiB over time: {} of {} buffers written, then 90% released (every tenth kept); \
         each allocator in a process of its own, resident from /proc/self/statm minus the \
         process's own before the scenario",
        size_text(TOTAL),
        size_text(PAGE)
    );
    println!(
        "segpool, no call: its default purge decay ({} ms), nothing called after the release; \
         segpool, trim(): decay off, trim() called once right after the release (t = 0 is after \
         it). Peers: page-aligned {} allocations.",
        DEFAULT_PURGE_DECAY.as_millis(),
        size_text(PAGE)
    );
    let mut t = Table::new(
        [
            ("allocator".to_string(), 18, Align::Left),
            ("in use".to_string(), 7, Align::Right),
        ]
        .into_iter()
        .chain(
            SAMPLES_MS
                .iter()
                .map(|ms| (format!("+{ms} ms"), 8, Align::Right)),
        ),
    );
    for r in &runs {
        t.push(
            [r.label.to_string(), mib(r.in_use)]
                .into_iter()
                .chain(r.samples.iter().map(|&(_, b)| mib(b)))
                .collect(),
        );
    }
    print!("{}", t.text());
    print!("{}", claim_lines(&claims(&runs)));
    Ok(())
}

/// Resident at most in use + 10% + 4 MiB: right after `trim()`, and within the decay plus one
/// second with no call.
fn claims(runs: &[Run]) -> Vec<Claim> {
    let limit = |in_use: usize| in_use + in_use / 10 + (4 << 20);
    let trim = &runs[1];
    let after_trim = trim.samples[0].1;
    let decay = &runs[0];
    let by = DEFAULT_PURGE_DECAY + Duration::from_secs(1);
    let within = decay
        .samples
        .iter()
        .filter(|(ms, _)| u128::from(*ms) <= by.as_millis())
        .map(|&(_, b)| b)
        .min()
        .unwrap_or(usize::MAX);
    vec![
        Claim {
            claim: "memory: resident right after trim() at most in use + 10% + 4 MiB".into(),
            holds: after_trim <= limit(trim.in_use),
            detail: format!(
                "{} MiB, bound {} MiB",
                mib(after_trim),
                mib(limit(trim.in_use))
            ),
        },
        Claim {
            claim: format!(
                "memory: resident within the decay + 1 s ({} ms) with no call, same bound",
                by.as_millis()
            ),
            holds: within <= limit(decay.in_use),
            detail: format!(
                "{} MiB, bound {} MiB",
                mib(within),
                mib(limit(decay.in_use))
            ),
        },
    ]
}
