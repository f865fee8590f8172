//! The boot sector and the FAT, checked before the FAT driver (fatfs) sees the device: fatfs
//! trusts them and panics or loops on some corrupt values (arithmetic overflow on the BPB's
//! sector counts, cluster numbers 0/1 or past the end in a chain, chains that loop). Also the
//! raw directory access the dot-entry repair needs.

use kiln_blockdev::BlockDev;

/// FAT12, FAT16 or FAT32, decided by the cluster count as the specification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatType {
    /// Fewer than 4085 clusters; 12-bit FAT entries.
    Fat12,
    /// 4085 to 65524 clusters; 16-bit FAT entries.
    Fat16,
    /// 65525 clusters or more; 28-bit FAT entries, the root directory a cluster chain.
    Fat32,
}

impl FatType {
    /// `FAT12`, `FAT16` or `FAT32`.
    pub fn as_str(self) -> &'static str {
        match self {
            FatType::Fat12 => "FAT12",
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        }
    }
}

impl std::fmt::Display for FatType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where everything is, from a checked boot sector.
#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    pub fat_type: FatType,
    pub cluster_bytes: u64,
    /// Byte offset of the FAT fatfs uses (the first, or the active one when mirroring is off).
    pub fat_offset: u64,
    /// FAT12/16 root directory region (offset, length); `None` on FAT32.
    pub root_region: Option<(u64, u64)>,
    /// FAT32 root directory's first cluster (0 on FAT12/16).
    pub root_cluster: u32,
    pub data_offset: u64,
    /// Data clusters; valid cluster numbers are 2 ..= clusters + 1.
    pub clusters: u32,
    /// Bytes the volume spans (total sectors × sector size).
    pub volume_bytes: u64,
    /// The boot sector's volume label, without padding; `None` when empty or `NO NAME`.
    pub label: Option<String>,
}

