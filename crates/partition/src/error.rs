//! Errors of partition discovery.

use crate::ROOT_LABEL;

/// Errors of partition discovery. Every variant names the device it is about (`device`: the
/// name the caller passed to [`crate::scan`], [`crate::window`] or [`crate::write_gpt`], or
/// [`crate::PartitionTable::device`]).
///
/// [`Error::kind`] is [`kiln_blockdev::ErrorKind::Input`] for every variant but [`Error::Read`]:
/// the disk's contents (or the partition number asked for) are at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// [`crate::scan`] found the `EFI PART` signature but a GPT header kiln will not hand to
    /// the parser: an entry count of 0 or above 4096, an entry size other than 128 bytes, an
    /// entry array outside the device (checked for the primary header at LBA 1 and for the
    /// backup at the last LBA), or a used entry whose LBAs overflow or run backwards.
    #[error("{device}: corrupt GPT header at LBA {lba} (sector size {sector_size}): {reason}")]
    CorruptGpt {
        /// The device name.
        device: String,
        /// The sector holding the offending header (1, or the device's last LBA for the
        /// backup); 1 as well for a bad partition entry.
        lba: u64,
        /// The logical sector size in bytes the GPT was found with (512 or 4096).
        sector_size: u64,
        /// What is wrong, in words.
        reason: String,
    },
    /// The GPT parser (gptman) failed: in [`crate::scan`], it rejected a table that passed the
    /// header checks (bad CRC32 of header or entry array on both copies, …); in
    /// [`crate::write_gpt`], it could not create or write the table (partitions that overlap,
    /// end before they start or leave the usable LBAs, two partitions with the same GUID, or an
    /// I/O error of the writer).
    #[error("{device}: reading the GPT failed")]
    Gpt {
        /// The device name.
        device: String,
        /// gptman's error.
        #[source]
        source: gptman::Error,
    },
    /// [`crate::scan`] found an MBR (55 AA signature, no GPT, no whole-disk filesystem) with a
    /// used primary entry whose first LBA is 0, i.e. on the MBR itself; refused before the MBR
    /// parser sees it.
    #[error(
        "{device}: corrupt MBR: primary partition {number} (type {kind:#04x}) starts at LBA 0, on the table itself"
    )]
    CorruptMbr {
        /// The device name.
        device: String,
        /// The primary entry, 1–4.
        number: u32,
        /// The entry's partition type byte (MBR entry offset 4).
        kind: u8,
    },
    /// The MBR parser (mbrman) rejected the MBR or its extended-partition chain in
    /// [`crate::scan`].
    #[error("{device}: reading the MBR failed")]
    Mbr {
        /// The device name.
        device: String,
        /// mbrman's error.
        #[source]
        source: mbrman::Error,
    },
    /// [`crate::scan`] found a protective MBR (a primary entry of type 0xEE) but no `EFI PART`
    /// signature at LBA 1 with 512- or 4096-byte sectors.
    #[error("{device}: protective MBR (type 0xEE) but no valid GPT header at LBA 1")]
    ProtectiveMbrWithoutGpt {
        /// The device name.
        device: String,
    },
    /// [`crate::scan`] found neither a GPT, nor an ext2/3/4 or vfat filesystem on the whole
    /// device, nor an MBR (55 AA at bytes 510–511): e.g. an all-zero or foreign disk.
    #[error("{device}: no GPT, no MBR and no ext2/3/4 or vfat filesystem found ({size} bytes)")]
    NoTable {
        /// The device name.
        device: String,
        /// The device size in bytes.
        size: u64,
    },
    /// A partition number the table does not have: [`crate::PartitionTable::get`] (and
    /// [`crate::PartitionTable::select`] with [`crate::Selector::Number`]) for a number no
    /// partition carries, or [`crate::write_gpt`] for a [`crate::GptPartition::number`] of 0 or
    /// above the table's entry count (128).
    #[error("{device}: no partition number {number} (present: {present})")]
    NoSuchPartition {
        /// The device name.
        device: String,
        /// The number asked for.
        number: u32,
        /// The numbers that exist, with their filesystems and labels (`1=ext4(cloudimg-rootfs),
        /// 15=vfat`), or the valid range (`1..=128`) when writing.
        present: String,
    },
    /// [`crate::PartitionTable::root`] found no partition with an ext2/3/4 filesystem at all.
    #[error(
        "{device}: no root filesystem: no ext filesystem labelled `{ROOT_LABEL}` and no Linux filesystem at all (found: {found})"
    )]
    NoRootFs {
        /// The device name.
        device: String,
        /// The partitions that exist, as in [`Error::NoSuchPartition::present`], or `none`.
        found: String,
    },
    /// [`crate::PartitionTable::root`] found more than one ext filesystem labelled
    /// [`crate::ROOT_LABEL`]; the caller has to pick one with [`crate::Selector::Number`].
    #[error(
        "{device}: several partitions are labelled `{ROOT_LABEL}`: {numbers:?}; choose one explicitly"
    )]
    AmbiguousRoot {
        /// The device name.
        device: String,
        /// The numbers of the labelled partitions, in table order.
        numbers: Vec<u32>,
    },
    /// [`crate::window`] was given a partition whose byte range `start..start + len` does not
    /// lie inside the device (a table describing a larger disk, e.g. a truncated image).
    #[error(
        "{device}: partition {number} ({start}+{len} bytes) does not fit inside the {size}-byte device"
    )]
    OutOfBounds {
        /// The device name.
        device: String,
        /// The partition's number.
        number: u32,
        /// The partition's first byte.
        start: u64,
        /// The partition's length in bytes.
        len: u64,
        /// The device size in bytes.
        size: u64,
    },
    /// Reading the device failed while scanning or probing (the read is always within the
    /// device, so this is the device's own failure). [`Error::kind`] is the device error's kind.
    #[error("{device}: reading {len} bytes at offset {offset} failed")]
    Read {
        /// The device name.
        device: String,
        /// Byte offset of the read.
        offset: u64,
        /// Length of the read in bytes.
        len: u64,
        /// The device's error.
        #[source]
        source: kiln_blockdev::Error,
    },
    /// The GPT or MBR parser panicked on malformed input in [`crate::scan`]; the panic was
    /// caught and the scan abandoned.
    #[error("{device}: the {parser} parser failed on malformed input")]
    ParserPanic {
        /// The device name.
        device: String,
        /// Which parser: `"GPT"` or `"MBR"`.
        parser: &'static str,
    },
}

impl Error {
    /// Who is at fault: the device's own classification for a failed read, the disk's contents
    /// for everything else.
    pub fn kind(&self) -> kiln_blockdev::ErrorKind {
        match self {
            Error::Read { source, .. } => source.kind(),
            _ => kiln_blockdev::ErrorKind::Input,
        }
    }
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
