//! Size classes: which fixed slice size serves a request, how large each class's regions are, and
//! how many free slices a thread may keep cached per class.

use crate::{ErrorKind, Result};

/// The default classes: 4 KiB, 16 KiB, 64 KiB, 256 KiB, 1 MiB, and every power of two from 2 MiB
/// to 1 GiB (the large classes: regions of a few slices, one slice from 32 MiB up; see
/// `docs/design.md`, "Large classes"). Requests above 1 GiB get a dedicated mapping.
pub const DEFAULT_SIZE_CLASSES: [usize; 15] = [
    4096,
    16384,
    65536,
    262_144,
    1 << 20,
    2 << 20,
    4 << 20,
    8 << 20,
    16 << 20,
    32 << 20,
    64 << 20,
    128 << 20,
    256 << 20,
    512 << 20,
    1 << 30,
];

/// The smallest class: one page on the machines segpool targets, so every slice is page-aligned.
pub(crate) const MIN_CLASS: usize = 4096;

/// Regions are at least this large when the budget allows (one transparent huge page).
pub(crate) const MIN_REGION: usize = 2 << 20;
/// ... and at most this large by default, so an idle region pins little.
pub(crate) const MAX_DEFAULT_REGION: usize = 32 << 20;
/// Largest region a pool accepts (its free-slice metadata stays small).
pub(crate) const MAX_REGION: usize = 1 << 30;
/// Slices per region the default aims for.
pub(crate) const SLICES_PER_REGION: usize = 32;

/// Largest number of slices one thread may hold cached per class. 128: when one thread allocates
/// and another releases, the 4 KiB and 16 KiB classes take the batch path half as often as with 64
/// (docs/design.md, "Thread-cache bound").
pub(crate) const CACHE_MAX_SLICES: usize = 128;
/// Bytes one thread may hold cached per class (at least one slice is always allowed unless the
/// budget is small, see [`SizeClasses::cache_capacity`]). 4 MiB: when one thread allocates and
/// another releases, batches of 12 slices (256 KiB) instead of 6 brought that producer/consumer
/// row of `segpool bench` under the channel's cost plus 30 ns (docs/design.md); an idle thread
/// holds up to this much per class until its next call or exit.
pub(crate) const CACHE_MAX_BYTES: usize = 4 << 20;
/// What one thread may hold cached in all the classes above [`CACHE_MAX_BYTES`] of one pool.
/// Those classes cache one slice each, smallest class first, as long as their sizes add up to
/// within this bound; the classes past it are not cached (see
/// [`SizeClasses::cache_capacities`]). So the bound holds by construction, and the fast path
/// caches these classes like any other, with no count of the thread's cached bytes to keep.
/// 1 GiB: with the default classes one slice of every class from 8 MiB to 512 MiB (1016 MiB in
/// all); a 1 GiB slice goes straight back to its region, still without a system call.
pub(crate) const THREAD_LARGE_CACHE_BYTES: usize = 1 << 30;

/// Marks a size with no class: served by a dedicated mapping.
pub(crate) const NO_CLASS: u8 = u8::MAX;

/// The validated class table.
///
/// # Invariants
///
/// `sizes` is non-empty, strictly increasing, every entry a power of two `>= MIN_CLASS`.
/// `by_log2[b]` is the index of the smallest class `>= 1 << b`, or `NO_CLASS`.
#[derive(Debug, Clone)]
pub(crate) struct SizeClasses {
    sizes: Vec<usize>,
    by_log2: [u8; 65],
}

impl SizeClasses {
    pub(crate) fn new(sizes: &[usize]) -> Result<Self> {
        if sizes.is_empty() {
            return Err(ErrorKind::InvalidConfig(
                "size_classes: at least one class is needed".into(),
            )
            .into());
        }
        if sizes.len() > 32 {
            return Err(ErrorKind::InvalidConfig(format!(
                "size_classes: {} classes given, at most 32 are supported",
                sizes.len()
            ))
            .into());
        }
        for (i, &s) in sizes.iter().enumerate() {
            if !s.is_power_of_two() || s < MIN_CLASS {
                return Err(ErrorKind::InvalidConfig(format!(
                    "size_classes: {s} is not a power of two of at least {MIN_CLASS}"
                ))
                .into());
            }
            if s > MAX_REGION {
                return Err(ErrorKind::InvalidConfig(format!(
                    "size_classes: {s} is larger than the largest region ({} bytes); requests \
                     above the largest class are served by dedicated mappings",
                    MAX_REGION
                ))
                .into());
            }
            if i > 0 && s <= sizes[i - 1] {
                return Err(ErrorKind::InvalidConfig(format!(
                    "size_classes: {s} follows {}; classes must be strictly increasing",
                    sizes[i - 1]
                ))
                .into());
            }
        }
        let mut by_log2 = [NO_CLASS; 65];
        for (b, slot) in by_log2.iter_mut().enumerate().take(64) {
            let want = 1usize << b;
            if let Some(i) = sizes.iter().position(|&s| s >= want) {
                *slot = i as u8;
            }
        }
        Ok(Self {
            sizes: sizes.to_vec(),
            by_log2,
        })
    }

