//! Finding the partition table (GPT, MBR or a whole-disk filesystem) on a device.

use kiln_blockdev::BlockDev;

use crate::gpt::{gpt_signature, scan_gpt};
use crate::mbr::scan_mbr;
use crate::probe::probe;
use crate::reader::read_upto;
use crate::{Error, FsType, PartType, Partition, PartitionTable, Result, TableKind};

/// Find the partition table (or a whole-disk filesystem) on `dev` and probe every partition.
/// `device` names the device in errors.
pub fn scan<D: BlockDev + ?Sized>(dev: &D, device: &str) -> Result<PartitionTable> {
    let size = dev.len();
    let mbr_sector = read_upto(dev, device, 0, 512)?;
    let has_55aa = mbr_sector.len() == 512 && mbr_sector[510] == 0x55 && mbr_sector[511] == 0xAA;
    let protective = has_55aa && (0..4).any(|i| mbr_sector[446 + 16 * i + 4] == 0xEE);

    // GPT: at 512-byte sectors, then 4096.
    for sector_size in [512u64, 4096] {
        if gpt_signature(dev, device, sector_size)? {
            let table = scan_gpt(dev, device, sector_size)?;
            return Ok(table);
        }
    }
    if protective {
        return Err(Error::ProtectiveMbrWithoutGpt {
            device: device.to_owned(),
        });
    }

    // A filesystem on the whole disk. Checked before MBR: a FAT boot sector also ends in 55 AA.
    let whole = probe(dev, device)?;
    if whole.fs != FsType::Unknown {
        return Ok(PartitionTable {
            device: device.to_owned(),
            kind: TableKind::None,
            sector_size: 512,
            size,
            partitions: vec![Partition {
                number: 0,
                start: 0,
                len: size,
                part_type: PartType::None,
                name: String::new(),
                fs: whole.fs,
                label: whole.label,
            }],
        });
    }

    if has_55aa {
        return scan_mbr(dev, device);
    }
    Err(Error::NoTable {
        device: device.to_owned(),
        size,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use kiln_blockdev::MemDev;

    #[test]
    fn empty_device_is_no_table() {
        let d = MemDev::new(8192);
        let e = scan(&d, "blank.img").unwrap_err().to_string();
        assert!(e.contains("blank.img") && e.contains("no GPT"), "{e}");
    }

    #[test]
    fn huge_entry_count_is_refused_before_parsing() {
        let d = MemDev::new(1 << 20);
        let mut h = vec![0u8; 92];
        h[..8].copy_from_slice(b"EFI PART");
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&u32::MAX.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        d.write_at(&h, 512).unwrap();
        let e = scan(&d, "evil").unwrap_err();
        assert!(matches!(e, Error::CorruptGpt { .. }), "{e}");
    }
}
