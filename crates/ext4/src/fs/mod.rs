//! The safe filesystem API over libext2fs: the public types, opening and closing a filesystem,
//! and superblock facts. The rest of `Filesystem` lives in the submodules: `features` (what may
//! be opened), `inode` (inodes and lookup), `read` and `write`.

mod features;
mod inode;
mod read;
mod write;

use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use kiln_blockdev::BlockDev;

use crate::error::{Error, Op, Result};
use crate::ffi::{self, errcode_t};
use crate::io::{self, Shared};
use crate::path::GuestPath;

use features::{INCOMPAT_EXTENTS, RawSuper, check_library};

/// Symbolic links followed while resolving one path (Linux's limit).
const MAX_SYMLINKS: u32 = 40;
const IO_CHUNK: usize = 1 << 20;

const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const S_IFDIR: u16 = 0o040000;
const S_IFLNK: u16 = 0o120000;

/// How to open a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// Open for writing.
    pub write: bool,
    /// Seconds since the epoch (SOURCE_DATE_EPOCH): every time kiln writes.
    pub time: i64,
}

impl OpenOptions {
    /// Open for reading only; `time` is unused (0).
    pub fn read_only() -> Self {
        Self {
            write: false,
            time: 0,
        }
    }
    /// Open for writing, stamping `time` (seconds since the Unix epoch) on everything changed.
    pub fn read_write(time: i64) -> Self {
        Self { write: true, time }
    }
}

/// The type of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
///
/// From the file-type bits of the inode's `i_mode` (or a directory entry's `file_type` byte).
pub enum FileKind {
    /// Regular file (`S_IFREG`).
    File,
    /// Directory (`S_IFDIR`).
    Dir,
    /// Symbolic link (`S_IFLNK`).
    Symlink,
    /// Character device node (`S_IFCHR`).
    CharDevice,
    /// Block device node (`S_IFBLK`).
    BlockDevice,
    /// Named pipe (`S_IFIFO`).
    Fifo,
    /// Unix socket (`S_IFSOCK`).
    Socket,
    /// A file-type value ext4 does not define (corrupt inode).
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
///
/// Times are seconds since the Unix epoch, decoded with the `*_extra` epoch bits when the inode
/// has room for them (256-byte inodes); nanoseconds are not reported.
pub struct Metadata {
    /// Inode number (2 is the root directory).
    pub ino: u32,
    /// File type.
    pub kind: FileKind,
    /// Permission bits (07777).
    pub perm: u16,
    /// Owner user id (`i_uid` with its high 16 bits).
    pub uid: u32,
    /// Owner group id (`i_gid` with its high 16 bits).
    pub gid: u32,
    /// Size in bytes (`i_size` with `i_size_high`); for a symlink, the target's length.
    pub size: u64,
    /// Hard link count (`i_links_count`).
    pub nlink: u16,
    /// Last access time (`i_atime`).
    pub atime: i64,
    /// Last modification time (`i_mtime`).
    pub mtime: i64,
    /// Last inode change time (`i_ctime`).
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
    /// Inode number the entry points at.
    pub ino: u32,
    /// File type, from the entry's `file_type` byte when the filesystem records it
    /// (`filetype` feature), else from the inode.
    pub kind: FileKind,
}

impl DirEntry {
    /// The name, with invalid UTF-8 replaced: for showing only. It may name no entry at all, so
    /// never build a path from it; join [`DirEntry::name`] to the directory's
    /// [`GuestPathBuf`](crate::GuestPathBuf) instead.
    pub fn name_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }

    /// The name in the escaped form of [`GuestPath`] (`bad\xffname`): every byte kept, so it
    /// reads back with [`GuestPathBuf::from_escaped`](crate::GuestPathBuf::from_escaped).
    pub fn name_escaped(&self) -> String {
        GuestPath::new(&self.name).to_string()
    }
}

