//! The allocators segpool is compared with, behind one small trait.
//!
//! This file is shared by the `segpool bench` command and the criterion benches in `benches/`
//! (they include it with `#[path]`), so both measure exactly the same calls. The peers are called
//! through their `GlobalAlloc` implementations; none of them is installed as the global allocator.
//! Every buffer is page-aligned (4096), because that is what segpool hands out and what a fair
//! comparison must ask of the others.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::ptr::NonNull;

use segpool::{Segment, SegmentPool};

/// The alignment every peer is asked for.
pub const PAGE: usize = 4096;

/// Something that hands out buffers of a size and takes them back, on any thread.
pub trait Allocator: Sync {
    /// An owned buffer; `Send` so the producer/consumer pattern can release it elsewhere.
    type Buf: Send;
    /// A short name for tables and plots.
    fn name(&self) -> &'static str;
    /// A buffer of at least `size` bytes, or why the allocator refused.
    fn alloc(&self, size: usize) -> Result<Self::Buf, String>;
    /// The buffer's address, for `black_box`: observing the address keeps an allocation from
    /// being optimized away, without forcing the whole buffer value through memory (a
    /// three-word `Segment` spilled by `black_box(buf)` and reloaded with one 16-byte load
    /// costs a store-forwarding stall that a one-word peer does not pay).
    fn addr(buf: &Self::Buf) -> usize;
    /// Gives `buf` (allocated with `size`) back.
    fn release(&self, buf: Self::Buf, size: usize);
}

/// A buffer from a `GlobalAlloc` or from `mmap`: an address and nothing else.
#[derive(Debug)]
pub struct RawBuf(NonNull<u8>);

// SAFETY: a `RawBuf` is an exclusively owned allocation; the allocators it comes from
// (glibc, mimalloc, jemalloc, the kernel) accept a free from any thread.
unsafe impl Send for RawBuf {}

/// Any `GlobalAlloc`, asked for page-aligned memory.
#[derive(Debug)]
pub struct Global<A> {
    name: &'static str,
    alloc: A,
}

impl<A: GlobalAlloc> Global<A> {
    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, PAGE).expect("size classes are far below isize::MAX")
    }
}

impl<A: GlobalAlloc + Sync> Allocator for Global<A> {
    type Buf = RawBuf;
    fn name(&self) -> &'static str {
        self.name
    }
    #[inline]
    fn alloc(&self, size: usize) -> Result<RawBuf, String> {
        // SAFETY: the layout has a non-zero size (every class is at least 4 KiB).
        NonNull::new(unsafe { self.alloc.alloc(Self::layout(size)) })
            .map(RawBuf)
            .ok_or_else(|| format!("{} refused {size} bytes", self.name))
    }
    #[inline]
    fn addr(buf: &RawBuf) -> usize {
        buf.0.as_ptr() as usize
    }
    #[inline]
    fn release(&self, buf: RawBuf, size: usize) {
        // SAFETY: `buf` came from `alloc` of this allocator with this same layout.
        unsafe { self.alloc.dealloc(buf.0.as_ptr(), Self::layout(size)) }
    }
}

/// glibc's malloc (`std::alloc::System`), page-aligned.
pub fn system() -> Global<System> {
    Global {
        name: "glibc",
        alloc: System,
    }
}

/// Whether the C peers (mimalloc, jemalloc) are in this build: the `peers` feature, off by
/// default so that building and testing need no C compiler.
pub const C_PEERS: bool = cfg!(feature = "peers");

/// mimalloc, page-aligned.
#[cfg(feature = "peers")]
pub fn mimalloc() -> Global<mimalloc::MiMalloc> {
    Global {
        name: "mimalloc",
        alloc: mimalloc::MiMalloc,
    }
}

/// jemalloc (tikv-jemallocator), page-aligned.
#[cfg(feature = "peers")]
pub fn jemalloc() -> Global<tikv_jemallocator::Jemalloc> {
    Global {
        name: "jemalloc",
        alloc: tikv_jemallocator::Jemalloc,
    }
}

