//! kiln's qcow2 engine: read any qcow2 v2/v3 image and its backing chain, write copy-on-write into
//! overlays, and flatten a chain into one standalone, deterministic qcow2.
//!
//! ```text
//!   Disk::open(path) ──► Disk::Qcow2(Image) ─ backing ─► Image ─ backing ─► raw / qcow2 …
//!                    └─► Disk::Raw(FileDev)
//!   Image: map_cluster(gc) → Data | Compressed | Zero | Unallocated  (one image of the chain)
//!          read / write (copy-on-write) / close (refcounts, clear dirty bit)
//!   flatten(Disk) → new qcow2: guest order, zero clusters dropped, compressed passthrough
//! ```
//!
//! Supported: versions 2 and 3, cluster sizes 512 B – 2 MiB, refcount widths 1–64 bits, zlib and zstd
//! compressed clusters, zero clusters, qcow2 and raw backing files. Refused with a clear error:
//! encryption, external data files, extended L2 entries, a set corrupt bit, unknown incompatible
//! features, writing to v2 images, images with internal snapshots or images with the dirty bit set
//! (a lazy-refcounts image whose writer died reads fine: reading never uses the refcounts).
//!
//! Backing files are only opened inside an allowed directory (by default the top image's own
//! directory) and chains are capped at [`DEFAULT_MAX_CHAIN_DEPTH`] images, so an untrusted header
//! cannot make kiln open arbitrary host files.
//!
//! A raw 8 MiB base in a temporary directory, a qcow2 overlay written over it, read back through
//! the chain, then flattened into one standalone compressed image:
//!
//! ```
//! use kiln_blockdev::BlockDev;
//! use kiln_qcow2::{Disk, FlattenOptions, Mapping, OpenOptions, create_overlay, flatten_to_path};
//!
//! let dir = tempfile::tempdir()?;
//! let base = dir.path().join("base.raw");
//! std::fs::write(&base, vec![0xAB; 8 << 20])?;
//!
//! // The overlay: 16 MiB virtual (the base covers the first 8), 64 KiB clusters.
//! let node = dir.path().join("node.qcow2");
//! let overlay = create_overlay(&node, &base, Some(16 << 20), &OpenOptions::default())?;
//! overlay.write_at(b"hello", 1 << 20)?; // copy-on-write of one cluster
//! assert!(matches!(overlay.map_cluster(16)?, Mapping::Data { .. }));
//! assert_eq!(overlay.map_cluster(0)?, Mapping::Unallocated);
//! overlay.close()?; // refcounts written, dirty bit cleared
//!
//! let disk = Disk::open(&node, &OpenOptions::default())?;
//! assert_eq!(disk.files(), [node.as_path(), base.as_path()]);
//! let mut buf = [0u8; 7];
//! disk.read_at(&mut buf, (1 << 20) - 1)?;
//! assert_eq!(&buf, b"\xABhello\xAB");
//! disk.read_at(&mut buf, 12 << 20)?; // past the base: zeros
//! assert_eq!(buf, [0; 7]);
//!
//! let flat = dir.path().join("flat.qcow2");
//! let stats = flatten_to_path(&disk, &flat, &FlattenOptions::default(), &|_done, _total| {})?;
//! assert_eq!(stats.clusters, 256);
//! assert_eq!(stats.zero, 128); // the upper 8 MiB stay unallocated
//! let flat = Disk::open(&flat, &OpenOptions::default())?;
//! assert_eq!(flat.files().len(), 1); // no backing file any more
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

mod codec;
mod error;
mod flatten;
mod header;
mod image;
mod refcount;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_blockdev::{AtomicFile, BlockDev, FileDev};

pub use error::{Error, Result};
pub use flatten::{
    FlattenOptions, FlattenStats, export_raw, export_raw_into, flatten, flatten_to_path,
};
pub use header::{CompressionType, Header};
pub use image::{
    AllocationCounts, Backing, CreateOptions, DEFAULT_MAX_CHAIN_DEPTH, Image, Mapping, NewBacking,
    OpenOptions, Storage, compressed_format, foreign_format, is_qcow2, relative_backing_name,
    relative_name,
};

