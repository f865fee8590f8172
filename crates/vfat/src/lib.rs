//! Offline editing of an existing FAT12/16/32 filesystem — a Raspberry Pi `system-boot`
//! partition, an EFI system partition — over any kiln [`BlockDev`] (a partition window of a qcow2
//! overlay, a file, memory), without root and without mounting.
//!
//! ```text
//!   &dyn BlockDev (e.g. kiln_partition::window over an overlay Image)
//!        │  boot sector and FAT checked first (bpb.rs): not FAT, corrupt BPB, bad or looping
//!        │  chains are refused before the FAT driver sees the device
//!        ▼
//!   DevIo: Read + Write + Seek over the volume's bytes, unbuffered
//!        ▼
//!   fatfs::FileSystem (its clock: the caller's epoch, never the wall clock)
//!        ▼
//!   Volume: read · read_dir · stat · write (parents created) · create_dir_all · remove · close
//! ```
//!
//! Every date kiln-vfat writes (a new or replaced file's creation, modification and access date,
//! a new directory's) is the epoch given to [`OpenOptions::read_write`]; access dates are not
//! updated on reads. New directories are written the way `fsck.fat` expects ("." and ".." in
//! the first two slots). A panic of the FAT driver on a corrupt volume is caught and reported as
//! [`Error::Corrupt`]; the volume is then not written again.
//!
//! [`cmdline_add`] and [`config_lines`] are the pure text edits a Raspberry Pi boot partition
//! needs (`cmdline.txt`, `config.txt`).
//!
//! ```
//! use kiln_blockdev::MemDev;
//! use kiln_vfat::{OpenOptions, Volume, Written, cmdline_add};
//! # let mut tree = kiln_seedvol::Tree::new();
//! # tree.add_file("cmdline.txt", b"console=tty1 rootwait\n".to_vec(), 0o644)?;
//! # let opts = kiln_seedvol::VfatOptions { volume_label: "SYSTEM-BOOT".into(), epoch: 0 };
//! # let mut image = std::io::Cursor::new(Vec::new());
//! # kiln_seedvol::write_vfat_sized(&tree, &opts, Some(4 << 20), &mut image)?;
//! // A FAT volume holding /cmdline.txt, in memory here; a partition window in a build.
//! let dev = MemDev::from_vec(image.into_inner());
//! let mut vol = Volume::open(&dev, "system-boot", OpenOptions::read_write(1_767_225_600))?;
//! let line = String::from_utf8(vol.read("/cmdline.txt")?)?;
//! let line = cmdline_add(&line, &["cgroup_memory=1", "cgroup_enable=memory"]);
//! assert_eq!(vol.write("/cmdline.txt", line.as_bytes())?, Written::Replaced);
//! assert_eq!(vol.write("/overlays/kiln.txt", b"hi\n")?, Written::Created);
//! assert_eq!(vol.stat("/cmdline.txt")?.modified.to_string(), "2026-01-01 00:00:00");
//! vol.close()?;
//!
//! let vol = Volume::open(&dev, "system-boot", OpenOptions::read_only())?;
//! assert_eq!(vol.read("/CMDLINE.TXT")?, b"console=tty1 rootwait cgroup_memory=1 cgroup_enable=memory\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

mod bpb;
mod clock;
mod error;
mod io;
mod text;

use std::cell::Cell;
use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};

use kiln_blockdev::BlockDev;

pub use bpb::FatType;
pub use clock::Timestamp;
pub use error::{Error, Result};
pub use text::{cmdline_add, config_lines};

use bpb::Geometry;
use io::DevIo;

type Fs<'d> = fatfs::FileSystem<DevIo<'d>>;
type FatDir<'a, 'd> = fatfs::Dir<'a, DevIo<'d>>;
type FatEntry<'a, 'd> = fatfs::DirEntry<'a, DevIo<'d>>;

