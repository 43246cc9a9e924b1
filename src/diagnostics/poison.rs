//! The poison pattern written over released slices under `Diagnostics::Full`.

/// The byte a released slice is filled with. Not zero (fresh memory is zero, and a buffer the user
/// clears would look untouched) and not `0xff`; easy to spot in a hex dump.
pub(crate) const BYTE: u8 = 0xdb;

const WORD: u64 = u64::from_ne_bytes([BYTE; 8]);

/// Fills a slice that is being released.
pub(crate) fn fill(bytes: &mut [u8]) {
    bytes.fill(BYTE);
}

/// The offset of the first byte that is not poison, if any.
pub(crate) fn first_damaged(bytes: &[u8]) -> Option<usize> {
    // SAFETY: `u64` has no invalid bit patterns; `align_to` only splits at aligned boundaries.
    let (head, words, tail) = unsafe { bytes.align_to::<u64>() };
    if let Some(i) = head.iter().position(|&b| b != BYTE) {
        return Some(i);
    }
    if let Some(w) = words.iter().position(|&w| w != WORD) {
        let at = head.len() + w * 8;
        return bytes[at..at + 8]
            .iter()
            .position(|&b| b != BYTE)
            .map(|i| at + i);
    }
    let at = head.len() + words.len() * 8;
    tail.iter().position(|&b| b != BYTE).map(|i| at + i)
}

#[cfg(all(test, not(loom), not(shuttle)))]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_damaged_byte() {
        let mut v = vec![0u8; 4096 + 3];
        fill(&mut v);
        assert_eq!(first_damaged(&v), None);
        assert_eq!(first_damaged(&v[1..]), None);
        v[2049] = 7;
        assert_eq!(first_damaged(&v), Some(2049));
        assert_eq!(first_damaged(&v[1..]), Some(2048));
        v[4098] = 0;
        v[2049] = BYTE;
        assert_eq!(first_damaged(&v), Some(4098));
    }
}
