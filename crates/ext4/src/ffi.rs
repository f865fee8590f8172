//! Hand-written bindings to the part of libext2fs 1.47 (and libcom_err) kiln uses.
//!
//! Layouts follow `lib/ext2fs/ext2fs.h`, `ext2_io.h` and `ext2_fs.h` of e2fsprogs 1.47.0 on an LP64
//! Linux target. They were checked against the installed library's headers with a C program printing
//! `sizeof`/`offsetof` (the numbers are asserted in the tests below), and every open re-checks
//! the parts we rely on at run time (`Filesystem::open` → `check_layout`): the filesystem magic,
//! the block size and the superblock pointer read through this struct must agree with what we
//! parsed ourselves from the device.
//!
//! Only what kiln calls is declared; structs the library owns are declared in full when we read
//! their fields (`struct_ext2_filsys`, the superblock, the large inode) and opaque otherwise.

#![allow(non_camel_case_types, dead_code)]

use std::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_ulonglong, c_void};

pub type errcode_t = c_long;
pub type ext2_ino_t = u32;
pub type blk64_t = u64;
pub type blk_t = u32;
pub type dgrp_t = u32;
pub type time_t = i64;
pub type ext2_filsys = *mut struct_ext2_filsys;
pub type io_channel = *mut struct_io_channel;
pub type io_manager = *mut struct_io_manager;
pub type ext2_file_t = *mut c_void;
pub type ext2_extent_handle_t = *mut c_void;

// --- error codes (ext2_err.h, table base 2133571328) -------------------------------------------
pub const EXT2_ET_BASE: errcode_t = 2133571328;
pub const EXT2_ET_MAGIC_EXT2FS_FILSYS: errcode_t = EXT2_ET_BASE + 1;
pub const EXT2_ET_MAGIC_IO_CHANNEL: errcode_t = EXT2_ET_BASE + 5;
pub const EXT2_ET_MAGIC_IO_MANAGER: errcode_t = EXT2_ET_BASE + 7;
pub const EXT2_ET_SHORT_READ: errcode_t = EXT2_ET_BASE + 36;
pub const EXT2_ET_SHORT_WRITE: errcode_t = EXT2_ET_BASE + 37;
pub const EXT2_ET_DIR_NO_SPACE: errcode_t = EXT2_ET_BASE + 38;
pub const EXT2_ET_NO_MEMORY: errcode_t = EXT2_ET_BASE + 70;
pub const EXT2_ET_INVALID_ARGUMENT: errcode_t = EXT2_ET_BASE + 71;
pub const EXT2_ET_FILE_NOT_FOUND: errcode_t = EXT2_ET_BASE + 76;
pub const EXT2_ET_UNIMPLEMENTED: errcode_t = EXT2_ET_BASE + 80;
/// errno values the io manager returns (Linux).
pub const EIO: errcode_t = 5;
pub const EROFS: errcode_t = 30;
pub const EINVAL: errcode_t = 22;

// --- flags ---------------------------------------------------------------------------------------
pub const EXT2_FLAG_RW: c_int = 0x01;
pub const EXT2_FLAG_CHANGED: c_int = 0x02;
pub const EXT2_FLAG_DIRTY: c_int = 0x04;
pub const EXT2_FLAG_BB_DIRTY: c_int = 0x20;
pub const EXT2_FLAG_MASTER_SB_ONLY: c_int = 0x200;
pub const EXT2_FLAG_SUPER_ONLY: c_int = 0x800;
/// Block-group descriptor flag: the group's block bitmap is not initialised on disk.
pub const EXT2_BG_BLOCK_UNINIT: u16 = 0x0002;
pub const EXT2_FLAG_64BITS: c_int = 0x20000;
pub const EXT2_FLAG_SKIP_MMP: c_int = 0x100000;
pub const EXT2_FLAG_FLUSH_NO_SYNC: c_int = 1;
pub const IO_FLAG_RW: c_int = 0x0001;
pub const EXT2_FILE_WRITE: c_int = 0x0001;
pub const EXT2_FALLOCATE_FORCE_INIT: c_int = 0x2;
pub const EXT2_FALLOCATE_INIT_BEYOND_EOF: c_int = 0x8;
pub const DIRENT_ABORT: c_int = 2;
pub const EXT2_FT_REG_FILE: c_int = 1;
pub const EXT2_FT_DIR: c_int = 2;
pub const EXT2_FT_SYMLINK: c_int = 7;
pub const EXT2_ROOT_INO: ext2_ino_t = 2;
pub const EXT4_EXTENTS_FL: u32 = 0x0008_0000;
pub const EXT4_INLINE_DATA_FL: u32 = 0x1000_0000;
pub const EXT2_INDEX_FL: u32 = 0x0000_1000;

