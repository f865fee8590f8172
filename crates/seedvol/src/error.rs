//! The crate's error type.

use std::io;

/// Everything that can go wrong while building a [`Tree`](crate::Tree) or writing an image.
///
/// Each variant names the failing operation and carries the offending path, name or value.
/// Variants are kept sorted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name equals the 8.3 alias FAT generated for a sibling's long name (`longfi~1.txt` next
    /// to `longfilename.txt`): FAT lookups would find the sibling.
    #[error("writing vfat: {path:?} is the 8.3 short name of {other:?}")]
    AliasCollision {
        /// The path whose name is taken.
        path: String,
        /// The sibling whose short name it is.
        other: String,
    },
    /// Two names in one directory differ only in case, which FAT cannot hold apart.
    #[error("writing vfat: {path:?} and {other:?} differ only in case")]
    CaseCollision {
        /// One of the paths.
        path: String,
        /// The other path.
        other: String,
    },
    /// Two entries were added at the same path.
    #[error("adding {path:?}: an entry already exists at this path")]
    DuplicatePath {
        /// The path given to `add_file`/`add_dir`.
        path: String,
    },
    /// The epoch cannot be represented in the image's date fields.
    #[error("encoding dates: epoch {epoch} is outside the range this format can record ({format})")]
    EpochOutOfRange {
        /// The `SOURCE_DATE_EPOCH` given.
        epoch: u64,
        /// Which format's limit was hit.
        format: &'static str,
    },
    /// A file is larger than one ISO 9660 extent (4 GiB - 1) or than a FAT file can be.
    #[error("writing {path:?}: file of {size} bytes exceeds the {max}-byte limit")]
    FileTooLarge {
        /// Path of the file in the tree.
        path: String,
        /// Its size in bytes.
        size: u64,
        /// The largest size the format accepts.
        max: u64,
    },
    /// The finished image would not fit the format's address space.
    #[error("laying out image: {what} ({value}) exceeds the format's limit of {max}")]
    ImageTooLarge {
        /// What overflowed (sectors, directories, ...).
        what: &'static str,
        /// The value that was needed.
        value: u64,
        /// The limit.
        max: u64,
    },
    /// A file mode carries a file type that does not match the entry kind.
    #[error("adding {path:?}: mode {mode:#o} is not valid for a {kind}")]
    InvalidMode {
        /// The path given.
        path: String,
        /// The mode given.
        mode: u32,
        /// "file" or "directory".
        kind: &'static str,
    },
    /// A path component cannot be recorded (empty, `.`/`..`, NUL, non-UCS-2, Joliet-forbidden).
    #[error("{op} {path:?}: invalid name {name:?}: {reason}")]
    InvalidName {
        /// What was being done ("adding", "writing vfat").
        op: &'static str,
        /// The full path given.
        path: String,
        /// The offending component.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A volume label/identifier cannot be recorded.
    #[error("setting volume id {volume_id:?}: {reason}")]
    InvalidVolumeId {
        /// The volume identifier given.
        volume_id: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// An I/O error while writing the output.
    #[error("{op} failed")]
    Io {
        /// What was being written.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A name is too long for one of the namespaces (Rock Ridge, Joliet, FAT).
    #[error("adding {path:?}: name {name:?} is {len} {unit} long, the {namespace} limit is {max}")]
    NameTooLong {
        /// The full path given.
        path: String,
        /// The offending component.
        name: String,
        /// Its length.
        len: usize,
        /// The namespace's limit.
        max: usize,
        /// "bytes" or "UCS-2 characters".
        unit: &'static str,
        /// Which namespace ("Rock Ridge", "Joliet").
        namespace: &'static str,
    },
    /// A parent component of a path is a file.
    #[error("adding {path:?}: parent {parent:?} is a file, not a directory")]
    NotADirectory {
        /// The path given.
        path: String,
        /// The component that is a file.
        parent: String,
    },
    /// The directory hierarchy is deeper than ISO 9660 allows (8 levels, root included).
    #[error("writing ISO: directory {path:?} is at level {level}, ISO 9660 allows {max}")]
    TooDeep {
        /// The too-deep directory.
        path: String,
        /// Its level (root = 1).
        level: usize,
        /// The limit.
        max: usize,
    },
    /// The FAT library refused an operation.
    #[error("{op} {path:?} in vfat image failed")]
    Vfat {
        /// What was being done ("formatting", "creating file", ...).
        op: &'static str,
        /// The path concerned ("" for the volume).
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Shorthand for results carrying this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Who is at fault: writing the volume is the host's; everything else (names, sizes, modes,
    /// the epoch) is what the caller asked for.
    pub fn kind(&self) -> kiln_blockdev::ErrorKind {
        match self {
            Error::Io { .. } | Error::Vfat { .. } => kiln_blockdev::ErrorKind::Host,
            _ => kiln_blockdev::ErrorKind::Input,
        }
    }
}
