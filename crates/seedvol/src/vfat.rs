//! The vfat seed writer, on top of the `fatfs` crate.
//!
//! Determinism: `fatfs` stamps entries through a `TimeProvider`; ours returns the epoch (set in
//! a thread-local for the duration of one [`write_vfat`] call, since `fatfs` wants a `'static`
//! provider). The volume serial is a hash of the inputs, the image is zero-filled before
//! formatting, and entries are created in name order.

use std::cell::Cell;
use std::io::{Read, Seek, SeekFrom, Write};

use crate::error::{Error, Result};
use crate::time::Civil;
use crate::tree::{Dir, Node, Tree};

/// Options of [`write_vfat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfatOptions {
    /// Volume label, e.g. `"CIDATA"`: at most 11 characters, upper-case letters, digits, space
    /// and `! # $ % & ' ( ) - @ ^ _ ` { } ~`.
    pub volume_label: String,
    /// `SOURCE_DATE_EPOCH`: every date in the image. FAT records 1980-01-01 to 2107-12-31 in
    /// local time without a zone; earlier epochs are clamped to 1980-01-01 00:00:00.
    pub epoch: u64,
}

/// The largest image this writer will make (FAT32 limits files to 4 GiB - 1 anyway).
const MAX_IMAGE: u64 = 16 << 30;
/// Smallest image: roomy enough for a seed and for mtools' FAT12 heuristics.
const MIN_IMAGE: u64 = 1 << 20;
const FAT_EPOCH_1980: u64 = 315_532_800;

thread_local! {
    static NOW: Cell<fatfs::DateTime> = const { Cell::new(fatfs::DateTime {
        date: fatfs::Date { year: 1980, month: 1, day: 1 },
        time: fatfs::Time { hour: 0, min: 0, sec: 0, millis: 0 },
    }) };
}

/// A `fatfs::TimeProvider` answering with the epoch of the `write_vfat` call on this thread.
#[derive(Debug)]
struct EpochClock;

static EPOCH_CLOCK: EpochClock = EpochClock;

impl fatfs::TimeProvider for EpochClock {
    fn get_current_date(&self) -> fatfs::Date {
        NOW.with(|n| n.get().date)
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        NOW.with(Cell::get)
    }
}

fn fat_datetime(epoch: u64) -> Result<fatfs::DateTime> {
    let c = Civil::from_epoch(epoch.max(FAT_EPOCH_1980));
    if c.year > 2107 {
        return Err(Error::EpochOutOfRange {
            epoch,
            format: "FAT dates end in 2107",
        });
    }
    Ok(fatfs::DateTime {
        date: fatfs::Date {
            year: c.year as u16,
            month: u16::from(c.month),
            day: u16::from(c.day),
        },
        time: fatfs::Time {
            hour: u16::from(c.hour),
            min: u16::from(c.minute),
            // FAT's 2-second resolution: keep the even second, as fatfs encodes it.
            sec: u16::from(c.second),
            millis: 0,
        },
    })
}

fn label_bytes(label: &str) -> Result<[u8; 11]> {
    let bad = |reason| {
        Err(Error::InvalidVolumeId {
            volume_id: label.to_owned(),
            reason,
        })
    };
    if label.is_empty() || label.len() > 11 {
        return bad("a FAT volume label has 1 to 11 characters");
    }
    // Lower-case letters are kept as given, as mkfs.vfat does (Ubuntu's Raspberry Pi image labels
    // its firmware partition `system-boot`, and cloud-init finds it by that label); DOS and
    // Windows show them upper-cased.
    let ok = |b: u8| b.is_ascii_alphanumeric() || b" !#$%&'()-@^_`{}~".contains(&b);
    if !label.bytes().all(ok) {
        return bad(
            "a FAT volume label holds letters, digits, space and ! # $ % & ' ( ) - @ ^ _ ` { } ~",
        );
    }
    if label.starts_with(' ') {
        return bad("a FAT volume label cannot start with a space");
    }
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.as_bytes());
    Ok(out)
}

/// FNV-1a (32-bit) over the inputs: the volume serial number.
fn volume_serial(tree: &Tree, opts: &VfatOptions) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(opts.volume_label.as_bytes());
    feed(&opts.epoch.to_le_bytes());
    tree.walk(|path, node| {
        feed(path.as_bytes());
        feed(&[0]);
        match node {
            Node::File { data, mode } => {
                feed(&mode.to_le_bytes());
                feed(&(data.len() as u64).to_le_bytes());
                feed(data);
            }
            Node::Dir(d) => feed(&d.mode.to_le_bytes()),
        }
    });
    h
}

