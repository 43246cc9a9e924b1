//! The demo's records: generated from the seed and their number, encoded into segments and
//! decoded back, every length checked.

pub(super) fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

/// A generated record: small events, medium rows, large blobs.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// 60%: a fixed-size event.
    Event { index: u64, at_ns: u64, code: u32 },
    /// 30%: a row with a name and up to 64 values.
    Row {
        index: u64,
        name: String,
        values: Vec<i64>,
    },
    /// 10%: an opaque blob of 256 B to 8 KiB.
    Blob { index: u64, bytes: Vec<u8> },
}

/// splitmix64: a tiny, good-enough generator, so the same seed always gives the same records.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, index: u64) -> Self {
        Rng(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TAG_EVENT: u8 = 1;
const TAG_ROW: u8 = 2;
const TAG_BLOB: u8 = 3;
/// Every record starts with: total length (u32, header included), tag (u8), 3 zero bytes, and
/// its number (u64).
const RECORD_HEADER: usize = 16;

impl Record {
    /// Record number `index` of the stream of `seed`.
    pub fn generate(seed: u64, index: u64) -> Record {
        let mut r = Rng::new(seed, index);
        match r.below(10) {
            0..=5 => Record::Event {
                index,
                at_ns: r.next(),
                code: r.next() as u32,
            },
            6..=8 => {
                let name_len = 4 + r.below(37) as usize;
                let name = (0..name_len)
                    .map(|_| (b'a' + r.below(26) as u8) as char)
                    .collect();
                let values = (0..1 + r.below(64)).map(|_| r.next() as i64).collect();
                Record::Row {
                    index,
                    name,
                    values,
                }
            }
            _ => {
                let n = 256 + r.below(8 * 1024 - 256 + 1) as usize;
                let mut bytes = Vec::with_capacity(n + 8);
                while bytes.len() < n {
                    bytes.extend_from_slice(&r.next().to_le_bytes());
                }
                bytes.truncate(n);
                Record::Blob { index, bytes }
            }
        }
    }

    pub fn index(&self) -> u64 {
        match self {
            Record::Event { index, .. }
            | Record::Row { index, .. }
            | Record::Blob { index, .. } => *index,
        }
    }

    /// Bytes [`encode`](Self::encode) writes.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER
            + match self {
                Record::Event { .. } => 12,
                Record::Row { name, values, .. } => 2 + name.len() + 2 + 8 * values.len(),
                Record::Blob { bytes, .. } => 4 + bytes.len(),
            }
    }

    /// Writes the record into `out`, which is exactly [`encoded_len`](Self::encoded_len) bytes.
    pub fn encode(&self, out: &mut [u8]) {
        let len = self.encoded_len();
        debug_assert_eq!(out.len(), len);
        let tag = match self {
            Record::Event { .. } => TAG_EVENT,
            Record::Row { .. } => TAG_ROW,
            Record::Blob { .. } => TAG_BLOB,
        };
        out[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        out[4..8].copy_from_slice(&[tag, 0, 0, 0]);
        out[8..16].copy_from_slice(&self.index().to_le_bytes());
        let body = &mut out[RECORD_HEADER..];
        match self {
            Record::Event { at_ns, code, .. } => {
                body[0..8].copy_from_slice(&at_ns.to_le_bytes());
                body[8..12].copy_from_slice(&code.to_le_bytes());
            }
            Record::Row { name, values, .. } => {
                body[0..2].copy_from_slice(&(name.len() as u16).to_le_bytes());
                body[2..2 + name.len()].copy_from_slice(name.as_bytes());
                let at = 2 + name.len();
                body[at..at + 2].copy_from_slice(&(values.len() as u16).to_le_bytes());
                for (i, v) in values.iter().enumerate() {
                    let p = at + 2 + 8 * i;
                    body[p..p + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
            Record::Blob { bytes, .. } => {
                body[0..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
                body[4..].copy_from_slice(bytes);
            }
        }
    }

    /// Reads one record from the start of `buf`; returns it and its encoded length. Every length
    /// is checked: corrupt bytes give an `Err`, never a panic.
    pub fn decode(buf: &[u8]) -> Result<(Record, usize), String> {
        if buf.len() < RECORD_HEADER {
            return Err("truncated record header".into());
        }
        let len = le32(&buf[0..4]) as usize;
        if !(RECORD_HEADER..=buf.len()).contains(&len) || buf[5..8] != [0, 0, 0] {
            return Err(format!("corrupt record header (length {len})"));
        }
        let index = le64(&buf[8..16]);
        let body = &buf[RECORD_HEADER..len];
        let bad = || format!("record {index}: corrupt body");
        let rec = match buf[4] {
            TAG_EVENT if body.len() == 12 => Record::Event {
                index,
                at_ns: le64(&body[0..8]),
                code: le32(&body[8..12]),
            },
            TAG_ROW if body.len() >= 4 => {
                let n = u16::from_le_bytes([body[0], body[1]]) as usize;
                let name = body.get(2..2 + n).ok_or_else(bad)?;
                let name = String::from_utf8(name.to_vec()).map_err(|_| bad())?;
                let at = 2 + n;
                let k = body
                    .get(at..at + 2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
                    .ok_or_else(bad)?;
                if body.len() != at + 2 + 8 * k {
                    return Err(bad());
                }
                let values = body[at + 2..]
                    .chunks_exact(8)
                    .map(|c| le64(c) as i64)
                    .collect();
                Record::Row {
                    index,
                    name,
                    values,
                }
            }
            TAG_BLOB if body.len() >= 4 && le32(&body[0..4]) as usize == body.len() - 4 => {
                Record::Blob {
                    index,
                    bytes: body[4..].to_vec(),
                }
            }
            _ => return Err(bad()),
        };
        Ok((rec, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{HEADER, SEGMENT};

    #[test]
    fn records_round_trip_and_are_deterministic() {
        for i in 0..2_000 {
            let r = Record::generate(7, i);
            assert_eq!(r, Record::generate(7, i));
            let mut buf = vec![0u8; r.encoded_len()];
            r.encode(&mut buf);
            let (back, len) = Record::decode(&buf).unwrap();
            assert_eq!(len, buf.len());
            assert_eq!(back, r);
            assert!(len + HEADER <= SEGMENT, "a record must fit a fresh segment");
        }
    }

    #[test]
    fn corrupt_records_are_errors() {
        let r = Record::generate(7, 3);
        let mut buf = vec![0u8; r.encoded_len()];
        r.encode(&mut buf);
        for cut in 0..buf.len() {
            assert!(Record::decode(&buf[..cut]).is_err());
        }
        let mut bad = buf.clone();
        bad[4] = 9;
        assert!(Record::decode(&bad).is_err());
        let mut flipped = buf;
        *flipped.last_mut().unwrap() ^= 1;
        let (back, _) = Record::decode(&flipped).unwrap_or((Record::generate(7, 4), 0));
        assert_ne!(back, r, "a flipped byte must not compare equal");
    }
}
