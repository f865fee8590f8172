use std::path::{Path, PathBuf};

/// Everything that can go wrong opening, reading, writing or flattening a qcow2 image. Each variant
/// names the image and carries the offending values.
///
/// In every variant, `image` is the file the problem is in: the image being opened, read or
/// written (for a problem in a backing file, that backing file; for a backing *name*, the image
/// whose header records it), or the output of [`crate::flatten`] / [`crate::Image::create`].
///
/// [`Error::kind`]: [`Error::Device`] reports its device error's kind, [`Error::ReadOnly`]
/// [`kiln_blockdev::ErrorKind::Internal`], every other variant
/// [`kiln_blockdev::ErrorKind::Input`] (the image or the options given are at fault).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening a chain ([`crate::Image::open`], [`crate::Disk::open`]): a backing file resolves
    /// (after following symlinks) to an image already in the chain above it.
    #[error("{image}: backing chain loops back to {backing}", image = .image.display(), backing = .backing.display())]
    BackingChainCycle {
        /// The image whose backing name closes the loop.
        image: PathBuf,
        /// The canonical path it resolves to, already open higher in the chain.
        backing: PathBuf,
    },
    /// Opening a chain: more backing images below the top one than
    /// [`crate::OpenOptions::max_chain_depth`] allows.
    #[error("{image}: backing chain deeper than {max} images", image = .image.display())]
    BackingChainTooDeep {
        /// The image whose backing file would exceed the depth.
        image: PathBuf,
        /// The cap reported: always [`crate::DEFAULT_MAX_CHAIN_DEPTH`], also when the options
        /// set another depth.
        max: usize,
    },
    /// A backing file name kiln will not use: when opening a chain, a name in a protocol form
    /// (`json:…`, `scheme://…`), which is never opened; when creating an image
    /// ([`crate::Image::create`], [`crate::begin_overlay`]), a backing name (with its format
    /// extension) too long to fit in the header cluster.
    #[error("{image}: backing file name {name:?} is not usable: {reason}", image = .image.display())]
    BackingNameInvalid {
        /// The image whose header holds (or would hold) the name.
        image: PathBuf,
        /// The name as stored in the header (qcow2 header field `backing_file_offset`/`_size`).
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Opening a chain: a backing file resolves to a path outside the allowed directory
    /// ([`crate::OpenOptions::allowed_backing_dir`], by default the top image's directory), so
    /// a crafted header cannot make kiln read arbitrary host files.
    #[error(
        "{image}: backing file {backing} is outside the allowed directory {allowed} (pass a wider allowed directory if you trust this image)",
        image = .image.display(), backing = .backing.display(), allowed = .allowed.display()
    )]
    BackingOutsideAllowedDir {
        /// The image whose header names the backing file.
        image: PathBuf,
        /// The backing file's canonical path.
        backing: PathBuf,
        /// The canonical allowed directory.
        allowed: PathBuf,
    },
    /// [`crate::Image::open`] / [`crate::Image::open_storage`] (or a qcow2 backing file) on
    /// something whose first 4 bytes are not the qcow2 magic `QFI\xfb`. ([`crate::Disk::open`]
    /// treats such a file as raw instead.)
    #[error("{image}: not a qcow2 image (magic {magic:#010x}, expected 0x514649fb)", image = .image.display())]
    BadMagic {
        /// The file opened.
        image: PathBuf,
        /// The big-endian `u32` found at offset 0.
        magic: u32,
    },
    /// [`crate::Disk::open`]: a disk image of a format kiln does not read (VMDK, VHD(X), VDI,
    /// QED, Parallels, Bochs, cloop, LUKS; recognised by its magic, see
    /// [`crate::foreign_format`]), which would otherwise pass for raw data.
    #[error(
        "{image}: is a {format} image, which kiln does not read; convert it first, e.g. `qemu-img convert -O qcow2 {image} out.qcow2`{note}",
        image = .image.display()
    )]
    ForeignFormat {
        /// The file opened.
        image: PathBuf,
        /// The format's name, e.g. `"VHDX"`.
        format: &'static str,
        /// Extra advice on converting it (may be empty).
        note: &'static str,
    },
    /// The file is a compressed stream (xz, gzip, zstd, bzip2; recognised by its magic, see
    /// [`crate::compressed_format`]), not a disk image: the image is inside it.
    #[error(
        "{image}: is {format}-compressed, not a disk image; decompress it first (e.g. `{tool} -dk {image}`), or name it as a recipe's base, which `kiln build` decompresses (xz)",
        image = .image.display()
    )]
    Compressed {
        /// The file opened.
        image: PathBuf,
        /// The compression's name, e.g. `"xz"`.
        format: &'static str,
        /// The command-line tool that decompresses it.
        tool: &'static str,
    },
    /// Reading a compressed cluster (a guest read, a copy-on-write of it, or a flatten that
    /// checks or recompresses it): the stored bytes do not decompress with the image's
    /// compression type to exactly one cluster.
    #[error("{image}: compressed cluster at host offset {host_offset} (guest offset {guest_offset}) does not decompress: {reason}", image = .image.display())]
    Decompress {
        /// The image holding the cluster.
        image: PathBuf,
        /// Guest byte offset of the cluster.
        guest_offset: u64,
        /// Host byte offset of the compressed data (from the L2 entry).
        host_offset: u64,
        /// The decoder's complaint.
        reason: String,
    },
    /// The file under the image failed: opening or resolving it (missing, not a regular file,
    /// no permission), reading the header or tables, reading or writing clusters, flushing, or
    /// creating and renaming an output; also a guest read or write of [`crate::Image`] /
    /// [`crate::Disk`] that runs past the virtual size (source
    /// [`kiln_blockdev::Error::OutOfBounds`]). [`Error::kind`] is the device error's kind (an open is
    /// [`kiln_blockdev::ErrorKind::Input`], other I/O [`kiln_blockdev::ErrorKind::Host`]).
    #[error("{image}: {op}", image = .image.display())]
    Device {
        /// The image (or output) whose file failed.
        image: PathBuf,
        /// What kiln was doing, e.g. `"read L2 table"`, `"open backing file"`, `"write output"`.
        op: &'static str,
        /// The device error.
        #[source]
        source: kiln_blockdev::Error,
    },
    /// The caller's [`kiln_blockdev::Cancel`] was tripped while writing `image` (flatten). Kind:
    /// cancelled.
    #[error("{image}: cancelled", image = .image.display())]
    Cancelled {
        /// The image being written.
        image: PathBuf,
    },
    /// Opening: the file starts with the qcow2 magic but is shorter than the header its version
    /// needs (72 bytes for v2, 104 for v3).
    #[error("{image}: header is truncated ({len} bytes, need {need})", image = .image.display())]
    HeaderTruncated {
        /// The file opened.
        image: PathBuf,
        /// Bytes available.
        len: u64,
        /// Bytes the header needs.
        need: u64,
    },
    /// A header field out of range. When opening: `cluster_bits` outside 9..=21, `size` above
    /// 2^55 bytes, `l1_size` too small to map `size` or above 32 MiB of entries,
    /// `header_length` below 104, not a multiple of 8, beyond the first cluster, or too short
    /// for the compression-type byte it announces, `refcount_order` above 6, or a nonzero
    /// `compression_type` without its incompatible-feature bit, a header extension running past
    /// the first cluster, `backing_file_size` of 0 or above 1023, or a backing name that lies
    /// outside the first cluster or is not UTF-8 (`field` is then `backing_file_offset`, with a
    /// note). When creating
    /// ([`crate::Image::create`], [`crate::flatten`]): a requested cluster size outside 9..=21
    /// bits, a virtual size above 2^55 or not a multiple of 512, or an L1 table above 32 MiB.
    #[error("{image}: invalid header field {field} = {value}", image = .image.display())]
    InvalidHeader {
        /// The image opened or created.
        image: PathBuf,
        /// The qcow2 header field name, as in the qcow2 specification (or `"header extension
        /// length"`).
        field: &'static str,
        /// The offending value.
        value: u64,
    },
    /// A metadata or data offset not aligned to the cluster size: the L1 or refcount table
    /// (checked at open), an L2 table or data cluster (checked when a guest cluster is
    /// mapped), a refcount block (checked when writing begins).
    #[error("{image}: {what} at host offset {offset} is not aligned to the {align}-byte cluster size", image = .image.display())]
    Misaligned {
        /// The image whose tables hold the offset.
        image: PathBuf,
        /// Which structure, e.g. `"L2 table"`, `"data cluster"`.
        what: &'static str,
        /// The host byte offset found.
        offset: u64,
        /// The cluster size in bytes.
        align: u64,
    },
    /// A table or cluster that the header or tables place (partly) past the end of the image
    /// file: the L1 or refcount table at open, an L2 table, data cluster or refcount block when
    /// it is used. Typical of a truncated image.
    #[error("{image}: {what} at host offset {offset} (+{len} bytes) lies past the end of the {file_len}-byte file", image = .image.display())]
    PastEndOfFile {
        /// The image whose tables hold the offset.
        image: PathBuf,
        /// Which structure, e.g. `"L1 table"`.
        what: &'static str,
        /// Its host byte offset.
        offset: u64,
        /// Its length in bytes.
        len: u64,
        /// The image file's length in bytes.
        file_len: u64,
    },
    /// [`crate::Image::write`] on an image opened without [`crate::OpenOptions::write`].
    /// [`Error::kind`] is [`kiln_blockdev::ErrorKind::Internal`].
    #[error("{image}: opened read-only; {op} refused", image = .image.display())]
    ReadOnly {
        /// The image.
        image: PathBuf,
        /// The refused operation (`"write"`).
        op: &'static str,
    },
    /// Writing (an image opened for writing, or the flatten/create writer): counting the
    /// references to a host cluster exceeds what the image's refcount width can hold (e.g. a
    /// cluster shared by two L2 entries in an image with 1-bit refcounts).
    #[error("{image}: host cluster at offset {host_offset} would need a reference count above {max} ({bits}-bit refcounts)", image = .image.display())]
    RefcountOverflow {
        /// The image being written.
        image: PathBuf,
        /// Host byte offset of the cluster.
        host_offset: u64,
        /// The largest count the width holds (`2^bits - 1`).
        max: u64,
        /// The refcount width in bits (qcow2 header field `refcount_order` as `1 << order`).
        bits: u32,
    },
    /// A valid image using something kiln does not implement. When opening: encryption
    /// (`crypt_method` or the crypto extension), an external data file, extended L2 entries,
    /// the corrupt incompatible bit, unknown incompatible features, a compression type other than
    /// zlib/zstd, or a backing format other than `qcow2`/`raw`. When opening for writing: a
    /// version 2 image, one with internal snapshots, or one with the dirty bit set.
    #[error("{image}: {feature} is not supported", image = .image.display())]
    Unsupported {
        /// The image.
        image: PathBuf,
        /// What is not supported, in words (with a repair hint where there is one).
        feature: String,
    },
    /// Opening: the header's `version` field is neither 2 nor 3.
    #[error("{image}: qcow2 version {version} is not supported (only 2 and 3)", image = .image.display())]
    UnsupportedVersion {
        /// The image.
        image: PathBuf,
        /// The version found.
        version: u32,
    },
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

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