#[repr(C)]
pub struct struct_io_channel {
    pub magic: errcode_t,
    pub manager: io_manager,
    pub name: *mut c_char,
    pub block_size: c_int,
    pub read_error: Option<
        unsafe extern "C" fn(
            io_channel,
            c_ulong,
            c_int,
            *mut c_void,
            usize,
            c_int,
            errcode_t,
        ) -> errcode_t,
    >,
    pub write_error: Option<
        unsafe extern "C" fn(
            io_channel,
            c_ulong,
            c_int,
            *const c_void,
            usize,
            c_int,
            errcode_t,
        ) -> errcode_t,
    >,
    pub refcount: c_int,
    pub flags: c_int,
    pub reserved: [c_long; 14],
    pub private_data: *mut c_void,
    pub app_data: *mut c_void,
    pub align: c_int,
}

#[repr(C)]
pub struct struct_io_stats {
    pub num_fields: c_int,
    pub reserved: c_int,
    pub bytes_read: c_ulonglong,
    pub bytes_written: c_ulonglong,
}

#[repr(C)]
pub struct struct_io_manager {
    pub magic: errcode_t,
    pub name: *const c_char,
    pub open: Option<unsafe extern "C" fn(*const c_char, c_int, *mut io_channel) -> errcode_t>,
    pub close: Option<unsafe extern "C" fn(io_channel) -> errcode_t>,
    pub set_blksize: Option<unsafe extern "C" fn(io_channel, c_int) -> errcode_t>,
    pub read_blk:
        Option<unsafe extern "C" fn(io_channel, c_ulong, c_int, *mut c_void) -> errcode_t>,
    pub write_blk:
        Option<unsafe extern "C" fn(io_channel, c_ulong, c_int, *const c_void) -> errcode_t>,
    pub flush: Option<unsafe extern "C" fn(io_channel) -> errcode_t>,
    pub write_byte:
        Option<unsafe extern "C" fn(io_channel, c_ulong, c_int, *const c_void) -> errcode_t>,
    pub set_option:
        Option<unsafe extern "C" fn(io_channel, *const c_char, *const c_char) -> errcode_t>,
    pub get_stats: Option<unsafe extern "C" fn(io_channel, *mut *mut struct_io_stats) -> errcode_t>,
    pub read_blk64:
        Option<unsafe extern "C" fn(io_channel, c_ulonglong, c_int, *mut c_void) -> errcode_t>,
    pub write_blk64:
        Option<unsafe extern "C" fn(io_channel, c_ulonglong, c_int, *const c_void) -> errcode_t>,
    pub discard: Option<unsafe extern "C" fn(io_channel, c_ulonglong, c_ulonglong) -> errcode_t>,
    pub cache_readahead:
        Option<unsafe extern "C" fn(io_channel, c_ulonglong, c_ulonglong) -> errcode_t>,
    pub zeroout: Option<unsafe extern "C" fn(io_channel, c_ulonglong, c_ulonglong) -> errcode_t>,
    pub reserved: [c_long; 14],
}

