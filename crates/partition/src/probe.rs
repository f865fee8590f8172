//! Filesystem probes: what a partition (or a whole disk) holds, and its label.

use kiln_blockdev::{BlockDev, SliceDev};

use crate::reader::{le16, le32, read_upto};
use crate::{FsType, PartType, Partition, Result};

/// What [`probe`] found on a byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The filesystem recognised, or [`FsType::Unknown`].
    pub fs: FsType,
    /// The filesystem's label, `None` when empty: the ext superblock's `s_volume_name` up to its
    /// first NUL, or the FAT boot sector's 11-byte volume label without trailing spaces (and
    /// `None` for `NO NAME`).
    pub label: Option<String>,
}

impl Probe {
    /// Nothing recognised.
    fn unknown() -> Probe {
        Probe {
            fs: FsType::Unknown,
            label: None,
        }
    }
}

/// Identify the filesystem at the start of `dev` (a partition window or a whole disk).
pub fn probe<D: BlockDev + ?Sized>(dev: &D, device: &str) -> Result<Probe> {
    let sb = read_upto(dev, device, 1024, 1024)?;
    if let Some(p) = probe_ext(&sb) {
        return Ok(p);
    }
    let boot = read_upto(dev, device, 0, 512)?;
    if let Some(p) = probe_vfat(&boot) {
        return Ok(p);
    }
    Ok(Probe::unknown())
}

/// Classify an ext superblock (the 1024 bytes at +1024) like blkid does.
pub fn probe_ext(sb: &[u8]) -> Option<Probe> {
    if sb.len() < 0x88 || le16(sb, 0x38) != 0xEF53 {
        return None;
    }
    let compat = le32(sb, 0x5C);
    let incompat = le32(sb, 0x60);
    let ro_compat = le32(sb, 0x64);
    const HAS_JOURNAL: u32 = 0x4;
    const JOURNAL_DEV: u32 = 0x8;
    // Features ext3 does not know: anything but filetype, recover and meta_bg (incompat) or
    // sparse_super, large_file and btree_dir (ro_compat).
    const EXT3_INCOMPAT: u32 = 0x2 | 0x4 | 0x10;
    const EXT3_RO_COMPAT: u32 = 0x1 | 0x2 | 0x4;
    if incompat & JOURNAL_DEV != 0 {
        return Some(Probe::unknown());
    }
    let fs = if incompat & !EXT3_INCOMPAT != 0 || ro_compat & !EXT3_RO_COMPAT != 0 {
        FsType::Ext4
    } else if compat & HAS_JOURNAL != 0 {
        FsType::Ext3
    } else {
        FsType::Ext2
    };
    Some(Probe {
        fs,
        label: text_label(&sb[0x78..0x88], false),
    })
}

/// Recognise a FAT12/16/32 boot sector.
pub fn probe_vfat(boot: &[u8]) -> Option<Probe> {
    if boot.len() < 512 || boot[510] != 0x55 || boot[511] != 0xAA {
        return None;
    }
    if !matches!(boot[0], 0xEB | 0xE9) {
        return None;
    }
    let bytes_per_sector = le16(boot, 11);
    let sectors_per_cluster = boot[13];
    if !(512..=4096).contains(&bytes_per_sector)
        || !bytes_per_sector.is_power_of_two()
        || sectors_per_cluster == 0
        || !sectors_per_cluster.is_power_of_two()
    {
        return None;
    }
    let label_at = if &boot[0x52..0x57] == b"FAT32" {
        0x47
    } else if &boot[0x36..0x39] == b"FAT" {
        0x2B
    } else {
        return None;
    };
    let label = text_label(&boot[label_at..label_at + 11], true).filter(|l| l != "NO NAME");
    Some(Probe {
        fs: FsType::Vfat,
        label,
    })
}

fn text_label(raw: &[u8], space_padded: bool) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let mut s = String::from_utf8_lossy(&raw[..end]).into_owned();
    if space_padded {
        s.truncate(s.trim_end_matches(' ').len());
    }
    (!s.is_empty()).then_some(s)
}

pub(crate) fn probe_partition<D: BlockDev + ?Sized>(
    dev: &D,
    device: &str,
    number: u32,
    start: u64,
    len: u64,
    part_type: PartType,
    name: String,
) -> Result<Partition> {
    // Probe only what lies inside both the partition and the device; a partition that overruns the
    // device is listed (and refused by `window`), not probed past the end.
    let size = dev.len();
    let fits = start.checked_add(len).is_some_and(|end| end <= size);
    let found = if fits && len > 0 {
        match SliceDev::new(dev, start, len) {
            Ok(w) => probe(&w, device)?,
            Err(_) => Probe::unknown(),
        }
    } else {
        Probe::unknown()
    };
    Ok(Partition {
        number,
        start,
        len,
        part_type,
        name,
        fs: found.fs,
        label: found.label,
    })
}
