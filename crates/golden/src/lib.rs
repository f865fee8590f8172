//! kiln's golden-image pipeline: a typed recipe names a pinned base cloud image, the scrub ops, the
//! pinned k3s release and the prerequisites; [`build`] turns it into a scrubbed, k3s-ready qcow2
//! and a JSON manifest — offline, without a VM, byte-for-byte reproducible.
//!
//! ```text
//!  Recipe::load ─► build(): named steps over one context
//!    open-base (sha256 pin) → overlay → find-rootfs → scrub → k3s → prerequisites
//!    → normalise-times → close → output (temp name) → manifest → commit (rename both)
//! ```
//!
//! Nothing appears under the output names unless every step succeeded: the image and the manifest
//! are written under temporary names and renamed at the very end; inputs are opened read-only.

pub mod diff;
pub mod inject;
pub mod lock;
pub mod manifest;
pub mod pipeline;
pub mod recipe;
pub mod rootfs;
pub mod scrub;
pub mod verify;

use std::path::PathBuf;

pub use diff::{Difference, diff};
pub use kiln_blockdev::{Cancel, ErrorKind};
pub use manifest::Manifest;
pub use pipeline::{
    BuildOptions, BuildOutput, Progress, Step, StepEvent, StepReport, build, build_file,
};
pub use recipe::{MachineIdMode, Problem, Problems, Recipe};
pub use scrub::{CATALOG, ScrubOp};
pub use verify::{VerifyReport, verify};

/// Everything a build can fail with; each variant names the operation and the path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("k3s asset {path} is missing")]
    AssetMissing { path: PathBuf },
    #[error("k3s asset {name} is not pinned: {sums} has no line for it{hint}")]
    AssetNotPinned {
        name: String,
        sums: PathBuf,
        hint: &'static str,
    },
    /// The build's [`Cancel`] was tripped ([`BuildOptions::cancel`]); nothing was left behind.
    #[error("cancelled")]
    Cancelled,
    #[error("{op} {path}: sha256 is {actual}, the pin says {expected}")]
    ChecksumMismatch {
        op: &'static str,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{op} (root filesystem of {image})")]
    Ext4 {
        op: &'static str,
        image: PathBuf,
        source: Box<kiln_ext4::Error>,
    },
    #[error("injecting {path}")]
    Inject {
        path: String,
        source: Box<kiln_ext4::Error>,
    },
    #[error("{0}")]
    Invalid(Problems),
    #[error("{op} {path}")]
    Output {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing recipe {path}: {message}")]
    ParseRecipe { path: PathBuf, message: String },
    /// A manifest (`kiln verify`) that is not a kiln manifest of this version.
    #[error("{}: not a kiln manifest: {message}", path.display())]
    ParseManifest { path: PathBuf, message: String },
    /// A lock file (`kiln build --locked`) that is not in the lock format.
    #[error("{}:{line}: not a kiln lock line: {reason}", path.display())]
    ParseLock {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("finding the root filesystem of {image}")]
    Partition {
        image: PathBuf,
        source: Box<kiln_partition::Error>,
    },
    #[error("prerequisites[{index}] ({path}): {message}")]
    Prereq {
        index: usize,
        path: String,
        message: String,
    },
    #[error("{op} {image}")]
    Qcow2 {
        op: &'static str,
        image: PathBuf,
        source: Box<kiln_qcow2::Error>,
    },
    #[error("reading {what} {path}")]
    ReadInput {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("scrub op {op} on {path}")]
    Scrub {
        op: &'static str,
        path: String,
        source: Box<kiln_ext4::Error>,
    },
    #[error("{path} line {line}: {reason}")]
    SumsFile {
        path: PathBuf,
        line: usize,
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
