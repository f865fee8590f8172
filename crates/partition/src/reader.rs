//! Bounded reads of the device: the `Read + Seek` adapter for the table parsers, and little-endian
//! field access.

use std::io::{self, Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};

use kiln_blockdev::BlockDev;

use crate::{Error, Result};

/// A `Read + Seek` view of a block device for the table parsers. Reads are short at the end of the
/// device (like a file), never past it.
#[derive(Debug)]
pub struct DevReader<'a, D: ?Sized> {
    dev: &'a D,
    pos: u64,
}

impl<'a, D: BlockDev + ?Sized> DevReader<'a, D> {
    /// A reader positioned at byte 0 of `dev`.
    pub fn new(dev: &'a D) -> Self {
        Self { dev, pos: 0 }
    }
}

impl<D: BlockDev + ?Sized> Read for DevReader<'_, D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.dev.len();
        if self.pos >= size {
            return Ok(0);
        }
        let n = (size - self.pos).min(buf.len() as u64) as usize;
        self.dev
            .read_at(&mut buf[..n], self.pos)
            .map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<D: BlockDev + ?Sized> Seek for DevReader<'_, D> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let size = self.dev.len();
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(n) => {
                self.pos = n;
                Ok(n)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before start or overflow",
            )),
        }
    }
}

/// Run a third-party table parser on a [`DevReader`] over `dev`; a panic inside it (on malformed
/// input) becomes [`Error::ParserPanic`] naming the device.
pub(crate) fn parse_guarded<'d, D: BlockDev + ?Sized, T>(
    dev: &'d D,
    device: &str,
    parser: &'static str,
    parse: impl FnOnce(&mut DevReader<'d, D>) -> T,
) -> Result<T> {
    let mut reader = DevReader::new(dev);
    catch_unwind(AssertUnwindSafe(|| parse(&mut reader))).map_err(|_| Error::ParserPanic {
        device: device.to_owned(),
        parser,
    })
}

fn read_exact<D: BlockDev + ?Sized>(
    dev: &D,
    device: &str,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    dev.read_at(&mut buf, offset)
        .map_err(|source| Error::Read {
            device: device.to_owned(),
            offset,
            len: len as u64,
            source,
        })?;
    Ok(buf)
}

/// Read up to `len` bytes at `offset`, fewer (or none) at the end of the device.
pub(crate) fn read_upto<D: BlockDev + ?Sized>(
    dev: &D,
    device: &str,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>> {
    let size = dev.len();
    if offset >= size {
        return Ok(Vec::new());
    }
    let n = (size - offset).min(len as u64) as usize;
    read_exact(dev, device, offset, n)
}

pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use kiln_blockdev::MemDev;

    #[test]
    fn reader_is_short_at_end() {
        let d = MemDev::from_vec(vec![1, 2, 3]);
        let mut r = DevReader::new(&d);
        r.seek(SeekFrom::Start(1)).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        assert_eq!(r.read(&mut buf).unwrap(), 0);
        assert!(r.seek(SeekFrom::Current(-10)).is_err());
    }
}