fn le16(b: &[u8], at: usize) -> u32 {
    u32::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks the boot sector `bs` of a device of `device_len` bytes the way fatfs will use it, with
/// checked arithmetic; the reason in words when it is not a FAT volume kiln opens.
pub(crate) fn parse(bs: &[u8; 512], device_len: u64) -> Result<Geometry, String> {
    if bs[510] != 0x55 || bs[511] != 0xAA {
        return Err("no boot sector signature (55 AA at bytes 510-511)".into());
    }
    if !matches!(bs[0], 0xEB | 0xE9) {
        return Err(format!("no x86 jump at byte 0 ({:#04x})", bs[0]));
    }
    let bps = le16(bs, 11);
    let spc = u32::from(bs[13]);
    let reserved = le16(bs, 14);
    let fats = u32::from(bs[16]);
    let root_entries = le16(bs, 17);
    let total16 = le16(bs, 19);
    let spf16 = le16(bs, 22);
    let total32 = le32(bs, 32);
    if !matches!(bps, 512 | 1024 | 2048 | 4096) {
        return Err(format!("bytes per sector {bps} (512, 1024, 2048 or 4096)"));
    }
    if !spc.is_power_of_two() || spc > 128 {
        return Err(format!(
            "sectors per cluster {spc} (a power of two up to 128)"
        ));
    }
    if reserved == 0 {
        return Err("no reserved sectors".into());
    }
    if !(1..=2).contains(&fats) {
        return Err(format!("{fats} FATs (1 or 2)"));
    }
    let fat32 = spf16 == 0;
    let (spf, root_cluster, active) = if fat32 {
        let spf32 = le32(bs, 36);
        let ext_flags = le16(bs, 40);
        let version = le16(bs, 42);
        let root_cluster = le32(bs, 44);
        let fs_info = le16(bs, 48);
        let backup = le16(bs, 50);
        if root_entries != 0 || total16 != 0 || spf32 == 0 {
            return Err("inconsistent FAT32 BPB (root entries, 16-bit total or FAT size)".into());
        }
        if version != 0 {
            return Err(format!("FAT32 version {version:#06x} (only 0 is defined)"));
        }
        if fs_info == 0 || fs_info >= reserved || backup >= reserved {
            return Err("FAT32 FSInfo or backup boot sector outside the reserved sectors".into());
        }
        // Mirroring off (bit 7): the FAT in bits 0-3 is the active one.
        let active = if ext_flags & 0x80 != 0 {
            ext_flags & 0x0F
        } else {
            0
        };
        if active >= fats {
            return Err(format!("active FAT {active} of {fats}"));
        }
        (spf32, root_cluster, active)
    } else {
        if root_entries == 0 {
            return Err("FAT12/16 BPB without a root directory".into());
        }
        (spf16, 0, 0)
    };
    let total = match (total16, total32) {
        (0, 0) => return Err("total sectors is 0".into()),
        (t, 0) => t,
        (0, t) => t,
        _ => return Err("both 16- and 32-bit total sectors are set".into()),
    };
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let first_data = fats
        .checked_mul(spf)
        .and_then(|f| f.checked_add(reserved))
        .and_then(|f| f.checked_add(root_sectors))
        .ok_or("FAT size overflows")?;
    if total <= first_data {
        return Err(format!(
            "{total} sectors leave no data region (it starts at sector {first_data})"
        ));
    }
    let clusters = (total - first_data) / spc;
    let fat_type = if clusters < 4085 {
        FatType::Fat12
    } else if clusters < 65525 {
        FatType::Fat16
    } else {
        FatType::Fat32
    };
    if (fat_type == FatType::Fat32) != fat32 {
        return Err(format!(
            "{clusters} clusters make it {fat_type}, but the BPB is laid out for {}",
            if fat32 { "FAT32" } else { "FAT12/16" }
        ));
    }
    if clusters == 0 || clusters > 0x0FFF_FFF5 - 2 {
        return Err(format!("{clusters} clusters"));
    }
    let bits = match fat_type {
        FatType::Fat12 => 12,
        FatType::Fat16 => 16,
        FatType::Fat32 => 32,
    };
    let bps64 = u64::from(bps);
    if u64::from(spf) * bps64 * 8 / bits < u64::from(clusters) + 2 {
        return Err(format!(
            "a FAT of {spf} sectors cannot map {clusters} clusters"
        ));
    }
    let volume_bytes = u64::from(total) * bps64;
    if volume_bytes > device_len {
        return Err(format!(
            "the volume ({volume_bytes} bytes) is larger than the device ({device_len} bytes)"
        ));
    }
    if fat32 && !(2..u64::from(clusters) + 2).contains(&u64::from(root_cluster)) {
        return Err(format!(
            "root directory cluster {root_cluster} does not exist"
        ));
    }
    let label_at = if fat32 { 0x47 } else { 0x2B };
    let ext_sig = bs[if fat32 { 0x42 } else { 0x26 }];
    let label = (ext_sig == 0x29)
        .then(|| {
            let raw = &bs[label_at..label_at + 11];
            let s = String::from_utf8_lossy(raw)
                .trim_end_matches([' ', '\0'])
                .to_owned();
            (!s.is_empty() && s != "NO NAME").then_some(s)
        })
        .flatten();
    let root_first = u64::from(reserved) + u64::from(fats) * u64::from(spf);
    Ok(Geometry {
        fat_type,
        cluster_bytes: u64::from(spc) * bps64,
        fat_offset: (u64::from(reserved) + u64::from(active) * u64::from(spf)) * bps64,
        root_region: (!fat32).then(|| (root_first * bps64, u64::from(root_sectors) * bps64)),
        root_cluster,
        data_offset: u64::from(first_data) * bps64,
        clusters,
        volume_bytes,
        label,
    })
}

/// One FAT entry, as fatfs reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Free,
    Next(u32),
    End,
}

impl Geometry {
    /// The number of the last cluster plus one.
    fn end(&self) -> u32 {
        self.clusters + 2
    }

    fn classify(&self, raw: u32) -> Result<Link, u32> {
        let (bad, mask) = match self.fat_type {
            FatType::Fat12 => (0xFF7, 0xFFF),
            FatType::Fat16 => (0xFFF7, 0xFFFF),
            FatType::Fat32 => (0x0FFF_FFF7, 0x0FFF_FFFF),
        };
        let v = raw & mask;
        if v == 0 {
            Ok(Link::Free)
        } else if v >= bad {
            Ok(Link::End)
        } else if (2..self.end()).contains(&v) {
            Ok(Link::Next(v))
        } else {
            Err(v)
        }
    }

