//! The pool's side of its regions: it maps them for its size classes ([`MapRegion`]) and for
//! dedicated segments, and hears from them as their owner ([`RegionOwner`]): a full region has
//! room again, a region is about to be unmapped, a region was unmapped.

use super::PoolShared;
use crate::class_pool::{ClassPool, MapRegion, Shortage};
use crate::region::{
    into_ref, map_memory, Owner, Region, RegionOwner, RegionRef, RegionSpec, SliceCounts,
};
use crate::size_class::NO_CLASS;
use crate::sync::atomic::Ordering;
use crate::sync::Arc;

impl MapRegion for Arc<PoolShared> {
    fn map_region(&self, class: &ClassPool) -> Result<RegionRef, Shortage> {
        let (len, stride) = (class.region_size, class.stride);
        let slices = len / stride;
        if !self.reserve_mapping(class.index, len, slices) {
            return Err(Shortage::Budget { needed: len });
        }
        let guarded = stride != class.size;
        let memory = map_memory(
            self.backing.dir(),
            len,
            self.huge_pages && !guarded,
            self.prefault,
        )
        .and_then(|m| {
            if guarded {
                crate::diagnostics::guard::protect(&m.mapping, class.size, stride)?;
            }
            Ok(m)
        })
        .map_err(|e| {
            self.release_mapping(class.index, len, slices);
            Shortage::Map(e)
        })?;
        let id = self.next_region_id.fetch_add(1, Ordering::Relaxed);
        if let Some(decay) = self.purge_decay {
            if !self.purger_registered.swap(true, Ordering::Relaxed) {
                super::purge::register(self, decay);
            }
        }
        let spec = RegionSpec {
            class: class.index,
            slice_size: class.size,
            stride,
            id,
        };
        let region = into_ref(Region::new(Owner::new(self), spec, memory));
        // SAFETY: the region was just made and is not shared yet; it lives until destroyed.
        self.tell_observers_mapped(unsafe { region.get() });
        Ok(region)
    }
}

impl PoolShared {
    /// Maps a dedicated region for one segment of `len` bytes (budget first): born with its one
    /// slice out, unmapped when that segment is released.
    pub(super) fn map_dedicated(this: &Arc<Self>, len: usize) -> Result<RegionRef, Shortage> {
        if !this.reserve_mapping(NO_CLASS, len, 0) {
            return Err(Shortage::Budget { needed: len });
        }
        // One mmap and one munmap, nothing more: no huge-page alignment (an over-sized map and
        // trims) and no madvise for a mapping that lives as long as one segment.
        let memory = map_memory(this.backing.dir(), len, false, this.prefault).map_err(|e| {
            this.release_mapping(NO_CLASS, len, 0);
            Shortage::Map(e)
        })?;
        let spec = RegionSpec {
            class: NO_CLASS,
            slice_size: len.next_power_of_two(),
            stride: len.next_power_of_two(),
            id: this.next_region_id.fetch_add(1, Ordering::Relaxed),
        };
        let region = into_ref(Region::new(Owner::new(this), spec, memory));
        this.dedicated_segments.fetch_add(1, Ordering::Relaxed);
        this.dedicated_allocations.fetch_add(1, Ordering::Relaxed);
        this.dedicated_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(region)
    }

    /// Tells the observers that a region of a size class was mapped (`ClassPool::grow`, under
    /// the class lock, before any slice of it is handed out).
    fn tell_observers_mapped(&self, region: &Region) {
        let observers = self.observers.lock();
        if observers.is_empty() {
            return;
        }
        let info = region.info();
        for o in observers.iter() {
            // The observer reports and counts its own failure; the region just stays unknown
            // to it.
            let _ = o.mapped(&info);
        }
    }
}

impl RegionOwner for PoolShared {
    fn slice_counts(&self) -> &SliceCounts {
        &self.counts
    }

    fn pool_id(&self) -> u64 {
        self.id
    }

    fn diagnostics(&self) -> (bool, bool) {
        (
            self.diag.is_some(),
            self.diag.as_ref().is_some_and(|d| d.level().is_full()),
        )
    }

    unsafe fn region_has_room(&self, region: RegionRef) {
        // SAFETY: the caller's pin keeps the region readable.
        let class = unsafe { region.get() }.class;
        if let Some(class) = self.classes.get(class as usize) {
            // SAFETY: a region of that class, kept readable by the caller's pin.
            unsafe { class.on_room(region) };
        }
    }

    /// Tells the observers (`region::destroy`, with the memory still mapped). Dedicated mappings
    /// were never reported, so they are not here either.
    fn region_unmapping(&self, region: &Region) {
        if region.class == NO_CLASS {
            return;
        }
        let observers = self.observers.lock();
        if observers.is_empty() {
            return;
        }
        let info = region.info();
        for o in observers.iter() {
            o.unmapping(&info);
        }
    }

    fn region_unmapped(&self, region: &Region, len: usize) {
        if let Some(d) = &self.diag {
            d.forget_range(region.base(), len);
        }
        let class = region.class;
        let slices = if class == NO_CLASS {
            self.dedicated_segments.fetch_sub(1, Ordering::Relaxed);
            self.dedicated_bytes.fetch_sub(len, Ordering::Relaxed);
            self.dedicated_releases.fetch_add(1, Ordering::Relaxed);
            0
        } else {
            let c = &self.classes[class as usize];
            c.regions_unmapped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                target: "segpool",
                region = region.id,
                class = c.size,
                bytes = len,
                "region unmapped"
            );
            len / c.stride
        };
        self.release_mapping(class, len, slices);
    }
}
