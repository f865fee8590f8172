//! The byte storage an image lives in, and recognising image formats by their magic.

use std::sync::Arc;

use kiln_blockdev::{BlockDev, FileDev, MemDev};

use crate::header::MAGIC;

/// Byte storage an image lives in: a block device that can also grow.
pub trait Storage: BlockDev {
    /// Write `buf` at `offset`, extending the storage when the write ends past it.
    fn write_at_grow(&self, buf: &[u8], offset: u64) -> kiln_blockdev::Result<()>;
}

impl Storage for FileDev {
    fn write_at_grow(&self, buf: &[u8], offset: u64) -> kiln_blockdev::Result<()> {
        FileDev::write_at_grow(self, buf, offset)
    }
}

impl Storage for MemDev {
    fn write_at_grow(&self, buf: &[u8], offset: u64) -> kiln_blockdev::Result<()> {
        let end = offset as usize + buf.len();
        if end as u64 > self.len() {
            self.resize(end);
        }
        self.write_at(buf, offset)
    }
}

impl<T: Storage + ?Sized> Storage for Arc<T> {
    fn write_at_grow(&self, buf: &[u8], offset: u64) -> kiln_blockdev::Result<()> {
        (**self).write_at_grow(buf, offset)
    }
}

/// The format of a disk image kiln does not read, recognised by its magic (as `qemu-img` probes
/// them), with a note on converting it: `None` for anything else. Reads the first 512 bytes.
pub fn foreign_format(dev: &dyn BlockDev) -> Option<(&'static str, &'static str)> {
    let mut head = [0u8; 512];
    let n = usize::try_from(dev.len()).map_or(head.len(), |l| l.min(head.len()));
    dev.read_at(&mut head[..n], 0).ok()?;
    let head = &head[..n];
    let le32 = |at: usize| {
        head.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    const NO_NOTE: &str = "";
    let found = if head.starts_with(b"KDMV") {
        ("VMDK (sparse)", NO_NOTE)
    } else if head.starts_with(b"# Disk DescriptorFile") {
        (
            "VMDK descriptor",
            " (name the descriptor, with its extents beside it)",
        )
    } else if head.starts_with(b"vhdxfile") {
        ("VHDX", NO_NOTE)
    } else if head.starts_with(b"conectix") {
        ("VHD (vpc)", NO_NOTE)
    } else if le32(64) == Some(0xbeda_107f) {
        ("VDI", NO_NOTE)
    } else if head.starts_with(b"QFI\xfb") {
        return None;
    } else if head.starts_with(b"QED\0") {
        ("QED", NO_NOTE)
    } else if head.starts_with(b"WithoutFreeSpace") || head.starts_with(b"WithouFreSpacExt") {
        ("Parallels", NO_NOTE)
    } else if head.starts_with(b"Bochs Virtual HD Image") {
        ("Bochs", NO_NOTE)
    } else if head.starts_with(b"#!/bin/sh\n#V2.0 Format\n") {
        ("cloop", NO_NOTE)
    } else if head.starts_with(b"LUKS\xba\xbe") {
        (
            "LUKS-encrypted",
            " (it must be opened with its key: `qemu-img convert --object secret,… --image-opts …`)",
        )
    } else {
        return None;
    };
    Some(found)
}

/// The compression of a file that is a compressed stream rather than a disk image, recognised by
/// its magic: `(name, tool)`, e.g. `("xz", "xz")`. `None` for anything else.
pub fn compressed_format(dev: &dyn BlockDev) -> Option<(&'static str, &'static str)> {
    let mut head = [0u8; 6];
    let n = usize::try_from(dev.len()).map_or(head.len(), |l| l.min(head.len()));
    dev.read_at(&mut head[..n], 0).ok()?;
    let head = &head[..n];
    if head.starts_with(b"\xfd7zXZ\0") {
        Some(("xz", "xz"))
    } else if head.starts_with(b"\x1f\x8b") {
        Some(("gzip", "gzip"))
    } else if head.starts_with(b"\x28\xb5\x2f\xfd") {
        Some(("zstd", "zstd"))
    } else if head.starts_with(b"BZh") && head.get(3).is_some_and(|d| (b'1'..=b'9').contains(d)) {
        Some(("bzip2", "bzip2"))
    } else {
        None
    }
}

/// Whether the file at `dev` starts with the qcow2 magic.
pub fn is_qcow2(dev: &dyn BlockDev) -> bool {
    let mut m = [0u8; 4];
    dev.len() >= 4 && dev.read_at(&mut m, 0).is_ok() && u32::from_be_bytes(m) == MAGIC
}
