//! Reading: stat, file contents, symlink targets and directory listings.

use std::ffi::{c_char, c_int, c_void};
use std::io::Write;
use std::ptr;

use super::{DirEntry, FileKind, Filesystem, Metadata, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use crate::error::{Error, Op, Result};
use crate::ffi::{self, ext2_ino_t};
use crate::path::GuestPath;

impl Filesystem<'_> {
    /// Metadata of `path`, following symlinks (inside the guest).
    pub fn stat(&self, path: impl AsRef<GuestPath>) -> Result<Metadata> {
        let path = path.as_ref();
        let ino = self.resolve(Op::Stat, path, true)?;
        Ok(self.metadata(ino, &self.read_inode(Op::Stat, path, ino)?))
    }

    /// Metadata of `path` itself (a final symlink is not followed).
    pub fn lstat(&self, path: impl AsRef<GuestPath>) -> Result<Metadata> {
        let path = path.as_ref();
        let ino = self.resolve(Op::Stat, path, false)?;
        Ok(self.metadata(ino, &self.read_inode(Op::Stat, path, ino)?))
    }

    /// Whether `path` exists (a dangling final symlink counts as existing).
    pub fn exists(&self, path: impl AsRef<GuestPath>) -> Result<bool> {
        let path = path.as_ref();
        match self.lstat(path) {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The content of a regular file.
    pub fn read(&self, path: impl AsRef<GuestPath>) -> Result<Vec<u8>> {
        let path = path.as_ref();
        let mut out = Vec::new();
        self.read_to(path, &mut out)?;
        Ok(out)
    }

    /// Stream a regular file into `out`; returns the byte count.
    pub fn read_to(&self, path: impl AsRef<GuestPath>, out: &mut dyn Write) -> Result<u64> {
        let path = path.as_ref();
        let ino = self.resolve(Op::Read, path, true)?;
        let inode = self.read_inode(Op::Read, path, ino)?;
        match inode.i_mode & S_IFMT {
            S_IFREG => self.read_ino_into(Op::Read, path, ino, out),
            S_IFDIR => Err(Error::IsADirectory {
                op: Op::Read,
                path: path.to_string(),
            }),
            _ => Err(Error::NotAFile {
                op: Op::Read,
                path: path.to_string(),
            }),
        }
    }

    /// The target of a symlink.
    pub fn read_link(&self, path: impl AsRef<GuestPath>) -> Result<Vec<u8>> {
        let path = path.as_ref();
        let ino = self.resolve(Op::ReadLink, path, false)?;
        let inode = self.read_inode(Op::ReadLink, path, ino)?;
        if inode.i_mode & S_IFMT != S_IFLNK {
            return Err(Error::NotASymlink {
                op: Op::ReadLink,
                path: path.to_string(),
            });
        }
        self.link_target(Op::ReadLink, path, ino, &inode)
    }

    /// The entries of a directory (without `.` and `..`), sorted by name bytes.
    pub fn read_dir(&self, path: impl AsRef<GuestPath>) -> Result<Vec<DirEntry>> {
        let path = path.as_ref();
        let ino = self.resolve(Op::ReadDir, path, true)?;
        self.read_dir_ino(Op::ReadDir, path, ino)
    }

    pub(super) fn read_dir_ino(
        &self,
        op: Op,
        path: &GuestPath,
        ino: ext2_ino_t,
    ) -> Result<Vec<DirEntry>> {
        let inode = self.read_inode(op, path, ino)?;
        if inode.i_mode & S_IFMT != S_IFDIR {
            return Err(Error::NotADirectory {
                op,
                path: path.to_string(),
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