/// A first guess at the image size: data rounded to 4 KiB clusters, directory entries with
/// long names, plus a quarter of headroom; at least 1 MiB; a multiple of 64 KiB.
fn estimate_size(tree: &Tree) -> (u64, u16) {
    let cluster = 4096u64;
    let mut bytes = 0u64;
    let dir_bytes = |d: &Dir| -> u64 {
        let slots: u64 = d
            .children
            .keys()
            .map(|n| 1 + (n.encode_utf16().count() as u64).div_ceil(13))
            .sum();
        ((slots + 2) * 32).div_ceil(cluster) * cluster
    };
    bytes += dir_bytes(&tree.root);
    tree.walk(|_, node| match node {
        Node::File { data, .. } => bytes += (data.len() as u64).div_ceil(cluster) * cluster,
        Node::Dir(d) => bytes += dir_bytes(d),
    });
    let root_slots: u64 = 1 + tree
        .root
        .children
        .keys()
        .map(|n| 1 + (n.encode_utf16().count() as u64).div_ceil(13))
        .sum::<u64>();
    let root_entries = root_slots.max(512).div_ceil(16) * 16;
    let size = (bytes + bytes / 4 + (256 << 10)).max(MIN_IMAGE);
    (
        size.div_ceil(64 << 10) * (64 << 10),
        u16::try_from(root_entries).unwrap_or(u16::MAX - 15),
    )
}

fn vfat_err(op: &'static str, path: &str) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Vfat { op, path, source }
}

/// Writes `tree` as a FAT12/16/32 image (type and size chosen from the contents) to `out`,
/// starting at offset 0. `out` should be empty: bytes past the image's end are left alone. Modes are not recorded (FAT has none) except that files without any
/// write bit get the read-only attribute.
pub fn write_vfat(
    tree: &Tree,
    opts: &VfatOptions,
    out: &mut (impl Read + Write + Seek),
) -> Result<(), Error> {
    write_vfat_sized(tree, opts, None, out)
}

/// [`write_vfat`] with the volume's size fixed to `size` bytes (a multiple of 512, e.g. a whole
/// partition) instead of chosen from the contents; `None` chooses it. Fails with an error naming
/// the file that no longer fits when the contents need more room.
pub fn write_vfat_sized(
    tree: &Tree,
    opts: &VfatOptions,
    fixed_size: Option<u64>,
    out: &mut (impl Read + Write + Seek),
) -> Result<(), Error> {
    let label = label_bytes(&opts.volume_label)?;
    let now = fat_datetime(opts.epoch)?;
    let mut too_large = None;
    tree.walk(|path, node| {
        if let Node::File { data, .. } = node
            && data.len() as u64 > u64::from(u32::MAX)
            && too_large.is_none()
        {
            too_large = Some((path.to_owned(), data.len() as u64));
        }
    });
    if let Some((path, size)) = too_large {
        return Err(Error::FileTooLarge {
            path,
            size,
            max: u64::from(u32::MAX),
        });
    }
    check_fat_names(&tree.root, "")?;
    let serial = volume_serial(tree, opts);
    let (estimate, root_entries) = estimate_size(tree);
    let mut size = match fixed_size {
        Some(s) if s % 512 != 0 || s < MIN_IMAGE => {
            return Err(Error::ImageTooLarge {
                what: "vfat image bytes (a multiple of 512, at least 1 MiB)",
                value: s,
                max: MAX_IMAGE,
            });
        }
        Some(s) => s,
        None => estimate,
    };
    let fixed = fixed_size.is_some();
    let previous = NOW.with(|n| n.replace(now));
    let result = loop {
        if size > MAX_IMAGE {
            break Err(Error::ImageTooLarge {
                what: "vfat image bytes",
                value: size,
                max: MAX_IMAGE,
            });
        }
        match write_once(tree, size, root_entries, label, serial, now) {
            // Out of space (or a root directory too small): retry with a larger volume.
            // Out of space: retry with a larger volume. (fatfs 0.3 reports it only as a message.)
            Err(Error::Vfat { ref source, .. })
                if !fixed && source.to_string().contains("No space left on device") =>
            {
                size *= 2;
            }
            other => break other,
        }
    };
    NOW.with(|n| n.set(previous));
    let image = result?;
    let err = || vfat_err("writing vfat image", "");
    out.seek(SeekFrom::Start(0)).map_err(err())?;
    out.write_all(&image).map_err(err())?;
    out.flush().map_err(err())?;
    Ok(())
}

