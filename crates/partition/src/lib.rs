//! Partition discovery for kiln: which partitions a disk has, what filesystem each holds, and which
//! one is the root filesystem.
//!
//! ```text
//!   BlockDev (raw file, qcow2 chain, memory)
//!        │  DevReader: Read + Seek adapter, bounded by BlockDev::len
//!        ▼
//!   GPT (gptman) ──or── MBR (mbrman) ──or── a filesystem on the whole disk
//!        │
//!        ▼  probe +0 (vfat boot sector) and +1024 (ext2/3/4 superblock) of every partition
//!   PartitionTable { partitions: [Partition { number, start, len, type, name, fs, label }] }
//!        │  root(): the ext4 labelled `cloudimg-rootfs`, else the largest Linux filesystem
//!        ▼
//!   window(dev, &partition) -> SliceDev  (the filesystem's own byte range)
//! ```
//!
//! [`write_gpt`] writes a new GPT from a [`GptLayout`] (for disks kiln makes itself); everything
//! else here only reads. The partition-table parsers are fed untrusted bytes, so the GPT
//! header is sanity-checked *before* gptman sees it (entry count and size, array location inside
//! the device), every read is bounded by the device size, and a panic inside a parser is caught and
//! reported as an error naming the device.
//!
//! ```
//! use kiln_blockdev::MemDev;
//! use kiln_partition::{scan, FsType, TableKind};
//!
//! // An ext2 superblock magic at +1024+56 on a bare disk: a whole-disk filesystem.
//! let disk = MemDev::new(64 * 1024);
//! kiln_blockdev::BlockDev::write_at(&disk, &0xEF53u16.to_le_bytes(), 1024 + 56).unwrap();
//! let table = scan(&disk, "mem").unwrap();
//! assert_eq!(table.kind, TableKind::None);
//! assert_eq!(table.partitions[0].fs, FsType::Ext2);
//! assert_eq!(table.root().unwrap().number, 0);
//! ```

mod error;
mod gpt;
mod mbr;
mod probe;
mod reader;
mod scan;
mod table;
mod write;

pub use error::{Error, Result};
pub use probe::{Probe, probe, probe_ext, probe_vfat};
pub use reader::DevReader;
pub use scan::scan;
pub use table::{FsType, Guid, PartType, Partition, PartitionTable, Selector, TableKind, window};
pub use write::{GptLayout, GptPartition, write_gpt};

/// The label Ubuntu (and kiln's fixtures) give the root filesystem.
pub const ROOT_LABEL: &str = "cloudimg-rootfs";
