//! `segpool::fs` against `std::fs::File` positioned I/O and a raw `memmap2` copy, on a file in
//! the page cache. Regenerate: `cargo bench --bench files -- --warm-up-time 1 --measurement-time 2`.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::hint::black_box;
use std::os::unix::fs::FileExt;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use segpool::fs::{MapConfig, MapMode, MmapFs};

const FILE_LEN: u64 = 256 << 20;
const OFFSETS: usize = 1 << 16;

/// A page-aligned buffer: a copy whose destination is a few bytes off the source modulo 4096
/// hits a slow `rep movsb` path, which would measure the allocator, not the layer.
struct PageBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl PageBuf {
    fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Self { ptr, layout }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: allocated, zeroed, owned.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

fn offsets(block: u64, align: u64) -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..OFFSETS)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) % (FILE_LEN - block)) / align * align
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let dir =
        tempfile::tempdir_in(std::env::var("SEGPOOL_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .unwrap();
    let path = dir.path().join("bench.bin");
    {
        let f = std::fs::File::create(&path).unwrap();
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        for i in 0..FILE_LEN >> 20 {
            f.write_all_at(&chunk, i << 20).unwrap();
        }
        f.sync_all().unwrap();
    }
    let std_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let fs = MmapFs::new(dir.path(), MapConfig::default().mode(MapMode::ReadWrite)).unwrap();
    let mf = fs.open("bench.bin").unwrap();
    // SAFETY: (bench) nothing else changes the file while the benchmark runs.
    let mut raw = unsafe { memmap2::MmapMut::map_mut(&std_file) }.unwrap();
    // Warm the page cache and both mappings' page tables.
    let mut sink = vec![0u8; 1 << 20];
    for i in 0..FILE_LEN >> 20 {
        mf.read_exact_at(&mut sink, i << 20).unwrap();
        sink.copy_from_slice(&raw[(i << 20) as usize..((i + 1) << 20) as usize]);
    }

    if std::env::var_os("SEGPOOL_BENCH_MAPS").is_some() {
        // SAFETY: (bench) nothing writes or truncates the file while the slice lives.
        let a = unsafe { mf.with_bytes(0, 1, |b| b.as_ptr() as usize) }.unwrap();
        eprintln!("segpool map {a:#x} memmap2 {:#x}", raw.as_ptr() as usize);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        for block in smaps.split("\n").collect::<Vec<_>>().windows(25) {
            if block[0].contains("bench.bin") {
                eprintln!(
                    "{}",
                    block
                        .iter()
                        .filter(|l| l.contains("bench.bin")
                            || l.contains("Pmd")
                            || l.contains("Rss")
                            || l.contains("THP"))
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
    }
    for (name, block, align) in [
        ("random_64B_read", 64usize, 64u64),
        ("random_4KiB_read", 4096, 4096),
    ] {
        let offs = offsets(block as u64, align);
        let mut buf = PageBuf::new(block);
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Bytes(block as u64));
        let mut i = 0usize;
        g.bench_function("std_pread", |b| {
            b.iter(|| {
                i = (i + 1) & (OFFSETS - 1);
                black_box(std_file.read_at(buf.as_mut(), offs[i]).unwrap())
            })
        });
        g.bench_function("segpool", |b| {
            b.iter(|| {
                i = (i + 1) & (OFFSETS - 1);
                black_box(mf.read_at(buf.as_mut(), offs[i]).unwrap())
            })
        });
        g.bench_function("memmap2_copy", |b| {
            b.iter(|| {
                i = (i + 1) & (OFFSETS - 1);
                let o = offs[i] as usize;
                buf.as_mut().copy_from_slice(&raw[o..o + block]);
                black_box(buf.as_mut()[0])
            })
        });
        g.finish();
    }

    {
        const MIB: usize = 1 << 20;
        let mut buf = PageBuf::new(MIB);
        let n = (FILE_LEN as usize) / MIB;
        let mut g = c.benchmark_group("sequential_1MiB_read");
        g.throughput(Throughput::Bytes(MIB as u64));
        let mut i = 0usize;
        g.bench_function("std_read", |b| {
            b.iter(|| {
                i = (i + 1) % n;
                black_box(std_file.read_at(buf.as_mut(), (i * MIB) as u64).unwrap())
            })
        });
        g.bench_function("segpool", |b| {
            b.iter(|| {
                i = (i + 1) % n;
                black_box(mf.read_at(buf.as_mut(), (i * MIB) as u64).unwrap())
            })
        });
        g.bench_function("memmap2_copy", |b| {
            b.iter(|| {
                i = (i + 1) % n;
                buf.as_mut().copy_from_slice(&raw[i * MIB..(i + 1) * MIB]);
                black_box(buf.as_mut()[0])
            })
        });
        g.finish();
    }

    {
        let offs = offsets(4096, 4096);
        let mut buf = PageBuf::new(4096);
        buf.as_mut().fill(0x5a);
        let mut g = c.benchmark_group("random_4KiB_write");
        g.throughput(Throughput::Bytes(4096));
        let mut i = 0usize;
        g.bench_function("std_pwrite", |b| {
            b.iter(|| {
                i = (i + 1) & (OFFSETS - 1);
                black_box(std_file.write_at(buf.as_mut(), offs[i]).unwrap())
            })
        });
        g.bench_function("segpool", |b| {
            b.iter(|| {
                i = (i + 1) & (OFFSETS - 1);
                black_box(mf.write_at(buf.as_mut(), offs[i]).unwrap())
            })
        });
        g.bench_function("memmap2_copy", |b| {
            b.iter(|| {
                i = (i + 1) & (OFFSETS - 1);
                let o = offs[i] as usize;
                raw[o..o + 4096].copy_from_slice(buf.as_mut());
                black_box(raw[o])
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
