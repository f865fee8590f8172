//! The on-disk qcow2 header (all fields big-endian) and its extensions, after qemu's
//! `docs/interop/qcow2.rst`.
//!
//! ```text
//!  0 magic "QFI\xfb"      4 version          8 backing_file_offset  16 backing_file_size
//! 20 cluster_bits        24 size (virtual)  32 crypt_method        36 l1_size
//! 40 l1_table_offset     48 refcount_table_offset                  56 refcount_table_clusters
//! 60 nb_snapshots        64 snapshots_offset
//! v3 only: 72 incompatible_features  80 compatible_features  88 autoclear_features
//!          96 refcount_order  100 header_length  104 compression_type (+7 padding)
//! then extensions: (type u32, length u32, data padded to 8) … end (type 0)
//! ```

use std::ops::RangeInclusive;
use std::path::Path;

use crate::error::{Error, Result};

pub const MAGIC: u32 = 0x5146_49fb;
pub const V2_HEADER_LEN: u32 = 72;
pub const V3_HEADER_LEN: u32 = 112;

pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;

pub const EXT_END: u32 = 0;
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
pub const EXT_CRYPTO: u32 = 0x0537_be77;
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Largest virtual size accepted (qemu's own limit is 2^61 for 64-bit offsets with headroom).
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 55;
const MAX_BACKING_NAME: u32 = 1023;
/// qemu's limits (`block/qcow2.h`): internal snapshots, refcount table bytes, and the length of a
/// backing format name. An image beyond them is one qemu-img refuses too.
const MAX_SNAPSHOTS: u32 = 65536;
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
const MAX_BACKING_FORMAT: usize = 1023;
/// The fixed part of one snapshot table entry (qemu's `QCowSnapshotHeader`).
const SNAPSHOT_ENTRY_MIN: u64 = 40;

/// How compressed clusters are encoded (header byte 104).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionType {
    /// Raw deflate (`compression_type` 0; the only choice of v2 images and v3 images without
    /// the compression-type incompatible bit).
    #[default]
    Zlib,
    /// Zstandard (`compression_type` 1; needs incompatible feature bit 3).
    Zstd,
}

impl CompressionType {
    /// `"zlib"` or `"zstd"`, as `qemu-img info` names them.
    pub fn name(self) -> &'static str {
        match self {
            CompressionType::Zlib => "zlib",
            CompressionType::Zstd => "zstd",
        }
    }
}

