//! Errors of the ext4 layer: what was being done, to which path, and why.

use std::ffi::CStr;
use std::fmt;

use crate::ffi;

/// The operation that failed: which [`crate::Filesystem`] call was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// [`crate::Filesystem::set_permissions`].
    Chmod,
    /// [`crate::Filesystem::set_owner`].
    Chown,
    /// [`crate::Filesystem::close`].
    Close,
    /// [`crate::Filesystem::create_dir_all`].
    Mkdir,
    /// [`crate::Filesystem::open`].
    Open,
    /// [`crate::Filesystem::read`] and [`crate::Filesystem::read_to`].
    Read,
    /// [`crate::Filesystem::read_dir`].
    ReadDir,
    /// [`crate::Filesystem::read_link`].
    ReadLink,
    /// [`crate::Filesystem::remove_file`].
    Remove,
    /// [`crate::Filesystem::remove_all`].
    RemoveAll,
    /// [`crate::Filesystem::set_times`].
    SetTimes,
    /// [`crate::Filesystem::stat`], [`crate::Filesystem::lstat`] and
    /// [`crate::Filesystem::exists`].
    Stat,
    /// [`crate::Filesystem::symlink`].
    Symlink,
    /// [`crate::Filesystem::truncate`].
    Truncate,
    /// [`crate::Filesystem::write`], [`crate::Filesystem::write_file`] and
    /// [`crate::Filesystem::normalize_fresh`].
    Write,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Chmod => "chmod",
            Op::Chown => "chown",
            Op::Close => "close",
            Op::Mkdir => "mkdir",
            Op::Open => "open",
            Op::Read => "read",
            Op::ReadDir => "readdir",
            Op::ReadLink => "readlink",
            Op::Remove => "remove",
            Op::RemoveAll => "remove recursively",
            Op::SetTimes => "set times",
            Op::Stat => "stat",
            Op::Symlink => "symlink",
            Op::Truncate => "truncate",
            Op::Write => "write",
        })
    }
}

/// Why [`crate::Filesystem::open`] refused a filesystem before anything was written (carried by
/// [`Error::Refused`]). Checked in this order: library version, magic, recovery, features,
/// orphans, error state, clean state, superblock bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No ext2/3/4 superblock magic (`s_magic` 0xEF53 at byte 1024 + 0x38): not an ext
    /// filesystem, or the wrong partition.
    NotExt {
        /// The 16-bit little-endian value found there.
        magic: u16,
    },
    /// Opening for writing: the journal must be replayed first (`needs_recovery`); a kernel mount
    /// or `e2fsck` does that.
    NeedsRecovery,
    /// Opening for writing: orphan inodes are waiting to be processed (`orphan_present` or a
    /// non-empty orphan list).
    OrphansPresent,
    /// Opening for writing: the superblock records filesystem errors (`s_state` has the error bit).
    ErrorState {
        /// The superblock's `s_state`.
        state: u16,
        /// The superblock's `s_error_count`.
        error_count: u32,
    },
    /// Opening for writing: the filesystem was not cleanly unmounted (`s_state` lacks the valid
    /// bit).
    NotClean {
        /// The superblock's `s_state`.
        state: u16,
    },
    /// Features libext2fs 1.47 cannot handle: unknown incompat features always; for a
    /// read-write open also unknown ro_compat and compat features, and the features kiln does
    /// not maintain when writing (quota, project, verity, mmp, encrypt, casefold, inline_data,
    /// shared_blocks, readonly).
    UnsupportedFeatures {
        /// Which feature word: `"compat"`, `"incompat"` or `"ro_compat"`.
        kind: &'static str,
        /// The offending bits of that word (`s_feature_compat` / `_incompat` / `_ro_compat`).
        bits: u32,
        /// Their names as e2fsprogs spells them (`FEATURE_I31` style for unnamed bits).
        names: Vec<String>,
    },
    /// The loaded libext2fs is not 1.47.x, whose structure layout the bindings declare.
    LibraryVersion {
        /// The version string the library reports ([`crate::library_version`]).
        found: String,
    },
    /// A superblock field is outside what mke2fs writes and libext2fs can safely read (today:
    /// `s_first_data_block` above 1 with 1 KiB blocks or above 0 otherwise).
    BadSuperblock {
        /// The superblock field name.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The largest value accepted.
        max: u64,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotExt { magic } => write!(f, "not an ext2/3/4 filesystem (superblock magic {magic:#06x})"),
            Refusal::NeedsRecovery => {
                f.write_str("the journal needs recovery (needs_recovery is set): run e2fsck or mount it once first")
            }
            Refusal::OrphansPresent => f.write_str("orphan inodes are pending: run e2fsck first"),
            Refusal::ErrorState { state, error_count } => write!(
                f,
                "the filesystem is marked as having errors (s_state {state:#x}, {error_count} recorded): run e2fsck first"
            ),
            Refusal::NotClean { state } => {
                write!(f, "the filesystem was not cleanly unmounted (s_state {state:#x}): run e2fsck first")
            }
            Refusal::UnsupportedFeatures { kind, bits, names } => {
                write!(f, "unsupported {kind} features {bits:#x} ({})", names.join(", "))
            }
            Refusal::BadSuperblock { field, value, max } => {
                write!(f, "corrupt superblock: {field} is {value} (at most {max}): run e2fsck first")
            }
            Refusal::LibraryVersion { found } => {
                write!(f, "libext2fs {found} is installed; kiln's bindings are for e2fsprogs 1.47.x")
            }
        }
    }
}