    /// Reads the whole FAT (entries 0 ..= clusters + 1).
    fn read_fat(&self, dev: &dyn BlockDev) -> kiln_blockdev::Result<Vec<u32>> {
        let n = self.end() as usize;
        let bytes = match self.fat_type {
            FatType::Fat12 => (n * 3).div_ceil(2),
            FatType::Fat16 => n * 2,
            FatType::Fat32 => n * 4,
        };
        let mut raw = vec![0u8; bytes];
        dev.read_at(&mut raw, self.fat_offset)?;
        let mut out = Vec::with_capacity(n);
        for c in 0..n {
            out.push(match self.fat_type {
                FatType::Fat12 => {
                    let at = c * 3 / 2;
                    let pair = u32::from(raw[at]) | u32::from(*raw.get(at + 1).unwrap_or(&0)) << 8;
                    if c % 2 == 1 { pair >> 4 } else { pair & 0xFFF }
                }
                FatType::Fat16 => le16(&raw, c * 2),
                FatType::Fat32 => le32(&raw, c * 4),
            });
        }
        Ok(out)
    }

    /// Every chain ends, every link names an existing cluster, no cluster is in two chains and
    /// no chain loops; the reason in words otherwise.
    pub(crate) fn check_fat(
        &self,
        dev: &dyn BlockDev,
    ) -> Result<Result<(), String>, kiln_blockdev::Error> {
        let fat = self.read_fat(dev)?;
        let end = self.end() as usize;
        let mut next = vec![0u32; end];
        let mut refs = vec![0u8; end];
        for c in 2..end {
            match self.classify(fat[c]) {
                Ok(Link::Next(n)) => {
                    next[c] = n;
                    if refs[n as usize] == 1 {
                        return Ok(Err(format!("cluster {n} is in two chains")));
                    }
                    refs[n as usize] = 1;
                }
                Ok(_) => {}
                Err(v) => {
                    return Ok(Err(format!(
                        "cluster {c} links to {v:#x}, which is not a cluster of this volume ({} clusters)",
                        self.clusters
                    )));
                }
            }
        }
        // Walk each chain from its head (a cluster nothing links to); a linked cluster no walk
        // reaches is on a loop.
        let mut seen = vec![false; end];
        for head in 2..end {
            if refs[head] != 0 || next[head] == 0 {
                continue;
            }
            let mut c = head;
            while next[c] != 0 && !seen[c] {
                seen[c] = true;
                c = next[c] as usize;
            }
        }
        if let Some(c) = (2..end).find(|&c| next[c] != 0 && !seen[c]) {
            return Ok(Err(format!("the chain through cluster {c} loops")));
        }
        Ok(Ok(()))
    }

    fn next_cluster(&self, dev: &dyn BlockDev, c: u32) -> kiln_blockdev::Result<Option<u32>> {
        let (off, len) = match self.fat_type {
            FatType::Fat12 => (u64::from(c) * 3 / 2, 2),
            FatType::Fat16 => (u64::from(c) * 2, 2),
            FatType::Fat32 => (u64::from(c) * 4, 4),
        };
        let mut b = [0u8; 4];
        dev.read_at(&mut b[..len], self.fat_offset + off)?;
        let raw = u32::from_le_bytes(b);
        let raw = match self.fat_type {
            FatType::Fat12 if c % 2 == 1 => raw >> 4,
            _ => raw,
        };
        Ok(match self.classify(raw) {
            Ok(Link::Next(n)) => Some(n),
            _ => None,
        })
    }

    fn cluster_offset(&self, c: u32) -> u64 {
        self.data_offset + u64::from(c.saturating_sub(2)) * self.cluster_bytes
    }

