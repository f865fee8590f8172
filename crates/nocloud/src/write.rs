//! Writing a [`NodeSeed`] out: a seed volume (ISO9660 `cidata`, vfat `CIDATA`) or a plain directory.
//! Output goes to a temporary name in the destination directory and is renamed into place only when
//! complete; files are mode 0600 (user-data holds the cluster token).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::{Error, NodeSeed};

/// The container a seed is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedFormat {
    /// ISO9660 with Joliet and Rock Ridge, volume id `cidata`.
    Iso,
    /// FAT image labelled `CIDATA`.
    Vfat,
    /// A directory holding the documents as files (for `-drive file=fat:` or inspection).
    Dir,
}

impl SeedFormat {
    /// `iso`, `vfat` or `dir`, as the CLI's `--format` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            SeedFormat::Iso => "iso",
            SeedFormat::Vfat => "vfat",
            SeedFormat::Dir => "dir",
        }
    }

    /// The conventional output name of `node`'s seed in this format.
    pub fn file_name(self, node: &str) -> String {
        match self {
            SeedFormat::Iso => format!("{node}-seed.iso"),
            SeedFormat::Vfat => format!("{node}-seed.img"),
            SeedFormat::Dir => format!("{node}-seed"),
        }
    }
}

impl std::str::FromStr for SeedFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "iso" => Ok(SeedFormat::Iso),
            "vfat" => Ok(SeedFormat::Vfat),
            "dir" => Ok(SeedFormat::Dir),
            _ => Err(format!("unknown seed format {s:?} (iso, vfat or dir)")),
        }
    }
}

/// Write `seed` to `path` in `format`; `epoch` (SOURCE_DATE_EPOCH) stamps every date in a volume.
/// Returns the sha256 of what was written (for `dir`: of the files, in name order, with names).
pub fn write_seed(
    seed: &NodeSeed,
    format: SeedFormat,
    epoch: u64,
    path: &Path,
) -> Result<[u8; 32], Error> {
    use sha2::Digest;
    let werr = |source| Error::WriteSeed {
        path: path.to_owned(),
        source,
    };
    if format == SeedFormat::Dir {
        let tmp = path.with_file_name(kiln_blockdev::temp_name(
            path.file_name().unwrap_or_default(),
        ));
        let result = write_dir(seed, path, &tmp);
        if result.is_err() {
            // Leave nothing half-written behind.
            let _ = fs::remove_dir_all(&tmp);
        }
        return result.map_err(werr);
    }
    let bytes = seed_volume(seed, format, epoch, path)?;
    let berr = |e: kiln_blockdev::Error| werr(std::io::Error::other(e));
    let file = kiln_blockdev::AtomicFile::create(path, 0o600).map_err(berr)?;
    file.dev().write_at_grow(&bytes, 0).map_err(berr)?;
    file.commit().map_err(berr)?;
    Ok(sha2::Sha256::digest(&bytes).into())
}

/// A directory seed: the files written into `tmp`, which then replaces `path`.
fn write_dir(seed: &NodeSeed, path: &Path, tmp: &Path) -> std::io::Result<[u8; 32]> {
    use sha2::Digest;
    if tmp.exists() {
        fs::remove_dir_all(tmp)?;
    }
    fs::DirBuilder::new().mode(0o700).create(tmp)?;
    let mut h = sha2::Sha256::new();
    for (name, data) in seed.files() {
        write_file_0600(&tmp.join(name), data)?;
        h.update(name.as_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    if path.is_dir() {
        fs::remove_dir_all(path)?;
    }
    fs::rename(tmp, path)?;
    Ok(h.finalize().into())
}

fn write_file_0600(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    // Not fsynced, like every kiln output: the rename into place is what guarantees the final name
    // only ever holds a complete seed.
    f.write_all(data)
}

/// The seed volume's bytes, built in memory (seeds are a few KiB): ISO9660 `cidata` (Joliet + Rock
/// Ridge) or FAT `CIDATA`, files 0600, every date from `epoch`. `path` is where it is meant to go
/// (named in errors only). [`SeedFormat::Dir`] is not a volume and is refused.
pub fn seed_volume(
    seed: &NodeSeed,
    format: SeedFormat,
    epoch: u64,
    path: &Path,
) -> Result<Vec<u8>, Error> {
    let verr = |e: kiln_seedvol::Error| {
        // The whole cause chain: the volume writer's errors keep their I/O cause as a source.
        let mut message = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            message.push_str(&format!(": {c}"));
            cause = c.source();
        }
        Error::Volume {
            format: format.as_str(),
            path: path.to_owned(),
            message,
        }
    };
    let mut tree = kiln_seedvol::Tree::new();
    for (name, data) in seed.files() {
        tree.add_file(name, data.to_vec(), 0o600).map_err(verr)?;
    }
    match format {
        SeedFormat::Iso => {
            let opts = kiln_seedvol::IsoOptions {
                volume_id: "cidata".into(),
                epoch,
            };
            let mut out = Vec::new();
            kiln_seedvol::write_iso(&tree, &opts, &mut out).map_err(verr)?;
            Ok(out)
        }
        SeedFormat::Vfat => {
            let opts = kiln_seedvol::VfatOptions {
                volume_label: "CIDATA".into(),
                epoch,
            };
            let mut out = std::io::Cursor::new(Vec::new());
            kiln_seedvol::write_vfat(&tree, &opts, &mut out).map_err(verr)?;
            Ok(out.into_inner())
        }
        SeedFormat::Dir => Err(Error::Volume {
            format: format.as_str(),
            path: path.to_owned(),
            message: "a directory is not a volume".into(),
        }),
    }
}
