//! Inodes and lookup: reading and writing inodes, their times and owners, and resolving guest
//! paths (symlinks followed inside the guest).

use std::collections::VecDeque;
use std::ffi::{c_int, c_uint};
use std::io::Write;
use std::ptr;

use super::{
    FileKind, Filesystem, IO_CHUNK, MAX_SYMLINKS, Metadata, S_IFDIR, S_IFLNK, S_IFMT, decode_time,
    encode_time, lib_error,
};
use crate::error::{Error, Op, Result};
use crate::ffi::{self, ext2_ino_t, ext2_inode_large};
use crate::path::{GuestPath, components};

impl Filesystem<'_> {
    pub(super) fn read_inode(
        &self,
        op: Op,
        path: &GuestPath,
        ino: ext2_ino_t,
    ) -> Result<ext2_inode_large> {
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

    pub(super) fn write_inode(
        &self,
        op: Op,
        path: &GuestPath,
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
    pub(super) fn has_extra(&self, inode: &ext2_inode_large, end: usize) -> bool {
        self.inode_size() > 128 && 128 + usize::from(inode.i_extra_isize) >= end
    }

    pub(super) fn metadata(&self, ino: ext2_ino_t, i: &ext2_inode_large) -> Metadata {
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

    pub(super) fn set_atime(&self, i: &mut ext2_inode_large, t: i64) {
        let (lo, ex) = encode_time(t);
        i.i_atime = lo;
        if self.has_extra(i, 144) {
            i.i_atime_extra = ex;
        }
    }
    pub(super) fn set_mtime(&self, i: &mut ext2_inode_large, t: i64) {
        let (lo, ex) = encode_time(t);
        i.i_mtime = lo;
        if self.has_extra(i, 140) {
            i.i_mtime_extra = ex;
        }
    }
    pub(super) fn set_ctime(&self, i: &mut ext2_inode_large, t: i64) {
        let (lo, ex) = encode_time(t);
        i.i_ctime = lo;
        if self.has_extra(i, 136) {
            i.i_ctime_extra = ex;
        }
    }
    pub(super) fn set_crtime(&self, i: &mut ext2_inode_large, t: i64) {
        if self.has_extra(i, 152) {
            let (lo, ex) = encode_time(t);
            i.i_crtime = lo;
            i.i_crtime_extra = ex;
        }
    }

    pub(super) fn set_owner_fields(i: &mut ext2_inode_large, uid: u32, gid: u32) {
        i.i_uid = uid as u16;
        i.l_i_uid_high = (uid >> 16) as u16;
        i.i_gid = gid as u16;
        i.l_i_gid_high = (gid >> 16) as u16;
    }

    /// Look `name` up in directory `dir`; `None` when absent.
    pub(super) fn lookup(
        &self,
        op: Op,
        path: &GuestPath,
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
    pub(super) fn resolve_components(
        &self,
        op: Op,
        path: &GuestPath,
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
                    path: path.to_string(),
                });
            }
            let Some(child) = self.lookup(op, path, cur, &c)? else {
                return Err(Error::NotFound {
                    op,
                    path: path.to_string(),
                });
            };
            let is_last = queue.is_empty();
            let child_inode = self.read_inode(op, path, child)?;
            if child_inode.i_mode & S_IFMT == S_IFLNK && (!is_last || follow_last) {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(Error::TooManySymlinks {
                        op,
                        path: path.to_string(),
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

    pub(super) fn resolve(
        &self,
        op: Op,
        path: &GuestPath,
        follow_last: bool,
    ) -> Result<ext2_ino_t> {
        let comps = components(op, path)?;
        self.resolve_components(op, path, &comps, follow_last)
    }

    /// The directory holding the last component of `path` (symlinks resolved) and that name.
    pub(super) fn resolve_parent<'p>(
        &self,
        op: Op,
        path: &'p GuestPath,
    ) -> Result<(ext2_ino_t, &'p [u8])> {
        let comps = components(op, path)?;
        let Some((name, parent)) = comps.split_last() else {
            return Err(Error::InvalidPath {
                op,
                path: path.to_string(),
                reason: "needs a name (not /)",
            });
        };
        let dir = self.resolve_components(op, path, parent, true)?;
        let inode = self.read_inode(op, path, dir)?;
        if inode.i_mode & S_IFMT != S_IFDIR {
            return Err(Error::NotADirectory {
                op,
                path: path.to_string(),
            });
        }
        Ok((dir, name))
    }

    pub(super) fn link_target(
        &self,
        op: Op,
        path: &GuestPath,
        ino: ext2_ino_t,
        inode: &ext2_inode_large,
    ) -> Result<Vec<u8>> {
        let size = (u64::from(inode.i_size) | (u64::from(inode.i_size_high) << 32)) as usize;
        if size > 65536 {
            return Err(Error::Unsupported {
                op,
                path: path.to_string(),
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

    pub(super) fn read_ino_into(
        &self,
        op: Op,
        path: &GuestPath,
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
                    path: path.to_string(),
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

    pub(super) fn open_file(
        &self,
        op: Op,
        path: &GuestPath,
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

    pub(super) fn close_file(
        &self,
        op: Op,
        path: &GuestPath,
        file: ffi::ext2_file_t,
    ) -> Result<()> {
        // SAFETY: `file` came from ext2fs_file_open2 and is closed exactly once (here).
        let code = unsafe { ffi::ext2fs_file_close(file) };
        self.check(op, path, code)
    }
}