    /// The class serving `size` bytes (`size > 0`), or `None` when it exceeds the largest class.
    #[inline]
    pub(crate) fn class_of(&self, size: usize) -> Option<usize> {
        // ceil(log2(size)); size 1 → 0. Sizes above 2^63 land in slot 64, which is NO_CLASS.
        let b = (usize::BITS - (size - 1).leading_zeros()) as usize;
        let c = self.by_log2[b];
        (c != NO_CLASS).then_some(c as usize)
    }

    pub(crate) fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// The largest class: bigger requests get dedicated mappings.
    pub(crate) fn largest(&self) -> usize {
        *self.sizes.last().expect("non-empty")
    }

    /// The region size for class `size`.
    ///
    /// * An explicit `region_size` is used as given, rounded down to a multiple of the class; a
    ///   class larger than it gets regions of one slice.
    /// * Otherwise `SLICES_PER_REGION` slices, clamped to `MIN_REGION..=MAX_DEFAULT_REGION`, and
    ///   at least one slice: the large classes get regions of 16 slices (2 MiB) down to one slice
    ///   (32 MiB and up), so a large class never maps much more than it was asked for.
    /// * Under a budget, a region never exceeds a quarter of it (rounded down to a power of two,
    ///   at least one slice), so a small budget stays usable: a 4 MiB budget still serves four
    ///   1 MiB segments, or a mix of classes, instead of being spent on one idle region.
    pub(crate) fn region_size(
        size: usize,
        explicit: Option<usize>,
        budget: Option<usize>,
    ) -> usize {
        let mut r = match explicit {
            Some(r) if r >= size => r / size * size,
            // A class larger than the explicit region size: regions of one slice.
            Some(_) => size,
            None => (size * SLICES_PER_REGION).clamp(MIN_REGION, MAX_DEFAULT_REGION),
        };
        if let Some(b) = budget {
            let quarter = (b / 4).max(1);
            let cap = if quarter.is_power_of_two() {
                quarter
            } else {
                quarter.next_power_of_two() / 2
            };
            r = r.min(cap.max(size));
        }
        r.max(size)
    }

    /// How many free slices of each class (`sizes`, strictly increasing) one thread may keep
    /// cached: [`cache_capacity`](Self::cache_capacity) of each, except that the classes above
    /// `CACHE_MAX_BYTES` that it would cache get one slice each only while their sizes, smallest
    /// first, add up to within [`THREAD_LARGE_CACHE_BYTES`], and none past that. What a thread
    /// holds cached in those classes is then within the bound whatever it does.
    pub(crate) fn cache_capacities(sizes: &[usize], budget: Option<usize>) -> Vec<usize> {
        let mut large = 0usize;
        sizes
            .iter()
            .map(|&size| {
                let cap = Self::cache_capacity(size, budget);
                if size <= CACHE_MAX_BYTES || cap == 0 {
                    cap
                } else if large + size <= THREAD_LARGE_CACHE_BYTES {
                    large += size;
                    1
                } else {
                    0
                }
            })
            .collect()
    }

    /// How many free slices of class `size` one thread may keep cached, the class alone.
    ///
    /// `min(CACHE_MAX_SLICES, CACHE_MAX_BYTES / size)`, at least one (above `CACHE_MAX_BYTES`
    /// the classes together are bounded too, see [`cache_capacities`](Self::cache_capacities));
    /// under a budget also at most `budget / (16 * size)` (possibly zero: the class is then not
    /// cached), so caches can never hold a large share of a tight budget.
    pub(crate) fn cache_capacity(size: usize, budget: Option<usize>) -> usize {
        let mut cap = (CACHE_MAX_BYTES / size).clamp(1, CACHE_MAX_SLICES);
        if let Some(b) = budget {
            cap = cap.min(b / 16 / size);
        }
        cap
    }
}