/// How [`Volume::open`] opens a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    epoch: Option<i64>,
}

impl OpenOptions {
    /// Read only: every write is refused ([`Error::ReadOnly`]) and nothing is written to the
    /// device, not even on close.
    pub fn read_only() -> Self {
        OpenOptions { epoch: None }
    }

    /// Read and write; every date written is `epoch` (seconds since 1970-01-01 UTC, e.g. a
    /// recipe's `source_date_epoch`) in FAT's form ([`Timestamp::from_epoch`]: before 1980 it
    /// is 1980-01-01, after 2107 the open fails).
    pub fn read_write(epoch: i64) -> Self {
        OpenOptions { epoch: Some(epoch) }
    }
}

/// What [`Volume::info`] tells about an open volume.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VolumeInfo {
    /// FAT12, FAT16 or FAT32.
    pub fat_type: FatType,
    /// The boot sector's volume label without its padding (`system-boot`, `UEFI`); `None` when
    /// empty or `NO NAME`.
    pub label: Option<String>,
    /// Bytes per cluster.
    pub cluster_size: u64,
    /// Data clusters.
    pub clusters: u32,
    /// Bytes the volume spans (may be less than the device).
    pub size: u64,
}

/// A directory entry ([`Volume::read_dir`], [`Volume::stat`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// The long name (or the 8.3 name when there is none, lower-cased as recorded).
    pub name: String,
    /// The 8.3 name (`CMDLINE.TXT`).
    pub short_name: String,
    /// A directory (else a file).
    pub is_dir: bool,
    /// A file's size in bytes (0 for a directory).
    pub size: u64,
    /// The modification time.
    pub modified: Timestamp,
}

/// What [`Volume::write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Written {
    /// The file did not exist.
    Created,
    /// The file existed with other contents; its contents and dates are replaced.
    Replaced,
    /// The file already held exactly these bytes; nothing was written, dates included.
    Unchanged,
}

impl Written {
    /// `created`, `replaced` or `unchanged`.
    pub fn as_str(self) -> &'static str {
        match self {
            Written::Created => "created",
            Written::Replaced => "replaced",
            Written::Unchanged => "unchanged",
        }
    }
}

/// An open FAT filesystem on a block device. Paths are absolute and `/`-separated (`/cmdline.txt`,
/// `/overlays/x.dtbo`) and looked up without regard to case, as FAT does.
///
/// Close a volume that was written with [`Volume::close`], which reports a failure to write the
/// FAT32 free-cluster hint; dropping it unmounts on a best-effort basis.
pub struct Volume<'d> {
    fs: Option<Fs<'d>>,
    dev: &'d dyn BlockDev,
    device: String,
    geo: Geometry,
    info: VolumeInfo,
    now: Option<Timestamp>,
    broken: Cell<bool>,
}

impl std::fmt::Debug for Volume<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("device", &self.device)
            .field("info", &self.info)
            .field("now", &self.now)
            .field("broken", &self.broken.get())
            .finish_non_exhaustive()
    }
}

fn io_err(op: &'static str, path: &str, device: &str) -> impl FnOnce(std::io::Error) -> Error {
    let (path, device) = (path.to_owned(), device.to_owned());
    move |source| Error::Io {
        op,
        path,
        device,
        source,
    }
}

/// Characters a FAT long name may hold besides letters, digits and non-ASCII characters.
const NAME_PUNCT: &str = "$%'-_@~`!(){}. +,;=[]^#&";

fn same_name(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || a.to_uppercase() == b.to_uppercase()
}

