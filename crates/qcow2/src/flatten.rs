//! The flatten writer: any chain (or raw disk) → one standalone qcow2.
//!
//! ```text
//! cluster 0        header
//! clusters 1..     L1 table
//! then, per L2 group in guest order:  [L2 table][data / compressed clusters …]
//! end              refcount blocks, refcount table
//! ```
//!
//! Guest clusters are visited in order, in batches; each batch is read and compressed on all cores
//! and appended in guest order, so the output does not depend on thread scheduling. All-zero clusters
//! stay unallocated. A cluster that is already compressed somewhere in the source chain with the
//! output's compression type and cluster size (and not overridden above) is copied byte for byte —
//! **passthrough** — never recompressed. It is decompressed once, in the parallel stage, only to
//! check that it does: a broken compressed cluster fails the flatten (bad input) instead of being
//! copied into an output nothing can read.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_blockdev::{AtomicFile, BlockDev};
use rayon::prelude::*;

use crate::Disk;
use crate::codec;
use crate::error::{Error, Result};
use crate::header::{CompressionType, Header, V3_HEADER_LEN};
use crate::image::{COMPRESSED, COPIED, Storage};
use crate::refcount::{self, RefcountTable, Refcounts};

/// How to flatten.
#[derive(Debug, Clone, Copy)]
pub struct FlattenOptions {
    /// `None`: store clusters uncompressed.
    pub compression: Option<CompressionType>,
    /// Output cluster size as a power of two; `None`: the source's (64 KiB for raw sources).
    pub cluster_bits: Option<u32>,
    /// Copy already-compressed clusters as they are when possible.
    pub passthrough: bool,
}

impl Default for FlattenOptions {
    fn default() -> Self {
        Self {
            compression: Some(CompressionType::Zstd),
            cluster_bits: None,
            passthrough: true,
        }
    }
}

/// What the flatten writer did, in guest clusters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlattenStats {
    pub clusters: u64,
    pub zero: u64,
    pub raw: u64,
    pub compressed: u64,
    pub passthrough: u64,
    pub file_len: u64,
}

enum Out {
    Zero,
    Raw(Vec<u8>),
    Compressed(Vec<u8>),
    Passthrough(Vec<u8>),
}

/// Clusters read and compressed per parallel batch.
const BATCH: u64 = 128;
/// Buffered output before a write.
const OUT_BUF: usize = 8 << 20;

struct Appender<'a> {
    out: &'a dyn Storage,
    name: &'a Path,
    base: u64,
    buf: Vec<u8>,
}

