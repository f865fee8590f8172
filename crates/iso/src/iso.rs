//! The ISO 9660 writer: flatten the tree, lay it out, then stream sectors in order.

use std::io::Write;

use crate::error::{Error, Result};
use crate::names::{cmp_ident, joliet_id, mangle_dir, units_of_bytes, units_of_ucs2};
use crate::records::{
    DecDate, DirRecord, Endian, FLAG_DIRECTORY, NM_CONTINUE, PathTableRecord, RecDate, SECTOR,
    Susp, VdKind, VolumeDescriptor, put_all, terminator,
};
use crate::time::Civil;
use crate::tree::{Dir, Node, S_IFDIR, S_IFREG, Tree};

/// Options of [`write_iso`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoOptions {
    /// Volume identifier, e.g. `"cidata"`: recorded verbatim in the primary descriptor (at most
    /// 32 printable ASCII characters) and in the Joliet descriptor (at most 16 characters).
    pub volume_id: String,
    /// `SOURCE_DATE_EPOCH`: every date in the image (volume and file dates, Rock Ridge TF).
    pub epoch: u64,
}

/// ISO 9660 allows eight directory levels, the root being level 1 (ECMA-119 §6.8.2.1).
const MAX_LEVEL: usize = 8;
/// First sector after the system area.
const FIRST_VD: u32 = 16;
/// Longest directory record pycdlib and most readers accept.
const MAX_RECORD: usize = 254;
/// Largest piece of a name put in one NM entry.
const NM_CHUNK: usize = 250;
const APPLICATION_ID: &[u8] = b"KILN";

#[derive(Debug)]
enum Kind {
    Dir(usize),
    File(usize),
}

#[derive(Debug)]
struct Entry<'t> {
    name: &'t str,
    kind: Kind,
    /// Primary (level 1) identifier.
    iso_id: Vec<u8>,
    /// Joliet identifier (UCS-2 BE).
    joliet_id: Vec<u8>,
}

#[derive(Debug)]
struct FlatDir<'t> {
    mode: u32,
    parent: usize,
    ino: u32,
    nlink: u32,
    entries: Vec<Entry<'t>>,
    /// Indices into `entries`, in primary identifier order.
    pri_order: Vec<usize>,
    /// Indices into `entries`, in Joliet identifier order.
    jol_order: Vec<usize>,
}

#[derive(Debug)]
struct FlatFile<'t> {
    path: String,
    mode: u32,
    ino: u32,
    data: &'t [u8],
}

/// The tree flattened into arenas (index 0 = root), inode numbers in depth-first name order.
#[derive(Debug)]
struct Flat<'t> {
    dirs: Vec<FlatDir<'t>>,
    files: Vec<FlatFile<'t>>,
}

impl<'t> Flat<'t> {
    fn new(tree: &'t Tree) -> Result<Self> {
        let mut flat = Flat {
            dirs: Vec::new(),
            files: Vec::new(),
        };
        let mut next_ino = 1u32;
        flat.add_dir(&tree.root, String::new(), 0, 1, &mut next_ino)?;
        Ok(flat)
    }

