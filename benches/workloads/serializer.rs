//! The serializer workload, shared by the criterion bench (`benches/serializer.rs`) and the
//! serializer rows of `segpool bench`: N threads serialize records (a few hundred bytes each,
//! sizes varied and deterministic) into buffers until full, then hand each full buffer to one
//! writer thread that checksums its bytes and releases it. Throughput is records per second.
//!
//! The buffers are whatever implements [`Buffer`]: segpool segments here, `Vec<u8>` from the
//! global allocator, and whatever a user of this file adds (the benchmark command adds lgalloc).

use std::sync::mpsc::sync_channel;

use segpool::Segment;

/// Records serialized per pipeline, over all serializer threads.
pub const RECORDS: u64 = 200_000;
/// Full buffers in flight between the serializers and the writer, at most.
pub const IN_FLIGHT: usize = 16;

/// Bytes every record copies its payload from.
static PATTERN: [u8; 1024] = {
    let mut p = [0u8; 1024];
    let mut i = 0;
    while i < p.len() {
        p[i] = (i * 31 + 7) as u8;
        i += 1;
    }
    p
};

/// The length (96..=607 bytes) of record `id`: deterministic, varied.
pub fn record_len(id: u64) -> usize {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    96 + (x % 512) as usize
}

/// Appends record `id` (length, id, payload) to `buf`, which holds `used` bytes; returns its size.
fn serialize<B: Buffer>(buf: &mut B, used: usize, id: u64) -> usize {
    let len = record_len(id);
    let off = (id % 256) as usize;
    buf.append(
        used,
        &[
            &(len as u32).to_le_bytes(),
            &id.to_le_bytes(),
            &PATTERN[off..off + len - 12],
        ],
    );
    len
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.chunks(8).fold(0u64, |h, c| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        (h ^ u64::from_le_bytes(w)).wrapping_mul(0x100_0000_01B3)
    })
}

/// A buffer the serializers fill. Each kind writes exactly the bytes it serializes: a segment by
/// copying at an offset, a `Vec` by `extend_from_slice` into its capacity (no zeroing).
pub trait Buffer: Send {
    /// Appends `parts` after the first `used` bytes.
    fn append(&mut self, used: usize, parts: &[&[u8]]);
    /// The first `used` bytes.
    fn bytes(&self, used: usize) -> &[u8];
}

impl Buffer for Segment {
    fn append(&mut self, mut used: usize, parts: &[&[u8]]) {
        for p in parts {
            self[used..used + p.len()].copy_from_slice(p);
            used += p.len();
        }
    }
    fn bytes(&self, used: usize) -> &[u8] {
        &self[..used]
    }
}

impl Buffer for Vec<u8> {
    fn append(&mut self, used: usize, parts: &[&[u8]]) {
        debug_assert_eq!(self.len(), used);
        for p in parts {
            self.extend_from_slice(p);
        }
    }
    fn bytes(&self, used: usize) -> &[u8] {
        &self[..used]
    }
}

/// Runs `threads` serializers over `RECORDS` records into buffers of `capacity` bytes from
/// `new_buffer`, and one writer; returns the checksum of everything written (the same for every
/// buffer kind).
pub fn pipeline<B: Buffer>(
    threads: u64,
    capacity: usize,
    new_buffer: &(dyn Fn() -> B + Sync),
) -> u64 {
    let (tx, rx) = sync_channel::<(B, usize)>(IN_FLIGHT);
    std::thread::scope(|s| {
        let writer = s.spawn(move || {
            let mut sum = 0u64;
            while let Ok((buf, used)) = rx.recv() {
                sum ^= checksum(buf.bytes(used));
                drop(buf);
            }
            sum
        });
        for t in 0..threads {
            let tx = tx.clone();
            s.spawn(move || {
                let mut buf = new_buffer();
                let mut used = 0;
                let mut id = t;
                while id < RECORDS {
                    if used + record_len(id) > capacity {
                        let full = std::mem::replace(&mut buf, new_buffer());
                        tx.send((full, used)).expect("writer");
                        used = 0;
                    }
                    used += serialize(&mut buf, used, id);
                    id += threads;
                }
                tx.send((buf, used)).expect("writer");
            });
        }
        drop(tx);
        writer.join().expect("writer thread")
    })
}
