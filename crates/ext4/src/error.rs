//! Errors of the ext4 layer: what was being done, to which path, and why.

use std::ffi::CStr;
use std::fmt;

use crate::ffi;

/// The operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Chmod,
    Chown,
    Close,
    Mkdir,
    Open,
    Read,
    ReadDir,
    ReadLink,
    Remove,
    RemoveAll,
    SetTimes,
    Stat,
    Symlink,
    Truncate,
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

/// Why a filesystem was refused before anything was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No ext2/3/4 superblock magic at +1024.
    NotExt { magic: u16 },
    /// The journal must be replayed first (`needs_recovery`); a kernel mount or `e2fsck` does that.
    NeedsRecovery,
    /// Orphan inodes are waiting to be processed (`orphan_present` or a non-empty orphan list).
    OrphansPresent,
    /// The superblock records filesystem errors (`s_state` has the error bit).
    ErrorState { state: u16, error_count: u32 },
    /// The filesystem was not cleanly unmounted (`s_state` lacks the valid bit).
    NotClean { state: u16 },
    /// Features libext2fs 1.47 cannot handle (or kiln does not write).
    UnsupportedFeatures {
        kind: &'static str,
        bits: u32,
        names: Vec<String>,
    },
    /// The installed libext2fs is not a version whose structure layout we know.
    LibraryVersion { found: String },
    /// A superblock field is outside what mke2fs writes and libext2fs can safely read.
    BadSuperblock {
        field: &'static str,
        value: u64,
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
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libext2fs returned an error code.
    #[error("{op} {path} on {device}: {message} (errcode {code}){}", io_suffix(.io))]
    Lib {
        op: Op,
        device: String,
        path: String,
        code: i64,
        message: String,
        /// The block device's own error behind a short read/write, when there was one.
        io: Option<Box<kiln_blockdev::Error>>,
    },
    /// Opening was refused; nothing was written.
    #[error("{device}: refusing to open {mode}: {reason}")]
    Refused {
        device: String,
        mode: &'static str,
        reason: Refusal,
    },
    /// A path is not absolute, contains `..`, a NUL byte or an over-long component.
    #[error("{op} {path}: invalid guest path: {reason}")]
    InvalidPath {
        op: Op,
        path: String,
        reason: &'static str,
    },
    #[error("{op} {path}: no such file or directory")]
    NotFound { op: Op, path: String },
    #[error("{op} {path}: not a directory")]
    NotADirectory { op: Op, path: String },
    #[error("{op} {path}: is a directory")]
    IsADirectory { op: Op, path: String },
    #[error("{op} {path}: not a regular file")]
    NotAFile { op: Op, path: String },
    #[error("{op} {path}: not a symbolic link")]
    NotASymlink { op: Op, path: String },
    #[error("{op} {path}: already exists")]
    AlreadyExists { op: Op, path: String },
    #[error("{op} {path}: more than {max} symbolic links while resolving inside the guest")]
    TooManySymlinks { op: Op, path: String, max: u32 },
    #[error("{op} {path}: the filesystem was opened read-only")]
    ReadOnly { op: Op, path: String },
    #[error("{op} {path}: {what}")]
    Unsupported { op: Op, path: String, what: String },
    /// Reading the caller's data source failed.
    #[error("{op} {path}: reading the source failed")]
    Source {
        op: Op,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Writing to the caller's sink failed.
    #[error("{op} {path}: writing the output failed")]
    Sink {
        op: Op,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Reading the superblock ourselves (before libext2fs) failed.
    #[error("{device}: reading the superblock failed")]
    Superblock {
        device: String,
        #[source]
        source: kiln_blockdev::Error,
    },
    /// What libext2fs handed back does not look like the 1.47 structures we declared.
    #[error("{device}: libext2fs structure layout check failed: {what}")]
    Layout { device: String, what: String },
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
