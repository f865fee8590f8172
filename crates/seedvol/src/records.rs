//! On-disk records of ECMA-119 (ISO 9660), Joliet and SUSP/Rock Ridge, as typed structs that
//! know how to encode themselves.
//!
//! Numeric fields use the encodings of ECMA-119 §7: `Both16`/`Both32` are "both-byte orders"
//! (§7.2.3 / §7.3.3: little-endian copy followed by big-endian copy).

use crate::time::Civil;

/// Logical sector (= logical block) size used throughout.
pub(crate) const SECTOR: usize = 2048;

/// A 16-bit value recorded in both byte orders (ECMA-119 §7.2.3).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Both16(pub u16);
/// A 32-bit value recorded in both byte orders (ECMA-119 §7.3.3).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Both32(pub u32);

impl Both16 {
    pub fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_le_bytes());
        out.extend_from_slice(&self.0.to_be_bytes());
    }
}
impl Both32 {
    pub fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_le_bytes());
        out.extend_from_slice(&self.0.to_be_bytes());
    }
}

/// Seven-byte recording date of a directory record (ECMA-119 §9.1.5), always UTC.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecDate {
    years_since_1900: u8,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl RecDate {
    /// `None` when the year is outside 1900..=2155.
    pub fn new(c: Civil) -> Option<Self> {
        let y = u8::try_from(c.year.checked_sub(1900)?).ok()?;
        Some(Self {
            years_since_1900: y,
            month: c.month,
            day: c.day,
            hour: c.hour,
            minute: c.minute,
            second: c.second,
        })
    }
    pub fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[
            self.years_since_1900,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            0, // offset from GMT in 15-minute units
        ]);
    }
}

/// Seventeen-byte volume descriptor date (ECMA-119 §8.4.26.1): 16 ASCII digits + GMT offset.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DecDate(Option<Civil>);

impl DecDate {
    pub fn at(c: Civil) -> Self {
        Self(Some(c))
    }
    /// "Not specified": all digits zero, offset zero.
    pub fn unset() -> Self {
        Self(None)
    }
    pub fn put(self, out: &mut Vec<u8>) {
        match self.0 {
            Some(c) => {
                let s = format!(
                    "{:04}{:02}{:02}{:02}{:02}{:02}00",
                    c.year, c.month, c.day, c.hour, c.minute, c.second
                );
                out.extend_from_slice(s.as_bytes());
            }
            None => out.extend_from_slice(b"0000000000000000"),
        }
        out.push(0);
    }
}

/// File flags of a directory record (ECMA-119 §9.1.6).
pub(crate) const FLAG_DIRECTORY: u8 = 0x02;

/// A directory record (ECMA-119 §9.1). `ident` is the file identifier exactly as recorded
/// (`[0]` for "." and `[1]` for ".."), `system_use` the SUSP area (empty for Joliet).
#[derive(Debug, Clone)]
pub(crate) struct DirRecord<'a> {
    pub extent: u32,
    pub data_len: u32,
    pub date: RecDate,
    pub flags: u8,
    pub ident: &'a [u8],
    pub system_use: &'a [u8],
}

impl DirRecord<'_> {
    /// Length of the fixed part before the identifier.
    pub const FIXED: usize = 33;

    /// Recorded length for an identifier and system use area of the given sizes: the identifier
    /// is followed by a pad byte when its length is even, and the whole record is kept even.
    pub fn len_for(ident_len: usize, su_len: usize) -> usize {
        let base = Self::FIXED + ident_len + usize::from(ident_len.is_multiple_of(2));
        let n = base + su_len;
        n + n % 2
    }

    pub fn len(&self) -> usize {
        Self::len_for(self.ident.len(), self.system_use.len())
    }

    pub fn put(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let len = self.len();
        debug_assert!(len <= 255);
        out.push(len as u8);
        out.push(0); // extended attribute record length
        Both32(self.extent).put(out);
        Both32(self.data_len).put(out);
        self.date.put(out);
        out.push(self.flags);
        out.push(0); // file unit size (not interleaved)
        out.push(0); // interleave gap size
        Both16(1).put(out); // volume sequence number
        out.push(self.ident.len() as u8);
        out.extend_from_slice(self.ident);
        if self.ident.len().is_multiple_of(2) {
            out.push(0);
        }
        out.extend_from_slice(self.system_use);
        out.resize(start + len, 0);
    }
}

