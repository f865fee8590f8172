//! Where each piece of the image goes: path tables, directory extents, continuation areas and file
//! data, in sectors.

use super::flat::Kind;
use super::{FIRST_VD, MAX_RECORD, NM_CHUNK, Writer};
use crate::error::{Error, Result};
use crate::records::{DirRecord, NM_CONTINUE, PathTableRecord, SECTOR, Susp, put_all};

/// Rock Ridge system use of one directory record: what stays in the record, what goes to a
/// continuation area (a CE entry pointing there is appended to the inline part when non-empty).
#[derive(Debug)]
pub(super) struct RrArea<'a> {
    pub(super) inline: Vec<Susp<'a>>,
    pub(super) overflow: Vec<Susp<'a>>,
}

impl RrArea<'_> {
    pub(super) fn overflow_len(&self) -> usize {
        self.overflow.iter().map(Susp::len).sum()
    }
    pub(super) fn inline_len(&self) -> usize {
        let ce = if self.overflow.is_empty() { 0 } else { 28 };
        self.inline.iter().map(Susp::len).sum::<usize>() + ce
    }
    pub(super) fn encode_inline(&self, ce: Option<(u32, u32)>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.inline_len());
        put_all(&self.inline, &mut out);
        if let Some((block, offset)) = ce {
            Susp::Ce {
                block,
                offset,
                len: self.overflow_len() as u32,
            }
            .put(&mut out);
        }
        out
    }
}

pub(super) fn px(mode: u32, nlink: u32, ino: u32) -> Susp<'static> {
    Susp::Px {
        mode,
        nlink,
        uid: 0,
        gid: 0,
        ino,
    }
}

/// One record of a directory extent, before extents are known.
#[derive(Debug)]
pub(super) enum Rec {
    Dot,
    DotDot,
    Entry(usize),
}

/// Per directory, per record in primary emission order: the (sector, offset) of its continuation
/// area, if it has one.
pub(super) type CeLocations = Vec<Vec<Option<(u32, u32)>>>;

/// Where each piece of the image goes, in sectors.
#[derive(Debug)]
pub(super) struct Layout {
    pub(super) pri_order: Vec<usize>,
    pub(super) jol_order: Vec<usize>,
    /// Per directory (by dir index): extent and size in each hierarchy.
    pub(super) pri_extent: Vec<u32>,
    pub(super) pri_size: Vec<u32>,
    pub(super) jol_extent: Vec<u32>,
    pub(super) jol_size: Vec<u32>,
    pub(super) pt_pri: (u32, u32, u32), // (L, M, size in bytes)
    pub(super) pt_jol: (u32, u32, u32),
    /// Continuation area start sector and its length in sectors.
    pub(super) ce_start: u32,
    pub(super) ce_sectors: u32,
    /// Per directory, per record in primary emission order: CE location if it has one.
    pub(super) ce_loc: CeLocations,
    pub(super) file_extent: Vec<u32>,
    /// Files in data order.
    pub(super) file_order: Vec<usize>,
    pub(super) total: u32,
}

pub(super) fn sectors_for(bytes: u64) -> u64 {
    bytes.div_ceil(SECTOR as u64)
}

pub(super) fn to_u32(what: &'static str, v: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::ImageTooLarge {
        what,
        value: v,
        max: u64::from(u32::MAX),
    })
}

