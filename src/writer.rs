//! `SegmentWriter` and `SegmentChain`: output of unknown size written into a chain of segments.
//!
//! A serializer that does not know how much it will write gets a writer that takes one segment
//! from the pool at a time and links it behind the others. Nothing is ever copied or moved when
//! the output grows: a full segment stays where it is, and the next byte goes into a new one.
//! `finish()` hands the written segments over as a [`SegmentChain`], which reads them back in
//! order and releases each segment to the pool as soon as it has been read past.
//!
//! Without any feature the writer implements [`std::io::Write`] and the chain [`std::io::Read`]
//! and [`std::io::BufRead`]; the `bytes` feature adds `bytes::BufMut` for the writer, `bytes::Buf`
//! for the chain and the chain's zero-copy conversion into `bytes::Bytes` (see `docs/bridges.md`).

use std::collections::VecDeque;
use std::fmt;
use std::io;

use crate::{ErrorKind, Result, Segment, SegmentPool};

/// The segment size of [`SegmentPool::writer`], when the pool has a class this large.
pub(crate) const DEFAULT_WRITER_SEGMENT: usize = 64 * 1024;

impl SegmentPool {
    /// A writer that collects output of unknown size in segments of this pool, one segment at a
    /// time, and never copies what it has written.
    ///
    /// Its segments are 64 KiB, or the pool's largest size class when that is smaller (so every
    /// segment comes from a class, never from a dedicated mapping). Nothing is allocated until
    /// the first byte is written. See [`SegmentWriter`].
    ///
    /// ```
    /// use std::io::{Read, Write};
    ///
    /// let pool = segpool::SegmentPool::new()?;
    /// let mut w = pool.writer();
    /// write!(w, "{}", "x".repeat(100_000))?;
    /// let mut chain = w.finish();
    /// assert_eq!(chain.len(), 100_000);
    /// assert_eq!(chain.chunks().count(), 2); // two 64 KiB segments
    ///
    /// let mut back = String::new();
    /// chain.read_to_string(&mut back)?;
    /// assert_eq!(back.len(), 100_000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn writer(&self) -> SegmentWriter {
        let size = DEFAULT_WRITER_SEGMENT.min(self.shared().size_classes.largest());
        SegmentWriter::new(self.clone(), size)
    }

    /// Like [`writer`](Self::writer), with each segment allocated as
    /// [`allocate(segment_size)`](Self::allocate): the smallest class that holds `segment_size`
    /// bytes, or a dedicated mapping (one `mmap` per segment) above the largest class.
    ///
    /// Fails with [`ErrorKind::ZeroSize`] for a size of zero.
    pub fn writer_with_segment_size(&self, segment_size: usize) -> Result<SegmentWriter> {
        if segment_size == 0 {
            return Err(ErrorKind::ZeroSize.into());
        }
        Ok(SegmentWriter::new(self.clone(), segment_size))
    }
}

/// A writer over a chain of pool segments, for output whose size is not known in advance.
///
/// Made by [`SegmentPool::writer`]. It takes a segment from the pool when the one it writes into
/// is full, and never copies or moves bytes already written. [`finish`](Self::finish) gives the
/// written bytes as a [`SegmentChain`]. Dropping the writer releases its segments.
///
/// # Writing, and the budget
///
/// * [`std::io::Write`] (always available): when the pool refuses a segment (its budget is
///   used up, see [`ErrorKind::BudgetExceeded`]), `write` returns the bytes it had already copied
///   if there were any, and the next call returns the refusal as an [`io::Error`] of kind
///   `OutOfMemory` whose inner error is the [`Error`](crate::Error):
///   `e.get_ref().and_then(|e| e.downcast_ref::<segpool::Error>())`. Nothing written before the
///   error is lost: `finish` still gives every byte that was accepted.
/// * `bytes::BufMut` (feature `bytes`): `chunk_mut` cannot fail, so when it needs a segment and
///   the pool refuses one it **panics** (the way `Vec`'s `BufMut` aborts when memory runs out,
///   but a panic can be caught, and the writer stays valid with everything written so far).
///   `remaining_mut` is the most the writer could ever hold: what the pool's budget allows minus
///   what is written (unbounded without a budget); as `BufMut` permits, writing can fail before
///   that when other segments of the pool take the budget. To write without that panic,
///   [`try_reserve`](Self::try_reserve) the bytes first.
///
/// The budget is the pool's: the writer's segments count against it like any other segment, and
/// the pool's pressure callback runs before a refusal, as for [`SegmentPool::allocate`].
///
/// # Invariants
///
/// Every segment in `full` is written to its end; `current` is written up to `filled`; `spare`
/// holds segments reserved and not yet written; `len` is the sum of the written bytes.
pub struct SegmentWriter {
    pool: SegmentPool,
    segment_size: usize,
    full: Vec<Segment>,
    current: Option<Segment>,
    filled: usize,
    spare: Vec<Segment>,
    len: usize,
}

