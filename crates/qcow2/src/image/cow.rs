//! Copy-on-write: getting an opened image ready to write (refcounts rebuilt, dirty bit set) and
//! writing guest bytes into new clusters.

use std::sync::{Arc, Mutex};

use kiln_blockdev::{BlockDev, Op};

use super::{COPIED, Image, L1_OFFSET_MASK, Mapping, WriteState, ZERO, lock};
use crate::error::{Error, Result};
use crate::header::INCOMPAT_DIRTY;
use crate::refcount::{RefcountTable, Refcounts};

impl Image {
    /// Rebuild the reference counts from the metadata, mark the image dirty and get ready to write.
    pub(super) fn begin_write(&mut self) -> Result<()> {
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

    /// Write guest bytes, copying on write into this image.
    pub fn write(&self, buf: &[u8], offset: u64) -> Result<()> {
        let Some(ws) = &self.write else {
            return Err(Error::ReadOnly {
                image: self.path.clone(),
                op: "write",
            });
        };
        self.check_guest_range(Op::Write, "write", offset, buf.len())?;
        let mut st = lock(ws);
        self.for_each_cluster(offset, buf.len(), |gc, in_off, span| {
            self.write_in_cluster(&mut st, gc, in_off, &buf[span])
        })
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
}