impl Appender<'_> {
    fn pos(&self) -> u64 {
        self.base + self.buf.len() as u64
    }
    fn push(&mut self, bytes: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= OUT_BUF {
            self.flush()
        } else {
            Ok(())
        }
    }
    fn align(&mut self, cs: u64) -> Result<()> {
        let pad = (cs - self.pos() % cs) % cs;
        self.buf.resize(self.buf.len() + pad as usize, 0);
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.out
                .write_at_grow(&self.buf, self.base)
                .map_err(|e| Error::Device {
                    image: self.name.to_owned(),
                    op: "write output",
                    source: e,
                })?;
            self.base += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Flatten `src` into `out` (empty storage). `progress(done, total)` is called with guest bytes.
pub fn flatten(
    src: &Disk,
    out: &dyn Storage,
    out_name: &Path,
    opts: &FlattenOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<FlattenStats> {
    let size = src.len();
    let cb = opts.cluster_bits.unwrap_or(match src {
        Disk::Qcow2(i) => i.header().cluster_bits,
        Disk::Raw(_) => 16,
    });
    if !(9..=21).contains(&cb) {
        return Err(Error::InvalidHeader {
            image: out_name.to_owned(),
            field: "cluster_bits",
            value: cb as u64,
        });
    }
    let cs = 1u64 << cb;
    let l2_bits = cb - 3;
    let l1_size = Header::l1_entries_for(size, cb);
    if l1_size * 8 > 32 << 20 {
        return Err(Error::InvalidHeader {
            image: out_name.to_owned(),
            field: "l1_size",
            value: l1_size,
        });
    }
    let l1_clusters = (l1_size * 8).div_ceil(cs).max(1);
    let qsrc = match src {
        Disk::Qcow2(i) if opts.passthrough && i.cluster_size() == cs => {
            opts.compression.map(|ty| (i, ty))
        }
        _ => None,
    };

    let mut rc = Refcounts::new(cb, 4);
    rc.incr_range(0, cs * (1 + l1_clusters), out_name)?;
    let mut app = Appender {
        out,
        name: out_name,
        base: 0,
        buf: vec![0u8; (cs * (1 + l1_clusters)) as usize],
    };
    let mut l1 = vec![0u64; l1_size as usize];
    // L2 tables still being filled, by L2 group: where the table lives and its entries.
    let mut open: BTreeMap<u64, (u64, Vec<u64>)> = BTreeMap::new();
    let mut stats = FlattenStats {
        clusters: size.div_ceil(cs),
        ..FlattenStats::default()
    };
    let nclusters = stats.clusters;
    let l2_index = |gc: u64| (gc & ((1 << l2_bits) - 1)) as usize;

    // Clusters that metadata alone shows to be zero never reach the parallel stage.
    let mut next = 0u64;
    let mut batch: Vec<u64> = Vec::with_capacity(BATCH as usize);
    while next < nclusters {
        while next < nclusters && batch.len() < BATCH as usize {
            let valid = (size - next * cs).min(cs);
            if src.range_is_zero(next * cs, valid)? {
                stats.zero += 1;
            } else {
                batch.push(next);
            }
            next += 1;
        }
        let outs = batch
            .par_iter()
            .map(|&gc| -> Result<Out> {
                if let Some((img, ty)) = qsrc
                    && let Some((layer, host, len)) = img.resolve_compressed(gc, ty)?
                {
                    return Ok(Out::Passthrough(layer.read_stored_verified(gc, host, len)?));
                }
                let valid = (size - gc * cs).min(cs) as usize;
                let mut data = vec![0u8; cs as usize];
                src.read(&mut data[..valid], gc * cs)?;
                if data.iter().all(|&b| b == 0) {
                    return Ok(Out::Zero);
                }
                if let Some(ty) = opts.compression
                    && let Some(c) = codec::compress(ty, &data)
                    && (c.len() as u64) < cs - 512
                {
                    return Ok(Out::Compressed(c));
                }
                Ok(Out::Raw(data))
            })
            .collect::<Result<Vec<Out>>>()?;
        // Lay the batch out as: new L2 tables, raw clusters (cluster-aligned, contiguous), then the
        // compressed clusters packed byte by byte, so there is at most one padding gap per batch.
        for (&gc, out) in batch.iter().zip(&outs) {
            let g = gc >> l2_bits;
            if !matches!(out, Out::Zero) && !open.contains_key(&g) {
                app.align(cs)?;
                let off = app.pos();
                rc.incr_range(off, cs, out_name)?;
                app.push(&vec![0u8; cs as usize])?;
                open.insert(g, (off, vec![0u64; 1 << l2_bits]));
            }
        }
        for (&gc, out) in batch.iter().zip(&outs) {
            let entry = match out {
                Out::Zero => {
                    stats.zero += 1;
                    continue;
                }
                Out::Raw(data) => {
                    stats.raw += 1;
                    app.align(cs)?;
                    let off = app.pos();
                    rc.incr_range(off, cs, out_name)?;
                    app.push(data)?;
                    off | COPIED
                }
                Out::Compressed(_) | Out::Passthrough(_) => continue,
            };
            if let Some((_, entries)) = open.get_mut(&(gc >> l2_bits)) {
                entries[l2_index(gc)] = entry;
            }
        }
        for (&gc, out) in batch.iter().zip(&outs) {
            let bytes = match out {
                Out::Compressed(b) => {
                    stats.compressed += 1;
                    b
                }
                Out::Passthrough(b) => {
                    stats.passthrough += 1;
                    b
                }
                Out::Zero | Out::Raw(_) => continue,
            };
            let entry = compressed_entry(&mut app, &mut rc, cb, bytes, out_name)?;
            if let Some((_, entries)) = open.get_mut(&(gc >> l2_bits)) {
                entries[l2_index(gc)] = entry;
            }
        }
        batch.clear();
        // Groups wholly before the next unvisited cluster are complete.
        let done_below = next >> l2_bits;
        let rest = open.split_off(&done_below);
        for (g, (off, entries)) in std::mem::replace(&mut open, rest) {
            write_l2(&mut app, off, &entries)?;
            l1[g as usize] = off | COPIED;
        }
        progress(next.saturating_mul(cs).min(size), size);
    }
    for (g, (off, entries)) in std::mem::take(&mut open) {
        write_l2(&mut app, off, &entries)?;
        l1[g as usize] = off | COPIED;
    }
    app.align(cs)?;
    app.flush()?;

    let mut file_end = app.pos();
    let mut table = RefcountTable::default();
    for (off, bytes) in refcount::layout(&mut rc, &mut table, &mut file_end, out_name)? {
        app_write(out, out_name, &bytes, off)?;
    }
    let l1_bytes: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
    app_write(out, out_name, &l1_bytes, cs)?;
    let header = Header {
        version: 3,
        backing_file_offset: 0,
        backing_file_size: 0,
        cluster_bits: cb,
        // A whole number of 512-byte sectors, as qemu rounds a raw file up (qemu reads a qcow2
        // size in sectors, so an odd size would lose its tail); the pad reads as zeros.
        size: size
            .div_ceil(512)
            .checked_mul(512)
            .ok_or_else(|| Error::InvalidHeader {
                image: out_name.to_owned(),
                field: "size",
                value: size,
            })?,
        crypt_method: 0,
        l1_size: l1_size as u32,
        l1_table_offset: cs,
        refcount_table_offset: table.offset,
        refcount_table_clusters: table.clusters as u32,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible_features: 0,
        compatible_features: 0,
        autoclear_features: 0,
        refcount_order: 4,
        header_length: V3_HEADER_LEN,
        compression_type: opts.compression.unwrap_or_default(),
        backing_file: None,
        backing_format: None,
    };
    app_write(out, out_name, &header.encode(), 0)?;
    out.flush().map_err(|e| Error::Device {
        image: out_name.to_owned(),
        op: "flush output",
        source: e,
    })?;
    stats.file_len = out.len();
    Ok(stats)
}

fn app_write(out: &dyn Storage, name: &Path, bytes: &[u8], off: u64) -> Result<()> {
    out.write_at_grow(bytes, off).map_err(|e| Error::Device {
        image: name.to_owned(),
        op: "write output",
        source: e,
    })
}

fn write_l2(app: &mut Appender<'_>, off: u64, entries: &[u64]) -> Result<()> {
    let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_be_bytes()).collect();
    if off >= app.base {
        let at = (off - app.base) as usize;
        app.buf[at..at + bytes.len()].copy_from_slice(&bytes);
        Ok(())
    } else {
        app_write(app.out, app.name, &bytes, off)
    }
}

fn compressed_entry(
    app: &mut Appender<'_>,
    rc: &mut Refcounts,
    cb: u32,
    bytes: &[u8],
    name: &Path,
) -> Result<u64> {
    let off = app.pos();
    let len = bytes.len() as u64;
    let nsect = ((off & 511) + len).div_ceil(512) - 1;
    rc.incr_range(off, len, name)?;
    app.push(bytes)?;
    let x = 62 - (cb - 8);
    Ok(COMPRESSED | (nsect << x) | off)
}

/// Flatten `src` into a new file at `dest`, written under a temporary name and renamed into place
/// only when complete.
pub fn flatten_to_path(
    src: &Disk,
    dest: &Path,
    opts: &FlattenOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<FlattenStats> {
    let dev_err = |e| Error::Device {
        image: dest.to_owned(),
        op: "create output",
        source: e,
    };
    let file = AtomicFile::create(dest, 0o644).map_err(dev_err)?;
    let stats = flatten(src, file.dev(), dest, opts, progress)?;
    file.commit().map_err(|e| Error::Device {
        image: dest.to_owned(),
        op: "commit output",
        source: e,
    })?;
    Ok(stats)
}

/// Copy every guest byte of `src` into a new raw file at `dest` (sparse where the guest is zero),
/// reading in parallel; written under a temporary name and renamed when complete.
pub fn export_raw(src: &Disk, dest: &Path, progress: &(dyn Fn(u64, u64) + Sync)) -> Result<()> {
    let dev_err = |op| {
        move |e| Error::Device {
            image: dest.to_owned(),
            op,
            source: e,
        }
    };
    let file = AtomicFile::create(dest, 0o644).map_err(dev_err("create output"))?;
    let size = src.len();
    file.dev().set_len(size).map_err(dev_err("size output"))?;
    const CHUNK: u64 = 1 << 20;
    const BATCH_CHUNKS: u64 = 16;
    let nchunks = size.div_ceil(CHUNK);
    let mut start = 0;
    while start < nchunks {
        let end = (start + BATCH_CHUNKS).min(nchunks);
        (start..end)
            .into_par_iter()
            .try_for_each(|c| -> Result<()> {
                let off = c * CHUNK;
                let n = (size - off).min(CHUNK);
                if src.range_is_zero(off, n)? {
                    return Ok(());
                }
                let mut buf = vec![0u8; n as usize];
                src.read(&mut buf, off)?;
                if buf.iter().any(|&b| b != 0) {
                    file.dev()
                        .write_at(&buf, off)
                        .map_err(dev_err("write output"))?;
                }
                Ok(())
            })?;
        progress((end * CHUNK).min(size), size);
        start = end;
    }
    file.commit().map_err(dev_err("commit output"))?;
    Ok(())
}
