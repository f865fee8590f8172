//! Errors of kiln-vfat: every variant names the operation and the device or path it is about.

use kiln_blockdev::ErrorKind;

/// Everything [`crate::Volume`] fails with. [`Error::kind`] tells whose fault it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device does not hold a FAT12/16/32 filesystem kiln will open: no boot sector
    /// signature, an implausible or inconsistent BIOS parameter block, or a volume larger than
    /// the device. Checked before the FAT driver sees the device. Kind: `Input`.
    #[error("{device}: not a FAT filesystem kiln can open: {reason}")]
    NotFat {
        /// The device name given to [`crate::Volume::open`].
        device: String,
        /// What is wrong, in words.
        reason: String,
    },
    /// The file allocation table is corrupt: a cluster links to a cluster that does not exist,
    /// two chains share a cluster, or a chain loops. Kind: `Input`.
    #[error("{device}: corrupt FAT: {reason}")]
    CorruptFat {
        /// The device name.
        device: String,
        /// What is wrong, in words.
        reason: String,
    },
    /// The volume is marked dirty (not cleanly unmounted, or I/O errors noted): read as it is,
    /// refused for writing (run `fsck.vfat` on it first). Kind: `Input`.
    #[error("{device}: the FAT volume is marked dirty (not cleanly unmounted); refusing to write")]
    Unclean {
        /// The device name.
        device: String,
    },
    /// The epoch given to [`crate::OpenOptions::read_write`] is after what FAT can record
    /// (2107-12-31). Kind: `Input`.
    #[error("epoch {epoch} is after 2107-12-31, the last date FAT records")]
    EpochOutOfRange {
        /// The epoch, in seconds since 1970-01-01 UTC.
        epoch: i64,
    },
    /// A path that is not absolute and normalised, or a name FAT cannot hold. Kind: `Input`.
    #[error("{op} {path:?}: {reason}")]
    BadPath {
        /// What was being done.
        op: &'static str,
        /// The path as given.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The path (or one of its parents) does not exist. Kind: `Input`.
    #[error("{op} {path}: no such file or directory")]
    NotFound {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: String,
    },
    /// A file where a directory is needed (a parent of the path), or a directory where a file is.
    /// Kind: `Input`.
    #[error("{op} {path}: {what}")]
    WrongKind {
        /// What was being done.
        op: &'static str,
        /// The path that has the wrong kind.
        path: String,
        /// `"not a directory"` or `"is a directory"`.
        what: &'static str,
    },
    /// A new name equals the generated 8.3 alias of another entry of its directory (`LONGFI~1.TXT`
    /// of `longfilename.txt`): writing it would open that entry instead. Kind: `Input`.
    #[error("{op} {path}: the name is the 8.3 alias of {other}")]
    AliasCollision {
        /// What was being done.
        op: &'static str,
        /// The path asked for.
        path: String,
        /// The entry whose alias it is.
        other: String,
    },
    /// The data is larger than a FAT file can be (4 GiB - 1). Kind: `Input`.
    #[error("{op} {path}: {size} bytes is more than a FAT file holds (4294967295)")]
    TooLarge {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: String,
        /// The size asked for.
        size: u64,
    },
    /// A write through a volume opened read-only. Kind: `Internal` (the caller's bug).
    #[error("{op} {path}: the volume {device} is open read-only")]
    ReadOnly {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: String,
        /// The device name.
        device: String,
    },
    /// The FAT driver failed (a corrupt directory, a full volume) or the device failed. Kind:
    /// the device error's when the device failed, else `Input`.
    #[error("{op} {path} on {device}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path (empty for the whole volume).
        path: String,
        /// The device name.
        device: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The FAT driver panicked on this volume's contents (a corrupt directory it does not check);
    /// the volume is not used again (later calls fail with this error too, and nothing more is
    /// written). Kind: `Input`.
    #[error("{op} {path} on {device}: the volume is corrupt (the FAT driver gave up)")]
    Corrupt {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: String,
        /// The device name.
        device: String,
    },
}

impl Error {
    /// Who is at fault: the volume's contents and the paths asked for are the caller's input; a
    /// device failure answers with its own kind; a write through a read-only volume is a bug.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { source, .. } => source
                .get_ref()
                .and_then(|e| e.downcast_ref::<kiln_blockdev::Error>())
                .map_or(ErrorKind::Input, kiln_blockdev::Error::kind),
            Error::ReadOnly { .. } => ErrorKind::Internal,
            _ => ErrorKind::Input,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