/// Stands in for mimalloc without the `peers` feature: refuses every allocation. Nothing measures
/// it: `segpool bench` stops first, naming the feature (`C_PEERS`).
#[cfg(not(feature = "peers"))]
pub fn mimalloc() -> Global<NotBuilt> {
    Global {
        name: "mimalloc",
        alloc: NotBuilt,
    }
}

/// Stands in for jemalloc without the `peers` feature, like [`mimalloc`].
#[cfg(not(feature = "peers"))]
pub fn jemalloc() -> Global<NotBuilt> {
    Global {
        name: "jemalloc",
        alloc: NotBuilt,
    }
}

/// A C peer left out of this build: every allocation fails.
#[cfg(not(feature = "peers"))]
#[derive(Debug)]
pub struct NotBuilt;

// SAFETY: `alloc` hands out no memory (null is how `GlobalAlloc` reports a failed allocation), so
// `dealloc` has no pointer of ours to be given back and does nothing.
#[cfg(not(feature = "peers"))]
unsafe impl GlobalAlloc for NotBuilt {
    unsafe fn alloc(&self, _: Layout) -> *mut u8 {
        std::ptr::null_mut()
    }
    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
}

/// lgalloc (Materialize's large-object allocator): power-of-two classes from 2 MiB, anonymous
/// areas advised `MADV_HUGEPAGE`, per-thread caches of 32 MiB per class, no background worker.
/// Sizes below 2 MiB are refused.
#[derive(Debug)]
pub struct Lgalloc(());

/// A buffer from lgalloc: its address (the handle does not expose it) and the handle.
pub struct LgBuf(NonNull<u8>, lgalloc::Handle);

impl std::fmt::Debug for LgBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LgBuf")
            .field(&self.0)
            .finish_non_exhaustive()
    }
}

// SAFETY: an `LgBuf` is an exclusively owned allocation; lgalloc's handles are `Send` and take a
// deallocation from any thread.
unsafe impl Send for LgBuf {}

/// lgalloc, enabled once for the process with its default configuration.
pub fn lgalloc() -> Lgalloc {
    static ENABLE: std::sync::Once = std::sync::Once::new();
    ENABLE.call_once(|| lgalloc::lgalloc_set_config(lgalloc::LgAlloc::new().enable()));
    Lgalloc(())
}

impl Allocator for Lgalloc {
    type Buf = LgBuf;
    fn name(&self) -> &'static str {
        "lgalloc"
    }
    #[inline]
    fn alloc(&self, size: usize) -> Result<LgBuf, String> {
        let (p, _, handle) =
            lgalloc::allocate::<u8>(size).map_err(|e| refused("lgalloc", size, &e))?;
        Ok(LgBuf(p, handle))
    }
    #[inline]
    fn addr(buf: &LgBuf) -> usize {
        buf.0.as_ptr() as usize
    }
    #[inline]
    fn release(&self, buf: LgBuf, _size: usize) {
        lgalloc::deallocate(buf.1);
    }
}

/// One anonymous `mmap` per buffer and one `munmap` per release.
#[derive(Debug, Default)]
pub struct MmapPerBuffer;

impl Allocator for MmapPerBuffer {
    type Buf = RawBuf;
    fn name(&self) -> &'static str {
        "mmap"
    }
    fn alloc(&self, size: usize) -> Result<RawBuf, String> {
        use rustix::mm::{mmap_anonymous, MapFlags, ProtFlags};
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses overlaps nothing.
        let p = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                size,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }
        .map_err(|e| format!("mmap of {size} bytes: {e}"))?;
        NonNull::new(p.cast())
            .map(RawBuf)
            .ok_or_else(|| "mmap returned null".to_string())
    }
    fn addr(buf: &RawBuf) -> usize {
        buf.0.as_ptr() as usize
    }
    fn release(&self, buf: RawBuf, size: usize) {
        // SAFETY: `buf` is a whole mapping of `size` bytes made by `alloc`, owned by us alone.
        let r = unsafe { rustix::mm::munmap(buf.0.as_ptr().cast(), size) };
        debug_assert!(r.is_ok(), "munmap: {r:?}");
    }
}

