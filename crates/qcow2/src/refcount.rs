//! Reference counts: one entry per host cluster, `1 << refcount_order` bits wide, stored in refcount
//! blocks that a refcount table points to.
//!
//! kiln keeps the counts of an image it writes in memory ([`Refcounts`], rebuilt from the image's
//! metadata when it is opened for writing) and writes the table and blocks once, when the image is
//! closed. While the image is open for writing its dirty bit is set, so a crash leaves an image that
//! both qemu and kiln recognise as needing repair rather than one with silently wrong counts.

use std::path::Path;

use crate::error::{Error, Result};

#[cfg(test)]
/// Read entry `index` of a refcount block with `order`-sized entries (sub-byte widths are packed
/// least-significant-bits first, wider ones are big-endian).
pub fn get_entry(block: &[u8], order: u32, index: usize) -> u64 {
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let per_byte = 8 / bits;
            let byte = block[index / per_byte];
            ((byte >> ((index % per_byte) * bits)) & ((1u8 << bits) - 1)) as u64
        }
        3 => block[index] as u64,
        4 => u16::from_be_bytes([block[2 * index], block[2 * index + 1]]) as u64,
        5 => {
            u32::from_be_bytes(block[4 * index..4 * index + 4].try_into().unwrap_or([0; 4])) as u64
        }
        _ => u64::from_be_bytes(block[8 * index..8 * index + 8].try_into().unwrap_or([0; 8])),
    }
}

/// Write entry `index` of a refcount block (the value must fit the width).
pub fn set_entry(block: &mut [u8], order: u32, index: usize, value: u64) {
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let per_byte = 8 / bits;
            let shift = (index % per_byte) * bits;
            let mask = ((1u8 << bits) - 1) << shift;
            let b = &mut block[index / per_byte];
            *b = (*b & !mask) | (((value as u8) << shift) & mask);
        }
        3 => block[index] = value as u8,
        4 => block[2 * index..2 * index + 2].copy_from_slice(&(value as u16).to_be_bytes()),
        5 => block[4 * index..4 * index + 4].copy_from_slice(&(value as u32).to_be_bytes()),
        _ => block[8 * index..8 * index + 8].copy_from_slice(&value.to_be_bytes()),
    }
}

/// In-memory reference counts of every host cluster of one image.
#[derive(Debug, Clone)]
pub struct Refcounts {
    counts: Vec<u64>,
    cluster_bits: u32,
    order: u32,
}

impl Refcounts {
    pub fn new(cluster_bits: u32, order: u32) -> Self {
        Self {
            counts: Vec::new(),
            cluster_bits,
            order,
        }
    }

    pub fn max(&self) -> u64 {
        if self.order == 6 {
            u64::MAX
        } else {
            (1u64 << (1u32 << self.order)) - 1
        }
    }

    pub fn get(&self, cluster: u64) -> u64 {
        self.counts.get(cluster as usize).copied().unwrap_or(0)
    }

    /// Add one reference to every host cluster touched by `[offset, offset + len)`.
    pub fn incr_range(&mut self, offset: u64, len: u64, image: &Path) -> Result<()> {
        for c in self.clusters_of(offset, len) {
            let idx = c as usize;
            if idx >= self.counts.len() {
                self.counts.resize(idx + 1, 0);
            }
            if self.counts[idx] >= self.max() {
                return Err(Error::RefcountOverflow {
                    image: image.to_owned(),
                    host_offset: c << self.cluster_bits,
                    max: self.max(),
                    bits: 1 << self.order,
                });
            }
            self.counts[idx] += 1;
        }
        Ok(())
    }

    /// Drop one reference from every host cluster touched by `[offset, offset + len)`.
    pub fn decr_range(&mut self, offset: u64, len: u64) {
        for c in self.clusters_of(offset, len) {
            if let Some(v) = self.counts.get_mut(c as usize) {
                *v = v.saturating_sub(1);
            }
        }
    }

    fn clusters_of(&self, offset: u64, len: u64) -> std::ops::RangeInclusive<u64> {
        let first = offset >> self.cluster_bits;
        let last = (offset + len.max(1) - 1) >> self.cluster_bits;
        first..=last
    }