/// Byte order of a path table (ECMA-119 §9.4: type L is little-endian, type M big-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endian {
    Little,
    Big,
}

/// One path table record (ECMA-119 §9.4).
#[derive(Debug, Clone)]
pub(crate) struct PathTableRecord<'a> {
    pub extent: u32,
    pub parent: u16,
    pub ident: &'a [u8],
}

impl PathTableRecord<'_> {
    pub fn len_for(ident_len: usize) -> usize {
        8 + ident_len + ident_len % 2
    }
    pub fn put(&self, endian: Endian, out: &mut Vec<u8>) {
        out.push(self.ident.len() as u8);
        out.push(0); // extended attribute record length
        match endian {
            Endian::Little => {
                out.extend_from_slice(&self.extent.to_le_bytes());
                out.extend_from_slice(&self.parent.to_le_bytes());
            }
            Endian::Big => {
                out.extend_from_slice(&self.extent.to_be_bytes());
                out.extend_from_slice(&self.parent.to_be_bytes());
            }
        }
        out.extend_from_slice(self.ident);
        if self.ident.len() % 2 == 1 {
            out.push(0);
        }
    }
}

/// Which kind of volume descriptor (ECMA-119 §8.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VdKind {
    /// Type 1.
    Primary,
    /// Type 2 with the Joliet UCS-2 level 3 escape sequence `%/E`.
    Joliet,
}

/// A primary or (Joliet) supplementary volume descriptor (ECMA-119 §8.4, §8.5).
/// String fields hold the already-encoded bytes (d/a-characters, or UCS-2 big-endian).
#[derive(Debug, Clone)]
pub(crate) struct VolumeDescriptor {
    pub kind: VdKind,
    pub system_id: Vec<u8>,
    pub volume_id: Vec<u8>,
    pub volume_space_size: u32,
    pub path_table_size: u32,
    pub l_path_table: u32,
    pub m_path_table: u32,
    pub root_extent: u32,
    pub root_len: u32,
    pub root_date: RecDate,
    pub volume_set_id: Vec<u8>,
    pub publisher_id: Vec<u8>,
    pub preparer_id: Vec<u8>,
    pub application_id: Vec<u8>,
    pub created: DecDate,
    pub modified: DecDate,
    pub effective: DecDate,
}

