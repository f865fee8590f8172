//! kiln-cluster: everything a cluster's nodes need to boot from one golden image, in one directory.
//!
//! ```text
//! ClusterSpec (validated) + Token + GOLDEN.qcow2
//!        │
//!   plan │  no writes: golden opened read-only (virtual size, sha256), every seed rendered, every
//!        ▼  disk size checked, every existing overlay compared with what the plan needs
//!      Plan ── apply ──▶ DIR/<node>.qcow2       overlay backed by ../GOLDEN (relative), per-node size
//!                        DIR/<node>-seed.iso    NoCloud seed (0600, dates from the epoch)
//!                        DIR/inventory.json     cluster, golden {path, sha256, size}, nodes (no token)
//! ```
//!
//! **Idempotent.** A file whose would-be content equals what is on disk is not touched (same inode,
//! same mtime); a changed one is replaced through a temporary file and a rename. An existing overlay
//! is kept only when its backing name, backing format and virtual size match the plan *and* the
//! inventory it was written with records the same golden sha256. Otherwise it is stale and the plan
//! is refused ([`Error::StaleDisks`]) unless [`Options::recreate_disks`] is set: a disk may hold a
//! booted node's data and is never discarded silently.
//!
//! **Nothing half-written.** The whole plan (spec, golden, sizes, existing disks) is checked before
//! the first write; every output goes through a temporary file renamed into place; the inventory is
//! renamed last, so it never records a golden that the overlays beside it were not made from.
//!
//! **Nothing deleted.** Files of nodes no longer in the spec (named by the previous inventory), and
//! any other `*.qcow2` / `*-seed.iso` in the directory that no current node owns, are left in place
//! and listed in [`Report::leftovers`]; the new inventory no longer lists them.
//!
//! A provisioner makes the spec in code and hands the token over from its own secret store; no
//! spec file and no token file are needed:
//!
//! ```
//! use kiln_cluster::{Cluster, ClusterSpec, Network, NodeSpec, Options, Status, Subnet, Token, build};
//! # let dir = tempfile::tempdir()?;
//! # let golden = dir.path().join("golden.qcow2");
//! # {   // a blank 64 MiB golden image, standing in for a built one
//! #     let f = kiln_blockdev::AtomicFile::create(&golden, 0o644)?;
//! #     let opts = kiln_qcow2::CreateOptions {
//! #         size: 64 << 20, cluster_bits: 16, compression: kiln_qcow2::CompressionType::Zlib, backing: None,
//! #     };
//! #     kiln_qcow2::Image::create(Box::new(f.shared()), golden.clone(), opts)?.close()?;
//! #     f.commit()?;
//! # }
//! let network = Network::new(Subnet::new("10.0.0.0/24".parse()?, "10.0.0.1".parse()?))
//!     .with_interface("ens3");
//! let spec = ClusterSpec::new(
//!     Cluster::new("lab", "v1.34.3+k3s1", network),
//!     vec![
//!         NodeSpec::server("cp-01", "10.0.0.10".parse()?).with_mac("52:54:00:00:00:10".parse()?),
//!         NodeSpec::agent("w-01", "10.0.0.11".parse()?).with_mac("52:54:00:00:00:11".parse()?),
//!     ],
//! );
//! let token = Token::new("from-your-secret-store");
//! let out = dir.path().join("cluster");
//! let report = build(&spec, &token, &golden, &out, &Options::default())?;
//! assert_eq!(report.inventory.nodes.len(), 2);
//! assert!(report.files.iter().all(|f| f.status == Status::Created));
//! // Run again: nothing changes, nothing is rewritten.
//! let again = build(&spec, &token, &golden, &out, &Options::default())?;
//! assert!(again.files.iter().all(|f| f.status == Status::Unchanged));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! From a spec file, the token lives in the file the spec names:
//!
//! ```no_run
//! use kiln_cluster::{ClusterSpec, Options, Token, build};
//! let spec = ClusterSpec::load("cluster.yaml".as_ref())?; // checked: every problem at once
//! let token_file = spec.token_path().ok_or("the spec names no token_file")?;
//! let token = Token::load_or_create(&token_file)?;
//! let report = build(&spec, &token, "out/golden.qcow2".as_ref(), "out/cluster".as_ref(), &Options::default())?;
//! for f in &report.files {
//!     println!("{} {}", f.path, f.status.as_str());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod apply;
mod inventory;
mod leftover;
mod plan;
#[cfg(test)]
mod roundtrip;
mod sdcard;

