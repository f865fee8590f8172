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

use kiln_blockdev::{AtomicFile, BlockDev, Cancel, FileDev};
use rayon::prelude::*;

use crate::codec;
use crate::error::{Error, Result};
use crate::header::{CompressionType, Header, check_cluster_bits};
use crate::image::{COMPRESSED, COPIED, MAX_L1_BYTES, Storage};
use crate::refcount::{self, RefcountTable, Refcounts};
use crate::{Disk, Image};

/// How to flatten.
#[derive(Debug, Clone)]
pub struct FlattenOptions {
    /// `None`: store clusters uncompressed.
    pub compression: Option<CompressionType>,
    /// Output cluster size as a power of two; `None`: the source's (64 KiB for raw sources).
    pub cluster_bits: Option<u32>,
    /// Copy already-compressed clusters as they are when possible.
    pub passthrough: bool,
    /// Checked before each batch of clusters: once tripped, the flatten stops with
    /// [`Error::Cancelled`] (and [`flatten_to_path`] leaves no file).
    pub cancel: Cancel,
}

impl Default for FlattenOptions {
    fn default() -> Self {
        Self {
            compression: Some(CompressionType::Zstd),
            cluster_bits: None,
            passthrough: true,
            cancel: Cancel::default(),
        }
    }
}

/// What the flatten writer did, in guest clusters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
///
/// Every guest cluster is counted once in exactly one of `zero`, `raw`, `compressed` and
/// `passthrough`, so they add up to `clusters`.
pub struct FlattenStats {
    /// Guest clusters of the virtual disk (its size divided by the output cluster size,
    /// rounded up).
    pub clusters: u64,
    /// Clusters left unallocated in the output because they read as zeros (known from the
    /// source's metadata, or all-zero when read).
    pub zero: u64,
    /// Clusters stored uncompressed (no compression asked for, or compressing saved less than
    /// 512 bytes).
    pub raw: u64,
    /// Clusters compressed by this run.
    pub compressed: u64,
    /// Already-compressed clusters copied byte for byte from the source (see the module docs
    /// on passthrough).
    pub passthrough: u64,
    /// Size of the output file in bytes.
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

/// Flatten `src` into `out` (empty storage). `progress(done, total)` is called with guest bytes
/// after each batch of clusters; [`FlattenOptions::cancel`] is checked before each batch.
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
    check_cluster_bits(cb, out_name)?;
    let cs = 1u64 << cb;
    let l1_size = Header::l1_entries_for(size, cb);
    if l1_size * 8 > MAX_L1_BYTES {
        return Err(Error::InvalidHeader {
            image: out_name.to_owned(),
            field: "l1_size",
            value: l1_size,
        });
    }
    let qsrc = match src {
        Disk::Qcow2(i) if opts.passthrough && i.cluster_size() == cs => {
            opts.compression.map(|ty| (i, ty))
        }
        _ => None,
    };
    let mut lay = Layout::new(out, out_name, cb, l1_size, size)?;
    let nclusters = lay.stats.clusters;

    // Clusters that metadata alone shows to be zero never reach the parallel stage.
    let mut next = 0u64;
    let mut batch: Vec<u64> = Vec::with_capacity(BATCH as usize);
    while next < nclusters {
        if opts.cancel.is_cancelled() {
            return Err(Error::Cancelled {
                image: out_name.to_owned(),
            });
        }
        while next < nclusters && batch.len() < BATCH as usize {
            // A run of clusters known to be zero is skipped whole: time follows the data present,
            // not the virtual size.
            let from = next * cs;
            let zero = src.known_zero_len(from, size - from)?;
            let run = if zero == size - from {
                nclusters - next
            } else {
                zero / cs
            };
            if run > 0 {
                lay.stats.zero += run;
                next += run;
            } else {
                batch.push(next);
                next += 1;
            }
        }
        let outs = batch
            .par_iter()
            .map(|&gc| encode_cluster(src, qsrc, opts.compression, cs, gc))
            .collect::<Result<Vec<Out>>>()?;
        lay.place_batch(&batch, &outs)?;
        batch.clear();
        // Groups wholly before the next unvisited cluster are complete.
        lay.write_groups_below(next >> (cb - 3))?;
        progress(next.saturating_mul(cs).min(size), size);
    }
    lay.finish(size, opts.compression.unwrap_or_default())
}

