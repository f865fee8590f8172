//! The safe filesystem API over libext2fs.

use std::collections::VecDeque;
use std::ffi::{CString, c_char, c_int, c_uint, c_void};
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::{Arc, OnceLock};

use kiln_blockdev::BlockDev;

use crate::error::{Error, Op, Refusal, Result};
use crate::ffi::{self, errcode_t, ext2_ino_t, ext2_inode_large};
use crate::io::{self, Shared};
use crate::path::components;

/// Symbolic links followed while resolving one path (Linux's limit).
const MAX_SYMLINKS: u32 = 40;
const IO_CHUNK: usize = 1 << 20;

const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const S_IFDIR: u16 = 0o040000;
const S_IFLNK: u16 = 0o120000;

// Superblock feature bits (ext2_fs.h).
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_EXTENTS: u32 = 0x40;
const RO_COMPAT_ORPHAN_PRESENT: u32 = 0x10000;
const STATE_VALID: u16 = 0x1;
const STATE_ERROR: u16 = 0x2;

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

/// How to open a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// Open for writing.
    pub write: bool,
    /// Seconds since the epoch (SOURCE_DATE_EPOCH): every time kiln writes.
    pub time: i64,
}

impl OpenOptions {
    pub fn read_only() -> Self {
        Self {
            write: false,
            time: 0,
        }
    }
    pub fn read_write(time: i64) -> Self {
        Self { write: true, time }
    }
}

/// The type of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
    Unknown,
}

impl FileKind {
    fn from_mode(mode: u16) -> Self {
        match mode & S_IFMT {
            0o100000 => FileKind::File,
            0o040000 => FileKind::Dir,
            0o120000 => FileKind::Symlink,
            0o020000 => FileKind::CharDevice,
            0o060000 => FileKind::BlockDevice,
            0o010000 => FileKind::Fifo,
            0o140000 => FileKind::Socket,
            _ => FileKind::Unknown,
        }
    }

    fn from_dirent_type(t: u8) -> Option<Self> {
        Some(match t {
            1 => FileKind::File,
            2 => FileKind::Dir,
            3 => FileKind::CharDevice,
            4 => FileKind::BlockDevice,
            5 => FileKind::Fifo,
            6 => FileKind::Socket,
            7 => FileKind::Symlink,
            _ => return None,
        })
    }

    /// A short name (`file`, `dir`, `symlink`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::CharDevice => "char",
            FileKind::BlockDevice => "block",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::Unknown => "unknown",
        }
    }
}

/// What `stat` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub ino: u32,
    pub kind: FileKind,
    /// Permission bits (07777).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u16,
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
    /// Creation time, when the inode has room for it.
    pub crtime: Option<i64>,
    /// Inode flags (`EXT4_EXTENTS_FL`, …).
    pub flags: u32,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The raw name (ext4 names are bytes).
    pub name: Vec<u8>,
    pub ino: u32,
    pub kind: FileKind,
}

impl DirEntry {
    /// The name, with invalid UTF-8 replaced.
    pub fn name_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }
}

/// Attributes of a file written by [`Filesystem::write_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewFile {
    /// Permission bits (07777).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// Modification time; `None` = the open time.
    pub mtime: Option<i64>,
}

impl Default for NewFile {
    fn default() -> Self {
        Self {
            perm: 0o644,
            uid: 0,
            gid: 0,
            mtime: None,
        }
    }
}

/// Attributes of directories created by [`Filesystem::create_dir_all`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewDir {
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
}

impl Default for NewDir {
    fn default() -> Self {
        Self {
            perm: 0o755,
            uid: 0,
            gid: 0,
        }
    }
}

/// Times for [`Filesystem::set_times`]; `None` leaves a time unchanged. ctime is always set to the
/// open time unless given explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Times {
    pub atime: Option<i64>,
    pub mtime: Option<i64>,
    pub ctime: Option<i64>,
}

/// Facts from the superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    pub label: String,
    pub uuid: [u8; 16],
    pub block_size: u32,
    pub blocks_count: u64,
    pub free_blocks: u64,
    pub inodes_count: u32,
    pub free_inodes: u32,
    pub inode_size: u16,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub wtime: u32,
    pub kbytes_written: u64,
    pub state: u16,
}

/// The superblock fields checked before libext2fs is involved, parsed from raw bytes.
struct RawSuper {
    magic: u16,
    state: u16,
    log_block_size: u32,
    compat: u32,
    incompat: u32,
    ro_compat: u32,
    last_orphan: u32,
    error_count: u32,
    first_data_block: u32,
}

