//! Feature policy: which superblocks are opened at all, and which only for reading, decided
//! from the raw superblock before libext2fs is involved.

use std::sync::OnceLock;

use crate::error::Refusal;

// Superblock feature bits (ext2_fs.h).
pub(super) const INCOMPAT_RECOVER: u32 = 0x4;
pub(super) const INCOMPAT_EXTENTS: u32 = 0x40;
pub(super) const RO_COMPAT_ORPHAN_PRESENT: u32 = 0x10000;
pub(super) const STATE_VALID: u16 = 0x1;
pub(super) const STATE_ERROR: u16 = 0x2;

/// `EXT2_LIB_FEATURE_*_SUPP` of libext2fs 1.47.0 (the masks are macros, not exported symbols).
const LIB_COMPAT_SUPP: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x200 | 0x400 | 0x800 | 0x1000;
const LIB_INCOMPAT_SUPP: u32 = 0x2
    | 0x8
    | 0x10
    | 0x4
    | 0x40
    | 0x200
    | 0x400
    | 0x100
    | 0x80
    | 0x8000
    | 0x10000
    | 0x20000
    | 0x2000
    | 0x4000;
const LIB_RO_COMPAT_SUPP: u32 = 0x1
    | 0x8
    | 0x2
    | 0x20
    | 0x40
    | 0x10
    | 0x200
    | 0x100
    | 0x400
    | 0x1000
    | 0x2000
    | 0x4000
    | 0x8000
    | 0x10000;
/// Supported by the library but not maintained by kiln's write path: refused for writing.
/// incompat: mmp, encrypt, casefold, inline_data, journal_dev.
const KILN_NO_WRITE_INCOMPAT: u32 = 0x100 | 0x10000 | 0x20000 | 0x8000 | 0x8;
/// ro_compat: quota, project, readonly, shared_blocks, verity.
const KILN_NO_WRITE_RO_COMPAT: u32 = 0x100 | 0x2000 | 0x1000 | 0x4000 | 0x8000;

const FEATURE_NAMES: &[(&str, u32, &str)] = &[
    ("compat", 0x1, "dir_prealloc"),
    ("compat", 0x2, "imagic_inodes"),
    ("compat", 0x4, "has_journal"),
    ("compat", 0x8, "ext_attr"),
    ("compat", 0x10, "resize_inode"),
    ("compat", 0x20, "dir_index"),
    ("compat", 0x200, "sparse_super2"),
    ("compat", 0x400, "fast_commit"),
    ("compat", 0x800, "stable_inodes"),
    ("compat", 0x1000, "orphan_file"),
    ("incompat", 0x1, "compression"),
    ("incompat", 0x2, "filetype"),
    ("incompat", 0x4, "needs_recovery"),
    ("incompat", 0x8, "journal_dev"),
    ("incompat", 0x10, "meta_bg"),
    ("incompat", 0x40, "extent"),
    ("incompat", 0x80, "64bit"),
    ("incompat", 0x100, "mmp"),
    ("incompat", 0x200, "flex_bg"),
    ("incompat", 0x400, "ea_inode"),
    ("incompat", 0x1000, "dirdata"),
    ("incompat", 0x2000, "metadata_csum_seed"),
    ("incompat", 0x4000, "large_dir"),
    ("incompat", 0x8000, "inline_data"),
    ("incompat", 0x10000, "encrypt"),
    ("incompat", 0x20000, "casefold"),
    ("ro_compat", 0x1, "sparse_super"),
    ("ro_compat", 0x2, "large_file"),
    ("ro_compat", 0x8, "huge_file"),
    ("ro_compat", 0x10, "uninit_bg"),
    ("ro_compat", 0x20, "dir_nlink"),
    ("ro_compat", 0x40, "extra_isize"),
    ("ro_compat", 0x100, "quota"),
    ("ro_compat", 0x200, "bigalloc"),
    ("ro_compat", 0x400, "metadata_csum"),
    ("ro_compat", 0x800, "replica"),
    ("ro_compat", 0x1000, "read-only"),
    ("ro_compat", 0x2000, "project"),
    ("ro_compat", 0x4000, "shared_blocks"),
    ("ro_compat", 0x8000, "verity"),
    ("ro_compat", 0x10000, "orphan_present"),
];

fn feature_names(kind: &str, bits: u32) -> Vec<String> {
    (0..32)
        .map(|i| 1u32 << i)
        .filter(|b| bits & b != 0)
        .map(|b| {
            FEATURE_NAMES
                .iter()
                .find(|(k, v, _)| *k == kind && *v == b)
                .map(|(_, _, n)| (*n).to_owned())
                .unwrap_or_else(|| {
                    format!(
                        "FEATURE_{}{}",
                        kind.chars().next().unwrap_or('?').to_ascii_uppercase(),
                        b.trailing_zeros()
                    )
                })
        })
        .collect()
}
/// The superblock fields checked before libext2fs is involved, parsed from raw bytes.
pub(super) struct RawSuper {
    magic: u16,
    state: u16,
    pub(super) log_block_size: u32,
    compat: u32,
    pub(super) incompat: u32,
    ro_compat: u32,
    last_orphan: u32,
    error_count: u32,
    first_data_block: u32,
}

