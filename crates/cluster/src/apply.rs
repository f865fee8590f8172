//! Writing a [`Plan`]: stage every changed file under a temporary name, then rename into place —
//! overlays, then seeds, then the inventory. Unchanged files are never touched.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_blockdev::{AtomicFile, NewDirs};
use kiln_nocloud::{Boot, SeedFormat};
use kiln_qcow2::PendingOverlay;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::inventory::{DiskRecord, INVENTORY_FILE, Inventory, NodeRecord, SeedRecord};
use crate::leftover::Leftover;
use crate::plan::{DiskAction, Plan};
use crate::{Error, hex, sdcard};

/// What happened to one output file.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The file did not exist and was written.
    Created,
    /// The file existed with other content and was replaced (temporary file and rename).
    Updated,
    /// The file already had exactly the content the plan wants: not touched (same inode, same
    /// mtime).
    Unchanged,
}

impl Status {
    /// `created`, `updated` or `unchanged`, as the JSON report writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Updated => "updated",
            Status::Unchanged => "unchanged",
        }
    }
}

/// The kind of an output file.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// A node's qcow2 overlay, `<node>.qcow2`.
    Disk,
    /// A node's flashable SD-card image, `<node>.img` (`boot: sd_card`): the golden image with
    /// the node's seed in its `system-boot` partition.
    SdCard,
    /// A node's NoCloud seed volume, `<node>-seed.iso`.
    Seed,
    /// The directory's `inventory.json`.
    Inventory,
}

/// One output file and what happened to it.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReport {
    /// Relative to the cluster directory.
    pub path: String,
    /// What the file is.
    pub kind: FileKind,
    /// The node it belongs to (`None` for the inventory).
    pub node: Option<String>,
    /// What this run did to it.
    pub status: Status,
}

/// The result of [`Plan::apply`]: the inventory as written, the status of every file (nodes in
/// spec order, disk before seed, the inventory last) and the files left in place that no node of the
/// spec owns. Holds no secret.
///
/// JSON: `{"out_dir": …, "inventory": {…}, "files": [{path, kind, node, status}], "leftovers":
/// [{path, kind, node}]}` (`leftovers` is always present, `[]` when there are none).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The cluster directory, as the caller named it.
    pub out_dir: PathBuf,
    /// The inventory as written to `inventory.json`.
    pub inventory: Inventory,
    /// Every output file of the plan and what happened to it.
    pub files: Vec<FileReport>,
    /// Overlays and seeds of nodes no longer in the spec (and any other `*.qcow2` / `*-seed.iso`
    /// no node owns): never deleted, no longer in the inventory. See [`Leftover`].
    pub leftovers: Vec<Leftover>,
}

impl Report {
    /// The status of the file at `path` (relative to the cluster directory).
    pub fn status_of(&self, path: &str) -> Option<Status> {
        self.files.iter().find(|f| f.path == path).map(|f| f.status)
    }
}

/// An output whose new bytes are staged under the temporary name (or not at all, when the file
/// on disk already holds them).
struct Staged {
    status: Status,
    file: Option<AtomicFile>,
}

impl Staged {
    /// Compares `bytes` (and, if `same_mode`, the permission bits `mode`) with `dest` and stages
    /// them, created with `mode`, when they differ.
    fn new(dest: &Path, bytes: &[u8], mode: u32, same_mode: bool) -> Result<Self, Error> {
        let status = status_against(dest, bytes, same_mode.then_some(mode))?;
        let file = match status {
            Status::Unchanged => None,
            _ => {
                let werr = |source| Error::WriteOutput {
                    path: dest.to_owned(),
                    source,
                };
                let f = AtomicFile::create(dest, mode).map_err(werr)?;
                f.dev().write_at_grow(bytes, 0).map_err(werr)?;
                Some(f)
            }
        };
        Ok(Staged { status, file })
    }

    /// Renames the staged bytes into place (nothing to do when unchanged).
    fn commit(self) -> Result<Status, Error> {
        if let Some(f) = self.file {
            let path = f.dest().to_owned();
            f.commit()
                .map_err(|source| Error::WriteOutput { path, source })?;
        }
        Ok(self.status)
    }
}

