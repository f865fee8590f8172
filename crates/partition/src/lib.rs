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
//! Write a GPT into a 4 MiB in-memory disk, put an ext2 superblock (magic and label only) in its
//! one partition, then scan the disk and open the root filesystem's window:
//!
//! ```
//! use kiln_blockdev::{BlockDev, MemDev};
//! use kiln_partition::{
//!     FsType, GptLayout, GptPartition, Guid, ROOT_LABEL, TableKind, scan, window, write_gpt,
//! };
//!
//! let mut image = std::io::Cursor::new(vec![0u8; 4 << 20]);
//! let layout = GptLayout {
//!     disk_guid: Guid([1; 16]),
//!     partitions: vec![GptPartition {
//!         number: 1,
//!         first_lba: 2048, // 1 MiB in 512-byte sectors
//!         last_lba: 6143,  // inclusive: 2 MiB long
//!         type_guid: Guid::LINUX_FS,
//!         guid: Guid([2; 16]),
//!         name: String::new(),
//!     }],
//! };
//! write_gpt(&mut image, "mem", &layout)?;
//!
//! let disk = MemDev::from_vec(image.into_inner());
//! let sb = (1 << 20) + 1024; // the ext superblock starts 1024 bytes into the filesystem
//! disk.write_at(&0xEF53u16.to_le_bytes(), sb + 0x38)?; // s_magic
//! disk.write_at(ROOT_LABEL.as_bytes(), sb + 0x78)?; // s_volume_name
//!
//! let table = scan(&disk, "mem")?;
//! assert_eq!(table.kind, TableKind::Gpt);
//! let root = table.root()?;
//! assert_eq!((root.number, root.start, root.len), (1, 1 << 20, 2 << 20));
//! assert_eq!((root.fs, root.label.as_deref()), (FsType::Ext2, Some(ROOT_LABEL)));
//! let fs = window(&disk, "mem", root)?;
//! assert_eq!(fs.len(), 2 << 20);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

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