impl RawSuper {
    pub(super) fn parse(b: &[u8; 1024]) -> Self {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        RawSuper {
            magic: u16_at(0x38),
            state: u16_at(0x3A),
            log_block_size: u32_at(0x18),
            compat: u32_at(0x5C),
            incompat: u32_at(0x60),
            ro_compat: u32_at(0x64),
            last_orphan: u32_at(0xE8),
            error_count: u32_at(0x194),
            first_data_block: u32_at(0x14),
        }
    }

    /// Every reason to refuse, checked in order of usefulness.
    pub(super) fn check(&self, write: bool) -> std::result::Result<(), Refusal> {
        if self.magic != 0xEF53 {
            return Err(Refusal::NotExt { magic: self.magic });
        }
        // A filesystem in use when its machine stopped (journal to replay, orphans, not cleanly
        // unmounted, errors noted) is read as it is — debugfs does the same — and never written:
        // writing it would need the recovery that a kernel mount or e2fsck does first.
        if write && self.incompat & INCOMPAT_RECOVER != 0 {
            return Err(Refusal::NeedsRecovery);
        }
        let unsupported = |kind: &'static str, bits: u32| {
            if bits == 0 {
                Ok(())
            } else {
                Err(Refusal::UnsupportedFeatures {
                    kind,
                    bits,
                    names: feature_names(kind, bits),
                })
            }
        };
        unsupported("incompat", self.incompat & !LIB_INCOMPAT_SUPP)?;
        if write {
            unsupported("ro_compat", self.ro_compat & !LIB_RO_COMPAT_SUPP)?;
            // e2fsck refuses unknown compat features too; so do we before writing.
            unsupported("compat", self.compat & !LIB_COMPAT_SUPP)?;
            unsupported("incompat", self.incompat & KILN_NO_WRITE_INCOMPAT)?;
            unsupported(
                "ro_compat",
                self.ro_compat & KILN_NO_WRITE_RO_COMPAT & !RO_COMPAT_ORPHAN_PRESENT,
            )?;
        }
        if write && (self.ro_compat & RO_COMPAT_ORPHAN_PRESENT != 0 || self.last_orphan != 0) {
            return Err(Refusal::OrphansPresent);
        }
        if write && self.state & STATE_ERROR != 0 {
            return Err(Refusal::ErrorState {
                state: self.state,
                error_count: self.error_count,
            });
        }
        if write && self.state & STATE_VALID == 0 {
            return Err(Refusal::NotClean { state: self.state });
        }
        // libext2fs 1.47 only bounds s_first_data_block by the block count; other values than
        // mke2fs's (1 with 1 KiB blocks, else 0) overrun its bitmap buffers in ext2fs_read_bitmaps
        // (heap overflow found by fuzz/ext4_edit).
        let max_first = u32::from(self.log_block_size == 0);
        if self.first_data_block > max_first {
            return Err(Refusal::BadSuperblock {
                field: "s_first_data_block",
                value: u64::from(self.first_data_block),
                max: u64::from(max_first),
            });
        }
        Ok(())
    }
}

pub(super) fn check_library() -> std::result::Result<(), Refusal> {
    static VERSION: OnceLock<String> = OnceLock::new();
    let v = VERSION.get_or_init(crate::library_version);
    if v.starts_with("1.47.") {
        Ok(())
    } else {
        Err(Refusal::LibraryVersion { found: v.clone() })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn feature_names_are_named() {
        assert_eq!(
            feature_names("incompat", 0x4 | 0x80000),
            vec!["needs_recovery".to_owned(), "FEATURE_I19".to_owned()]
        );
    }

    #[test]
    fn refusals() {
        let mut b = [0u8; 1024];
        b[0x38..0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        b[0x3A..0x3C].copy_from_slice(&1u16.to_le_bytes());
        assert!(RawSuper::parse(&b).check(true).is_ok());
        b[0x60] = 0x4;
        assert_eq!(RawSuper::parse(&b).check(true), Err(Refusal::NeedsRecovery));
        assert_eq!(RawSuper::parse(&b).check(false), Ok(()));
        b[0x60] = 0;
        b[0x3A] = 3;
        assert!(matches!(
            RawSuper::parse(&b).check(true),
            Err(Refusal::ErrorState { .. })
        ));
        assert_eq!(RawSuper::parse(&b).check(false), Ok(()));
        b[0x3A] = 1;
        b[0x66] = 0x08; // ro_compat 0x80000: unknown
        assert!(RawSuper::parse(&b).check(false).is_ok());
        assert!(matches!(
            RawSuper::parse(&b).check(true),
            Err(Refusal::UnsupportedFeatures { .. })
        ));
    }
}