impl VolumeDescriptor {
    /// Fills a field of `width` bytes with `value`, padded with spaces of the descriptor's
    /// character set (0x20, or U+0020 for Joliet).
    fn field(&self, out: &mut Vec<u8>, value: &[u8], width: usize) {
        let start = out.len();
        out.extend_from_slice(&value[..value.len().min(width)]);
        while out.len() < start + width {
            match self.kind {
                VdKind::Primary => out.push(b' '),
                VdKind::Joliet => {
                    if out.len() + 2 <= start + width {
                        out.extend_from_slice(&[0, b' ']);
                    } else {
                        out.push(0);
                    }
                }
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SECTOR);
        out.push(match self.kind {
            VdKind::Primary => 1,
            VdKind::Joliet => 2,
        });
        out.extend_from_slice(b"CD001");
        out.push(1); // descriptor version
        out.push(0); // unused / volume flags
        self.field(&mut out, &self.system_id, 32);
        self.field(&mut out, &self.volume_id, 32);
        out.extend_from_slice(&[0; 8]);
        Both32(self.volume_space_size).put(&mut out);
        let mut escapes = [0u8; 32];
        if self.kind == VdKind::Joliet {
            escapes[..3].copy_from_slice(b"%/E");
        }
        out.extend_from_slice(&escapes);
        Both16(1).put(&mut out); // volume set size
        Both16(1).put(&mut out); // volume sequence number
        Both16(SECTOR as u16).put(&mut out); // logical block size
        Both32(self.path_table_size).put(&mut out);
        out.extend_from_slice(&self.l_path_table.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // optional type L path table
        out.extend_from_slice(&self.m_path_table.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes()); // optional type M path table
        DirRecord {
            extent: self.root_extent,
            data_len: self.root_len,
            date: self.root_date,
            flags: FLAG_DIRECTORY,
            ident: &[0],
            system_use: &[],
        }
        .put(&mut out);
        self.field(&mut out, &self.volume_set_id, 128);
        self.field(&mut out, &self.publisher_id, 128);
        self.field(&mut out, &self.preparer_id, 128);
        self.field(&mut out, &self.application_id, 128);
        self.field(&mut out, b"", 37); // copyright file identifier
        self.field(&mut out, b"", 37); // abstract file identifier
        self.field(&mut out, b"", 37); // bibliographic file identifier
        self.created.put(&mut out);
        self.modified.put(&mut out);
        DecDate::unset().put(&mut out); // expiration
        self.effective.put(&mut out);
        out.push(1); // file structure version
        out.push(0);
        debug_assert_eq!(out.len(), 883);
        out.resize(SECTOR, 0); // application use + reserved
        out
    }
}

/// The volume descriptor set terminator (ECMA-119 §8.3).
pub(crate) fn terminator() -> Vec<u8> {
    let mut out = vec![255];
    out.extend_from_slice(b"CD001");
    out.push(1);
    out.resize(SECTOR, 0);
    out
}

/// Rock Ridge extension identification (IEEE P1282 / RRIP 1.12, whose PX carries a serial number).
pub(crate) const RR_EXT_ID: &[u8] = b"IEEE_P1282";
pub(crate) const RR_EXT_DES: &[u8] =
    b"THE IEEE P1282 PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
pub(crate) const RR_EXT_SRC: &[u8] =
    b"PLEASE CONTACT THE IEEE STANDARDS DEPARTMENT, PISCATAWAY, NJ, USA FOR THE P1282 SPECIFICATION";

/// NM flag: the name continues in the next NM entry.
pub(crate) const NM_CONTINUE: u8 = 0x01;

/// One System Use Sharing Protocol entry (SUSP 1.12 §5, RRIP 1.12 §4).
#[derive(Debug, Clone)]
pub(crate) enum Susp<'a> {
    /// SUSP indicator, first entry of the root's "." record.
    Sp,
    /// Continuation area pointer.
    Ce { block: u32, offset: u32, len: u32 },
    /// Extensions reference.
    Er,
    /// POSIX attributes (RRIP 1.12 form, with file serial number).
    Px {
        mode: u32,
        nlink: u32,
        uid: u32,
        gid: u32,
        ino: u32,
    },
    /// Time stamps: modify, access, attributes change, all the same.
    Tf { date: RecDate },
    /// Alternate (POSIX) name, or one piece of it.
    Nm { flags: u8, name: &'a [u8] },
}

impl Susp<'_> {
    pub fn len(&self) -> usize {
        match self {
            Susp::Sp => 7,
            Susp::Ce { .. } => 28,
            Susp::Er => 8 + RR_EXT_ID.len() + RR_EXT_DES.len() + RR_EXT_SRC.len(),
            Susp::Px { .. } => 44,
            Susp::Tf { .. } => 5 + 3 * 7,
            Susp::Nm { name, .. } => 5 + name.len(),
        }
    }

    fn head(&self, sig: &[u8; 2], out: &mut Vec<u8>) {
        out.extend_from_slice(sig);
        out.push(self.len() as u8);
        out.push(1); // entry version
    }

    pub fn put(&self, out: &mut Vec<u8>) {
        match *self {
            Susp::Sp => {
                self.head(b"SP", out);
                out.extend_from_slice(&[0xBE, 0xEF, 0]);
            }
            Susp::Ce { block, offset, len } => {
                self.head(b"CE", out);
                Both32(block).put(out);
                Both32(offset).put(out);
                Both32(len).put(out);
            }
            Susp::Er => {
                self.head(b"ER", out);
                out.push(RR_EXT_ID.len() as u8);
                out.push(RR_EXT_DES.len() as u8);
                out.push(RR_EXT_SRC.len() as u8);
                out.push(1); // extension version
                out.extend_from_slice(RR_EXT_ID);
                out.extend_from_slice(RR_EXT_DES);
                out.extend_from_slice(RR_EXT_SRC);
            }
            Susp::Px {
                mode,
                nlink,
                uid,
                gid,
                ino,
            } => {
                self.head(b"PX", out);
                for v in [mode, nlink, uid, gid, ino] {
                    Both32(v).put(out);
                }
            }
            Susp::Tf { date } => {
                self.head(b"TF", out);
                out.push(0x0E); // MODIFY | ACCESS | ATTRIBUTES, short form
                for _ in 0..3 {
                    date.put(out);
                }
            }
            Susp::Nm { flags, name } => {
                self.head(b"NM", out);
                out.push(flags);
                out.extend_from_slice(name);
            }
        }
    }
}

/// Encodes a list of SUSP entries.
pub(crate) fn put_all(entries: &[Susp<'_>], out: &mut Vec<u8>) {
    for e in entries {
        e.put(out);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn record_lengths_are_even_and_match() {
        for id in 1..40usize {
            for su in [0usize, 7, 26, 44, 71] {
                let ident = vec![b'A'; id];
                let suv = vec![0u8; su];
                let r = DirRecord {
                    extent: 1,
                    data_len: 2,
                    date: RecDate::new(Civil::from_epoch(0)).unwrap(),
                    flags: 0,
                    ident: &ident,
                    system_use: &suv,
                };
                let mut out = Vec::new();
                r.put(&mut out);
                assert_eq!(out.len(), r.len());
                assert_eq!(out.len() % 2, 0);
                assert_eq!(usize::from(out[0]), out.len());
            }
        }
    }

    #[test]
    fn susp_lengths_match_encoding() {
        let d = RecDate::new(Civil::from_epoch(1)).unwrap();
        for e in [
            Susp::Sp,
            Susp::Ce {
                block: 1,
                offset: 2,
                len: 3,
            },
            Susp::Er,
            Susp::Px {
                mode: 0o100_644,
                nlink: 1,
                uid: 0,
                gid: 0,
                ino: 7,
            },
            Susp::Tf { date: d },
            Susp::Nm {
                flags: 0,
                name: b"user-data",
            },
        ] {
            let mut out = Vec::new();
            e.put(&mut out);
            assert_eq!(out.len(), e.len(), "{e:?}");
            assert_eq!(usize::from(out[2]), e.len());
        }
    }

    #[test]
    fn descriptor_is_one_sector() {
        let c = Civil::from_epoch(0);
        let vd = VolumeDescriptor {
            kind: VdKind::Joliet,
            system_id: vec![],
            volume_id: vec![0, b'c'],
            volume_space_size: 20,
            path_table_size: 10,
            l_path_table: 19,
            m_path_table: 20,
            root_extent: 21,
            root_len: 2048,
            root_date: RecDate::new(c).unwrap(),
            volume_set_id: vec![],
            publisher_id: vec![],
            preparer_id: vec![],
            application_id: vec![],
            created: DecDate::at(c),
            modified: DecDate::at(c),
            effective: DecDate::at(c),
        };
        let s = vd.encode();
        assert_eq!(s.len(), SECTOR);
        assert_eq!(&s[1..6], b"CD001");
        assert_eq!(&s[88..91], b"%/E");
        assert_eq!(&s[813..829], b"1970010100000000");
    }
}
