//! Copying bytes out of a file mapping.
//!
//! Small random reads are bound by memory latency, and how many of them the CPU overlaps depends
//! on how many instructions each one takes (they all wait in the reorder buffer behind the
//! oldest miss). A call to `memcpy` for 64 bytes costs the call, its size dispatch and, in the
//! caller, the registers saved around the call; copies of 16 to 64 bytes are therefore done
//! inline with two or four overlapping 16-byte loads and stores. Everything else goes to
//! `memcpy`, which has the best routine for the CPU (and for large copies, its own choice of
//! streaming stores).

use std::ptr;

type Chunk = [u8; 16];

/// Copies `n` bytes from `src` to `dst`.
///
/// # Safety
///
/// * `src..src + n` is readable and `dst..dst + n` writable, as for
///   [`ptr::copy_nonoverlapping`], and the two ranges do not overlap.
#[inline(always)]
pub(crate) unsafe fn copy_out(src: *const u8, dst: *mut u8, n: usize) {
    if (16..=64).contains(&n) {
        // SAFETY: every chunk lies in `src..src + n` / `dst..dst + n` (`16 <= n <= 64`, and the
        // middle pair is only used when `n > 32`); unaligned reads and writes of plain bytes.
        unsafe {
            let head = src.cast::<Chunk>().read_unaligned();
            let tail = src.add(n - 16).cast::<Chunk>().read_unaligned();
            if n > 32 {
                let head2 = src.add(16).cast::<Chunk>().read_unaligned();
                let tail2 = src.add(n - 32).cast::<Chunk>().read_unaligned();
                dst.add(16).cast::<Chunk>().write_unaligned(head2);
                dst.add(n - 32).cast::<Chunk>().write_unaligned(tail2);
            }
            dst.cast::<Chunk>().write_unaligned(head);
            dst.add(n - 16).cast::<Chunk>().write_unaligned(tail);
        }
    } else {
        // SAFETY: the caller's contract.
        unsafe { ptr::copy_nonoverlapping(src, dst, n) }
    }
}

#[cfg(test)]
mod tests {
    use super::copy_out;

    #[test]
    fn copies_every_length_exactly() {
        let src: Vec<u8> = (0..200u8).collect();
        for n in 0..=130 {
            for off in [0usize, 1, 7, 15] {
                let mut dst = vec![0xeeu8; 200];
                // SAFETY: both ranges lie in their vectors, which are distinct.
                unsafe { copy_out(src.as_ptr().add(off), dst.as_mut_ptr().add(3), n) };
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
