//! Mapping guest clusters to host bytes (with the L2-table and decompressed-cluster caches) and
//! reading through the chain.

use std::ops::Range;
use std::sync::Arc;

use kiln_blockdev::{BlockDev, Op};

use super::{
    AllocationCounts, Backing, COMPRESSED, Image, L1_OFFSET_MASK, L2_CACHE_BYTES, L2_OFFSET_MASK,
    Mapping, ZERO, lock,
};
use crate::codec;
use crate::error::{Error, Result};
use crate::header::CompressionType;

impl Image {
    pub(super) fn check_cluster(&self, what: &'static str, off: u64, file_len: u64) -> Result<()> {
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

    pub(super) fn l2_table(&self, l2off: u64) -> Result<Arc<Vec<u64>>> {
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

    pub(super) fn decode(&self, entry: u64) -> Result<Mapping> {
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
        let l2off = self.l1_entry(gc) & L1_OFFSET_MASK;
        if l2off == 0 {
            return Ok(Mapping::Unallocated);
        }
        let table = self.l2_table(l2off)?;
        self.decode(table[(gc & ((1 << l2_bits) - 1)) as usize])
    }

    /// The L1 entry covering guest cluster `gc` (0 when it lies past the table).
    fn l1_entry(&self, gc: u64) -> u64 {
        let l1i = gc >> (self.header.cluster_bits - 3);
        usize::try_from(l1i)
            .ok()
            .and_then(|i| {
                self.l1
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(i)
                    .copied()
            })
            .unwrap_or(0)
    }

    /// Count the top image's guest clusters by kind. Work is proportional to the L2 tables
    /// present, not to the virtual size: a guest range whose L1 entry is empty is counted as
    /// unallocated at once.
    pub fn allocation(&self) -> Result<AllocationCounts> {
        let mut counts = AllocationCounts::default();
        let n = self.len().div_ceil(self.cluster_size());
        let per_l2 = 1u64 << (self.header.cluster_bits - 3);
        let mut gc = 0;
        while gc < n {
            let span_end = (gc / per_l2 + 1).saturating_mul(per_l2).min(n);
            if self.l1_entry(gc) & L1_OFFSET_MASK == 0 {
                counts.unallocated += span_end - gc;
                gc = span_end;
                continue;
            }
            for c in gc..span_end {
                match self.map_cluster(c)? {
                    Mapping::Data { .. } => counts.data += 1,
                    Mapping::Compressed { .. } => counts.compressed += 1,
                    Mapping::Zero { .. } => counts.zero += 1,
                    Mapping::Unallocated => counts.unallocated += 1,
                }
            }
            gc = span_end;
        }
        Ok(counts)
    }

    /// Whether guest bytes `[offset, offset + len)` are known to read as zeros from metadata alone
    /// (zero or unallocated in every image of the chain, or past the end of a backing image). Never
    /// reads data; a raw backing file counts as data.
    pub fn range_is_zero(&self, offset: u64, len: u64) -> Result<bool> {
        Ok(self.known_zero_len(offset, len)? == len)
    }

    /// How many bytes from `offset` (up to `len`) metadata alone shows to read as zeros, as
    /// [`Image::range_is_zero`] judges them: `len` when all of them do, less where the first
    /// byte that may not be zero is. Work is proportional to the metadata present: a range whose
    /// L1 entry is empty is judged at once (through the backing chain, likewise).
    pub fn known_zero_len(&self, offset: u64, len: u64) -> Result<u64> {
        let end = offset.saturating_add(len).min(self.len());
        let cs = self.cluster_size();
        let span = cs << (self.header.cluster_bits - 3);
        let mut pos = offset;
        while pos < end {
            let gc = pos / cs;
            let empty_l1 = self.l1_entry(gc) & L1_OFFSET_MASK == 0;
            let next = if empty_l1 {
                (pos / span + 1).saturating_mul(span)
            } else {
                (gc + 1).saturating_mul(cs)
            }
            .min(end);
            let mapping = if empty_l1 {
                Mapping::Unallocated
            } else {
                self.map_cluster(gc)?
            };
            match mapping {
                Mapping::Data { .. } | Mapping::Compressed { .. } => return Ok(pos - offset),
                Mapping::Zero { .. } => {}
                Mapping::Unallocated => match &self.backing {
                    None => {}
                    Some(b) if pos >= b.len() => {}
                    Some(Backing::Raw { .. }) => return Ok(pos - offset),
                    Some(Backing::Qcow2(b)) => {
                        let want = next.min(b.len()) - pos;
                        let got = b.known_zero_len(pos, want)?;
                        if got < want {
                            return Ok(pos - offset + got);
                        }
                    }
                },
            }
            pos = next;
        }
        Ok(len)
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
        self.check_guest_range(Op::Read, "read", offset, buf.len())?;
        self.for_each_cluster(offset, buf.len(), |gc, in_off, span| {
            self.read_in_cluster(gc, in_off, &mut buf[span])
        })
    }

    /// Refuse guest bytes `[offset, offset + len)` that do not lie inside the image.
    pub(super) fn check_guest_range(
        &self,
        op: Op,
        what: &'static str,
        offset: u64,
        len: usize,
    ) -> Result<()> {
        kiln_blockdev::check_range(op, offset, len as u64, self.len()).map_err(|e| Error::Device {
            image: self.path.clone(),
            op: what,
            source: e,
        })
    }

    /// Split guest bytes `[offset, offset + len)` at cluster boundaries, in order: `f(guest
    /// cluster, offset in it, the piece's range within the caller's buffer)`.
    pub(super) fn for_each_cluster(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(u64, u64, Range<usize>) -> Result<()>,
    ) -> Result<()> {
        let cs = self.cluster_size();
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let gc = pos / cs;
            let in_off = pos % cs;
            let n = ((cs - in_off) as usize).min(len - done);
            f(gc, in_off, done..done + n)?;
            done += n;
        }
        Ok(())
    }

    pub(super) fn read_in_cluster(&self, gc: u64, in_off: u64, buf: &mut [u8]) -> Result<()> {
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
}
