//! Copying bytes out of and into a file mapping.
//!
//! # Why every access to mapped memory is atomic
//!
//! `read_at` and `write_at` take `&self`, so two threads may copy overlapping ranges of the same
//! mapping at once, and a [`MappedView`](super::MappedView) hands out `&AtomicU32`/`&AtomicU64`
//! into the same memory. Under Rust's memory model a plain load racing with a store on another
//! thread is a data race, which is undefined behaviour whatever the hardware does. So the side of
//! each copy that touches the mapping is made of atomic accesses, with the meaning of C++'s
//! proposed per-byte atomic `memcpy` (and of the `atomic-memcpy` crate): each byte is read or
//! written by a relaxed atomic access, so a racing reader sees for each byte either an old or a
//! new value (torn across bytes, never undefined). The other side (the caller's `&mut [u8]` or
//! `&[u8]`) is private to the caller and is accessed plainly.
//!
//! Two forms:
//!
//! * on x86-64, inline assembly ([`copy_from_shared`], [`copy_to_shared`]): 16-byte `movdqu`
//!   moves (at most four, overlapping, for up to 64 bytes, with no call and no stack), and
//!   `rep movsb` from 2 KiB. It costs what `memcpy` costs (`segpool bench`, docs/files.md);
//! * elsewhere, Rust's atomic types (`copy_*_shared_words`): naturally aligned 1-, 2- and 4-byte
//!   accesses up to the first 8-byte boundary, 8-byte words in the middle, then 4, 2 and 1 bytes.
//!   The compiler cannot merge atomics into vector moves, so large copies run at about half the
//!   speed of `memcpy` (measured on x86-64 before the assembly form replaced it there).
//!
//! What Rust still leaves open is racing atomic accesses of *different sizes* to the same bytes
//! (a 16-byte move against a user's `AtomicU32`): the standard library calls these undefined for
//! lack of a model, while every CPU performs each of them as single-copy atomic per byte. That is
//! the remaining gap, documented in `docs/files.md` ("Views and the memory model").

use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

/// The largest copy the small-read fast path makes (the rest of the read path is sized for it).
pub(crate) const SMALL: usize = 64;

/// One atomic access of `$t` (through `$a`) at `i`: from shared `src` to private `dst`.
macro_rules! load {
    ($a:ty, $t:ty, $src:expr, $dst:expr, $i:expr) => {{
        // SAFETY: (of every expansion) the caller of the enclosing fn guarantees `src + i` is
        // readable for `size_of::<$t>()` bytes and naturally aligned for `$t` (the enclosing fn
        // checks the alignment before choosing the width), only accessed atomically by others in
        // this process; `dst + i` is writable and private.
        let v = unsafe { <$a>::from_ptr($src.add($i).cast::<$t>().cast_mut()) }.load(Relaxed);
        // SAFETY: `dst + i` is writable and private to the caller, and an unaligned write needs
        // no alignment.
        unsafe { $dst.add($i).cast::<$t>().write_unaligned(v) };
    }};
}

/// One atomic access of `$t` at `i`: from private `src` to shared `dst`.
macro_rules! store {
    ($a:ty, $t:ty, $src:expr, $dst:expr, $i:expr) => {{
        // SAFETY: as in `load!`, with the roles of the two pointers swapped: `src + i` is
        // readable and private to the caller, and an unaligned read needs no alignment.
        let v = unsafe { $src.add($i).cast::<$t>().read_unaligned() };
        // SAFETY: as in `load!`: the caller guarantees `dst + i` is writable for
        // `size_of::<$t>()` bytes, naturally aligned for `$t`, and only accessed atomically.
        unsafe { <$a>::from_ptr($dst.add($i).cast::<$t>()) }.store(v, Relaxed);
    }};
}

