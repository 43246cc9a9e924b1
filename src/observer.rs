//! Region observers: code told when a region's memory is mapped and before it is unmapped.
//!
//! The io_uring fixed-buffer table (`crate::uring`) is the one observer: it registers each new
//! region with the kernel and clears the region's slot before the memory goes away. The pool
//! keeps its observers in one list behind a lock taken only when a region is mapped or unmapped
//! (and when an observer is added or removed), never on the allocate/release path.
//!
//! # What an observer is told, and when
//!
//! * `mapped` runs in `ClassPool::grow` under the class lock, after the region is mapped and
//!   before any slice of it is handed out or the region is published: a segment of a region
//!   that an observer accepted never exists before the observer knows the region.
//! * `unmapping` runs in `region::destroy`, after the region reached `RETIRED | 0` (no slice
//!   out, none can be handed out) and *before* its memory is unmapped. It is called for every
//!   destroyed region of a size class, whether or not the observer knows it.
//! * Adding an observer (`PoolShared::add_observer`) first puts it in the list, then tells it
//!   about every region already in a class list, under that class's lock. A region mapped
//!   concurrently is reported by `grow` (it read the list after the observer joined) or found
//!   by the walk (it was published before the walk took the class lock), possibly both: an
//!   observer ignores a region it already knows. A region in a class list is never retired
//!   while its class lock is held, so the walk never reports a region being destroyed.
//! * Dedicated mappings (one segment above the largest class) are not reported: they live as
//!   long as one segment, and registering each would cost a system call per allocation.
//!
//! Observers run with the list's lock held, so they never run concurrently with one another or
//! with the observer's removal: once `remove_observer` returns, the observer is not called again.
//! An observer must not call into the pool.

/// A region as an observer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RegionInfo {
    /// Unique within the pool for the pool's lifetime.
    pub(crate) id: u64,
    /// The first byte of the mapping.
    pub(crate) base: usize,
    /// Bytes mapped.
    pub(crate) len: usize,
    /// The region is a `MAP_SHARED` file mapping (`Backing::File`).
    pub(crate) file_backed: bool,
}

/// Told about the lifecycle of a pool's regions (see the module docs).
pub(crate) trait RegionObserver: Send + Sync {
    /// A region was mapped. An error is reported to whoever added the observer when it comes
    /// from the walk in `add_observer`; from growth, the observer deals with it (the region just
    /// stays unknown to it).
    fn mapped(&self, region: &RegionInfo) -> std::io::Result<()>;
    /// A region is about to be unmapped; its memory is still mapped during the call.
    fn unmapping(&self, region: &RegionInfo);
}

/// The observers of one pool. Ownership only: the `Arc` is `std`'s (it carries a trait object,
/// which loom's `Arc` cannot), and the list's lock orders every access to it.
pub(crate) type ObserverList = Vec<std::sync::Arc<dyn RegionObserver>>;
