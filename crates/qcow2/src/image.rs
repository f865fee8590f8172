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

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use kiln_blockdev::{BlockDev, FileDev, MemDev, Op};

use crate::codec;
use crate::error::{Error, Result};
use crate::header::{CompressionType, Header, INCOMPAT_COMPRESSION, INCOMPAT_DIRTY, MAGIC};
use crate::refcount::{self, RefcountTable, Refcounts};

pub(crate) const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub(crate) const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub(crate) const COPIED: u64 = 1 << 63;
pub(crate) const COMPRESSED: u64 = 1 << 62;
pub(crate) const ZERO: u64 = 1;
/// qemu's limit on the L1 table (32 MiB).
const MAX_L1_BYTES: u64 = 32 << 20;
/// Decoded L2 tables kept in memory, in bytes.
const L2_CACHE_BYTES: u64 = 64 << 20;
/// Default cap on backing chain length.
pub const DEFAULT_MAX_CHAIN_DEPTH: usize = 16;

/// Byte storage an image lives in: a block device that can also grow.
pub trait Storage: BlockDev {
    /// Write `buf` at `offset`, extending the storage when the write ends past it.
    fn write_at_grow(&self, buf: &[u8], offset: u64) -> kiln_blockdev::Result<()>;
}

impl Storage for FileDev {
    fn write_at_grow(&self, buf: &[u8], offset: u64) -> kiln_blockdev::Result<()> {
        FileDev::write_at_grow(self, buf, offset)
    }
}

impl Storage for MemDev {
    fn write_at_grow(&self, buf: &[u8], offset: u64) -> kiln_blockdev::Result<()> {
        let end = offset as usize + buf.len();
        if end as u64 > self.len() {
            self.resize(end);
        }
        self.write_at(buf, offset)
    }
}

impl<T: Storage + ?Sized> Storage for Arc<T> {
    fn write_at_grow(&self, buf: &[u8], offset: u64) -> kiln_blockdev::Result<()> {
        (**self).write_at_grow(buf, offset)
    }
}

/// Where one guest cluster's data lives in one image of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Uncompressed data at this host offset.
    Data { host: u64 },
    /// A compressed cluster: `len` stored bytes (sector-rounded) at `host`.
    Compressed { host: u64, len: u64 },
    /// Reads as zeros; `prealloc` is a host cluster kept allocated for it, if any.
    Zero { prealloc: Option<u64> },
    /// Not in this image: read from the backing image.
    Unallocated,
}

/// How to open an image.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Open the top image for writing (its backing images are always read-only).
    pub write: bool,
    /// Directory every backing file must resolve inside. `None`: the top image's own directory.
    pub allowed_backing_dir: Option<PathBuf>,
    /// Maximum number of images in the chain below the top one.
    pub max_chain_depth: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            write: false,
            allowed_backing_dir: None,
            max_chain_depth: DEFAULT_MAX_CHAIN_DEPTH,
        }
    }
}

impl OpenOptions {
    pub fn read_only() -> Self {
        Self::default()
    }
    pub fn read_write() -> Self {
        Self {
            write: true,
            ..Self::default()
        }
    }
    pub fn allow_backing_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.allowed_backing_dir = Some(dir.into());
        self
    }
}

/// A backing image: another qcow2 (itself possibly backed) or a raw file.
#[derive(Debug)]
pub enum Backing {
    Qcow2(Box<Image>),
    Raw { path: PathBuf, dev: FileDev },
}