/// Builds the image in memory (fatfs does many small positioned I/Os; a `File` would turn each
/// into a system call) and returns it.
fn write_once(
    tree: &Tree,
    size: u64,
    root_entries: u16,
    label: [u8; 11],
    serial: u32,
    now: fatfs::DateTime,
) -> Result<Vec<u8>> {
    let len = usize::try_from(size).map_err(|_| Error::ImageTooLarge {
        what: "vfat image bytes (address space)",
        value: size,
        max: usize::MAX as u64,
    })?;
    let mut img = std::io::Cursor::new(vec![0u8; len]);
    let out = &mut img;
    let fmt = fatfs::FormatVolumeOptions::new()
        .total_sectors((size / 512) as u32)
        .bytes_per_sector(512)
        .max_root_dir_entries(root_entries)
        .volume_id(serial)
        .volume_label(label);
    fatfs::format_volume(&mut *out, fmt).map_err(vfat_err("formatting", ""))?;
    write_label_entry(out, label, now)?;
    out.seek(SeekFrom::Start(0))
        .map_err(vfat_err("mounting", ""))?;
    let fs = fatfs::FileSystem::new(
        &mut *out,
        fatfs::FsOptions::new()
            .update_accessed_date(false)
            .time_provider(&EPOCH_CLOCK),
    )
    .map_err(vfat_err("mounting", ""))?;
    populate(&fs.root_dir(), &tree.root, "")?;
    fs.unmount().map_err(vfat_err("unmounting", ""))?;
    fix_dot_entries(out)?;
    Ok(img.into_inner())
}

/// The geometry of a formatted FAT volume, read back from its boot sector.
#[derive(Debug)]
struct Geometry {
    cluster_bytes: u64,
    fat_offset: u64,
    /// Root directory region (FAT12/16) or `None` for FAT32 (root is a cluster chain).
    root_region: Option<(u64, u64)>,
    root_cluster: u32,
    data_offset: u64,
    fat_bits: u32,
}

fn read_geometry(out: &mut (impl Read + Seek)) -> std::io::Result<Geometry> {
    let mut bs = [0u8; 512];
    out.seek(SeekFrom::Start(0))?;
    out.read_exact(&mut bs)?;
    let le16 = |o: usize| u64::from(u16::from_le_bytes([bs[o], bs[o + 1]]));
    let le32 = |o: usize| u64::from(u32::from_le_bytes([bs[o], bs[o + 1], bs[o + 2], bs[o + 3]]));
    let bps = le16(11).max(1);
    let spc = u64::from(bs[13]).max(1);
    let reserved = le16(14);
    let fats = u64::from(bs[16]);
    let root_entries = le16(17);
    let total = if le16(19) != 0 { le16(19) } else { le32(32) };
    let fat_size = if le16(22) != 0 { le16(22) } else { le32(36) };
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let first_root = reserved + fats * fat_size;
    let first_data = first_root + root_sectors;
    let clusters = total.saturating_sub(first_data) / spc;
    let fat_bits = if clusters < 4085 {
        12
    } else if clusters < 65525 {
        16
    } else {
        32
    };
    Ok(Geometry {
        cluster_bytes: bps * spc,
        fat_offset: reserved * bps,
        root_region: (root_entries != 0).then(|| (first_root * bps, root_sectors * bps)),
        root_cluster: le32(44) as u32,
        data_offset: first_data * bps,
        fat_bits,
    })
}

impl Geometry {
    fn next_cluster(&self, out: &mut (impl Read + Seek), c: u32) -> std::io::Result<Option<u32>> {
        let (off, mask, end) = match self.fat_bits {
            12 => (u64::from(c) * 3 / 2, 0xFFF, 0xFF8),
            16 => (u64::from(c) * 2, 0xFFFF, 0xFFF8),
            _ => (u64::from(c) * 4, 0x0FFF_FFFF, 0x0FFF_FFF8),
        };
        let mut b = [0u8; 4];
        out.seek(SeekFrom::Start(self.fat_offset + off))?;
        out.read_exact(&mut b)?;
        let raw = u32::from_le_bytes(b);
        let v = match self.fat_bits {
            12 if c % 2 == 1 => (raw >> 4) & mask,
            _ => raw & mask,
        };
        Ok((v >= 2 && v < end).then_some(v))
    }

