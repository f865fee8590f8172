//! What a scan finds: the table kind, the partitions with their types and filesystems, the choice
//! of the root filesystem, and the window over one partition.

use std::fmt;

use kiln_blockdev::{BlockDev, SliceDev};

use crate::{Error, ROOT_LABEL, Result};

/// Which kind of table describes the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// A GUID partition table (UEFI spec, chapter 5), behind a protective MBR.
    Gpt,
    /// A DOS/MBR table: up to four primary entries, logical partitions in an extended one.
    Mbr,
    /// No partition table: a filesystem occupies the whole device (partition number 0).
    None,
}

/// What a partition holds, found by probing its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    /// An ext superblock (magic 0xEF53 at +1024+0x38) with no journal and only features ext2/3
    /// know.
    Ext2,
    /// An ext superblock with a journal (`has_journal`) and only features ext3 knows.
    Ext3,
    /// An ext superblock with any incompat or ro_compat feature ext3 does not know (extents,
    /// 64bit, flex_bg, metadata_csum, …).
    Ext4,
    /// A FAT12/16/32 boot sector (jump instruction, 55 AA, plausible BPB).
    Vfat,
    /// Nothing recognised (also an ext journal device).
    Unknown,
}

impl FsType {
    /// ext2, ext3 or ext4.
    pub fn is_ext(self) -> bool {
        matches!(self, FsType::Ext2 | FsType::Ext3 | FsType::Ext4)
    }

    /// The name blkid uses.
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
            FsType::Vfat => "vfat",
            FsType::Unknown => "unknown",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A GPT GUID as stored on disk (first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Linux filesystem data (`8300` in sgdisk).
    pub const LINUX_FS: Guid = Guid::from_str_const(*b"0FC63DAF-8483-4772-8E79-3D69D8477DE4");

    pub(crate) const fn from_str_const(s: [u8; 36]) -> Guid {
        const fn hex(c: u8) -> u8 {
            match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => panic!("bad hex digit"),
            }
        }
        // Text order of the 16 bytes, then the on-disk permutation of the first three fields.
        let pos: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
        let mut text = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            text[i] = hex(s[pos[i]]) << 4 | hex(s[pos[i] + 1]);
            i += 1;
        }
        let order: [usize; 16] = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
        let mut out = [0u8; 16];
        let mut j = 0;
        while j < 16 {
            out[j] = text[order[j]];
            j += 1;
        }
        Guid(out)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        for x in &b[10..] {
            write!(f, "{x:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The type a partition table gives a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartType {
    /// The GPT entry's partition type GUID (e.g. [`Guid::LINUX_FS`], [`Guid::ESP`]).
    Gpt(Guid),
    /// The MBR entry's partition type byte (0x83 Linux, 0xEF EFI, 0x0C FAT32 LBA, …).
    Mbr(u8),
    /// The whole-disk pseudo partition.
    None,
}

/// One partition (or the whole disk when there is no table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based table index (GPT entry index, MBR 1–4 primary, 5+ logical); 0 for the whole disk.
    pub number: u32,
    /// Byte offset on the device.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// The type the table gives the partition.
    pub part_type: PartType,
    /// GPT partition name (empty for MBR).
    pub name: String,
    /// Filesystem found by probing.
    pub fs: FsType,
    /// Filesystem label (ext volume name or vfat label), if any.
    pub label: Option<String>,
}

/// The partitions of one device, in table order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    /// The device name used in errors.
    pub device: String,
    /// Which kind of table was found.
    pub kind: TableKind,
    /// Logical sector size the table was read with (512 or 4096; 512 when there is no table).
    pub sector_size: u64,
    /// Device size in bytes.
    pub size: u64,
    /// The used entries, in table order (unused GPT entries and empty MBR slots are left out).
    pub partitions: Vec<Partition>,
}

/// Which partition to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selector {
    /// Root-filesystem detection ([`PartitionTable::root`]).
    #[default]
    Root,
    /// An explicit partition number (0 = a whole-disk filesystem).
    Number(u32),
}

impl PartitionTable {
    /// The partition with this number.
    pub fn get(&self, number: u32) -> Result<&Partition> {
        self.partitions
            .iter()
            .find(|p| p.number == number)
            .ok_or_else(|| Error::NoSuchPartition {
                device: self.device.clone(),
                number,
                present: self.present(),
            })
    }

    /// The root filesystem: the ext filesystem labelled `cloudimg-rootfs`, else the largest ext2/3/4
    /// filesystem (lowest number on a tie).
    pub fn root(&self) -> Result<&Partition> {
        let labelled: Vec<&Partition> = self
            .partitions
            .iter()
            .filter(|p| p.fs.is_ext() && p.label.as_deref() == Some(ROOT_LABEL))
            .collect();
        match labelled.as_slice() {
            [one] => return Ok(one),
            [] => {}
            many => {
                return Err(Error::AmbiguousRoot {
                    device: self.device.clone(),
                    numbers: many.iter().map(|p| p.number).collect(),
                });
            }
        }
        let mut best: Option<&Partition> = None;
        for p in self.partitions.iter().filter(|p| p.fs.is_ext()) {
            if best.is_none_or(|b| p.len > b.len) {
                best = Some(p);
            }
        }
        best.ok_or_else(|| Error::NoRootFs {
            device: self.device.clone(),
            found: self.present(),
        })
    }

    /// Resolve a selector to a partition.
    pub fn select(&self, selector: Selector) -> Result<&Partition> {
        match selector {
            Selector::Root => self.root(),
            Selector::Number(n) => self.get(n),
        }
    }

    fn present(&self) -> String {
        if self.partitions.is_empty() {
            return "none".into();
        }
        self.partitions
            .iter()
            .map(|p| {
                format!(
                    "{}={}{}",
                    p.number,
                    p.fs,
                    p.label
                        .as_ref()
                        .map(|l| format!("({l})"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A window over `dev` covering exactly `partition`.
pub fn window<D: BlockDev>(dev: D, device: &str, partition: &Partition) -> Result<SliceDev<D>> {
    let size = dev.len();
    let oob = || Error::OutOfBounds {
        device: device.to_owned(),
        number: partition.number,
        start: partition.start,
        len: partition.len,
        size,
    };
    match partition.start.checked_add(partition.len) {
        Some(end) if end <= size => {
            SliceDev::new(dev, partition.start, partition.len).map_err(|_| oob())
        }
        _ => Err(oob()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn guid_round_trip() {
        assert_eq!(
            Guid::LINUX_FS.to_string(),
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        );
        assert_eq!(Guid::LINUX_FS.0[0], 0xAF);
    }
}
