//! The plan: everything decided and checked before the first write.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use kiln_nocloud::{Boot, ClusterSpec, NodeSeed, NodeSpec, Token};
use kiln_qcow2::{Disk, Header, Image};

use crate::inventory::{GoldenRecord, INVENTORY_FILE, Inventory, NodeInfo};
use crate::leftover::{self, Leftover};
use crate::{Error, Options, sdcard};

/// What happens to a node's overlay.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskAction {
    /// None exists: create it.
    Create,
    /// The existing one matches the plan: leave it alone.
    Keep,
    /// The existing one is stale and [`Options::recreate_disks`] is set: replace it.
    Recreate,
}

/// An existing overlay that no longer matches the plan.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleDisk {
    /// The node the overlay belongs to.
    pub node: String,
    /// The overlay.
    pub path: PathBuf,
    /// What differs (golden changed, size, backing name or format).
    pub reason: String,
}

/// One node of the plan.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct NodePlan {
    /// Who the node is, as the inventory records it.
    pub info: NodeInfo,
    /// File name of the overlay inside the cluster directory (`<node>.qcow2`), or of the SD-card
    /// image (`<node>.img`) for `boot: sd_card`.
    pub disk_file: String,
    /// Virtual size of the overlay in bytes (the golden's for an SD-card image).
    pub disk_size: u64,
    /// What happens to the overlay. For an SD-card image: `Create` when none exists, `Keep` when
    /// the existing one was made from the same golden image and carries this seed, else
    /// `Recreate` (an image file holds no node's data: the card does).
    pub disk: DiskAction,
    /// File name of the seed ISO inside the cluster directory (`<node>-seed.iso`); for
    /// `boot: sd_card`, the image the seed is written into (`<node>.img`).
    pub seed_file: String,
    /// The rendered seed (its user-data holds the token; `Debug` redacts it).
    pub(crate) seed: NodeSeed,
}

/// A checked plan; [`Plan::apply`] writes it.
#[derive(Debug)]
pub struct Plan {
    pub(crate) out_dir: PathBuf,
    pub(crate) golden_path: PathBuf,
    pub(crate) golden: GoldenRecord,
    pub(crate) cluster: String,
    pub(crate) nodes: Vec<NodePlan>,
    pub(crate) leftovers: Vec<Leftover>,
    pub(crate) opts: Options,
    pub(crate) boot: Boot,
}

impl Plan {
    /// The nodes, in spec order.
    pub fn nodes(&self) -> &[NodePlan] {
        &self.nodes
    }

    /// The golden image as the inventory records it.
    pub fn golden(&self) -> &GoldenRecord {
        &self.golden
    }

    /// The cluster directory.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Files in the cluster directory that no planned node owns; [`Plan::apply`] leaves them alone.
    pub fn leftovers(&self) -> &[Leftover] {
        &self.leftovers
    }
}