    fn cluster_offset(&self, c: u32) -> u64 {
        self.data_offset + u64::from(c.saturating_sub(2)) * self.cluster_bytes
    }

    /// Byte ranges (offset, length) holding a directory starting at `first` (0 = root).
    fn dir_extents(
        &self,
        out: &mut (impl Read + Seek),
        first: u32,
    ) -> std::io::Result<Vec<(u64, u64)>> {
        if first == 0 {
            if let Some(r) = self.root_region {
                return Ok(vec![r]);
            }
            return self.dir_extents(out, self.root_cluster);
        }
        let mut v = Vec::new();
        let mut c = Some(first);
        while let Some(cl) = c {
            if v.len() > 1 << 20 {
                break; // a loop in the chain; never produced by fatfs
            }
            v.push((self.cluster_offset(cl), self.cluster_bytes));
            c = self.next_cluster(out, cl)?;
        }
        Ok(v)
    }
}

/// fatfs 0.3 precedes the "." and ".." entries of every new directory with long-name slots,
/// which `fsck.fat` rejects ("Expected a valid '.' entry in this slot"). Walk every directory
/// and move "." and ".." to slots 0 and 1, marking the two long-name slots deleted.
fn fix_dot_entries(out: &mut (impl Read + Write + Seek)) -> Result<()> {
    let err = || vfat_err("fixing dot entries", "");
    let g = read_geometry(out).map_err(err())?;
    let mut todo = vec![0u32];
    while let Some(dir) = todo.pop() {
        let extents = g.dir_extents(out, dir).map_err(err())?;
        let mut bytes = Vec::new();
        for &(off, len) in &extents {
            let mut buf = vec![0u8; len as usize];
            out.seek(SeekFrom::Start(off)).map_err(err())?;
            out.read_exact(&mut buf).map_err(err())?;
            bytes.extend_from_slice(&buf);
        }
        let mut changed = false;
        if dir != 0 && bytes.len() >= 128 {
            let is_lfn = |e: &[u8]| e[11] == 0x0F;
            let (s0, s1, s2, s3) = (
                &bytes[0..32],
                &bytes[32..64],
                &bytes[64..96],
                &bytes[96..128],
            );
            if is_lfn(s0)
                && &s1[..11] == b".          "
                && is_lfn(s2)
                && &s3[..11] == b"..         "
            {
                let dot = s1.to_vec();
                let dotdot = s3.to_vec();
                bytes[0..32].copy_from_slice(&dot);
                bytes[32..64].copy_from_slice(&dotdot);
                for slot in [64usize, 96] {
                    bytes[slot..slot + 32].fill(0);
                    bytes[slot] = 0xE5;
                }
                changed = true;
            }
        }
        for e in bytes.chunks_exact(32) {
            if e[0] == 0 {
                break;
            }
            let attr = e[11];
            if e[0] == 0xE5 || attr == 0x0F || attr & 0x10 == 0 || e[0] == b'.' {
                continue;
            }
            let lo = u32::from(u16::from_le_bytes([e[26], e[27]]));
            let hi = if g.fat_bits == 32 {
                u32::from(u16::from_le_bytes([e[20], e[21]]))
            } else {
                0
            };
            let c = (hi << 16) | lo;
            if c >= 2 {
                todo.push(c);
            }
        }
        if changed {
            let mut at = 0usize;
            for &(off, len) in &extents {
                out.seek(SeekFrom::Start(off)).map_err(err())?;
                out.write_all(&bytes[at..at + len as usize])
                    .map_err(err())?;
                at += len as usize;
            }
        }
    }
    Ok(())
}

/// Characters a FAT long name may hold besides letters, digits and U+0080..U+FFFF.
const FAT_NAME_PUNCT: &str = "$%'-_@~`!(){}. +,;=[]^#&";