/// An ext4-layer error.
///
/// Fields shared by most variants: `op` is the [`crate::Filesystem`] call that failed, `path`
/// the guest path as the caller gave it (for [`Op::Open`] and [`Op::Close`], `/` or the device
/// name) in the escaped form of [`crate::GuestPath`]'s `Display` (`/tmp/bad\xffname`; a UTF-8
/// path without backslashes or control characters reads as it is), `device` the name given to
/// [`crate::Filesystem::open`].
///
/// [`Error::kind`]: [`Error::Lib`] with an `io` error and [`Error::Superblock`] report the block
/// device error's kind; [`Error::Source`], [`Error::Sink`] and [`Error::Layout`]
/// [`kiln_blockdev::ErrorKind::Host`]; [`Error::ReadOnly`]
/// [`kiln_blockdev::ErrorKind::Internal`]; every other variant (the filesystem's contents or the
/// guest path asked for) [`kiln_blockdev::ErrorKind::Input`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libext2fs returned an error code from any call: opening (a corrupt group descriptor,
    /// bad checksums), loading bitmaps, reading or writing inodes, directories and file data
    /// (no free blocks or inodes: `EXT2_ET_BLOCK_ALLOC_FAIL`, `EXT2_ET_INODE_ALLOC_FAIL`),
    /// flushing at close; also [`crate::Filesystem::normalize_fresh`] on a read-only handle
    /// (`EROFS`).
    #[error("{op} {path} on {device}: {message} (errcode {code}){}", io_suffix(.io))]
    Lib {
        /// The call that failed.
        op: Op,
        /// The device name.
        device: String,
        /// The guest path being worked on.
        path: String,
        /// libext2fs's `errcode_t` (an ext2 error-table code or an errno).
        code: i64,
        /// The code decoded by libcom_err's `error_message`.
        message: String,
        /// The block device's own error behind a short read/write, when there was one.
        io: Option<Box<kiln_blockdev::Error>>,
    },
    /// [`crate::Filesystem::open`] refused the filesystem (see [`Refusal`] for each reason);
    /// nothing was written. [`Error::kind`] is [`kiln_blockdev::ErrorKind::Input`], also for
    /// [`Refusal::LibraryVersion`].
    #[error("{device}: refusing to open {mode}: {reason}")]
    Refused {
        /// The device name.
        device: String,
        /// `"read-only"` or `"read-write"`.
        mode: &'static str,
        /// Why.
        reason: Refusal,
    },
    /// A guest path that is not absolute, contains `..`, a NUL byte or a component over 255
    /// bytes (any call taking a path); `/` where a name is needed (writing, removing, creating
    /// a symlink); a symlink target with a NUL byte.
    #[error("{op} {path}: invalid guest path: {reason}")]
    InvalidPath {
        /// The call.
        op: Op,
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A component of the path does not exist (after following symlinks inside the guest), or
    /// the final name is missing for a removal.
    /// [`crate::Filesystem::exists`] turns this into `Ok(false)`.
    #[error("{op} {path}: no such file or directory")]
    NotFound {
        /// The call.
        op: Op,
        /// The path given.
        path: String,
    },
    /// A component that must be a directory is not: a parent on the way to the final name,
    /// the target of [`crate::Filesystem::read_dir`], or an existing non-directory on the way of
    /// [`crate::Filesystem::create_dir_all`].
    #[error("{op} {path}: not a directory")]
    NotADirectory {
        /// The call.
        op: Op,
        /// The path given.
        path: String,
    },
    /// A directory where a non-directory is needed: reading it as a file, writing a file over
    /// it, or [`crate::Filesystem::remove_file`] on it (use
    /// [`crate::Filesystem::remove_all`]).
    #[error("{op} {path}: is a directory")]
    IsADirectory {
        /// The call.
        op: Op,
        /// The path given.
        path: String,
    },
    /// [`crate::Filesystem::read`]/[`crate::Filesystem::read_to`] or
    /// [`crate::Filesystem::truncate`] on something that is neither a regular file nor (for
    /// reads) a directory: a device node, FIFO or socket (symlinks are followed).
    #[error("{op} {path}: not a regular file")]
    NotAFile {
        /// The call.
        op: Op,
        /// The path given.
        path: String,
    },
    /// [`crate::Filesystem::read_link`] on something that is not a symlink.
    #[error("{op} {path}: not a symbolic link")]
    NotASymlink {
        /// The call.
        op: Op,
        /// The path given.
        path: String,
    },
    /// [`crate::Filesystem::symlink`] at a path that already has an entry (symlinks are never
    /// replaced).
    #[error("{op} {path}: already exists")]
    AlreadyExists {
        /// The call.
        op: Op,
        /// The path given.
        path: String,
    },
    /// Resolving the path followed more than 40 symbolic links (Linux's limit): a symlink loop
    /// in the guest.
    #[error("{op} {path}: more than {max} symbolic links while resolving inside the guest")]
    TooManySymlinks {
        /// The call.
        op: Op,
        /// The path given.
        path: String,
        /// The limit (40).
        max: u32,
    },
    /// A modifying call on a filesystem opened read-only, or a read-write
    /// [`crate::Filesystem::open`] of a device that is itself read-only (`path` is then the
    /// device name). [`Error::kind`] is [`kiln_blockdev::ErrorKind::Internal`].
    #[error("{op} {path}: the filesystem was opened read-only")]
    ReadOnly {
        /// The call.
        op: Op,
        /// The path given (or the device name).
        path: String,
    },
    /// Something the filesystem holds, or the call asks for, that kiln does not handle: a
    /// symlink target empty, containing NUL or as long as a block; a symlink over 64 KiB when
    /// reading one; a directory tree deeper than 4096 in [`crate::Filesystem::remove_all`]; a
    /// directory still full after growing it; libext2fs writing 0 bytes.
    #[error("{op} {path}: {what}")]
    Unsupported {
        /// The call.
        op: Op,
        /// The path given.
        path: String,
        /// What, in words.
        what: String,
    },
    /// [`crate::Filesystem::write_file`]: reading the caller's data source failed (other than
    /// `Interrupted`, which is retried). [`Error::kind`] is [`kiln_blockdev::ErrorKind::Host`].
    #[error("{op} {path}: reading the source failed")]
    Source {
        /// The call.
        op: Op,
        /// The guest path being written.
        path: String,
        /// The reader's error.
        #[source]
        source: std::io::Error,
    },
    /// [`crate::Filesystem::read_to`]: writing to the caller's sink failed. [`Error::kind`] is
    /// [`kiln_blockdev::ErrorKind::Host`].
    #[error("{op} {path}: writing the output failed")]
    Sink {
        /// The call.
        op: Op,
        /// The guest path being read.
        path: String,
        /// The writer's error.
        #[source]
        source: std::io::Error,
    },
    /// [`crate::Filesystem::open`]: reading the 1024-byte superblock at byte 1024 (before
    /// libext2fs runs) failed, e.g. a device shorter than 2 KiB.
    #[error("{device}: reading the superblock failed")]
    Superblock {
        /// The device name.
        device: String,
        /// The device error.
        #[source]
        source: kiln_blockdev::Error,
    },
    /// [`crate::Filesystem::open`]: what libext2fs handed back does not look like the 1.47
    /// structures the bindings declare (handle magic, block size, superblock fields or io
    /// manager disagree with kiln's own parse). [`Error::kind`] is
    /// [`kiln_blockdev::ErrorKind::Host`]: the installed library does not match.
    #[error("{device}: libext2fs structure layout check failed: {what}")]
    Layout {
        /// The device name.
        device: String,
        /// Which check failed.
        what: String,
    },
}

