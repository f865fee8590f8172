//! Offline ext2/3/4 editing for kiln, through the reference library **libext2fs** (e2fsprogs).
//!
//! ```text
//!   Filesystem (safe API: stat, read, readdir, write, mkdir -p, symlink, rm, rm -r, truncate,
//!        │      chmod, chown, utimes — paths resolved inside the guest; paths are bytes,
//!        │      GuestPath / GuestPathBuf, see `path`)
//!        │  ffi.rs: hand-written repr(C) bindings (libext2fs 1.47)
//!        ▼
//!   libext2fs.so.2 ──io_manager (io.rs)──▶ BlockDev (partition window of a qcow2 overlay / raw file)
//! ```
//!
//! ```
//! use kiln_blockdev::FileDev;
//! use kiln_ext4::{FileKind, Filesystem, GuestPath, NewDir, NewFile, OpenOptions};
//!
//! // An empty 16 MiB filesystem in a temporary file. kiln edits filesystems but does not make
//! // them, so this takes `mkfs.ext4` from e2fsprogs (the package that also ships libext2fs).
//! let dir = tempfile::tempdir()?;
//! let img = dir.path().join("root.img");
//! std::fs::File::create(&img)?.set_len(16 << 20)?;
//! let mkfs = std::process::Command::new("mkfs.ext4")
//!     .args(["-q", "-F", "-L", "demo"])
//!     .arg(&img)
//!     .status()?;
//! assert!(mkfs.success());
//!
//! // Edit it: every time written is the one given at open (SOURCE_DATE_EPOCH).
//! let dev = FileDev::open_read_write(&img)?;
//! let mut fs = Filesystem::open(&dev, "root.img", OpenOptions::read_write(1_700_000_000))?;
//! fs.create_dir_all("/etc/kiln", NewDir::default())?;
//! fs.write("/etc/kiln/hello", b"hi\n", NewFile { perm: 0o600, ..NewFile::default() })?;
//! fs.symlink("kiln/hello", "/etc/hello", 0, 0)?;
//! fs.close()?; // flushes bitmaps, group descriptors and superblock; reports every error
//!
//! // Read it back.
//! let fs = Filesystem::open(&dev, "root.img", OpenOptions::read_only())?;
//! assert_eq!(fs.read("/etc/hello")?, b"hi\n"); // the symlink is resolved inside the guest
//! let meta = fs.stat("/etc/kiln/hello")?;
//! assert_eq!((meta.kind, meta.perm, meta.mtime), (FileKind::File, 0o600, 1_700_000_000));
//! // Names are bytes (ext4 does not require UTF-8); paths are built from them exactly.
//! fs.close()?;
//! let mut fs = Filesystem::open(&dev, "root.img", OpenOptions::read_write(1_700_000_000))?;
//! fs.write(GuestPath::new(b"/etc/bad\xffname"), b"", NewFile::default())?;
//! let names: Vec<String> = fs.read_dir("/etc")?.iter().map(|e| e.name_escaped()).collect();
//! assert_eq!(names, [r"bad\xffname", "hello", "kiln"]);
//! let bad = GuestPath::new("/etc").join(&fs.read_dir("/etc")?[0].name);
//! assert_eq!(bad.to_string(), r"/etc/bad\xffname");
//! fs.remove_file(&bad)?;
//! assert_eq!(fs.info().label, "demo");
//! fs.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Linking
//! The bindings link `libext2fs.so.2` and `libcom_err.so.2` **by soname** with rustc's `+verbatim`
//! link modifier (`#[link(name = "libext2fs.so.2", modifiers = "+verbatim")]` → `-l:libext2fs.so.2`),
//! so building needs only the runtime library package (`libext2fs2`, present wherever e2fsprogs
//! is), not the `-dev` package with its unversioned `libext2fs.so` symlink and headers. No build
//! script, no bindgen. The structure layouts were written from e2fsprogs 1.47.0's headers and are
//! checked three ways: unit tests assert `size_of`/`offset_of` against numbers measured with a C
//! program; every open checks the library version (1.47.x) and that fields read through our
//! structs agree with the superblock we parsed ourselves; integration tests compare values read
//! through the FFI with `dumpe2fs -h` / `debugfs`.
//!
//! # Safety
//! `unsafe` is allowed in this crate only (the workspace denies it elsewhere): it is the FFI
//! boundary. Every block carries a `// SAFETY:` comment. The public API is safe: a
//! [`Filesystem`] owns the libext2fs handle; [`Filesystem::close`] consumes it, so it cannot be
//! closed twice or used after close.
//!
//! # Closing and `Drop`
//! libext2fs writes inodes and file data as it goes but keeps bitmaps, group descriptors and the
//! superblock counters in memory until it flushes. [`Filesystem::close`] flushes them, flushes the
//! block device and reports every error. `Drop` (a filesystem that was not closed — an early `?`
//! return or a panic) **releases the handle without flushing and without writing anything**: a
//! writable image dropped that way is incomplete and must be discarded, which is what kiln's
//! pipeline does with its overlay on any error. Flushing in `Drop` would have to swallow errors and
//! would make a half-done edit look finished.
//!
//! # Determinism
//! No time comes from the wall clock. [`OpenOptions::time`] (SOURCE_DATE_EPOCH) is written into
//! every inode kiln creates or changes (atime/mtime/ctime/crtime, dtime of deleted inodes; new
//! inodes get generation 0) and into libext2fs's `fs->now`, which 1.47 uses for the superblock's
//! `s_wtime` instead of `time(NULL)`. The io manager reports no statistics, so `s_kbytes_written`
//! stays as the input had it. Directory listings are sorted by name bytes.
//!
//! # Refusals
//! Before libext2fs sees a device, the superblock is parsed here and the open is refused (nothing
//! written) when a feature is outside what libext2fs 1.47 supports, and, for writing only, when the
//! journal needs recovery, orphans are pending, the error bit is set or the filesystem is not
//! clean (a read-only open reads such a filesystem as it is, like debugfs, and
//! [`FsInfo::unclean`] says why it is not clean), and (for writing,
//! also features kiln does not maintain: quota, project, verity, mmp, encrypt, casefold,
//! inline_data, shared_blocks, readonly).

// The FFI boundary: this crate is the one place in the workspace where `unsafe` is allowed.
#![allow(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod ffi;
mod fs;
mod io;
pub mod path;

pub use error::{Error, Op, Refusal, Result};
pub use fs::{
    DirEntry, FileKind, Filesystem, FsInfo, Metadata, NewDir, NewFile, OpenOptions, Times,
};
pub use path::{GuestPath, GuestPathBuf, ParseGuestPathError};

use std::sync::Once;

static ERROR_TABLE: Once = Once::new();

/// Register libext2fs's error table with libcom_err (once per process) so `error_message` decodes
/// ext2 error codes.
pub(crate) fn init_error_table() {
    // SAFETY: initialize_ext2_error_table only links a static table into com_err's global list;
    // `Once` makes it happen exactly once.
    ERROR_TABLE.call_once(|| unsafe { ffi::initialize_ext2_error_table() });
}

/// The version string of the loaded libext2fs (e.g. `1.47.0`).
pub fn library_version() -> String {
    let mut ver: *const std::ffi::c_char = std::ptr::null();
    let mut date: *const std::ffi::c_char = std::ptr::null();
    // SAFETY: the function stores pointers to static strings into the two out-pointers.
    unsafe {
        ffi::ext2fs_get_library_version(&mut ver, &mut date);
        if ver.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(ver).to_string_lossy().into_owned()
        }
    }
}
