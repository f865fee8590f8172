//! An open qcow2 image: the mapping from guest clusters to host bytes, reads through the backing
//! chain, copy-on-write writes, and a fallible close.
//!
//! ```text
//! guest offset ──► L1[guest >> (2·cluster_bits − 3)] ──► L2 table ──► entry
//!   entry: Data(host)        read/write host bytes
//!          Compressed(host)  decompress (writes copy the cluster into a new one)
//!          Zero              zeros
//!          Unallocated       read from the backing image (zeros past its end or without one)
//! ```

mod cow;
mod create;
mod map;
mod open;
mod storage;

pub use create::{CreateOptions, NewBacking};
pub use open::{Backing, OpenOptions, relative_backing_name, relative_name};
pub use storage::{Storage, compressed_format, foreign_format, is_qcow2};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use kiln_blockdev::{BlockDev, Op};

use crate::error::Error;
use crate::header::Header;
use crate::refcount::{RefcountTable, Refcounts};

pub(crate) const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub(crate) const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub(crate) const COPIED: u64 = 1 << 63;
pub(crate) const COMPRESSED: u64 = 1 << 62;
pub(crate) const ZERO: u64 = 1;
/// qemu's limit on the L1 table (32 MiB).
pub(crate) const MAX_L1_BYTES: u64 = 32 << 20;
/// Decoded L2 tables kept in memory, in bytes.
const L2_CACHE_BYTES: u64 = 64 << 20;
/// Default cap on backing chain length.
pub const DEFAULT_MAX_CHAIN_DEPTH: usize = 16;

/// Where one guest cluster's data lives in one image of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Uncompressed data at this host offset.
    Data {
        /// Host byte offset of the cluster in the image file (cluster-aligned).
        host: u64,
    },
    /// A compressed cluster: `len` stored bytes (sector-rounded) at `host`.
    Compressed {
        /// Host byte offset of the compressed data (not necessarily aligned).
        host: u64,
        /// Bytes to read there: (the L2 entry's additional-sector count + 1) × 512, less
        /// `host`'s offset within its first 512-byte sector.
        len: u64,
    },
    /// Reads as zeros; `prealloc` is a host cluster kept allocated for it, if any.
    Zero {
        /// The host offset an L2 "zero" entry still points at (qcow2 v3 preallocated zero
        /// cluster), or `None` when the entry carries no offset.
        prealloc: Option<u64>,
    },
    /// Not in this image: read from the backing image.
    Unallocated,
}

/// Counts of guest clusters by how the top image maps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocationCounts {
    /// Clusters mapped to uncompressed data ([`Mapping::Data`]).
    pub data: u64,
    /// Clusters mapped to compressed data ([`Mapping::Compressed`]).
    pub compressed: u64,
    /// Clusters marked as reading zeros ([`Mapping::Zero`]).
    pub zero: u64,
    /// Clusters not allocated in the top image, left to the backing chain
    /// ([`Mapping::Unallocated`]).
    pub unallocated: u64,
}

struct WriteState {
    rc: Refcounts,
    table: RefcountTable,
    file_end: u64,
    changed: bool,
}

/// An open qcow2 image (the top of a chain).
pub struct Image {
    file: Box<dyn Storage>,
    path: PathBuf,
    header: Header,
    backing: Option<Backing>,
    l1: RwLock<Vec<u64>>,
    l2_cache: Mutex<HashMap<u64, Arc<Vec<u64>>>>,
    zcache: Mutex<Vec<(u64, Arc<Vec<u8>>)>>,
    write: Option<Mutex<WriteState>>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("path", &self.path)
            .field("header", &self.header)
            .field("backing", &self.backing)
            .field("writable", &self.write.is_some())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Image {
    /// The header as read (or as created).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The path the image was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The backing image, if any.
    pub fn backing(&self) -> Option<&Backing> {
        self.backing.as_ref()
    }

    /// Virtual size in bytes.
    pub fn len(&self) -> u64 {
        self.header.size
    }

    /// Whether the virtual size is 0.
    pub fn is_empty(&self) -> bool {
        self.header.size == 0
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.header.cluster_size()
    }

    /// Size of the image file in bytes.
    pub fn file_len(&self) -> u64 {
        self.file.len()
    }

    /// Whether the image was opened (or created) for writing.
    pub fn is_writable(&self) -> bool {
        self.write.is_some()
    }
}

impl BlockDev for Image {
    fn len(&self) -> u64 {
        self.header.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> kiln_blockdev::Result<()> {
        self.read(buf, offset)
            .map_err(|e| to_blockdev(e, Op::Read, offset, buf.len()))
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> kiln_blockdev::Result<()> {
        if self.write.is_none() {
            return Err(kiln_blockdev::Error::ReadOnly { op: Op::Write });
        }
        self.write(buf, offset)
            .map_err(|e| to_blockdev(e, Op::Write, offset, buf.len()))
    }
    fn flush(&self) -> kiln_blockdev::Result<()> {
        self.file.flush()
    }
    fn is_read_only(&self) -> bool {
        self.write.is_none()
    }
}

fn to_blockdev(e: Error, op: Op, offset: u64, len: usize) -> kiln_blockdev::Error {
    match e {
        Error::Device {
            source:
                kiln_blockdev::Error::OutOfBounds {
                    op,
                    offset,
                    len,
                    size,
                },
            ..
        } => kiln_blockdev::Error::OutOfBounds {
            op,
            offset,
            len,
            size,
        },
        other => kiln_blockdev::Error::Backend {
            op,
            offset,
            len: len as u64,
            kind: other.kind(),
            source: Box::new(other),
        },
    }
}
