//! The setups of the random sequences, and the reference each is compared with: `std::fs::File`
//! handles on a second file, or an in-memory model.

use super::*;

/// splitmix64: a small, seedable generator, enough to pick operations.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub(super) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One configuration of the suite.
#[derive(Clone, Copy, Debug)]
pub(super) struct Setup {
    pub(super) name: &'static str,
    /// Window size in pages for the handles that use windows (`None`: whole-file mappings).
    pub(super) window: Option<u64>,
    /// Two handles on the file (the second one windowed if `window` is set, the first whole).
    pub(super) two: bool,
    /// A writer outside segpool changes the file between operations.
    pub(super) outside: bool,
    /// Opened with `append(true)`.
    pub(super) append: bool,
    /// Copy-on-write, compared with an in-memory model.
    pub(super) cow: bool,
}

pub(super) const SETUPS: &[Setup] = &[
    Setup {
        name: "whole",
        window: None,
        two: false,
        outside: false,
        append: false,
        cow: false,
    },
    Setup {
        name: "windowed",
        window: Some(1),
        two: false,
        outside: false,
        append: false,
        cow: false,
    },
    Setup {
        name: "two handles",
        window: None,
        two: true,
        outside: false,
        append: false,
        cow: false,
    },
    Setup {
        name: "two handles, one windowed",
        window: Some(2),
        two: true,
        outside: false,
        append: false,
        cow: false,
    },
    Setup {
        name: "writer outside",
        window: None,
        two: false,
        outside: true,
        append: false,
        cow: false,
    },
    Setup {
        name: "writer outside, windowed",
        window: Some(1),
        two: false,
        outside: true,
        append: false,
        cow: false,
    },
    Setup {
        name: "append, writer outside",
        window: None,
        two: true,
        outside: true,
        append: true,
        cow: false,
    },
    Setup {
        name: "copy-on-write",
        window: None,
        two: false,
        outside: false,
        append: false,
        cow: true,
    },
];

/// What the reference side is: `std::fs::File` handles on a second file, or (copy-on-write) an
/// in-memory model.
pub(super) enum Reference {
    Std {
        /// One per handle of ours, with its own cursor (and `O_APPEND` if ours has it).
        handles: Vec<File>,
        /// Positioned writes: POSIX `pwrite` keeps its offset, which is what `write_at` does;
        /// std on Linux appends instead when the descriptor has `O_APPEND` (a documented
        /// difference), so positioned writes go through a descriptor without it.
        positioned: File,
    },
    Model {
        bytes: Vec<u8>,
        cursor: u64,
    },
}

pub(super) type Outcome = Result<u64, io::ErrorKind>;

pub(super) fn outcome<T: TryInto<u64>>(r: io::Result<T>) -> Outcome
where
    T::Error: std::fmt::Debug,
{
    r.map(|v| v.try_into().unwrap()).map_err(|e| e.kind())
}

pub(super) const MAX_LEN: u64 = i64::MAX as u64;

