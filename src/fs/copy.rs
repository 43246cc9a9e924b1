//! Copying bytes out of a file mapping.
//!
//! Small random reads are bound by memory latency, and how many of them the CPU overlaps depends
//! on how many instructions, above all how many stores, each one takes (they all wait in the
//! reorder buffer and the store queue behind the oldest miss). A call to `memcpy` for 64 bytes
//! costs the call, its size dispatch and, in the caller, the registers saved around the call;
//! copies of up to [`SMALL`] bytes are therefore done inline with at most four overlapping
//! loads and stores, and with no call, so the read path that uses them needs no stack frame.
//! Everything else goes to `memcpy`, which has the best routine for the CPU (and for large
//! copies, its own choice of streaming stores).

/// The largest copy [`copy_small`] makes.
pub(crate) const SMALL: usize = 64;

/// Copies `n <= SMALL` bytes from `src` to `dst` inline: two (or four) overlapping chunks of
/// the largest width that fits, each stored right after it is loaded (the ranges do not
/// overlap, so the order is free, and one live register per chunk keeps the copy out of the
/// stack).
///
/// # Safety
///
/// * `n <= SMALL`; `src..src + n` is readable and `dst..dst + n` writable, as for
///   [`std::ptr::copy_nonoverlapping`], and the two ranges do not overlap.
#[inline(always)]
pub(crate) unsafe fn copy_small(src: *const u8, dst: *mut u8, n: usize) {
    /// Copies `n` bytes, `size_of::<T>() <= n <= 2 * size_of::<T>()`, as a head and a tail of
    /// type `T` (which may overlap).
    ///
    /// # Safety
    ///
    /// * As for `copy_small`, with the bound on `n` above.
    #[inline(always)]
    unsafe fn pair<T: Copy>(src: *const u8, dst: *mut u8, n: usize) {
        let w = size_of::<T>();
        // SAFETY: `w <= n`, so both chunks lie in `src..src + n` / `dst..dst + n` (the
        // caller's contract); unaligned reads and writes of plain bytes.
        unsafe {
            let head = src.cast::<T>().read_unaligned();
            dst.cast::<T>().write_unaligned(head);
            let tail = src.add(n - w).cast::<T>().read_unaligned();
            dst.add(n - w).cast::<T>().write_unaligned(tail);
        }
    }
    // SAFETY (every arm): the arm's bounds on `n` are those `pair` needs; the caller's contract
    // covers the ranges.
    unsafe {
        if n >= 16 {
            if n > 32 {
                // 33..=64: the first and last 32 bytes, each as two 16-byte chunks.
                pair::<[u8; 16]>(src, dst, 32);
                pair::<[u8; 16]>(src.add(n - 32), dst.add(n - 32), 32);
            } else {
                pair::<[u8; 16]>(src, dst, n);
            }
        } else if n >= 8 {
            pair::<u64>(src, dst, n);
        } else if n >= 4 {
            pair::<u32>(src, dst, n);
        } else if n >= 2 {
            pair::<u16>(src, dst, n);
        } else if n == 1 {
            dst.write(src.read());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{copy_small, SMALL};

    #[test]
    fn copies_every_length_exactly() {
        let src: Vec<u8> = (0..200u8).collect();
        for n in 0..=SMALL {
            for off in [0usize, 1, 7, 15] {
                let mut dst = vec![0xeeu8; 200];
                // SAFETY: both ranges lie in their vectors, which are distinct.
                unsafe { copy_small(src.as_ptr().add(off), dst.as_mut_ptr().add(3), n) };
                assert_eq!(&dst[3..3 + n], &src[off..off + n], "n {n} off {off}");
                assert!(dst[..3].iter().all(|&b| b == 0xee));
                assert!(
                    dst[3 + n..].iter().all(|&b| b == 0xee),
                    "n {n} wrote past the end"
                );
            }
        }
    }
}
