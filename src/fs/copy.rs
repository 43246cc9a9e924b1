//! Copying bytes out of and into a file mapping.
//!
//! # Why every access to mapped memory is atomic
//!
//! `read_at` and `write_at` take `&self`, so two threads may copy overlapping ranges of the same
//! mapping at once, and a [`MappedView`](super::MappedView) hands out `&AtomicU32`/`&AtomicU64`
//! into the same memory. Under Rust's memory model a plain load racing with a store on another
//! thread is a data race, which is undefined behaviour whatever the hardware does. So the side of
//! each copy that touches the mapping uses relaxed atomic loads (reads) or stores (writes): an
//! aligned 8-byte word at a time in the middle, and 1-, 2- or 4-byte naturally aligned accesses at
//! the unaligned ends. The other side (the caller's `&mut [u8]` or `&[u8]`) is private to the
//! caller and is accessed plainly.
//!
//! This is the approach of the `atomic-memcpy` crate and of C++'s proposed
//! `atomic_load_per_byte_memcpy`: no access to mapped memory is non-atomic, so a racing reader
//! sees for each byte either the old or the new value (torn across bytes, never undefined). What
//! Rust still leaves open is racing atomic accesses of *different sizes* to the same bytes (a
//! 1-byte store at one end of a write against an 8-byte load of a read, or a user's `AtomicU32`
//! against the copy's `AtomicU64`): the standard library calls these undefined for lack of a
//! model, while every target Rust supports performs each of them as one single-copy-atomic
//! access. That is the remaining gap, documented in `docs/files.md` ("Memory model").
//!
//! Relaxed atomic loads and stores of up to 8 bytes compile to plain `mov`s on x86-64 and to plain
//! `ldr`/`str` on AArch64; what they cost is that the compiler cannot merge them into wider vector
//! moves or call `memcpy` (measured in `segpool bench`, see `docs/files.md`).

use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

/// The largest copy the small-read fast path makes (the rest of the read path is sized for it).
pub(crate) const SMALL: usize = 64;

/// One atomic access of `$t` (through `$a`) at `i`: from shared `src` to private `dst`.
macro_rules! load {
    ($a:ty, $t:ty, $src:expr, $dst:expr, $i:expr) => {{
        // SAFETY (of every expansion): the caller of the enclosing fn guarantees `src + i` is
        // readable for `size_of::<$t>()` bytes and naturally aligned for `$t` (the enclosing fn
        // checks the alignment before choosing the width), only accessed atomically by others in
        // this process; `dst + i` is writable and private.
        let v = unsafe { <$a>::from_ptr($src.add($i).cast::<$t>().cast_mut()) }.load(Relaxed);
        unsafe { $dst.add($i).cast::<$t>().write_unaligned(v) };
    }};
}

/// One atomic access of `$t` at `i`: from private `src` to shared `dst`.
macro_rules! store {
    ($a:ty, $t:ty, $src:expr, $dst:expr, $i:expr) => {{
        // SAFETY: as in `load!`, with the roles of the two pointers swapped.
        let v = unsafe { $src.add($i).cast::<$t>().read_unaligned() };
        unsafe { <$a>::from_ptr($dst.add($i).cast::<$t>()) }.store(v, Relaxed);
    }};
}

/// Copies `n` bytes from mapped (shared) memory at `src` to private memory at `dst`, every load
/// from `src` a relaxed atomic load (see the module comment).
///
/// # Safety
///
/// * `src..src + n` is readable and `dst..dst + n` writable, and the two do not overlap.
/// * Within this process, `src..src + n` is only ever accessed through atomics (this module, or
///   a [`MappedView`](super::MappedView)'s atomics) while the copy runs, never through a plain
///   reference that someone writes through.
#[inline(always)]
pub(crate) unsafe fn copy_from_shared(src: *const u8, dst: *mut u8, n: usize) {
    let mut i = 0;
    // Unaligned head: at most a 1-, a 2- and a 4-byte access.
    while i < n && (src as usize + i) & 7 != 0 {
        let a = src as usize + i;
        let r = n - i;
        if a & 1 != 0 || r < 2 {
            load!(AtomicU8, u8, src, dst, i);
            i += 1;
        } else if a & 2 != 0 || r < 4 {
            load!(AtomicU16, u16, src, dst, i);
            i += 2;
        } else {
            load!(AtomicU32, u32, src, dst, i);
            i += 4;
        }
    }
    while n - i >= 32 {
        load!(AtomicU64, u64, src, dst, i);
        load!(AtomicU64, u64, src, dst, i + 8);
        load!(AtomicU64, u64, src, dst, i + 16);
        load!(AtomicU64, u64, src, dst, i + 24);
        i += 32;
    }
    while n - i >= 8 {
        load!(AtomicU64, u64, src, dst, i);
        i += 8;
    }
    // Tail (`src + i` is 8-aligned here, or `i == n`): at most a 4-, a 2- and a 1-byte access.
    if n - i >= 4 {
        load!(AtomicU32, u32, src, dst, i);
        i += 4;
    }
    if n - i >= 2 {
        load!(AtomicU16, u16, src, dst, i);
        i += 2;
    }
    if n - i >= 1 {
        load!(AtomicU8, u8, src, dst, i);
    }
}

