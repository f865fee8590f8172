//! Opening an image and its backing chain: where a backing file may live (inside the allowed
//! directory, no protocols, no cycles, a bounded depth) and the names recorded for one.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, RwLock};

use kiln_blockdev::{BlockDev, FileDev};

use super::{DEFAULT_MAX_CHAIN_DEPTH, Image, MAX_L1_BYTES, Storage, is_qcow2};
use crate::error::{Error, Result};
use crate::header::Header;

/// How to open an image.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Open the top image for writing (its backing images are always read-only).
    pub write: bool,
    /// Directory every backing file must resolve inside. `None`: the top image's own directory.
    pub allowed_backing_dir: Option<PathBuf>,
    /// Maximum number of images in the chain below the top one.
    pub max_chain_depth: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            write: false,
            allowed_backing_dir: None,
            max_chain_depth: DEFAULT_MAX_CHAIN_DEPTH,
        }
    }
}

impl OpenOptions {
    /// The defaults: read-only, backing files confined to the top image's directory, chains up
    /// to [`DEFAULT_MAX_CHAIN_DEPTH`] images.
    pub fn read_only() -> Self {
        Self::default()
    }
    /// The defaults, with the top image opened for writing.
    pub fn read_write() -> Self {
        Self {
            write: true,
            ..Self::default()
        }
    }
    /// Let backing files resolve anywhere inside `dir` (which must exist).
    pub fn allow_backing_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.allowed_backing_dir = Some(dir.into());
        self
    }
}

/// A backing image: another qcow2 (itself possibly backed) or a raw file.
#[derive(Debug)]
pub enum Backing {
    /// A qcow2 backing image, opened read-only.
    Qcow2(Box<Image>),
    /// A raw backing file: guest byte `n` is file byte `n`.
    Raw {
        /// The canonical path of the file.
        path: PathBuf,
        /// The file, opened read-only.
        dev: FileDev,
    },
}

impl Backing {
    /// Virtual size in bytes (for a raw file, its length). Guest reads past it return zeros.
    pub fn len(&self) -> u64 {
        match self {
            Backing::Qcow2(i) => i.len(),
            Backing::Raw { dev, .. } => dev.len(),
        }
    }
    /// Whether the size is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The path the backing image was opened from.
    pub fn path(&self) -> &Path {
        match self {
            Backing::Qcow2(i) => i.path(),
            Backing::Raw { path, .. } => path,
        }
    }
    pub(super) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        match self {
            Backing::Qcow2(i) => i.read(buf, offset),
            Backing::Raw { path, dev } => dev.read_at(buf, offset).map_err(|e| Error::Device {
                image: path.clone(),
                op: "read backing file",
                source: e,
            }),
        }
    }
}

