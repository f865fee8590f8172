//! Partition discovery for kiln: which partitions a disk has, what filesystem each holds, and which
//! one is the root filesystem.
//!
//! ```text
//!   BlockDev (raw file, qcow2 chain, memory)
//!        │  DevReader: Read + Seek adapter, bounded by BlockDev::len
//!        ▼
//!   GPT (gptman) ──or── MBR (mbrman) ──or── a filesystem on the whole disk
//!        │
//!        ▼  probe +0 (vfat boot sector) and +1024 (ext2/3/4 superblock) of every partition
//!   PartitionTable { partitions: [Partition { number, start, len, type, name, fs, label }] }
//!        │  root(): the ext4 labelled `cloudimg-rootfs`, else the largest Linux filesystem
//!        ▼
//!   window(dev, &partition) -> SliceDev  (the filesystem's own byte range)
//! ```
//!
//! [`write_gpt`] writes a new GPT from a [`GptLayout`] (for disks kiln makes itself); everything
//! else here only reads. The partition-table parsers are fed untrusted bytes, so the GPT
//! header is sanity-checked *before* gptman sees it (entry count and size, array location inside
//! the device), every read is bounded by the device size, and a panic inside a parser is caught and
//! reported as an error naming the device.
//!
//! ```
//! use kiln_blockdev::MemDev;
//! use kiln_partition::{scan, FsType, TableKind};
//!
//! // An ext2 superblock magic at +1024+56 on a bare disk: a whole-disk filesystem.
//! let disk = MemDev::new(64 * 1024);
//! kiln_blockdev::BlockDev::write_at(&disk, &0xEF53u16.to_le_bytes(), 1024 + 56).unwrap();
//! let table = scan(&disk, "mem").unwrap();
//! assert_eq!(table.kind, TableKind::None);
//! assert_eq!(table.partitions[0].fs, FsType::Ext2);
//! assert_eq!(table.root().unwrap().number, 0);
//! ```

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};

use kiln_blockdev::{BlockDev, SliceDev};

mod write;
pub use write::{GptLayout, GptPartition, write_gpt};

/// The label Ubuntu (and kiln's fixtures) give the root filesystem.
pub const ROOT_LABEL: &str = "cloudimg-rootfs";

/// Most partition entries a GPT may declare before we call it corrupt (the spec's minimum array is
/// 128 entries; nobody uses more than a few hundred).
const MAX_GPT_ENTRIES: u32 = 4096;
/// The only GPT entry size gptman can parse.
const GPT_ENTRY_SIZE: u32 = 128;

/// Errors of partition discovery. Every variant names the device it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The GPT is present but its header is implausible (checked before parsing).
    #[error("{device}: corrupt GPT header at LBA {lba} (sector size {sector_size}): {reason}")]
    CorruptGpt {
        device: String,
        lba: u64,
        sector_size: u64,
        reason: String,
    },
    /// gptman rejected the GPT (bad checksum on both copies, …).
    #[error("{device}: reading the GPT failed")]
    Gpt {
        device: String,
        #[source]
        source: gptman::Error,
    },
    /// mbrman rejected the MBR.
    #[error(
        "{device}: corrupt MBR: primary partition {number} (type {kind:#04x}) starts at LBA 0, on the table itself"
    )]
    CorruptMbr {
        device: String,
        number: u32,
        kind: u8,
    },
    #[error("{device}: reading the MBR failed")]
    Mbr {
        device: String,
        #[source]
        source: mbrman::Error,
    },
    /// A protective MBR (type 0xEE) without a readable GPT behind it.
    #[error("{device}: protective MBR (type 0xEE) but no valid GPT header at LBA 1")]
    ProtectiveMbrWithoutGpt { device: String },
    /// Neither a partition table nor a known filesystem at the start of the device.
    #[error("{device}: no GPT, no MBR and no ext2/3/4 or vfat filesystem found ({size} bytes)")]
    NoTable { device: String, size: u64 },
    /// The caller asked for a partition number the table does not have.
    #[error("{device}: no partition number {number} (present: {present})")]
    NoSuchPartition {
        device: String,
        number: u32,
        present: String,
    },
    /// Nothing qualifies as the root filesystem.
    #[error(
        "{device}: no root filesystem: no ext filesystem labelled `{ROOT_LABEL}` and no Linux filesystem at all (found: {found})"
    )]
    NoRootFs { device: String, found: String },
    /// More than one filesystem carries the root label.
    #[error(
        "{device}: several partitions are labelled `{ROOT_LABEL}`: {numbers:?}; choose one explicitly"
    )]
    AmbiguousRoot { device: String, numbers: Vec<u32> },
    /// A partition's byte range does not fit inside the device.
    #[error(
        "{device}: partition {number} ({start}+{len} bytes) does not fit inside the {size}-byte device"
    )]
    OutOfBounds {
        device: String,
        number: u32,
        start: u64,
        len: u64,
        size: u64,
    },
    /// Reading the device failed.
    #[error("{device}: reading {len} bytes at offset {offset} failed")]
    Read {
        device: String,
        offset: u64,
        len: u64,
        #[source]
        source: kiln_blockdev::Error,
    },
    /// A third-party parser panicked on malformed input.
    #[error("{device}: the {parser} parser failed on malformed input")]
    ParserPanic {
        device: String,
        parser: &'static str,
    },
}