/// Refuses names FAT cannot record faithfully: characters outside the long-name set, names
/// ending in a dot or space (readers strip those), and names in one directory that differ only
/// in case (FAT looks names up without regard to case).
fn check_fat_names(dir: &Dir, prefix: &str) -> Result<()> {
    let mut seen: std::collections::BTreeMap<String, &str> = std::collections::BTreeMap::new();
    let join = |n: &str| {
        if prefix.is_empty() {
            n.to_owned()
        } else {
            format!("{prefix}/{n}")
        }
    };
    for (name, node) in &dir.children {
        let bad = |reason| Error::InvalidName {
            op: "writing vfat",
            path: join(name),
            name: name.clone(),
            reason,
        };
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || !c.is_ascii() || FAT_NAME_PUNCT.contains(c))
        {
            return Err(bad(
                "FAT long names cannot hold control characters or \" * / : < > ? \\ |",
            ));
        }
        if name.ends_with('.') || name.ends_with(' ') {
            return Err(bad("FAT names cannot end in a dot or a space"));
        }
        if let Some(other) = seen.insert(name.to_uppercase(), name) {
            return Err(Error::CaseCollision {
                path: join(name),
                other: join(other),
            });
        }
        if let Node::Dir(d) = node {
            check_fat_names(d, &join(name))?;
        }
    }
    Ok(())
}

fn populate<T: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<'_, T>,
    src: &Dir,
    prefix: &str,
) -> Result<()> {
    for (name, node) in &src.children {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        match node {
            Node::Dir(d) => {
                let sub = dir
                    .create_dir(name)
                    .map_err(vfat_err("creating directory", &path))?;
                populate(&sub, d, &path)?;
            }
            Node::File { data, .. } => {
                let mut f = dir
                    .create_file(name)
                    .map_err(vfat_err("creating file", &path))?;
                f.write_all(data).map_err(vfat_err("writing file", &path))?;
                f.flush().map_err(vfat_err("writing file", &path))?;
            }
        }
    }
    // Names were checked against each other (case-insensitively) but not against the 8.3 aliases
    // fatfs generates for long names: `create_*` on a name equal to an earlier sibling's alias
    // (`longfi~1.txt` after `longfilename.txt`) opens that sibling instead, merging two
    // directories or overwriting a file. Then the directory holds fewer entries than the tree.
    let join = |n: &str| {
        if prefix.is_empty() {
            n.to_owned()
        } else {
            format!("{prefix}/{n}")
        }
    };
    let entries: Vec<_> = dir
        .iter()
        .collect::<std::io::Result<_>>()
        .map_err(vfat_err("listing directory", prefix))?;
    let names: std::collections::BTreeSet<String> = entries
        .iter()
        .map(fatfs::DirEntry::file_name)
        .filter(|n| n != "." && n != "..")
        .collect();
    if let Some(lost) = src.children.keys().find(|n| !names.contains(*n)) {
        let other = entries
            .iter()
            .find(|e| e.short_file_name().eq_ignore_ascii_case(lost))
            .map_or_else(|| "?".to_owned(), fatfs::DirEntry::file_name);
        return Err(Error::AliasCollision {
            path: join(lost),
            other: join(&other),
        });
    }
    Ok(())
}

/// Records the label as the root directory's first entry (attribute "volume id"), where
/// Windows and `fsck.fat` look for it besides the boot sector.
fn write_label_entry(
    out: &mut (impl Read + Write + Seek),
    label: [u8; 11],
    now: fatfs::DateTime,
) -> Result<()> {
    let err = || vfat_err("writing volume label", "");
    let mut bs = [0u8; 512];
    out.seek(SeekFrom::Start(0)).map_err(err())?;
    out.read_exact(&mut bs).map_err(err())?;
    let le16 = |o: usize| u64::from(u16::from_le_bytes([bs[o], bs[o + 1]]));
    let le32 = |o: usize| u64::from(u32::from_le_bytes([bs[o], bs[o + 1], bs[o + 2], bs[o + 3]]));
    let bytes_per_sector = le16(11);
    let sectors_per_cluster = u64::from(bs[13]);
    let reserved = le16(14);
    let fats = u64::from(bs[16]);
    let root_entries = le16(17);
    let fat16_size = le16(22);
    let fat_size = if fat16_size != 0 {
        fat16_size
    } else {
        le32(36)
    };
    let root_dir_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
    let first_root_sector = reserved + fats * fat_size;
    let offset = if root_entries != 0 {
        first_root_sector * bytes_per_sector
    } else {
        let data = first_root_sector + root_dir_sectors;
        let root_cluster = le32(44);
        (data + (root_cluster.saturating_sub(2)) * sectors_per_cluster) * bytes_per_sector
    };
    let (date, time) = dos_date_time(now);
    let mut entry = [0u8; 32];
    entry[..11].copy_from_slice(&label);
    entry[11] = 0x08; // ATTR_VOLUME_ID
    entry[22..24].copy_from_slice(&time.to_le_bytes());
    entry[24..26].copy_from_slice(&date.to_le_bytes());
    out.seek(SeekFrom::Start(offset)).map_err(err())?;
    out.write_all(&entry).map_err(err())?;
    Ok(())
}