/// `struct struct_ext2_filsys` (368 bytes in 1.47.0). Function pointers we never call are kept as
/// plain pointers.
#[repr(C)]
pub struct struct_ext2_filsys {
    pub magic: errcode_t,
    pub io: io_channel,
    pub flags: c_int,
    pub device_name: *mut c_char,
    pub super_: *mut ext2_super_block,
    pub blocksize: c_uint,
    pub fragsize: c_int,
    pub group_desc_count: dgrp_t,
    pub desc_blocks: c_ulong,
    pub group_desc: *mut c_void,
    pub inode_blocks_per_group: c_uint,
    pub inode_map: *mut c_void,
    pub block_map: *mut c_void,
    pub get_blocks: *mut c_void,
    pub check_directory: *mut c_void,
    pub write_bitmaps: *mut c_void,
    pub read_inode: *mut c_void,
    pub write_inode: *mut c_void,
    pub badblocks: *mut c_void,
    pub dblist: *mut c_void,
    pub stride: u32,
    pub orig_super: *mut ext2_super_block,
    pub image_header: *mut c_void,
    pub umask: u32,
    pub now: time_t,
    pub cluster_ratio_bits: c_int,
    pub default_bitmap_type: u16,
    pub pad: u16,
    pub reserved: [u32; 5],
    pub priv_data: *mut c_void,
    pub icache: *mut c_void,
    pub image_io: io_channel,
    pub get_alloc_block: *mut c_void,
    pub get_alloc_block2: *mut c_void,
    pub block_alloc_stats: *mut c_void,
    pub mmp_buf: *mut c_void,
    pub mmp_cmp: *mut c_void,
    pub mmp_fd: c_int,
    pub mmp_last_written: c_long,
    pub progress_ops: *mut c_void,
    pub csum_seed: u32,
    pub journal_io: io_channel,
    pub journal_name: *mut c_char,
    pub new_range: *mut c_void,
    pub block_alloc_stats_range: *mut c_void,
    pub block_sha_map: *mut c_void,
    pub encoding: *const c_void,
}

/// The on-disk superblock (`struct ext2_super_block`, 1024 bytes), host-endian in memory.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ext2_super_block {
    pub s_inodes_count: u32,
    pub s_blocks_count: u32,
    pub s_r_blocks_count: u32,
    pub s_free_blocks_count: u32,
    pub s_free_inodes_count: u32,
    pub s_first_data_block: u32,
    pub s_log_block_size: u32,
    pub s_log_cluster_size: u32,
    pub s_blocks_per_group: u32,
    pub s_clusters_per_group: u32,
    pub s_inodes_per_group: u32,
    pub s_mtime: u32,
    pub s_wtime: u32,
    pub s_mnt_count: u16,
    pub s_max_mnt_count: i16,
    pub s_magic: u16,
    pub s_state: u16,
    pub s_errors: u16,
    pub s_minor_rev_level: u16,
    pub s_lastcheck: u32,
    pub s_checkinterval: u32,
    pub s_creator_os: u32,
    pub s_rev_level: u32,
    pub s_def_resuid: u16,
    pub s_def_resgid: u16,
    pub s_first_ino: u32,
    pub s_inode_size: u16,
    pub s_block_group_nr: u16,
    pub s_feature_compat: u32,
    pub s_feature_incompat: u32,
    pub s_feature_ro_compat: u32,
    pub s_uuid: [u8; 16],
    pub s_volume_name: [u8; 16],
    pub s_last_mounted: [u8; 64],
    pub s_algorithm_usage_bitmap: u32,
    pub s_prealloc_blocks: u8,
    pub s_prealloc_dir_blocks: u8,
    pub s_reserved_gdt_blocks: u16,
    pub s_journal_uuid: [u8; 16],
    pub s_journal_inum: u32,
    pub s_journal_dev: u32,
    pub s_last_orphan: u32,
    pub s_hash_seed: [u32; 4],
    pub s_def_hash_version: u8,
    pub s_jnl_backup_type: u8,
    pub s_desc_size: u16,
    pub s_default_mount_opts: u32,
    pub s_first_meta_bg: u32,
    pub s_mkfs_time: u32,
    pub s_jnl_blocks: [u32; 17],
    pub s_blocks_count_hi: u32,
    pub s_r_blocks_count_hi: u32,
    pub s_free_blocks_hi: u32,
    pub s_min_extra_isize: u16,
    pub s_want_extra_isize: u16,
    pub s_flags: u32,
    pub s_raid_stride: u16,
    pub s_mmp_update_interval: u16,
    pub s_mmp_block: u64,
    pub s_raid_stripe_width: u32,
    pub s_log_groups_per_flex: u8,
    pub s_checksum_type: u8,
    pub s_encryption_level: u8,
    pub s_reserved_pad: u8,
    pub s_kbytes_written: u64,
    pub s_snapshot_inum: u32,
    pub s_snapshot_id: u32,
    pub s_snapshot_r_blocks_count: u64,
    pub s_snapshot_list: u32,
    pub s_error_count: u32,
    pub s_first_error_time: u32,
    pub s_first_error_ino: u32,
    pub s_first_error_block: u64,
    pub s_first_error_func: [u8; 32],
    pub s_first_error_line: u32,
    pub s_last_error_time: u32,
    pub s_last_error_ino: u32,
    pub s_last_error_line: u32,
    pub s_last_error_block: u64,
    pub s_last_error_func: [u8; 32],
    pub s_mount_opts: [u8; 64],
    pub s_usr_quota_inum: u32,
    pub s_grp_quota_inum: u32,
    pub s_overhead_clusters: u32,
    pub s_backup_bgs: [u32; 2],
    pub s_encrypt_algos: [u8; 4],
    pub s_encrypt_pw_salt: [u8; 16],
    pub s_lpf_ino: u32,
    pub s_prj_quota_inum: u32,
    pub s_checksum_seed: u32,
    pub s_wtime_hi: u8,
    pub s_mtime_hi: u8,
    pub s_mkfs_time_hi: u8,
    pub s_lastcheck_hi: u8,
    pub s_first_error_time_hi: u8,
    pub s_last_error_time_hi: u8,
    pub s_first_error_errcode: u8,
    pub s_last_error_errcode: u8,
    pub s_encoding: u16,
    pub s_encoding_flags: u16,
    pub s_orphan_file_inum: u32,
    pub s_reserved: [u32; 94],
    pub s_checksum: u32,
}