impl Reference {
    pub(super) fn read_at(&mut self, h: usize, buf: &mut [u8], off: u64) -> Outcome {
        match self {
            Reference::Std { handles, .. } => outcome(handles[h].read_at(buf, off)),
            Reference::Model { bytes, .. } => model_read(bytes, buf, off),
        }
    }
    pub(super) fn read(&mut self, h: usize, buf: &mut [u8]) -> Outcome {
        match self {
            Reference::Std { handles, .. } => outcome(handles[h].read(buf)),
            Reference::Model { bytes, cursor } => {
                let n = model_read(bytes, buf, *cursor)?;
                *cursor += n;
                Ok(n)
            }
        }
    }
    pub(super) fn read_exact(&mut self, h: usize, buf: &mut [u8]) -> Outcome {
        match self {
            Reference::Std { handles, .. } => outcome(handles[h].read_exact(buf).map(|()| 0u64)),
            Reference::Model { bytes, cursor } => {
                let n = model_read(bytes, buf, *cursor)?;
                *cursor += n;
                if n < buf.len() as u64 {
                    Err(io::ErrorKind::UnexpectedEof)
                } else {
                    Ok(0)
                }
            }
        }
    }
    pub(super) fn write_at(&mut self, _h: usize, data: &[u8], off: u64) -> Outcome {
        match self {
            Reference::Std { positioned, .. } => outcome(positioned.write_at(data, off)),
            Reference::Model { bytes, .. } => model_write(bytes, data, off),
        }
    }
    pub(super) fn write(&mut self, h: usize, data: &[u8]) -> Outcome {
        match self {
            Reference::Std { handles, .. } => outcome(handles[h].write(data)),
            Reference::Model { bytes, cursor } => {
                let r = model_write(bytes, data, *cursor);
                if let Ok(n) = r {
                    *cursor += n;
                }
                r
            }
        }
    }
    pub(super) fn write_all(&mut self, h: usize, data: &[u8]) -> Outcome {
        match self {
            Reference::Std { handles, .. } => outcome(handles[h].write_all(data).map(|()| 0u64)),
            Reference::Model { .. } => self.write(h, data).map(|_| 0),
        }
    }
    pub(super) fn seek(&mut self, h: usize, pos: SeekFrom) -> Outcome {
        match self {
            Reference::Std { handles, .. } => outcome(handles[h].seek(pos)),
            Reference::Model { bytes, cursor } => {
                let (base, d) = match pos {
                    SeekFrom::Start(n) => (n, 0),
                    SeekFrom::End(d) => (bytes.len() as u64, d),
                    SeekFrom::Current(d) => (*cursor, d),
                };
                match base.checked_add_signed(d).filter(|&p| p <= MAX_LEN) {
                    Some(p) => {
                        *cursor = p;
                        Ok(p)
                    }
                    None => Err(io::ErrorKind::InvalidInput),
                }
            }
        }
    }
    pub(super) fn set_len(&mut self, h: usize, n: u64) -> Outcome {
        match self {
            Reference::Std { handles, .. } => outcome(handles[h].set_len(n).map(|()| 0u64)),
            // A copy-on-write handle never changes the file's length.
            Reference::Model { .. } => Err(io::ErrorKind::Unsupported),
        }
    }
    pub(super) fn sync(&mut self) -> Outcome {
        match self {
            // `fsync` of a regular file succeeds on a healthy disk; the reference skips it (it
            // costs milliseconds on a journalling filesystem).
            Reference::Std { .. } | Reference::Model { .. } => Ok(0),
        }
    }
    pub(super) fn contents(&self, path: &Path) -> Vec<u8> {
        match self {
            Reference::Std { .. } => std::fs::read(path).unwrap(),
            Reference::Model { bytes, .. } => bytes.clone(),
        }
    }
}

/// As `pread`: a range past `off_t` is refused, a read past the end is `Ok(0)`.
pub(super) fn model_read(bytes: &[u8], buf: &mut [u8], off: u64) -> Outcome {
    if off
        .checked_add(buf.len() as u64)
        .is_none_or(|end| end > MAX_LEN)
    {
        return Err(io::ErrorKind::InvalidInput);
    }
    if off >= bytes.len() as u64 {
        return Ok(0);
    }
    let n = buf.len().min(bytes.len() - off as usize);
    buf[..n].copy_from_slice(&bytes[off as usize..off as usize + n]);
    Ok(n as u64)
}

/// A copy-on-write handle's write: in place only (it cannot grow the file).
pub(super) fn model_write(bytes: &mut [u8], data: &[u8], off: u64) -> Outcome {
    match off.checked_add(data.len() as u64) {
        Some(end) if end <= MAX_LEN => {
            if data.is_empty() {
                Ok(0)
            } else if end > bytes.len() as u64 {
                Err(io::ErrorKind::Unsupported)
            } else {
                bytes[off as usize..end as usize].copy_from_slice(data);
                Ok(data.len() as u64)
            }
        }
        _ => Err(io::ErrorKind::InvalidInput),
    }
}