/// What guest cluster `gc` becomes in the output (the parallel stage): the stored bytes of a
/// compressed cluster passed through (checked to decompress), zeros, compressed or raw data.
fn encode_cluster(
    src: &Disk,
    qsrc: Option<(&Image, CompressionType)>,
    compression: Option<CompressionType>,
    cs: u64,
    gc: u64,
) -> Result<Out> {
    if let Some((img, ty)) = qsrc
        && let Some((layer, host, len)) = img.resolve_compressed(gc, ty)?
    {
        return Ok(Out::Passthrough(layer.read_stored_verified(gc, host, len)?));
    }
    let valid = (src.len() - gc * cs).min(cs) as usize;
    let mut data = vec![0u8; cs as usize];
    src.read(&mut data[..valid], gc * cs)?;
    if data.iter().all(|&b| b == 0) {
        return Ok(Out::Zero);
    }
    if let Some(ty) = compression
        && let Some(c) = codec::compress(ty, &data)
        && (c.len() as u64) < cs - 512
    {
        return Ok(Out::Compressed(c));
    }
    Ok(Out::Raw(data))
}

/// The output as it is laid out: its bytes, refcounts and L1 table, and the L2 tables not yet
/// written.
struct Layout<'a> {
    app: Appender<'a>,
    rc: Refcounts,
    cb: u32,
    l1: Vec<u64>,
    /// L2 tables still being filled, by L2 group: where the table lives and its entries.
    open: BTreeMap<u64, (u64, Vec<u64>)>,
    stats: FlattenStats,
}

impl<'a> Layout<'a> {
    /// Room for the header (cluster 0) and the L1 table (from cluster 1) of a `size`-byte guest.
    fn new(out: &'a dyn Storage, name: &'a Path, cb: u32, l1_size: u64, size: u64) -> Result<Self> {
        let cs = 1u64 << cb;
        let l1_clusters = (l1_size * 8).div_ceil(cs).max(1);
        let mut rc = Refcounts::new(cb, 4);
        rc.incr_range(0, cs * (1 + l1_clusters), name)?;
        Ok(Layout {
            app: Appender {
                out,
                name,
                base: 0,
                buf: vec![0u8; (cs * (1 + l1_clusters)) as usize],
            },
            rc,
            cb,
            l1: vec![0u64; l1_size as usize],
            open: BTreeMap::new(),
            stats: FlattenStats {
                clusters: size.div_ceil(cs),
                ..FlattenStats::default()
            },
        })
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cb
    }

    fn l2_bits(&self) -> u32 {
        self.cb - 3
    }

    /// Record `entry` for guest cluster `gc` in its (open) L2 table.
    fn set_entry(&mut self, gc: u64, entry: u64) {
        let l2_bits = self.l2_bits();
        if let Some((_, entries)) = self.open.get_mut(&(gc >> l2_bits)) {
            entries[(gc & ((1 << l2_bits) - 1)) as usize] = entry;
        }
    }

    /// Lay the batch out as: new L2 tables, raw clusters (cluster-aligned, contiguous), then the
    /// compressed clusters packed byte by byte, so there is at most one padding gap per batch.
    fn place_batch(&mut self, batch: &[u64], outs: &[Out]) -> Result<()> {
        let cs = self.cluster_size();
        let l2_bits = self.l2_bits();
        let name = self.app.name;
        for (&gc, out) in batch.iter().zip(outs) {
            let g = gc >> l2_bits;
            if !matches!(out, Out::Zero) && !self.open.contains_key(&g) {
                self.app.align(cs)?;
                let off = self.app.pos();
                self.rc.incr_range(off, cs, name)?;
                self.app.push(&vec![0u8; cs as usize])?;
                self.open.insert(g, (off, vec![0u64; 1 << l2_bits]));
            }
        }
        for (&gc, out) in batch.iter().zip(outs) {
            let entry = match out {
                Out::Zero => {
                    self.stats.zero += 1;
                    continue;
                }
                Out::Raw(data) => {
                    self.stats.raw += 1;
                    self.app.align(cs)?;
                    let off = self.app.pos();
                    self.rc.incr_range(off, cs, name)?;
                    self.app.push(data)?;
                    off | COPIED
                }
                Out::Compressed(_) | Out::Passthrough(_) => continue,
            };
            self.set_entry(gc, entry);
        }
        for (&gc, out) in batch.iter().zip(outs) {
            let bytes = match out {
                Out::Compressed(b) => {
                    self.stats.compressed += 1;
                    b
                }
                Out::Passthrough(b) => {
                    self.stats.passthrough += 1;
                    b
                }
                Out::Zero | Out::Raw(_) => continue,
            };
            let entry = compressed_entry(&mut self.app, &mut self.rc, self.cb, bytes, name)?;
            self.set_entry(gc, entry);
        }
        Ok(())
    }