/// Check everything and decide what to write, without writing anything: the spec is validated, the
/// golden image opened read-only and hashed, every node's seed rendered and disk size checked, and
/// every existing overlay in `out_dir` compared with what the plan needs. Files no planned node owns
/// (see [`Leftover`]) are listed, never touched.
pub fn plan(
    spec: &ClusterSpec,
    token: &Token,
    golden: &Path,
    out_dir: &Path,
    opts: &Options,
) -> Result<Plan, Error> {
    opts.cancel.check()?;
    let (golden_size, golden_chain) = check_inputs(spec, golden, opts)?;
    let golden_abs = resolve(golden, golden.canonicalize())?;
    let dir_abs = resolve(out_dir, resolve_dir(out_dir))?;
    let golden_rel = resolve(golden, kiln_qcow2::relative_name(&dir_abs, &golden_abs))?;
    let sha256 = sha256_file(golden, &opts.cancel).map_err(|source| {
        if kiln_blockdev::Cancelled::is_in(&source) {
            Error::Cancelled
        } else {
            Error::HashGolden {
                path: golden.to_owned(),
                source,
            }
        }
    })?;
    if dir_abs.join(INVENTORY_FILE) == golden_abs {
        return Err(Error::OutputIsGolden {
            node: "(inventory)".into(),
            path: golden.to_owned(),
        });
    }
    let old_inventory = fs::read(out_dir.join(INVENTORY_FILE)).ok();
    let recorded = old_inventory
        .as_deref()
        .and_then(Inventory::recorded_golden_sha256);
    let wanted = Wanted {
        backing: &golden_rel,
        golden_sha256: &sha256,
        recorded: recorded.as_deref(),
    };

    let mut nodes = Vec::with_capacity(spec.nodes.len());
    let mut stale = Vec::new();
    let sd_card = spec.cluster.boot == Boot::SdCard;
    for node in &spec.nodes {
        opts.cancel.check()?;
        let disk_size = disk_size(spec, node, golden_size)?;
        let (disk_file, seed_file) = if sd_card {
            let img = format!("{}.img", node.name);
            (img.clone(), img)
        } else {
            (
                format!("{}.qcow2", node.name),
                kiln_nocloud::SeedFormat::Iso.file_name(&node.name),
            )
        };
        for f in [&disk_file, &seed_file] {
            if dir_abs.join(f) == golden_abs {
                return Err(Error::OutputIsGolden {
                    node: node.name.clone(),
                    path: golden.to_owned(),
                });
            }
        }
        let seed =
            kiln_nocloud::render_node(spec, node, token).map_err(|source| Error::Render {
                node: node.name.clone(),
                source,
            })?;
        let disk_path = out_dir.join(&disk_file);
        let disk = if sd_card {
            match fs::symlink_metadata(&disk_path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => DiskAction::Create,
                Ok(m)
                    if m.is_file()
                        && m.len() == golden_size
                        && recorded.as_deref() == Some(sha256.as_str())
                        && sdcard::has_seed(&disk_path, &seed) =>
                {
                    DiskAction::Keep
                }
                _ => DiskAction::Recreate,
            }
        } else {
            match check_existing(&disk_path, disk_size, &wanted) {
                None => DiskAction::Create,
                Some(Ok(())) => DiskAction::Keep,
                Some(Err(_)) if opts.recreate_disks => DiskAction::Recreate,
                Some(Err(reason)) => {
                    stale.push(StaleDisk {
                        node: node.name.clone(),
                        path: disk_path,
                        reason,
                    });
                    DiskAction::Recreate
                }
            }
        };
        nodes.push(NodePlan {
            info: NodeInfo {
                name: node.name.clone(),
                role: node.role,
                ipv4: node.ipv4,
                ipv6: node.ipv6,
                mac: node.mac,
                instance_id: seed.instance_id.clone(),
            },
            disk_file,
            disk_size,
            disk,
            seed_file,
            seed,
        });
    }
    if !stale.is_empty() {
        return Err(Error::StaleDisks(stale));
    }
    let owned: BTreeSet<String> = nodes
        .iter()
        .flat_map(|n| [n.disk_file.clone(), n.seed_file.clone()])
        .chain([INVENTORY_FILE.to_owned()])
        .collect();
    let leftovers = leftover::find(&leftover::Scan {
        dir: out_dir,
        old_inventory: old_inventory.as_deref(),
        owned: &owned,
        golden_chain: &golden_chain,
    })?;
    Ok(Plan {
        out_dir: out_dir.to_owned(),
        golden_path: golden.to_owned(),
        golden: GoldenRecord {
            path: golden_rel,
            sha256,
            virtual_size: golden_size,
        },
        cluster: spec.cluster.name.clone(),
        nodes,
        leftovers,
        opts: opts.clone(),
        boot: spec.cluster.boot,
    })
}

/// The checks that need neither the token nor the output directory: the spec validates, the golden
/// image is a usable qcow2 (opened read-only with its own chain, as `opts.golden_open` allows) and
/// every node's disk is at least as large as it. Returns the golden's virtual size. [`plan`] runs
/// it first; callers that must not write anything on bad input (such as creating the token file)
/// call it before loading the token.
pub fn preflight(spec: &ClusterSpec, golden: &Path, opts: &Options) -> Result<u64, Error> {
    check_inputs(spec, golden, opts).map(|(size, _)| size)
}

/// [`preflight`], also returning the canonical paths of the golden image and its backing chain.
fn check_inputs(
    spec: &ClusterSpec,
    golden: &Path,
    opts: &Options,
) -> Result<(u64, Vec<PathBuf>), Error> {
    spec.validate().map_err(Error::InvalidSpec)?;
    let read_only = kiln_qcow2::OpenOptions {
        write: false,
        ..opts.golden_open.clone()
    };
    let open_err = |source| Error::OpenGolden {
        path: golden.to_owned(),
        source: Box::new(source),
    };
    if spec.cluster.boot == Boot::SdCard {
        // Raw (as a Pi image is flashed) or qcow2; it must have the seed's FAT partition.
        let disk = Disk::open(golden, &read_only).map_err(open_err)?;
        sdcard::check_golden(&disk, &golden.display().to_string()).map_err(|message| {
            Error::GoldenNotSdCard {
                path: golden.to_owned(),
                message,
            }
        })?;
        let chain = disk
            .files()
            .into_iter()
            .filter_map(|p| p.canonicalize().ok())
            .collect();
        return Ok((kiln_blockdev::BlockDev::len(&disk), chain));
    }
    let img = Image::open(golden, &read_only).map_err(open_err)?;
    let golden_size = img.header().size;
    for node in &spec.nodes {
        disk_size(spec, node, golden_size)?;
    }
    let mut chain = vec![img.path().to_owned()];
    let mut next = img.backing();
    while let Some(b) = next {
        chain.push(b.path().to_owned());
        next = match b {
            kiln_qcow2::Backing::Qcow2(i) => i.backing(),
            kiln_qcow2::Backing::Raw { .. } => None,
        };
    }
    let chain = chain
        .into_iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    Ok((golden_size, chain))
}