impl RawSuper {
    fn parse(b: &[u8; 1024]) -> Self {
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
    fn check(&self, write: bool) -> std::result::Result<(), Refusal> {
        if self.magic != 0xEF53 {
            return Err(Refusal::NotExt { magic: self.magic });
        }
        if self.incompat & INCOMPAT_RECOVER != 0 {
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
        if self.ro_compat & RO_COMPAT_ORPHAN_PRESENT != 0 || self.last_orphan != 0 {
            return Err(Refusal::OrphansPresent);
        }
        if self.state & STATE_ERROR != 0 {
            return Err(Refusal::ErrorState {
                state: self.state,
                error_count: self.error_count,
            });
        }
        if self.state & STATE_VALID == 0 {
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

fn check_library() -> std::result::Result<(), Refusal> {
    static VERSION: OnceLock<String> = OnceLock::new();
    let v = VERSION.get_or_init(crate::library_version);
    if v.starts_with("1.47.") {
        Ok(())
    } else {
        Err(Refusal::LibraryVersion { found: v.clone() })
    }
}

/// An open ext2/3/4 filesystem on a borrowed block device.
///
/// Not `Sync`: libext2fs handles are single-threaded. See the crate docs for what `close` and
/// `Drop` do.
#[derive(Debug)]
pub struct Filesystem<'d> {
    /// `None` once closed (close consumes `self`, so only Drop observes it).
    fs: Option<NonNull<ffi::struct_ext2_filsys>>,
    shared: Arc<Shared>,
    device: String,
    time: i64,
    writable: bool,
    _dev: PhantomData<&'d dyn BlockDev>,
}

// SAFETY: the libext2fs handle has no thread affinity (no thread-locals, no locks); the struct is
// `!Sync`, so it is used by one thread at a time, and the device it points to is `Send + Sync`.
unsafe impl Send for Filesystem<'_> {}

/// Time encoding: low 32 bits in the base field, two epoch bits in `*_extra` (nanoseconds 0).
/// Representable range: [-2^31, 2^34 - 2^31); times outside are clamped.
fn encode_time(t: i64) -> (u32, u32) {
    let t = t.clamp(-(1 << 31), (1 << 34) - (1 << 31) - 1);
    let lo = t as i32;
    let epoch = ((t - i64::from(lo)) >> 32) as u32 & 3;
    (lo as u32, epoch)
}

fn decode_time(lo: u32, extra: Option<u32>) -> i64 {
    let base = i64::from(lo as i32);
    match extra {
        Some(e) => base + (i64::from(e & 3) << 32),
        None => base,
    }
}

impl<'d> Filesystem<'d> {
    /// Open the filesystem on `dev` (a partition window or a whole-disk filesystem). `device`
    /// names it in errors. Refuses (without writing) what the crate docs list.
    pub fn open(dev: &'d dyn BlockDev, device: &str, opts: OpenOptions) -> Result<Self> {
        let mode = if opts.write {
            "read-write"
        } else {
            "read-only"
        };
        let refused = |reason| Error::Refused {
            device: device.to_owned(),
            mode,
            reason,
        };
        check_library().map_err(refused)?;
        crate::init_error_table();

        let mut sb = [0u8; 1024];
        dev.read_at(&mut sb, 1024)
            .map_err(|source| Error::Superblock {
                device: device.to_owned(),
                source,
            })?;
        let raw = RawSuper::parse(&sb);
        raw.check(opts.write).map_err(refused)?;
        if opts.write && dev.is_read_only() {
            return Err(Error::ReadOnly {
                op: Op::Open,
                path: device.to_owned(),
            });
        }

        let shared = Arc::new(Shared::default());
        let reg = io::register(dev, opts.write, shared.clone());
        let mut flags = ffi::EXT2_FLAG_64BITS;
        if opts.write {
            flags |= ffi::EXT2_FLAG_RW;
        } else {
            flags |= ffi::EXT2_FLAG_SKIP_MMP;
        }
        let mut handle: ffi::ext2_filsys = ptr::null_mut();
        // SAFETY: the name is a valid C string registered just above; the manager is a static with
        // program lifetime; `handle` is a valid out-pointer. On error libext2fs frees what it made.
        let code = unsafe {
            ffi::ext2fs_open2(
                reg.name.as_ptr(),
                ptr::null(),
                flags,
                0,
                0,
                io::manager(),
                &mut handle,
            )
        };
        drop(reg);
        if code != 0 {
            return Err(lib_error(Op::Open, device, "/", code, &shared));
        }
        let Some(nn) = NonNull::new(handle) else {
            return Err(Error::Layout {
                device: device.to_owned(),
                what: "ext2fs_open2 returned no handle".into(),
            });
        };
        let this = Filesystem {
            fs: Some(nn),
            shared,
            device: device.to_owned(),
            time: opts.time,
            writable: opts.write,
            _dev: PhantomData,
        };
        this.check_layout(&raw)?;
        // SAFETY: the handle is live and owned by `this`; `now` and `umask` are plain fields
        // (layout checked above).
        unsafe {
            (*nn.as_ptr()).now = opts.time;
            (*nn.as_ptr()).umask = 0;
        }
        if opts.write {
            // SAFETY: live handle; loads the allocation bitmaps the write path needs.
            let code = unsafe { ffi::ext2fs_read_bitmaps(nn.as_ptr()) };
            this.check(Op::Open, "/", code)?;
        }
        Ok(this)
    }

    /// Compare what we read through our struct declarations with our own parse of the superblock.
    fn check_layout(&self, raw: &RawSuper) -> Result<()> {
        let fs = self.raw();
        // SAFETY: `fs` is a live handle returned by ext2fs_open2; we only read fields.
        let (magic, blocksize, sb_ptr, io_ptr) =
            unsafe { ((*fs).magic, (*fs).blocksize, (*fs).super_, (*fs).io) };
        let bad = |what: String| {
            Err(Error::Layout {
                device: self.device.clone(),
                what,
            })
        };
        if magic != ffi::EXT2_ET_MAGIC_EXT2FS_FILSYS {
            return bad(format!("filesystem magic {magic:#x}"));
        }
        if u64::from(blocksize) != 1024u64 << raw.log_block_size.min(16) {
            return bad(format!(
                "block size {blocksize} vs log {}",
                raw.log_block_size
            ));
        }
        if sb_ptr.is_null() || io_ptr.is_null() {
            return bad("null superblock or channel".into());
        }
        // SAFETY: non-null pointers owned by the live handle.
        let (s_magic, incompat, mgr) = unsafe {
            (
                (*sb_ptr).s_magic,
                (*sb_ptr).s_feature_incompat,
                (*io_ptr).manager,
            )
        };
        if s_magic != 0xEF53 || incompat != raw.incompat || mgr != io::manager() {
            return bad(format!(
                "superblock magic {s_magic:#x}, incompat {incompat:#x}"
            ));
        }
        Ok(())
    }

    fn raw(&self) -> ffi::ext2_filsys {
        // `fs` is only None inside close/Drop, after which no method can run.
        self.fs.map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    fn check(&self, op: Op, path: &str, code: errcode_t) -> Result<()> {
        if code == 0 {
            Ok(())
        } else {
            Err(lib_error(op, &self.device, path, code, &self.shared))
        }
    }

    fn sb(&self) -> &ffi::ext2_super_block {
        // SAFETY: the superblock is owned by the live handle and outlives this borrow of self;
        // libext2fs does not modify it during a shared borrow (no call runs concurrently: !Sync).
        unsafe { &*(*self.raw()).super_ }
    }

    /// Superblock facts.
    pub fn info(&self) -> FsInfo {
        let s = self.sb();
        let label_end = s.s_volume_name.iter().position(|&b| b == 0).unwrap_or(16);
        FsInfo {
            label: String::from_utf8_lossy(&s.s_volume_name[..label_end]).into_owned(),
            uuid: s.s_uuid,
            block_size: 1024 << s.s_log_block_size.min(16),
            blocks_count: u64::from(s.s_blocks_count) | (u64::from(s.s_blocks_count_hi) << 32),
            free_blocks: u64::from(s.s_free_blocks_count) | (u64::from(s.s_free_blocks_hi) << 32),
            inodes_count: s.s_inodes_count,
            free_inodes: s.s_free_inodes_count,
            inode_size: s.s_inode_size,
            feature_compat: s.s_feature_compat,
            feature_incompat: s.s_feature_incompat,
            feature_ro_compat: s.s_feature_ro_compat,
            wtime: s.s_wtime,
            kbytes_written: s.s_kbytes_written,
            state: s.s_state,
        }
    }

    fn has_extents(&self) -> bool {
        self.sb().s_feature_incompat & INCOMPAT_EXTENTS != 0
    }

    fn inode_size(&self) -> usize {
        usize::from(self.sb().s_inode_size.max(128))
    }

    /// Bytes written to the device through this handle so far.
    pub fn bytes_written(&self) -> u64 {
        self.shared
            .bytes_written
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Make a filesystem that `mkfs.ext4` just made independent of the e2fsprogs release that made
    /// it: every block group's block bitmap is initialised (releases differ in which groups they
    /// leave `BLOCK_UNINIT`) and the lifetime-writes counter (`s_kbytes_written`, which counts
    /// mke2fs's own I/O) is set to zero — in the primary superblock and group descriptors and in
    /// every backup copy, all rewritten at [`Filesystem::close`]. Only for a filesystem opened for
    /// writing.
    pub fn normalize_fresh(&mut self) -> Result<()> {
        let fs = self.raw();
        // SAFETY: live handle; `flags` and `group_desc_count` are plain fields (layout checked at
        // open).
        let (flags, groups) = unsafe { ((*fs).flags, (*fs).group_desc_count) };
        if flags & ffi::EXT2_FLAG_RW == 0 {
            return Err(lib_error(
                Op::Write,
                &self.device,
                "/",
                ffi::EROFS,
                &self.shared,
            ));
        }
        for g in 0..groups {
            // SAFETY: live read-write handle whose bitmaps were loaded at open (so clearing the
            // flag cannot make libext2fs read an uninitialised bitmap block); `g` is a valid group.
            unsafe {
                ffi::ext2fs_bg_flags_clear(fs, g, ffi::EXT2_BG_BLOCK_UNINIT);
                ffi::ext2fs_group_desc_csum_set(fs, g);
            }
        }
        // SAFETY: live handle; the superblock pointer is valid while it is; marking the superblock
        // and the block bitmap dirty is what libext2fs's inline ext2fs_mark_*_dirty do, and
        // clearing the *_ONLY flags makes the flush write the backup copies too (as tune2fs does).
        unsafe {
            (*(*fs).super_).s_kbytes_written = 0;
            (*fs).flags |= ffi::EXT2_FLAG_DIRTY | ffi::EXT2_FLAG_CHANGED | ffi::EXT2_FLAG_BB_DIRTY;
            (*fs).flags &= !(ffi::EXT2_FLAG_MASTER_SB_ONLY | ffi::EXT2_FLAG_SUPER_ONLY);
        }
        Ok(())
    }

    /// Flush everything and release the handle. Reports every error; the handle is released in
    /// all cases.
    #[must_use = "close reports whether the filesystem was written completely"]
    pub fn close(mut self) -> Result<()> {
        let Some(fs) = self.fs.take() else {
            return Ok(());
        };
        let fs = fs.as_ptr();
        // SAFETY: we own the live handle; ext2fs_close2 flushes (if dirty) and frees it on
        // success. On failure it returns before freeing, so we free it ourselves; either way it
        // is never touched again (`self.fs` is None).
        let code = unsafe { ffi::ext2fs_close2(fs, 0) };
        if code != 0 {
            // SAFETY: see above: close2 failed, the handle is still allocated and ours.
            unsafe { ffi::ext2fs_free(fs) };
            return Err(lib_error(Op::Close, &self.device, "/", code, &self.shared));
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Inodes and lookup
    // ---------------------------------------------------------------------------------------

    fn read_inode(&self, op: Op, path: &str, ino: ext2_ino_t) -> Result<ext2_inode_large> {
        let mut inode = ext2_inode_large::default();
        // SAFETY: live handle; the buffer is a 160-byte ext2_inode_large and we pass its size.
        let code = unsafe {
            ffi::ext2fs_read_inode_full(
                self.raw(),
                ino,
                &mut inode,
                size_of::<ext2_inode_large>() as c_int,
            )
        };
        self.check(op, path, code)?;
        Ok(inode)
    }

    fn write_inode(
        &self,
        op: Op,
        path: &str,
        ino: ext2_ino_t,
        inode: &mut ext2_inode_large,
    ) -> Result<()> {
        // SAFETY: live handle; buffer and size as in read_inode. libext2fs merges these 160
        // bytes into the on-disk inode and recomputes its checksum.
        let code = unsafe {
            ffi::ext2fs_write_inode_full(
                self.raw(),
                ino,
                inode,
                size_of::<ext2_inode_large>() as c_int,
            )
        };
        self.check(op, path, code)
    }

    /// Whether the inode has room for a field ending at byte `end` of the large inode.
    fn has_extra(&self, inode: &ext2_inode_large, end: usize) -> bool {
        self.inode_size() > 128 && 128 + usize::from(inode.i_extra_isize) >= end
    }

    fn metadata(&self, ino: ext2_ino_t, i: &ext2_inode_large) -> Metadata {
        let x = |end, v| {
            if self.has_extra(i, end) {
                Some(v)
            } else {
                None
            }
        };
        Metadata {
            ino,
            kind: FileKind::from_mode(i.i_mode),
            perm: i.i_mode & 0o7777,
            uid: u32::from(i.i_uid) | (u32::from(i.l_i_uid_high) << 16),
            gid: u32::from(i.i_gid) | (u32::from(i.l_i_gid_high) << 16),
            size: u64::from(i.i_size) | (u64::from(i.i_size_high) << 32),
            nlink: i.i_links_count,
            atime: decode_time(i.i_atime, x(144, i.i_atime_extra)),
            mtime: decode_time(i.i_mtime, x(140, i.i_mtime_extra)),
            ctime: decode_time(i.i_ctime, x(136, i.i_ctime_extra)),
            crtime: x(152, i.i_crtime_extra).map(|e| decode_time(i.i_crtime, Some(e))),
            flags: i.i_flags,
        }
    }

    fn set_atime(&self, i: &mut ext2_inode_large, t: i64) {
        let (lo, ex) = encode_time(t);
        i.i_atime = lo;
        if self.has_extra(i, 144) {
            i.i_atime_extra = ex;
        }
    }
    fn set_mtime(&self, i: &mut ext2_inode_large, t: i64) {
        let (lo, ex) = encode_time(t);
        i.i_mtime = lo;
        if self.has_extra(i, 140) {
            i.i_mtime_extra = ex;
        }
    }
    fn set_ctime(&self, i: &mut ext2_inode_large, t: i64) {
        let (lo, ex) = encode_time(t);
        i.i_ctime = lo;
        if self.has_extra(i, 136) {
            i.i_ctime_extra = ex;
        }
    }
    fn set_crtime(&self, i: &mut ext2_inode_large, t: i64) {
        if self.has_extra(i, 152) {
            let (lo, ex) = encode_time(t);
            i.i_crtime = lo;
            i.i_crtime_extra = ex;
        }
    }

    fn set_owner_fields(i: &mut ext2_inode_large, uid: u32, gid: u32) {
        i.i_uid = uid as u16;
        i.l_i_uid_high = (uid >> 16) as u16;
        i.i_gid = gid as u16;
        i.l_i_gid_high = (gid >> 16) as u16;
    }

    /// Look `name` up in directory `dir`; `None` when absent.
    fn lookup(
        &self,
        op: Op,
        path: &str,
        dir: ext2_ino_t,
        name: &[u8],
    ) -> Result<Option<ext2_ino_t>> {
        let mut ino: ext2_ino_t = 0;
        // SAFETY: live handle; `name` is passed with its length (no NUL needed); `buf` may be
        // NULL (the library allocates its own block buffer); `ino` is a valid out-pointer.
        let code = unsafe {
            ffi::ext2fs_lookup(
                self.raw(),
                dir,
                name.as_ptr().cast(),
                name.len() as c_int,
                ptr::null_mut(),
                &mut ino,
            )
        };
        if code == ffi::EXT2_ET_FILE_NOT_FOUND {
            return Ok(None);
        }
        self.check(op, path, code)?;
        Ok(Some(ino))
    }

    /// Resolve the components of `path` to an inode, following guest symlinks inside the guest
    /// (absolute targets restart at the guest root, `..` in targets never climbs above it).
    fn resolve_components(
        &self,
        op: Op,
        path: &str,
        comps: &[&[u8]],
        follow_last: bool,
    ) -> Result<ext2_ino_t> {
        let mut dirs: Vec<ext2_ino_t> = vec![ffi::EXT2_ROOT_INO];
        let mut queue: VecDeque<Vec<u8>> = comps.iter().map(|c| c.to_vec()).collect();
        let mut followed = 0u32;
        while let Some(c) = queue.pop_front() {
            if c.is_empty() || c == b"." {
                continue;
            }
            if c == b".." {
                if dirs.len() > 1 {
                    dirs.pop();
                }
                continue;
            }
            let cur = *dirs.last().unwrap_or(&ffi::EXT2_ROOT_INO);
            let cur_inode = self.read_inode(op, path, cur)?;
            if cur_inode.i_mode & S_IFMT != S_IFDIR {
                return Err(Error::NotADirectory {
                    op,
                    path: path.to_owned(),
                });
            }
            let Some(child) = self.lookup(op, path, cur, &c)? else {
                return Err(Error::NotFound {
                    op,
                    path: path.to_owned(),
                });
            };
            let is_last = queue.is_empty();
            let child_inode = self.read_inode(op, path, child)?;
            if child_inode.i_mode & S_IFMT == S_IFLNK && (!is_last || follow_last) {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(Error::TooManySymlinks {
                        op,
                        path: path.to_owned(),
                        max: MAX_SYMLINKS,
                    });
                }
                let target = self.link_target(op, path, child, &child_inode)?;
                if target.first() == Some(&b'/') {
                    dirs.truncate(1);
                }
                for part in target.split(|&b| b == b'/').rev() {
                    queue.push_front(part.to_vec());
                }
                continue;
            }
            dirs.push(child);
        }
        Ok(*dirs.last().unwrap_or(&ffi::EXT2_ROOT_INO))
    }

    fn resolve(&self, op: Op, path: &str, follow_last: bool) -> Result<ext2_ino_t> {
        let comps = components(op, path)?;
        self.resolve_components(op, path, &comps, follow_last)
    }

    /// The directory holding the last component of `path` (symlinks resolved) and that name.
    fn resolve_parent<'p>(&self, op: Op, path: &'p str) -> Result<(ext2_ino_t, &'p [u8])> {
        let comps = components(op, path)?;
        let Some((name, parent)) = comps.split_last() else {
            return Err(Error::InvalidPath {
                op,
                path: path.to_owned(),
                reason: "needs a name (not /)",
            });
        };
        let dir = self.resolve_components(op, path, parent, true)?;
        let inode = self.read_inode(op, path, dir)?;
        if inode.i_mode & S_IFMT != S_IFDIR {
            return Err(Error::NotADirectory {
                op,
                path: path.to_owned(),
            });
        }
        Ok((dir, name))
    }

    fn link_target(
        &self,
        op: Op,
        path: &str,
        ino: ext2_ino_t,
        inode: &ext2_inode_large,
    ) -> Result<Vec<u8>> {
        let size = (u64::from(inode.i_size) | (u64::from(inode.i_size_high) << 32)) as usize;
        if size > 65536 {
            return Err(Error::Unsupported {
                op,
                path: path.to_owned(),
                what: format!("symlink of {size} bytes"),
            });
        }
        let mut inode = *inode;
        if inode.i_flags & ffi::EXT4_INLINE_DATA_FL != 0 {
            let mut buf = vec![0u8; size.max(60) + 256];
            let mut got = buf.len();
            // SAFETY: live handle; `buf` has room for the inline data (≤ 60 bytes in i_block plus
            // the system.data xattr, bounded by the inode size which is ≤ 256 here + margin).
            let code = unsafe {
                ffi::ext2fs_inline_data_get(
                    self.raw(),
                    ino,
                    &mut inode,
                    buf.as_mut_ptr().cast(),
                    &mut got,
                )
            };
            self.check(op, path, code)?;
            buf.truncate(size.min(got));
            return Ok(buf);
        }
        // SAFETY: live handle; reads only the inode struct we pass.
        let has_blocks =
            unsafe { ffi::ext2fs_inode_has_valid_blocks2(self.raw(), &mut inode) } != 0;
        if !has_blocks {
            // A fast symlink: the target is stored in i_block (at most 60 bytes).
            // SAFETY: i_block is 60 bytes of plain data.
            let bytes: [u8; 60] = unsafe { std::mem::transmute(inode.i_block) };
            return Ok(bytes[..size.min(60)].to_vec());
        }
        let mut out = Vec::with_capacity(size);
        self.read_ino_into(op, path, ino, &mut out)?;
        out.truncate(size);
        Ok(out)
    }

    fn read_ino_into(
        &self,
        op: Op,
        path: &str,
        ino: ext2_ino_t,
        out: &mut dyn Write,
    ) -> Result<u64> {
        let file = self.open_file(op, path, ino, 0)?;
        let mut buf = vec![0u8; IO_CHUNK];
        let mut total = 0u64;
        let result = loop {
            let mut got: c_uint = 0;
            // SAFETY: `file` is a live file handle; `buf` holds IO_CHUNK bytes.
            let code = unsafe {
                ffi::ext2fs_file_read(file, buf.as_mut_ptr().cast(), buf.len() as c_uint, &mut got)
            };
            if code != 0 {
                break Err(lib_error(op, &self.device, path, code, &self.shared));
            }
            if got == 0 {
                break Ok(total);
            }
            if let Err(source) = out.write_all(&buf[..got as usize]) {
                break Err(Error::Sink {
                    op,
                    path: path.to_owned(),
                    source,
                });
            }
            total += u64::from(got);
        };
        let closed = self.close_file(op, path, file);
        let total = result?;
        closed?;
        Ok(total)
    }

    fn open_file(
        &self,
        op: Op,
        path: &str,
        ino: ext2_ino_t,
        flags: c_int,
    ) -> Result<ffi::ext2_file_t> {
        let mut file: ffi::ext2_file_t = ptr::null_mut();
        // SAFETY: live handle; a NULL inode pointer makes the library read the inode itself.
        let code =
            unsafe { ffi::ext2fs_file_open2(self.raw(), ino, ptr::null_mut(), flags, &mut file) };
        self.check(op, path, code)?;
        Ok(file)
    }

    fn close_file(&self, op: Op, path: &str, file: ffi::ext2_file_t) -> Result<()> {
        // SAFETY: `file` came from ext2fs_file_open2 and is closed exactly once (here).
        let code = unsafe { ffi::ext2fs_file_close(file) };
        self.check(op, path, code)
    }

    // ---------------------------------------------------------------------------------------
    // Reading
    // ---------------------------------------------------------------------------------------

    /// Metadata of `path`, following symlinks (inside the guest).
    pub fn stat(&self, path: &str) -> Result<Metadata> {
        let ino = self.resolve(Op::Stat, path, true)?;
        Ok(self.metadata(ino, &self.read_inode(Op::Stat, path, ino)?))
    }

    /// Metadata of `path` itself (a final symlink is not followed).
    pub fn lstat(&self, path: &str) -> Result<Metadata> {
        let ino = self.resolve(Op::Stat, path, false)?;
        Ok(self.metadata(ino, &self.read_inode(Op::Stat, path, ino)?))
    }

    /// Whether `path` exists (a dangling final symlink counts as existing).
    pub fn exists(&self, path: &str) -> Result<bool> {
        match self.lstat(path) {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The content of a regular file.
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_to(path, &mut out)?;
        Ok(out)
    }

    /// Stream a regular file into `out`; returns the byte count.
    pub fn read_to(&self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let ino = self.resolve(Op::Read, path, true)?;
        let inode = self.read_inode(Op::Read, path, ino)?;
        match inode.i_mode & S_IFMT {
            S_IFREG => self.read_ino_into(Op::Read, path, ino, out),
            S_IFDIR => Err(Error::IsADirectory {
                op: Op::Read,
                path: path.to_owned(),
            }),
            _ => Err(Error::NotAFile {
                op: Op::Read,
                path: path.to_owned(),
            }),
        }
    }

    /// The target of a symlink.
    pub fn read_link(&self, path: &str) -> Result<Vec<u8>> {
        let ino = self.resolve(Op::ReadLink, path, false)?;
        let inode = self.read_inode(Op::ReadLink, path, ino)?;
        if inode.i_mode & S_IFMT != S_IFLNK {
            return Err(Error::NotASymlink {
                op: Op::ReadLink,
                path: path.to_owned(),
            });
        }
        self.link_target(Op::ReadLink, path, ino, &inode)
    }

    /// The entries of a directory (without `.` and `..`), sorted by name bytes.
    pub fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let ino = self.resolve(Op::ReadDir, path, true)?;
        self.read_dir_ino(Op::ReadDir, path, ino)
    }

    fn read_dir_ino(&self, op: Op, path: &str, ino: ext2_ino_t) -> Result<Vec<DirEntry>> {
        let inode = self.read_inode(op, path, ino)?;
        if inode.i_mode & S_IFMT != S_IFDIR {
            return Err(Error::NotADirectory {
                op,
                path: path.to_owned(),
            });
        }
        let mut raw: Vec<(Vec<u8>, u32, u8)> = Vec::new();
        // SAFETY: live handle; the callback only appends to `raw`, which outlives the call, via
        // the private pointer; a NULL block buffer makes the library allocate one.
        let code = unsafe {
            ffi::ext2fs_dir_iterate2(
                self.raw(),
                ino,
                0,
                ptr::null_mut(),
                Some(collect_entry),
                (&mut raw as *mut Vec<(Vec<u8>, u32, u8)>).cast(),
            )
        };
        self.check(op, path, code)?;
        let mut out = Vec::with_capacity(raw.len());
        for (name, child, t) in raw {
            if name == b"." || name == b".." {
                continue;
            }
            let kind = match FileKind::from_dirent_type(t) {
                Some(k) => k,
                None => FileKind::from_mode(self.read_inode(op, path, child)?.i_mode),
            };
            out.push(DirEntry {
                name,
                ino: child,
                kind,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    // ---------------------------------------------------------------------------------------
    // Writing
    // ---------------------------------------------------------------------------------------

    fn require_writable(&self, op: Op, path: &str) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::ReadOnly {
                op,
                path: path.to_owned(),
            })
        }
    }

    /// Link `ino` as `name` in `dir`, growing the directory when its blocks are full.
    fn add_link(
        &self,
        op: Op,
        path: &str,
        dir: ext2_ino_t,
        name: &[u8],
        ino: ext2_ino_t,
        ftype: c_int,
    ) -> Result<()> {
        let cname = CString::new(name).map_err(|_| Error::InvalidPath {
            op,
            path: path.to_owned(),
            reason: "contains a NUL byte",
        })?;
        for _ in 0..2 {
            // SAFETY: live handle; NUL-terminated name.
            let code = unsafe { ffi::ext2fs_link(self.raw(), dir, cname.as_ptr(), ino, ftype) };
            if code == ffi::EXT2_ET_DIR_NO_SPACE {
                // SAFETY: live handle; adds one block to the directory.
                let code = unsafe { ffi::ext2fs_expand_dir(self.raw(), dir) };
                self.check(op, path, code)?;
                continue;
            }
            return self.check(op, path, code);
        }
        Err(Error::Unsupported {
            op,
            path: path.to_owned(),
            what: "directory still full after expanding it".into(),
        })
    }

    fn remove_link(&self, op: Op, path: &str, dir: ext2_ino_t, name: &[u8]) -> Result<()> {
        let cname = CString::new(name).map_err(|_| Error::InvalidPath {
            op,
            path: path.to_owned(),
            reason: "contains a NUL byte",
        })?;
        // SAFETY: live handle; NUL-terminated name; ino 0 = remove whatever entry has this name.
        let code = unsafe { ffi::ext2fs_unlink(self.raw(), dir, cname.as_ptr(), 0, 0) };
        self.check(op, path, code)
    }

    /// mtime and ctime of a directory whose entries changed; `nlink_delta` adjusts its link count.
    fn touch_dir(&self, op: Op, path: &str, dir: ext2_ino_t, nlink_delta: i32) -> Result<()> {
        let mut inode = self.read_inode(op, path, dir)?;
        self.set_mtime(&mut inode, self.time);
        self.set_ctime(&mut inode, self.time);
        match nlink_delta {
            // A count of 1 on a directory means "too many to count" (dir_nlink): leave it.
            d if d < 0 && inode.i_links_count > 2 => inode.i_links_count -= 1,
            d if d > 0 && inode.i_links_count > 1 && inode.i_links_count < 65000 => {
                inode.i_links_count += 1
            }
            _ => {}
        }
        self.write_inode(op, path, dir, &mut inode)
    }

    /// A fresh inode with every field we control set (times, owner, generation 0).
    fn init_inode(&self, mode: u16, uid: u32, gid: u32, mtime: i64) -> ext2_inode_large {
        let mut i = ext2_inode_large {
            i_mode: mode,
            i_links_count: 1,
            ..Default::default()
        };
        if self.inode_size() > 128 {
            i.i_extra_isize = (size_of::<ext2_inode_large>() - 128) as u16;
        }
        Self::set_owner_fields(&mut i, uid, gid);
        self.set_atime(&mut i, self.time);
        self.set_ctime(&mut i, self.time);
        self.set_mtime(&mut i, mtime);
        self.set_crtime(&mut i, self.time);
        i
    }

    /// Create `path` (or replace its content) from `src`, with the given attributes.
    ///
    /// An existing regular file keeps its inode (hard links stay linked) and gets the new content,
    /// permissions, owner and mtime. An existing symlink, device, fifo or socket at `path` is
    /// replaced by a regular file (the final component is not followed); a directory is an error.
    pub fn write_file(&mut self, path: &str, src: &mut dyn Read, attrs: NewFile) -> Result<()> {
        self.write_impl(path, src, attrs, None)
    }

    /// `size_hint`: the exact content length when known; the blocks are then allocated in one
    /// go (contiguous extents) before the data is written.
    fn write_impl(
        &mut self,
        path: &str,
        src: &mut dyn Read,
        attrs: NewFile,
        size_hint: Option<u64>,
    ) -> Result<()> {
        let op = Op::Write;
        self.require_writable(op, path)?;
        let (dir, name) = self.resolve_parent(op, path)?;
        let mtime = attrs.mtime.unwrap_or(self.time);
        let mut ino = match self.lookup(op, path, dir, name)? {
            Some(ino) => {
                let inode = self.read_inode(op, path, ino)?;
                match inode.i_mode & S_IFMT {
                    S_IFREG => Some(ino),
                    S_IFDIR => {
                        return Err(Error::IsADirectory {
                            op,
                            path: path.to_owned(),
                        });
                    }
                    _ => {
                        self.remove_link(op, path, dir, name)?;
                        self.drop_link(op, path, ino)?;
                        None
                    }
                }
            }
            None => None,
        };
        let ino = match ino.take() {
            Some(ino) => {
                let file = self.open_file(op, path, ino, ffi::EXT2_FILE_WRITE)?;
                // SAFETY: live file handle; shrinking to 0 frees the blocks.
                let code = unsafe { ffi::ext2fs_file_set_size2(file, 0) };
                let r = self.check(op, path, code);
                self.close_file(op, path, file)?;
                r?;
                ino
            }
            None => {
                let mode = S_IFREG | (attrs.perm & 0o7777);
                let ino = self.new_inode(op, path, dir, mode)?;
                let mut inode = self.init_inode(mode, attrs.uid, attrs.gid, mtime);
                if self.has_extents() {
                    inode.i_flags |= ffi::EXT4_EXTENTS_FL;
                    let mut handle: ffi::ext2_extent_handle_t = ptr::null_mut();
                    // SAFETY: live handle; with an inode whose i_block is empty, extent_open2 writes
                    // an empty extent header into our struct's i_block; the handle is freed at once.
                    let code = unsafe {
                        ffi::ext2fs_extent_open2(self.raw(), ino, &mut inode, &mut handle)
                    };
                    self.check(op, path, code)?;
                    // SAFETY: handle from extent_open2, freed once.
                    unsafe { ffi::ext2fs_extent_free(handle) };
                }
                // SAFETY: live handle; write_new_inode zero-fills the rest of the on-disk inode.
                let code = unsafe { ffi::ext2fs_write_new_inode(self.raw(), ino, &mut inode) };
                self.check(op, path, code)?;
                self.write_inode(op, path, ino, &mut inode)?;
                self.add_link(op, path, dir, name, ino, ffi::EXT2_FT_REG_FILE)?;
                // SAFETY: live handle; marks the inode used in the bitmap and group counters.
                unsafe { ffi::ext2fs_inode_alloc_stats2(self.raw(), ino, 1, 0) };
                self.touch_dir(op, path, dir, 0)?;
                ino
            }
        };
        if let Some(len) = size_hint.filter(|&l| l > 0 && self.has_extents()) {
            let bs = u64::from(self.info().block_size);
            let mut inode = self.read_inode(op, path, ino)?;
            // SAFETY: live handle; allocates initialised extents for blocks [0, n) of the (empty)
            // file and writes the inode back; every allocated block is then written below.
            let code = unsafe {
                ffi::ext2fs_fallocate(
                    self.raw(),
                    ffi::EXT2_FALLOCATE_FORCE_INIT | ffi::EXT2_FALLOCATE_INIT_BEYOND_EOF,
                    ino,
                    &mut inode,
                    !0,
                    0,
                    len.div_ceil(bs),
                )
            };
            self.check(op, path, code)?;
        }
        self.write_content(op, path, ino, src, size_hint.is_some_and(|l| l > 0))?;
        let mut inode = self.read_inode(op, path, ino)?;
        inode.i_mode = S_IFREG | (attrs.perm & 0o7777);
        Self::set_owner_fields(&mut inode, attrs.uid, attrs.gid);
        self.set_mtime(&mut inode, mtime);
        self.set_ctime(&mut inode, self.time);
        self.set_atime(&mut inode, self.time);
        self.write_inode(op, path, ino, &mut inode)
    }

    /// Convenience: [`Filesystem::write_file`] from a byte slice.
    pub fn write(&mut self, path: &str, data: &[u8], attrs: NewFile) -> Result<()> {
        self.write_impl(path, &mut &data[..], attrs, Some(data.len() as u64))
    }

    fn new_inode(&self, op: Op, path: &str, dir: ext2_ino_t, mode: u16) -> Result<ext2_ino_t> {
        let mut ino: ext2_ino_t = 0;
        // SAFETY: live handle; NULL map = the filesystem's inode bitmap.
        let code = unsafe {
            ffi::ext2fs_new_inode(
                self.raw(),
                dir,
                c_int::from(mode),
                ptr::null_mut(),
                &mut ino,
            )
        };
        self.check(op, path, code)?;
        Ok(ino)
    }

    /// Write all of `bytes` at the file position.
    fn put(&self, op: Op, path: &str, file: ffi::ext2_file_t, bytes: &[u8]) -> Result<()> {
        let mut done = 0usize;
        while done < bytes.len() {
            let mut written: c_uint = 0;
            let want = (bytes.len() - done).min(1 << 30) as c_uint;
            // SAFETY: live file handle; `bytes[done..]` holds at least `want` initialised bytes.
            let code = unsafe {
                ffi::ext2fs_file_write(file, bytes[done..].as_ptr().cast(), want, &mut written)
            };
            self.check(op, path, code)?;
            if written == 0 {
                return Err(Error::Unsupported {
                    op,
                    path: path.to_owned(),
                    what: "libext2fs wrote 0 bytes".into(),
                });
            }
            done += written as usize;
        }
        Ok(())
    }

    /// Stream `src` into the file from offset 0. With `zero_tail` (blocks were preallocated, so
    /// the last block holds whatever was on disk), the rest of the last block is zeroed, as the
    /// kernel guarantees: a later size increase must read zeros there.
    fn write_content(
        &self,
        op: Op,
        path: &str,
        ino: ext2_ino_t,
        src: &mut dyn Read,
        zero_tail: bool,
    ) -> Result<()> {
        let file = self.open_file(op, path, ino, ffi::EXT2_FILE_WRITE)?;
        let mut buf = vec![0u8; IO_CHUNK];
        let mut total = 0u64;
        let result = (|| {
            loop {
                let n = match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(source) => {
                        return Err(Error::Source {
                            op,
                            path: path.to_owned(),
                            source,
                        });
                    }
                };
                self.put(op, path, file, &buf[..n])?;
                total += n as u64;
            }
            let bs = u64::from(self.info().block_size);
            if zero_tail && !total.is_multiple_of(bs) {
                let pad = vec![0u8; (bs - total % bs) as usize];
                self.put(op, path, file, &pad)?;
                // SAFETY: live file handle; shrinks back to the content length within the block.
                let code = unsafe { ffi::ext2fs_file_set_size2(file, total) };
                self.check(op, path, code)?;
            }
            Ok(())
        })();
        let closed = self.close_file(op, path, file);
        result?;
        closed
    }

    /// Drop one link of `ino`; free it when none is left.
    fn drop_link(&self, op: Op, path: &str, ino: ext2_ino_t) -> Result<()> {
        let mut inode = self.read_inode(op, path, ino)?;
        let is_dir = inode.i_mode & S_IFMT == S_IFDIR;
        if !is_dir && inode.i_links_count > 1 {
            inode.i_links_count -= 1;
            self.set_ctime(&mut inode, self.time);
            return self.write_inode(op, path, ino, &mut inode);
        }
        if inode.i_file_acl != 0 || inode.l_i_file_acl_high != 0 {
            // SAFETY: live handle; drops the inode's reference to its xattr block (freeing it at
            // zero) and writes the inode.
            let code = unsafe { ffi::ext2fs_free_ext_attr(self.raw(), ino, &mut inode) };
            self.check(op, path, code)?;
            inode = self.read_inode(op, path, ino)?;
        }
        // SAFETY: live handle; reads the inode struct only.
        if unsafe { ffi::ext2fs_inode_has_valid_blocks2(self.raw(), &mut inode) } != 0 {
            // SAFETY: live handle; frees every block of the inode and writes it back.
            let code =
                unsafe { ffi::ext2fs_punch(self.raw(), ino, &mut inode, ptr::null_mut(), 0, !0) };
            self.check(op, path, code)?;
            inode = self.read_inode(op, path, ino)?;
        }
        inode.i_links_count = 0;
        let (dtime, _) = encode_time(self.time);
        inode.i_dtime = dtime;
        self.write_inode(op, path, ino, &mut inode)?;
        // SAFETY: live handle; marks the inode free.
        unsafe { ffi::ext2fs_inode_alloc_stats2(self.raw(), ino, -1, c_int::from(is_dir)) };
        Ok(())
    }

    /// Create `path` and any missing parents (like `mkdir -p`). Existing directories (or symlinks
    /// to directories) are left as they are; anything else in the way is an error.
    pub fn create_dir_all(&mut self, path: &str, attrs: NewDir) -> Result<()> {
        let op = Op::Mkdir;
        self.require_writable(op, path)?;
        let comps = components(op, path)?;
        let mut dir = ffi::EXT2_ROOT_INO;
        for (i, name) in comps.iter().enumerate() {
            dir = match self.lookup(op, path, dir, name)? {
                Some(_) => {
                    let ino = self.resolve_components(op, path, &comps[..=i], true)?;
                    if self.read_inode(op, path, ino)?.i_mode & S_IFMT != S_IFDIR {
                        return Err(Error::NotADirectory {
                            op,
                            path: path.to_owned(),
                        });
                    }
                    ino
                }
                None => self.mkdir_in(op, path, dir, name, attrs)?,
            };
        }
        Ok(())
    }

    fn mkdir_in(
        &self,
        op: Op,
        path: &str,
        parent: ext2_ino_t,
        name: &[u8],
        attrs: NewDir,
    ) -> Result<ext2_ino_t> {
        let mode = S_IFDIR | (attrs.perm & 0o7777);
        let ino = self.new_inode(op, path, parent, mode)?;
        // SAFETY: live handle; with a NULL name ext2fs_mkdir builds the directory (block, `.` and
        // `..`, parent link count, allocation counters) without linking it; we link it below.
        let code = unsafe { ffi::ext2fs_mkdir(self.raw(), parent, ino, ptr::null()) };
        self.check(op, path, code)?;
        self.add_link(op, path, parent, name, ino, ffi::EXT2_FT_DIR)?;
        let mut inode = self.read_inode(op, path, ino)?;
        inode.i_mode = mode;
        Self::set_owner_fields(&mut inode, attrs.uid, attrs.gid);
        self.set_atime(&mut inode, self.time);
        self.set_mtime(&mut inode, self.time);
        self.set_ctime(&mut inode, self.time);
        self.set_crtime(&mut inode, self.time);
        self.write_inode(op, path, ino, &mut inode)?;
        self.touch_dir(op, path, parent, 0)?;
        Ok(ino)
    }

    /// Create a symlink at `path` pointing to `target` (stored as given; resolved only inside the
    /// guest). Fast (in-inode) for targets under 60 bytes, a data block otherwise.
    pub fn symlink(&mut self, target: &str, path: &str, uid: u32, gid: u32) -> Result<()> {
        let op = Op::Symlink;
        self.require_writable(op, path)?;
        let bs = self.info().block_size as usize;
        if target.is_empty() || target.len() >= bs || target.contains('\0') {
            return Err(Error::Unsupported {
                op,
                path: path.to_owned(),
                what: format!(
                    "symlink target of {} bytes (1..{} without NUL)",
                    target.len(),
                    bs - 1
                ),
            });
        }
        let (dir, name) = self.resolve_parent(op, path)?;
        if self.lookup(op, path, dir, name)?.is_some() {
            return Err(Error::AlreadyExists {
                op,
                path: path.to_owned(),
            });
        }
        let ino = self.new_inode(op, path, dir, S_IFLNK | 0o777)?;
        let ctarget = CString::new(target).map_err(|_| Error::InvalidPath {
            op,
            path: path.to_owned(),
            reason: "NUL in target",
        })?;
        // SAFETY: live handle; NULL name = create without linking (we link below); the target is
        // NUL-terminated and shorter than a block.
        let code =
            unsafe { ffi::ext2fs_symlink(self.raw(), dir, ino, ptr::null(), ctarget.as_ptr()) };
        self.check(op, path, code)?;
        self.add_link(op, path, dir, name, ino, ffi::EXT2_FT_SYMLINK)?;
        let mut inode = self.read_inode(op, path, ino)?;
        Self::set_owner_fields(&mut inode, uid, gid);
        self.set_atime(&mut inode, self.time);
        self.set_mtime(&mut inode, self.time);
        self.set_ctime(&mut inode, self.time);
        self.set_crtime(&mut inode, self.time);
        self.write_inode(op, path, ino, &mut inode)?;
        self.touch_dir(op, path, dir, 0)
    }

    /// Remove a file, symlink or other non-directory (`unlink`).
    pub fn remove_file(&mut self, path: &str) -> Result<()> {
        let op = Op::Remove;
        self.require_writable(op, path)?;
        let (dir, name) = self.resolve_parent(op, path)?;
        let Some(ino) = self.lookup(op, path, dir, name)? else {
            return Err(Error::NotFound {
                op,
                path: path.to_owned(),
            });
        };
        if self.read_inode(op, path, ino)?.i_mode & S_IFMT == S_IFDIR {
            return Err(Error::IsADirectory {
                op,
                path: path.to_owned(),
            });
        }
        self.remove_link(op, path, dir, name)?;
        self.drop_link(op, path, ino)?;
        self.touch_dir(op, path, dir, 0)
    }

    /// Remove `path` and, for a directory, everything below it (`rm -r`; a final symlink is
    /// removed, not followed). Refuses `/`.
    pub fn remove_all(&mut self, path: &str) -> Result<()> {
        let op = Op::RemoveAll;
        self.require_writable(op, path)?;
        let (dir, name) = self.resolve_parent(op, path)?;
        let Some(ino) = self.lookup(op, path, dir, name)? else {
            return Err(Error::NotFound {
                op,
                path: path.to_owned(),
            });
        };
        let is_dir = self.read_inode(op, path, ino)?.i_mode & S_IFMT == S_IFDIR;
        if is_dir {
            self.empty_dir(op, path, ino, 0)?;
        }
        self.remove_link(op, path, dir, name)?;
        self.drop_link(op, path, ino)?;
        self.touch_dir(op, path, dir, if is_dir { -1 } else { 0 })
    }

    fn empty_dir(&self, op: Op, path: &str, dir: ext2_ino_t, depth: u32) -> Result<()> {
        if depth > 4096 {
            return Err(Error::Unsupported {
                op,
                path: path.to_owned(),
                what: "directory tree deeper than 4096".into(),
            });
        }
        for e in self.read_dir_ino(op, path, dir)? {
            let child_is_dir = self.read_inode(op, path, e.ino)?.i_mode & S_IFMT == S_IFDIR;
            if child_is_dir {
                self.empty_dir(op, path, e.ino, depth + 1)?;
            }
            self.remove_link(op, path, dir, &e.name)?;
            self.drop_link(op, path, e.ino)?;
        }
        Ok(())
    }

    /// Set the size of a regular file (shrinking frees blocks; growing leaves a hole).
    pub fn truncate(&mut self, path: &str, size: u64) -> Result<()> {
        let op = Op::Truncate;
        self.require_writable(op, path)?;
        let ino = self.resolve(op, path, true)?;
        if self.read_inode(op, path, ino)?.i_mode & S_IFMT != S_IFREG {
            return Err(Error::NotAFile {
                op,
                path: path.to_owned(),
            });
        }
        let file = self.open_file(op, path, ino, ffi::EXT2_FILE_WRITE)?;
        // SAFETY: live file handle.
        let code = unsafe { ffi::ext2fs_file_set_size2(file, size) };
        let r = self.check(op, path, code);
        self.close_file(op, path, file)?;
        r?;
        let mut inode = self.read_inode(op, path, ino)?;
        self.set_mtime(&mut inode, self.time);
        self.set_ctime(&mut inode, self.time);
        self.write_inode(op, path, ino, &mut inode)
    }

    fn modify(
        &mut self,
        op: Op,
        path: &str,
        follow: bool,
        f: impl FnOnce(&Self, &mut ext2_inode_large),
    ) -> Result<()> {
        self.require_writable(op, path)?;
        let ino = self.resolve(op, path, follow)?;
        let mut inode = self.read_inode(op, path, ino)?;
        f(self, &mut inode);
        self.write_inode(op, path, ino, &mut inode)
    }

    /// Set the permission bits (07777) of `path` (following symlinks).
    pub fn set_permissions(&mut self, path: &str, perm: u16) -> Result<()> {
        self.modify(Op::Chmod, path, true, |fs, i| {
            i.i_mode = (i.i_mode & S_IFMT) | (perm & 0o7777);
            fs.set_ctime(i, fs.time);
        })
    }

    /// Set the owner of `path`; `follow` = false changes a symlink itself (`lchown`).
    pub fn set_owner(&mut self, path: &str, uid: u32, gid: u32, follow: bool) -> Result<()> {
        self.modify(Op::Chown, path, follow, |fs, i| {
            Self::set_owner_fields(i, uid, gid);
            fs.set_ctime(i, fs.time);
        })
    }

    /// Set times of `path`; `follow` = false changes a symlink itself. ctime becomes
    /// `times.ctime` or the open time.
    pub fn set_times(&mut self, path: &str, times: Times, follow: bool) -> Result<()> {
        self.modify(Op::SetTimes, path, follow, |fs, i| {
            if let Some(t) = times.atime {
                fs.set_atime(i, t);
            }
            if let Some(t) = times.mtime {
                fs.set_mtime(i, t);
            }
            fs.set_ctime(i, times.ctime.unwrap_or(fs.time));
        })
    }
}

impl Drop for Filesystem<'_> {
    /// Release the handle **without flushing** (see the crate docs): nothing is written, and a
    /// writable image dropped unclosed must be discarded.
    fn drop(&mut self) {
        if let Some(fs) = self.fs.take() {
            // SAFETY: we own the live handle; ext2fs_free releases memory and closes our channel
            // (which frees its private data) without writing.
            unsafe { ffi::ext2fs_free(fs.as_ptr()) };
        }
    }
}

unsafe extern "C" fn collect_entry(
    _dir: ext2_ino_t,
    _entry: c_int,
    dirent: *mut ffi::ext2_dir_entry,
    _offset: c_int,
    _blocksize: c_int,
    _buf: *mut c_char,
    private: *mut c_void,
) -> c_int {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: libext2fs passes a valid dirent inside its block buffer; the name has
        // `name_len & 0xff` bytes; `private` is the Vec passed to dir_iterate2.
        unsafe {
            let d = &*dirent;
            let len = usize::from(d.name_len & 0xff);
            let name = std::slice::from_raw_parts(ptr::addr_of!(d.name).cast::<u8>(), len).to_vec();
            let out = &mut *(private as *mut Vec<(Vec<u8>, u32, u8)>);
            out.push((name, d.inode, (d.name_len >> 8) as u8));
        }
    }));
    if r.is_ok() { 0 } else { ffi::DIRENT_ABORT }
}

fn lib_error(op: Op, device: &str, path: &str, code: errcode_t, shared: &Shared) -> Error {
    Error::Lib {
        op,
        device: device.to_owned(),
        path: path.to_owned(),
        code,
        message: crate::error::message(code),
        io: shared.take_error().map(Box::new),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn time_encoding_round_trips() {
        for t in [
            0i64,
            1,
            1_700_000_000,
            -1,
            i64::from(i32::MAX) + 1,
            1 << 33,
            (1 << 34) - (1 << 31) - 1,
        ] {
            let (lo, ex) = encode_time(t);
            assert_eq!(decode_time(lo, Some(ex)), t, "{t}");
        }
    }

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
        assert_eq!(
            RawSuper::parse(&b).check(false),
            Err(Refusal::NeedsRecovery)
        );
        b[0x60] = 0;
        b[0x3A] = 3;
        assert!(matches!(
            RawSuper::parse(&b).check(false),
            Err(Refusal::ErrorState { .. })
        ));
        b[0x3A] = 1;
        b[0x66] = 0x08; // ro_compat 0x80000: unknown
        assert!(RawSuper::parse(&b).check(false).is_ok());
        assert!(matches!(
            RawSuper::parse(&b).check(true),
            Err(Refusal::UnsupportedFeatures { .. })
        ));
    }
}
