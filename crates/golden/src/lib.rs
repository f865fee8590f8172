//! kiln's golden-image pipeline: a typed recipe names a pinned base cloud image, the scrub ops, the
//! pinned k3s release and the prerequisites; [`build`] turns it into a scrubbed, k3s-ready qcow2
//! and a JSON manifest — offline, without a VM, byte-for-byte reproducible.
//!
//! ```text
//!  Recipe::load / Recipe::new ─► build(): named steps over one context
//!    open-base (sha256 pin) → overlay → find-rootfs → scrub → k3s → prerequisites
//!    → normalise-times → close → boot-files → output (temp name) → manifest → commit (rename both)
//! ```
//!
//! Nothing appears under the output names unless every step succeeded: the image and the manifest
//! are written under temporary names and renamed at the very end; inputs are opened read-only.
//!
//! # Example
//!
//! A recipe made in code (the same value `Recipe::load` reads from YAML; see [`recipe`]), built
//! into a directory. Here the pinned base image and k3s release are small generated stand-ins; a
//! provisioner names the vendor image and the release directory it pins.
//!
//! ```
//! use kiln_golden::{Arch, Base, BuildOptions, DirEntry, FileEntry, K3s, Mode, Recipe, build};
//! # let env = kiln_fixtures::testing::BuildEnv::new("v1.34.3+k3s1", 1 << 20);
//! # let (base_image, base_sha256) = (env.base.path.clone(), env.base.sha256.clone());
//! # let (k3s_assets, install_sh_sha256) = (env.assets.dir.clone(), env.assets.install_sh_sha256.clone());
//! # let out = env.root.join("out");
//!
//! let recipe = Recipe::new(
//!     "k3s-node",
//!     Base::new(base_image, base_sha256), // the vendor image and its sha256 pin
//!     Arch::Amd64,
//!     1_767_225_600, // 2026-01-01T00:00:00Z: every time written into the image
//! )
//! .with_k3s(K3s::new("v1.34.3+k3s1", k3s_assets).with_install_sh_sha256(install_sh_sha256))
//! .with_prerequisite(DirEntry::new("/etc/rancher/k3s"))
//! .with_prerequisite(
//!     FileEntry::inline("/etc/rancher/k3s/registries.yaml", "mirrors: {}\n").with_mode(Mode(0o600)),
//! );
//!
//! let built = build(&recipe, &BuildOptions::new(&out))?;
//! assert_eq!(built.manifest.recipe_sha256, recipe.digest());
//! assert!(built.image.starts_with(&out));
//! # Ok::<(), kiln_golden::Error>(())
//! ```

#![deny(missing_docs)]

mod base;
pub mod diff;
pub mod inject;
pub mod lock;
pub mod manifest;
pub mod pipeline;
pub mod recipe;
pub mod rootfs;
pub mod scrub;
pub mod verify;

#[cfg(test)]
mod roundtrip;

use std::path::PathBuf;

pub use diff::{Difference, EntryKind, diff};
pub use inject::{Asset, Injected, InjectedKind, K3sRelease};
pub use kiln_blockdev::{Cancel, ErrorKind};
/// Re-exported: guest paths are bytes ([`Change::path`], [`Difference::path`]); their escaped
/// text form is what manifests, reports and lock files hold.
pub use kiln_ext4::{GuestPath, GuestPathBuf};
pub use manifest::{
    BaseInfo, BootFileAction, BootFileRecord, MANIFEST_VERSION, Manifest, OutputInfo, ScrubRecord,
};
pub use pipeline::{
    BuildOptions, BuildOutput, Progress, Step, StepEvent, StepReport, build, build_file,
};
pub use recipe::{
    Arch, Base, BootFile, Compression, Datasource, DebEntry, DirEntry, FileEntry, K3s,
    MachineIdMode, Mode, ModulesLoad, Output, OutputKind, Owner, Prerequisite, Problem, Problems,
    Recipe, ScrubSelection, SymlinkEntry, Sysctl, SystemdEnable,
};
pub use scrub::{Action, CATALOG, Change, ScrubInput, ScrubOp};
pub use verify::{VerifyReport, verify};

