//! The bit layout of the 64-bit handles that cross the boundary.
//!
//! ```text
//!            63  62 ........ 48  47 ................ 24  23 ................ 0
//! pool:     [ 1 | pool index 15 | serial (48 bits, bits 47..0)                  ]
//! segment:  [ 0 | pool index 15 | slot index 24        | generation 24          ]
//! ```
//!
//! * Bit 63 says which kind a handle is, so a pool handle passed where a segment handle belongs
//!   (or the reverse) is refused by name instead of being looked up as the other kind.
//! * The pool index (1..=32767) is the pool's entry in the global pool table; 0 is never used, so
//!   the value 0 is never a valid handle of either kind (it is the null handle).
//! * A pool's serial comes from a process-wide counter that never repeats (48 bits: one pool a
//!   nanosecond for three days before it could wrap), so a freed pool's handle is refused forever,
//!   even after its index is reused.
//! * A segment's slot index picks its entry in the pool's slot table (up to 2^24 live segments a
//!   pool). The slot's generation is bumped on every release, so a handle whose segment was
//!   released no longer matches. A slot's generation would have to wrap (2^24 releases of that one
//!   slot, which is reused first-in first-out) for a stale handle to match again.
//! * When a pool index is reused, the new pool's slots start at the generation after the highest
//!   one the previous pool at that index reached, so a segment handle kept from the freed pool is
//!   refused by the new one too (within the same wrap-around bound).

/// Bits of the pool index.
pub(crate) const INDEX_BITS: u32 = 15;
/// Bits of a segment's slot index.
pub(crate) const SLOT_BITS: u32 = 24;
/// Bits of a slot's generation.
pub(crate) const GEN_BITS: u32 = 24;
/// Bits of a pool's serial.
pub(crate) const SERIAL_BITS: u32 = 48;

/// The highest pool index (the pool table holds at most this many live pools).
pub(crate) const MAX_POOL_INDEX: u16 = (1 << INDEX_BITS) - 1;
/// Slots a pool's table can hold.
pub(crate) const MAX_SLOTS: usize = 1 << SLOT_BITS;
/// Generations wrap at this mask.
pub(crate) const GEN_MASK: u32 = (1 << GEN_BITS) - 1;
/// Serials stay below this.
pub(crate) const SERIAL_LIMIT: u64 = 1 << SERIAL_BITS;

const KIND_POOL: u64 = 1 << 63;
const INDEX_SHIFT: u32 = 48;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

/// The handle of pool `index` with `serial`.
pub(crate) fn pool_handle(index: u16, serial: u64) -> u64 {
    debug_assert!(index != 0 && index <= MAX_POOL_INDEX && serial < SERIAL_LIMIT);
    KIND_POOL | u64::from(index) << INDEX_SHIFT | serial
}

/// The handle of the segment in `slot` of pool `index`, at `generation`.
pub(crate) fn segment_handle(index: u16, slot: u32, generation: u32) -> u64 {
    debug_assert!(index != 0 && index <= MAX_POOL_INDEX && (slot as usize) < MAX_SLOTS);
    u64::from(index) << INDEX_SHIFT | u64::from(slot) << GEN_BITS | u64::from(generation & GEN_MASK)
}

/// What a value passed as a pool handle says about itself (before the pool table is asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolBits {
    Null,
    /// Bit 63 is clear: this is shaped like a segment handle.
    NotAPool,
    Pool {
        index: u16,
        serial: u64,
    },
}

/// What a value passed as a segment handle says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegmentBits {
    Null,
    /// Bit 63 is set: this is shaped like a pool handle.
    NotASegment,
    Segment {
        index: u16,
        slot: u32,
        generation: u32,
    },
}

pub(crate) fn decode_pool(h: u64) -> PoolBits {
    if h == 0 {
        PoolBits::Null
    } else if h & KIND_POOL == 0 {
        PoolBits::NotAPool
    } else {
        PoolBits::Pool {
            index: ((h >> INDEX_SHIFT) & INDEX_MASK) as u16,
            serial: h & (SERIAL_LIMIT - 1),
        }
    }
}

pub(crate) fn decode_segment(h: u64) -> SegmentBits {
    if h == 0 {
        SegmentBits::Null
    } else if h & KIND_POOL != 0 {
        SegmentBits::NotASegment
    } else {
        SegmentBits::Segment {
            index: ((h >> INDEX_SHIFT) & INDEX_MASK) as u16,
            slot: ((h >> GEN_BITS) & ((1 << SLOT_BITS) - 1)) as u32,
            generation: (h & u64::from(GEN_MASK)) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_kinds() {
        let p = pool_handle(MAX_POOL_INDEX, SERIAL_LIMIT - 1);
        assert_eq!(
            decode_pool(p),
            PoolBits::Pool {
                index: MAX_POOL_INDEX,
                serial: SERIAL_LIMIT - 1
            }
        );
        assert_eq!(decode_segment(p), SegmentBits::NotASegment);
        let s = segment_handle(1, (MAX_SLOTS - 1) as u32, GEN_MASK);
        assert_eq!(
            decode_segment(s),
            SegmentBits::Segment {
                index: 1,
                slot: (MAX_SLOTS - 1) as u32,
                generation: GEN_MASK
            }
        );
        assert_eq!(decode_pool(s), PoolBits::NotAPool);
        assert_eq!(decode_pool(0), PoolBits::Null);
        assert_eq!(decode_segment(0), SegmentBits::Null);
        // The smallest segment handle is not 0: index 0 is never issued.
        assert_ne!(segment_handle(1, 0, 0), 0);
    }
}
