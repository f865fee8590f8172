//! Files in the cluster directory that no node of the current spec owns: the overlays and seeds of
//! nodes removed from the spec, and any other `*.qcow2` / `*-seed.iso`. They are reported, never
//! deleted (an overlay may hold a booted node's data); the new inventory simply no longer lists them.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::apply::FileKind;

/// A file left in place in the cluster directory although no node of the current spec owns it.
///
/// JSON (in the report's `leftovers` array): `{"path": "w2.qcow2", "kind": "disk", "node": "w2"}`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leftover {
    /// A file name inside the cluster directory.
    pub path: String,
    /// [`FileKind::Disk`] for `*.qcow2`, [`FileKind::Seed`] for `*-seed.iso`.
    pub kind: FileKind,
    /// The node the previous `inventory.json` recorded it for; `None` when no inventory names it
    /// (e.g. on the run after the one that dropped the node, or for a file kiln did not write).
    pub node: Option<String>,
}

/// What [`find`] needs to know about the directory and the plan.
pub(crate) struct Scan<'a> {
    pub dir: &'a Path,
    /// The previous run's `inventory.json`, if it could be read.
    pub old_inventory: Option<&'a [u8]>,
    /// File names the current plan writes.
    pub owned: &'a BTreeSet<String>,
    /// Canonical paths of the golden image and its backing chain (never leftovers).
    pub golden_chain: &'a [PathBuf],
}

/// The leftovers in `scan.dir`: first the files the previous inventory recorded for nodes (in its
/// order, disk before seed), then every other `*.qcow2` / `*-seed.iso` by name. Only files that
/// exist are listed; directories are skipped. Reads only.
pub(crate) fn find(scan: &Scan<'_>) -> Result<Vec<Leftover>, Error> {
    let entries = match fs::read_dir(scan.dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r.map_err(|source| Error::ListDir {
            path: scan.dir.to_owned(),
            source,
        })?,
    };
    let mut names = BTreeSet::new();
    for e in entries {
        let e = e.map_err(|source| Error::ListDir {
            path: scan.dir.to_owned(),
            source,
        })?;
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_dir && kind_of(&name).is_some() && !scan.owned.contains(&name) {
            let in_chain = fs::canonicalize(e.path()).is_ok_and(|p| scan.golden_chain.contains(&p));
            if !in_chain {
                names.insert(name);
            }
        }
    }

    let mut out = Vec::new();
    for (node, path) in recorded_files(scan.old_inventory) {
        if names.remove(&path)
            && let Some(kind) = kind_of(&path)
        {
            out.push(Leftover {
                path,
                kind,
                node: Some(node),
            });
        }
    }
    out.extend(names.into_iter().filter_map(|path| {
        kind_of(&path).map(|kind| Leftover {
            path,
            kind,
            node: None,
        })
    }));
    Ok(out)
}

fn kind_of(name: &str) -> Option<FileKind> {
    if name.ends_with("-seed.iso") {
        Some(FileKind::Seed)
    } else if name.ends_with(".qcow2") {
        Some(FileKind::Disk)
    } else if name.ends_with(".img") {
        Some(FileKind::SdCard)
    } else {
        None
    }
}

/// `(node, file name)` of every disk and seed an existing inventory records, read leniently (a
/// damaged or foreign file records nothing).
fn recorded_files(bytes: Option<&[u8]>) -> Vec<(String, String)> {
    let Some(v) = bytes.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok()) else {
        return Vec::new();
    };
    let Some(nodes) = v.get("nodes").and_then(|n| n.as_array()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for n in nodes {
        let Some(name) = n.get("name").and_then(|s| s.as_str()) else {
            continue;
        };
        for key in ["disk", "seed"] {
            if let Some(p) = n
                .get(key)
                .and_then(|d| d.get("path"))
                .and_then(|p| p.as_str())
            {
                out.push((name.to_owned(), p.to_owned()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_then_unowned_by_name_skipping_owned_dirs_and_golden() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path();
        for f in [
            "a.qcow2",
            "a-seed.iso",
            "gone.qcow2",
            "gone-seed.iso",
            "z.qcow2",
            "b-seed.iso",
            "golden.qcow2",
            "notes.txt",
            "x.iso",
            "inventory.json",
        ] {
            fs::write(dir.join(f), b"x").expect("write");
        }
        fs::create_dir(dir.join("d.qcow2")).expect("mkdir");
        std::os::unix::fs::symlink(dir.join("golden.qcow2"), dir.join("link.qcow2"))
            .expect("symlink");
        let inv = br#"{"nodes": [
            {"name": "gone", "disk": {"path": "gone.qcow2"}, "seed": {"path": "gone-seed.iso"}},
            {"name": "a", "disk": {"path": "a.qcow2"}, "seed": {"path": "a-seed.iso"}},
            {"name": "never", "disk": {"path": "never.qcow2"}, "seed": {"path": "../x-seed.iso"}}
        ]}"#;
        let owned: BTreeSet<String> = ["a.qcow2", "a-seed.iso", "inventory.json"]
            .map(String::from)
            .into();
        let chain = [dir.join("golden.qcow2").canonicalize().expect("canon")];
        let scan = Scan {
            dir,
            old_inventory: Some(inv),
            owned: &owned,
            golden_chain: &chain,
        };
        let got: Vec<(String, FileKind, Option<String>)> = find(&scan)
            .expect("find")
            .into_iter()
            .map(|l| (l.path, l.kind, l.node))
            .collect();
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            got,
            vec![
                ("gone.qcow2".into(), FileKind::Disk, some("gone")),
                ("gone-seed.iso".into(), FileKind::Seed, some("gone")),
                ("b-seed.iso".into(), FileKind::Seed, None),
                ("z.qcow2".into(), FileKind::Disk, None),
            ]
        );

        // Without (or with a damaged) inventory the same files are found, unattributed.
        for old in [None, Some(&b"not json"[..])] {
            let scan = Scan {
                old_inventory: old,
                ..scan
            };
            let names: Vec<_> = find(&scan)
                .expect("find")
                .into_iter()
                .map(|l| (l.path, l.node))
                .collect();
            assert_eq!(
                names,
                ["b-seed.iso", "gone-seed.iso", "gone.qcow2", "z.qcow2"].map(|p| (p.into(), None))
            );
        }
        let missing = Scan {
            dir: &dir.join("missing"),
            ..scan
        };
        assert_eq!(find(&missing).expect("missing dir"), vec![]);
    }
}
