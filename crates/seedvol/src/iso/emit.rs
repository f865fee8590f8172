//! The bytes of each piece, as laid out: path tables, directory extents, continuation areas and
//! volume descriptors.

use super::flat::Kind;
use super::layout::{Layout, Rec};
use super::{APPLICATION_ID, IsoOptions, Writer, pad_to_sector};
use crate::names::joliet_id;
use crate::records::{
    DecDate, DirRecord, Endian, FLAG_DIRECTORY, PathTableRecord, SECTOR, VdKind, VolumeDescriptor,
    put_all,
};

impl Writer<'_> {
    pub(super) fn path_table(&self, lay: &Layout, joliet: bool, endian: Endian) -> Vec<u8> {
        let order = if joliet {
            &lay.jol_order
        } else {
            &lay.pri_order
        };
        let extent = if joliet {
            &lay.jol_extent
        } else {
            &lay.pri_extent
        };
        let mut number = vec![0u16; self.flat.dirs.len()];
        for (i, &d) in order.iter().enumerate() {
            number[d] = (i + 1) as u16;
        }
        let mut out = Vec::new();
        for &d in order {
            let dir = &self.flat.dirs[d];
            let ident: &[u8] = if d == 0 {
                &[0]
            } else {
                let p = &self.flat.dirs[dir.parent];
                p.entries
                    .iter()
                    .find(|e| matches!(e.kind, Kind::Dir(c) if c == d))
                    .map_or(&[0][..], |e| if joliet { &e.joliet_id } else { &e.iso_id })
            };
            PathTableRecord {
                extent: extent[d],
                parent: number[dir.parent],
                ident,
            }
            .put(endian, &mut out);
        }
        pad_to_sector(&mut out);
        out
    }

    pub(super) fn directory(&self, lay: &Layout, d: usize, joliet: bool) -> Vec<u8> {
        let dir = &self.flat.dirs[d];
        let (extent, size) = if joliet {
            (&lay.jol_extent, &lay.jol_size)
        } else {
            (&lay.pri_extent, &lay.pri_size)
        };
        let mut out = Vec::with_capacity(size[d] as usize);
        let mut sector_start = 0usize;
        for (i, rec) in self.records(d, joliet).enumerate() {
            let (ext, len, flags) = match rec {
                Rec::Dot => (extent[d], size[d], FLAG_DIRECTORY),
                Rec::DotDot => (extent[dir.parent], size[dir.parent], FLAG_DIRECTORY),
                Rec::Entry(e) => match dir.entries[e].kind {
                    Kind::Dir(c) => (extent[c], size[c], FLAG_DIRECTORY),
                    Kind::File(f) => (lay.file_extent[f], self.flat.files[f].data.len() as u32, 0),
                },
            };
            let su = if joliet {
                Vec::new()
            } else {
                self.rr_area(d, &rec)
                    .encode_inline(lay.ce_loc[d].get(i).copied().flatten())
            };
            let r = DirRecord {
                extent: ext,
                data_len: len,
                date: self.date,
                flags,
                ident: self.ident(d, &rec, joliet),
                system_use: &su,
            };
            if out.len() - sector_start + r.len() > SECTOR {
                pad_to_sector(&mut out);
                sector_start = out.len();
            }
            r.put(&mut out);
        }
        out.resize(size[d] as usize, 0);
        out
    }

    pub(super) fn continuation_area(&self, lay: &Layout) -> Vec<u8> {
        let mut out = vec![0u8; lay.ce_sectors as usize * SECTOR];
        for &d in &lay.pri_order {
            for (i, rec) in self.records(d, false).enumerate() {
                if let Some((block, offset)) = lay.ce_loc[d].get(i).copied().flatten() {
                    let mut bytes = Vec::new();
                    put_all(&self.rr_area(d, &rec).overflow, &mut bytes);
                    let at = (block - lay.ce_start) as usize * SECTOR + offset as usize;
                    out[at..at + bytes.len()].copy_from_slice(&bytes);
                }
            }
        }
        out
    }

    pub(super) fn descriptor(&self, lay: &Layout, opts: &IsoOptions, joliet: bool) -> Vec<u8> {
        let enc = |s: &str| -> Vec<u8> {
            if joliet {
                joliet_id(s)
            } else {
                s.as_bytes().to_vec()
            }
        };
        let (pt, ext, size) = if joliet {
            (lay.pt_jol, &lay.jol_extent, &lay.jol_size)
        } else {
            (lay.pt_pri, &lay.pri_extent, &lay.pri_size)
        };
        VolumeDescriptor {
            kind: if joliet {
                VdKind::Joliet
            } else {
                VdKind::Primary
            },
            system_id: enc("LINUX"),
            volume_id: enc(&opts.volume_id),
            volume_space_size: lay.total,
            path_table_size: pt.2,
            l_path_table: pt.0,
            m_path_table: pt.1,
            root_extent: ext[0],
            root_len: size[0],
            root_date: self.date,
            // Derived from the inputs: the volume set is named after its (only) volume.
            volume_set_id: enc(&opts.volume_id),
            publisher_id: Vec::new(),
            preparer_id: Vec::new(),
            application_id: if joliet {
                joliet_id("KILN")
            } else {
                APPLICATION_ID.to_vec()
            },
            created: DecDate::at(self.civil),
            modified: DecDate::at(self.civil),
            effective: DecDate::at(self.civil),
        }
        .encode()
    }
}
