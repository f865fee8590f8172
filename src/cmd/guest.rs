//! Shared by `kiln ls` and `kiln cat`: parse `IMAGE:/path`, open the image (qcow2 chain or raw),
//! find the filesystem (root detection or `--partition N`) and open it read-only.

use std::path::{Path, PathBuf};

use clap::Args;
use kiln_ext4::Filesystem;
use kiln_partition::Selector;
use kiln_qcow2::Disk;

use super::image_args::OpenArgs;
use crate::exit::{Failure, OrExit};

/// `IMAGE:/path` as given on the command line.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    pub image: PathBuf,
    pub path: String,
}

/// Split `IMAGE:/path` at the first `:/` whose left side is an existing file (image names may
/// contain colons); without a `:/`, the whole argument is the image and the path is `/`.
pub fn parse_spec(s: &str) -> Result<GuestSpec, String> {
    let mut from = 0;
    while let Some(i) = s[from..].find(":/").map(|i| i + from) {
        if Path::new(&s[..i]).is_file() {
            return Ok(GuestSpec {
                image: PathBuf::from(&s[..i]),
                path: s[i + 1..].to_owned(),
            });
        }
        from = i + 1;
    }
    if Path::new(s).is_file() {
        return Ok(GuestSpec {
            image: PathBuf::from(s),
            path: "/".to_owned(),
        });
    }
    Err(format!(
        "{s:?}: expected IMAGE:/path with an existing image file"
    ))
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