impl fmt::Debug for SegmentWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentWriter")
            .field("len", &self.len)
            .field("segment_size", &self.segment_size)
            .field(
                "segments",
                &(self.full.len() + usize::from(self.current.is_some())),
            )
            .field("reserved", &self.reserved())
            .finish()
    }
}

impl SegmentWriter {
    fn new(pool: SegmentPool, segment_size: usize) -> Self {
        Self {
            pool,
            segment_size,
            full: Vec::new(),
            current: None,
            filled: 0,
            spare: Vec::new(),
            len: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The size each segment is allocated with (a segment can be larger: its class size).
    pub fn segment_size(&self) -> usize {
        self.segment_size
    }

    /// Bytes this writer can take without asking the pool for another segment: the free end of
    /// the segment it writes into, plus the segments [`try_reserve`](Self::try_reserve) took.
    pub fn reserved(&self) -> usize {
        let current = self.current.as_ref().map_or(0, |s| s.len() - self.filled);
        current + self.spare.iter().map(|s| s.len()).sum::<usize>()
    }

    /// Makes sure that `additional` more bytes can be written without asking the pool for a
    /// segment, taking the segments needed now; after `Ok`, writing that much through
    /// `io::Write` or `BufMut` cannot fail or panic.
    ///
    /// All or nothing: when the pool refuses a segment, the segments this call took go back and
    /// the error (usually of kind [`ErrorKind::BudgetExceeded`]) is returned; what was written is
    /// untouched.
    pub fn try_reserve(&mut self, additional: usize) -> Result<()> {
        let mut have = self.reserved();
        let before = self.spare.len();
        while have < additional {
            match self.pool.allocate(self.segment_size) {
                Ok(seg) => {
                    have += seg.len();
                    self.spare.push(seg);
                }
                Err(e) => {
                    self.spare.truncate(before);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The free end of the segment being written, taking a new segment (a reserved one first)
    /// when the current one is full. Never empty on `Ok`.
    pub(crate) fn spare_mut(&mut self) -> Result<&mut [u8]> {
        let full = self.current.as_ref().is_none_or(|s| self.filled == s.len());
        if full {
            let next = match self.spare.pop() {
                Some(seg) => seg,
                None => self.pool.allocate(self.segment_size)?,
            };
            if let Some(done) = self.current.replace(next) {
                self.full.push(done);
            }
            self.filled = 0;
        }
        let filled = self.filled;
        let seg = self
            .current
            .as_mut()
            .expect("a current segment was just ensured");
        Ok(&mut seg[filled..])
    }

    /// The free end of the current segment, empty when there is none or it is full.
    #[cfg(feature = "bytes")]
    pub(crate) fn spare_now(&mut self) -> &mut [u8] {
        let filled = self.filled;
        match self.current.as_mut() {
            Some(seg) => &mut seg[filled..],
            None => &mut [],
        }
    }

    /// Counts `n` more bytes of the current segment as written.
    ///
    /// # Panics
    ///
    /// When `n` is more than the free end of the current segment.
    pub(crate) fn advance(&mut self, n: usize) {
        let free = self.current.as_ref().map_or(0, |s| s.len() - self.filled);
        assert!(
            n <= free,
            "SegmentWriter: advance by {n} bytes, but the current segment has {free} free"
        );
        self.filled += n;
        self.len += n;
    }

    /// The most this writer could ever hold beyond what it has: the pool's budget minus what
    /// is written (never less than what is reserved), or unbounded without a budget.
    #[cfg(feature = "bytes")]
    pub(crate) fn capacity_left(&self) -> usize {
        match self.pool.shared().budget.limit_opt() {
            Some(limit) => limit.saturating_sub(self.len).max(self.reserved()),
            None => usize::MAX - self.len,
        }
    }

    /// The written bytes, as a chain to read back or hand on. Reserved segments that were not
    /// written go back to the pool.
    pub fn finish(self) -> SegmentChain {
        let Self {
            full,
            current,
            filled,
            len,
            ..
        } = self;
        let mut segments: VecDeque<(Segment, usize)> = full
            .into_iter()
            .map(|seg| {
                let n = seg.len();
                (seg, n)
            })
            .collect();
        if let Some(seg) = current.filter(|_| filled > 0) {
            segments.push_back((seg, filled));
        }
        SegmentChain {
            segments,
            pos: 0,
            remaining: len,
        }
    }
}

impl io::Write for SegmentWriter {
    /// Copies as much of `buf` as the pool gives segments for. A refusal after some bytes were
    /// copied returns their count; a refusal before any is the error.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let dst = match self.spare_mut() {
                Ok(dst) => dst,
                Err(e) if done == 0 => return Err(e.into()),
                Err(_) => break,
            };
            let n = dst.len().min(buf.len() - done);
            dst[..n].copy_from_slice(&buf[done..done + n]);
            self.advance(n);
            done += n;
        }
        Ok(done)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The bytes a [`SegmentWriter`] wrote: its segments in order, read from the front.
///
/// Reading ([`io::Read`], [`io::BufRead`], and `bytes::Buf` with the `bytes` feature) consumes
/// the chain from the front and releases each segment to the pool as soon as it is read past.
/// With the `bytes` feature, `SegmentChain::into_bytes_vec` turns the unread bytes into
/// `bytes::Bytes` values, one per segment, without copying.
///
/// # Invariants
///
/// Each entry is a segment and the bytes written at its start (more than zero); `pos` is the
/// read offset in the front entry, below its written length; `remaining` is the sum of the
/// written lengths minus `pos`.
pub struct SegmentChain {
    segments: VecDeque<(Segment, usize)>,
    pos: usize,
    remaining: usize,
}

impl fmt::Debug for SegmentChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentChain")
            .field("len", &self.remaining)
            .field("segments", &self.segments.len())
            .finish()
    }
}

impl SegmentChain {
    /// Bytes not read yet (all of them, before any read).
    pub fn len(&self) -> usize {
        self.remaining
    }

    /// Whether no byte is left to read.
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// The unread bytes, one slice per segment, in order.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.segments
            .iter()
            .enumerate()
            .map(|(i, (seg, n))| &seg[if i == 0 { self.pos } else { 0 }..*n])
    }

    /// The unread bytes of the front segment (empty when nothing is left).
    pub(crate) fn front(&self) -> &[u8] {
        self.segments
            .front()
            .map_or(&[][..], |(seg, n)| &seg[self.pos..*n])
    }

    /// Consumes `n` bytes from the front, releasing each segment read to its end.
    ///
    /// # Panics
    ///
    /// When `n` is more than [`len`](Self::len).
    pub(crate) fn consume_bytes(&mut self, mut n: usize) {
        assert!(
            n <= self.remaining,
            "SegmentChain: advance by {n} bytes, but only {} are left",
            self.remaining
        );
        self.remaining -= n;
        while n > 0 {
            let (_, end) = self
                .segments
                .front()
                .expect("remaining bytes lie in segments");
            let left = end - self.pos;
            if n < left {
                self.pos += n;
                return;
            }
            n -= left;
            self.segments.pop_front();
            self.pos = 0;
        }
    }

    /// The segments with their unread ranges, in order (for the `bytes` conversion).
    #[cfg(feature = "bytes")]
    pub(crate) fn into_parts(self) -> impl Iterator<Item = (Segment, std::ops::Range<usize>)> {
        let pos = self.pos;
        self.segments
            .into_iter()
            .enumerate()
            .map(move |(i, (seg, n))| (seg, if i == 0 { pos } else { 0 }..n))
    }
}

impl io::Read for SegmentChain {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() && !self.is_empty() {
            let src = self.front();
            let n = src.len().min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&src[..n]);
            self.consume_bytes(n);
            done += n;
        }
        Ok(done)
    }
}

impl io::BufRead for SegmentChain {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        Ok(self.front())
    }

    fn consume(&mut self, amt: usize) {
        self.consume_bytes(amt);
    }
}
