//! The `bytes` feature: segments as `bytes::Bytes`, `BufMut` for [`SegmentWriter`], `Buf` for
//! [`SegmentChain`].
//!
//! A `Bytes` made from a segment owns the segment (through `Bytes::from_owner`): its clones and
//! slices share it, and the last one dropped, on whichever thread, drops the segment, which
//! releases the slice to its pool as any segment drop does. No byte is copied.

use std::io::IoSlice;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes};

use crate::{Segment, SegmentChain, SegmentWriter};

/// The owner behind a `Bytes` made from a segment: the segment, and the part of it shown.
///
/// # Invariants
///
/// `range` lies inside the segment.
struct SegmentBytes {
    segment: Segment,
    range: Range<usize>,
}

impl AsRef<[u8]> for SegmentBytes {
    fn as_ref(&self) -> &[u8] {
        &self.segment[self.range.clone()]
    }
}

/// `range` of `segment` as `Bytes`, without copying; an empty range releases the segment now.
fn segment_bytes(segment: Segment, range: Range<usize>) -> Bytes {
    if range.is_empty() {
        return Bytes::new();
    }
    Bytes::from_owner(SegmentBytes { segment, range })
}

impl Segment {
    /// The first `len` bytes of this segment as [`bytes::Bytes`], without copying (feature
    /// `bytes`).
    ///
    /// The `Bytes` owns the segment: its clones and slices share it, and when the last of them
    /// is dropped, on any thread, the slice goes back to the pool (as dropping the segment
    /// would). `len == 0` gives an empty `Bytes` and releases the segment at once.
    ///
    /// # Panics
    ///
    /// When `len` is more than the segment's length ([`capacity()`](Self::capacity)), as slicing
    /// `&segment[..len]` would: a length past the end is a bug in the caller, not a request to
    /// shorten.
    ///
    /// ```
    /// let pool = segpool::SegmentPool::new()?;
    /// let mut seg = pool.allocate(4096)?;
    /// seg[..5].copy_from_slice(b"hello");
    /// let bytes = seg.into_bytes(5);
    /// let copy = bytes.clone();
    /// drop(bytes);
    /// assert_eq!(&copy[..], b"hello");
    /// assert_eq!(pool.stats().in_use_bytes, 4096); // the clone keeps the segment
    /// drop(copy);
    /// assert_eq!(pool.stats().in_use_bytes, 0); // back in the pool
    /// # Ok::<(), segpool::Error>(())
    /// ```
    pub fn into_bytes(self, len: usize) -> Bytes {
        assert!(
            len <= self.len(),
            "Segment::into_bytes: {len} bytes asked of a segment of {} bytes",
            self.len()
        );
        segment_bytes(self, 0..len)
    }
}

impl SegmentChain {
    /// The unread bytes as one [`bytes::Bytes`] per segment, in order, without copying (feature
    /// `bytes`). Each segment goes back to the pool when the last clone of its `Bytes` is
    /// dropped.
    ///
    /// ```
    /// use std::io::Write;
    ///
    /// let pool = segpool::SegmentPool::new()?;
    /// let mut w = pool.writer_with_segment_size(4096)?;
    /// w.write_all(&[7; 10_000])?;
    /// let parts = w.finish().into_bytes_vec();
    /// assert_eq!(parts.iter().map(|b| b.len()).collect::<Vec<_>>(), [4096, 4096, 1808]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_bytes_vec(self) -> Vec<Bytes> {
        self.into_parts()
            .map(|(segment, range)| segment_bytes(segment, range))
            .collect()
    }
}

impl From<SegmentChain> for Vec<Bytes> {
    fn from(chain: SegmentChain) -> Self {
        chain.into_bytes_vec()
    }
}

/// Reading consumes the chain from the front; a segment read to its end goes back to the pool at
/// once. `copy_to_bytes` copies (the trait's default); [`SegmentChain::into_bytes_vec`] is the
/// conversion that does not.
impl Buf for SegmentChain {
    fn remaining(&self) -> usize {
        self.len()
    }

    fn chunk(&self) -> &[u8] {
        self.front()
    }

    fn advance(&mut self, cnt: usize) {
        self.consume_bytes(cnt);
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(self.chunks()) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }
}

/// `chunk_mut` takes a segment from the pool when the current one is full, and **panics** when
/// the pool refuses (its budget is used up); the writer keeps every byte written before. See
/// [`SegmentWriter`] for `remaining_mut` and [`SegmentWriter::try_reserve`] for writing without
/// the panic.
///
/// ```
/// use bytes::{Buf, BufMut};
///
/// let pool = segpool::SegmentPool::new()?;
/// let mut w = pool.writer();
/// w.put_u32(7);
/// w.put_slice(b"segments");
/// let mut chain = w.finish();
/// assert_eq!(chain.get_u32(), 7);
/// assert_eq!(chain.chunk(), b"segments");
/// # Ok::<(), segpool::Error>(())
/// ```
// SAFETY: `chunk_mut` hands out the free end of a segment the writer owns (initialised memory:
// mapped pages), `advance_mut` counts no more than that free end (it asserts), and neither ever
// shows a byte beyond what the writer owns.
unsafe impl BufMut for SegmentWriter {
    fn remaining_mut(&self) -> usize {
        self.capacity_left()
    }

    // The trait's contract (the caller initialised the next `cnt` bytes of `chunk_mut`) holds
    // always here: segment memory is initialised; `advance` checks `cnt` against the chunk.
    unsafe fn advance_mut(&mut self, cnt: usize) {
        self.advance(cnt);
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.capacity_left() == 0 {
            // Nothing reserved and the budget can hold no more: the empty chunk that goes with a
            // `remaining_mut` of zero.
            return UninitSlice::new(self.spare_now());
        }
        match self.spare_mut() {
            Ok(free) => UninitSlice::new(free),
            Err(e) => panic!("SegmentWriter::chunk_mut: the pool refused a segment: {e}"),
        }
    }
}
