//! Writing a [`NodeSeed`] out: a seed volume (ISO9660 `cidata`, vfat `CIDATA`) or a plain directory.
//! Output goes to a temporary name in the destination directory and is renamed into place only when
//! complete; files are mode 0600 (user-data holds the cluster token).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".kiln-tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Write `seed` to `path` in `format`; `epoch` (SOURCE_DATE_EPOCH) stamps every date in a volume.
/// Returns the sha256 of what was written (for `dir`: of the files, in name order, with names).
pub fn write_seed(
    seed: &NodeSeed,
    format: SeedFormat,
    epoch: u64,
    path: &Path,
) -> Result<[u8; 32], Error> {
    let tmp = temp_path(path);
    let result = write_via(seed, format, epoch, path, &tmp);
    if result.is_err() {
        // Leave nothing half-written behind.
        let _ = fs::remove_dir_all(&tmp);
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_via(
    seed: &NodeSeed,
    format: SeedFormat,
    epoch: u64,
    path: &Path,
    tmp: &Path,
) -> Result<[u8; 32], Error> {
    use sha2::Digest;
    let werr = |source| Error::WriteSeed {
        path: path.to_owned(),
        source,
    };
    let digest = match format {
        SeedFormat::Dir => {
            if tmp.exists() {
                fs::remove_dir_all(tmp).map_err(werr)?;
            }
            fs::DirBuilder::new()
                .mode(0o700)
                .create(tmp)
                .map_err(werr)?;
            let mut h = sha2::Sha256::new();
            for (name, data) in seed.files() {
                write_file_0600(&tmp.join(name), data).map_err(werr)?;
                h.update(name.as_bytes());
                h.update((data.len() as u64).to_le_bytes());
                h.update(data);
            }
            if path.is_dir() {
                fs::remove_dir_all(path).map_err(werr)?;
            }
            h.finalize().into()
        }
        SeedFormat::Iso | SeedFormat::Vfat => {
            let bytes = volume(seed, format, epoch, path)?;
            write_file_0600(tmp, &bytes).map_err(werr)?;
            sha2::Sha256::digest(&bytes).into()
        }
    };
    fs::rename(tmp, path).map_err(werr)?;
    Ok(digest)
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

/// Build the volume image in memory (seeds are a few KiB): ISO9660 `cidata` (Joliet + Rock Ridge)
/// or FAT `CIDATA`, files 0600, every date from `epoch`.
fn volume(seed: &NodeSeed, format: SeedFormat, epoch: u64, path: &Path) -> Result<Vec<u8>, Error> {
    let verr = |e: kiln_iso::Error| {
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
    let mut tree = kiln_iso::Tree::new();
    for (name, data) in seed.files() {
        tree.add_file(name, data.to_vec(), 0o600).map_err(verr)?;
    }
    match format {
        SeedFormat::Iso => {
            let opts = kiln_iso::IsoOptions {
                volume_id: "cidata".into(),
                epoch,
            };
            let mut out = Vec::new();
            kiln_iso::write_iso(&tree, &opts, &mut out).map_err(verr)?;
            Ok(out)
        }
        SeedFormat::Vfat => {
            let opts = kiln_iso::VfatOptions {
                volume_label: "CIDATA".into(),
                epoch,
            };
            let mut out = std::io::Cursor::new(Vec::new());
            kiln_iso::write_vfat(&tree, &opts, &mut out).map_err(verr)?;
            Ok(out.into_inner())
        }
        SeedFormat::Dir => Err(Error::Volume {
            format: format.as_str(),
            path: path.to_owned(),
            message: "a directory is not a volume".into(),
        }),
    }
}