/// Attributes of a file written by [`Filesystem::write_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewFile {
    /// Permission bits (07777).
    pub perm: u16,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
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
///
/// Applied only to the directories the call creates; existing ones are left as they are.
pub struct NewDir {
    /// Permission bits (07777).
    pub perm: u16,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
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
///
/// All in seconds since the Unix epoch; what an inode can store is -2^31 up to 2^34 - 2^31
/// (with the `*_extra` epoch bits), and values outside are clamped.
pub struct Times {
    /// New access time.
    pub atime: Option<i64>,
    /// New modification time.
    pub mtime: Option<i64>,
    /// New change time; `None` sets it to the open time.
    pub ctime: Option<i64>,
}

/// Facts from the superblock, as libext2fs holds it in memory (counts reflect changes made
/// through this handle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    /// Volume label (`s_volume_name` up to its first NUL; invalid UTF-8 replaced).
    pub label: String,
    /// Filesystem UUID (`s_uuid`), as stored.
    pub uuid: [u8; 16],
    /// Block size in bytes (`1024 << s_log_block_size`).
    pub block_size: u32,
    /// Total blocks (`s_blocks_count` with its high 32 bits).
    pub blocks_count: u64,
    /// Free blocks (`s_free_blocks_count` with its high 32 bits).
    pub free_blocks: u64,
    /// Total inodes (`s_inodes_count`).
    pub inodes_count: u32,
    /// Free inodes (`s_free_inodes_count`).
    pub free_inodes: u32,
    /// On-disk inode size in bytes (`s_inode_size`: 128, 256, …).
    pub inode_size: u16,
    /// Compatible feature bits (`s_feature_compat`: has_journal, dir_index, …).
    pub feature_compat: u32,
    /// Incompatible feature bits (`s_feature_incompat`: extents, 64bit, flex_bg, …).
    pub feature_incompat: u32,
    /// Read-only-compatible feature bits (`s_feature_ro_compat`: metadata_csum, huge_file, …).
    pub feature_ro_compat: u32,
    /// Last write time (`s_wtime`), seconds since the Unix epoch.
    pub wtime: u32,
    /// Lifetime writes in KiB (`s_kbytes_written`).
    pub kbytes_written: u64,
    /// Filesystem state (`s_state`: bit 0 cleanly unmounted, bit 1 errors detected).
    pub state: u16,
}

impl FsInfo {
    /// Why this filesystem was not left clean, one phrase per reason, empty when it was: a
    /// journal that needs recovery (`needs_recovery`; read without replaying it), pending orphan
    /// inodes (`orphan_present`), errors noted (`s_state` bit 1), not cleanly unmounted (`s_state`
    /// bit 0 clear). Such a filesystem opens read-only, as it is, and is refused for writing.
    pub fn unclean(&self) -> Vec<&'static str> {
        let mut why = Vec::new();
        if self.feature_incompat & features::INCOMPAT_RECOVER != 0 {
            why.push("its journal needs recovery and is not replayed (the last transactions are not seen)");
        }
        if self.feature_ro_compat & features::RO_COMPAT_ORPHAN_PRESENT != 0 {
            why.push("orphan inodes are pending");
        }
        if self.state & features::STATE_ERROR != 0 {
            why.push("errors were detected on it");
        }
        if self.state & features::STATE_VALID == 0 {
            why.push("it was not cleanly unmounted");
        }
        why
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
            return Err(lib_error(
                Op::Open,
                device,
                GuestPath::root(),
                code,
                &shared,
            ));
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
            this.check(Op::Open, GuestPath::root(), code)?;
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

    fn check(&self, op: Op, path: &GuestPath, code: errcode_t) -> Result<()> {
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
                GuestPath::root(),
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
            return Err(lib_error(
                Op::Close,
                &self.device,
                GuestPath::root(),
                code,
                &self.shared,
            ));
        }
        Ok(())
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

fn lib_error(op: Op, device: &str, path: &GuestPath, code: errcode_t, shared: &Shared) -> Error {
    Error::Lib {
        op,
        device: device.to_owned(),
        path: path.to_string(),
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
}