impl Plan {
    /// Write the plan. Seeds and the inventory are compared with what is on disk and only replaced
    /// (temporary file + rename) when their bytes differ; overlays are created or recreated as
    /// planned. The inventory is renamed into place last. [`Plan::leftovers`] are not touched.
    /// [`Options::cancel`](crate::Options::cancel) is checked per node and before the first rename; a cancelled apply
    /// returns [`Error::Cancelled`] and leaves no file changed.
    pub fn apply(self) -> Result<Report, Error> {
        let dir = &self.out_dir;
        self.opts.cancel.check()?;
        // Directories made here are removed again if the apply fails or is cancelled.
        let new_dirs = NewDirs::create_all(dir).map_err(|source| Error::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let (seeds, digests) = self.stage_seeds()?;
        let overlays = self.begin_overlays()?;
        let cards = self.stage_cards()?;
        let inventory = self.inventory(&digests);
        let inv_path = dir.join(INVENTORY_FILE);
        let inv = Staged::new(&inv_path, &inventory.to_bytes()?, 0o644, false)?;

        // Everything is written: the last chance to stop (dropping the staged files removes them).
        // Then rename into place: overlays, seeds, the inventory last.
        self.opts.cancel.check()?;
        for (node, path, pending) in overlays {
            pending.commit().map_err(|source| Error::Overlay {
                node,
                path,
                source: Box::new(source),
            })?;
        }
        for card in cards {
            let path = card.dest().to_owned();
            card.commit()
                .map_err(|source| Error::WriteOutput { path, source })?;
        }
        let mut files = Vec::with_capacity(2 * self.nodes.len() + 1);
        let mut seeds = seeds.into_iter();
        for n in &self.nodes {
            let status = match n.disk {
                DiskAction::Create => Status::Created,
                DiskAction::Keep => Status::Unchanged,
                DiskAction::Recreate => Status::Updated,
            };
            if self.boot == Boot::SdCard {
                files.push(FileReport {
                    path: n.disk_file.clone(),
                    kind: FileKind::SdCard,
                    node: Some(n.info.name.clone()),
                    status,
                });
                continue;
            }
            files.push(FileReport {
                path: n.disk_file.clone(),
                kind: FileKind::Disk,
                node: Some(n.info.name.clone()),
                status,
            });
            if let Some(seed) = seeds.next() {
                files.push(FileReport {
                    path: n.seed_file.clone(),
                    kind: FileKind::Seed,
                    node: Some(n.info.name.clone()),
                    status: seed.commit()?,
                });
            }
        }
        files.push(FileReport {
            path: INVENTORY_FILE.into(),
            kind: FileKind::Inventory,
            node: None,
            status: inv.commit()?,
        });
        new_dirs.keep();
        Ok(Report {
            out_dir: self.out_dir,
            inventory,
            files,
            leftovers: self.leftovers,
        })
    }

    /// Every node's seed volume built and, where it changed, staged; with its sha256. For
    /// SD-card nodes nothing is staged here (the seed goes into the image) and the digest is
    /// that of the seed's files.
    fn stage_seeds(&self) -> Result<(Vec<Staged>, Vec<String>), Error> {
        let mut staged = Vec::with_capacity(self.nodes.len());
        let mut digests = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            self.opts.cancel.check()?;
            if self.boot == Boot::SdCard {
                digests.push(sdcard::seed_digest(&n.seed));
                continue;
            }
            let dest = self.out_dir.join(&n.seed_file);
            let bytes = kiln_nocloud::seed_volume(&n.seed, SeedFormat::Iso, self.opts.epoch, &dest)
                .map_err(|source| Error::WriteSeed {
                    node: n.info.name.clone(),
                    path: dest.clone(),
                    source,
                })?;
            digests.push(hex(&Sha256::digest(&bytes)));
            staged.push(Staged::new(&dest, &bytes, 0o600, true)?);
        }
        Ok((staged, digests))
    }

    /// The SD-card images to create or recreate, written under their temporary names.
    fn stage_cards(&self) -> Result<Vec<AtomicFile>, Error> {
        let mut cards = Vec::new();
        if self.boot != Boot::SdCard {
            return Ok(cards);
        }
        for n in self.nodes.iter().filter(|n| n.disk != DiskAction::Keep) {
            self.opts.cancel.check()?;
            let (file, _) = sdcard::stage(
                &self.golden_path,
                &self.opts.golden_open,
                &self.out_dir.join(&n.disk_file),
                &n.seed,
                self.opts.epoch,
                &self.opts.cancel,
            )?;
            cards.push(file);
        }
        Ok(cards)
    }

    /// The overlays to create or recreate, written under their temporary names.
    fn begin_overlays(&self) -> Result<Vec<(String, PathBuf, PendingOverlay)>, Error> {
        let mut overlays = Vec::new();
        if self.boot == Boot::SdCard {
            return Ok(overlays);
        }
        for n in self.nodes.iter().filter(|n| n.disk != DiskAction::Keep) {
            self.opts.cancel.check()?;
            let path = self.out_dir.join(&n.disk_file);
            let pending = kiln_qcow2::begin_overlay(
                &path,
                &self.golden_path,
                Some(n.disk_size),
                &self.opts.golden_open,
            )
            .map_err(|source| Error::Overlay {
                node: n.info.name.clone(),
                path: path.clone(),
                source: Box::new(source),
            })?;
            overlays.push((n.info.name.clone(), path, pending));
        }
        Ok(overlays)
    }

    /// The inventory of the plan, given each node's seed sha256.
    fn inventory(&self, seed_sha256: &[String]) -> Inventory {
        Inventory {
            kiln_inventory: Inventory::VERSION,
            cluster: self.cluster.clone(),
            golden: self.golden.clone(),
            nodes: self
                .nodes
                .iter()
                .zip(seed_sha256)
                .map(|(n, sha256)| NodeRecord {
                    info: n.info.clone(),
                    disk: DiskRecord {
                        path: n.disk_file.clone(),
                        virtual_size: n.disk_size,
                    },
                    seed: SeedRecord {
                        path: n.seed_file.clone(),
                        sha256: sha256.clone(),
                        partition: (self.boot == Boot::SdCard)
                            .then(|| kiln_nocloud::SD_CARD_SEED_LABEL.to_owned()),
                    },
                })
                .collect(),
        }
    }
}

/// Whether writing `new` to `dest` would create it, change it, or leave it as it is (same bytes and,
/// when given, the same permission bits).
fn status_against(dest: &Path, new: &[u8], mode: Option<u32>) -> Result<Status, Error> {
    let rerr = |source| Error::ReadOutput {
        path: dest.to_owned(),
        source,
    };
    let old = match fs::read(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Status::Created),
        r => r.map_err(rerr)?,
    };
    let same_mode = match mode {
        None => true,
        Some(m) => fs::metadata(dest).map_err(rerr)?.permissions().mode() & 0o7777 == m,
    };
    Ok(if old == new && same_mode {
        Status::Unchanged
    } else {
        Status::Updated
    })
}