fn dos_date_time(dt: fatfs::DateTime) -> (u16, u16) {
    let date = ((dt.date.year - 1980) << 9) | (dt.date.month << 5) | dt.date.day;
    let time = (dt.time.hour << 11) | (dt.time.min << 5) | (dt.time.sec / 2);
    (date, time)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn tree() -> Tree {
        let mut t = Tree::new();
        t.add_file("meta-data", b"instance-id: a\n".to_vec(), 0o644)
            .unwrap();
        t.add_file("user-data", b"#cloud-config\n".to_vec(), 0o644)
            .unwrap();
        t.add_file("dir/sub/file.txt", vec![7; 10_000], 0o644)
            .unwrap();
        t
    }

    fn opts() -> VfatOptions {
        VfatOptions {
            volume_label: "CIDATA".into(),
            epoch: 1_700_000_000,
        }
    }

    #[test]
    fn deterministic_and_readable() {
        let mut a = Cursor::new(Vec::new());
        write_vfat(&tree(), &opts(), &mut a).unwrap();
        let mut b = Cursor::new(vec![0xAA; 3 << 20]);
        write_vfat(&tree(), &opts(), &mut b).unwrap();
        let (a, b) = (a.into_inner(), b.into_inner());
        assert_eq!(a[..], b[..a.len()]);
        let fs = fatfs::FileSystem::new(Cursor::new(a), fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label(), "CIDATA");
        let mut s = String::new();
        fs.root_dir()
            .open_file("user-data")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "#cloud-config\n");
        let e = fs
            .root_dir()
            .iter()
            .map(|e| e.unwrap())
            .find(|e| e.file_name() == "meta-data")
            .unwrap();
        let m = e.modified();
        assert_eq!((m.date.year, m.date.month, m.date.day), (2023, 11, 14));
    }

    #[test]
    fn grows_for_big_trees_and_rejects_bad_labels() {
        let mut t = Tree::new();
        for i in 0..600 {
            t.add_file(
                &format!("a-rather-long-file-name-number-{i}"),
                vec![1; 100],
                0o644,
            )
            .unwrap();
        }
        let mut img = Cursor::new(Vec::new());
        write_vfat(&t, &opts(), &mut img).unwrap();
        let fs =
            fatfs::FileSystem::new(Cursor::new(img.into_inner()), fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.root_dir().iter().count(), 600);
        let mut clash = Tree::new();
        clash.add_file("d/User-Data", vec![], 0o644).unwrap();
        clash.add_file("d/user-data", vec![], 0o644).unwrap();
        assert!(matches!(
            write_vfat(&clash, &opts(), &mut Cursor::new(Vec::new())),
            Err(Error::CaseCollision { ref path, .. }) if path == "d/user-data"
        ));
        let mut odd = Tree::new();
        odd.add_file("a<b", vec![], 0o644).unwrap();
        assert!(matches!(
            write_vfat(&odd, &opts(), &mut Cursor::new(Vec::new())),
            Err(Error::InvalidName { .. })
        ));
        let mut dot = Tree::new();
        dot.add_file("sub/trailing.", vec![], 0o644).unwrap();
        assert!(matches!(
            write_vfat(&dot, &opts(), &mut Cursor::new(Vec::new())),
            Err(Error::InvalidName { ref path, .. }) if path == "sub/trailing."
        ));
        let bad = VfatOptions {
            volume_label: "ci*data".into(),
            epoch: 0,
        };
        assert!(matches!(
            write_vfat(&tree(), &bad, &mut Cursor::new(Vec::new())),
            Err(Error::InvalidVolumeId { .. })
        ));
    }
}