impl<'d> Volume<'d> {
    /// Opens the FAT filesystem at the start of `dev`; `device` names it in errors (a partition
    /// label, `image.qcow2 partition 1`). The boot sector and the whole FAT are checked first;
    /// anything else is [`Error::NotFat`] or [`Error::CorruptFat`]. A volume marked dirty opens
    /// read-only as it is and is refused for writing ([`Error::Unclean`]).
    pub fn open(dev: &'d dyn BlockDev, device: &str, opts: OpenOptions) -> Result<Volume<'d>> {
        let not_fat = |reason: String| Error::NotFat {
            device: device.to_owned(),
            reason,
        };
        let now = match opts.epoch {
            Some(epoch) => {
                Some(Timestamp::from_epoch(epoch).ok_or(Error::EpochOutOfRange { epoch })?)
            }
            None => None,
        };
        if dev.len() < 512 {
            return Err(not_fat(format!(
                "{} bytes is less than a boot sector",
                dev.len()
            )));
        }
        let dev_err = |op| {
            let device = device.to_owned();
            move |e: kiln_blockdev::Error| Error::Io {
                op,
                path: String::new(),
                device,
                source: std::io::Error::other(e),
            }
        };
        let mut bs = [0u8; 512];
        dev.read_at(&mut bs, 0)
            .map_err(dev_err("reading the boot sector"))?;
        let geo = bpb::parse(&bs, dev.len()).map_err(not_fat)?;
        geo.check_fat(dev)
            .map_err(dev_err("reading the FAT"))?
            .map_err(|reason| Error::CorruptFat {
                device: device.to_owned(),
                reason,
            })?;
        let mut options = fatfs::FsOptions::new().update_accessed_date(false);
        if let Some(t) = now {
            options = options.time_provider(clock::clock(t));
        }
        let io = DevIo::new(dev, geo.volume_bytes, now.is_some());
        let fs = catch_unwind(AssertUnwindSafe(|| fatfs::FileSystem::new(io, options)))
            .map_err(|_| not_fat("the FAT driver gave up on it".into()))?
            .map_err(|e| not_fat(e.to_string()))?;
        if now.is_some() {
            let flags = catch_unwind(AssertUnwindSafe(|| fs.read_status_flags()))
                .map_err(|_| not_fat("the FAT driver gave up on it".into()))?
                .map_err(io_err("reading the status flags", "", device))?;
            if flags.dirty() || flags.io_error() {
                return Err(Error::Unclean {
                    device: device.to_owned(),
                });
            }
        }
        let info = VolumeInfo {
            fat_type: geo.fat_type,
            label: geo.label.clone(),
            cluster_size: geo.cluster_bytes,
            clusters: geo.clusters,
            size: geo.volume_bytes,
        };
        Ok(Volume {
            fs: Some(fs),
            dev,
            device: device.to_owned(),
            geo,
            info,
            now,
            broken: Cell::new(false),
        })
    }

    /// The volume's type, label and size.
    pub fn info(&self) -> &VolumeInfo {
        &self.info
    }

    /// The contents of the file at `path`.
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        const OP: &str = "reading";
        let (parents, name) = file_path(OP, path)?;
        self.run(OP, path, |fs| {
            let dir = self.walk(fs, OP, path, &parents, false)?;
            let e = self.find_or_fail(&dir, OP, path, name)?;
            if e.is_dir() {
                return Err(self.wrong(OP, path, "is a directory"));
            }
            let mut data = Vec::new();
            e.to_file()
                .read_to_end(&mut data)
                .map_err(io_err(OP, path, &self.device))?;
            Ok(data)
        })
    }

    /// The entry at `path` (not the root directory, which has none).
    pub fn stat(&self, path: &str) -> Result<Entry> {
        const OP: &str = "looking up";
        let (parents, name) = file_path(OP, path)?;
        self.run(OP, path, |fs| {
            let dir = self.walk(fs, OP, path, &parents, false)?;
            Ok(entry(&self.find_or_fail(&dir, OP, path, name)?))
        })
    }