/// A parsed qcow2 header with its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
///
/// Field names are those of the qcow2 specification (qemu's `docs/interop/qcow2.rst`, "Header");
/// offsets are from the start of the file, all integers big-endian on disk.
pub struct Header {
    /// `version` (offset 4): 2 or 3.
    pub version: u32,
    /// `backing_file_offset` (offset 8): byte offset in the file of the backing file name, 0
    /// when there is none.
    pub backing_file_offset: u64,
    /// `backing_file_size` (offset 16): length of the backing file name in bytes (at most
    /// 1023).
    pub backing_file_size: u32,
    /// `cluster_bits` (offset 20): log2 of the cluster size; kiln accepts 9..=21 (512 B to
    /// 2 MiB).
    pub cluster_bits: u32,
    /// `size` (offset 24): the virtual disk size in bytes.
    pub size: u64,
    /// `crypt_method` (offset 32): 0 none, 1 AES, 2 LUKS; kiln refuses anything but 0.
    pub crypt_method: u32,
    /// `l1_size` (offset 36): number of 8-byte entries in the L1 table.
    pub l1_size: u32,
    /// `l1_table_offset` (offset 40): byte offset of the L1 table, cluster-aligned.
    pub l1_table_offset: u64,
    /// `refcount_table_offset` (offset 48): byte offset of the refcount table, cluster-aligned.
    pub refcount_table_offset: u64,
    /// `refcount_table_clusters` (offset 56): length of the refcount table in clusters.
    pub refcount_table_clusters: u32,
    /// `nb_snapshots` (offset 60): number of internal snapshots (kiln reads such images but
    /// does not write them).
    pub nb_snapshots: u32,
    /// `snapshots_offset` (offset 64): byte offset of the snapshot table.
    pub snapshots_offset: u64,
    /// `incompatible_features` (offset 72, v3; 0 for v2): bit 0 dirty, 1 corrupt, 2 external
    /// data file, 3 compression type, 4 extended L2 entries.
    pub incompatible_features: u64,
    /// `compatible_features` (offset 80, v3; 0 for v2): bit 0 lazy refcounts.
    pub compatible_features: u64,
    /// `autoclear_features` (offset 88, v3; 0 for v2): bit 0 bitmaps extension, bit 1 raw
    /// external data.
    pub autoclear_features: u64,
    /// `refcount_order` (offset 96, v3; 4 for v2): log2 of the refcount width in bits (0..=6:
    /// 1 to 64 bits).
    pub refcount_order: u32,
    /// `header_length` (offset 100, v3; 72 for v2): length of the header structure in bytes,
    /// where the extensions start.
    pub header_length: u32,
    /// `compression_type` (offset 104, v3 with `header_length` > 104): how compressed clusters
    /// are encoded; [`CompressionType::Zlib`] when the field is absent.
    pub compression_type: CompressionType,
    /// The backing file name as stored, if any.
    pub backing_file: Option<String>,
    /// The backing format from the header extension, if any (`qcow2`, `raw`, …).
    pub backing_format: Option<String>,
}

/// Big-endian field access on a byte slice; every read is bounds-checked by the caller's length check.
struct Be<'a>(&'a [u8]);

impl Be<'_> {
    fn u32(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.0[at..at + 4].try_into().unwrap_or([0; 4]))
    }
    fn u64(&self, at: usize) -> u64 {
        u64::from_be_bytes(self.0[at..at + 8].try_into().unwrap_or([0; 8]))
    }
}

fn put32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn put64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn invalid(image: &Path, field: &'static str, value: u64) -> Error {
    Error::InvalidHeader {
        image: image.to_owned(),
        field,
        value,
    }
}

fn unsupported(image: &Path, feature: &str) -> Error {
    Error::Unsupported {
        image: image.to_owned(),
        feature: feature.to_owned(),
    }
}

/// Cluster sizes kiln reads and writes: 512 bytes to 2 MiB, as qemu allows.
pub(crate) const CLUSTER_BITS: RangeInclusive<u32> = 9..=21;

/// Refuse a cluster size outside [`CLUSTER_BITS`] (`image` names the image in the error).
pub(crate) fn check_cluster_bits(cluster_bits: u32, image: &Path) -> Result<()> {
    if CLUSTER_BITS.contains(&cluster_bits) {
        Ok(())
    } else {
        Err(invalid(image, "cluster_bits", cluster_bits as u64))
    }
}

impl Header {
    /// Whether the dirty bit (`incompatible_features` bit 0) is set: the image was open for
    /// writing with lazy refcounts and not closed, so its refcounts may be stale. Its data (L1, L2,
    /// clusters) reads correctly; kiln refuses only to write such an image.
    pub fn is_dirty(&self) -> bool {
        self.incompatible_features & INCOMPAT_DIRTY != 0
    }