    fn add_dir(
        &mut self,
        dir: &'t Dir,
        path: String,
        parent: usize,
        level: usize,
        next_ino: &mut u32,
    ) -> Result<usize> {
        if level > MAX_LEVEL {
            return Err(Error::TooDeep {
                path,
                level,
                max: MAX_LEVEL,
            });
        }
        let idx = self.dirs.len();
        let ino = *next_ino;
        *next_ino += 1;
        let subdirs = dir
            .children
            .values()
            .filter(|n| matches!(n, Node::Dir(_)))
            .count();
        self.dirs.push(FlatDir {
            mode: S_IFDIR | dir.mode,
            parent: if idx == 0 { 0 } else { parent },
            ino,
            nlink: 2 + subdirs as u32,
            entries: Vec::new(),
            pri_order: Vec::new(),
            jol_order: Vec::new(),
        });
        let mut entries = Vec::with_capacity(dir.children.len());
        for (name, node) in &dir.children {
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            let kind = match node {
                Node::Dir(d) => Kind::Dir(self.add_dir(d, child_path, idx, level + 1, next_ino)?),
                Node::File { data, mode } => {
                    let fi = self.files.len();
                    self.files.push(FlatFile {
                        path: child_path,
                        mode: S_IFREG | mode,
                        ino: *next_ino,
                        data,
                    });
                    *next_ino += 1;
                    Kind::File(fi)
                }
            };
            entries.push(Entry {
                name,
                kind,
                iso_id: Vec::new(),
                joliet_id: joliet_id(name),
            });
        }
        let shape: Vec<(&str, bool)> = entries
            .iter()
            .map(|e| (e.name, matches!(e.kind, Kind::Dir(_))))
            .collect();
        for (e, id) in entries.iter_mut().zip(mangle_dir(&shape)) {
            e.iso_id = id;
        }
        let pri_keys: Vec<Vec<u16>> = entries.iter().map(|e| units_of_bytes(&e.iso_id)).collect();
        let jol_keys: Vec<Vec<u16>> = entries
            .iter()
            .map(|e| units_of_ucs2(&e.joliet_id))
            .collect();
        let mut pri: Vec<usize> = (0..entries.len()).collect();
        pri.sort_by(|&a, &b| cmp_ident(&pri_keys[a], &pri_keys[b]));
        let mut jol: Vec<usize> = (0..entries.len()).collect();
        jol.sort_by(|&a, &b| cmp_ident(&jol_keys[a], &jol_keys[b]));
        let d = &mut self.dirs[idx];
        d.entries = entries;
        d.pri_order = pri;
        d.jol_order = jol;
        Ok(idx)
    }

    /// Directories in path-table order (ECMA-119 §9.4: by level, parent number, identifier):
    /// breadth-first, children in the hierarchy's identifier order.
    fn path_table_order(&self, joliet: bool) -> Vec<usize> {
        let mut order = vec![0usize];
        let mut i = 0;
        while i < order.len() {
            let d = &self.dirs[order[i]];
            let ord = if joliet { &d.jol_order } else { &d.pri_order };
            for &e in ord {
                if let Kind::Dir(c) = d.entries[e].kind {
                    order.push(c);
                }
            }
            i += 1;
        }
        order
    }
}

/// Rock Ridge system use of one directory record: what stays in the record, what goes to a
/// continuation area (a CE entry pointing there is appended to the inline part when non-empty).
#[derive(Debug)]
struct RrArea<'a> {
    inline: Vec<Susp<'a>>,
    overflow: Vec<Susp<'a>>,
}

impl RrArea<'_> {
    fn overflow_len(&self) -> usize {
        self.overflow.iter().map(Susp::len).sum()
    }
    fn inline_len(&self) -> usize {
        let ce = if self.overflow.is_empty() { 0 } else { 28 };
        self.inline.iter().map(Susp::len).sum::<usize>() + ce
    }
    fn encode_inline(&self, ce: Option<(u32, u32)>) -> Vec<u8> {
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

fn px(mode: u32, nlink: u32, ino: u32) -> Susp<'static> {
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
enum Rec {
    Dot,
    DotDot,
    Entry(usize),
}

/// Per directory, per record in primary emission order: the (sector, offset) of its continuation
/// area, if it has one.
type CeLocations = Vec<Vec<Option<(u32, u32)>>>;

/// Where each piece of the image goes, in sectors.
#[derive(Debug)]
struct Layout {
    pri_order: Vec<usize>,
    jol_order: Vec<usize>,
    /// Per directory (by dir index): extent and size in each hierarchy.
    pri_extent: Vec<u32>,
    pri_size: Vec<u32>,
    jol_extent: Vec<u32>,
    jol_size: Vec<u32>,
    pt_pri: (u32, u32, u32), // (L, M, size in bytes)
    pt_jol: (u32, u32, u32),
    /// Continuation area start sector and its length in sectors.
    ce_start: u32,
    ce_sectors: u32,
    /// Per directory, per record in primary emission order: CE location if it has one.
    ce_loc: CeLocations,
    file_extent: Vec<u32>,
    /// Files in data order.
    file_order: Vec<usize>,
    total: u32,
}

struct Writer<'t> {
    flat: Flat<'t>,
    date: RecDate,
    civil: Civil,
}

fn sectors_for(bytes: u64) -> u64 {
    bytes.div_ceil(SECTOR as u64)
}

fn to_u32(what: &'static str, v: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::ImageTooLarge {
        what,
        value: v,
        max: u64::from(u32::MAX),
    })
}

impl<'t> Writer<'t> {
    fn records(&self, d: usize, joliet: bool) -> impl Iterator<Item = Rec> + '_ {
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