use std::path::PathBuf;

pub use apply::{FileKind, FileReport, Report, Status};
pub use inventory::{
    DiskRecord, GoldenRecord, INVENTORY_FILE, Inventory, NodeInfo, NodeRecord, SeedRecord,
};
pub use leftover::Leftover;
pub use plan::{DiskAction, NodePlan, Plan, StaleDisk, plan, preflight};

pub use kiln_blockdev::{Cancel, ErrorKind};
pub use kiln_nocloud::{
    ByteSize, Cluster, ClusterSpec, MacAddr, Network, NodeSpec, Problem, Problems, Role, Subnet,
    Token,
};
/// How [`Options::golden_open`] opens the golden image (read-only; chain depth and size limits).
pub use kiln_qcow2::OpenOptions;

/// How [`build`] runs.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Options {
    /// Seconds since the epoch stamped on every date in the seed volumes (`SOURCE_DATE_EPOCH`).
    pub epoch: u64,
    /// Replace stale overlays (golden changed, size or backing differ) instead of refusing.
    pub recreate_disks: bool,
    /// How the golden image (and its own backing chain) is opened; always read-only.
    pub golden_open: kiln_qcow2::OpenOptions,
    /// Trip it (from any thread, a signal handler included) to stop [`plan`] or [`Plan::apply`]:
    /// checked per chunk of the golden image hashed, per node planned, per node's seed and overlay
    /// staged, and last before the first rename. A cancelled run returns [`Error::Cancelled`] and
    /// leaves what a failed one leaves: every staged file removed, no file changed. Once the
    /// renames have begun the run completes.
    pub cancel: Cancel,
}

/// A provisioner plans on one thread and applies or cancels on others.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Options>();
    send_sync::<Plan>();
    send_sync::<Report>();
};

impl Options {
    /// Stamp `epoch` (seconds since the epoch) on the seed volumes' dates; refuse stale disks,
    /// open the golden with the default limits, with a cancel handle nobody holds.
    pub fn new(epoch: u64) -> Self {
        Options {
            epoch,
            ..Self::default()
        }
    }

    /// Replace stale overlays instead of refusing ([`Options::recreate_disks`]).
    #[must_use]
    pub fn with_recreate_disks(mut self, recreate: bool) -> Self {
        self.recreate_disks = recreate;
        self
    }

    /// Open the golden image with `open` ([`Options::golden_open`]).
    #[must_use]
    pub fn with_golden_open(mut self, open: kiln_qcow2::OpenOptions) -> Self {
        self.golden_open = open;
        self
    }

    /// Stop when `cancel` is tripped ([`Options::cancel`]).
    #[must_use]
    pub fn with_cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = cancel;
        self
    }
}

/// Plan and apply in one call: write (or keep) every node's overlay and seed and the inventory.
pub fn build(
    spec: &ClusterSpec,
    token: &Token,
    golden: &std::path::Path,
    out_dir: &std::path::Path,
    opts: &Options,
) -> Result<Report, Error> {
    plan(spec, token, golden, out_dir, opts)?.apply()
}

