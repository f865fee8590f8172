//! "Open the root filesystem of a disk": one way for the build, `verify`, `diff` and the CLI's
//! guest commands. The partition table is scanned, a partition selected (root detection by
//! default), and its ext4 filesystem opened over a window of the disk.

use std::path::Path;

/// Re-exported: the device trait [`find`] and [`with_fs`] take.
pub use kiln_blockdev::BlockDev;
/// Re-exported: what these functions take and hand over.
pub use kiln_ext4::Filesystem;
/// Re-exported: how [`with_fs`] opens the filesystem (read-only, or read-write with an epoch).
pub use kiln_ext4::OpenOptions as FsOpenOptions;
/// Re-exported: what these functions take and hand over.
pub use kiln_partition::{Partition, Selector};
/// Re-exported: what [`open_image`] returns.
pub use kiln_qcow2::Disk;
use kiln_qcow2::OpenOptions;

use crate::Error;

/// Opens a built image (qcow2 or raw) read-only; a backing file is looked up beside it.
pub fn open_image(image: &Path) -> Result<Disk, Error> {
    let dir = image
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| ".".into(), Path::to_owned);
    Disk::open(image, &OpenOptions::read_only().allow_backing_dir(dir)).map_err(|source| {
        Error::Qcow2 {
            op: "opening image",
            image: image.to_owned(),
            source: Box::new(source),
        }
    })
}

/// The partition `selector` picks on `disk` (`image` names it in errors).
pub fn find<D: BlockDev + ?Sized>(
    disk: &D,
    image: &Path,
    selector: Selector,
) -> Result<Partition, Error> {
    let perr = |source| Error::Partition {
        image: image.to_owned(),
        source: Box::new(source),
    };
    let table = kiln_partition::scan(disk, "image").map_err(perr)?;
    Ok(table.select(selector).map_err(perr)?.clone())
}

/// Opens the ext4 filesystem of `part` on `disk` with `opts` and hands it to `f`, which owns it
/// (and closes it when it wrote).
pub fn with_fs<D: BlockDev + ?Sized, T>(
    disk: &D,
    image: &Path,
    part: &Partition,
    opts: kiln_ext4::OpenOptions,
    f: impl FnOnce(Filesystem<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    let window =
        kiln_partition::window(disk, "image", part).map_err(|source| Error::Partition {
            image: image.to_owned(),
            source: Box::new(source),
        })?;
    let fs = Filesystem::open(&window, &format!("partition {}", part.number), opts).map_err(
        |source| Error::Ext4 {
            op: "opening the root filesystem",
            image: image.to_owned(),
            source: Box::new(source),
        },
    )?;
    f(fs)
}

/// [`find`] then [`with_fs`]: the selected partition's filesystem, read-only.
pub fn with_root_fs<D: BlockDev + ?Sized, T>(
    disk: &D,
    image: &Path,
    selector: Selector,
    f: impl FnOnce(Filesystem<'_>, &Partition) -> Result<T, Error>,
) -> Result<T, Error> {
    let part = find(disk, image, selector)?;
    with_fs(
        disk,
        image,
        &part,
        kiln_ext4::OpenOptions::read_only(),
        |fs| f(fs, &part),
    )
}
