//! The build manifest: what went in (recipe hash, base pin, k3s pins), what was scrubbed and
//! injected, and what came out. Deterministic (sorted, no times except the recipe's
//! `source_date_epoch`, no host paths) and free of secrets (hashes and metadata only, never file
//! content).

use serde::{Deserialize, Serialize};

use crate::inject::{Injected, K3sRelease};
use crate::recipe::{Arch, Compression, MachineIdMode, OutputKind};
use crate::scrub::Change;

/// Format version of the manifest.
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub kiln_manifest: u32,
    pub name: String,
    /// sha256 of the recipe file's bytes.
    pub recipe_sha256: String,
    pub arch: Arch,
    pub source_date_epoch: i64,
    pub machine_id: MachineIdMode,
    pub base: BaseInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k3s: Option<K3sRelease>,
    /// Ops that ran, in order, each with the paths it changed (sorted).
    pub scrub: Vec<ScrubRecord>,
    /// Every path written, sorted.
    pub injected: Vec<Injected>,
    pub output: OutputInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseInfo {
    /// File name only (host directories would make the manifest depend on where it was built).
    pub file: String,
    pub sha256: String,
    pub virtual_size: u64,
    /// The partition the root filesystem was found on.
    pub root_partition: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubRecord {
    pub op: String,
    pub changed: Vec<Change>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputInfo {
    pub file: String,
    pub kind: OutputKind,
    pub compression: Compression,
    /// For an overlay: the backing file name recorded in its header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing: Option<String>,
    pub sha256: String,
    pub size: u64,
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

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}