    /// Write the open L2 tables of the groups below `group` and point the L1 table at them.
    fn write_groups_below(&mut self, group: u64) -> Result<()> {
        let rest = self.open.split_off(&group);
        for (g, (off, entries)) in std::mem::replace(&mut self.open, rest) {
            write_l2(&mut self.app, off, &entries)?;
            self.l1[g as usize] = off | COPIED;
        }
        Ok(())
    }

    /// Write the remaining L2 tables, the refcounts, the L1 table and last the header.
    fn finish(mut self, size: u64, compression: CompressionType) -> Result<FlattenStats> {
        let cs = self.cluster_size();
        self.write_groups_below(u64::MAX)?;
        self.app.align(cs)?;
        self.app.flush()?;
        let (out, out_name) = (self.app.out, self.app.name);

        let mut file_end = self.app.pos();
        let mut table = RefcountTable::default();
        for (off, bytes) in refcount::layout(&mut self.rc, &mut table, &mut file_end, out_name)? {
            app_write(out, out_name, &bytes, off)?;
        }
        let l1_bytes: Vec<u8> = self.l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        app_write(out, out_name, &l1_bytes, cs)?;
        // A whole number of 512-byte sectors, as qemu rounds a raw file up (qemu reads a qcow2
        // size in sectors, so an odd size would lose its tail); the pad reads as zeros.
        let sectors_size =
            size.div_ceil(512)
                .checked_mul(512)
                .ok_or_else(|| Error::InvalidHeader {
                    image: out_name.to_owned(),
                    field: "size",
                    value: size,
                })?;
        let header = Header {
            refcount_table_offset: table.offset,
            refcount_table_clusters: table.clusters as u32,
            ..Header::new_v3(self.cb, sectors_size, self.l1.len() as u32, compression)
        };
        app_write(out, out_name, &header.encode(), 0)?;
        out.flush().map_err(|e| Error::Device {
            image: out_name.to_owned(),
            op: "flush output",
            source: e,
        })?;
        let mut stats = self.stats;
        stats.file_len = out.len();
        Ok(stats)
    }
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
    export_raw_into(src, file.dev(), dest, &Cancel::default(), progress)?;
    file.commit().map_err(dev_err("commit output"))?;
    Ok(())
}

/// Copy every guest byte of `src` into `out` (an empty file, `dest` in errors), sized to the
/// guest: holes wherever a MiB of the guest is unallocated or all zero, so the file takes only the
/// space of the image's data. Reads in parallel batches; `cancel` is checked before each batch and
/// `progress(done, total)` told after it.
pub fn export_raw_into(
    src: &Disk,
    out: &FileDev,
    dest: &Path,
    cancel: &Cancel,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<()> {
    let dev_err = |op| {
        move |e| Error::Device {
            image: dest.to_owned(),
            op,
            source: e,
        }
    };
    let size = src.len();
    out.set_len(size).map_err(dev_err("size output"))?;
    const CHUNK: u64 = 1 << 20;
    const BATCH_CHUNKS: u64 = 16;
    let nchunks = size.div_ceil(CHUNK);
    let mut start = 0;
    while start < nchunks {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled {
                image: dest.to_owned(),
            });
        }
        // Chunks that metadata shows to be zero stay holes: skip a run of them whole.
        let from = start * CHUNK;
        let zero = src.known_zero_len(from, size - from)?;
        if zero == size - from {
            progress(size, size);
            break;
        }
        if zero >= CHUNK {
            start += zero / CHUNK;
            continue;
        }
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
                    out.write_at(&buf, off).map_err(dev_err("write output"))?;
                }
                Ok(())
            })?;
        progress((end * CHUNK).min(size), size);
        start = end;
    }
    Ok(())
}
