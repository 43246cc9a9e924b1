//! The growth rows of `segpool bench`: ns per allocation while one class grows (every segment
//! kept live), ns per release+allocation pair when slices spread over the whole pool come back
//! and are allocated again, and ns per release when the oldest regions drain and are unmapped,
//! at region counts from one to tens of thousands. The claim: the cost does not grow with the
//! pool.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::claim::Claim;
use super::table::{ns_text, num, Align, Table};
use crate::Error;

/// Timed over `WINDOW` regions' worth of allocations starting at each of these region counts.
const AT: [usize; 4] = [1, 1_000, 10_000, 50_000];
/// The class: 64 KiB slices in the default 2 MiB regions (huge pages off), so 50,000 regions are
/// 100 GiB of untouched address space and 1.6 million live segments.
const SLICE: usize = 64 << 10;
pub const SLICES: usize = (2 << 20) / SLICE;
pub const WINDOW: usize = 100;
/// The rows are measured this many times, each time in a new pool, and each row keeps its
/// fastest window: a window is a fraction of a millisecond, which one preemption on a busy
/// machine can multiply.
pub const RUNS: usize = 3;
/// Passes of the churn rows over the same slices: one untimed, then the timed ones.
pub const CHURN_PASSES: usize = 5;
/// What the claim allows: the cost at the largest region count over the cost at one region.
const TOLERANCE: f64 = 0.20;
/// Calls of `stats()` timed at each region count (the fastest counts: at 50,000 regions one call
/// takes tens of milliseconds).
pub const STATS_CALLS: usize = 3;
/// Calls of `usage()` timed at each region count (their mean counts).
pub const USAGE_CALLS: usize = 10_000;

/// One growth row: allocations timed while a class grew from `regions` regions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrowthPoint {
    pub regions: usize,
    pub ns_per_allocation: f64,
    /// ns per release+allocation pair when half of the slices of `WINDOW` regions spread over
    /// the whole pool (oldest first) come back and are allocated again: refills that find room
    /// in old regions among many full ones.
    #[serde(default)]
    pub ns_per_churn_pair: f64,
    /// ns per release when every slice of the `WINDOW` oldest regions comes back, oldest first:
    /// each region empties and (beyond the few the class retains) is unmapped, with tens of
    /// thousands of newer regions still live.
    #[serde(default)]
    pub ns_per_drain_release: f64,
    /// ns per `stats()` call at the end of the row, with `regions + WINDOW` regions (the fastest
    /// of `STATS_CALLS`).
    #[serde(default)]
    pub ns_per_stats: f64,
    /// ns per `usage()` call at the same moment (the mean of `USAGE_CALLS`).
    #[serde(default)]
    pub ns_per_usage: f64,
}

/// Times allocations while one class grows: a pool of `SLICE` slices in regions of `SLICES`
/// slices, every segment kept live, timed over `WINDOW` regions' worth of allocations from each
/// count in `AT` (the allocations in between are not timed), the fastest of `RUNS` runs per row.
pub fn measure() -> Result<Vec<GrowthPoint>, Error> {
    let mut best = measure_once()?;
    for _ in 1..RUNS {
        for (b, p) in best.iter_mut().zip(measure_once()?) {
            b.ns_per_allocation = b.ns_per_allocation.min(p.ns_per_allocation);
            b.ns_per_churn_pair = b.ns_per_churn_pair.min(p.ns_per_churn_pair);
            b.ns_per_drain_release = b.ns_per_drain_release.min(p.ns_per_drain_release);
            b.ns_per_stats = b.ns_per_stats.min(p.ns_per_stats);
            b.ns_per_usage = b.ns_per_usage.min(p.ns_per_usage);
        }
    }
    Ok(best)
}