    fn rr_area(&self, d: usize, rec: &Rec) -> RrArea<'t> {
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

    fn ident<'a>(&'a self, d: usize, rec: &Rec, joliet: bool) -> &'a [u8] {
        match *rec {
            Rec::Dot => &[0],
            Rec::DotDot => &[1],
            Rec::Entry(e) => {
                let e = &self.flat.dirs[d].entries[e];
                if joliet { &e.joliet_id } else { &e.iso_id }
            }
        }
    }

    fn record_len(&self, d: usize, rec: &Rec, joliet: bool) -> usize {
        let su = if joliet {
            0
        } else {
            self.rr_area(d, rec).inline_len()
        };
        DirRecord::len_for(self.ident(d, rec, joliet).len(), su)
    }

    /// Size of a directory extent: records never straddle a sector boundary (ECMA-119 §6.8.1.1).
    fn dir_size(&self, d: usize, joliet: bool) -> u64 {
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

    fn path_table_size(&self, order: &[usize], joliet: bool) -> u64 {
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

    fn layout(&self) -> Result<Layout> {
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
    fn dir_extents(
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
    fn continuation_areas(
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
    fn file_extents(&self, pri_order: &[usize], next: &mut u64) -> Result<(Vec<u32>, Vec<usize>)> {
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

    fn path_table(&self, lay: &Layout, joliet: bool, endian: Endian) -> Vec<u8> {
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

    fn directory(&self, lay: &Layout, d: usize, joliet: bool) -> Vec<u8> {
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

    fn continuation_area(&self, lay: &Layout) -> Vec<u8> {
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

    fn descriptor(&self, lay: &Layout, opts: &IsoOptions, joliet: bool) -> Vec<u8> {
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

fn pad_to_sector(buf: &mut Vec<u8>) {
    let rem = buf.len() % SECTOR;
    if rem != 0 {
        buf.resize(buf.len() + SECTOR - rem, 0);
    }
}

fn check_volume_id(v: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidVolumeId {
            volume_id: v.to_owned(),
            reason,
        })
    };
    if v.is_empty() {
        return bad("empty");
    }
    if !v.bytes().all(|b| (0x20..0x7F).contains(&b)) {
        return bad("only printable ASCII can be recorded in the primary volume descriptor");
    }
    if v.len() > 16 {
        return bad(
            "longer than 16 characters (the Joliet volume identifier holds 16 UCS-2 characters)",
        );
    }
    Ok(())
}

/// Counts bytes written through it.
struct Counting<'w, W: Write> {
    inner: &'w mut W,
    written: u64,
}

impl<W: Write> Counting<'_, W> {
    fn put(&mut self, op: &'static str, bytes: &[u8]) -> Result<()> {
        self.inner
            .write_all(bytes)
            .map_err(|source| Error::Io { op, source })?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// Writes `tree` as an ISO 9660 image with Joliet and Rock Ridge to `out`; returns the number of
/// bytes written (always a multiple of 2048).
///
/// The output depends only on `tree` and `opts`: identical inputs give identical bytes.
pub fn write_iso(tree: &Tree, opts: &IsoOptions, out: &mut impl Write) -> Result<u64, Error> {
    check_volume_id(&opts.volume_id)?;
    let civil = Civil::from_epoch(opts.epoch);
    let date = RecDate::new(civil).ok_or(Error::EpochOutOfRange {
        epoch: opts.epoch,
        format: "ISO 9660 directory record dates end in 2155",
    })?;
    let w = Writer {
        flat: Flat::new(tree)?,
        date,
        civil,
    };
    let lay = w.layout()?;
    let mut out = Counting {
        inner: out,
        written: 0,
    };
    out.put(
        "writing system area",
        &vec![0u8; FIRST_VD as usize * SECTOR],
    )?;
    out.put(
        "writing primary volume descriptor",
        &w.descriptor(&lay, opts, false),
    )?;
    out.put(
        "writing Joliet volume descriptor",
        &w.descriptor(&lay, opts, true),
    )?;
    out.put("writing descriptor set terminator", &terminator())?;
    for (joliet, endian) in [
        (false, Endian::Little),
        (false, Endian::Big),
        (true, Endian::Little),
        (true, Endian::Big),
    ] {
        out.put("writing path table", &w.path_table(&lay, joliet, endian))?;
    }
    for &d in &lay.pri_order {
        out.put("writing directory", &w.directory(&lay, d, false))?;
    }
    for &d in &lay.jol_order {
        out.put("writing Joliet directory", &w.directory(&lay, d, true))?;
    }
    out.put(
        "writing Rock Ridge continuation area",
        &w.continuation_area(&lay),
    )?;
    let zeros = [0u8; SECTOR];
    for &f in &lay.file_order {
        let data = w.flat.files[f].data;
        out.put("writing file data", data)?;
        let rem = data.len() % SECTOR;
        if rem != 0 {
            out.put("writing file data", &zeros[..SECTOR - rem])?;
        }
    }
    debug_assert_eq!(out.written, u64::from(lay.total) * SECTOR as u64);
    out.inner.flush().map_err(|source| Error::Io {
        op: "flushing ISO image",
        source,
    })?;
    Ok(out.written)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn seed_tree() -> Tree {
        let mut t = Tree::new();
        t.add_file("meta-data", b"instance-id: n1\n".to_vec(), 0o644)
            .unwrap();
        t.add_file("user-data", b"#cloud-config\n".to_vec(), 0o644)
            .unwrap();
        t
    }

    fn opts() -> IsoOptions {
        IsoOptions {
            volume_id: "cidata".into(),
            epoch: 1_700_000_000,
        }
    }

    #[test]
    fn image_is_sector_aligned_and_deterministic() {
        let t = seed_tree();
        let mut a = Vec::new();
        let n = write_iso(&t, &opts(), &mut a).unwrap();
        assert_eq!(n as usize, a.len());
        assert_eq!(a.len() % SECTOR, 0);
        let mut b = Vec::new();
        write_iso(&t, &opts(), &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(&a[16 * SECTOR + 1..16 * SECTOR + 6], b"CD001");
        assert_eq!(&a[16 * SECTOR + 40..16 * SECTOR + 46], b"cidata");
        assert_eq!(a[18 * SECTOR], 255);
        let size = u32::from_le_bytes(a[16 * SECTOR + 80..16 * SECTOR + 84].try_into().unwrap());
        assert_eq!(size as usize * SECTOR, a.len());
    }

    #[test]
    fn rejects_bad_inputs() {
        let t = seed_tree();
        let mut sink = Vec::new();
        let bad = IsoOptions {
            volume_id: "a-volume-id-that-is-too-long".into(),
            epoch: 0,
        };
        assert!(matches!(
            write_iso(&t, &bad, &mut sink),
            Err(Error::InvalidVolumeId { .. })
        ));
        let late = IsoOptions {
            volume_id: "cidata".into(),
            epoch: 10_000_000_000,
        };
        assert!(matches!(
            write_iso(&t, &late, &mut sink),
            Err(Error::EpochOutOfRange { .. })
        ));
        let mut deep = Tree::new();
        deep.add_file("1/2/3/4/5/6/7/f", vec![1], 0o644).unwrap();
        write_iso(&deep, &opts(), &mut sink).unwrap();
        deep.add_dir("1/2/3/4/5/6/7/8", 0o755).unwrap();
        assert!(matches!(
            write_iso(&deep, &opts(), &mut sink),
            Err(Error::TooDeep { level: 9, .. })
        ));
    }

    #[test]
    fn long_names_use_continuation_areas() {
        let mut t = Tree::new();
        // 64 three-byte characters: a 192-byte Rock Ridge name that cannot stay in the record.
        let long = "\u{20AC}".repeat(64);
        t.add_file(&long, b"x".to_vec(), 0o644).unwrap();
        t.add_file("short", b"y".to_vec(), 0o644).unwrap();
        let mut img = Vec::new();
        write_iso(&t, &opts(), &mut img).unwrap();
        let w = Writer {
            flat: Flat::new(&t).unwrap(),
            date: RecDate::new(Civil::from_epoch(0)).unwrap(),
            civil: Civil::from_epoch(0),
        };
        let lay = w.layout().unwrap();
        assert_eq!(lay.ce_sectors, 1);
        // Root records: ".", "..", then the two files; "." (ER) and the long name have a CE.
        let with_ce: Vec<bool> = lay.ce_loc[0].iter().map(Option::is_some).collect();
        let long_first = w.flat.dirs[0].entries[w.flat.dirs[0].pri_order[0]].name == long;
        let expect = if long_first {
            [true, false, true, false]
        } else {
            [true, false, false, true]
        };
        assert_eq!(with_ce, expect);
    }
}