/// Everything the crate's operations fail with; each variant names the operation and the path.
/// [`Error::kind`] tells whose fault it is. New variants may be added in any release.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A k3s asset the release needs (`k3s`, the air-gap tarball, `install.sh` or
    /// `sha256sum-ARCH.txt`) is not in the recipe's `k3s.assets` directory. Kind: `Input`.
    #[error("k3s asset {path} is missing")]
    AssetMissing {
        /// The missing file.
        path: PathBuf,
    },
    /// A k3s asset is present but the release's sums file has no line for it (and, for
    /// `install.sh`, the recipe sets no `k3s.install_sh_sha256`). Kind: `Input`.
    #[error("k3s asset {name} is not pinned: {sums} has no line for it{hint}")]
    AssetNotPinned {
        /// The asset's file name.
        name: String,
        /// The sums file searched.
        sums: PathBuf,
        /// What else would have pinned it (may be empty).
        hint: &'static str,
    },
    /// The base image file cannot be used as it is: an xz stream that does not decompress (corrupt,
    /// truncated, or needing more memory than kiln allows), or is empty. Kind: `Input`.
    #[error("base image {}: {message}", path.display())]
    BaseImage {
        /// The base file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A `boot_files` entry names a partition label that no vfat partition of the image carries,
    /// or that more than one does. Kind: `Input`.
    #[error(
        "boot_files[{index}]: {reason} vfat partition labelled {label:?} in {image} (partitions: {found})"
    )]
    BootPartition {
        /// Index in the recipe's `boot_files`.
        index: usize,
        /// The label asked for.
        label: String,
        /// `"no"` or `"more than one"`.
        reason: &'static str,
        /// The image.
        image: PathBuf,
        /// The partitions found, `number=fs(label)`.
        found: String,
    },
    /// A `boot_files` entry cannot be applied: `cmdline_add` on a file that does not exist, or a
    /// file that is not UTF-8 text. Kind: `Input`.
    #[error("boot_files[{index}] ({path}): {message}")]
    BootFile {
        /// Index in the recipe's `boot_files`.
        index: usize,
        /// The path on the vfat partition.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The build's [`Cancel`] was tripped ([`BuildOptions::cancel`]); nothing was left behind.
    /// Kind: cancelled.
    #[error("cancelled")]
    Cancelled,
    /// A pinned input's sha256 is not its pin: the base image, a k3s asset, a file
    /// prerequisite's `source` or a `.deb`. Kind: `Input`.
    #[error("{op} {path}: sha256 is {actual}, the pin says {expected}")]
    ChecksumMismatch {
        /// What was being verified.
        op: &'static str,
        /// The file read.
        path: PathBuf,
        /// The pin (lower-case hex).
        expected: String,
        /// What the file hashes to (lower-case hex).
        actual: String,
    },
    /// Opening, reading or flushing an image's root filesystem failed. Kind: the inner error's.
    #[error("{op} (root filesystem of {image})")]
    Ext4 {
        /// What was being done.
        op: &'static str,
        /// The image.
        image: PathBuf,
        /// The kiln-ext4 error.
        source: Box<kiln_ext4::Error>,
    },
    /// Writing a k3s asset or a prerequisite into the image (or setting its times) failed, e.g. a
    /// parent path is a file, or the filesystem is full. Kind: the inner error's.
    #[error("injecting {path}")]
    Inject {
        /// The guest path being written.
        path: String,
        /// The kiln-ext4 error.
        source: Box<kiln_ext4::Error>,
    },
    /// The recipe's values are wrong ([`Recipe::validate`]): every problem, each with its field
    /// path. Kind: `Input`.
    #[error("{0}")]
    Invalid(Problems),
    /// Opening, reading, writing or closing a vfat partition of the image failed (not FAT, corrupt,
    /// full, a path of the wrong kind). Kind: the inner error's.
    #[error("{op} vfat partition {partition} of {image}")]
    Vfat {
        /// What was being done.
        op: &'static str,
        /// The partition, `N (label)`.
        partition: String,
        /// The image.
        image: PathBuf,
        /// The kiln-vfat error.
        source: Box<kiln_vfat::Error>,
    },
    /// Creating, writing, flushing or renaming an output (image, manifest, output directory)
    /// failed. Kind: `Host`.
    #[error("{op} {path}")]
    Output {
        /// What was being done.
        op: &'static str,
        /// The output path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The recipe text is not a recipe: not UTF-8, not YAML, a missing or unknown key, a value of
    /// the wrong shape. Kind: `Input`.
    #[error("parsing recipe {path}: {message}")]
    ParseRecipe {
        /// The recipe file (as given to [`Recipe::from_yaml`]).
        path: PathBuf,
        /// Position and reason (never an excerpt of the input).
        message: String,
    },
    /// A manifest (`kiln verify`, [`Manifest::from_json`]) that is not a kiln manifest of this
    /// version. Kind: `Input`.
    #[error("{}: not a kiln manifest: {message}", path.display())]
    ParseManifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A lock file (`kiln build --locked`, [`lock::Lock::parse`]) that is not in the lock
    /// format. Kind: `Input`.
    #[error("{}:{line}: not a kiln lock line: {reason}", path.display())]
    ParseLock {
        /// The lock file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The image's partition table could not be read, or holds no root filesystem kiln can use.
    /// Kind: the inner error's.
    #[error("finding the root filesystem of {image}")]
    Partition {
        /// The image.
        image: PathBuf,
        /// The kiln-partition error.
        source: Box<kiln_partition::Error>,
    },
    /// A prerequisite cannot be applied to this image: a unit to enable is not in the image, a
    /// `.deb` is not a Debian package, a file has no content. Kind: `Input`.
    #[error("prerequisites[{index}] ({path}): {message}")]
    Prereq {
        /// Index in the recipe's `prerequisites`.
        index: usize,
        /// The guest path, unit or host file concerned.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Opening, creating, writing, flattening or closing a qcow2 image failed. Kind: the inner
    /// error's.
    #[error("{op} {image}")]
    Qcow2 {
        /// What was being done.
        op: &'static str,
        /// The image.
        image: PathBuf,
        /// The kiln-qcow2 error.
        source: Box<kiln_qcow2::Error>,
    },
    /// An input file (recipe, manifest, lock, base image, k3s asset, source file, package) could
    /// not be read. Kind: `Input`.
    #[error("reading {what} {path}")]
    ReadInput {
        /// What the file is (`"recipe"`, `"base image"`, …).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A scrub op failed on a path of the image. Kind: the inner error's.
    #[error("scrub op {op} on {path}")]
    Scrub {
        /// The op's name.
        op: &'static str,
        /// The guest path.
        path: String,
        /// The kiln-ext4 error.
        source: Box<kiln_ext4::Error>,
    },
    /// The k3s release's `sha256sum-ARCH.txt` has a line that is not `sha256sum` output, or lists
    /// a file twice. Kind: `Input`.
    #[error("{path} line {line}: {reason}")]
    SumsFile {
        /// The sums file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Error {
    /// Who is at fault: the recipe, its pinned inputs and the base image are the caller's input;
    /// writing the outputs is the host's; a cancelled build is [`ErrorKind::Cancelled`]; the layers
    /// below answer for their own failures.
    pub fn kind(&self) -> kiln_blockdev::ErrorKind {
        use kiln_blockdev::ErrorKind;
        match self {
            Error::AssetMissing { .. }
            | Error::AssetNotPinned { .. }
            | Error::BaseImage { .. }
            | Error::BootFile { .. }
            | Error::BootPartition { .. }
            | Error::ChecksumMismatch { .. }
            | Error::Invalid(_)
            | Error::ParseRecipe { .. }
            | Error::ParseLock { .. }
            | Error::ParseManifest { .. }
            | Error::Prereq { .. }
            | Error::ReadInput { .. }
            | Error::SumsFile { .. } => ErrorKind::Input,
            Error::Ext4 { source, .. }
            | Error::Inject { source, .. }
            | Error::Scrub { source, .. } => source.kind(),
            Error::Partition { source, .. } => source.kind(),
            Error::Qcow2 { source, .. } => source.kind(),
            Error::Vfat { source, .. } => source.kind(),
            Error::Output { .. } => ErrorKind::Host,
            Error::Cancelled => ErrorKind::Cancelled,
        }
    }

    /// [`Error::Cancelled`] for any error that a tripped [`Cancel`] caused deeper down (whose
    /// [`Error::kind`] is [`ErrorKind::Cancelled`]); every other error as it is.
    pub(crate) fn normalise_cancel(self) -> Self {
        if self.kind() == kiln_blockdev::ErrorKind::Cancelled {
            Error::Cancelled
        } else {
            self
        }
    }
}

impl From<kiln_blockdev::Cancelled> for Error {
    fn from(_: kiln_blockdev::Cancelled) -> Self {
        Error::Cancelled
    }
}

pub(crate) use kiln_common::digest::hex;