impl<'t> Writer<'t> {
    pub(super) fn records(&self, d: usize, joliet: bool) -> impl Iterator<Item = Rec> + '_ {
        let dir = &self.flat.dirs[d];
        let ord = if joliet {
            &dir.jol_order
        } else {
            &dir.pri_order
        };
        [Rec::Dot, Rec::DotDot]
            .into_iter()
            .chain(ord.iter().map(|&e| Rec::Entry(e)))
    }

    pub(super) fn rr_area(&self, d: usize, rec: &Rec) -> RrArea<'t> {
        let dir = &self.flat.dirs[d];
        let tf = Susp::Tf { date: self.date };
        match *rec {
            Rec::Dot => {
                let mut inline = Vec::new();
                let mut overflow = Vec::new();
                if d == 0 {
                    inline.push(Susp::Sp);
                    overflow.push(Susp::Er);
                }
                inline.push(px(dir.mode, dir.nlink, dir.ino));
                inline.push(tf);
                RrArea { inline, overflow }
            }
            Rec::DotDot => {
                let p = &self.flat.dirs[dir.parent];
                RrArea {
                    inline: vec![px(p.mode, p.nlink, p.ino), tf],
                    overflow: Vec::new(),
                }
            }
            Rec::Entry(e) => {
                let entry = &dir.entries[e];
                let attrs = match entry.kind {
                    Kind::Dir(c) => {
                        let c = &self.flat.dirs[c];
                        px(c.mode, c.nlink, c.ino)
                    }
                    Kind::File(f) => {
                        let f = &self.flat.files[f];
                        px(f.mode, 1, f.ino)
                    }
                };
                let name = entry.name.as_bytes();
                let one_nm = name.len() <= NM_CHUNK;
                let mut inline = vec![attrs, tf];
                if one_nm {
                    inline.push(Susp::Nm { flags: 0, name });
                    let su: usize = inline.iter().map(Susp::len).sum();
                    if DirRecord::len_for(entry.iso_id.len(), su) <= MAX_RECORD {
                        return RrArea {
                            inline,
                            overflow: Vec::new(),
                        };
                    }
                    inline.pop();
                }
                let chunks: Vec<&[u8]> = name.chunks(NM_CHUNK).collect();
                let last = chunks.len() - 1;
                let overflow = chunks
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| Susp::Nm {
                        flags: if i < last { NM_CONTINUE } else { 0 },
                        name: c,
                    })
                    .collect();
                RrArea { inline, overflow }
            }
        }
    }

    pub(super) fn ident<'a>(&'a self, d: usize, rec: &Rec, joliet: bool) -> &'a [u8] {
        match *rec {
            Rec::Dot => &[0],
            Rec::DotDot => &[1],
            Rec::Entry(e) => {
                let e = &self.flat.dirs[d].entries[e];
                if joliet { &e.joliet_id } else { &e.iso_id }
            }
        }
    }

    pub(super) fn record_len(&self, d: usize, rec: &Rec, joliet: bool) -> usize {
        let su = if joliet {
            0
        } else {
            self.rr_area(d, rec).inline_len()
        };
        DirRecord::len_for(self.ident(d, rec, joliet).len(), su)
    }

    /// Size of a directory extent: records never straddle a sector boundary (ECMA-119 §6.8.1.1).
    pub(super) fn dir_size(&self, d: usize, joliet: bool) -> u64 {
        let mut sectors = 1u64;
        let mut used = 0usize;
        for rec in self.records(d, joliet) {
            let len = self.record_len(d, &rec, joliet);
            if used + len > SECTOR {
                sectors += 1;
                used = 0;
            }
            used += len;
        }
        sectors * SECTOR as u64
    }

    pub(super) fn path_table_size(&self, order: &[usize], joliet: bool) -> u64 {
        order
            .iter()
            .map(|&d| {
                let id_len = if d == 0 {
                    1
                } else {
                    let p = &self.flat.dirs[self.flat.dirs[d].parent];
                    let e = p
                        .entries
                        .iter()
                        .find(|e| matches!(e.kind, Kind::Dir(c) if c == d));
                    e.map_or(1, |e| {
                        if joliet {
                            e.joliet_id.len()
                        } else {
                            e.iso_id.len()
                        }
                    })
                };
                PathTableRecord::len_for(id_len) as u64
            })
            .sum()
    }

    pub(super) fn layout(&self) -> Result<Layout> {
        let n = self.flat.dirs.len();
        if n > usize::from(u16::MAX) {
            return Err(Error::ImageTooLarge {
                what: "directories (path table parent numbers are 16-bit)",
                value: n as u64,
                max: u64::from(u16::MAX),
            });
        }
        let pri_order = self.flat.path_table_order(false);
        let jol_order = self.flat.path_table_order(true);
        // Volume descriptors: primary, Joliet, terminator.
        let mut next: u64 = u64::from(FIRST_VD) + 3;
        let table = |size: u64, next: &mut u64| -> Result<(u32, u32, u32)> {
            let l = *next;
            let m = l + sectors_for(size);
            *next = m + sectors_for(size);
            Ok((
                to_u32("sectors", l)?,
                to_u32("sectors", m)?,
                to_u32("path table bytes", size)?,
            ))
        };
        let pt_pri = table(self.path_table_size(&pri_order, false), &mut next)?;
        let pt_jol = table(self.path_table_size(&jol_order, true), &mut next)?;

        let (pri_extent, pri_size) = self.dir_extents(&pri_order, false, &mut next)?;
        let (jol_extent, jol_size) = self.dir_extents(&jol_order, true, &mut next)?;
        let ce_start = to_u32("sectors", next)?;
        let (ce_loc, ce_sectors) = self.continuation_areas(&pri_order, ce_start);
        next += u64::from(ce_sectors);
        let (file_extent, file_order) = self.file_extents(&pri_order, &mut next)?;
        let total = to_u32("sectors", next)?;
        Ok(Layout {
            pri_order,
            jol_order,
            pri_extent,
            pri_size,
            jol_extent,
            jol_size,
            pt_pri,
            pt_jol,
            ce_start,
            ce_sectors,
            ce_loc,
            file_extent,
            file_order,
            total,
        })
    }

    /// Place the directory extents of one hierarchy from sector `*next` on, in path-table order:
    /// each directory's extent and size, by directory index.
    pub(super) fn dir_extents(
        &self,
        order: &[usize],
        joliet: bool,
        next: &mut u64,
    ) -> Result<(Vec<u32>, Vec<u32>)> {
        let n = self.flat.dirs.len();
        let mut extent = vec![0u32; n];
        let mut size_of = vec![0u32; n];
        for &d in order {
            let size = self.dir_size(d, joliet);
            extent[d] = to_u32("sectors", *next)?;
            size_of[d] = to_u32("directory bytes", size)?;
            *next += sectors_for(size);
        }
        Ok((extent, size_of))
    }

    /// Continuation areas from sector `ce_start`, packed so none straddles a sector: per
    /// directory, per record in primary emission order, its location if it has one; and the
    /// sectors used.
    pub(super) fn continuation_areas(
        &self,
        pri_order: &[usize],
        ce_start: u32,
    ) -> (CeLocations, u32) {
        let mut ce_loc = vec![Vec::new(); self.flat.dirs.len()];
        let mut ce_sector = 0u32;
        let mut ce_used = 0usize;
        let mut any_ce = false;
        for &d in pri_order {
            let locs = self
                .records(d, false)
                .map(|rec| {
                    let len = self.rr_area(d, &rec).overflow_len();
                    if len == 0 {
                        return None;
                    }
                    any_ce = true;
                    if ce_used + len > SECTOR {
                        ce_sector += 1;
                        ce_used = 0;
                    }
                    let loc = (ce_start + ce_sector, ce_used as u32);
                    ce_used += len;
                    Some(loc)
                })
                .collect();
            ce_loc[d] = locs;
        }
        let ce_sectors = if any_ce { ce_sector + 1 } else { 0 };
        (ce_loc, ce_sectors)
    }

    /// Place file data from sector `*next` on, in primary directory order: each file's extent (0
    /// when empty) and the files in data order.
    pub(super) fn file_extents(
        &self,
        pri_order: &[usize],
        next: &mut u64,
    ) -> Result<(Vec<u32>, Vec<usize>)> {
        let mut file_extent = vec![0u32; self.flat.files.len()];
        let mut file_order = Vec::with_capacity(self.flat.files.len());
        for &d in pri_order {
            let dir = &self.flat.dirs[d];
            for &e in &dir.pri_order {
                if let Kind::File(f) = dir.entries[e].kind {
                    let file = &self.flat.files[f];
                    let len = file.data.len() as u64;
                    if len > u64::from(u32::MAX) {
                        return Err(Error::FileTooLarge {
                            path: file.path.clone(),
                            size: len,
                            max: u64::from(u32::MAX),
                        });
                    }
                    if len > 0 {
                        file_extent[f] = to_u32("sectors", *next)?;
                        *next += sectors_for(len);
                    }
                    file_order.push(f);
                }
            }
        }
        Ok((file_extent, file_order))
    }
}
