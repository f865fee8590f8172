//! Writing a [`Plan`]: stage every changed file under a temporary name, then rename into place —
//! overlays, then seeds, then the inventory. Unchanged files are never touched.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_blockdev::AtomicFile;
use kiln_nocloud::SeedFormat;
use serde::Serialize;

use crate::inventory::{DiskRecord, INVENTORY_FILE, Inventory, NodeRecord, SeedRecord};
use crate::leftover::Leftover;
use crate::plan::{DiskAction, Plan};
use crate::{Error, hex};

/// What happened to one output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Updated,
    Unchanged,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Updated => "updated",
            Status::Unchanged => "unchanged",
        }
    }
}

/// The kind of an output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Disk,
    Seed,
    Inventory,
}

/// One output file and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    /// Relative to the cluster directory.
    pub path: String,
    pub kind: FileKind,
    /// The node it belongs to (`None` for the inventory).
    pub node: Option<String>,
    pub status: Status,
}

/// The result of [`Plan::apply`]: the inventory as written, the status of every file (nodes in
/// spec order, disk before seed, the inventory last) and the files left in place that no node of the
/// spec owns. Holds no secret.
///
/// JSON: `{"out_dir": …, "inventory": {…}, "files": [{path, kind, node, status}], "leftovers":
/// [{path, kind, node}]}` (`leftovers` is always present, `[]` when there are none).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub out_dir: PathBuf,
    pub inventory: Inventory,
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

/// Temporary files that are removed unless handed over.
#[derive(Default)]
struct Staged(Vec<PathBuf>);

impl Drop for Staged {
    fn drop(&mut self) {
        for p in &self.0 {
            // Best effort: a leftover temporary is replaced by the next run.
            let _ = fs::remove_file(p);
        }
    }
}

impl Plan {
    /// Write the plan. Seeds and the inventory are compared with what is on disk and only replaced
    /// (temporary file + rename) when their bytes differ; overlays are created or recreated as
    /// planned. The inventory is renamed into place last. [`Plan::leftovers`] are not touched.
    pub fn apply(self) -> Result<Report, Error> {
        let dir = &self.out_dir;
        fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
            path: dir.clone(),
            source,
        })?;

        let mut staged = Staged::default();
        let mut seeds = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            let tmp = dir.join(format!(".{}.kiln-new", n.seed_file));
            staged.0.push(tmp.clone());
            let digest = kiln_nocloud::write_seed(&n.seed, SeedFormat::Iso, self.opts.epoch, &tmp)
                .map_err(|source| Error::WriteSeed {
                    node: n.info.name.clone(),
                    path: dir.join(&n.seed_file),
                    source,
                })?;
            let bytes = fs::read(&tmp).map_err(|source| Error::ReadOutput {
                path: tmp.clone(),
                source,
            })?;
            let status = status_against(&dir.join(&n.seed_file), &bytes, Some(0o600))?;
            seeds.push((hex(&digest), status, tmp));
        }

        let mut overlays = Vec::new();
        for n in self.nodes.iter().filter(|n| n.disk != DiskAction::Keep) {
            let path = dir.join(&n.disk_file);
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

        let inventory = Inventory {
            kiln_inventory: Inventory::VERSION,
            cluster: self.cluster.clone(),
            golden: self.golden.clone(),
            nodes: self
                .nodes
                .iter()
                .zip(&seeds)
                .map(|(n, (sha256, _, _))| NodeRecord {
                    info: n.info.clone(),
                    disk: DiskRecord {
                        path: n.disk_file.clone(),
                        virtual_size: n.disk_size,
                    },
                    seed: SeedRecord {
                        path: n.seed_file.clone(),
                        sha256: sha256.clone(),
                    },
                })
                .collect(),
        };
        let inv_path = dir.join(INVENTORY_FILE);
        let inv_bytes = inventory.to_bytes()?;
        let inv_status = status_against(&inv_path, &inv_bytes, None)?;
        let inv_file = match inv_status {
            Status::Unchanged => None,
            _ => {
                let werr = |source| Error::WriteOutput {
                    path: inv_path.clone(),
                    source,
                };
                let f = AtomicFile::create(&inv_path, 0o644).map_err(werr)?;
                f.dev().write_at_grow(&inv_bytes, 0).map_err(werr)?;
                Some(f)
            }
        };

        // Everything is written; rename into place.
        for (node, path, pending) in overlays {
            pending.commit().map_err(|source| Error::Overlay {
                node,
                path,
                source: Box::new(source),
            })?;
        }
        let mut files = Vec::with_capacity(2 * self.nodes.len() + 1);
        for (n, (_, status, tmp)) in self.nodes.iter().zip(&seeds) {
            let dest = dir.join(&n.seed_file);
            let done = match status {
                Status::Unchanged => fs::remove_file(tmp),
                _ => fs::rename(tmp, &dest),
            };
            done.map_err(|source| Error::Replace {
                path: dest.clone(),
                source,
            })?;
            staged.0.retain(|p| p != tmp);
            files.push(FileReport {
                path: n.disk_file.clone(),
                kind: FileKind::Disk,
                node: Some(n.info.name.clone()),
                status: match n.disk {
                    DiskAction::Create => Status::Created,
                    DiskAction::Keep => Status::Unchanged,
                    DiskAction::Recreate => Status::Updated,
                },
            });
            files.push(FileReport {
                path: n.seed_file.clone(),
                kind: FileKind::Seed,
                node: Some(n.info.name.clone()),
                status: *status,
            });
        }
        if let Some(f) = inv_file {
            f.commit().map_err(|source| Error::WriteOutput {
                path: inv_path.clone(),
                source,
            })?;
        }
        files.push(FileReport {
            path: INVENTORY_FILE.into(),
            kind: FileKind::Inventory,
            node: None,
            status: inv_status,
        });
        Ok(Report {
            out_dir: self.out_dir,
            inventory,
            files,
            leftovers: self.leftovers,
        })
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