#[doc(hidden)]
pub mod codec_api {
    //! Exposed for fuzzing and benches only.
    pub use crate::codec::{compress, decompress};
}

/// Any disk image kiln reads: qcow2 (with its chain) or raw.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per open image, never stored in bulk
pub enum Disk {
    /// A file starting with the qcow2 magic, opened with its backing chain.
    Qcow2(Image),
    /// Any other file (not one of the formats [`foreign_format`] recognises): its bytes are the
    /// guest's.
    Raw(FileDev),
}

impl Disk {
    /// Open `path`, recognising qcow2 by its magic; anything else is raw. With `opts.write`, the file
    /// is opened for writing.
    pub fn open(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Disk> {
        let path = path.as_ref();
        let dev = FileDev::open_read_only(path).map_err(|e| Error::Device {
            image: path.to_owned(),
            op: "open",
            source: e,
        })?;
        if is_qcow2(&dev) {
            drop(dev);
            Ok(Disk::Qcow2(Image::open(path, opts)?))
        } else if let Some((format, tool)) = compressed_format(&dev) {
            Err(Error::Compressed {
                image: path.to_owned(),
                format,
                tool,
            })
        } else if let Some((format, note)) = foreign_format(&dev) {
            Err(Error::ForeignFormat {
                image: path.to_owned(),
                format,
                note,
            })
        } else if opts.write {
            let dev = FileDev::open_read_write(path).map_err(|e| Error::Device {
                image: path.to_owned(),
                op: "open",
                source: e,
            })?;
            Ok(Disk::Raw(dev))
        } else {
            Ok(Disk::Raw(dev))
        }
    }

    /// Read guest bytes.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        match self {
            Disk::Qcow2(i) => i.read(buf, offset),
            Disk::Raw(d) => d.read_at(buf, offset).map_err(|e| Error::Device {
                image: d.path().to_owned(),
                op: "read",
                source: e,
            }),
        }
    }

    /// Whether `[offset, offset + len)` reads as zeros, from metadata alone (always `false` for raw).
    pub fn range_is_zero(&self, offset: u64, len: u64) -> Result<bool> {
        match self {
            Disk::Qcow2(i) => i.range_is_zero(offset, len),
            Disk::Raw(_) => Ok(false),
        }
    }

    /// How many bytes from `offset` (up to `len`) metadata alone shows to read as zeros
    /// ([`Image::known_zero_len`]; always 0 for raw).
    pub fn known_zero_len(&self, offset: u64, len: u64) -> Result<u64> {
        match self {
            Disk::Qcow2(i) => i.known_zero_len(offset, len),
            Disk::Raw(_) => Ok(0),
        }
    }

    /// Every file this disk reads, the top image first, then each backing file down the chain.
    pub fn files(&self) -> Vec<&Path> {
        match self {
            Disk::Raw(d) => vec![d.path()],
            Disk::Qcow2(top) => {
                let mut out = vec![top.path()];
                let mut img = top;
                while let Some(b) = img.backing() {
                    out.push(b.path());
                    match b {
                        Backing::Qcow2(next) => img = next,
                        Backing::Raw { .. } => break,
                    }
                }
                out
            }
        }
    }

    /// `"qcow2"` or `"raw"`.
    pub fn format(&self) -> &'static str {
        match self {
            Disk::Qcow2(_) => "qcow2",
            Disk::Raw(_) => "raw",
        }
    }

    /// Finish: a written qcow2 gets its refcounts and a clean header; a raw file is flushed.
    #[must_use = "close reports whether the image was written completely"]
    pub fn close(self) -> Result<()> {
        match self {
            Disk::Qcow2(i) => i.close(),
            Disk::Raw(d) => d.flush().map_err(|e| Error::Device {
                image: d.path().to_owned(),
                op: "flush",
                source: e,
            }),
        }
    }
}