/// `struct ext2_inode_large` (160 bytes). The first 128 bytes are `struct ext2_inode`; the library
/// functions taking `struct ext2_inode *` accept a pointer to this struct.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ext2_inode_large {
    pub i_mode: u16,
    pub i_uid: u16,
    pub i_size: u32,
    pub i_atime: u32,
    pub i_ctime: u32,
    pub i_mtime: u32,
    pub i_dtime: u32,
    pub i_gid: u16,
    pub i_links_count: u16,
    pub i_blocks: u32,
    pub i_flags: u32,
    pub l_i_version: u32,
    pub i_block: [u32; 15],
    pub i_generation: u32,
    pub i_file_acl: u32,
    pub i_size_high: u32,
    pub i_faddr: u32,
    pub l_i_blocks_hi: u16,
    pub l_i_file_acl_high: u16,
    pub l_i_uid_high: u16,
    pub l_i_gid_high: u16,
    pub l_i_checksum_lo: u16,
    pub l_i_reserved: u16,
    pub i_extra_isize: u16,
    pub i_checksum_hi: u16,
    pub i_ctime_extra: u32,
    pub i_mtime_extra: u32,
    pub i_atime_extra: u32,
    pub i_crtime: u32,
    pub i_crtime_extra: u32,
    pub i_version_hi: u32,
    pub i_projid: u32,
}

/// `struct ext2_dir_entry`: only the header; the name follows in the directory block.
#[repr(C)]
pub struct ext2_dir_entry {
    pub inode: u32,
    pub rec_len: u16,
    /// Low 8 bits: name length; high 8 bits: file type (with the filetype feature).
    pub name_len: u16,
    pub name: [c_char; 255],
}

pub type DirIterFn = unsafe extern "C" fn(
    dir: ext2_ino_t,
    entry: c_int,
    dirent: *mut ext2_dir_entry,
    offset: c_int,
    blocksize: c_int,
    buf: *mut c_char,
    private: *mut c_void,
) -> c_int;