/// Everything that can go wrong; each variant names the operation and the node or path. No
/// variant holds the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The run's [`Options::cancel`] was tripped; nothing was left behind. Kind: cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The cluster directory cannot be created. Kind: host.
    #[error("creating output directory {path}")]
    CreateDir {
        /// The cluster directory.
        path: PathBuf,
        /// The failed I/O.
        source: std::io::Error,
    },
    /// A node's `disk_size` (or the cluster's) is below the golden image's virtual size: an
    /// overlay cannot be smaller than its backing file. Kind: input.
    #[error(
        "node {node:?}: disk_size {size} bytes is smaller than the golden image's virtual size {golden_size} bytes (set disk_size to at least that, or leave it out to use the golden's size)"
    )]
    DiskTooSmall {
        /// The node.
        node: String,
        /// Its disk size in bytes.
        size: u64,
        /// The golden image's virtual size in bytes.
        golden_size: u64,
    },
    /// Reading the golden image to hash it failed. Kind: host.
    #[error("hashing golden image {path}")]
    HashGolden {
        /// The golden image.
        path: PathBuf,
        /// The failed I/O.
        source: std::io::Error,
    },
    /// The spec fails validation (the inner error lists every problem). Kind: input.
    #[error("validating the cluster spec")]
    InvalidSpec(#[source] kiln_nocloud::Error),
    /// The cluster directory cannot be listed (to find existing overlays and leftovers). Kind:
    /// host.
    #[error("listing output directory {path}")]
    ListDir {
        /// The cluster directory.
        path: PathBuf,
        /// The failed I/O.
        source: std::io::Error,
    },
    /// Writing a node's overlay failed. Kind: host.
    #[error("node {node:?}: writing overlay {path}")]
    Overlay {
        /// The node.
        node: String,
        /// The overlay.
        path: PathBuf,
        /// What the qcow2 engine reported.
        source: Box<kiln_qcow2::Error>,
    },
    /// The golden image (or its backing chain) cannot be opened as qcow2 or raw. Kind: the inner
    /// error's (input for a malformed or missing image).
    #[error("opening golden image {path}")]
    OpenGolden {
        /// The golden image.
        path: PathBuf,
        /// What the qcow2 engine reported.
        source: Box<kiln_qcow2::Error>,
    },
    /// `boot: sd_card`, but the golden image has no FAT partition labelled `system-boot` for the
    /// nodes' seeds. Kind: input.
    #[error("golden image {path} cannot make SD-card nodes: {message}")]
    GoldenNotSdCard {
        /// The golden image.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
    /// A node's output file is the golden image itself (e.g. the golden lives in the cluster
    /// directory under a node's file name). Kind: input.
    #[error("node {node:?}: output {path} would overwrite the golden image")]
    OutputIsGolden {
        /// The node.
        node: String,
        /// The output path.
        path: PathBuf,
    },
    /// The golden image's or the cluster directory's absolute path cannot be found (the overlay's
    /// relative backing name is derived from both). Kind: input.
    #[error("resolving {path}")]
    ResolvePath {
        /// The path.
        path: PathBuf,
        /// The failed I/O.
        source: std::io::Error,
    },
    /// An existing output (overlay header, seed, inventory) cannot be read to compare it with the
    /// plan. Kind: host.
    #[error("reading existing output {path}")]
    ReadOutput {
        /// The existing file.
        path: PathBuf,
        /// The failed I/O.
        source: std::io::Error,
    },
    /// A node's seed cannot be rendered. Kind: the inner error's.
    #[error("node {node:?}: rendering the seed")]
    Render {
        /// The node.
        node: String,
        /// What rendering reported.
        source: kiln_nocloud::Error,
    },
    /// An SD-card node's image cannot be made: copying the golden image, or writing the seed into
    /// its `system-boot` partition, failed. Kind: as recorded (host for I/O, input for a
    /// partition that is not usable FAT).
    #[error("node {node:?}: SD-card image {path}: {message}")]
    SdCard {
        /// The node.
        node: String,
        /// The image being written.
        path: PathBuf,
        /// What failed.
        message: String,
        /// Who is at fault.
        kind: ErrorKind,
    },
    /// The inventory failed to serialise: a bug. Kind: internal.
    #[error("serializing the inventory: {message}")]
    SerializeInventory {
        /// The serialiser's message.
        message: String,
    },
    /// Existing overlays no longer match the plan (golden changed, size or backing differ) and
    /// [`Options::recreate_disks`] is not set: they may hold a booted node's data. Kind: input.
    #[error("{}", stale_message(.0))]
    StaleDisks(Vec<StaleDisk>),
    /// Writing a node's seed volume failed. Kind: host.
    #[error("node {node:?}: writing seed {path}")]
    WriteSeed {
        /// The node.
        node: String,
        /// The seed file.
        path: PathBuf,
        /// What the seed writer reported.
        source: kiln_nocloud::Error,
    },
    /// Writing the inventory (or another whole file) through its temporary name failed. Kind:
    /// host.
    #[error("writing {path}")]
    WriteOutput {
        /// The output file.
        path: PathBuf,
        /// What the temporary file reported.
        source: kiln_blockdev::Error,
    },
}

impl Error {
    /// Who is at fault: the spec, the golden image and existing disks are the caller's input;
    /// writing the cluster directory is the host's; a cancelled run is [`ErrorKind::Cancelled`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::DiskTooSmall { .. }
            | Error::InvalidSpec(_)
            | Error::OutputIsGolden { .. }
            | Error::GoldenNotSdCard { .. }
            | Error::ResolvePath { .. }
            | Error::StaleDisks(_) => ErrorKind::Input,
            Error::OpenGolden { source, .. } => source.kind(),
            Error::Render { source, .. } => source.kind(),
            Error::SdCard { kind, .. } => *kind,
            Error::SerializeInventory { .. } => ErrorKind::Internal,
            Error::Cancelled => ErrorKind::Cancelled,
            _ => ErrorKind::Host,
        }
    }
}