impl BlockDev for Disk {
    fn len(&self) -> u64 {
        match self {
            Disk::Qcow2(i) => BlockDev::len(i),
            Disk::Raw(d) => d.len(),
        }
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> kiln_blockdev::Result<()> {
        match self {
            Disk::Qcow2(i) => i.read_at(buf, offset),
            Disk::Raw(d) => d.read_at(buf, offset),
        }
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> kiln_blockdev::Result<()> {
        match self {
            Disk::Qcow2(i) => i.write_at(buf, offset),
            Disk::Raw(d) => d.write_at(buf, offset),
        }
    }
    fn flush(&self) -> kiln_blockdev::Result<()> {
        match self {
            Disk::Qcow2(i) => i.flush(),
            Disk::Raw(d) => d.flush(),
        }
    }
    fn is_read_only(&self) -> bool {
        match self {
            Disk::Qcow2(i) => i.is_read_only(),
            Disk::Raw(d) => d.is_read_only(),
        }
    }
}

/// Open the image that will back a new overlay at `overlay`, and the name to record for it
/// (relative to the overlay's directory). The backing's own chain is checked with `opts`.
pub fn open_new_backing(overlay: &Path, backing: &Path, opts: &OpenOptions) -> Result<NewBacking> {
    let read_only = OpenOptions {
        write: false,
        ..opts.clone()
    };
    let image = match Disk::open(backing, &read_only)? {
        Disk::Qcow2(i) => Backing::Qcow2(Box::new(i)),
        Disk::Raw(dev) => Backing::Raw {
            path: backing.to_owned(),
            dev,
        },
    };
    let name = relative_backing_name(overlay, backing)
        .map_err(|e| Error::path(overlay, "compute the relative backing path", backing, e))?;
    Ok(NewBacking { image, name })
}

/// An overlay being written to a temporary file; [`PendingOverlay::commit`] closes it and renames it
/// into place. Dropped uncommitted, nothing is left behind.
#[derive(Debug)]
pub struct PendingOverlay {
    image: Image,
    file: AtomicFile,
}

impl PendingOverlay {
    /// The overlay, open for writing.
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// Close the image (refcounts, clean header) and rename it to its final name.
    #[must_use = "commit reports whether the overlay was written completely"]
    pub fn commit(self) -> Result<PathBuf> {
        let dest = self.file.dest().to_owned();
        self.image.close()?;
        self.file.commit().map_err(|e| Error::Device {
            image: dest,
            op: "rename output into place",
            source: e,
        })
    }
}

/// Start a new overlay at `dest` backed by `backing` (virtual size `size`, default the backing's).
/// Writes go to a temporary file until [`PendingOverlay::commit`].
pub fn begin_overlay(
    dest: &Path,
    backing: &Path,
    size: Option<u64>,
    opts: &OpenOptions,
) -> Result<PendingOverlay> {
    let nb = open_new_backing(dest, backing, opts)?;
    let cluster_bits = match &nb.image {
        Backing::Qcow2(i) => i.header().cluster_bits,
        Backing::Raw { .. } => 16,
    };
    let size = size.unwrap_or_else(|| nb.image.len());
    let file = AtomicFile::create(dest, 0o644).map_err(|e| Error::Device {
        image: dest.to_owned(),
        op: "create overlay",
        source: e,
    })?;
    let storage: Arc<FileDev> = file.shared();
    let image = Image::create(
        Box::new(storage),
        dest.to_owned(),
        CreateOptions {
            size,
            cluster_bits,
            compression: CompressionType::Zlib,
            backing: Some(nb),
        },
    )?;
    Ok(PendingOverlay { image, file })
}

/// Create an empty overlay at `dest` and return it open for writing; it is already under its final
/// name. Prefer [`begin_overlay`] when the overlay must not appear until fully written.
pub fn create_overlay(
    dest: &Path,
    backing: &Path,
    size: Option<u64>,
    opts: &OpenOptions,
) -> Result<Image> {
    let pending = begin_overlay(dest, backing, size, opts)?;
    pending.commit()?;
    Image::open(
        dest,
        &OpenOptions {
            write: true,
            allowed_backing_dir: Some(common_dir(dest, backing)),
            ..opts.clone()
        },
    )
}

fn common_dir(a: &Path, b: &Path) -> PathBuf {
    let ca = a.parent().and_then(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
        .canonicalize()
        .ok()
    });
    let cb = b
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned));
    match (ca, cb) {
        (Some(x), Some(y)) => x
            .components()
            .zip(y.components())
            .take_while(|(p, q)| p == q)
            .map(|(p, _)| p)
            .collect(),
        _ => PathBuf::from("/"),
    }
}
