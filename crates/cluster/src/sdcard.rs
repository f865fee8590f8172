//! SD-card nodes (`cluster.boot: sd_card`): each node's flashable raw image is the golden image
//! with the node's NoCloud seed written into its FAT partition labelled `system-boot`, where the
//! image's cloud-init looks for it (`fs_label: system-boot`).
//!
//! The copy costs only the image's data: a reflink where the filesystem shares extents, else a
//! sparse copy of a raw golden (or a sparse export of a qcow2 one). The seed is written with
//! kiln-vfat, every date from the run's epoch.

use std::path::Path;

use kiln_blockdev::{AtomicFile, BlockDev, Cancel, CopyMethod, FileDev};
use kiln_nocloud::{NodeSeed, SD_CARD_SEED_LABEL};
use kiln_partition::{FsType, Partition};
use sha2::{Digest, Sha256};

use crate::{Error, ErrorKind, hex};

/// The sha256 the inventory records for an SD-card node's seed: over each seed file's name, length
/// and bytes, in the order they are written (it changes with the token, which the inventory never
/// holds).
pub(crate) fn seed_digest(seed: &NodeSeed) -> String {
    let mut h = Sha256::new();
    for (name, data) in seed.files() {
        h.update(name.as_bytes());
        h.update([0]);
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    hex(&h.finalize())
}

fn sd_err(node: &str, path: &Path, kind: ErrorKind) -> impl Fn(String) -> Error {
    let (node, path) = (node.to_owned(), path.to_owned());
    move |message| Error::SdCard {
        node: node.clone(),
        path: path.clone(),
        message,
        kind,
    }
}

/// The FAT partition labelled `system-boot` on `dev`.
fn seed_partition(dev: &dyn BlockDev, device: &str) -> Result<Partition, String> {
    let table = kiln_partition::scan(dev, device).map_err(|e| e.to_string())?;
    table
        .partitions
        .into_iter()
        .find(|p| p.fs == FsType::Vfat && p.label.as_deref() == Some(SD_CARD_SEED_LABEL))
        .ok_or_else(|| {
            format!(
                "no FAT partition labelled {SD_CARD_SEED_LABEL:?} (a Raspberry Pi image has one; \
                 build the golden from one, with `output.kind: raw`)"
            )
        })
}

/// Whether the golden image at `golden` (raw or qcow2) has the partition an SD-card node's seed
/// goes into; the message says why not.
pub(crate) fn check_golden(golden: &kiln_qcow2::Disk, device: &str) -> Result<(), String> {
    seed_partition(golden, device).map(|_| ())
}

/// Whether the existing image at `path` carries exactly `seed`'s files in its seed partition (the
/// caller has checked that it was made from the same golden image). Any doubt is `false`.
pub(crate) fn has_seed(path: &Path, seed: &NodeSeed) -> bool {
    let Ok(dev) = FileDev::open_read_only(path) else {
        return false;
    };
    let device = path.display().to_string();
    let Ok(part) = seed_partition(&dev, &device) else {
        return false;
    };
    let Ok(win) = kiln_partition::window(&dev, &device, &part) else {
        return false;
    };
    let Ok(vol) = kiln_vfat::Volume::open(&win, &device, kiln_vfat::OpenOptions::read_only())
    else {
        return false;
    };
    seed.files()
        .into_iter()
        .all(|(name, data)| vol.read(&format!("/{name}")).is_ok_and(|d| d == data))
}

/// Stage `node`'s image at `dest`: the golden copied (reflink or sparse), the seed written into
/// its `system-boot` partition. Returns the staged file (0600: user-data holds the token) and how
/// the golden was copied.
pub(crate) fn stage(
    golden_path: &Path,
    golden_open: &kiln_qcow2::OpenOptions,
    dest: &Path,
    seed: &NodeSeed,
    epoch: u64,
    cancel: &Cancel,
) -> Result<(AtomicFile, CopyMethod), Error> {
    let node = &seed.node;
    let host = sd_err(node, dest, ErrorKind::Host);
    let input = sd_err(node, dest, ErrorKind::Input);
    let file = AtomicFile::create(dest, 0o600).map_err(|source| Error::WriteOutput {
        path: dest.to_owned(),
        source,
    })?;
    let golden =
        kiln_qcow2::Disk::open(golden_path, golden_open).map_err(|source| Error::OpenGolden {
            path: golden_path.to_owned(),
            source: Box::new(source),
        })?;
    let how = match &golden {
        kiln_qcow2::Disk::Raw(src) => file.dev().copy_from(src, cancel).map_err(|e| {
            if e.kind() == ErrorKind::Cancelled {
                Error::Cancelled
            } else {
                host(format!("copying the golden image: {e}"))
            }
        })?,
        kiln_qcow2::Disk::Qcow2(_) => {
            kiln_qcow2::export_raw_into(&golden, file.dev(), dest, cancel, &|_, _| {}).map_err(
                |e| match e.kind() {
                    ErrorKind::Cancelled => Error::Cancelled,
                    _ => host(format!("exporting the golden image: {e}")),
                },
            )?;
            CopyMethod::Sparse
        }
    };
    cancel.check()?;
    let device = dest.display().to_string();
    let part = seed_partition(file.dev(), &device).map_err(&input)?;
    let win =
        kiln_partition::window(file.dev(), &device, &part).map_err(|e| input(e.to_string()))?;
    let epoch = i64::try_from(epoch).map_err(|_| input(format!("epoch {epoch} is too large")))?;
    let mut vol = kiln_vfat::Volume::open(&win, &device, kiln_vfat::OpenOptions::read_write(epoch))
        .map_err(|e| input(format!("opening {SD_CARD_SEED_LABEL}: {e}")))?;
    for (name, data) in seed.files() {
        vol.write(&format!("/{name}"), data)
            .map_err(|e| host(format!("writing {SD_CARD_SEED_LABEL}/{name}: {e}")))?;
    }
    vol.close()
        .map_err(|e| host(format!("closing {SD_CARD_SEED_LABEL}: {e}")))?;
    file.dev()
        .flush()
        .map_err(|e| host(format!("flushing: {e}")))?;
    Ok((file, how))
}