impl Error {
    /// Who is at fault: the device's classification when I/O failed underneath; the host for the
    /// caller's own source or sink (or the caller, when the source reported a
    /// [`kiln_blockdev::Cancelled`]) and for a libext2fs whose structures do not match; kiln for a
    /// write through a read-only handle; the filesystem or the guest path asked for otherwise.
    pub fn kind(&self) -> kiln_blockdev::ErrorKind {
        use kiln_blockdev::ErrorKind;
        match self {
            Error::Lib { io: Some(io), .. } => io.kind(),
            Error::Superblock { source, .. } => source.kind(),
            Error::Source { source, .. } if kiln_blockdev::Cancelled::is_in(source) => {
                ErrorKind::Cancelled
            }
            Error::Source { .. } | Error::Sink { .. } | Error::Layout { .. } => ErrorKind::Host,
            Error::ReadOnly { .. } => ErrorKind::Internal,
            _ => ErrorKind::Input,
        }
    }
}

fn io_suffix(io: &Option<Box<kiln_blockdev::Error>>) -> String {
    io.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Decode an errcode_t with libcom_err's `error_message` (ext2 codes and errno values alike).
pub(crate) fn message(code: ffi::errcode_t) -> String {
    crate::init_error_table();
    // SAFETY: error_message accepts any code and returns a pointer to a NUL-terminated string that
    // is either static or in a thread-local buffer valid until the next call on this thread; we
    // copy it out immediately.
    unsafe {
        let p = ffi::error_message(code);
        if p.is_null() {
            format!("unknown error {code}")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}
