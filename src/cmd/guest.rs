//! Shared by `kiln ls` and `kiln cat`: parse `IMAGE:/path`, open the image (qcow2 chain or raw),
//! find the filesystem (root detection or `--partition N`) and open it read-only.
//!
//! The argument is taken as bytes (an `OsString`, not UTF-8), so a guest name that is not UTF-8 can
//! be named on the command line as it is (`kiln cat "disk.qcow2:/tmp/bad$(printf '\xff')name"`);
//! output shows such names in the escaped form of [`kiln_ext4::GuestPath`] (`bad\xffname`).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use clap::Args;
use clap::builder::TypedValueParser;
use kiln_ext4::{Filesystem, GuestPathBuf};
use kiln_partition::Selector;
use kiln_qcow2::Disk;

use super::image_args::OpenArgs;
use crate::exit::{Failure, OrExit};

/// `IMAGE:/path` as given on the command line.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    pub image: PathBuf,
    /// The guest path, bytes as given.
    pub path: GuestPathBuf,
}

/// Split `IMAGE:/path` (bytes, not necessarily UTF-8) at the first `:/` whose left side is an
/// existing file (image names may contain colons); without a `:/`, the whole argument is the
/// image and the path is `/`.
pub fn parse_spec(arg: OsString) -> Result<GuestSpec, String> {
    let s = arg.as_bytes();
    let image = |b: &[u8]| Path::new(OsStr::from_bytes(b)).to_owned();
    for i in (0..s.len().saturating_sub(1)).filter(|&i| &s[i..i + 2] == b":/") {
        if image(&s[..i]).is_file() {
            return Ok(GuestSpec {
                image: image(&s[..i]),
                path: GuestPathBuf::from(&s[i + 1..]),
            });
        }
    }
    if image(s).is_file() {
        return Ok(GuestSpec {
            image: image(s),
            path: GuestPathBuf::from("/"),
        });
    }
    Err(format!(
        "{:?}: expected IMAGE:/path with an existing image file",
        arg.to_string_lossy()
    ))
}

/// The clap value parser of an `IMAGE:/path` argument: [`parse_spec`] over the raw `OsString`.
pub fn spec_parser() -> impl TypedValueParser<Value = GuestSpec> {
    clap::builder::OsStringValueParser::new().try_map(parse_spec)
}

#[derive(Debug, Args)]
pub struct FsArgs {
    /// Partition number to use instead of root-filesystem detection (0 = a filesystem on the whole
    /// disk).
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
    #[command(flatten)]
    pub open: OpenArgs,
}

/// Open the guest filesystem read-only and run `f` on it.
pub fn with_fs<T>(
    spec: &GuestSpec,
    args: &FsArgs,
    f: impl FnOnce(&Filesystem<'_>) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let disk = Disk::open(&spec.image, &args.open.options()).or_exit()?;
    let selector = args.partition.map_or(Selector::Root, Selector::Number);
    kiln_golden::rootfs::with_root_fs(&disk, &spec.image, selector, |fs, _| {
        let unclean = fs.info().unclean();
        if !unclean.is_empty() {
            // Read as it is, like debugfs: the disk of a VM that crashed is what users look into.
            eprintln!(
                "kiln: warning: {}: the filesystem was not left clean ({}); reading it as it is, \
                 nothing is written",
                spec.image.display(),
                unclean.join("; ")
            );
        }
        let out = f(&fs);
        fs.close().map_err(|source| kiln_golden::Error::Ext4 {
            op: "closing the root filesystem",
            image: spec.image.clone(),
            source: Box::new(source),
        })?;
        Ok(out)
    })
    .or_exit()?
}