/// The portable form of [`copy_from_shared`]: every load from `src` a relaxed atomic load of
/// Rust's atomic types (see the module comment).
///
/// # Safety
///
/// * `src..src + n` is readable and `dst..dst + n` writable, and the two do not overlap.
/// * Within this process, `src..src + n` is only ever accessed through atomics (this module, or
///   a [`MappedView`](super::MappedView)'s atomics) while the copy runs, never through a plain
///   reference that someone writes through.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
pub(crate) unsafe fn copy_from_shared_words(src: *const u8, dst: *mut u8, n: usize) {
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

/// The portable form of [`copy_to_shared`]: every store to `dst` a relaxed atomic store of
/// Rust's atomic types (see the module comment). Bytes outside `dst..dst + n` are never written,
/// not even with their own value (another thread may be writing them).
///
/// # Safety
///
/// * `src..src + n` is readable and `dst..dst + n` writable, and the two do not overlap.
/// * Within this process, `dst..dst + n` is only ever accessed through atomics while the copy
///   runs, and `src..src + n` is not written by anyone while the copy runs.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
pub(crate) unsafe fn copy_to_shared_words(src: *const u8, dst: *mut u8, n: usize) {
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

/// Copies `n` bytes from mapped (shared) memory at `src` to private memory at `dst`; each byte
/// of `src` is read by one atomic access (see the module comment).
///
/// # Safety
///
/// * `src..src + n` is readable and `dst..dst + n` writable, and the two do not overlap.
/// * Within this process, `src..src + n` is only ever accessed through atomic accesses (this
///   module, or a [`MappedView`](super::MappedView)'s atomics) while the copy runs, never
///   through a plain reference that someone writes through.
#[inline(always)]
pub(crate) unsafe fn copy_from_shared(src: *const u8, dst: *mut u8, n: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract, which is `x86::copy_from_shared`'s.
    unsafe {
        x86::copy_from_shared(src, dst, n)
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: the caller's contract, which is `copy_from_shared_words`'.
    unsafe {
        copy_from_shared_words(src, dst, n)
    }
}

/// [`copy_from_shared`] for `n <= SMALL`: no loop and no call, so it inlines into the small-read
/// fast path whole (the general copy, with its loop and string move, would not, and the fast
/// path would then pass its arguments to an out-of-line closure through the stack).
///
/// # Safety
///
/// * `n <= SMALL`, and the contract of [`copy_from_shared`].
#[inline(always)]
pub(crate) unsafe fn copy_small_from_shared(src: *const u8, dst: *mut u8, n: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract, which is `x86::copy_small_from_shared`'s.
    unsafe {
        x86::copy_small_from_shared(src, dst, n)
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: the caller's contract, which is `copy_from_shared_words`'.
    unsafe {
        copy_from_shared_words(src, dst, n)
    }
}

/// Copies `n` bytes from private memory at `src` to mapped (shared) memory at `dst`; each byte
/// of `dst` is written by atomic accesses (see the module comment), and no byte outside
/// `dst..dst + n` is written.
///
/// # Safety
///
/// * `src..src + n` is readable and `dst..dst + n` writable, and the two do not overlap.
/// * Within this process, `dst..dst + n` is only ever accessed through atomic accesses while the
///   copy runs, and `src..src + n` is not written by anyone while the copy runs.
#[inline(always)]
pub(crate) unsafe fn copy_to_shared(src: *const u8, dst: *mut u8, n: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract, which is `x86::copy_to_shared`'s.
    unsafe {
        x86::copy_to_shared(src, dst, n)
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: the caller's contract, which is `copy_to_shared_words`'.
    unsafe {
        copy_to_shared_words(src, dst, n)
    }
}

/// The x86-64 copies: the shared side of each copy is done by `mov`/`movdqu`/`rep movsb` in
/// inline assembly. An assembly block is opaque to the compiler, which must assume it may read
/// (or write) any memory it can reach, and on x86-64 every byte these instructions read or write
/// is accessed atomically by the CPU (a load or store never tears within a byte, and the hardware
/// keeps caches coherent). So each block behaves as a sequence of relaxed per-byte atomic loads
/// (or stores) would, which is the Rust-level meaning it is given, and unlike Rust's atomic
/// types it may use 16-byte and string moves: the copy costs what `memcpy` costs.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::asm;
    use core::arch::x86_64::__m128i;

    use super::SMALL;

    /// Above this many bytes a copy is one `rep movsb`, the string move that modern x86-64 CPUs
    /// run at full speed for larger sizes ("fast short/enhanced rep movsb"); glibc's `memcpy`
    /// switches to it at 2 KiB by default too. Below it, a loop of 16-byte moves.
    const REP_MOVSB_FROM: usize = 2048;

    /// A load of `$t` from shared memory at `$p`. Expands to an `asm!`, so it is used inside an
    /// `unsafe` block whose caller guarantees the bytes at `$p` are readable; the block reads
    /// nothing else and writes only its output register.
    macro_rules! shared_load {
        ($insn:literal, $t:ty, $cls:ident, $p:expr) => {{
            let v: $t;
            asm!($insn, v = out($cls) v, p = in(reg) $p,
                 options(nostack, preserves_flags, readonly));
            v
        }};
    }

    /// A store of `$v: $t` to shared memory at `$p`. Expands to an `asm!`, used inside an
    /// `unsafe` block whose caller guarantees the bytes at `$p` are writable; the block writes
    /// exactly `size_of::<$t>()` bytes there and nothing else.
    macro_rules! shared_store {
        ($insn:literal, $t:ty, $cls:ident, $p:expr, $v:expr) => {{
            let v: $t = $v;
            asm!($insn, v = in($cls) v, p = in(reg) $p, options(nostack, preserves_flags));
        }};
    }

    /// # Safety: as for [`super::copy_from_shared`].
    #[inline(always)]
    pub(super) unsafe fn copy_from_shared(src: *const u8, dst: *mut u8, n: usize) {
        // SAFETY: (every arm) each access lies in `src..src + n` / `dst..dst + n` by the arm's
        // bounds on `n`; the caller's contract covers the ranges.
        unsafe {
            if n <= SMALL {
                copy_small_from_shared(src, dst, n);
            } else if n < REP_MOVSB_FROM {
                let mut i = 0;
                while n - i > 16 {
                    let v: __m128i = shared_load!(
                        "movdqu {v}, xmmword ptr [{p}]",
                        __m128i,
                        xmm_reg,
                        src.add(i)
                    );
                    dst.add(i).cast::<__m128i>().write_unaligned(v);
                    i += 16;
                }
                copy_small_from_shared(src.add(n - 16), dst.add(n - 16), 16);
            } else {
                // The direction flag is clear (the ABI's promise at every call boundary).
                asm!("rep movsb",
                     inout("rcx") n => _, inout("rsi") src => _, inout("rdi") dst => _,
                     options(nostack, preserves_flags));
            }
        }
    }

    /// # Safety: as for [`super::copy_small_from_shared`].
    #[inline(always)]
    pub(super) unsafe fn copy_small_from_shared(src: *const u8, dst: *mut u8, n: usize) {
        /// Copies `n` bytes, `16 <= n <= 32`, as a head and a tail of 16 (which may overlap).
        #[inline(always)]
        unsafe fn pair16(src: *const u8, dst: *mut u8, n: usize) {
            // SAFETY: (every access) `16 <= n`, so both chunks lie in the ranges of the
            // caller's contract; stores to `dst` are plain (private memory).
            unsafe {
                let head: __m128i =
                    shared_load!("movdqu {v}, xmmword ptr [{p}]", __m128i, xmm_reg, src);
                let tail: __m128i = shared_load!(
                    "movdqu {v}, xmmword ptr [{p}]",
                    __m128i,
                    xmm_reg,
                    src.add(n - 16)
                );
                dst.cast::<__m128i>().write_unaligned(head);
                dst.add(n - 16).cast::<__m128i>().write_unaligned(tail);
            }
        }
        // SAFETY: (every arm) each access lies in `src..src + n` / `dst..dst + n` by the arm's
        // bounds on `n`; the caller's contract covers the ranges.
        unsafe {
            if n >= 16 {
                if n <= 32 {
                    pair16(src, dst, n);
                } else {
                    // 33..=64 (the caller's bound): two pairs, which may overlap.
                    pair16(src, dst, 32);
                    pair16(src.add(n - 32), dst.add(n - 32), 32);
                }
            } else if n >= 8 {
                let a: u64 = shared_load!("mov {v}, qword ptr [{p}]", u64, reg, src);
                let b: u64 = shared_load!("mov {v}, qword ptr [{p}]", u64, reg, src.add(n - 8));
                dst.cast::<u64>().write_unaligned(a);
                dst.add(n - 8).cast::<u64>().write_unaligned(b);
            } else if n >= 4 {
                let a: u32 = shared_load!("mov {v:e}, dword ptr [{p}]", u32, reg, src);
                let b: u32 = shared_load!("mov {v:e}, dword ptr [{p}]", u32, reg, src.add(n - 4));
                dst.cast::<u32>().write_unaligned(a);
                dst.add(n - 4).cast::<u32>().write_unaligned(b);
            } else if n >= 1 {
                // 1..=3 bytes: first, middle and last (they may coincide).
                let a: u32 = shared_load!("movzx {v:e}, byte ptr [{p}]", u32, reg, src);
                let b: u32 = shared_load!("movzx {v:e}, byte ptr [{p}]", u32, reg, src.add(n / 2));
                let c: u32 = shared_load!("movzx {v:e}, byte ptr [{p}]", u32, reg, src.add(n - 1));
                dst.write(a as u8);
                dst.add(n / 2).write(b as u8);
                dst.add(n - 1).write(c as u8);
            }
        }
    }

    /// # Safety: as for [`super::copy_to_shared`].
    #[inline(always)]
    pub(super) unsafe fn copy_to_shared(src: *const u8, dst: *mut u8, n: usize) {
        /// Copies `n` bytes, `16 <= n <= 32`, as a head and a tail of 16 (which may overlap:
        /// the overlapping bytes are written twice with the same value, never a byte outside
        /// the range).
        #[inline(always)]
        unsafe fn pair16(src: *const u8, dst: *mut u8, n: usize) {
            // SAFETY: (every access) as in `copy_from_shared`, roles swapped.
            unsafe {
                let head = src.cast::<__m128i>().read_unaligned();
                let tail = src.add(n - 16).cast::<__m128i>().read_unaligned();
                shared_store!("movdqu xmmword ptr [{p}], {v}", __m128i, xmm_reg, dst, head);
                shared_store!(
                    "movdqu xmmword ptr [{p}], {v}",
                    __m128i,
                    xmm_reg,
                    dst.add(n - 16),
                    tail
                );
            }
        }
        // SAFETY: (every arm) as in `copy_from_shared`.
        unsafe {
            if n >= 16 {
                if n <= 32 {
                    pair16(src, dst, n);
                } else if n <= 64 {
                    pair16(src, dst, 32);
                    pair16(src.add(n - 32), dst.add(n - 32), 32);
                } else if n < REP_MOVSB_FROM {
                    let mut i = 0;
                    while n - i > 16 {
                        let v = src.add(i).cast::<__m128i>().read_unaligned();
                        shared_store!(
                            "movdqu xmmword ptr [{p}], {v}",
                            __m128i,
                            xmm_reg,
                            dst.add(i),
                            v
                        );
                        i += 16;
                    }
                    pair16(src.add(n - 16), dst.add(n - 16), 16);
                } else {
                    asm!("rep movsb",
                         inout("rcx") n => _, inout("rsi") src => _, inout("rdi") dst => _,
                         options(nostack, preserves_flags));
                }
            } else if n >= 8 {
                let a = src.cast::<u64>().read_unaligned();
                let b = src.add(n - 8).cast::<u64>().read_unaligned();
                shared_store!("mov qword ptr [{p}], {v}", u64, reg, dst, a);
                shared_store!("mov qword ptr [{p}], {v}", u64, reg, dst.add(n - 8), b);
            } else if n >= 4 {
                let a = src.cast::<u32>().read_unaligned();
                let b = src.add(n - 4).cast::<u32>().read_unaligned();
                shared_store!("mov dword ptr [{p}], {v:e}", u32, reg, dst, a);
                shared_store!("mov dword ptr [{p}], {v:e}", u32, reg, dst.add(n - 4), b);
            } else if n >= 1 {
                let (a, b, c) = (src.read(), src.add(n / 2).read(), src.add(n - 1).read());
                shared_store!("mov byte ptr [{p}], {v}", u8, reg_byte, dst, a);
                shared_store!("mov byte ptr [{p}], {v}", u8, reg_byte, dst.add(n / 2), b);
                shared_store!("mov byte ptr [{p}], {v}", u8, reg_byte, dst.add(n - 1), c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{copy_from_shared, copy_from_shared_words, copy_to_shared, copy_to_shared_words};

    /// Every length up to 200 (and around the `rep movsb` threshold) at every alignment of both
    /// sides, in both directions and both forms: exact, and nothing written outside the
    /// destination range.
    #[test]
    fn copies_every_length_and_alignment_exactly() {
        const WORDS: usize = 600;
        // u64-aligned storage, so offsets 0..8 cover every alignment.
        let src_words: Vec<u64> = (0..WORDS as u64)
            .map(|i| i.wrapping_mul(0x0123_4567_89ab_cdef))
            .collect();
        let src: Vec<u8> = src_words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        for n in (0..=200usize).chain([2047, 2048, 2049, 4096 + 3]) {
            for soff in 0..8usize {
                for doff in 0..8usize {
                    for (form, to_shared) in [(0, false), (0, true), (1, false), (1, true)] {
                        let mut dst_words = vec![0xeeee_eeee_eeee_eeeeu64; WORDS];
                        let dst = dst_words.as_mut_ptr().cast::<u8>();
                        // SAFETY: both ranges lie in their distinct vectors (n + 8 <= 8 * WORDS),
                        // and nothing else touches them.
                        unsafe {
                            let (s, d) = (src.as_ptr().add(soff), dst.add(doff));
                            match (form, to_shared) {
                                (0, true) => copy_to_shared(s, d, n),
                                (0, false) => copy_from_shared(s, d, n),
                                (_, true) => copy_to_shared_words(s, d, n),
                                (_, false) => copy_from_shared_words(s, d, n),
                            }
                        }
                        // SAFETY: the vector's bytes, read after the copy.
                        let got = unsafe { std::slice::from_raw_parts(dst, 8 * WORDS) };
                        assert!(
                            got[doff..doff + n] == src[soff..soff + n]
                                && got[..doff].iter().all(|&b| b == 0xee)
                                && got[doff + n..].iter().all(|&b| b == 0xee),
                            "n {n} soff {soff} doff {doff} form {form} to_shared {to_shared}"
                        );
                    }
                }
            }
        }
    }
}
