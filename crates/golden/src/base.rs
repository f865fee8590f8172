//! The base image's file format, and the streamed decompression of an xz-compressed raw base
//! (`ubuntu-24.04-preinstalled-server-arm64+raspi.img.xz`) into a sparse temporary file.
//!
//! The recipe pins the file as downloaded, so an `.img.xz` base is hashed compressed; it is then
//! decompressed once, chunk by chunk (never a second full copy in memory), into a temporary raw
//! file beside the output that the build's overlay uses as its backing file and that is removed
//! when the build ends. MiB chunks that decompress to zeros are not written: the temporary file
//! takes the space of the image's data only.

use std::io::Read;
use std::path::Path;

use kiln_blockdev::{Cancel, CancelRead, FileDev};

use crate::Error;

/// What the base file is, recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// A qcow2 image (with the qemu magic).
    Qcow2,
    /// An xz stream holding a raw disk image.
    Xz,
    /// Anything else: a raw disk image (kiln-qcow2 refuses foreign image formats by name when it
    /// opens it).
    Raw,
}

impl Format {
    /// Recognise the format of the file at `path` (a regular file: the caller has hashed it).
    pub(crate) fn sniff(path: &Path) -> Result<Format, Error> {
        let read_err = |source| Error::ReadInput {
            what: "base image",
            path: path.to_owned(),
            source,
        };
        let dev = FileDev::open_read_only(path).map_err(|e| read_err(std::io::Error::other(e)))?;
        if kiln_qcow2::is_qcow2(&dev) {
            return Ok(Format::Qcow2);
        }
        Ok(match kiln_qcow2::compressed_format(&dev) {
            Some(("xz", _)) => Format::Xz,
            // gzip, zstd, bzip2: kiln-qcow2's open names them.
            _ => Format::Raw,
        })
    }

    /// How summaries name it.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Xz => "xz-compressed raw",
            Format::Raw => "raw",
        }
    }
}

/// The most memory the xz decoder may use (its dictionary): `xz -9` needs 64 MiB, so 256 MiB
/// refuses only streams made to exhaust memory.
const XZ_MEMLIMIT: u64 = 256 << 20;
/// Decompressed bytes per chunk (the unit of the zero test).
const CHUNK: usize = 1 << 20;

/// Decompress the xz stream at `src` into `out` (an empty file; `out_path` in errors), writing
/// only the chunks that are not all zero and sizing `out` to the stream's length. `progress` gets
/// compressed bytes read so far (of the file's length); `cancel` is checked per chunk read.
/// Returns the decompressed length.
pub(crate) fn decompress_xz(
    src: &Path,
    out: &FileDev,
    out_path: &Path,
    cancel: &Cancel,
    progress: &dyn Fn(u64, u64),
) -> Result<u64, Error> {
    let read_err = |source: std::io::Error| {
        if kiln_blockdev::Cancelled::is_in(&source) {
            Error::Cancelled
        } else {
            Error::BaseImage {
                path: src.to_owned(),
                message: format!("decompressing xz: {source}"),
            }
        }
    };
    let (file, total) =
        kiln_common::digest::open_regular(src).map_err(|source| Error::ReadInput {
            what: "base image",
            path: src.to_owned(),
            source,
        })?;
    let reader = CancelRead::new(file, cancel, |done| progress(done.min(total), total));
    let stream =
        liblzma::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, liblzma::stream::CONCATENATED)
            .map_err(|e| Error::BaseImage {
                path: src.to_owned(),
                message: format!("starting the xz decoder: {e}"),
            })?;
    let mut xz = liblzma::read::XzDecoder::new_stream(reader, stream);
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let mut n = 0;
        while n < CHUNK {
            match xz.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_err(e)),
            }
        }
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            out.write_at_grow(&buf[..n], offset)
                .map_err(|e| Error::Output {
                    op: "writing the decompressed base",
                    path: out_path.to_owned(),
                    source: std::io::Error::other(e),
                })?;
        }
        offset = offset
            .checked_add(n as u64)
            .ok_or_else(|| Error::BaseImage {
                path: src.to_owned(),
                message: "decompresses to more than 2^64 bytes".into(),
            })?;
    }
    if offset == 0 {
        return Err(Error::BaseImage {
            path: src.to_owned(),
            message: "the xz stream holds no data".into(),
        });
    }
    out.set_len(offset).map_err(|e| Error::Output {
        op: "sizing the decompressed base",
        path: out_path.to_owned(),
        source: std::io::Error::other(e),
    })?;
    Ok(offset)
}
