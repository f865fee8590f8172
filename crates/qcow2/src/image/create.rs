//! Creating a new image and closing a written one (refcounts written, dirty bit cleared).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use kiln_blockdev::BlockDev;

use super::{Backing, Image, Storage, WriteState};
use crate::error::{Error, Result};
use crate::header::{CompressionType, Header, INCOMPAT_DIRTY, check_cluster_bits};
use crate::refcount::{self, RefcountTable, Refcounts};

impl Image {
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
        check_cluster_bits(cb, &name)?;
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
            backing_file: backing_name,
            backing_format,
            ..Header::new_v3(cb, opts.size, l1_size as u32, opts.compression)
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
    /// The opened backing image (its own chain already checked); its size is the overlay's
    /// default virtual size.
    pub image: Backing,
    /// The name stored in the header (relative to the overlay's directory).
    pub name: String,
}

/// Parameters of a new image.
#[derive(Debug)]
pub struct CreateOptions {
    /// Virtual disk size in bytes (a multiple of 512, at most 2^55).
    pub size: u64,
    /// log2 of the cluster size in bytes, 9..=21 (16 = 64 KiB, qemu's default).
    pub cluster_bits: u32,
    /// The header's `compression_type`: how clusters written compressed into this image are
    /// encoded ([`CompressionType::Zstd`] sets incompatible feature bit 3).
    pub compression: CompressionType,
    /// The backing image and the name to record for it; `None` for a standalone image.
    pub backing: Option<NewBacking>,
}