    /// The entries of the directory at `path` (`/` for the root), in directory order, without
    /// `.`, `..` and the volume label.
    pub fn read_dir(&self, path: &str) -> Result<Vec<Entry>> {
        const OP: &str = "listing";
        let comps = components(OP, path)?;
        self.run(OP, path, |fs| {
            let dir = self.walk(fs, OP, path, &comps, false)?;
            let mut out = Vec::new();
            for e in dir.iter() {
                let e = e.map_err(io_err(OP, path, &self.device))?;
                let n = e.file_name();
                if n != "." && n != ".." {
                    out.push(entry(&e));
                }
            }
            Ok(out)
        })
    }

    /// Writes `data` as the file at `path`, creating it and its missing parent directories, or
    /// replacing what it held. Dates of a created or replaced file (and of created directories)
    /// are the open's epoch; a file that already holds `data` is left alone
    /// ([`Written::Unchanged`]). A name equal to another entry's 8.3 alias is refused
    /// ([`Error::AliasCollision`]).
    pub fn write(&mut self, path: &str, data: &[u8]) -> Result<Written> {
        const OP: &str = "writing";
        let now = self.writable(OP, path)?;
        if data.len() as u64 > u64::from(u32::MAX) {
            return Err(Error::TooLarge {
                op: OP,
                path: path.to_owned(),
                size: data.len() as u64,
            });
        }
        let (parents, name) = file_path(OP, path)?;
        self.run(OP, path, |fs| {
            let dir = self.walk(fs, OP, path, &parents, true)?;
            let err = || io_err(OP, path, &self.device);
            let (mut file, written) = match self.find(&dir, OP, path, name)? {
                Some((e, true)) => {
                    if e.is_dir() {
                        return Err(self.wrong(OP, path, "is a directory"));
                    }
                    if e.len() == data.len() as u64 {
                        let mut old = Vec::new();
                        e.to_file().read_to_end(&mut old).map_err(err())?;
                        if old == data {
                            return Ok(Written::Unchanged);
                        }
                    }
                    let mut f = e.to_file();
                    f.truncate().map_err(err())?;
                    (f, Written::Replaced)
                }
                Some((e, false)) => {
                    return Err(Error::AliasCollision {
                        op: OP,
                        path: path.to_owned(),
                        other: e.file_name(),
                    });
                }
                None => {
                    check_new_name(OP, path, name)?;
                    (dir.create_file(name).map_err(err())?, Written::Created)
                }
            };
            file.write_all(data).map_err(err())?;
            #[allow(deprecated)] // fatfs's setters: the clock already gives `now`; set all three.
            {
                file.set_created(now.to_fat());
                file.set_accessed(now.to_fat().date);
                file.set_modified(now.to_fat());
            }
            file.flush().map_err(err())?;
            Ok(written)
        })
    }

    /// Creates the directory at `path` and its missing parents (dates: the open's epoch). An
    /// existing directory is fine; an existing file is [`Error::WrongKind`].
    pub fn create_dir_all(&mut self, path: &str) -> Result<()> {
        const OP: &str = "creating directory";
        self.writable(OP, path)?;
        let comps = components(OP, path)?;
        self.run(OP, path, |fs| {
            self.walk(fs, OP, path, &comps, true).map(drop)
        })
    }

    /// Removes the file or empty directory at `path`.
    pub fn remove(&mut self, path: &str) -> Result<()> {
        const OP: &str = "removing";
        self.writable(OP, path)?;
        let (parents, name) = file_path(OP, path)?;
        self.run(OP, path, |fs| {
            let dir = self.walk(fs, OP, path, &parents, false)?;
            let e = self.find_or_fail(&dir, OP, path, name)?;
            dir.remove(&e.file_name())
                .map_err(io_err(OP, path, &self.device))
        })
    }

