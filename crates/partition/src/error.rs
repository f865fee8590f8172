//! Errors of partition discovery.

use crate::ROOT_LABEL;

/// Errors of partition discovery. Every variant names the device it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The GPT is present but its header is implausible (checked before parsing).
    #[error("{device}: corrupt GPT header at LBA {lba} (sector size {sector_size}): {reason}")]
    CorruptGpt {
        device: String,
        lba: u64,
        sector_size: u64,
        reason: String,
    },
    /// gptman rejected the GPT (bad checksum on both copies, …).
    #[error("{device}: reading the GPT failed")]
    Gpt {
        device: String,
        #[source]
        source: gptman::Error,
    },
    /// mbrman rejected the MBR.
    #[error(
        "{device}: corrupt MBR: primary partition {number} (type {kind:#04x}) starts at LBA 0, on the table itself"
    )]
    CorruptMbr {
        device: String,
        number: u32,
        kind: u8,
    },
    #[error("{device}: reading the MBR failed")]
    Mbr {
        device: String,
        #[source]
        source: mbrman::Error,
    },
    /// A protective MBR (type 0xEE) without a readable GPT behind it.
    #[error("{device}: protective MBR (type 0xEE) but no valid GPT header at LBA 1")]
    ProtectiveMbrWithoutGpt { device: String },
    /// Neither a partition table nor a known filesystem at the start of the device.
    #[error("{device}: no GPT, no MBR and no ext2/3/4 or vfat filesystem found ({size} bytes)")]
    NoTable { device: String, size: u64 },
    /// The caller asked for a partition number the table does not have.
    #[error("{device}: no partition number {number} (present: {present})")]
    NoSuchPartition {
        device: String,
        number: u32,
        present: String,
    },
    /// Nothing qualifies as the root filesystem.
    #[error(
        "{device}: no root filesystem: no ext filesystem labelled `{ROOT_LABEL}` and no Linux filesystem at all (found: {found})"
    )]
    NoRootFs { device: String, found: String },
    /// More than one filesystem carries the root label.
    #[error(
        "{device}: several partitions are labelled `{ROOT_LABEL}`: {numbers:?}; choose one explicitly"
    )]
    AmbiguousRoot { device: String, numbers: Vec<u32> },
    /// A partition's byte range does not fit inside the device.
    #[error(
        "{device}: partition {number} ({start}+{len} bytes) does not fit inside the {size}-byte device"
    )]
    OutOfBounds {
        device: String,
        number: u32,
        start: u64,
        len: u64,
        size: u64,
    },
    /// Reading the device failed.
    #[error("{device}: reading {len} bytes at offset {offset} failed")]
    Read {
        device: String,
        offset: u64,
        len: u64,
        #[source]
        source: kiln_blockdev::Error,
    },
    /// A third-party parser panicked on malformed input.
    #[error("{device}: the {parser} parser failed on malformed input")]
    ParserPanic {
        device: String,
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

pub type Result<T, E = Error> = std::result::Result<T, E>;