#[cfg(all(test, not(loom), not(shuttle)))]
mod tests {
    use super::*;

    #[test]
    fn lookup_picks_smallest_fitting_class() {
        let c = SizeClasses::new(&DEFAULT_SIZE_CLASSES).unwrap();
        assert_eq!(c.class_of(1), Some(0));
        assert_eq!(c.class_of(4096), Some(0));
        assert_eq!(c.class_of(4097), Some(1));
        assert_eq!(c.class_of(10_000), Some(1));
        assert_eq!(c.class_of(16384), Some(1));
        assert_eq!(c.class_of(1 << 20), Some(4));
        assert_eq!(c.class_of((1 << 20) + 1), Some(5));
        assert_eq!(c.class_of(1 << 30), Some(14));
        assert_eq!(c.class_of((1 << 30) + 1), None);
        assert_eq!(c.class_of(usize::MAX), None);
    }

    #[test]
    fn region_sizes_adapt_to_budget() {
        assert_eq!(SizeClasses::region_size(4096, None, None), 2 << 20);
        assert_eq!(SizeClasses::region_size(1 << 20, None, None), 32 << 20);
        assert_eq!(
            SizeClasses::region_size(1 << 20, None, Some(4 << 20)),
            1 << 20
        );
        assert_eq!(SizeClasses::region_size(4096, Some(3 << 20), None), 3 << 20);
        assert_eq!(
            SizeClasses::region_size(1 << 20, None, Some(6 << 20)),
            1 << 20
        );
    }

    #[test]
    fn large_classes_get_regions_of_few_slices_and_small_caches() {
        assert_eq!(SizeClasses::region_size(2 << 20, None, None), 32 << 20);
        assert_eq!(SizeClasses::region_size(16 << 20, None, None), 32 << 20);
        assert_eq!(SizeClasses::region_size(64 << 20, None, None), 64 << 20);
        assert_eq!(SizeClasses::region_size(1 << 30, None, None), 1 << 30);
        // A small budget: one slice per region.
        assert_eq!(
            SizeClasses::region_size(2 << 20, None, Some(4 << 20)),
            2 << 20
        );
        // An explicit region size smaller than the class: one slice.
        assert_eq!(
            SizeClasses::region_size(8 << 20, Some(1 << 20), None),
            8 << 20
        );
        assert_eq!(SizeClasses::cache_capacity(2 << 20, None), 2);
        assert_eq!(SizeClasses::cache_capacity(64 << 20, None), 1);
        assert_eq!(SizeClasses::cache_capacity(1 << 30, None), 1);
        assert_eq!(SizeClasses::cache_capacity(2 << 20, Some(16 << 20)), 0);
    }

    #[test]
    fn the_large_classes_together_stay_within_the_thread_bound() {
        const MIB: usize = 1 << 20;
        let caps = SizeClasses::cache_capacities(&DEFAULT_SIZE_CLASSES, None);
        let by_size: Vec<(usize, usize)> = DEFAULT_SIZE_CLASSES.iter().copied().zip(caps).collect();
        // Up to 4 MiB: the class's own bound.
        for &(size, cap) in by_size.iter().filter(|c| c.0 <= CACHE_MAX_BYTES) {
            assert_eq!(cap, SizeClasses::cache_capacity(size, None), "{size}");
        }
        // Above it: one slice from 8 MiB to 512 MiB (1016 MiB in all), none of 1 GiB.
        let large: Vec<_> = by_size.iter().filter(|c| c.0 > CACHE_MAX_BYTES).collect();
        for &&(size, cap) in &large {
            assert_eq!(cap, usize::from(size <= 512 * MIB), "{size}");
        }
        let held: usize = large.iter().map(|c| c.0 * c.1).sum();
        assert_eq!(held, 1016 * MIB);
        assert!(held <= THREAD_LARGE_CACHE_BYTES);
        // Smallest first: a class that does not fit leaves the room to none after it.
        let caps = SizeClasses::cache_capacities(&[8 * MIB, 1000 * MIB, 1020 * MIB, 1 << 30], None);
        assert_eq!(caps, [1, 1, 0, 0]);
        // Under a budget a class the budget leaves uncached takes no room.
        let caps = SizeClasses::cache_capacities(&[8 * MIB, 512 * MIB], Some(4 << 30));
        assert_eq!(caps, [1, 0]);
    }
}