impl Backing {
    pub fn len(&self) -> u64 {
        match self {
            Backing::Qcow2(i) => i.len(),
            Backing::Raw { dev, .. } => dev.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn path(&self) -> &Path {
        match self {
            Backing::Qcow2(i) => i.path(),
            Backing::Raw { path, .. } => path,
        }
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        match self {
            Backing::Qcow2(i) => i.read(buf, offset),
            Backing::Raw { path, dev } => dev.read_at(buf, offset).map_err(|e| Error::Device {
                image: path.clone(),
                op: "read backing file",
                source: e,
            }),
        }
    }
}

/// Counts of guest clusters by how the top image maps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocationCounts {
    pub data: u64,
    pub compressed: u64,
    pub zero: u64,
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

/// Whether the file at `dev` starts with the qcow2 magic.
/// The format of a disk image kiln does not read, recognised by its magic (as `qemu-img` probes
/// them), with a note on converting it: `None` for anything else. Reads the first 512 bytes.
pub fn foreign_format(dev: &dyn BlockDev) -> Option<(&'static str, &'static str)> {
    let mut head = [0u8; 512];
    let n = usize::try_from(dev.len()).map_or(head.len(), |l| l.min(head.len()));
    dev.read_at(&mut head[..n], 0).ok()?;
    let head = &head[..n];
    let le32 = |at: usize| {
        head.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    const NO_NOTE: &str = "";
    let found = if head.starts_with(b"KDMV") {
        ("VMDK (sparse)", NO_NOTE)
    } else if head.starts_with(b"# Disk DescriptorFile") {
        (
            "VMDK descriptor",
            " (name the descriptor, with its extents beside it)",
        )
    } else if head.starts_with(b"vhdxfile") {
        ("VHDX", NO_NOTE)
    } else if head.starts_with(b"conectix") {
        ("VHD (vpc)", NO_NOTE)
    } else if le32(64) == Some(0xbeda_107f) {
        ("VDI", NO_NOTE)
    } else if head.starts_with(b"QFI\xfb") {
        return None;
    } else if head.starts_with(b"QED\0") {
        ("QED", NO_NOTE)
    } else if head.starts_with(b"WithoutFreeSpace") || head.starts_with(b"WithouFreSpacExt") {
        ("Parallels", NO_NOTE)
    } else if head.starts_with(b"Bochs Virtual HD Image") {
        ("Bochs", NO_NOTE)
    } else if head.starts_with(b"#!/bin/sh\n#V2.0 Format\n") {
        ("cloop", NO_NOTE)
    } else if head.starts_with(b"LUKS\xba\xbe") {
        (
            "LUKS-encrypted",
            " (it must be opened with its key: `qemu-img convert --object secret,… --image-opts …`)",
        )
    } else {
        return None;
    };
    Some(found)
}

pub fn is_qcow2(dev: &dyn BlockDev) -> bool {
    let mut m = [0u8; 4];
    dev.len() >= 4 && dev.read_at(&mut m, 0).is_ok() && u32::from_be_bytes(m) == MAGIC
}

impl Image {
    /// Open a qcow2 file and its backing chain.
    pub fn open(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Image> {
        let path = path.as_ref();
        let dev_err = |e| Error::Device {
            image: path.to_owned(),
            op: "open",
            source: e,
        };
        let dev = if opts.write {
            FileDev::open_read_write(path)
        } else {
            FileDev::open_read_only(path)
        }
        .map_err(dev_err)?;
        let canonical = path.canonicalize().map_err(|e| Error::Device {
            image: path.to_owned(),
            op: "resolve path",
            source: kiln_blockdev::Error::Io {
                op: Op::Open,
                path: path.to_owned(),
                offset: 0,
                len: 0,
                source: e,
            },
        })?;
        let allowed = match &opts.allowed_backing_dir {
            Some(d) => d.canonicalize().map_err(|e| Error::Device {
                image: d.clone(),
                op: "resolve the allowed backing directory",
                source: kiln_blockdev::Error::Io {
                    op: Op::Open,
                    path: d.clone(),
                    offset: 0,
                    len: 0,
                    source: e,
                },
            })?,
            None => canonical.parent().unwrap_or(Path::new("/")).to_owned(),
        };
        let mut seen = HashSet::from([canonical.clone()]);
        Self::open_inner(
            Box::new(dev),
            path.to_owned(),
            &canonical,
            opts.write,
            &allowed,
            opts.max_chain_depth,
            &mut seen,
        )
    }

    /// Open an image held in arbitrary storage. A backing file it names is resolved relative to
    /// `name`'s directory and must lie inside `allowed_backing_dir`.
    pub fn open_storage(
        storage: Box<dyn Storage>,
        name: impl Into<PathBuf>,
        opts: &OpenOptions,
    ) -> Result<Image> {
        let name = name.into();
        let dir = opts
            .allowed_backing_dir
            .clone()
            .or_else(|| name.parent().map(Path::to_owned))
            .unwrap_or_else(|| PathBuf::from("/"));
        let allowed = dir.canonicalize().unwrap_or(dir);
        let mut seen = HashSet::new();
        let canonical = name.clone();
        Self::open_inner(
            storage,
            name,
            &canonical,
            opts.write,
            &allowed,
            opts.max_chain_depth,
            &mut seen,
        )
    }

    fn open_inner(
        file: Box<dyn Storage>,
        path: PathBuf,
        canonical: &Path,
        write: bool,
        allowed: &Path,
        depth_left: usize,
        seen: &mut HashSet<PathBuf>,
    ) -> Result<Image> {
        let file_len = file.len();
        let mut head = vec![0u8; file_len.min(2 << 20) as usize];
        file.read_at(&mut head, 0).map_err(|e| Error::Device {
            image: path.clone(),
            op: "read header",
            source: e,
        })?;
        let header = Header::parse(&head, file_len, &path)?;
        if header.l1_size as u64 * 8 > MAX_L1_BYTES {
            return Err(Error::InvalidHeader {
                image: path,
                field: "l1_size",
                value: header.l1_size as u64,
            });
        }
        let mut l1_bytes = vec![0u8; header.l1_size as usize * 8];
        file.read_at(&mut l1_bytes, header.l1_table_offset)
            .map_err(|e| Error::Device {
                image: path.clone(),
                op: "read L1 table",
                source: e,
            })?;
        let l1: Vec<u64> = l1_bytes
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();

        let backing = match &header.backing_file {
            None => None,
            Some(name) => Some(Self::open_backing(
                &path,
                canonical,
                name,
                header.backing_format.as_deref(),
                allowed,
                depth_left,
                seen,
            )?),
        };

        let mut image = Image {
            file,
            path,
            header,
            backing,
            l1: RwLock::new(l1),
            l2_cache: Mutex::new(HashMap::new()),
            zcache: Mutex::new(Vec::new()),
            write: None,
        };
        if write {
            image.begin_write()?;
        }
        Ok(image)
    }

    fn open_backing(
        image: &Path,
        canonical: &Path,
        name: &str,
        format: Option<&str>,
        allowed: &Path,
        depth_left: usize,
        seen: &mut HashSet<PathBuf>,
    ) -> Result<Backing> {
        let invalid = |reason| Error::BackingNameInvalid {
            image: image.to_owned(),
            name: name.to_owned(),
            reason,
        };
        if name.starts_with("json:") || name.contains("://") {
            return Err(invalid("protocol and json: backing names are never opened"));
        }
        if depth_left == 0 {
            return Err(Error::BackingChainTooDeep {
                image: image.to_owned(),
                max: DEFAULT_MAX_CHAIN_DEPTH,
            });
        }
        let dir = canonical.parent().unwrap_or(Path::new("/"));
        let joined = dir.join(name);
        let resolved = joined.canonicalize().map_err(|e| Error::Device {
            image: image.to_owned(),
            op: "open backing file",
            source: kiln_blockdev::Error::Io {
                op: Op::Open,
                path: joined.clone(),
                offset: 0,
                len: 0,
                source: e,
            },
        })?;
        if !resolved.starts_with(allowed) {
            return Err(Error::BackingOutsideAllowedDir {
                image: image.to_owned(),
                backing: resolved,
                allowed: allowed.to_owned(),
            });
        }
        if !seen.insert(resolved.clone()) {
            return Err(Error::BackingChainCycle {
                image: image.to_owned(),
                backing: resolved,
            });
        }
        let dev = FileDev::open_read_only(&resolved).map_err(|e| Error::Device {
            image: image.to_owned(),
            op: "open backing file",
            source: e,
        })?;
        let as_qcow2 = match format {
            Some("qcow2") => true,
            Some("raw") => false,
            Some(other) => {
                return Err(Error::Unsupported {
                    image: image.to_owned(),
                    feature: format!("backing format {other:?}"),
                });
            }
            None => is_qcow2(&dev),
        };
        if as_qcow2 {
            let img = Self::open_inner(
                Box::new(dev),
                resolved.clone(),
                &resolved,
                false,
                allowed,
                depth_left - 1,
                seen,
            )?;
            Ok(Backing::Qcow2(Box::new(img)))
        } else {
            Ok(Backing::Raw {
                path: resolved,
                dev,
            })
        }
    }

    /// Rebuild the reference counts from the metadata, mark the image dirty and get ready to write.
    fn begin_write(&mut self) -> Result<()> {
        let h = &self.header;
        let unsupported = |f: &str| Error::Unsupported {
            image: self.path.clone(),
            feature: f.to_owned(),
        };
        if h.version < 3 {
            return Err(unsupported(
                "writing to a qcow2 version 2 image (convert it to v3 first)",
            ));
        }
        if h.nb_snapshots > 0 {
            return Err(unsupported("writing to an image with internal snapshots"));
        }
        let cs = h.cluster_size();
        let file_len = self.file.len();
        let mut rc = Refcounts::new(h.cluster_bits, h.refcount_order);
        let p = self.path.clone();
        rc.incr_range(0, cs, &p)?;
        if h.l1_size > 0 {
            rc.incr_range(h.l1_table_offset, h.l1_size as u64 * 8, &p)?;
        }
        let mut table = RefcountTable {
            offset: h.refcount_table_offset,
            clusters: h.refcount_table_clusters as u64,
            blocks: Vec::new(),
        };
        if table.clusters > 0 {
            rc.incr_range(table.offset, table.clusters * cs, &p)?;
            let mut tbuf = vec![0u8; (table.clusters * cs) as usize];
            self.file
                .read_at(&mut tbuf, table.offset)
                .map_err(|e| Error::Device {
                    image: p.clone(),
                    op: "read refcount table",
                    source: e,
                })?;
            for c in tbuf.chunks_exact(8) {
                let off = u64::from_be_bytes(c.try_into().unwrap_or([0; 8])) & L1_OFFSET_MASK;
                if off != 0 {
                    self.check_cluster("refcount block", off, file_len)?;
                    rc.incr_range(off, cs, &p)?;
                }
                table.blocks.push(off);
            }
            while table.blocks.last() == Some(&0) {
                table.blocks.pop();
            }
        }
        let l1 = self.l1.read().unwrap_or_else(|e| e.into_inner()).clone();
        for &e in &l1 {
            let l2off = e & L1_OFFSET_MASK;
            if l2off == 0 {
                continue;
            }
            rc.incr_range(l2off, cs, &p)?;
            let table = self.l2_table(l2off)?;
            for &entry in table.iter() {
                match self.decode(entry)? {
                    Mapping::Data { host }
                    | Mapping::Zero {
                        prealloc: Some(host),
                    } => rc.incr_range(host, cs, &p)?,
                    Mapping::Compressed { host, len } => rc.incr_range(host, len, &p)?,
                    Mapping::Zero { prealloc: None } | Mapping::Unallocated => {}
                }
            }
        }
        // Mark dirty: until close writes the refcounts, the on-disk ones are stale. Unknown autoclear
        // features are cleared, as the specification requires of writers that don't maintain them.
        let mut patch = [0u8; 24];
        patch[..8].copy_from_slice(&(h.incompatible_features | INCOMPAT_DIRTY).to_be_bytes());
        patch[8..16].copy_from_slice(&h.compatible_features.to_be_bytes());
        self.file
            .write_at(&patch, 72)
            .and_then(|()| self.file.flush())
            .map_err(|e| Error::Device {
                image: p.clone(),
                op: "mark image dirty",
                source: e,
            })?;
        let file_end = file_len.div_ceil(cs) * cs;
        self.write = Some(Mutex::new(WriteState {
            rc,
            table,
            file_end,
            changed: false,
        }));
        Ok(())
    }

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

    pub fn is_empty(&self) -> bool {
        self.header.size == 0
    }

    pub fn cluster_size(&self) -> u64 {
        self.header.cluster_size()
    }

    /// Size of the image file in bytes.
    pub fn file_len(&self) -> u64 {
        self.file.len()
    }

    pub fn is_writable(&self) -> bool {
        self.write.is_some()
    }

    fn check_cluster(&self, what: &'static str, off: u64, file_len: u64) -> Result<()> {
        let cs = self.cluster_size();
        if !off.is_multiple_of(cs) {
            return Err(Error::Misaligned {
                image: self.path.clone(),
                what,
                offset: off,
                align: cs,
            });
        }
        if off.checked_add(cs).is_none_or(|end| end > file_len) {
            return Err(Error::PastEndOfFile {
                image: self.path.clone(),
                what,
                offset: off,
                len: cs,
                file_len,
            });
        }
        Ok(())
    }

    fn l2_table(&self, l2off: u64) -> Result<Arc<Vec<u64>>> {
        if let Some(t) = lock(&self.l2_cache).get(&l2off) {
            return Ok(t.clone());
        }
        self.check_cluster("L2 table", l2off, self.file.len())?;
        let mut buf = vec![0u8; self.cluster_size() as usize];
        self.file
            .read_at(&mut buf, l2off)
            .map_err(|e| Error::Device {
                image: self.path.clone(),
                op: "read L2 table",
                source: e,
            })?;
        let table: Arc<Vec<u64>> = Arc::new(
            buf.chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        );
        let mut cache = lock(&self.l2_cache);
        if cache.len() as u64 * self.cluster_size() >= L2_CACHE_BYTES {
            cache.clear();
        }
        cache.insert(l2off, table.clone());
        Ok(table)
    }

    fn decode(&self, entry: u64) -> Result<Mapping> {
        let cb = self.header.cluster_bits;
        if entry & COMPRESSED != 0 {
            let x = 62 - (cb - 8);
            let host = entry & ((1u64 << x) - 1);
            let nsect = (entry >> x) & ((1u64 << (cb - 8)) - 1);
            let len = (nsect + 1) * 512 - (host & 511);
            if host == 0 || host >= self.file.len() {
                return Err(Error::PastEndOfFile {
                    image: self.path.clone(),
                    what: "compressed cluster",
                    offset: host,
                    len,
                    file_len: self.file.len(),
                });
            }
            return Ok(Mapping::Compressed { host, len });
        }
        let host = entry & L2_OFFSET_MASK;
        if self.header.version >= 3 && entry & ZERO != 0 {
            return Ok(Mapping::Zero {
                prealloc: (host != 0).then_some(host),
            });
        }
        if host == 0 {
            return Ok(Mapping::Unallocated);
        }
        let cs = self.cluster_size();
        if !host.is_multiple_of(cs) {
            return Err(Error::Misaligned {
                image: self.path.clone(),
                what: "data cluster",
                offset: host,
                align: cs,
            });
        }
        if host >= self.file.len() {
            return Err(Error::PastEndOfFile {
                image: self.path.clone(),
                what: "data cluster",
                offset: host,
                len: cs,
                file_len: self.file.len(),
            });
        }
        Ok(Mapping::Data { host })
    }

    /// Where guest cluster `gc` lives in this image (not following the backing chain).
    pub fn map_cluster(&self, gc: u64) -> Result<Mapping> {
        let l2_bits = self.header.cluster_bits - 3;
        let l1i = (gc >> l2_bits) as usize;
        let l1e = self
            .l1
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(l1i)
            .copied()
            .unwrap_or(0);
        let l2off = l1e & L1_OFFSET_MASK;
        if l2off == 0 {
            return Ok(Mapping::Unallocated);
        }
        let table = self.l2_table(l2off)?;
        self.decode(table[(gc & ((1 << l2_bits) - 1)) as usize])
    }

    /// Count the top image's guest clusters by kind.
    pub fn allocation(&self) -> Result<AllocationCounts> {
        let mut counts = AllocationCounts::default();
        let n = self.len().div_ceil(self.cluster_size());
        for gc in 0..n {
            match self.map_cluster(gc)? {
                Mapping::Data { .. } => counts.data += 1,
                Mapping::Compressed { .. } => counts.compressed += 1,
                Mapping::Zero { .. } => counts.zero += 1,
                Mapping::Unallocated => counts.unallocated += 1,
            }
        }
        Ok(counts)
    }

    /// Whether guest bytes `[offset, offset + len)` are known to read as zeros from metadata alone
    /// (zero or unallocated in every image of the chain, or past the end of a backing image). Never
    /// reads data; a raw backing file counts as data.
    pub fn range_is_zero(&self, offset: u64, len: u64) -> Result<bool> {
        let end = offset.saturating_add(len).min(self.len());
        let cs = self.cluster_size();
        let mut pos = offset;
        while pos < end {
            let gc = pos / cs;
            let next = ((gc + 1) * cs).min(end);
            match self.map_cluster(gc)? {
                Mapping::Data { .. } | Mapping::Compressed { .. } => return Ok(false),
                Mapping::Zero { .. } => {}
                Mapping::Unallocated => match &self.backing {
                    None => {}
                    Some(b) if pos >= b.len() => {}
                    Some(Backing::Raw { .. }) => return Ok(false),
                    Some(Backing::Qcow2(b))
                        if !b.range_is_zero(pos, next.min(b.len()) - pos)? =>
                    {
                        return Ok(false);
                    }
                    Some(Backing::Qcow2(_)) => {}
                },
            }
            pos = next;
        }
        Ok(true)
    }

    /// If guest cluster `gc` resolves, through the chain, to a compressed cluster stored in some image
    /// with this image's cluster size and the given compression type, return that image and the
    /// stored bytes' location. Used by the flatten writer's passthrough.
    pub fn resolve_compressed(
        &self,
        gc: u64,
        ty: CompressionType,
    ) -> Result<Option<(&Image, u64, u64)>> {
        let cs = self.cluster_size();
        let mut img = self;
        loop {
            if img.cluster_size() != cs || (gc + 1) * cs > img.len() {
                return Ok(None);
            }
            match img.map_cluster(gc)? {
                Mapping::Compressed { host, len } => {
                    let ok = img.header.compression_type == ty && len <= cs;
                    return Ok(ok.then_some((img, host, len)));
                }
                Mapping::Unallocated => match &img.backing {
                    Some(Backing::Qcow2(b)) => img = b,
                    _ => return Ok(None),
                },
                _ => return Ok(None),
            }
        }
    }

    /// The stored bytes of a compressed cluster (clamped to the end of the file).
    pub fn read_stored(&self, host: u64, len: u64) -> Result<Vec<u8>> {
        let avail = self.file.len().saturating_sub(host).min(len);
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_at(&mut buf[..avail as usize], host)
            .map_err(|e| Error::Device {
                image: self.path.clone(),
                op: "read compressed cluster",
                source: e,
            })?;
        Ok(buf)
    }

    /// The stored bytes of guest cluster `gc`'s compressed data at `host`, checked to decompress
    /// to a whole cluster first — so that copying them as they are (flatten's passthrough) never
    /// turns a broken input into a broken output without a word.
    pub fn read_stored_verified(&self, gc: u64, host: u64, len: u64) -> Result<Vec<u8>> {
        let stored = self.read_stored(host, len)?;
        self.decompress_stored(gc, host, &stored)?;
        Ok(stored)
    }

    /// Decompress the stored bytes of guest cluster `gc` (at `host`) into a whole cluster.
    fn decompress_stored(&self, gc: u64, host: u64, stored: &[u8]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.cluster_size() as usize];
        codec::decompress(self.header.compression_type, stored, &mut out).map_err(|reason| {
            Error::Decompress {
                image: self.path.clone(),
                guest_offset: gc * self.cluster_size(),
                host_offset: host,
                reason,
            }
        })?;
        Ok(out)
    }

    fn decompressed(&self, gc: u64, host: u64, len: u64) -> Result<Arc<Vec<u8>>> {
        if let Some((_, d)) = lock(&self.zcache).iter().find(|(h, _)| *h == host) {
            return Ok(d.clone());
        }
        let out = self.decompress_stored(gc, host, &self.read_stored(host, len)?)?;
        let out = Arc::new(out);
        let mut z = lock(&self.zcache);
        if z.len() >= 8 {
            z.remove(0);
        }
        z.push((host, out.clone()));
        Ok(out)
    }

    /// Read guest bytes through the chain.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        kiln_blockdev::check_range(Op::Read, offset, buf.len() as u64, self.len()).map_err(
            |e| Error::Device {
                image: self.path.clone(),
                op: "read",
                source: e,
            },
        )?;
        let cs = self.cluster_size();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let gc = pos / cs;
            let in_off = pos % cs;
            let n = ((cs - in_off) as usize).min(buf.len() - done);
            self.read_in_cluster(gc, in_off, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn read_in_cluster(&self, gc: u64, in_off: u64, buf: &mut [u8]) -> Result<()> {
        let cs = self.cluster_size();
        match self.map_cluster(gc)? {
            Mapping::Data { host } => {
                // A data cluster may end past the end of the file (qemu trims trailing zeros);
                // bytes there read as zeros.
                let start = host + in_off;
                let avail = self.file.len().saturating_sub(start).min(buf.len() as u64) as usize;
                self.file
                    .read_at(&mut buf[..avail], start)
                    .map_err(|e| Error::Device {
                        image: self.path.clone(),
                        op: "read data cluster",
                        source: e,
                    })?;
                buf[avail..].fill(0);
            }
            Mapping::Compressed { host, len } if in_off == 0 && buf.len() as u64 == cs => {
                // A whole cluster: decompress straight into the caller's buffer.
                let stored = self.read_stored(host, len)?;
                codec::decompress(self.header.compression_type, &stored, buf).map_err(
                    |reason| Error::Decompress {
                        image: self.path.clone(),
                        guest_offset: gc * cs,
                        host_offset: host,
                        reason,
                    },
                )?;
            }
            Mapping::Compressed { host, len } => {
                let data = self.decompressed(gc, host, len)?;
                buf.copy_from_slice(&data[in_off as usize..in_off as usize + buf.len()]);
            }
            Mapping::Zero { .. } => buf.fill(0),
            Mapping::Unallocated => {
                let pos = gc * cs + in_off;
                match &self.backing {
                    Some(b) if pos < b.len() => {
                        let n = (b.len() - pos).min(buf.len() as u64) as usize;
                        b.read_at(&mut buf[..n], pos)?;
                        buf[n..].fill(0);
                    }
                    _ => buf.fill(0),
                }
            }
        }
        Ok(())
    }

    /// Write guest bytes, copying on write into this image.
    pub fn write(&self, buf: &[u8], offset: u64) -> Result<()> {
        let Some(ws) = &self.write else {
            return Err(Error::ReadOnly {
                image: self.path.clone(),
                op: "write",
            });
        };
        kiln_blockdev::check_range(Op::Write, offset, buf.len() as u64, self.len()).map_err(
            |e| Error::Device {
                image: self.path.clone(),
                op: "write",
                source: e,
            },
        )?;
        let mut st = lock(ws);
        let cs = self.cluster_size();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let gc = pos / cs;
            let in_off = pos % cs;
            let n = ((cs - in_off) as usize).min(buf.len() - done);
            self.write_in_cluster(&mut st, gc, in_off, &buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn write_in_cluster(
        &self,
        st: &mut WriteState,
        gc: u64,
        in_off: u64,
        data: &[u8],
    ) -> Result<()> {
        let cs = self.cluster_size();
        let cb = self.header.cluster_bits;
        let mapping = self.map_cluster(gc)?;
        if let Mapping::Data { host } = mapping
            && st.rc.get(host >> cb) == 1
        {
            return self
                .file
                .write_at_grow(data, host + in_off)
                .map_err(|e| Error::Device {
                    image: self.path.clone(),
                    op: "write data cluster",
                    source: e,
                });
        }
        let guest_end = ((gc + 1) * cs).min(self.len());
        let covers = in_off == 0 && gc * cs + data.len() as u64 == guest_end;
        if covers && data.iter().all(|&b| b == 0) {
            let entry = if self.backing.is_some() { ZERO } else { 0 };
            let already = match mapping {
                Mapping::Zero { prealloc: None } => true,
                Mapping::Unallocated => entry == 0,
                _ => false,
            };
            if !already {
                self.set_l2(st, gc, entry)?;
                self.release(st, mapping);
            }
            return Ok(());
        }
        let mut cluster = vec![0u8; cs as usize];
        if !covers {
            let valid = (guest_end - gc * cs) as usize;
            self.read_in_cluster(gc, 0, &mut cluster[..valid])?;
        }
        cluster[in_off as usize..in_off as usize + data.len()].copy_from_slice(data);
        let host = self.alloc(st, 1)?;
        self.file
            .write_at_grow(&cluster, host)
            .map_err(|e| Error::Device {
                image: self.path.clone(),
                op: "write new data cluster",
                source: e,
            })?;
        self.set_l2(st, gc, host | COPIED)?;
        self.release(st, mapping);
        Ok(())
    }

    fn alloc(&self, st: &mut WriteState, n: u64) -> Result<u64> {
        let off = st.file_end;
        let len = n * self.cluster_size();
        st.rc.incr_range(off, len, &self.path)?;
        st.file_end += len;
        st.changed = true;
        Ok(off)
    }

    fn release(&self, st: &mut WriteState, old: Mapping) {
        match old {
            Mapping::Data { host }
            | Mapping::Zero {
                prealloc: Some(host),
            } => st.rc.decr_range(host, self.cluster_size()),
            Mapping::Compressed { host, len } => st.rc.decr_range(host, len),
            Mapping::Zero { prealloc: None } | Mapping::Unallocated => return,
        }
        st.changed = true;
    }

    fn set_l2(&self, st: &mut WriteState, gc: u64, entry: u64) -> Result<()> {
        let cb = self.header.cluster_bits;
        let l2_bits = cb - 3;
        let l1i = (gc >> l2_bits) as usize;
        let l2i = (gc & ((1 << l2_bits) - 1)) as usize;
        let dev_err = |op| {
            move |e| Error::Device {
                image: self.path.clone(),
                op,
                source: e,
            }
        };
        let l1e = self.l1.read().unwrap_or_else(|e| e.into_inner())[l1i];
        let mut l2off = l1e & L1_OFFSET_MASK;
        if l2off == 0 || st.rc.get(l2off >> cb) != 1 {
            // A new L2 table (or a private copy of a shared one).
            let table: Vec<u64> = if l2off == 0 {
                vec![0; self.header.l2_entries() as usize]
            } else {
                (*self.l2_table(l2off)?).clone()
            };
            let new = self.alloc(st, 1)?;
            let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.file
                .write_at_grow(&bytes, new)
                .map_err(dev_err("write L2 table"))?;
            if l2off != 0 {
                st.rc.decr_range(l2off, self.cluster_size());
                lock(&self.l2_cache).remove(&l2off);
            }
            lock(&self.l2_cache).insert(new, Arc::new(table));
            self.file
                .write_at(
                    &(new | COPIED).to_be_bytes(),
                    self.header.l1_table_offset + 8 * l1i as u64,
                )
                .map_err(dev_err("write L1 entry"))?;
            self.l1.write().unwrap_or_else(|e| e.into_inner())[l1i] = new | COPIED;
            l2off = new;
        }
        let table = self.l2_table(l2off)?;
        let mut table = (*table).clone();
        table[l2i] = entry;
        lock(&self.l2_cache).insert(l2off, Arc::new(table));
        self.file
            .write_at(&entry.to_be_bytes(), l2off + 8 * l2i as u64)
            .map_err(dev_err("write L2 entry"))?;
        Ok(())
    }

    /// Write the reference counts, clear the dirty bit and flush. Without a successful close a written
    /// image keeps its dirty bit (kiln refuses it, qemu repairs it): dropping an `Image` never
    /// flushes and never reports errors.
    #[must_use = "close reports whether the image was written completely"]
    pub fn close(self) -> Result<()> {
        let Some(ws) = self.write else {
            return Ok(());
        };
        let mut st = ws.into_inner().unwrap_or_else(|e| e.into_inner());
        let path: &Path = &self.path;
        let dev_err = |op: &'static str| {
            move |e| Error::Device {
                image: path.to_owned(),
                op,
                source: e,
            }
        };
        if st.changed || st.table.clusters == 0 {
            let WriteState {
                rc,
                table,
                file_end,
                ..
            } = &mut st;
            let writes = refcount::layout(rc, table, file_end, &self.path)?;
            for (off, bytes) in writes {
                self.file
                    .write_at_grow(&bytes, off)
                    .map_err(dev_err("write refcounts"))?;
            }
        }
        // Every allocated cluster must lie inside the file.
        if self.file.len() < st.file_end {
            self.file
                .write_at_grow(&[0], st.file_end - 1)
                .map_err(dev_err("extend file"))?;
        }
        self.file.flush().map_err(dev_err("flush"))?;
        let mut patch = [0u8; 8 + 4];
        patch[..8].copy_from_slice(&st.table.offset.to_be_bytes());
        patch[8..].copy_from_slice(&(st.table.clusters as u32).to_be_bytes());
        self.file
            .write_at(&patch, 48)
            .map_err(dev_err("write header"))?;
        let incompat = self.header.incompatible_features & !INCOMPAT_DIRTY;
        let mut feat = [0u8; 24];
        feat[..8].copy_from_slice(&incompat.to_be_bytes());
        feat[8..16].copy_from_slice(&self.header.compatible_features.to_be_bytes());
        // autoclear (16..24) stays zero: kiln maintains none of those features.
        self.file
            .write_at(&feat, 72)
            .map_err(dev_err("clear dirty bit"))?;
        self.file.flush().map_err(dev_err("flush"))?;
        Ok(())
    }

    /// Create a new, empty v3 image in `storage` (which must be empty), open for writing.
    pub fn create(
        storage: Box<dyn Storage>,
        name: impl Into<PathBuf>,
        opts: CreateOptions,
    ) -> Result<Image> {
        let name = name.into();
        let cb = opts.cluster_bits;
        if !(9..=21).contains(&cb) {
            return Err(Error::InvalidHeader {
                image: name,
                field: "cluster_bits",
                value: cb as u64,
            });
        }
        if opts.size > crate::header::MAX_VIRTUAL_SIZE || !opts.size.is_multiple_of(512) {
            return Err(Error::InvalidHeader {
                image: name,
                field: "size",
                value: opts.size,
            });
        }
        let cs = 1u64 << cb;
        let l1_size = Header::l1_entries_for(opts.size, cb);
        let l1_clusters = (l1_size * 8).div_ceil(cs).max(1);
        let (backing, backing_name, backing_format) = match opts.backing {
            Some(b) => {
                let fmt = match &b.image {
                    Backing::Qcow2(_) => "qcow2",
                    Backing::Raw { .. } => "raw",
                };
                (Some(b.image), Some(b.name), Some(fmt.to_owned()))
            }
            None => (None, None, None),
        };
        let header = Header {
            version: 3,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits: cb,
            size: opts.size,
            crypt_method: 0,
            l1_size: l1_size as u32,
            l1_table_offset: cs,
            refcount_table_offset: 0,
            refcount_table_clusters: 0,
            nb_snapshots: 0,
            snapshots_offset: 0,
            // The in-memory header must carry what `encode` writes: `close` rewrites this field.
            incompatible_features: if opts.compression == CompressionType::Zlib {
                0
            } else {
                INCOMPAT_COMPRESSION
            },
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: crate::header::V3_HEADER_LEN,
            compression_type: opts.compression,
            backing_file: backing_name,
            backing_format,
        };
        if header.encoded_len() > cs as usize {
            return Err(Error::BackingNameInvalid {
                image: name,
                name: header.backing_file.clone().unwrap_or_default(),
                reason: "too long to fit in the header cluster",
            });
        }
        let mut first = header.encode();
        first[79] |= INCOMPAT_DIRTY as u8;
        let dev_err = |e| Error::Device {
            image: name.clone(),
            op: "write new image",
            source: e,
        };
        storage.write_at_grow(&first, 0).map_err(dev_err)?;
        storage
            .write_at_grow(&vec![0u8; (l1_clusters * cs) as usize], cs)
            .map_err(dev_err)?;
        let mut rc = Refcounts::new(cb, 4);
        rc.incr_range(0, cs * (1 + l1_clusters), &name)?;
        Ok(Image {
            file: storage,
            path: name,
            header,
            backing,
            l1: RwLock::new(vec![0; l1_size as usize]),
            l2_cache: Mutex::new(HashMap::new()),
            zcache: Mutex::new(Vec::new()),
            write: Some(Mutex::new(WriteState {
                rc,
                table: RefcountTable::default(),
                file_end: cs * (1 + l1_clusters),
                changed: true,
            })),
        })
    }
}

/// The backing image of a new overlay and the name recorded for it.
#[derive(Debug)]
pub struct NewBacking {
    pub image: Backing,
    /// The name stored in the header (relative to the overlay's directory).
    pub name: String,
}

/// Parameters of a new image.
#[derive(Debug)]
pub struct CreateOptions {
    pub size: u64,
    pub cluster_bits: u32,
    pub compression: CompressionType,
    pub backing: Option<NewBacking>,
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

/// The name to record in `overlay` for `backing`: relative to the overlay's directory.
pub fn relative_backing_name(overlay: &Path, backing: &Path) -> std::io::Result<String> {
    let odir = overlay
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    relative_name(&odir.canonicalize()?, &backing.canonicalize()?)
}

/// `to` relative to the directory `from_dir` (both absolute and canonical), as the UTF-8 name qemu
/// resolves against an overlay's directory. For callers that plan an overlay in a directory that
/// does not exist yet; [`relative_backing_name`] is the usual entry.
pub fn relative_name(from_dir: &Path, to: &Path) -> std::io::Result<String> {
    let oc: Vec<Component<'_>> = from_dir.components().collect();
    let bc: Vec<Component<'_>> = to.components().collect();
    let common = oc.iter().zip(&bc).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..oc.len() {
        rel.push("..");
    }
    for c in &bc[common..] {
        rel.push(c.as_os_str());
    }
    rel.into_os_string().into_string().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "backing path is not UTF-8",
        )
    })
}