    /// Encode refcount block `index` (covering clusters `index * per_block ..`).
    pub fn encode_block(&self, index: u64) -> Vec<u8> {
        let cs = 1usize << self.cluster_bits;
        let per_block = (cs * 8) >> self.order;
        let mut block = vec![0u8; cs];
        let start = index as usize * per_block;
        for i in 0..per_block {
            let v = self.get((start + i) as u64);
            if v != 0 {
                set_entry(&mut block, self.order, i, v);
            }
        }
        block
    }

    /// Clusters covered by one refcount block.
    pub fn per_block(&self) -> u64 {
        ((1u64 << self.cluster_bits) * 8) >> self.order
    }
}

/// Where a refcount table lives and what it points to.
#[derive(Debug, Clone, Default)]
pub struct RefcountTable {
    pub offset: u64,
    pub clusters: u64,
    /// Host offsets of refcount blocks (0 = none).
    pub blocks: Vec<u64>,
}

/// Place refcount blocks (reusing those the table already has) and, if it is too small, a new
/// refcount table, allocating new clusters at `*file_end` until every host cluster — including the
/// refcount structures themselves — is covered. Returns the encoded (offset, bytes) writes to make.
pub fn layout(
    rc: &mut Refcounts,
    table: &mut RefcountTable,
    file_end: &mut u64,
    image: &Path,
) -> Result<Vec<(u64, Vec<u8>)>> {
    let cs = 1u64 << rc.cluster_bits;
    let alloc = |rc: &mut Refcounts, file_end: &mut u64, n: u64| -> Result<u64> {
        let off = *file_end;
        rc.incr_range(off, n * cs, image)?;
        *file_end += n * cs;
        Ok(off)
    };
    loop {
        let clusters = *file_end / cs;
        let nblocks = clusters.div_ceil(rc.per_block());
        let capacity = table.clusters * cs / 8;
        if nblocks > capacity {
            // Move the table to the end of the file, with room to grow.
            if table.clusters > 0 {
                rc.decr_range(table.offset, table.clusters * cs);
            }
            let want = (nblocks * 2).max(1) * 8;
            let new_clusters = want.div_ceil(cs);
            table.offset = alloc(rc, file_end, new_clusters)?;
            table.clusters = new_clusters;
            continue;
        }
        if table.blocks.len() < nblocks as usize {
            table.blocks.resize(nblocks as usize, 0);
        }
        let mut grew = false;
        for i in 0..nblocks as usize {
            if table.blocks[i] == 0 {
                table.blocks[i] = alloc(rc, file_end, 1)?;
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    let mut writes = Vec::new();
    for (i, &off) in table.blocks.iter().enumerate() {
        if off != 0 {
            writes.push((off, rc.encode_block(i as u64)));
        }
    }
    let mut tbuf = vec![0u8; (table.clusters * cs) as usize];
    for (i, &off) in table.blocks.iter().enumerate() {
        tbuf[8 * i..8 * i + 8].copy_from_slice(&off.to_be_bytes());
    }
    writes.push((table.offset, tbuf));
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_every_width() {
        for order in 0..=6u32 {
            let mut block = vec![0u8; 512];
            let entries = (512 * 8) >> order;
            let max = if order == 6 {
                u64::MAX
            } else {
                (1u64 << (1 << order)) - 1
            };
            for i in 0..entries {
                set_entry(&mut block, order, i, (i as u64 * 2654435761) & max);
            }
            for i in 0..entries {
                assert_eq!(
                    get_entry(&block, order, i),
                    (i as u64 * 2654435761) & max,
                    "order {order} index {i}"
                );
            }
        }
    }

    #[test]
    fn overflow_is_an_error() {
        let mut rc = Refcounts::new(16, 0);
        rc.incr_range(0, 1, Path::new("x")).unwrap();
        let e = rc.incr_range(10, 1, Path::new("x")).unwrap_err();
        assert!(
            matches!(
                e,
                Error::RefcountOverflow {
                    max: 1,
                    bits: 1,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn layout_covers_itself() {
        let mut rc = Refcounts::new(9, 4);
        let mut end = 512 * 1000;
        rc.incr_range(0, end, Path::new("x")).unwrap();
        let mut table = RefcountTable::default();
        let writes = layout(&mut rc, &mut table, &mut end, Path::new("x")).unwrap();
        let clusters = end / 512;
        assert!(table.blocks.len() as u64 * rc.per_block() >= clusters);
        for c in 0..clusters {
            assert_eq!(rc.get(c), 1, "cluster {c}");
        }
        assert_eq!(writes.len(), table.blocks.len() + 1);
    }
}
