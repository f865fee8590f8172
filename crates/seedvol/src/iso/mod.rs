//! The ISO 9660 writer: flatten the tree (`flat`), lay it out (`layout`), then stream sectors in
//! order (`emit`).

mod emit;
mod flat;
mod layout;

use std::io::Write;

use crate::error::{Error, Result};
use crate::records::{Endian, RecDate, SECTOR, terminator};
use crate::time::Civil;
use crate::tree::Tree;
use flat::Flat;

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

struct Writer<'t> {
    flat: Flat<'t>,
    date: RecDate,
    civil: Civil,
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
