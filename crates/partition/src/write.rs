//! Writing a GPT: the layout of a new disk image (kiln's generated fixtures, and any caller that
//! makes a disk from filesystems it built itself). The bytes depend only on the layout: every GUID
//! is given by the caller, nothing is random, and both headers and the protective MBR are written.

use std::io::{Read, Seek, Write};

use crate::{Error, Guid, Result};

/// One partition of a [`GptLayout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptPartition {
    /// The entry number (1-based), as `sgdisk -n N:…` numbers it.
    pub number: u32,
    /// First sector (LBA) of the partition.
    pub first_lba: u64,
    /// Last sector (LBA), inclusive.
    pub last_lba: u64,
    /// The partition type.
    pub type_guid: Guid,
    /// The partition's own GUID.
    pub guid: Guid,
    /// The GPT partition name (may be empty, as on Ubuntu's cloud images).
    pub name: String,
}

/// A whole GPT: the disk GUID and the partitions (entries not listed stay empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptLayout {
    /// The disk's GUID.
    pub disk_guid: Guid,
    /// The partitions, in any order; `number` says which entry each one takes.
    pub partitions: Vec<GptPartition>,
}

/// Well-known partition type GUIDs, by their `sgdisk` codes.
impl Guid {
    /// BIOS boot partition (`ef02`).
    pub const BIOS_BOOT: Guid = Guid::from_str_const(*b"21686148-6449-6E6F-744E-656564454649");
    /// EFI system partition (`ef00`).
    pub const ESP: Guid = Guid::from_str_const(*b"C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    /// Extended boot loader partition, XBOOTLDR (`ea00`).
    pub const XBOOTLDR: Guid = Guid::from_str_const(*b"BC13C2FF-59E6-4262-A352-B275FD6F7172");

    /// Parses the text form `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX` (either case).
    pub fn parse(text: &str) -> Option<Guid> {
        let b: [u8; 36] = text.as_bytes().try_into().ok()?;
        let dashes = [8, 13, 18, 23];
        let ok = b.iter().enumerate().all(|(i, c)| {
            if dashes.contains(&i) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
        ok.then(|| Guid::from_str_const(b))
    }
}

/// Writes `layout` on `disk` with 512-byte sectors: the protective MBR at LBA 0, the primary
/// header and entry array at LBA 1–33, the backup ones at the end. `disk` must already have its
/// final size; `device` names it in errors.
pub fn write_gpt<W: Read + Write + Seek>(
    disk: &mut W,
    device: &str,
    layout: &GptLayout,
) -> Result<()> {
    const SECTOR: u64 = 512;
    let err = |source| Error::Gpt {
        device: device.to_owned(),
        source,
    };
    let mut gpt = gptman::GPT::new_from(disk, SECTOR, layout.disk_guid.0).map_err(err)?;
    let entries = gpt.header.number_of_partition_entries;
    for p in &layout.partitions {
        if p.number == 0 || p.number > entries {
            return Err(Error::NoSuchPartition {
                device: device.to_owned(),
                number: p.number,
                present: format!("1..={entries}"),
            });
        }
        // gptman indexes entries from 1, as partition numbers go.
        gpt[p.number] = gptman::GPTPartitionEntry {
            partition_type_guid: p.type_guid.0,
            unique_partition_guid: p.guid.0,
            starting_lba: p.first_lba,
            ending_lba: p.last_lba,
            attribute_bits: 0,
            partition_name: p.name.as_str().into(),
        };
    }
    gpt.write_into(disk).map_err(err)?;
    gptman::GPT::write_protective_mbr_into(disk, SECTOR).map_err(err)?;
    Ok(())
}