    /// Unmounts: writes the FAT32 free-cluster hint and clears the dirty mark fatfs set while
    /// writing, then flushes the device. A read-only volume writes nothing.
    #[must_use = "a failed close means the volume may not be complete"]
    pub fn close(mut self) -> Result<()> {
        const OP: &str = "closing";
        if self.broken.get() {
            return Err(self.corrupt(OP, ""));
        }
        let Some(fs) = self.fs.take() else {
            return Ok(());
        };
        if self.now.is_none() {
            drop(fs);
            return Ok(());
        }
        match catch_unwind(AssertUnwindSafe(|| fs.unmount())) {
            Ok(r) => r.map_err(io_err(OP, "", &self.device))?,
            Err(_) => {
                self.broken.set(true);
                return Err(self.corrupt(OP, ""));
            }
        }
        self.dev.flush().map_err(|e| Error::Io {
            op: "flushing",
            path: String::new(),
            device: self.device.clone(),
            source: std::io::Error::other(e),
        })
    }
}

/// Helpers of the operations above.
impl<'d> Volume<'d> {
    fn corrupt(&self, op: &'static str, path: &str) -> Error {
        Error::Corrupt {
            op,
            path: path.to_owned(),
            device: self.device.clone(),
        }
    }

    fn wrong(&self, op: &'static str, path: &str, what: &'static str) -> Error {
        Error::WrongKind {
            op,
            path: path.to_owned(),
            what,
        }
    }

    fn writable(&self, op: &'static str, path: &str) -> Result<Timestamp> {
        self.now.ok_or_else(|| Error::ReadOnly {
            op,
            path: path.to_owned(),
            device: self.device.clone(),
        })
    }

    /// Runs `f` on the filesystem, turning a panic of the FAT driver into [`Error::Corrupt`] and
    /// refusing every later call.
    fn run<T>(
        &self,
        op: &'static str,
        path: &str,
        f: impl FnOnce(&Fs<'d>) -> Result<T>,
    ) -> Result<T> {
        let fs = match &self.fs {
            Some(fs) if !self.broken.get() => fs,
            _ => return Err(self.corrupt(op, path)),
        };
        match catch_unwind(AssertUnwindSafe(|| f(fs))) {
            Ok(r) => r,
            Err(_) => {
                self.broken.set(true);
                Err(self.corrupt(op, path))
            }
        }
    }

    /// The entry named `name` in `dir`: by its long name (`true`), else by its 8.3 name
    /// (`false`).
    fn find<'a>(
        &self,
        dir: &FatDir<'a, 'd>,
        op: &'static str,
        path: &str,
        name: &str,
    ) -> Result<Option<(FatEntry<'a, 'd>, bool)>> {
        let mut short = None;
        for e in dir.iter() {
            let e = e.map_err(io_err(op, path, &self.device))?;
            let n = e.file_name();
            if n == "." || n == ".." {
                continue;
            }
            if same_name(&n, name) {
                return Ok(Some((e, true)));
            }
            if short.is_none() && same_name(&e.short_file_name(), name) {
                short = Some(e);
            }
        }
        Ok(short.map(|e| (e, false)))
    }