impl From<kiln_blockdev::Cancelled> for Error {
    fn from(_: kiln_blockdev::Cancelled) -> Self {
        Error::Cancelled
    }
}

fn stale_message(stale: &[StaleDisk]) -> String {
    let mut s = format!(
        "{} existing overlay(s) no longer match the plan; they may hold a booted node's data, so kiln \
         will not replace them unless you pass --recreate-disks (Options::recreate_disks):",
        stale.len()
    );
    for d in stale {
        s.push_str(&format!(
            "\n  - node {:?}: {}: {}",
            d.node,
            d.path.display(),
            d.reason
        ));
    }
    s
}

pub(crate) use kiln_common::digest::hex;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SPEC: &str = r#"
cluster:
  name: lab
  k3s: { version: v1.34.3+k3s1, token_file: token }
  network:
    match: mac
    interface: ens3
    ipv4: { cidr: 192.168.122.0/24, gateway: 192.168.122.1 }
  disk_size: 96M
nodes:
  - { name: cp, role: server, ipv4: 192.168.122.10, mac: "52:54:00:00:00:10" }
  - { name: w1, role: agent, ipv4: 192.168.122.11, mac: "52:54:00:00:00:11", disk_size: 128M }
"#;

    fn spec(dir: &Path, text: &str) -> ClusterSpec {
        let mut s = ClusterSpec::from_yaml(text, "t.yaml".as_ref()).expect("parse");
        s.base_dir = dir.to_owned();
        s
    }

    fn golden(path: &Path, size: u64) {
        let f = kiln_blockdev::AtomicFile::create(path, 0o644).expect("create");
        let img = kiln_qcow2::Image::create(
            Box::new(f.shared()),
            path.to_owned(),
            kiln_qcow2::CreateOptions {
                size,
                cluster_bits: 16,
                compression: kiln_qcow2::CompressionType::Zlib,
                backing: None,
            },
        )
        .expect("image");
        img.write(b"golden", 0).expect("write");
        img.close().expect("close");
        f.commit().expect("commit");
    }

    fn statuses(r: &Report) -> Vec<(&str, Status)> {
        r.files
            .iter()
            .map(|f| (f.path.as_str(), f.status))
            .collect()
    }

    #[test]
    fn build_is_idempotent_and_refuses_stale_disks() {
        let d = tempfile::tempdir().expect("tempdir");
        let g = d.path().join("golden.qcow2");
        golden(&g, 64 << 20);
        let out = d.path().join("out/cluster");
        let s = spec(d.path(), SPEC);
        let token = Token::new("sekrit-token-value");
        let opts = Options::default();
        let r = build(&s, &token, &g, &out, &opts).expect("build");
        assert!(r.files.iter().all(|f| f.status == Status::Created));
        assert_eq!(r.inventory.golden.path, "../../golden.qcow2");
        assert_eq!(r.inventory.nodes[0].disk.virtual_size, 96 << 20);
        assert_eq!(r.inventory.nodes[1].disk.virtual_size, 128 << 20);
        let inv = std::fs::read_to_string(out.join(INVENTORY_FILE)).expect("inventory");
        assert!(!inv.contains("sekrit"));

        let again = build(&s, &token, &g, &out, &opts).expect("rebuild");
        assert!(again.files.iter().all(|f| f.status == Status::Unchanged));
        assert_eq!(again.inventory, r.inventory);

        // A changed node: only its seed (and the inventory) change.
        let s2 = spec(
            d.path(),
            &SPEC.replace("role: agent,", "role: agent, labels: { a: b },"),
        );
        let changed = build(&s2, &token, &g, &out, &opts).expect("change");
        assert_eq!(
            statuses(&changed),
            vec![
                ("cp.qcow2", Status::Unchanged),
                ("cp-seed.iso", Status::Unchanged),
                ("w1.qcow2", Status::Unchanged),
                ("w1-seed.iso", Status::Updated),
                (INVENTORY_FILE, Status::Updated),
            ]
        );
        assert_ne!(
            changed.inventory.nodes[1].info.instance_id,
            r.inventory.nodes[1].info.instance_id
        );

        // A new golden makes every overlay stale.
        golden(&g, 64 << 20);
        let img =
            kiln_qcow2::Image::open(&g, &kiln_qcow2::OpenOptions::read_write()).expect("open");
        img.write(b"changed", 4096).expect("write");
        img.close().expect("close");
        let err = build(&s2, &token, &g, &out, &opts).expect_err("stale");
        assert!(err.kind() == ErrorKind::Input);
        let msg = err.to_string();
        assert!(
            msg.contains("\"cp\"") && msg.contains("\"w1\"") && msg.contains("--recreate-disks"),
            "{msg}"
        );
        let recreate = Options {
            recreate_disks: true,
            ..Options::default()
        };
        let r3 = build(&s2, &token, &g, &out, &recreate).expect("recreate");
        assert_eq!(r3.status_of("cp.qcow2"), Some(Status::Updated));
        assert_eq!(r3.status_of("cp-seed.iso"), Some(Status::Unchanged));
        let r4 = build(&s2, &token, &g, &out, &opts).expect("after recreate");
        assert!(r4.files.iter().all(|f| f.status == Status::Unchanged));

        // Without the inventory nothing vouches for the overlays' golden; a foreign file is no overlay.
        std::fs::remove_file(out.join(INVENTORY_FILE)).expect("rm inventory");
        let err = build(&s2, &token, &g, &out, &opts).expect_err("no inventory");
        assert!(
            err.to_string().contains("no readable inventory.json"),
            "{err}"
        );
        build(&s2, &token, &g, &out, &recreate).expect("recreate without inventory");
        std::fs::write(out.join("cp.qcow2"), b"not an image").expect("clobber");
        let err = build(&s2, &token, &g, &out, &opts).expect_err("garbage overlay");
        let msg = err.to_string();
        assert!(
            msg.contains("\"cp\"") && msg.contains("not a usable qcow2") && !msg.contains("\"w1\""),
            "{msg}"
        );
        // No temporaries left behind.
        for e in std::fs::read_dir(&out).expect("ls") {
            let n = e.expect("entry").file_name();
            assert!(!n.to_string_lossy().starts_with('.'), "{n:?}");
        }
    }

    /// name → (inode, mtime, mtime nanoseconds).
    fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, (u64, i64, i64)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::read_dir(dir)
            .expect("ls")
            .map(|e| {
                let e = e.expect("entry");
                let m = e.metadata().expect("stat");
                let name = e.file_name().to_string_lossy().into_owned();
                (name, (m.ino(), m.mtime(), m.mtime_nsec()))
            })
            .collect()
    }

    #[test]
    fn removed_nodes_files_are_reported_and_left_in_place() {
        let d = tempfile::tempdir().expect("tempdir");
        // The golden lives in the cluster directory itself: it is never a leftover.
        let out = d.path().join("cluster");
        std::fs::create_dir(&out).expect("mkdir");
        let g = out.join("golden.qcow2");
        golden(&g, 64 << 20);
        let token = Token::new("t");
        let opts = Options::default();
        let r = build(&spec(d.path(), SPEC), &token, &g, &out, &opts).expect("build");
        assert_eq!(r.leftovers, vec![]);
        std::fs::write(out.join("stray-seed.iso"), b"not ours").expect("stray");
        let before = snapshot(&out);

        let w1_line = SPEC
            .lines()
            .find(|l| l.contains("name: w1"))
            .expect("w1 line");
        let without = spec(d.path(), &SPEC.replace(&format!("{w1_line}\n"), ""));
        assert_eq!(without.nodes.len(), 1);
        let plan = plan(&without, &token, &g, &out, &opts).expect("plan");
        let leftover = |path: &str, kind, node: Option<&str>| Leftover {
            path: path.into(),
            kind,
            node: node.map(str::to_owned),
        };
        let want = vec![
            leftover("w1.qcow2", FileKind::Disk, Some("w1")),
            leftover("w1-seed.iso", FileKind::Seed, Some("w1")),
            leftover("stray-seed.iso", FileKind::Seed, None),
        ];
        assert_eq!(plan.leftovers(), want);
        let r = plan.apply().expect("apply");
        assert_eq!(r.leftovers, want);
        assert_eq!(
            statuses(&r),
            vec![
                ("cp.qcow2", Status::Unchanged),
                ("cp-seed.iso", Status::Unchanged),
                (INVENTORY_FILE, Status::Updated),
            ]
        );
        let after = snapshot(&out);
        assert_eq!(after.len(), before.len(), "{after:?}");
        for (name, id) in &before {
            assert_eq!(after[name] != *id, name == INVENTORY_FILE, "{name}");
        }
        let inv = std::fs::read_to_string(out.join(INVENTORY_FILE)).expect("inventory");
        assert!(!inv.contains("w1"), "{inv}");
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(
            json["leftovers"][0],
            serde_json::json!({"path": "w1.qcow2", "kind": "disk", "node": "w1"})
        );

        // Next run: the inventory no longer names w1, so its files are still listed, unattributed.
        let again = build(&without, &token, &g, &out, &opts).expect("again");
        let paths: Vec<(&str, Option<&str>)> = again
            .leftovers
            .iter()
            .map(|l| (l.path.as_str(), l.node.as_deref()))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("stray-seed.iso", None),
                ("w1-seed.iso", None),
                ("w1.qcow2", None)
            ]
        );
        assert!(again.files.iter().all(|f| f.status == Status::Unchanged));
        assert_eq!(snapshot(&out), after);

        // w1 back in the spec: its overlay (same golden, same size) is kept, nothing is left over
        // but the stray seed.
        let back = build(&spec(d.path(), SPEC), &token, &g, &out, &opts).expect("back");
        assert_eq!(back.status_of("w1.qcow2"), Some(Status::Unchanged));
        assert_eq!(back.status_of("w1-seed.iso"), Some(Status::Unchanged));
        assert_eq!(
            back.leftovers,
            vec![leftover("stray-seed.iso", FileKind::Seed, None)]
        );
    }

    #[test]
    fn cancelled_runs_change_nothing() {
        let d = tempfile::tempdir().expect("tempdir");
        let g = d.path().join("golden.qcow2");
        golden(&g, 64 << 20);
        let golden_sha = sha256_file(&g);
        let out = d.path().join("out/cluster");
        let s = spec(d.path(), SPEC);
        let token = Token::new("t");
        let tripped = || {
            let c = Cancel::new();
            c.cancel();
            Options {
                cancel: c,
                ..Options::default()
            }
        };
        // Before the plan, and between plan and apply: a new directory is not even left behind.
        let err = build(&s, &token, &g, &out, &tripped()).expect_err("cancelled plan");
        assert!(matches!(err, Error::Cancelled), "{err}");
        assert_eq!(err.kind(), ErrorKind::Cancelled);
        let cancel = Cancel::new();
        let opts = Options {
            cancel: cancel.clone(),
            ..Options::default()
        };
        let p = plan(&s, &token, &g, &out, &opts).expect("plan");
        std::thread::spawn(move || cancel.cancel())
            .join()
            .expect("trip");
        let err = p.apply().expect_err("cancelled apply");
        assert!(matches!(err, Error::Cancelled), "{err}");
        assert!(!d.path().join("out").exists());

        // Over an existing cluster whose next run would change a seed and recreate every disk:
        // nothing changes, nothing is left.
        build(&s, &token, &g, &out, &Options::default()).expect("build");
        let before = snapshot(&out);
        let changed = spec(
            d.path(),
            &SPEC.replace("role: agent,", "role: agent, labels: { a: b },"),
        );
        let recreate = Options {
            recreate_disks: true,
            ..Options::default()
        };
        let p = plan(&changed, &token, &g, &out, &recreate).expect("plan");
        p.opts.cancel.cancel();
        let err = p.apply().expect_err("cancelled apply");
        assert!(matches!(err, Error::Cancelled), "{err}");
        assert_eq!(snapshot(&out), before);
        assert_eq!(sha256_file(&g), golden_sha);
    }

    fn sha256_file(p: &Path) -> String {
        kiln_common::digest::sha256_file(p).expect("hash").0
    }

    #[test]
    fn bad_inputs_write_nothing() {
        let d = tempfile::tempdir().expect("tempdir");
        let g = d.path().join("golden.qcow2");
        golden(&g, 256 << 20);
        let out = d.path().join("out");
        let token = Token::new("t");
        let err = build(&spec(d.path(), SPEC), &token, &g, &out, &Options::default())
            .expect_err("too small");
        assert!(
            matches!(err, Error::DiskTooSmall { ref node, .. } if node == "cp"),
            "{err}"
        );
        assert!(err.kind() == ErrorKind::Input);
        let raw = d.path().join("raw.img");
        std::fs::write(&raw, vec![0u8; 1 << 20]).expect("raw");
        let err = build(
            &spec(d.path(), SPEC),
            &token,
            &raw,
            &out,
            &Options::default(),
        )
        .expect_err("not qcow2");
        assert!(err.kind() == ErrorKind::Input, "{err}");
        let err = build(
            &spec(d.path(), SPEC),
            &token,
            &d.path().join("missing.qcow2"),
            &out,
            &Options::default(),
        )
        .expect_err("missing");
        assert!(err.kind() == ErrorKind::Input, "{err}");
        let clash = spec(
            d.path(),
            &SPEC
                .replace("name: cp,", "name: golden,")
                .replace("  disk_size: 96M\n", "")
                .replace(", disk_size: 128M", ""),
        );
        let err = build(&clash, &token, &g, d.path(), &Options::default())
            .expect_err("output is the golden");
        assert!(matches!(err, Error::OutputIsGolden { .. }), "{err}");
        assert!(!out.exists());
    }
}