impl Error {
    /// Who is at fault: the device's own classification for a failed read, the disk's contents
    /// for everything else.
    pub fn kind(&self) -> kiln_blockdev::ErrorKind {
        match self {
            Error::Read { source, .. } => source.kind(),
            _ => kiln_blockdev::ErrorKind::Input,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which kind of table describes the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Gpt,
    Mbr,
    /// No partition table: a filesystem occupies the whole device (partition number 0).
    None,
}

/// What a partition holds, found by probing its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Ext2,
    Ext3,
    Ext4,
    Vfat,
    Unknown,
}

impl FsType {
    /// ext2, ext3 or ext4.
    pub fn is_ext(self) -> bool {
        matches!(self, FsType::Ext2 | FsType::Ext3 | FsType::Ext4)
    }

    /// The name blkid uses.
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
            FsType::Vfat => "vfat",
            FsType::Unknown => "unknown",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A GPT GUID as stored on disk (first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Linux filesystem data (`8300` in sgdisk).
    pub const LINUX_FS: Guid = Guid::from_str_const(*b"0FC63DAF-8483-4772-8E79-3D69D8477DE4");

    const fn from_str_const(s: [u8; 36]) -> Guid {
        const fn hex(c: u8) -> u8 {
            match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => panic!("bad hex digit"),
            }
        }
        // Text order of the 16 bytes, then the on-disk permutation of the first three fields.
        let pos: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
        let mut text = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            text[i] = hex(s[pos[i]]) << 4 | hex(s[pos[i] + 1]);
            i += 1;
        }
        let order: [usize; 16] = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
        let mut out = [0u8; 16];
        let mut j = 0;
        while j < 16 {
            out[j] = text[order[j]];
            j += 1;
        }
        Guid(out)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        for x in &b[10..] {
            write!(f, "{x:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The type a partition table gives a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartType {
    Gpt(Guid),
    Mbr(u8),
    /// The whole-disk pseudo partition.
    None,
}

/// One partition (or the whole disk when there is no table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based table index (GPT entry index, MBR 1–4 primary, 5+ logical); 0 for the whole disk.
    pub number: u32,
    /// Byte offset on the device.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    pub part_type: PartType,
    /// GPT partition name (empty for MBR).
    pub name: String,
    /// Filesystem found by probing.
    pub fs: FsType,
    /// Filesystem label (ext volume name or vfat label), if any.
    pub label: Option<String>,
}

/// The partitions of one device, in table order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    /// The device name used in errors.
    pub device: String,
    pub kind: TableKind,
    /// Logical sector size the table was read with (512 or 4096; 512 when there is no table).
    pub sector_size: u64,
    /// Device size in bytes.
    pub size: u64,
    pub partitions: Vec<Partition>,
}

/// Which partition to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selector {
    /// Root-filesystem detection ([`PartitionTable::root`]).
    #[default]
    Root,
    /// An explicit partition number (0 = a whole-disk filesystem).
    Number(u32),
}

impl PartitionTable {
    /// The partition with this number.
    pub fn get(&self, number: u32) -> Result<&Partition> {
        self.partitions
            .iter()
            .find(|p| p.number == number)
            .ok_or_else(|| Error::NoSuchPartition {
                device: self.device.clone(),
                number,
                present: self.present(),
            })
    }

