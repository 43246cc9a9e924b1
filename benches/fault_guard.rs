//! The cost of the fault guard on a warm 64-byte copy out of a registered file mapping: the
//! unguarded copy, `guarded` (full fence after the access) and `guarded_read` (load-load fence);
//! then on the whole warm `MappedFile::read_at` of 64 bytes, with the guard and (built with
//! `--cfg segpool_unguarded_read`, which adds `MappedFile::read_at_unguarded` to the library for
//! this measurement only) without it (the claim: within 10%).
//!
//! Run briefly: `RUSTFLAGS="--cfg segpool_unguarded_read" cargo bench --bench fault_guard --
//! --warm-up-time 1 --measurement-time 3` (without the cfg, the unguarded read is left out).

use std::hint::black_box;
use std::io::Write as _;

use criterion::{criterion_group, criterion_main, Criterion};
use segpool::fault::{self, FileFaultState};

const LEN: usize = 64 * 1024;
const COPY: usize = 64;

fn bench(c: &mut Criterion) {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&(0..LEN).map(|i| (i % 251) as u8 + 1).collect::<Vec<_>>())
        .unwrap();
    let map = memmap2::MmapOptions::new()
        .len(LEN)
        .map_raw_read_only(&file)
        .unwrap();
    let state = FileFaultState::new(None);
    // SAFETY: `map` is a live file mapping owned here, only read through raw copies; the
    // registration is dropped (end of this function) before `map` is unmapped.
    let registration =
        unsafe { fault::register_with_access(map.as_ptr(), LEN, &state, fault::Access::Read) }
            .unwrap();
    let base = map.as_ptr();
    // Offsets walk the (warm, 64 KiB) mapping so no single line is all the CPU sees.
    let offset = |i: usize| (i.wrapping_mul(COPY * 7)) % (LEN - COPY);

    let copy = |off: usize, out: &mut [u8; COPY]| {
        // SAFETY: `off + COPY <= LEN`, inside the live mapping; a raw copy, no reference formed.
        unsafe { std::ptr::copy_nonoverlapping(base.add(off), out.as_mut_ptr(), COPY) }
    };

    let mut g = c.benchmark_group("warm_64b_copy");
    g.bench_function("unguarded", |b| {
        let (mut i, mut out) = (0usize, [0u8; COPY]);
        b.iter(|| {
            i += 1;
            copy(black_box(offset(i)), &mut out);
            black_box(&out);
        })
    });
    g.bench_function("guarded", |b| {
        let (mut i, mut out) = (0usize, [0u8; COPY]);
        b.iter(|| {
            i += 1;
            state
                .guarded(|| copy(black_box(offset(i)), &mut out))
                .unwrap();
            black_box(&out);
        })
    });
    g.bench_function("guarded_read", |b| {
        let (mut i, mut out) = (0usize, [0u8; COPY]);
        b.iter(|| {
            i += 1;
            state
                .guarded_read(|| copy(black_box(offset(i)), &mut out))
                .unwrap();
            black_box(&out);
        })
    });
    g.finish();
    drop(registration);

    // The comparison the claim is about: the whole warm `MappedFile::read_at` of 64 bytes (gate,
    // length check, copy) with the guard, against the same path without it. The unguarded
    // variant exists only under `--cfg segpool_unguarded_read`.
    let dir = tempfile::tempdir().unwrap();
    let fs = segpool::fs::MmapFs::new(
        dir.path(),
        segpool::fs::MapConfig::default().mode(segpool::fs::MapMode::ReadWrite),
    )
    .unwrap();
    let f = fs.create("bench").unwrap();
    f.write_all_at(&vec![7u8; LEN], 0).unwrap();
    let mut g = c.benchmark_group("warm_64b_read_at");
    g.bench_function("guarded", |b| {
        let (mut i, mut out) = (0usize, [0u8; COPY]);
        b.iter(|| {
            i += 1;
            black_box(f.read_at(&mut out, black_box(offset(i)) as u64).unwrap());
            black_box(&out);
        })
    });
    #[cfg(segpool_unguarded_read)]
    g.bench_function("unguarded", |b| {
        let (mut i, mut out) = (0usize, [0u8; COPY]);
        b.iter(|| {
            i += 1;
            black_box(
                f.read_at_unguarded(&mut out, black_box(offset(i)) as u64)
                    .unwrap(),
            );
            black_box(&out);
        })
    });
    #[cfg(not(segpool_unguarded_read))]
    eprintln!(
        "warm_64b_read_at/unguarded needs RUSTFLAGS=\"--cfg segpool_unguarded_read\" (a build of its own)"
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