/// The floor: a pop from and a push onto a thread-local `Vec` of addresses, which is the least
/// any per-thread cache can cost. The addresses are never dereferenced (the benchmarks leave
/// memory untouched), so an empty stack hands out a placeholder and a full one drops the address.
#[derive(Debug, Default)]
pub struct ThreadLocalFloor;

const FLOOR_CAP: usize = 64;

thread_local! {
    static FLOOR: RefCell<Vec<usize>> = RefCell::new(vec![PAGE; FLOOR_CAP / 2]);
}

impl Allocator for ThreadLocalFloor {
    type Buf = usize;
    fn name(&self) -> &'static str {
        "floor"
    }
    #[inline]
    fn alloc(&self, _size: usize) -> Result<usize, String> {
        Ok(FLOOR.with(|f| f.borrow_mut().pop().unwrap_or(PAGE)))
    }
    #[inline]
    fn addr(buf: &usize) -> usize {
        *buf
    }
    #[inline]
    fn release(&self, buf: usize, _size: usize) {
        FLOOR.with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < FLOOR_CAP {
                f.push(buf);
            }
        })
    }
}

/// The error of an allocation `who` refused: out of line and cold, so that the allocation it
/// comes from stays small enough to inline into the timed loops.
#[cold]
#[inline(never)]
fn refused(who: &str, size: usize, e: &dyn std::fmt::Display) -> String {
    format!("{who}: allocate({size}): {e}")
}

/// segpool itself.
#[derive(Debug)]
pub struct Segpool(pub SegmentPool);

impl Allocator for Segpool {
    type Buf = Segment;
    fn name(&self) -> &'static str {
        "segpool"
    }
    // Inlined where it is timed, as the peers' are: out of line (as the error's formatting made
    // it in the producer/consumer loop) it returned its 24-byte result through memory, a cost
    // of the harness that only segpool's cells paid.
    #[inline(always)]
    fn alloc(&self, size: usize) -> Result<Segment, String> {
        self.0
            .allocate(size)
            .map_err(|e| refused("segpool", size, &e))
    }
    #[inline]
    fn addr(buf: &Segment) -> usize {
        buf.as_ptr() as usize
    }
    #[inline]
    fn release(&self, buf: Segment, _size: usize) {
        drop(buf);
    }
}

/// No allocation at all: the cost of whatever carries the "buffer" (the bare channel, in the
/// producer/consumer pattern). Its message is as large as a `Segment`, so the channel it measures
/// is the one that carries a segment (a smaller message would move fewer bytes between the cores
/// than the segpool cell's channel does).
#[derive(Debug, Default)]
pub struct Nothing;

/// A message of a `Segment`'s size.
pub type SegmentSized = [usize; std::mem::size_of::<Segment>() / std::mem::size_of::<usize>()];

const _: () = assert!(std::mem::size_of::<SegmentSized>() == std::mem::size_of::<Segment>());

impl Allocator for Nothing {
    type Buf = SegmentSized;
    fn name(&self) -> &'static str {
        "channel"
    }
    #[inline]
    fn alloc(&self, size: usize) -> Result<SegmentSized, String> {
        Ok(std::hint::black_box(
            [size; std::mem::size_of::<SegmentSized>() / std::mem::size_of::<usize>()],
        ))
    }
    #[inline]
    fn addr(buf: &SegmentSized) -> usize {
        buf[0]
    }
    #[inline]
    fn release(&self, buf: SegmentSized, _size: usize) {
        std::hint::black_box(buf);
    }
}
