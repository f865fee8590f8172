//! The `Read + Write + Seek` view of a block device that the FAT driver works through.

use std::io::{self, Read, Seek, SeekFrom, Write};

use kiln_blockdev::BlockDev;

/// Positioned I/O on the first `len` bytes of `dev` (the volume): reads are short at the end,
/// writes past it fail, and a read-only view refuses every write. Nothing is buffered, so the
/// device holds every write as soon as it returns.
pub(crate) struct DevIo<'d> {
    dev: &'d dyn BlockDev,
    len: u64,
    pos: u64,
    writable: bool,
}

impl<'d> DevIo<'d> {
    pub(crate) fn new(dev: &'d dyn BlockDev, len: u64, writable: bool) -> Self {
        DevIo {
            dev,
            len,
            pos: 0,
            writable,
        }
    }
}

impl Read for DevIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let n = (self.len - self.pos).min(buf.len() as u64) as usize;
        self.dev
            .read_at(&mut buf[..n], self.pos)
            .map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for DevIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the volume is open read-only",
            ));
        }
        let end = self.pos.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(io::Error::other(format!(
                "write of {} bytes at {} past the end of the volume ({} bytes)",
                buf.len(),
                self.pos,
                self.len
            )));
        }
        self.dev.write_at(buf, self.pos).map_err(io::Error::other)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    /// Nothing is buffered here; [`crate::Volume::close`] flushes the device once.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for DevIo<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let n = new.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start or overflow",
            )
        })?;
        self.pos = n;
        Ok(n)
    }
}