    /// Byte ranges (offset, length) of the directory starting at cluster `first` (0: the root).
    pub(crate) fn dir_extents(
        &self,
        dev: &dyn BlockDev,
        first: u32,
    ) -> kiln_blockdev::Result<Vec<(u64, u64)>> {
        let first = match (first, self.root_region) {
            (0, Some(r)) => return Ok(vec![r]),
            (0, None) => self.root_cluster,
            (c, _) => c,
        };
        let mut v = Vec::new();
        let mut c = Some(first);
        while let Some(cl) = c {
            if !(2..self.end()).contains(&cl) || v.len() > self.clusters as usize {
                break;
            }
            v.push((self.cluster_offset(cl), self.cluster_bytes));
            c = self.next_cluster(dev, cl)?;
        }
        Ok(v)
    }

    /// The first cluster of the subdirectory of directory `dir` (0: root) whose 8.3 name is
    /// `name` (11 bytes, space padded), if there is one.
    pub(crate) fn find_subdir(
        &self,
        dev: &dyn BlockDev,
        dir: u32,
        name: &[u8; 11],
    ) -> kiln_blockdev::Result<Option<u32>> {
        for (off, len) in self.dir_extents(dev, dir)? {
            let mut buf = vec![0u8; len as usize];
            dev.read_at(&mut buf, off)?;
            for e in buf.chunks_exact(32) {
                if e[0] == 0 {
                    return Ok(None);
                }
                if e[0] == 0xE5 || e[11] == 0x0F || e[11] & 0x18 != 0x10 || e[..11] != name[..] {
                    continue;
                }
                return Ok(Some(self.entry_cluster(e)));
            }
        }
        Ok(None)
    }

    fn entry_cluster(&self, e: &[u8]) -> u32 {
        let hi = if self.fat_type == FatType::Fat32 {
            le16(e, 20)
        } else {
            0
        };
        hi << 16 | le16(e, 26)
    }

    /// fatfs 0.3 writes a long-name slot before each of the "." and ".." entries of a directory
    /// it creates, which `fsck.fat` rejects ("Expected a valid '.' entry in this slot"), and
    /// points ".." of a FAT32 root's child at the root cluster where the specification wants 0.
    /// Moves "." and ".." into slots 0 and 1 of the new directory at `cluster` (the two freed
    /// slots marked deleted) and fixes "..". Only that exact pattern is touched.
    pub(crate) fn fix_new_dir(
        &self,
        dev: &dyn BlockDev,
        cluster: u32,
    ) -> kiln_blockdev::Result<()> {
        if !(2..self.end()).contains(&cluster) || self.cluster_bytes < 128 {
            return Ok(());
        }
        let off = self.cluster_offset(cluster);
        let mut b = [0u8; 128];
        dev.read_at(&mut b, off)?;
        let lfn = |s: &[u8]| s[11] == 0x0F;
        if !(lfn(&b[0..32])
            && &b[32..43] == b".          "
            && lfn(&b[64..96])
            && &b[96..107] == b"..         ")
        {
            return Ok(());
        }
        let (dot, mut dotdot) = (b[32..64].to_vec(), b[96..128].to_vec());
        if self.fat_type == FatType::Fat32 && self.entry_cluster(&dotdot) == self.root_cluster {
            dotdot[20..22].fill(0);
            dotdot[26..28].fill(0);
        }
        b[0..32].copy_from_slice(&dot);
        b[32..64].copy_from_slice(&dotdot);
        for slot in [64usize, 96] {
            b[slot..slot + 32].fill(0);
            b[slot] = 0xE5;
        }
        dev.write_at(&b, off)
    }
}

/// The 11-byte, space-padded form of an 8.3 name as fatfs prints it (`FOO.TXT`, `BOOT`).
pub(crate) fn raw_short_name(printed: &[u8]) -> Option<[u8; 11]> {
    let (name, ext) = match printed.iter().position(|&b| b == b'.') {
        Some(i) => (&printed[..i], &printed[i + 1..]),
        None => (printed, &[][..]),
    };
    if name.is_empty() || name.len() > 8 || ext.len() > 3 {
        return None;
    }
    let mut out = [b' '; 11];
    out[..name.len()].copy_from_slice(name);
    out[8..8 + ext.len()].copy_from_slice(ext);
    if out[0] == 0xE5 {
        out[0] = 0x05;
    }
    Some(out)
}
