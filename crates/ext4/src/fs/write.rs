//! Writing: files, directories, symlinks, removal, truncation and attribute changes.

use std::ffi::{CString, c_int, c_uint};
use std::io::Read;
use std::ptr;

use super::{
    Filesystem, IO_CHUNK, NewDir, NewFile, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, Times, encode_time,
};
use crate::error::{Error, Op, Result};
use crate::ffi::{self, ext2_ino_t, ext2_inode_large};
use crate::path::{GuestPath, components};

impl Filesystem<'_> {
    fn require_writable(&self, op: Op, path: &GuestPath) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::ReadOnly {
                op,
                path: path.to_string(),
            })
        }
    }

    /// Link `ino` as `name` in `dir`, growing the directory when its blocks are full.
    fn add_link(
        &self,
        op: Op,
        path: &GuestPath,
        dir: ext2_ino_t,
        name: &[u8],
        ino: ext2_ino_t,
        ftype: c_int,
    ) -> Result<()> {
        let cname = CString::new(name).map_err(|_| Error::InvalidPath {
            op,
            path: path.to_string(),
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
            path: path.to_string(),
            what: "directory still full after expanding it".into(),
        })
    }

    fn remove_link(&self, op: Op, path: &GuestPath, dir: ext2_ino_t, name: &[u8]) -> Result<()> {
        let cname = CString::new(name).map_err(|_| Error::InvalidPath {
            op,
            path: path.to_string(),
            reason: "contains a NUL byte",
        })?;
        // SAFETY: live handle; NUL-terminated name; ino 0 = remove whatever entry has this name.
        let code = unsafe { ffi::ext2fs_unlink(self.raw(), dir, cname.as_ptr(), 0, 0) };
        self.check(op, path, code)
    }

    /// mtime and ctime of a directory whose entries changed; `nlink_delta` adjusts its link count.
    fn touch_dir(&self, op: Op, path: &GuestPath, dir: ext2_ino_t, nlink_delta: i32) -> Result<()> {
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
    pub fn write_file(
        &mut self,
        path: impl AsRef<GuestPath>,
        src: &mut dyn Read,
        attrs: NewFile,
    ) -> Result<()> {
        let path = path.as_ref();
        self.write_impl(path, src, attrs, None)
    }

    /// `size_hint`: the exact content length when known; the blocks are then allocated in one
    /// go (contiguous extents) before the data is written.
    fn write_impl(
        &mut self,
        path: &GuestPath,
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
                            path: path.to_string(),
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
            // file, updating `inode` (extent root in i_block, i_blocks); every allocated block is
            // then written below.
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
            // Given an inode, ext2fs_fallocate leaves writing it back to the caller (it writes
            // only an inode it read itself; fuse2fs writes its copy after the call). Its extent
            // handle writes `inode` only when the root node in i_block changes: once the tree has
            // a leaf block (more than 4 extents), the i_blocks of every later extent were lost.
            // Written even on failure: the extents already inserted are in the tree and bitmaps.
            let written = self.write_inode(op, path, ino, &mut inode);
            self.check(op, path, code)?;
            written?;
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
    pub fn write(
        &mut self,
        path: impl AsRef<GuestPath>,
        data: &[u8],
        attrs: NewFile,
    ) -> Result<()> {
        let path = path.as_ref();
        self.write_impl(path, &mut &data[..], attrs, Some(data.len() as u64))
    }

    fn new_inode(
        &self,
        op: Op,
        path: &GuestPath,
        dir: ext2_ino_t,
        mode: u16,
    ) -> Result<ext2_ino_t> {
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
    fn put(&self, op: Op, path: &GuestPath, file: ffi::ext2_file_t, bytes: &[u8]) -> Result<()> {
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
                    path: path.to_string(),
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
        path: &GuestPath,
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
                            path: path.to_string(),
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
    fn drop_link(&self, op: Op, path: &GuestPath, ino: ext2_ino_t) -> Result<()> {
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
    pub fn create_dir_all(&mut self, path: impl AsRef<GuestPath>, attrs: NewDir) -> Result<()> {
        let path = path.as_ref();
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
                            path: path.to_string(),
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
        path: &GuestPath,
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
        self.stamp_created(op, path, ino, Some(mode), attrs.uid, attrs.gid)?;
        self.touch_dir(op, path, parent, 0)?;
        Ok(ino)
    }

    /// Finish an inode libext2fs has just created: its owner, `mode` when given, and every time
    /// set to the open time.
    fn stamp_created(
        &self,
        op: Op,
        path: &GuestPath,
        ino: ext2_ino_t,
        mode: Option<u16>,
        uid: u32,
        gid: u32,
    ) -> Result<()> {
        let mut inode = self.read_inode(op, path, ino)?;
        if let Some(mode) = mode {
            inode.i_mode = mode;
        }
        Self::set_owner_fields(&mut inode, uid, gid);
        self.set_atime(&mut inode, self.time);
        self.set_mtime(&mut inode, self.time);
        self.set_ctime(&mut inode, self.time);
        self.set_crtime(&mut inode, self.time);
        self.write_inode(op, path, ino, &mut inode)
    }

    /// Create a symlink at `path` pointing to `target` (stored as given; resolved only inside the
    /// guest). Fast (in-inode) for targets under 60 bytes, a data block otherwise.
    pub fn symlink(
        &mut self,
        target: impl AsRef<[u8]>,
        path: impl AsRef<GuestPath>,
        uid: u32,
        gid: u32,
    ) -> Result<()> {
        let (target, path) = (target.as_ref(), path.as_ref());
        let op = Op::Symlink;
        self.require_writable(op, path)?;
        let bs = self.info().block_size as usize;
        if target.is_empty() || target.len() >= bs || target.contains(&0) {
            return Err(Error::Unsupported {
                op,
                path: path.to_string(),
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
                path: path.to_string(),
            });
        }
        let ino = self.new_inode(op, path, dir, S_IFLNK | 0o777)?;
        let ctarget = CString::new(target).map_err(|_| Error::InvalidPath {
            op,
            path: path.to_string(),
            reason: "NUL in target",
        })?;
        // SAFETY: live handle; NULL name = create without linking (we link below); the target is
        // NUL-terminated and shorter than a block.
        let code =
            unsafe { ffi::ext2fs_symlink(self.raw(), dir, ino, ptr::null(), ctarget.as_ptr()) };
        self.check(op, path, code)?;
        self.add_link(op, path, dir, name, ino, ffi::EXT2_FT_SYMLINK)?;
        self.stamp_created(op, path, ino, None, uid, gid)?;
        self.touch_dir(op, path, dir, 0)
    }

    /// What removing `path` removes: the directory holding it, its name there and its inode (the
    /// final component not followed). Refuses a read-only filesystem and a missing `path`.
    fn removal_target<'p>(
        &self,
        op: Op,
        path: &'p GuestPath,
    ) -> Result<(ext2_ino_t, &'p [u8], ext2_ino_t)> {
        self.require_writable(op, path)?;
        let (dir, name) = self.resolve_parent(op, path)?;
        let Some(ino) = self.lookup(op, path, dir, name)? else {
            return Err(Error::NotFound {
                op,
                path: path.to_string(),
            });
        };
        Ok((dir, name, ino))
    }

    /// Remove a file, symlink or other non-directory (`unlink`).
    pub fn remove_file(&mut self, path: impl AsRef<GuestPath>) -> Result<()> {
        let path = path.as_ref();
        let op = Op::Remove;
        let (dir, name, ino) = self.removal_target(op, path)?;
        if self.read_inode(op, path, ino)?.i_mode & S_IFMT == S_IFDIR {
            return Err(Error::IsADirectory {
                op,
                path: path.to_string(),
            });
        }
        self.remove_link(op, path, dir, name)?;
        self.drop_link(op, path, ino)?;
        self.touch_dir(op, path, dir, 0)
    }

    /// Remove `path` and, for a directory, everything below it (`rm -r`; a final symlink is
    /// removed, not followed). Refuses `/`.
    pub fn remove_all(&mut self, path: impl AsRef<GuestPath>) -> Result<()> {
        let path = path.as_ref();
        let op = Op::RemoveAll;
        let (dir, name, ino) = self.removal_target(op, path)?;
        let is_dir = self.read_inode(op, path, ino)?.i_mode & S_IFMT == S_IFDIR;
        if is_dir {
            self.empty_dir(op, path, ino, 0)?;
        }
        self.remove_link(op, path, dir, name)?;
        self.drop_link(op, path, ino)?;
        self.touch_dir(op, path, dir, if is_dir { -1 } else { 0 })
    }

    fn empty_dir(&self, op: Op, path: &GuestPath, dir: ext2_ino_t, depth: u32) -> Result<()> {
        if depth > 4096 {
            return Err(Error::Unsupported {
                op,
                path: path.to_string(),
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
    pub fn truncate(&mut self, path: impl AsRef<GuestPath>, size: u64) -> Result<()> {
        let path = path.as_ref();
        let op = Op::Truncate;
        self.require_writable(op, path)?;
        let ino = self.resolve(op, path, true)?;
        if self.read_inode(op, path, ino)?.i_mode & S_IFMT != S_IFREG {
            return Err(Error::NotAFile {
                op,
                path: path.to_string(),
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
        path: &GuestPath,
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
    pub fn set_permissions(&mut self, path: impl AsRef<GuestPath>, perm: u16) -> Result<()> {
        let path = path.as_ref();
        self.modify(Op::Chmod, path, true, |fs, i| {
            i.i_mode = (i.i_mode & S_IFMT) | (perm & 0o7777);
            fs.set_ctime(i, fs.time);
        })
    }

    /// Set the owner of `path`; `follow` = false changes a symlink itself (`lchown`).
    pub fn set_owner(
        &mut self,
        path: impl AsRef<GuestPath>,
        uid: u32,
        gid: u32,
        follow: bool,
    ) -> Result<()> {
        let path = path.as_ref();
        self.modify(Op::Chown, path, follow, |fs, i| {
            Self::set_owner_fields(i, uid, gid);
            fs.set_ctime(i, fs.time);
        })
    }

    /// Set times of `path`; `follow` = false changes a symlink itself. ctime becomes
    /// `times.ctime` or the open time.
    pub fn set_times(
        &mut self,
        path: impl AsRef<GuestPath>,
        times: Times,
        follow: bool,
    ) -> Result<()> {
        let path = path.as_ref();
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
