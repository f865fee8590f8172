use std::path::{Path, PathBuf};

/// Everything that can go wrong opening, reading, writing or flattening a qcow2 image. Each variant
/// names the image and carries the offending values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{image}: backing chain loops back to {backing}", image = .image.display(), backing = .backing.display())]
    BackingChainCycle { image: PathBuf, backing: PathBuf },
    #[error("{image}: backing chain deeper than {max} images", image = .image.display())]
    BackingChainTooDeep { image: PathBuf, max: usize },
    #[error("{image}: backing file name {name:?} is not usable: {reason}", image = .image.display())]
    BackingNameInvalid {
        image: PathBuf,
        name: String,
        reason: &'static str,
    },
    #[error(
        "{image}: backing file {backing} is outside the allowed directory {allowed} (pass a wider allowed directory if you trust this image)",
        image = .image.display(), backing = .backing.display(), allowed = .allowed.display()
    )]
    BackingOutsideAllowedDir {
        image: PathBuf,
        backing: PathBuf,
        allowed: PathBuf,
    },
    #[error("{image}: not a qcow2 image (magic {magic:#010x}, expected 0x514649fb)", image = .image.display())]
    BadMagic { image: PathBuf, magic: u32 },
    /// A disk image of a format kiln does not read (recognised by its magic), which would
    /// otherwise pass for raw data.
    #[error(
        "{image}: is a {format} image, which kiln does not read; convert it first, e.g. `qemu-img convert -O qcow2 {image} out.qcow2`{note}",
        image = .image.display()
    )]
    ForeignFormat {
        image: PathBuf,
        format: &'static str,
        note: &'static str,
    },
    #[error("{image}: compressed cluster at host offset {host_offset} (guest offset {guest_offset}) does not decompress: {reason}", image = .image.display())]
    Decompress {
        image: PathBuf,
        guest_offset: u64,
        host_offset: u64,
        reason: String,
    },
    #[error("{image}: {op}", image = .image.display())]
    Device {
        image: PathBuf,
        op: &'static str,
        #[source]
        source: kiln_blockdev::Error,
    },
    /// The caller's [`kiln_blockdev::Cancel`] was tripped while writing `image`.
    #[error("{image}: cancelled", image = .image.display())]
    Cancelled { image: PathBuf },
    #[error("{image}: header is truncated ({len} bytes, need {need})", image = .image.display())]
    HeaderTruncated { image: PathBuf, len: u64, need: u64 },
    #[error("{image}: invalid header field {field} = {value}", image = .image.display())]
    InvalidHeader {
        image: PathBuf,
        field: &'static str,
        value: u64,
    },
    #[error("{image}: {what} at host offset {offset} is not aligned to the {align}-byte cluster size", image = .image.display())]
    Misaligned {
        image: PathBuf,
        what: &'static str,
        offset: u64,
        align: u64,
    },
    #[error("{image}: {what} at host offset {offset} (+{len} bytes) lies past the end of the {file_len}-byte file", image = .image.display())]
    PastEndOfFile {
        image: PathBuf,
        what: &'static str,
        offset: u64,
        len: u64,
        file_len: u64,
    },
    #[error("{image}: opened read-only; {op} refused", image = .image.display())]
    ReadOnly { image: PathBuf, op: &'static str },
    #[error("{image}: host cluster at offset {host_offset} would need a reference count above {max} ({bits}-bit refcounts)", image = .image.display())]
    RefcountOverflow {
        image: PathBuf,
        host_offset: u64,
        max: u64,
        bits: u32,
    },
    #[error("{image}: {feature} is not supported", image = .image.display())]
    Unsupported { image: PathBuf, feature: String },
    #[error("{image}: qcow2 version {version} is not supported (only 2 and 3)", image = .image.display())]
    UnsupportedVersion { image: PathBuf, version: u32 },
}

impl Error {
    /// [`Error::Device`] for a host-path operation on `path` that failed (resolving it, naming
    /// it), not I/O on the device: reported as an open of `path`.
    pub(crate) fn path(
        image: &Path,
        op: &'static str,
        path: &Path,
        source: std::io::Error,
    ) -> Error {
        Error::Device {
            image: image.to_owned(),
            op,
            source: kiln_blockdev::Error::Io {
                op: kiln_blockdev::Op::Open,
                path: path.to_owned(),
                offset: 0,
                len: 0,
                source,
            },
        }
    }

    /// Who is at fault: the device's own classification for I/O, kiln for a write through a
    /// read-only handle, the caller for a cancelled flatten, the image for everything else (its header, tables, clusters, backing
    /// chain).
    pub fn kind(&self) -> kiln_blockdev::ErrorKind {
        match self {
            Error::Device { source, .. } => source.kind(),
            Error::ReadOnly { .. } => kiln_blockdev::ErrorKind::Internal,
            Error::Cancelled { .. } => kiln_blockdev::ErrorKind::Cancelled,
            _ => kiln_blockdev::ErrorKind::Input,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
