//! Check a built image against its manifest: the image file's sha256, every injected path (kind,
//! content sha256 and size, mode, owner, symlink target) and every scrubbed path (removed paths
//! absent, truncated ones empty, reset/linked ones as the op leaves them). Read-only.

use std::path::Path;

use kiln_blockdev::BlockDev;
use kiln_ext4::{FileKind, Filesystem};
use kiln_partition::Selector;
use sha2::{Digest, Sha256};

use crate::inject::{Injected, InjectedKind};
use crate::manifest::Manifest;
use crate::recipe::MachineIdMode;
use crate::scrub::Action;
use crate::{Error, hex};

/// What [`verify`] found. Serialises (the CLI's `--json`) and reads back.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Lower-case hex sha256 of the image file as read.
    pub image_sha256: String,
    /// Injected paths checked.
    pub injected: usize,
    /// Scrubbed paths checked.
    pub scrubbed: usize,
    /// One line per mismatch; empty = verified.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when nothing mismatched: the image is what its manifest says.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verify `image` against the manifest at `manifest_path`, read-only. Mismatches are not errors:
/// they are listed in [`VerifyReport::problems`]. Errors are for what could not be read: the
/// manifest ([`Error::ReadInput`], [`Error::ParseManifest`]), the image ([`Error::ReadInput`],
/// [`Error::Qcow2`]), its partition table ([`Error::Partition`]) or root filesystem
/// ([`Error::Ext4`]).
pub fn verify(image: &Path, manifest_path: &Path) -> Result<VerifyReport, Error> {
    let text = std::fs::read(manifest_path).map_err(|source| Error::ReadInput {
        what: "manifest",
        path: manifest_path.to_owned(),
        source,
    })?;
    let m = Manifest::from_json(&text, manifest_path)?;
    let mut rep = VerifyReport::default();
    let (sha, _) = crate::inject::sha256_file(image, "image")?;
    if m.output.sha256 != sha {
        rep.problems.push(format!(
            "image sha256 is {sha}, the manifest says {}",
            m.output.sha256
        ));
    }
    rep.image_sha256 = sha;

    let disk = crate::rootfs::open_image(image)?;
    if m.output.virtual_size != disk.len() {
        rep.problems.push(format!(
            "virtual size is {}, the manifest says {}",
            disk.len(),
            m.output.virtual_size
        ));
    }
    let selector = Selector::Number(m.base.root_partition);
    crate::rootfs::with_root_fs(&disk, image, selector, |fs, _| {
        check_fs(&fs, &m, &mut rep);
        Ok(())
    })?;
    Ok(rep)
}

/// Every injected and scrubbed path of `m` checked in `fs`.
fn check_fs(fs: &Filesystem<'_>, m: &Manifest, rep: &mut VerifyReport) {
    for e in &m.injected {
        rep.injected += 1;
        check_injected(fs, e, &mut rep.problems);
    }
    let machine_id: &[u8] = match m.machine_id {
        MachineIdMode::Empty => b"",
        _ => b"uninitialized\n",
    };
    for c in m.scrub.iter().flat_map(|r| &r.changed) {
        rep.scrubbed += 1;
        let path = c.path.as_guest_path();
        let st = fs.lstat(path);
        let problem = match (c.action, &st) {
            (Action::Removed, Err(kiln_ext4::Error::NotFound { .. })) => None,
            (Action::Removed, Ok(_)) => Some("still exists".to_owned()),
            (Action::Truncated, Ok(md)) if md.kind == FileKind::File && md.size == 0 => None,
            (Action::Truncated, Ok(md)) => Some(format!("has {} bytes", md.size)),
            (Action::Reset, Ok(md)) if md.kind == FileKind::File => match fs.read(path) {
                Ok(b) if path.as_bytes() != b"/etc/machine-id" || b == machine_id => None,
                Ok(_) => Some("content is not what the op writes".into()),
                Err(e) => Some(e.to_string()),
            },
            (Action::Linked, Ok(md)) if md.kind == FileKind::Symlink => None,
            (_, Err(e)) => Some(e.to_string()),
            (a, Ok(md)) => Some(format!("is a {} after {}", md.kind.as_str(), a.as_str())),
        };
        if let Some(p) = problem {
            rep.problems
                .push(format!("scrubbed {path} ({}): {p}", c.action.as_str()));
        }
    }
}

fn check_injected(fs: &Filesystem<'_>, e: &Injected, problems: &mut Vec<String>) {
    let path = e.path.as_str();
    let md = match fs.lstat(path) {
        Ok(md) => md,
        Err(err) => {
            problems.push(format!("injected {path}: {err}"));
            return;
        }
    };
    let want_kind = match e.kind {
        InjectedKind::File => FileKind::File,
        InjectedKind::Dir => FileKind::Dir,
        InjectedKind::Symlink => FileKind::Symlink,
    };
    let mut p = |what: String| problems.push(format!("injected {path}: {what}"));
    if md.kind != want_kind {
        p(format!(
            "is a {}, not a {}",
            md.kind.as_str(),
            want_kind.as_str()
        ));
        return;
    }
    if (e.uid, e.gid) != (md.uid, md.gid) {
        p(format!(
            "owner {}:{}, the manifest says {}:{}",
            md.uid, md.gid, e.uid, e.gid
        ));
    }
    if let Some(mode) = &e.mode
        && format!("{:04o}", md.perm) != *mode
    {
        p(format!("mode {:04o}, the manifest says {mode}", md.perm));
    }
    match want_kind {
        FileKind::File => match fs.read(path) {
            Ok(bytes) => {
                let sha = hex(&Sha256::digest(&bytes));
                if e.sha256.as_deref() != Some(sha.as_str()) {
                    p(format!(
                        "content sha256 {sha}, the manifest says {}",
                        e.sha256.as_deref().unwrap_or("nothing")
                    ));
                }
                if e.size != Some(bytes.len() as u64) {
                    p(format!(
                        "size {}, the manifest says {}",
                        bytes.len(),
                        e.size
                            .map_or_else(|| "nothing".to_owned(), |s| s.to_string())
                    ));
                }
            }
            Err(err) => p(err.to_string()),
        },
        FileKind::Symlink => match fs.read_link(path) {
            Ok(t) if e.target.as_deref().map(str::as_bytes) == Some(t.as_slice()) => {}
            Ok(t) => p(format!(
                "points to {:?}, the manifest says {:?}",
                String::from_utf8_lossy(&t),
                e.target.as_deref().unwrap_or("")
            )),
            Err(err) => p(err.to_string()),
        },
        _ => {}
    }
}