fn measure_once() -> Result<Vec<GrowthPoint>, Error> {
    let pool = segpool::SegmentPool::builder()
        .size_classes(&[SLICE])
        .region_size(SLICES * SLICE)
        .huge_pages(false)
        // An emptied region goes back at once, as it does once the grace period after the
        // class's last growth is over (nothing else in these rows empties a region).
        .empty_region_grace(Duration::ZERO)
        .build()?;
    let last = AT[AT.len() - 1];
    let mut held = Vec::with_capacity((last + WINDOW) * SLICES);
    let mut out = Vec::new();
    // The oldest slice not drained yet.
    let mut drained = 0;
    for &at in &AT {
        eprint!("\rgrowth: {at} regions");
        // `held[drained..]` are the live segments.
        while held.len() - drained < (at - 1) * SLICES {
            held.push(Some(pool.allocate(SLICE)?));
        }
        let regions = pool.stats().regions;
        let n = WINDOW * SLICES;
        let t0 = Instant::now();
        for _ in 0..n {
            held.push(Some(pool.allocate(SLICE)?));
        }
        let ns = t0.elapsed().as_nanos() as f64 / n as f64;
        black_box(held.last().map(|s| s.as_ref().map(|s| s.as_ptr())));
        // Churn: half the slices of every `step`-th region come back, then as many are
        // allocated again (no region empties, so none is unmapped in between).
        let step = ((held.len() - drained) / SLICES / WINDOW).max(1);
        let slots: Vec<usize> = (0..WINDOW)
            .flat_map(|k| {
                let first = drained + k * step * SLICES;
                first..first + SLICES / 2
            })
            .collect();
        // The first pass brings those regions' metadata (and the slots) into the cache, as the
        // allocations just before the window did for the first row: the passes timed after it
        // compare the pool's work, not which memory a workload touched last.
        let mut t0 = Instant::now();
        for pass in 0..CHURN_PASSES {
            if pass == 1 {
                t0 = Instant::now();
            }
            for &i in &slots {
                held[i] = None;
            }
            for &i in &slots {
                held[i] = Some(pool.allocate(SLICE)?);
            }
        }
        let timed = (CHURN_PASSES - 1) * slots.len();
        let churn = t0.elapsed().as_nanos() as f64 / timed as f64;
        // Drain: the oldest `WINDOW` regions' slices come back, oldest first, and those regions
        // are unmapped; then as many are allocated again (untimed), so that the next row starts
        // from a pool of the size it names, with no empty region kept for it.
        let oldest = drained..drained + n;
        drained += n;
        let t0 = Instant::now();
        for slot in &mut held[oldest] {
            *slot = None;
        }
        let drain = t0.elapsed().as_nanos() as f64 / n as f64;
        for _ in 0..n {
            held.push(Some(pool.allocate(SLICE)?));
        }
        // What reading the counts costs at this size (`at + WINDOW` regions again): a full
        // snapshot, and the counters alone. Timed last in the row: a snapshot touches every
        // region's metadata and page tables, which would leave the churn and drain passes
        // with cold caches.
        let stats = (0..STATS_CALLS)
            .map(|_| {
                let t0 = Instant::now();
                black_box(pool.stats());
                t0.elapsed().as_nanos() as f64
            })
            .fold(f64::INFINITY, f64::min);
        let t0 = Instant::now();
        for _ in 0..USAGE_CALLS {
            black_box(pool.usage());
        }
        let usage = t0.elapsed().as_nanos() as f64 / USAGE_CALLS as f64;
        out.push(GrowthPoint {
            regions,
            ns_per_allocation: ns,
            ns_per_churn_pair: churn,
            ns_per_drain_release: drain,
            ns_per_stats: stats,
            ns_per_usage: usage,
        });
    }
    eprintln!();
    Ok(out)
}

/// "Allocation cost does not grow with the pool": the last growth row within `TOLERANCE` of the
/// first.
pub fn claim(points: &[GrowthPoint]) -> Claim {
    let (first, last) = match (points.first(), points.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => {
            return Claim {
                claim: "growth: allocation cost flat as the pool grows".into(),
                holds: false,
                detail: "not measured".into(),
            }
        }
    };
    let ratio = last.ns_per_allocation / first.ns_per_allocation;
    let churn_ratio = last.ns_per_churn_pair / first.ns_per_churn_pair;
    let drain_ratio = last.ns_per_drain_release / first.ns_per_drain_release;
    let usage_ratio = last.ns_per_usage / first.ns_per_usage;
    let by_count: Vec<String> = points
        .iter()
        .map(|p| {
            format!(
                "{} regions {} (churn {}, drain {}, usage() {})",
                p.regions,
                ns_text(p.ns_per_allocation),
                ns_text(p.ns_per_churn_pair),
                ns_text(p.ns_per_drain_release),
                ns_text(p.ns_per_usage)
            )
        })
        .collect();
    let within = |r: f64| r <= 1.0 + TOLERANCE;
    Claim {
        claim: format!(
            "growth: allocation, churn, drain and usage() from {} regions within {:.0}% of from {}",
            last.regions,
            TOLERANCE * 100.0,
            first.regions
        ),
        holds: within(ratio) && within(churn_ratio) && within(drain_ratio) && within(usage_ratio),
        detail: format!(
            "{} ({ratio:.2}x, churn {churn_ratio:.2}x, drain {drain_ratio:.2}x, usage() {usage_ratio:.2}x)",
            by_count.join(", ")
        ),
    }
}

/// The rows as the terminal shows them.
pub fn text(points: &[GrowthPoint]) -> String {
    let mut out = String::from(
        "growth: one 64 KiB class grows, segments kept live (fastest of 3 runs)\n  \
         allocation: ns per allocation over the next 100 regions' worth\n  \
         churn: ns per release+allocation pair, half of 100 regions spread over the pool\n  \
         (the same slices 4 times, after one untimed pass)\n  \
         drain: ns per release, every slice of the 100 oldest regions, oldest first\n  \
         (each region unmapped as it empties)\n  \
         stats(): ns per call (every region visited, mincore per region);\n  \
         usage(): ns per call (the counters alone)\n",
    );
    for p in points {
        let _ = writeln!(
            out,
            "  from {:>6} regions: allocation {}, churn {}, drain {}, stats() {}, usage() {}",
            p.regions,
            ns_text(p.ns_per_allocation),
            ns_text(p.ns_per_churn_pair),
            ns_text(p.ns_per_drain_release),
            ns_text(p.ns_per_stats),
            ns_text(p.ns_per_usage)
        );
    }
    out
}

/// The rows as the docs show them.
pub fn table(points: &[GrowthPoint]) -> Table {
    let mut t = Table::new([
        ("regions", 0, Align::Right),
        ("ns per allocation", 0, Align::Right),
        ("churn: ns per pair", 0, Align::Right),
        ("drain: ns per release", 0, Align::Right),
        ("ns per stats()", 0, Align::Right),
        ("ns per usage()", 0, Align::Right),
    ]);
    for p in points {
        t.push(vec![
            p.regions.to_string(),
            num(p.ns_per_allocation),
            num(p.ns_per_churn_pair),
            num(p.ns_per_drain_release),
            num(p.ns_per_stats),
            num(p.ns_per_usage),
        ]);
    }
    t
}