/// Copies `n` bytes from private memory at `src` to mapped (shared) memory at `dst`, every store
/// to `dst` a relaxed atomic store (see the module comment). Bytes outside `dst..dst + n` are
/// never written, not even with their own value (another thread may be writing them).
///
/// # Safety
///
/// * `src..src + n` is readable and `dst..dst + n` writable, and the two do not overlap.
/// * Within this process, `dst..dst + n` is only ever accessed through atomics while the copy
///   runs, and `src..src + n` is not written by anyone while the copy runs.
#[inline(always)]
pub(crate) unsafe fn copy_to_shared(src: *const u8, dst: *mut u8, n: usize) {
    let mut i = 0;
    while i < n && (dst as usize + i) & 7 != 0 {
        let a = dst as usize + i;
        let r = n - i;
        if a & 1 != 0 || r < 2 {
            store!(AtomicU8, u8, src, dst, i);
            i += 1;
        } else if a & 2 != 0 || r < 4 {
            store!(AtomicU16, u16, src, dst, i);
            i += 2;
        } else {
            store!(AtomicU32, u32, src, dst, i);
            i += 4;
        }
    }
    while n - i >= 32 {
        store!(AtomicU64, u64, src, dst, i);
        store!(AtomicU64, u64, src, dst, i + 8);
        store!(AtomicU64, u64, src, dst, i + 16);
        store!(AtomicU64, u64, src, dst, i + 24);
        i += 32;
    }
    while n - i >= 8 {
        store!(AtomicU64, u64, src, dst, i);
        i += 8;
    }
    if n - i >= 4 {
        store!(AtomicU32, u32, src, dst, i);
        i += 4;
    }
    if n - i >= 2 {
        store!(AtomicU16, u16, src, dst, i);
        i += 2;
    }
    if n - i >= 1 {
        store!(AtomicU8, u8, src, dst, i);
    }
}

#[cfg(test)]
mod tests {
    use super::{copy_from_shared, copy_to_shared};

    /// Every length up to 200 at every alignment of both sides, in both directions: exact, and
    /// nothing written outside the destination range.
    #[test]
    fn copies_every_length_and_alignment_exactly() {
        // u64-aligned storage, so offsets 0..8 cover every alignment.
        let src_words: Vec<u64> = (0..40u64)
            .map(|i| i.wrapping_mul(0x0123_4567_89ab_cdef))
            .collect();
        let src: Vec<u8> = src_words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        for n in 0..=200usize {
            for soff in 0..8usize {
                for doff in 0..8usize {
                    for to_shared in [false, true] {
                        let mut dst_words = vec![0xeeee_eeee_eeee_eeeeu64; 40];
                        let dst = dst_words.as_mut_ptr().cast::<u8>();
                        // SAFETY: both ranges lie in their distinct vectors (n + 8 <= 320), and
                        // nothing else touches them.
                        unsafe {
                            if to_shared {
                                copy_to_shared(src.as_ptr().add(soff), dst.add(doff), n);
                            } else {
                                copy_from_shared(src.as_ptr().add(soff), dst.add(doff), n);
                            }
                        }
                        let got: Vec<u8> = dst_words.iter().flat_map(|w| w.to_ne_bytes()).collect();
                        assert_eq!(
                            &got[doff..doff + n],
                            &src[soff..soff + n],
                            "n {n} soff {soff} doff {doff} to_shared {to_shared}"
                        );
                        assert!(got[..doff].iter().all(|&b| b == 0xee), "wrote before");
                        assert!(
                            got[doff + n..].iter().all(|&b| b == 0xee),
                            "wrote past the end"
                        );
                    }
                }
            }
        }
    }
}
