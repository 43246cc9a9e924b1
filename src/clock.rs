//! The pool's clock: time since the pool was built, in nanoseconds that fit an atomic word (the
//! size classes keep the time they last mapped a region in one, for the empty-region grace
//! period).

/// Nanoseconds since the pool was built (for the empty-region grace period).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock(std::time::Instant);

impl Clock {
    pub(crate) fn new() -> Self {
        Self(std::time::Instant::now())
    }

    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