    /// The root filesystem: the ext filesystem labelled `cloudimg-rootfs`, else the largest ext2/3/4
    /// filesystem (lowest number on a tie).
    pub fn root(&self) -> Result<&Partition> {
        let labelled: Vec<&Partition> = self
            .partitions
            .iter()
            .filter(|p| p.fs.is_ext() && p.label.as_deref() == Some(ROOT_LABEL))
            .collect();
        match labelled.as_slice() {
            [one] => return Ok(one),
            [] => {}
            many => {
                return Err(Error::AmbiguousRoot {
                    device: self.device.clone(),
                    numbers: many.iter().map(|p| p.number).collect(),
                });
            }
        }
        let mut best: Option<&Partition> = None;
        for p in self.partitions.iter().filter(|p| p.fs.is_ext()) {
            if best.is_none_or(|b| p.len > b.len) {
                best = Some(p);
            }
        }
        best.ok_or_else(|| Error::NoRootFs {
            device: self.device.clone(),
            found: self.present(),
        })
    }

    /// Resolve a selector to a partition.
    pub fn select(&self, selector: Selector) -> Result<&Partition> {
        match selector {
            Selector::Root => self.root(),
            Selector::Number(n) => self.get(n),
        }
    }

    fn present(&self) -> String {
        if self.partitions.is_empty() {
            return "none".into();
        }
        self.partitions
            .iter()
            .map(|p| {
                format!(
                    "{}={}{}",
                    p.number,
                    p.fs,
                    p.label
                        .as_ref()
                        .map(|l| format!("({l})"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A window over `dev` covering exactly `partition`.
pub fn window<D: BlockDev>(dev: D, device: &str, partition: &Partition) -> Result<SliceDev<D>> {
    let size = dev.len();
    let oob = || Error::OutOfBounds {
        device: device.to_owned(),
        number: partition.number,
        start: partition.start,
        len: partition.len,
        size,
    };
    match partition.start.checked_add(partition.len) {
        Some(end) if end <= size => {
            SliceDev::new(dev, partition.start, partition.len).map_err(|_| oob())
        }
        _ => Err(oob()),
    }
}

/// A `Read + Seek` view of a block device for the table parsers. Reads are short at the end of the
/// device (like a file), never past it.
#[derive(Debug)]
pub struct DevReader<'a, D: ?Sized> {
    dev: &'a D,
    pos: u64,
}

impl<'a, D: BlockDev + ?Sized> DevReader<'a, D> {
    pub fn new(dev: &'a D) -> Self {
        Self { dev, pos: 0 }
    }
}

impl<D: BlockDev + ?Sized> Read for DevReader<'_, D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.dev.len();
        if self.pos >= size {
            return Ok(0);
        }
        let n = (size - self.pos).min(buf.len() as u64) as usize;
        self.dev
            .read_at(&mut buf[..n], self.pos)
            .map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<D: BlockDev + ?Sized> Seek for DevReader<'_, D> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let size = self.dev.len();
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(n) => {
                self.pos = n;
                Ok(n)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before start or overflow",
            )),
        }
    }
}

fn read_exact<D: BlockDev + ?Sized>(
    dev: &D,
    device: &str,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    dev.read_at(&mut buf, offset)
        .map_err(|source| Error::Read {
            device: device.to_owned(),
            offset,
            len: len as u64,
            source,
        })?;
    Ok(buf)
}

/// Read up to `len` bytes at `offset`, fewer (or none) at the end of the device.
fn read_upto<D: BlockDev + ?Sized>(
    dev: &D,
    device: &str,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>> {
    let size = dev.len();
    if offset >= size {
        return Ok(Vec::new());
    }
    let n = (size - offset).min(len as u64) as usize;
    read_exact(dev, device, offset, n)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// What [`probe`] found on a byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub fs: FsType,
    pub label: Option<String>,
}

/// Identify the filesystem at the start of `dev` (a partition window or a whole disk).
pub fn probe<D: BlockDev + ?Sized>(dev: &D, device: &str) -> Result<Probe> {
    let sb = read_upto(dev, device, 1024, 1024)?;
    if let Some(p) = probe_ext(&sb) {
        return Ok(p);
    }
    let boot = read_upto(dev, device, 0, 512)?;
    if let Some(p) = probe_vfat(&boot) {
        return Ok(p);
    }
    Ok(Probe {
        fs: FsType::Unknown,
        label: None,
    })
}

/// Classify an ext superblock (the 1024 bytes at +1024) like blkid does.
pub fn probe_ext(sb: &[u8]) -> Option<Probe> {
    if sb.len() < 0x88 || le16(sb, 0x38) != 0xEF53 {
        return None;
    }
    let compat = le32(sb, 0x5C);
    let incompat = le32(sb, 0x60);
    let ro_compat = le32(sb, 0x64);
    const HAS_JOURNAL: u32 = 0x4;
    const JOURNAL_DEV: u32 = 0x8;
    // Features ext3 does not know: anything but filetype, recover and meta_bg (incompat) or
    // sparse_super, large_file and btree_dir (ro_compat).
    const EXT3_INCOMPAT: u32 = 0x2 | 0x4 | 0x10;
    const EXT3_RO_COMPAT: u32 = 0x1 | 0x2 | 0x4;
    if incompat & JOURNAL_DEV != 0 {
        return Some(Probe {
            fs: FsType::Unknown,
            label: None,
        });
    }
    let fs = if incompat & !EXT3_INCOMPAT != 0 || ro_compat & !EXT3_RO_COMPAT != 0 {
        FsType::Ext4
    } else if compat & HAS_JOURNAL != 0 {
        FsType::Ext3
    } else {
        FsType::Ext2
    };
    Some(Probe {
        fs,
        label: text_label(&sb[0x78..0x88], false),
    })
}

/// Recognise a FAT12/16/32 boot sector.
pub fn probe_vfat(boot: &[u8]) -> Option<Probe> {
    if boot.len() < 512 || boot[510] != 0x55 || boot[511] != 0xAA {
        return None;
    }
    if !matches!(boot[0], 0xEB | 0xE9) {
        return None;
    }
    let bytes_per_sector = le16(boot, 11);
    let sectors_per_cluster = boot[13];
    if !(512..=4096).contains(&bytes_per_sector)
        || !bytes_per_sector.is_power_of_two()
        || sectors_per_cluster == 0
        || !sectors_per_cluster.is_power_of_two()
    {
        return None;
    }
    let label_at = if &boot[0x52..0x57] == b"FAT32" {
        0x47
    } else if &boot[0x36..0x39] == b"FAT" {
        0x2B
    } else {
        return None;
    };
    let label = text_label(&boot[label_at..label_at + 11], true).filter(|l| l != "NO NAME");
    Some(Probe {
        fs: FsType::Vfat,
        label,
    })
}

fn text_label(raw: &[u8], space_padded: bool) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let mut s = String::from_utf8_lossy(&raw[..end]).into_owned();
    if space_padded {
        s.truncate(s.trim_end_matches(' ').len());
    }
    (!s.is_empty()).then_some(s)
}

/// Find the partition table (or a whole-disk filesystem) on `dev` and probe every partition.
/// `device` names the device in errors.
pub fn scan<D: BlockDev + ?Sized>(dev: &D, device: &str) -> Result<PartitionTable> {
    let size = dev.len();
    let mbr_sector = read_upto(dev, device, 0, 512)?;
    let has_55aa = mbr_sector.len() == 512 && mbr_sector[510] == 0x55 && mbr_sector[511] == 0xAA;
    let protective = has_55aa && (0..4).any(|i| mbr_sector[446 + 16 * i + 4] == 0xEE);

    // GPT: at 512-byte sectors, then 4096.
    for sector_size in [512u64, 4096] {
        if gpt_signature(dev, device, sector_size)? {
            let table = scan_gpt(dev, device, sector_size)?;
            return Ok(table);
        }
    }
    if protective {
        return Err(Error::ProtectiveMbrWithoutGpt {
            device: device.to_owned(),
        });
    }

    // A filesystem on the whole disk. Checked before MBR: a FAT boot sector also ends in 55 AA.
    let whole = probe(dev, device)?;
    if whole.fs != FsType::Unknown {
        return Ok(PartitionTable {
            device: device.to_owned(),
            kind: TableKind::None,
            sector_size: 512,
            size,
            partitions: vec![Partition {
                number: 0,
                start: 0,
                len: size,
                part_type: PartType::None,
                name: String::new(),
                fs: whole.fs,
                label: whole.label,
            }],
        });
    }

    if has_55aa {
        return scan_mbr(dev, device);
    }
    Err(Error::NoTable {
        device: device.to_owned(),
        size,
    })
}

fn gpt_signature<D: BlockDev + ?Sized>(dev: &D, device: &str, sector_size: u64) -> Result<bool> {
    let hdr = read_upto(dev, device, sector_size, 8)?;
    Ok(hdr == b"EFI PART")
}

/// Check a GPT header (primary at LBA 1, or the backup it points to) before handing it to gptman,
/// which trusts the entry count and location.
fn check_gpt_header<D: BlockDev + ?Sized>(
    dev: &D,
    device: &str,
    sector_size: u64,
    lba: u64,
) -> Result<Option<String>> {
    let Some(offset) = lba.checked_mul(sector_size) else {
        return Ok(Some("header LBA overflows".into()));
    };
    let h = read_upto(dev, device, offset, 92)?;
    if h.len() < 92 || &h[..8] != b"EFI PART" {
        return Ok(Some("no signature".into()));
    }
    let entries = le32(&h, 80);
    let entry_size = le32(&h, 84);
    let array_lba = le64(&h, 72);
    if entries == 0 || entries > MAX_GPT_ENTRIES {
        return Ok(Some(format!(
            "{entries} partition entries (at most {MAX_GPT_ENTRIES} accepted)"
        )));
    }
    if entry_size != GPT_ENTRY_SIZE {
        return Ok(Some(format!(
            "partition entry size {entry_size} (only {GPT_ENTRY_SIZE} is supported)"
        )));
    }
    let end = array_lba
        .checked_mul(sector_size)
        .and_then(|s| s.checked_add(u64::from(entries) * u64::from(entry_size)));
    match end {
        Some(end) if end <= dev.len() && array_lba > 0 => Ok(None),
        _ => Ok(Some(format!(
            "partition entry array at LBA {array_lba} ({entries} entries) lies outside the device"
        ))),
    }
}

fn scan_gpt<D: BlockDev + ?Sized>(
    dev: &D,
    device: &str,
    sector_size: u64,
) -> Result<PartitionTable> {
    let size = dev.len();
    // gptman reads the primary header, and the last sector of the device when the primary fails:
    // both must be plausible (or absent) before it runs.
    let primary_problem = check_gpt_header(dev, device, sector_size, 1)?;
    let last_lba = size / sector_size - 1;
    let backup_problem = check_gpt_header(dev, device, sector_size, last_lba)?;
    if let Some(reason) = &primary_problem
        && reason != "no signature"
    {
        return Err(Error::CorruptGpt {
            device: device.to_owned(),
            lba: 1,
            sector_size,
            reason: reason.clone(),
        });
    }
    if let Some(reason) = backup_problem
        && reason != "no signature"
    {
        return Err(Error::CorruptGpt {
            device: device.to_owned(),
            lba: last_lba,
            sector_size,
            reason,
        });
    }

    let mut reader = DevReader::new(dev);
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        gptman::GPT::read_from(&mut reader, sector_size)
    }))
    .map_err(|_| Error::ParserPanic {
        device: device.to_owned(),
        parser: "GPT",
    })?;
    let gpt = parsed.map_err(|source| Error::Gpt {
        device: device.to_owned(),
        source,
    })?;

    let mut partitions = Vec::new();
    for (number, entry) in gpt.iter() {
        if entry.is_unused() {
            continue;
        }
        let (start, len) = match (
            entry.starting_lba.checked_mul(sector_size),
            entry
                .ending_lba
                .checked_sub(entry.starting_lba)
                .and_then(|n| n.checked_add(1))
                .and_then(|n| n.checked_mul(sector_size)),
        ) {
            (Some(s), Some(l)) => (s, l),
            _ => {
                return Err(Error::CorruptGpt {
                    device: device.to_owned(),
                    lba: 1,
                    sector_size,
                    reason: format!(
                        "partition {number} has LBAs {}..={}",
                        entry.starting_lba, entry.ending_lba
                    ),
                });
            }
        };
        partitions.push(probe_partition(
            dev,
            device,
            number,
            start,
            len,
            PartType::Gpt(Guid(entry.partition_type_guid)),
            entry.partition_name.as_str().to_owned(),
        )?);
    }
    Ok(PartitionTable {
        device: device.to_owned(),
        kind: TableKind::Gpt,
        sector_size,
        size,
        partitions,
    })
}

