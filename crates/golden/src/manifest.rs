//! The build manifest: what went in (recipe digest, base pin, k3s pins), what was scrubbed and
//! injected, and what came out. Deterministic (sorted, no times except the recipe's
//! `source_date_epoch`, no host paths) and free of secrets (hashes and metadata only, never file
//! content).
//!
//! Written as pretty JSON ([`Manifest::to_json`]) and read back typed ([`Manifest::from_json`]) to
//! an equal value; it also round-trips through any serde format (YAML included).

use serde::{Deserialize, Serialize};

use crate::inject::{Injected, K3sRelease};
use crate::recipe::{Arch, Compression, MachineIdMode, OutputKind};
use crate::scrub::Change;

/// Format version of the manifest (its `kiln_manifest` field).
pub const MANIFEST_VERSION: u32 = 1;

/// `<name>.manifest.json`: everything a build put in, took out and wrote. JSON keys are the field
/// names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Manifest {
    /// The format version, [`MANIFEST_VERSION`].
    pub kiln_manifest: u32,
    /// The recipe's `name` (the output file stem).
    pub name: String,
    /// The recipe's canonical digest, [`Recipe::digest`](crate::Recipe::digest): lower-case hex
    /// sha256 of the typed recipe value (so the same for a recipe file and the same recipe made
    /// in code; comments and layout of the file do not count). Manifests written before kiln
    /// computed this digest held the sha256 of the recipe file's bytes here; they read the same
    /// way.
    pub recipe_sha256: String,
    /// The recipe's `arch`.
    pub arch: Arch,
    /// The recipe's `source_date_epoch` (seconds since the epoch): every time kiln wrote.
    pub source_date_epoch: i64,
    /// The recipe's `machine_id`.
    pub machine_id: MachineIdMode,
    /// The base image, as verified.
    pub base: BaseInfo,
    /// The k3s release injected, with each asset's pin; absent when the recipe has no `k3s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s: Option<K3sRelease>,
    /// Ops that ran, in order, each with the paths it changed (sorted).
    pub scrub: Vec<ScrubRecord>,
    /// Every path written, sorted.
    pub injected: Vec<Injected>,
    /// Every `boot_files` entry of the recipe, in recipe order: the vfat file it wrote. Absent
    /// when the recipe has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boot_files: Vec<BootFileRecord>,
    /// The image written.
    pub output: OutputInfo,
}

/// The base image a build started from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BaseInfo {
    /// File name only (host directories would make the manifest depend on where it was built).
    pub file: String,
    /// Lower-case hex sha256 of the base file (equal to the recipe's pin).
    pub sha256: String,
    /// The base's virtual disk size in bytes.
    pub virtual_size: u64,
    /// The partition the root filesystem was found on (1-based; 0 for a whole-disk filesystem).
    pub root_partition: u32,
}

/// One scrub op that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ScrubRecord {
    /// The op's name in [`CATALOG`](crate::CATALOG).
    pub op: String,
    /// The paths it changed, sorted; empty when the image was already clean.
    pub changed: Vec<Change>,
}

/// What one `boot_files` entry did to a file on a vfat partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BootFileRecord {
    /// The label the entry named (`system-boot`).
    pub partition: String,
    /// The number of the partition that carries it (1-based; 0 for a whole-disk filesystem).
    pub number: u32,
    /// The path on that filesystem.
    pub path: String,
    /// Whether the file was created, replaced or already held these bytes.
    pub action: BootFileAction,
    /// The file's content sha256 afterwards (lower-case hex).
    pub sha256: String,
    /// The file's size in bytes afterwards.
    pub size: u64,
    /// `boot_files[N]`.
    pub from: String,
}

/// What a `boot_files` entry did ([`BootFileRecord::action`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BootFileAction {
    /// The file did not exist.
    Created,
    /// The file held something else; contents and dates replaced.
    Replaced,
    /// The file already held these bytes; nothing written.
    Unchanged,
}

/// The image a build wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OutputInfo {
    /// File name, `<name>.qcow2` (in the output directory, beside the manifest).
    pub file: String,
    /// The recipe's `output.kind`.
    pub kind: OutputKind,
    /// The recipe's `output.compression` (applies to a standalone qcow2 only).
    pub compression: Compression,
    /// For an overlay: the backing file name recorded in its header; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing: Option<String>,
    /// Lower-case hex sha256 of the image file.
    pub sha256: String,
    /// The image file's size in bytes.
    pub size: u64,
    /// The image's virtual disk size in bytes (the base's).
    pub virtual_size: u64,
}

impl Manifest {
    /// Reads a manifest written by [`Manifest::to_json`]; `path` names it in errors. Unknown
    /// fields are errors, and so is another `kiln_manifest` version.
    pub fn from_json(bytes: &[u8], path: &std::path::Path) -> Result<Manifest, crate::Error> {
        let bad = |message: String| crate::Error::ParseManifest {
            path: path.to_owned(),
            message,
        };
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if m.kiln_manifest != MANIFEST_VERSION {
            return Err(bad(format!(
                "kiln_manifest {} (this kiln reads version {MANIFEST_VERSION})",
                m.kiln_manifest
            )));
        }
        Ok(m)
    }

    /// Pretty JSON (two-space indent, keys in field order) with a trailing newline: the bytes
    /// the build writes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}
