//! Reading an MBR: entries on the table itself refused before mbrman sees it, then every used
//! primary and logical partition probed.

use kiln_blockdev::BlockDev;

use crate::probe::probe_partition;
use crate::reader::{parse_guarded, read_upto};
use crate::{Error, PartType, PartitionTable, Result, TableKind};

pub(crate) fn scan_mbr<D: BlockDev + ?Sized>(dev: &D, device: &str) -> Result<PartitionTable> {
    let size = dev.len();
    // A used entry starting at LBA 0 overlaps the MBR itself; mbrman 0.6 panics on it (its
    // alignment search finds no divisor), so refuse it here. Found by fuzz/partition_scan.
    let sector0 = read_upto(dev, device, 0, 512)?;
    for number in 0..4u32 {
        let e = 446 + 16 * number as usize;
        let (kind, lba) = (
            sector0[e + 4],
            u32::from_le_bytes([
                sector0[e + 8],
                sector0[e + 9],
                sector0[e + 10],
                sector0[e + 11],
            ]),
        );
        if kind != 0 && lba == 0 {
            return Err(Error::CorruptMbr {
                device: device.to_owned(),
                number: number + 1,
                kind,
            });
        }
    }
    let parsed = parse_guarded(dev, device, "MBR", |reader| {
        mbrman::MBR::read_from(reader, 512)
    })?;
    let mbr = parsed.map_err(|source| Error::Mbr {
        device: device.to_owned(),
        source,
    })?;
    let mut partitions = Vec::new();
    for (number, entry) in mbr.iter() {
        if entry.is_unused() || entry.is_extended() {
            continue;
        }
        let start = u64::from(entry.starting_lba) * 512;
        let len = u64::from(entry.sectors) * 512;
        partitions.push(probe_partition(
            dev,
            device,
            number as u32,
            start,
            len,
            PartType::Mbr(entry.sys),
            String::new(),
        )?);
    }
    Ok(PartitionTable {
        device: device.to_owned(),
        kind: TableKind::Mbr,
        sector_size: 512,
        size,
        partitions,
    })
}