fn scan_mbr<D: BlockDev + ?Sized>(dev: &D, device: &str) -> Result<PartitionTable> {
    let size = dev.len();
    // A used entry starting at LBA 0 overlaps the MBR itself; mbrman 0.6 panics on it (its
    // alignment search finds no divisor), so refuse it here. Found by fuzz/partition_scan.
    let sector0 = read_upto(dev, device, 0, 512)?;
    for number in 0..4u32 {
        let e = 446 + 16 * number as usize;
        let (kind, lba) = (
            sector0[e + 4],
            u32::from_le_bytes([
                sector0[e + 8],
                sector0[e + 9],
                sector0[e + 10],
                sector0[e + 11],
            ]),
        );
        if kind != 0 && lba == 0 {
            return Err(Error::CorruptMbr {
                device: device.to_owned(),
                number: number + 1,
                kind,
            });
        }
    }
    let mut reader = DevReader::new(dev);
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        mbrman::MBR::read_from(&mut reader, 512)
    }))
    .map_err(|_| Error::ParserPanic {
        device: device.to_owned(),
        parser: "MBR",
    })?;
    let mbr = parsed.map_err(|source| Error::Mbr {
        device: device.to_owned(),
        source,
    })?;
    let mut partitions = Vec::new();
    for (number, entry) in mbr.iter() {
        if entry.is_unused() || entry.is_extended() {
            continue;
        }
        let start = u64::from(entry.starting_lba) * 512;
        let len = u64::from(entry.sectors) * 512;
        partitions.push(probe_partition(
            dev,
            device,
            number as u32,
            start,
            len,
            PartType::Mbr(entry.sys),
            String::new(),
        )?);
    }
    Ok(PartitionTable {
        device: device.to_owned(),
        kind: TableKind::Mbr,
        sector_size: 512,
        size,
        partitions,
    })
}