// libext2fs.so.2 and libcom_err.so.2 are linked by their full sonames (`+verbatim` makes rustc pass
// `-l:libext2fs.so.2` to the linker), so no unversioned `libext2fs.so` symlink — that is, no
// e2fsprogs -dev package — is needed to build.
#[link(name = "libext2fs.so.2", kind = "dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    pub fn ext2fs_get_library_version(ver: *mut *const c_char, date: *mut *const c_char) -> c_int;
    pub fn initialize_ext2_error_table();
    pub fn ext2fs_open2(
        name: *const c_char,
        io_options: *const c_char,
        flags: c_int,
        superblock: c_int,
        block_size: c_uint,
        manager: io_manager,
        ret_fs: *mut ext2_filsys,
    ) -> errcode_t;
    pub fn ext2fs_close2(fs: ext2_filsys, flags: c_int) -> errcode_t;
    pub fn ext2fs_free(fs: ext2_filsys);
    pub fn ext2fs_flush2(fs: ext2_filsys, flags: c_int) -> errcode_t;
    pub fn ext2fs_read_bitmaps(fs: ext2_filsys) -> errcode_t;
    pub fn ext2fs_bg_flags_clear(fs: ext2_filsys, group: dgrp_t, bg_flags: u16);
    pub fn ext2fs_group_desc_csum_set(fs: ext2_filsys, group: dgrp_t);
    pub fn ext2fs_lookup(
        fs: ext2_filsys,
        dir: ext2_ino_t,
        name: *const c_char,
        namelen: c_int,
        buf: *mut c_char,
        inode: *mut ext2_ino_t,
    ) -> errcode_t;
    pub fn ext2fs_read_inode_full(
        fs: ext2_filsys,
        ino: ext2_ino_t,
        inode: *mut ext2_inode_large,
        bufsize: c_int,
    ) -> errcode_t;
    pub fn ext2fs_write_inode_full(
        fs: ext2_filsys,
        ino: ext2_ino_t,
        inode: *mut ext2_inode_large,
        bufsize: c_int,
    ) -> errcode_t;
    pub fn ext2fs_write_new_inode(
        fs: ext2_filsys,
        ino: ext2_ino_t,
        inode: *mut ext2_inode_large,
    ) -> errcode_t;
    pub fn ext2fs_new_inode(
        fs: ext2_filsys,
        dir: ext2_ino_t,
        mode: c_int,
        map: *mut c_void,
        ret: *mut ext2_ino_t,
    ) -> errcode_t;
    pub fn ext2fs_inode_alloc_stats2(fs: ext2_filsys, ino: ext2_ino_t, inuse: c_int, isdir: c_int);
    pub fn ext2fs_link(
        fs: ext2_filsys,
        dir: ext2_ino_t,
        name: *const c_char,
        ino: ext2_ino_t,
        flags: c_int,
    ) -> errcode_t;
    pub fn ext2fs_unlink(
        fs: ext2_filsys,
        dir: ext2_ino_t,
        name: *const c_char,
        ino: ext2_ino_t,
        flags: c_int,
    ) -> errcode_t;
    pub fn ext2fs_expand_dir(fs: ext2_filsys, dir: ext2_ino_t) -> errcode_t;
    pub fn ext2fs_mkdir(
        fs: ext2_filsys,
        parent: ext2_ino_t,
        inum: ext2_ino_t,
        name: *const c_char,
    ) -> errcode_t;
    pub fn ext2fs_symlink(
        fs: ext2_filsys,
        parent: ext2_ino_t,
        ino: ext2_ino_t,
        name: *const c_char,
        target: *const c_char,
    ) -> errcode_t;
    pub fn ext2fs_file_open2(
        fs: ext2_filsys,
        ino: ext2_ino_t,
        inode: *mut ext2_inode_large,
        flags: c_int,
        ret: *mut ext2_file_t,
    ) -> errcode_t;
    pub fn ext2fs_file_read(
        file: ext2_file_t,
        buf: *mut c_void,
        wanted: c_uint,
        got: *mut c_uint,
    ) -> errcode_t;
    pub fn ext2fs_file_write(
        file: ext2_file_t,
        buf: *const c_void,
        nbytes: c_uint,
        written: *mut c_uint,
    ) -> errcode_t;
    pub fn ext2fs_file_llseek(
        file: ext2_file_t,
        offset: u64,
        whence: c_int,
        ret_pos: *mut u64,
    ) -> errcode_t;
    pub fn ext2fs_file_set_size2(file: ext2_file_t, size: u64) -> errcode_t;
    pub fn ext2fs_file_close(file: ext2_file_t) -> errcode_t;
    pub fn ext2fs_punch(
        fs: ext2_filsys,
        ino: ext2_ino_t,
        inode: *mut ext2_inode_large,
        block_buf: *mut c_char,
        start: blk64_t,
        end: blk64_t,
    ) -> errcode_t;
    pub fn ext2fs_inode_has_valid_blocks2(fs: ext2_filsys, inode: *mut ext2_inode_large) -> c_int;
    pub fn ext2fs_dir_iterate2(
        fs: ext2_filsys,
        dir: ext2_ino_t,
        flags: c_int,
        block_buf: *mut c_char,
        func: Option<DirIterFn>,
        private: *mut c_void,
    ) -> errcode_t;
    pub fn ext2fs_extent_open2(
        fs: ext2_filsys,
        ino: ext2_ino_t,
        inode: *mut ext2_inode_large,
        handle: *mut ext2_extent_handle_t,
    ) -> errcode_t;
    pub fn ext2fs_extent_free(handle: ext2_extent_handle_t);
    pub fn ext2fs_fallocate(
        fs: ext2_filsys,
        flags: c_int,
        ino: ext2_ino_t,
        inode: *mut ext2_inode_large,
        goal: blk64_t,
        start: blk64_t,
        len: blk64_t,
    ) -> errcode_t;
    pub fn ext2fs_free_ext_attr(
        fs: ext2_filsys,
        ino: ext2_ino_t,
        inode: *mut ext2_inode_large,
    ) -> errcode_t;
    pub fn ext2fs_inline_data_size(fs: ext2_filsys, ino: ext2_ino_t, size: *mut usize)
    -> errcode_t;
    pub fn ext2fs_inline_data_get(
        fs: ext2_filsys,
        ino: ext2_ino_t,
        inode: *mut ext2_inode_large,
        buf: *mut c_void,
        size: *mut usize,
    ) -> errcode_t;
    pub fn ext2fs_superblock_csum_set(fs: ext2_filsys, sb: *mut ext2_super_block) -> errcode_t;
}

