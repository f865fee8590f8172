//! Reading a GPT: its header checked before gptman sees it, then every used entry probed.

use kiln_blockdev::BlockDev;

use crate::probe::probe_partition;
use crate::reader::{le32, le64, parse_guarded, read_upto};
use crate::{Error, Guid, PartType, PartitionTable, Result, TableKind};

/// Most partition entries a GPT may declare before we call it corrupt (the spec's minimum array is
/// 128 entries; nobody uses more than a few hundred).
const MAX_GPT_ENTRIES: u32 = 4096;
/// The only GPT entry size gptman can parse.
const GPT_ENTRY_SIZE: u32 = 128;

pub(crate) fn gpt_signature<D: BlockDev + ?Sized>(
    dev: &D,
    device: &str,
    sector_size: u64,
) -> Result<bool> {
    let hdr = read_upto(dev, device, sector_size, 8)?;
    Ok(hdr == b"EFI PART")
}

/// Check a GPT header (primary at LBA 1, or the backup it points to) before handing it to gptman,
/// which trusts the entry count and location.
fn check_gpt_header<D: BlockDev + ?Sized>(
    dev: &D,
    device: &str,
    sector_size: u64,
    lba: u64,
) -> Result<Option<String>> {
    let Some(offset) = lba.checked_mul(sector_size) else {
        return Ok(Some("header LBA overflows".into()));
    };
    let h = read_upto(dev, device, offset, 92)?;
    if h.len() < 92 || &h[..8] != b"EFI PART" {
        return Ok(Some("no signature".into()));
    }
    let entries = le32(&h, 80);
    let entry_size = le32(&h, 84);
    let array_lba = le64(&h, 72);
    if entries == 0 || entries > MAX_GPT_ENTRIES {
        return Ok(Some(format!(
            "{entries} partition entries (at most {MAX_GPT_ENTRIES} accepted)"
        )));
    }
    if entry_size != GPT_ENTRY_SIZE {
        return Ok(Some(format!(
            "partition entry size {entry_size} (only {GPT_ENTRY_SIZE} is supported)"
        )));
    }
    let end = array_lba
        .checked_mul(sector_size)
        .and_then(|s| s.checked_add(u64::from(entries) * u64::from(entry_size)));
    match end {
        Some(end) if end <= dev.len() && array_lba > 0 => Ok(None),
        _ => Ok(Some(format!(
            "partition entry array at LBA {array_lba} ({entries} entries) lies outside the device"
        ))),
    }
}

pub(crate) fn scan_gpt<D: BlockDev + ?Sized>(
    dev: &D,
    device: &str,
    sector_size: u64,
) -> Result<PartitionTable> {
    let size = dev.len();
    // gptman reads the primary header, and the last sector of the device when the primary fails:
    // both must be plausible (or absent) before it runs.
    let primary_problem = check_gpt_header(dev, device, sector_size, 1)?;
    let last_lba = size / sector_size - 1;
    let backup_problem = check_gpt_header(dev, device, sector_size, last_lba)?;
    if let Some(reason) = &primary_problem
        && reason != "no signature"
    {
        return Err(Error::CorruptGpt {
            device: device.to_owned(),
            lba: 1,
            sector_size,
            reason: reason.clone(),
        });
    }
    if let Some(reason) = backup_problem
        && reason != "no signature"
    {
        return Err(Error::CorruptGpt {
            device: device.to_owned(),
            lba: last_lba,
            sector_size,
            reason,
        });
    }

    let parsed = parse_guarded(dev, device, "GPT", |reader| {
        gptman::GPT::read_from(reader, sector_size)
    })?;
    let gpt = parsed.map_err(|source| Error::Gpt {
        device: device.to_owned(),
        source,
    })?;

    let mut partitions = Vec::new();
    for (number, entry) in gpt.iter() {
        if entry.is_unused() {
            continue;
        }
        let (start, len) = match (
            entry.starting_lba.checked_mul(sector_size),
            entry
                .ending_lba
                .checked_sub(entry.starting_lba)
                .and_then(|n| n.checked_add(1))
                .and_then(|n| n.checked_mul(sector_size)),
        ) {
            (Some(s), Some(l)) => (s, l),
            _ => {
                return Err(Error::CorruptGpt {
                    device: device.to_owned(),
                    lba: 1,
                    sector_size,
                    reason: format!(
                        "partition {number} has LBAs {}..={}",
                        entry.starting_lba, entry.ending_lba
                    ),
                });
            }
        };
        partitions.push(probe_partition(
            dev,
            device,
            number,
            start,
            len,
            PartType::Gpt(Guid(entry.partition_type_guid)),
            entry.partition_name.as_str().to_owned(),
        )?);
    }
    Ok(PartitionTable {
        device: device.to_owned(),
        kind: TableKind::Gpt,
        sector_size,
        size,
        partitions,
    })
}