/// A node's overlay size: its `disk_size` rounded up to 512 bytes, else the golden's.
fn disk_size(spec: &ClusterSpec, node: &NodeSpec, golden_size: u64) -> Result<u64, Error> {
    let size = match spec.disk_size_of(node) {
        Some(s) => s.div_ceil(512) * 512,
        None => golden_size,
    };
    if size < golden_size {
        return Err(Error::DiskTooSmall {
            node: node.name.clone(),
            size,
            golden_size,
        });
    }
    Ok(size)
}

fn resolve<T>(path: &Path, r: io::Result<T>) -> Result<T, Error> {
    r.map_err(|source| Error::ResolvePath {
        path: path.to_owned(),
        source,
    })
}

/// What an existing overlay must look like to be kept.
struct Wanted<'a> {
    backing: &'a str,
    golden_sha256: &'a str,
    /// The golden sha256 recorded by the previous run's inventory.
    recorded: Option<&'a str>,
}

/// `None` when there is no overlay at `path`; otherwise whether it can be kept, or why not.
fn check_existing(path: &Path, size: u64, want: &Wanted<'_>) -> Option<Result<(), String>> {
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(format!("cannot be inspected: {e}"))),
        Ok(m) => m,
    };
    if !meta.is_file() {
        return Some(Err("is not a regular file".into()));
    }
    Some(check_header(path, meta.len()).and_then(|h| {
        if h.backing_file.as_deref() != Some(want.backing) {
            return Err(format!(
                "its backing file is {:?}, the plan needs {:?}",
                h.backing_file.as_deref().unwrap_or("(none)"),
                want.backing
            ));
        }
        if let Some(f) = h.backing_format.as_deref().filter(|f| *f != "qcow2") {
            return Err(format!("its backing format is {f}, the plan needs qcow2"));
        }
        if h.size != size {
            return Err(format!(
                "its virtual size is {} bytes, the plan needs {size}",
                h.size
            ));
        }
        match want.recorded {
            None => Err(format!(
                "no readable {INVENTORY_FILE} records which golden image it was made from"
            )),
            Some(r) if r != want.golden_sha256 => Err(format!(
                "the golden image changed since it was made ({INVENTORY_FILE} records sha256 {r}, the golden is now {})",
                want.golden_sha256
            )),
            Some(_) => Ok(()),
        }
    }))
}

/// Parse the header of an existing overlay (read-only, at most the first 2 MiB, the largest cluster).
fn check_header(path: &Path, len: u64) -> Result<Header, String> {
    let mut buf = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(len.min(2 << 20)).read_to_end(&mut buf))
        .map_err(|e| format!("cannot be read: {e}"))?;
    Header::parse(&buf, len, path).map_err(|e| format!("is not a usable qcow2 image: {e}"))
}

/// The sha256 of the regular file at `path`, read in chunks with `cancel` checked before each.
fn sha256_file(path: &Path, cancel: &kiln_blockdev::Cancel) -> io::Result<String> {
    let (file, _) = kiln_common::digest::open_regular(path)?;
    let mut r = kiln_blockdev::CancelRead::new(file, cancel, |_| {});
    kiln_common::digest::sha256_reader(&mut r).map(|(sha, _)| sha)
}

/// `dir` made absolute and free of symlinks, even when (a tail of) it does not exist yet: the
/// longest existing ancestor is canonicalized and the missing names appended.
fn resolve_dir(dir: &Path) -> io::Result<PathBuf> {
    let mut missing = Vec::new();
    let mut cur = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    loop {
        match cur.canonicalize() {
            Ok(mut p) => {
                p.extend(missing.iter().rev());
                return Ok(p);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let name = cur.file_name().ok_or(e)?;
                missing.push(name.to_owned());
                cur = match cur.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_names_match_the_qcow2_crate_and_work_for_missing_dirs() {
        let d = tempfile::tempdir().expect("tempdir");
        let golden = d.path().join("img/golden.qcow2");
        fs::create_dir_all(golden.parent().expect("parent")).expect("mkdir");
        fs::write(&golden, b"x").expect("write");
        let golden = golden.canonicalize().expect("canon");
        for out in ["out/cluster", "img", "img/sub", "a/b/c"] {
            let dir = d.path().join(out);
            let planned = kiln_qcow2::relative_name(&resolve_dir(&dir).expect("resolve"), &golden)
                .expect("relative");
            fs::create_dir_all(&dir).expect("mkdir");
            let qcow2 = kiln_qcow2::relative_backing_name(&dir.join("n.qcow2"), &golden)
                .expect("qcow2 name");
            assert_eq!(planned, qcow2, "{out}");
        }
        assert_eq!(
            kiln_qcow2::relative_name(Path::new("/a/b"), Path::new("/a/g.qcow2")).expect("rel"),
            "../g.qcow2"
        );
    }

    #[test]
    fn resolve_dir_keeps_missing_tail() {
        let d = tempfile::tempdir().expect("tempdir");
        let base = d.path().canonicalize().expect("canon");
        assert_eq!(
            resolve_dir(&d.path().join("x/y")).expect("resolve"),
            base.join("x/y")
        );
    }
}