fn probe_partition<D: BlockDev + ?Sized>(
    dev: &D,
    device: &str,
    number: u32,
    start: u64,
    len: u64,
    part_type: PartType,
    name: String,
) -> Result<Partition> {
    // Probe only what lies inside both the partition and the device; a partition that overruns the
    // device is listed (and refused by `window`), not probed past the end.
    let size = dev.len();
    let fits = start.checked_add(len).is_some_and(|end| end <= size);
    let found = if fits && len > 0 {
        match SliceDev::new(dev, start, len) {
            Ok(w) => probe(&w, device)?,
            Err(_) => Probe {
                fs: FsType::Unknown,
                label: None,
            },
        }
    } else {
        Probe {
            fs: FsType::Unknown,
            label: None,
        }
    };
    Ok(Partition {
        number,
        start,
        len,
        part_type,
        name,
        fs: found.fs,
        label: found.label,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kiln_blockdev::MemDev;

    #[test]
    fn guid_round_trip() {
        assert_eq!(
            Guid::LINUX_FS.to_string(),
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        );
        assert_eq!(Guid::LINUX_FS.0[0], 0xAF);
    }

    #[test]
    fn empty_device_is_no_table() {
        let d = MemDev::new(8192);
        let e = scan(&d, "blank.img").unwrap_err().to_string();
        assert!(e.contains("blank.img") && e.contains("no GPT"), "{e}");
    }

    #[test]
    fn huge_entry_count_is_refused_before_parsing() {
        let d = MemDev::new(1 << 20);
        let mut h = vec![0u8; 92];
        h[..8].copy_from_slice(b"EFI PART");
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&u32::MAX.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        d.write_at(&h, 512).unwrap();
        let e = scan(&d, "evil").unwrap_err();
        assert!(matches!(e, Error::CorruptGpt { .. }), "{e}");
    }

    #[test]
    fn reader_is_short_at_end() {
        let d = MemDev::from_vec(vec![1, 2, 3]);
        let mut r = DevReader::new(&d);
        r.seek(SeekFrom::Start(1)).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        assert_eq!(r.read(&mut buf).unwrap(), 0);
        assert!(r.seek(SeekFrom::Current(-10)).is_err());
    }
}