    fn find_or_fail<'a>(
        &self,
        dir: &FatDir<'a, 'd>,
        op: &'static str,
        path: &str,
        name: &str,
    ) -> Result<FatEntry<'a, 'd>> {
        self.find(dir, op, path, name)?
            .map(|(e, _)| e)
            .ok_or_else(|| Error::NotFound {
                op,
                path: path.to_owned(),
            })
    }

    /// The directory `comps` names, created (with its parents) when `create` is set.
    fn walk<'a>(
        &self,
        fs: &'a Fs<'d>,
        op: &'static str,
        path: &str,
        comps: &[&str],
        create: bool,
    ) -> Result<FatDir<'a, 'd>> {
        let mut dir = fs.root_dir();
        // The 8.3 names of the directories walked, to find a new directory's cluster.
        let mut short_names = Vec::new();
        for (i, name) in comps.iter().enumerate() {
            let here = format!("/{}", comps[..=i].join("/"));
            match self.find(&dir, op, path, name)? {
                Some((e, by_long)) if e.is_dir() && (by_long || !create) => {
                    short_names.push(e.short_file_name_as_bytes().to_vec());
                    dir = e.to_dir();
                }
                Some((e, _)) if e.is_dir() => {
                    return Err(Error::AliasCollision {
                        op,
                        path: here,
                        other: e.file_name(),
                    });
                }
                Some(_) => return Err(self.wrong(op, &here, "not a directory")),
                None if !create => return Err(Error::NotFound { op, path: here }),
                None => {
                    check_new_name(op, &here, name)?;
                    let new = dir.create_dir(name).map_err(io_err(
                        "creating directory",
                        &here,
                        &self.device,
                    ))?;
                    let e = self.find_or_fail(&dir, op, &here, name)?;
                    short_names.push(e.short_file_name_as_bytes().to_vec());
                    self.fix_new_dir(&short_names).map_err(|e| {
                        io_err("creating directory", &here, &self.device)(std::io::Error::other(e))
                    })?;
                    dir = new;
                }
            }
        }
        Ok(dir)
    }

    /// Finds the directory the 8.3 names lead to by reading the directories raw, and puts its
    /// "." and ".." entries where `fsck.fat` wants them ([`Geometry::fix_new_dir`]).
    fn fix_new_dir(&self, short_names: &[Vec<u8>]) -> kiln_blockdev::Result<()> {
        let mut cluster = 0;
        for n in short_names {
            let Some(raw) = bpb::raw_short_name(n) else {
                return Ok(());
            };
            match self.geo.find_subdir(self.dev, cluster, &raw)? {
                Some(c) => cluster = c,
                None => return Ok(()),
            }
        }
        self.geo.fix_new_dir(self.dev, cluster)
    }
}

impl Drop for Volume<'_> {
    fn drop(&mut self) {
        // A volume the driver panicked on is left as it is: fatfs would write on drop.
        if self.broken.get() {
            std::mem::forget(self.fs.take());
        }
    }
}

fn entry(e: &FatEntry<'_, '_>) -> Entry {
    Entry {
        name: e.file_name(),
        short_name: e.short_file_name(),
        is_dir: e.is_dir(),
        size: if e.is_dir() { 0 } else { e.len() },
        modified: Timestamp::from_fat(e.modified()),
    }
}

/// The components of an absolute, normalised path (none for `/`).
fn components<'p>(op: &'static str, path: &'p str) -> Result<Vec<&'p str>> {
    let bad = |reason| Error::BadPath {
        op,
        path: path.to_owned(),
        reason,
    };
    let Some(rest) = path.strip_prefix('/') else {
        return Err(bad("must be absolute"));
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let comps: Vec<&str> = rest.split('/').collect();
    if comps
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(bad("must be normalised (no empty, '.' or '..' components)"));
    }
    Ok(comps)
}

/// The parent components and the last one of a path that must not be the root.
fn file_path<'p>(op: &'static str, path: &'p str) -> Result<(Vec<&'p str>, &'p str)> {
    let mut comps = components(op, path)?;
    match comps.pop() {
        Some(name) => Ok((comps, name)),
        None => Err(Error::BadPath {
            op,
            path: path.to_owned(),
            reason: "must not be the root directory",
        }),
    }
}

/// Refuses names FAT cannot record faithfully.
fn check_new_name(op: &'static str, path: &str, name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::BadPath {
            op,
            path: path.to_owned(),
            reason,
        })
    };
    if !name.chars().all(|c| {
        c.is_ascii_alphanumeric() || (!c.is_ascii() && !c.is_control()) || NAME_PUNCT.contains(c)
    }) {
        return bad("FAT names cannot hold control characters or \" * / : < > ? \\ |");
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return bad("FAT names cannot end in a dot or a space");
    }
    if name.encode_utf16().count() > 255 {
        return bad("FAT names have at most 255 UTF-16 units");
    }
    Ok(())
}
