//! The crate's error type.

use std::io;

/// Everything that can go wrong while building a [`Tree`](crate::Tree) or writing an image.
///
/// Each variant names the failing operation and carries the offending path, name or value.
/// Variants are kept sorted. [`Error::kind`] is [`kiln_blockdev::ErrorKind::Host`] for
/// [`Error::Io`] and [`Error::Vfat`] and [`kiln_blockdev::ErrorKind::Input`] for every other
/// variant: those are refusals of the tree or options the caller passed, made before any byte
/// is written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// [`crate::write_vfat`]: a name equals the 8.3 alias FAT generated for a sibling's long
    /// name (`longfi~1.txt` next to `longfilename.txt`): FAT lookups would find the sibling.
    #[error("writing vfat: {path:?} is the 8.3 short name of {other:?}")]
    AliasCollision {
        /// The path whose name is taken.
        path: String,
        /// The sibling whose short name it is.
        other: String,
    },
    /// [`crate::write_vfat`]: two names in one directory differ only in case, which FAT cannot
    /// hold apart (the ISO writer accepts such a tree).
    #[error("writing vfat: {path:?} and {other:?} differ only in case")]
    CaseCollision {
        /// One of the paths.
        path: String,
        /// The other path.
        other: String,
    },
    /// [`crate::Tree::add_file`] or [`crate::Tree::add_dir`] for a path that already holds an
    /// entry (adding a directory that was only created implicitly, as a parent, is allowed once).
    #[error("adding {path:?}: an entry already exists at this path")]
    DuplicatePath {
        /// The path given to `add_file`/`add_dir`.
        path: String,
    },
    /// The `epoch` of [`crate::IsoOptions`] or [`crate::VfatOptions`] cannot be represented in
    /// the image's date fields: past year 2107 for FAT, past year 2155 for ISO 9660's 7-byte
    /// directory record dates. (FAT clamps epochs before 1980 to 1980 instead of failing.)
    #[error("encoding dates: epoch {epoch} is outside the range this format can record ({format})")]
    EpochOutOfRange {
        /// The `SOURCE_DATE_EPOCH` given.
        epoch: u64,
        /// Which format's limit was hit.
        format: &'static str,
    },
    /// A file of more than 4 GiB - 1 bytes: refused by [`crate::Tree::add_file`], and checked
    /// again by both writers (one ISO 9660 extent, and a FAT file, hold at most that much).
    #[error("writing {path:?}: file of {size} bytes exceeds the {max}-byte limit")]
    FileTooLarge {
        /// Path of the file in the tree.
        path: String,
        /// Its size in bytes.
        size: u64,
        /// The largest size the format accepts.
        max: u64,
    },
    /// The image cannot be laid out: [`crate::write_iso`] needs more than 65535 directories or
    /// more sectors than 32-bit fields address; [`crate::write_vfat`] would need a volume above
    /// its maximum size or more memory than the host's address space. Also returned by
    /// [`crate::write_vfat_sized`] for a fixed size that is not a multiple of 512 or is below
    /// 1 MiB (`value` is then the size given).
    #[error("laying out image: {what} ({value}) exceeds the format's limit of {max}")]
    ImageTooLarge {
        /// What overflowed (sectors, directories, ...).
        what: &'static str,
        /// The value that was needed.
        value: u64,
        /// The limit.
        max: u64,
    },
    /// [`crate::Tree::add_file`] or [`crate::Tree::add_dir`] with a mode whose file-type bits
    /// (`S_IFMT`) are set and are not those of the entry kind, or with bits above `0o7777`
    /// outside the file type.
    #[error("adding {path:?}: mode {mode:#o} is not valid for a {kind}")]
    InvalidMode {
        /// The path given.
        path: String,
        /// The mode given.
        mode: u32,
        /// "file" or "directory".
        kind: &'static str,
    },
    /// A path component cannot be recorded. [`crate::Tree::add_file`]/[`crate::Tree::add_dir`]
    /// (`op` "adding") refuse empty paths and components, `.` and `..`, control characters,
    /// characters outside the BMP (not UCS-2) and Joliet's forbidden `* : ; ? \`;
    /// [`crate::write_vfat`] (`op` "writing vfat") further refuses names FAT cannot hold
    /// (`" * / : < > ? \ |`, a trailing dot or space).
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
    /// The volume name cannot be recorded: for [`crate::write_iso`], an `IsoOptions::volume_id`
    /// that is empty, not printable ASCII, or longer than 16 characters; for
    /// [`crate::write_vfat`], a `VfatOptions::volume_label` that is empty, longer than 11
    /// bytes, starts with a space or holds anything but letters, digits, space and
    /// ``! # $ % & ' ( ) - @ ^ _ ` { } ~``.
    #[error("setting volume id {volume_id:?}: {reason}")]
    InvalidVolumeId {
        /// The volume identifier given.
        volume_id: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// [`crate::write_iso`]: writing to or flushing the caller's `out` failed. `kind()` is
    /// [`kiln_blockdev::ErrorKind::Host`].
    #[error("{op} failed")]
    Io {
        /// What was being written.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// [`crate::Tree::add_file`]/[`crate::Tree::add_dir`]: a path component longer than
    /// [`crate::MAX_NAME_BYTES`] UTF-8 bytes (Rock Ridge `NM`) or [`crate::MAX_JOLIET_CHARS`]
    /// UCS-2 characters (Joliet).
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
    /// [`crate::Tree::add_file`]/[`crate::Tree::add_dir`]: a parent component of the path is
    /// an existing file.
    #[error("adding {path:?}: parent {parent:?} is a file, not a directory")]
    NotADirectory {
        /// The path given.
        path: String,
        /// The component that is a file.
        parent: String,
    },
    /// [`crate::write_iso`]: the directory hierarchy is deeper than ISO 9660 allows (8 levels,
    /// root included). The vfat writer has no such limit.
    #[error("writing ISO: directory {path:?} is at level {level}, ISO 9660 allows {max}")]
    TooDeep {
        /// The too-deep directory.
        path: String,
        /// Its level (root = 1).
        level: usize,
        /// The limit.
        max: usize,
    },
    /// [`crate::write_vfat`]: the FAT library failed to format the in-memory volume or to create
    /// or write an entry (a fixed-size volume too small for the contents ends here, naming the
    /// file that did not fit), or writing the finished image to the caller's `out` failed.
    /// `kind()` is [`kiln_blockdev::ErrorKind::Host`].
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