#[link(name = "libcom_err.so.2", kind = "dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    pub fn error_message(code: errcode_t) -> *const c_char;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Numbers printed by a C program compiled against e2fsprogs 1.47.0's headers
    /// (`printf("%zu", offsetof(struct struct_ext2_filsys, now))` and friends).
    #[test]
    fn layouts_match_libext2fs_1_47_0_headers() {
        assert_eq!(size_of::<struct_ext2_filsys>(), 368);
        assert_eq!(offset_of!(struct_ext2_filsys, io), 8);
        assert_eq!(offset_of!(struct_ext2_filsys, flags), 16);
        assert_eq!(offset_of!(struct_ext2_filsys, super_), 32);
        assert_eq!(offset_of!(struct_ext2_filsys, blocksize), 40);
        assert_eq!(offset_of!(struct_ext2_filsys, group_desc_count), 48);
        assert_eq!(offset_of!(struct_ext2_filsys, umask), 176);
        assert_eq!(offset_of!(struct_ext2_filsys, now), 184);
        assert_eq!(offset_of!(struct_ext2_filsys, cluster_ratio_bits), 192);
        assert_eq!(offset_of!(struct_ext2_filsys, priv_data), 224);
        assert_eq!(offset_of!(struct_ext2_filsys, mmp_fd), 288);
        assert_eq!(offset_of!(struct_ext2_filsys, csum_seed), 312);
        assert_eq!(offset_of!(struct_ext2_filsys, encoding), 360);
        assert_eq!(size_of::<struct_io_channel>(), 192);
        assert_eq!(offset_of!(struct_io_channel, block_size), 24);
        assert_eq!(offset_of!(struct_io_channel, refcount), 48);
        assert_eq!(offset_of!(struct_io_channel, private_data), 168);
        assert_eq!(offset_of!(struct_io_channel, app_data), 176);
        assert_eq!(offset_of!(struct_io_channel, align), 184);
        assert_eq!(size_of::<struct_io_manager>(), 240);
        assert_eq!(offset_of!(struct_io_manager, read_blk64), 88);
        assert_eq!(offset_of!(struct_io_manager, zeroout), 120);
        assert_eq!(offset_of!(struct_io_manager, reserved), 128);
        assert_eq!(size_of::<struct_io_stats>(), 24);
        assert_eq!(size_of::<ext2_super_block>(), 1024);
        assert_eq!(offset_of!(ext2_super_block, s_mmp_block), 360);
        assert_eq!(offset_of!(ext2_super_block, s_kbytes_written), 376);
        assert_eq!(offset_of!(ext2_super_block, s_wtime_hi), 628);
        assert_eq!(offset_of!(ext2_super_block, s_checksum), 1020);
        assert_eq!(size_of::<ext2_inode_large>(), 160);
        assert_eq!(offset_of!(ext2_inode_large, l_i_blocks_hi), 116);
        assert_eq!(offset_of!(ext2_inode_large, i_crtime), 144);
        assert_eq!(offset_of!(ext2_inode_large, i_projid), 156);
        assert_eq!(size_of::<ext2_dir_entry>(), 264);
    }
}