impl Image {
    /// Open a qcow2 file and its backing chain.
    pub fn open(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Image> {
        let path = path.as_ref();
        let dev_err = |e| Error::Device {
            image: path.to_owned(),
            op: "open",
            source: e,
        };
        let dev = if opts.write {
            FileDev::open_read_write(path)
        } else {
            FileDev::open_read_only(path)
        }
        .map_err(dev_err)?;
        let canonical = path
            .canonicalize()
            .map_err(|e| Error::path(path, "resolve path", path, e))?;
        let allowed = match &opts.allowed_backing_dir {
            Some(d) => d
                .canonicalize()
                .map_err(|e| Error::path(d, "resolve the allowed backing directory", d, e))?,
            None => canonical.parent().unwrap_or(Path::new("/")).to_owned(),
        };
        let mut seen = HashSet::from([canonical.clone()]);
        Self::open_inner(
            Box::new(dev),
            path.to_owned(),
            &canonical,
            opts.write,
            &allowed,
            opts.max_chain_depth,
            &mut seen,
        )
    }

    /// Open an image held in arbitrary storage. A backing file it names is resolved relative to
    /// `name`'s directory and must lie inside `allowed_backing_dir`.
    pub fn open_storage(
        storage: Box<dyn Storage>,
        name: impl Into<PathBuf>,
        opts: &OpenOptions,
    ) -> Result<Image> {
        let name = name.into();
        let dir = opts
            .allowed_backing_dir
            .clone()
            .or_else(|| name.parent().map(Path::to_owned))
            .unwrap_or_else(|| PathBuf::from("/"));
        let allowed = dir.canonicalize().unwrap_or(dir);
        let mut seen = HashSet::new();
        let canonical = name.clone();
        Self::open_inner(
            storage,
            name,
            &canonical,
            opts.write,
            &allowed,
            opts.max_chain_depth,
            &mut seen,
        )
    }

    fn open_inner(
        file: Box<dyn Storage>,
        path: PathBuf,
        canonical: &Path,
        write: bool,
        allowed: &Path,
        depth_left: usize,
        seen: &mut HashSet<PathBuf>,
    ) -> Result<Image> {
        let file_len = file.len();
        let mut head = vec![0u8; file_len.min(2 << 20) as usize];
        file.read_at(&mut head, 0).map_err(|e| Error::Device {
            image: path.clone(),
            op: "read header",
            source: e,
        })?;
        let header = Header::parse(&head, file_len, &path)?;
        if write && header.is_dirty() {
            return Err(Error::Unsupported {
                image: path,
                feature: "writing an image with the dirty bit set (its refcounts may be stale; \
                          kiln reads it, but writes only clean images: `qemu-img check -r all` on \
                          a copy repairs one)"
                    .to_owned(),
            });
        }
        if header.l1_size as u64 * 8 > MAX_L1_BYTES {
            return Err(Error::InvalidHeader {
                image: path,
                field: "l1_size",
                value: header.l1_size as u64,
            });
        }
        let mut l1_bytes = vec![0u8; header.l1_size as usize * 8];
        file.read_at(&mut l1_bytes, header.l1_table_offset)
            .map_err(|e| Error::Device {
                image: path.clone(),
                op: "read L1 table",
                source: e,
            })?;
        let l1: Vec<u64> = l1_bytes
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();

        let backing = match &header.backing_file {
            None => None,
            Some(name) => Some(Self::open_backing(
                &path,
                canonical,
                name,
                header.backing_format.as_deref(),
                allowed,
                depth_left,
                seen,
            )?),
        };

        let mut image = Image {
            file,
            path,
            header,
            backing,
            l1: RwLock::new(l1),
            l2_cache: Mutex::new(HashMap::new()),
            zcache: Mutex::new(Vec::new()),
            write: None,
        };
        if write {
            image.begin_write()?;
        }
        Ok(image)
    }

    fn open_backing(
        image: &Path,
        canonical: &Path,
        name: &str,
        format: Option<&str>,
        allowed: &Path,
        depth_left: usize,
        seen: &mut HashSet<PathBuf>,
    ) -> Result<Backing> {
        let invalid = |reason| Error::BackingNameInvalid {
            image: image.to_owned(),
            name: name.to_owned(),
            reason,
        };
        if name.starts_with("json:") || name.contains("://") {
            return Err(invalid("protocol and json: backing names are never opened"));
        }
        if depth_left == 0 {
            return Err(Error::BackingChainTooDeep {
                image: image.to_owned(),
                max: DEFAULT_MAX_CHAIN_DEPTH,
            });
        }
        let dir = canonical.parent().unwrap_or(Path::new("/"));
        let joined = dir.join(name);
        let resolved = joined
            .canonicalize()
            .map_err(|e| Error::path(image, "open backing file", &joined, e))?;
        if !resolved.starts_with(allowed) {
            return Err(Error::BackingOutsideAllowedDir {
                image: image.to_owned(),
                backing: resolved,
                allowed: allowed.to_owned(),
            });
        }
        if !seen.insert(resolved.clone()) {
            return Err(Error::BackingChainCycle {
                image: image.to_owned(),
                backing: resolved,
            });
        }
        let dev = FileDev::open_read_only(&resolved).map_err(|e| Error::Device {
            image: image.to_owned(),
            op: "open backing file",
            source: e,
        })?;
        let as_qcow2 = match format {
            Some("qcow2") => true,
            Some("raw") => false,
            Some(other) => {
                return Err(Error::Unsupported {
                    image: image.to_owned(),
                    feature: format!("backing format {other:?}"),
                });
            }
            None => is_qcow2(&dev),
        };
        if as_qcow2 {
            let img = Self::open_inner(
                Box::new(dev),
                resolved.clone(),
                &resolved,
                false,
                allowed,
                depth_left - 1,
                seen,
            )?;
            Ok(Backing::Qcow2(Box::new(img)))
        } else {
            Ok(Backing::Raw {
                path: resolved,
                dev,
            })
        }
    }
}

/// The name to record in `overlay` for `backing`: relative to the overlay's directory.
pub fn relative_backing_name(overlay: &Path, backing: &Path) -> std::io::Result<String> {
    let odir = overlay
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    relative_name(&odir.canonicalize()?, &backing.canonicalize()?)
}

/// `to` relative to the directory `from_dir` (both absolute and canonical), as the UTF-8 name qemu
/// resolves against an overlay's directory. For callers that plan an overlay in a directory that
/// does not exist yet; [`relative_backing_name`] is the usual entry.
pub fn relative_name(from_dir: &Path, to: &Path) -> std::io::Result<String> {
    let oc: Vec<Component<'_>> = from_dir.components().collect();
    let bc: Vec<Component<'_>> = to.components().collect();
    let common = oc.iter().zip(&bc).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..oc.len() {
        rel.push("..");
    }
    for c in &bc[common..] {
        rel.push(c.as_os_str());
    }
    rel.into_os_string().into_string().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "backing path is not UTF-8",
        )
    })
}
