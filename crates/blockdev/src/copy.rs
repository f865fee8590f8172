//! Whole-file copies that cost only the data: a reflink where the filesystem shares extents, else
//! the source's data regions only, so holes stay holes.

use rustix::fs::SeekFrom;

use crate::{BlockDev, Cancel, Error, FileDev, Op, Result};

/// How [`FileDev::copy_from`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// The destination shares the source's extents (`FICLONE`: btrfs, XFS, bcachefs): no data
    /// was copied and no space is used until either file changes.
    Reflink,
    /// The source's data regions were copied (`SEEK_DATA`/`SEEK_HOLE`), skipping any MiB of
    /// zeros, so the destination is as sparse as the source or sparser.
    Sparse,
}

/// Bytes per read while copying.
const CHUNK: u64 = 1 << 20;

impl FileDev {
    /// Make this file (opened read-write, empty) a copy of `src`: a reflink when the filesystem
    /// offers one, else a sparse copy of `src`'s data. `cancel` is checked per MiB copied; a
    /// cancelled copy fails with [`crate::Cancelled`] inside [`Error::Io`] and leaves this file
    /// partly written (callers write into an [`crate::AtomicFile`], removed on drop).
    pub fn copy_from(&self, src: &FileDev, cancel: &Cancel) -> Result<CopyMethod> {
        if self.read_only {
            return Err(Error::ReadOnly { op: Op::Write });
        }
        let len = src.len();
        if rustix::fs::ioctl_ficlone(&self.file, &src.file).is_ok() {
            let mut l = self.len.write().unwrap_or_else(|p| p.into_inner());
            *l = len;
            return Ok(CopyMethod::Reflink);
        }
        self.set_len(0)?;
        self.set_len(len)?;
        let mut buf = vec![0u8; CHUNK as usize];
        let mut pos = 0;
        while pos < len {
            // The next data region: [data, hole). A filesystem without SEEK_DATA (EINVAL) has
            // everything as data; ENXIO means no data past `pos`.
            let data = match rustix::fs::seek(&src.file, SeekFrom::Data(pos)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => break,
                Err(_) => pos,
            };
            let hole = rustix::fs::seek(&src.file, SeekFrom::Hole(data))
                .unwrap_or(len)
                .min(len);
            if hole <= data {
                break;
            }
            let mut at = data;
            while at < hole {
                if cancel.is_cancelled() {
                    let cancelled = std::io::Error::other(crate::Cancelled);
                    return Err(src.io(Op::Read, at, 0, cancelled));
                }
                let n = (hole - at).min(CHUNK) as usize;
                src.read_at(&mut buf[..n], at)?;
                if buf[..n].iter().any(|&b| b != 0) {
                    self.write_at(&buf[..n], at)?;
                }
                at += n as u64;
            }
            pos = hole;
        }
        Ok(CopyMethod::Sparse)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn copies_data_keeps_holes_and_stops_when_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let f = std::fs::File::create(&a).unwrap();
        f.set_len(64 << 20).unwrap();
        drop(f);
        let src = FileDev::open_read_write(&a).unwrap();
        src.write_at(b"head", 0).unwrap();
        src.write_at(&vec![7u8; 3 << 20], 20 << 20).unwrap();
        src.write_at(b"tail", (64 << 20) - 4).unwrap();
        std::fs::File::create(&b).unwrap();
        let dst = FileDev::open_read_write(&b).unwrap();
        let how = dst.copy_from(&src, &Cancel::new()).unwrap();
        assert_eq!(dst.len(), 64 << 20);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        if how == CopyMethod::Sparse {
            let used = std::fs::metadata(&b).unwrap().blocks() * 512;
            assert!(used <= 8 << 20, "{used} bytes allocated for 3 MiB of data");
        }
        // Read-only destinations are refused; a tripped cancel stops a sparse copy.
        let ro = FileDev::open_read_only(&b).unwrap();
        assert!(matches!(
            ro.copy_from(&src, &Cancel::new()),
            Err(Error::ReadOnly { .. })
        ));
        let cancel = Cancel::new();
        cancel.cancel();
        std::fs::File::create(&b).unwrap();
        let dst = FileDev::open_read_write(&b).unwrap();
        if let Err(e) = dst.copy_from(&src, &cancel) {
            assert_eq!(e.kind(), crate::ErrorKind::Cancelled, "{e}");
        }
    }
}
