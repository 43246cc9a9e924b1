//! The std `Read`, `Write` and `Seek` impls: positioned I/O at the handle's one cursor.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::{invalid, MappedFile, MAX_LEN};

impl Read for &MappedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut pos = self.cursor.lock();
        let n = self.read_at(buf, *pos)?;
        *pos += n as u64;
        Ok(n)
    }
}

impl Write for &MappedFile {
    /// Writes at the cursor, or with `O_APPEND` at the file's current end (also when another
    /// handle or process grew it), leaving the cursor after the bytes written, as `write(2)`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut pos = self.cursor.lock();
        let offset = if self.append && !buf.is_empty() {
            self.reserve_append(buf.len())?
        } else {
            *pos
        };
        let n = self.write_at(buf, offset)?;
        *pos = offset + n as u64;
        Ok(n)
    }

    /// Nothing is buffered: bytes are in the mapping once `write` returns. Durability is the
    /// sync mode's business (or `sync_all`).
    fn flush(&mut self) -> io::Result<()> {
        self.fail_fast()
    }
}

impl Seek for &MappedFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let mut cur = self.cursor.lock();
        let (base, delta) = match pos {
            SeekFrom::Start(n) => (n, 0),
            // The real end, as `lseek(SEEK_END)`: someone outside may have changed it.
            SeekFrom::End(d) => (self.refresh_len()?, d),
            SeekFrom::Current(d) => (*cur, d),
        };
        let new = base
            .checked_add_signed(delta)
            .filter(|&p| p <= MAX_LEN)
            .ok_or_else(|| {
                invalid(format!(
                    "seek to {base} {delta:+} is before the start or past the largest file size"
                ))
            })?;
        *cur = new;
        Ok(new)
    }
}

impl Read for MappedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for MappedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

impl Seek for MappedFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        (&*self).seek(pos)
    }
}