    /// Cluster size in bytes (`1 << cluster_bits`).
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Entries in one L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// Width of one refcount entry in bits (`1 << refcount_order`).
    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }

    /// L1 entries needed to map `size` bytes with `cluster_bits` clusters.
    pub fn l1_entries_for(size: u64, cluster_bits: u32) -> u64 {
        let per_l2 = 1u64 << (cluster_bits + cluster_bits - 3);
        size.div_ceil(per_l2)
    }

    /// A new v3 header as kiln writes one: the L1 table (`l1_size` entries) from cluster 1, 16-bit
    /// refcounts, no snapshots, no features but the compression type's, and neither a refcount
    /// table nor a backing file yet (callers set those fields).
    pub(crate) fn new_v3(
        cluster_bits: u32,
        size: u64,
        l1_size: u32,
        compression: CompressionType,
    ) -> Header {
        Header {
            version: 3,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits,
            size,
            crypt_method: 0,
            l1_size,
            l1_table_offset: 1 << cluster_bits,
            refcount_table_offset: 0,
            refcount_table_clusters: 0,
            nb_snapshots: 0,
            snapshots_offset: 0,
            // The in-memory header must carry what `encode` writes: `close` rewrites this field.
            incompatible_features: if compression == CompressionType::Zlib {
                0
            } else {
                INCOMPAT_COMPRESSION
            },
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V3_HEADER_LEN,
            compression_type: compression,
            backing_file: None,
            backing_format: None,
        }
    }

    /// Parse and validate a header from the first cluster (or first bytes) of an image.
    pub fn parse(buf: &[u8], file_len: u64, image: &Path) -> Result<Header> {
        let mut h = Self::parse_fields(buf, image)?;
        h.check_fields(buf, image)?;
        h.check_incompatible(buf, image)?;
        h.check_tables(file_len, image)?;
        // Extensions and the backing name live between the header and the end of the first cluster.
        let limit = (h.cluster_size() as usize).min(buf.len());
        h.parse_extensions(buf, limit, image)?;
        h.parse_backing_name(buf, limit, image)?;
        Ok(h)
    }

    /// The fixed fields (v2, and v3's when the version says so), after the magic, length and
    /// version checks.
    fn parse_fields(buf: &[u8], image: &Path) -> Result<Header> {
        let be = Be(buf);
        if buf.len() >= 4 && be.u32(0) != MAGIC {
            return Err(Error::BadMagic {
                image: image.to_owned(),
                magic: be.u32(0),
            });
        }
        if buf.len() < V2_HEADER_LEN as usize {
            let (len, need) = (buf.len() as u64, V2_HEADER_LEN as u64);
            return Err(Error::HeaderTruncated {
                image: image.to_owned(),
                len,
                need,
            });
        }
        let version = be.u32(4);
        if version != 2 && version != 3 {
            return Err(Error::UnsupportedVersion {
                image: image.to_owned(),
                version,
            });
        }
        let mut h = Header {
            version,
            backing_file_offset: be.u64(8),
            backing_file_size: be.u32(16),
            cluster_bits: be.u32(20),
            size: be.u64(24),
            crypt_method: be.u32(32),
            l1_size: be.u32(36),
            l1_table_offset: be.u64(40),
            refcount_table_offset: be.u64(48),
            refcount_table_clusters: be.u32(56),
            nb_snapshots: be.u32(60),
            snapshots_offset: be.u64(64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
            compression_type: CompressionType::Zlib,
            backing_file: None,
            backing_format: None,
        };
        if version == 3 {
            if buf.len() < 104 {
                return Err(Error::HeaderTruncated {
                    image: image.to_owned(),
                    len: buf.len() as u64,
                    need: 104,
                });
            }
            h.incompatible_features = be.u64(72);
            h.compatible_features = be.u64(80);
            h.autoclear_features = be.u64(88);
            h.refcount_order = be.u32(96);
            h.header_length = be.u32(100);
            if h.header_length < 104 || !h.header_length.is_multiple_of(8) {
                return Err(invalid(image, "header_length", h.header_length as u64));
            }
        }
        Ok(h)
    }

    /// Cluster size, header length, refcount width and encryption.
    fn check_fields(&self, buf: &[u8], image: &Path) -> Result<()> {
        check_cluster_bits(self.cluster_bits, image)?;
        let cs = self.cluster_size();
        if (self.header_length as u64) > cs
            || buf.len() < (self.header_length as usize).min(cs as usize)
        {
            return Err(invalid(image, "header_length", self.header_length as u64));
        }
        if self.refcount_order > 6 {
            return Err(invalid(image, "refcount_order", self.refcount_order as u64));
        }
        if self.crypt_method != 0 {
            return Err(unsupported(image, "encryption (crypt_method != 0)"));
        }
        Ok(())
    }

    /// Refuse the incompatible features kiln does not handle; read the compression type.
    fn check_incompatible(&mut self, buf: &[u8], image: &Path) -> Result<()> {
        let inc = self.incompatible_features;
        // The dirty bit (lazy refcounts, a writer that did not close) only says the refcounts may
        // be stale; reading never looks at them, so it is refused only for writing (in `open`).
        if inc & INCOMPAT_CORRUPT != 0 {
            return Err(unsupported(
                image,
                "an image marked corrupt (repair it with `qemu-img check -r all`)",
            ));
        }
        if inc & INCOMPAT_DATA_FILE != 0 {
            return Err(unsupported(image, "an external data file"));
        }
        if inc & INCOMPAT_EXTL2 != 0 {
            return Err(unsupported(image, "extended L2 entries (subclusters)"));
        }
        let known = INCOMPAT_DIRTY
            | INCOMPAT_CORRUPT
            | INCOMPAT_DATA_FILE
            | INCOMPAT_COMPRESSION
            | INCOMPAT_EXTL2;
        if inc & !known != 0 {
            return Err(unsupported(
                image,
                &format!("unknown incompatible features {:#x}", inc & !known),
            ));
        }
        if inc & INCOMPAT_COMPRESSION != 0 {
            if self.header_length < 105 {
                return Err(invalid(image, "header_length", self.header_length as u64));
            }
            self.compression_type = match buf[104] {
                0 => CompressionType::Zlib,
                1 => CompressionType::Zstd,
                other => return Err(unsupported(image, &format!("compression type {other}"))),
            };
        } else if self.header_length >= 105 && buf[104] != 0 {
            return Err(invalid(image, "compression_type", buf[104] as u64));
        }
        Ok(())
    }

    /// The virtual size, and the L1 and refcount tables: large enough, aligned, inside the file.
    fn check_tables(&self, file_len: u64, image: &Path) -> Result<()> {
        if self.size > MAX_VIRTUAL_SIZE {
            return Err(invalid(image, "size", self.size));
        }
        let need_l1 = Self::l1_entries_for(self.size, self.cluster_bits);
        if (self.l1_size as u64) < need_l1 {
            return Err(invalid(image, "l1_size", self.l1_size as u64));
        }
        if self.l1_size > 0 {
            let l1_bytes = self.l1_size as u64 * 8;
            self.check_table("L1 table", self.l1_table_offset, l1_bytes, file_len, image)?;
        }
        let rt_bytes = self.refcount_table_clusters as u64 * self.cluster_size();
        if rt_bytes > MAX_REFTABLE_BYTES {
            return Err(invalid(
                image,
                "refcount_table_clusters",
                self.refcount_table_clusters as u64,
            ));
        }
        self.check_table(
            "refcount table",
            self.refcount_table_offset,
            rt_bytes,
            file_len,
            image,
        )?;
        if self.nb_snapshots > MAX_SNAPSHOTS {
            return Err(invalid(image, "nb_snapshots", self.nb_snapshots as u64));
        }
        // Like qemu: aligned and not wrapping around; kiln never reads the table, and qemu reads
        // an entry past the end of the file as zeros, so its place in the file is not checked.
        if self.nb_snapshots > 0 {
            let cs = self.cluster_size();
            if !self.snapshots_offset.is_multiple_of(cs) {
                return Err(Error::Misaligned {
                    image: image.to_owned(),
                    what: "snapshot table",
                    offset: self.snapshots_offset,
                    align: cs,
                });
            }
            let min_bytes = self.nb_snapshots as u64 * SNAPSHOT_ENTRY_MIN;
            if self
                .snapshots_offset
                .checked_add(min_bytes)
                .is_none_or(|end| end > i64::MAX as u64)
            {
                return Err(invalid(image, "snapshots_offset", self.snapshots_offset));
            }
        }
        Ok(())
    }

    /// A table of `len` bytes at `offset`: cluster-aligned and inside the file.
    fn check_table(
        &self,
        what: &'static str,
        offset: u64,
        len: u64,
        file_len: u64,
        image: &Path,
    ) -> Result<()> {
        let cs = self.cluster_size();
        if !offset.is_multiple_of(cs) {
            return Err(Error::Misaligned {
                image: image.to_owned(),
                what,
                offset,
                align: cs,
            });
        }
        if offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(Error::PastEndOfFile {
                image: image.to_owned(),
                what,
                offset,
                len,
                file_len,
            });
        }
        Ok(())
    }

    /// The header extensions up to `limit`: the backing format is kept, encryption and external
    /// data files are refused, the rest skipped.
    fn parse_extensions(&mut self, buf: &[u8], limit: usize, image: &Path) -> Result<()> {
        let be = Be(buf);
        let ext_start = if self.version == 2 {
            V2_HEADER_LEN
        } else {
            self.header_length
        } as usize;
        let mut at = ext_start;
        while at + 8 <= limit {
            let ty = be.u32(at);
            let len = be.u32(at + 4) as usize;
            at += 8;
            if ty == EXT_END {
                break;
            }
            let Some(end) = at.checked_add(len).filter(|e| *e <= limit) else {
                return Err(invalid(image, "header extension length", len as u64));
            };
            let data = &buf[at..end];
            match ty {
                EXT_BACKING_FORMAT if data.len() > MAX_BACKING_FORMAT => {
                    return Err(invalid(
                        image,
                        "backing format extension length",
                        len as u64,
                    ));
                }
                EXT_BACKING_FORMAT => {
                    self.backing_format = Some(String::from_utf8_lossy(data).into_owned())
                }
                EXT_CRYPTO => {
                    return Err(unsupported(image, "encryption (crypto header extension)"));
                }
                EXT_DATA_FILE => return Err(unsupported(image, "an external data file")),
                _ => {}
            }
            at += len.div_ceil(8) * 8;
        }
        Ok(())
    }

    /// The backing file name, when the header points at one (inside the first `limit` bytes).
    fn parse_backing_name(&mut self, buf: &[u8], limit: usize, image: &Path) -> Result<()> {
        if self.backing_file_offset == 0 {
            return Ok(());
        }
        let len = self.backing_file_size;
        if len == 0 || len > MAX_BACKING_NAME {
            return Err(invalid(image, "backing_file_size", len as u64));
        }
        // Checked: an offset near 2^64 must not wrap around into the buffer.
        let span = usize::try_from(self.backing_file_offset)
            .ok()
            .and_then(|off| Some(off..off.checked_add(len as usize)?))
            .filter(|r| r.end <= limit)
            .ok_or_else(|| invalid(image, "backing_file_offset", self.backing_file_offset))?;
        let name = std::str::from_utf8(&buf[span]).map_err(|_| {
            invalid(
                image,
                "backing_file_offset (name is not UTF-8)",
                self.backing_file_offset,
            )
        })?;
        self.backing_file = Some(name.to_owned());
        Ok(())
    }

    /// Serialize the header, its extensions and the backing file name into one cluster-sized buffer.
    /// Only v3 headers are written (length 112, with the compression type byte).
    pub fn encode(&self) -> Vec<u8> {
        let cs = self.cluster_size() as usize;
        let mut buf = vec![0u8; cs];
        put32(&mut buf, 0, MAGIC);
        put32(&mut buf, 4, 3);
        put32(&mut buf, 20, self.cluster_bits);
        put64(&mut buf, 24, self.size);
        put32(&mut buf, 32, 0);
        put32(&mut buf, 36, self.l1_size);
        put64(&mut buf, 40, self.l1_table_offset);
        put64(&mut buf, 48, self.refcount_table_offset);
        put32(&mut buf, 56, self.refcount_table_clusters);
        put32(&mut buf, 60, 0);
        put64(&mut buf, 64, 0);
        let mut incompat = self.incompatible_features & (INCOMPAT_DIRTY | INCOMPAT_CORRUPT);
        if self.compression_type != CompressionType::Zlib {
            incompat |= INCOMPAT_COMPRESSION;
        }
        put64(&mut buf, 72, incompat);
        put64(&mut buf, 80, 0);
        put64(&mut buf, 88, 0);
        put32(&mut buf, 96, self.refcount_order);
        put32(&mut buf, 100, V3_HEADER_LEN);
        buf[104] = match self.compression_type {
            CompressionType::Zlib => 0,
            CompressionType::Zstd => 1,
        };
        let mut at = V3_HEADER_LEN as usize;
        if let Some(fmt) = &self.backing_format {
            put32(&mut buf, at, EXT_BACKING_FORMAT);
            put32(&mut buf, at + 4, fmt.len() as u32);
            buf[at + 8..at + 8 + fmt.len()].copy_from_slice(fmt.as_bytes());
            at += 8 + fmt.len().div_ceil(8) * 8;
        }
        at += 8; // end-of-extensions marker (type 0, length 0)
        if let Some(name) = &self.backing_file {
            put64(&mut buf, 8, at as u64);
            put32(&mut buf, 16, name.len() as u32);
            buf[at..at + name.len()].copy_from_slice(name.as_bytes());
        }
        buf
    }

    /// Bytes needed in cluster 0 for the header, extensions and backing name.
    pub fn encoded_len(&self) -> usize {
        let fmt = self
            .backing_format
            .as_ref()
            .map_or(0, |f| 8 + f.len().div_ceil(8) * 8);
        V3_HEADER_LEN as usize + fmt + 8 + self.backing_file.as_ref().map_or(0, String::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            refcount_table_offset: 131072,
            refcount_table_clusters: 1,
            backing_file: Some("base.qcow2".into()),
            backing_format: Some("qcow2".into()),
            ..Header::new_v3(16, 1 << 30, 2, CompressionType::Zstd)
        }
    }

    #[test]
    fn encode_parse_round_trip() {
        let h = sample();
        let buf = h.encode();
        let mut back = Header::parse(&buf, 1 << 20, Path::new("t")).unwrap();
        back.backing_file_offset = 0;
        back.backing_file_size = 0;
        assert_eq!(back, h);
    }

    #[test]
    fn dirty_is_read_and_unknown_features_are_refused() {
        let mut buf = sample().encode();
        buf[79] |= 1;
        let h = Header::parse(&buf, 1 << 20, Path::new("t")).expect("a dirty header parses");
        assert!(h.is_dirty());
        let mut buf = sample().encode();
        buf[79] |= 1 << 4;
        let e = Header::parse(&buf, 1 << 20, Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("extended L2"), "{e}");
        let mut buf = sample().encode();
        buf[72] |= 0x80;
        assert!(
            Header::parse(&buf, 1 << 20, Path::new("t"))
                .unwrap_err()
                .to_string()
                .contains("unknown incompatible")
        );
    }

    #[test]
    fn truncated_and_l1_past_eof() {
        let buf = sample().encode();
        assert!(matches!(
            Header::parse(&buf[..50], 1 << 20, Path::new("t")),
            Err(Error::HeaderTruncated { .. })
        ));
        assert!(matches!(
            Header::parse(&buf, 65536 + 8, Path::new("t")),
            Err(Error::PastEndOfFile {
                what: "L1 table",
                ..
            })
        ));
    }
}
