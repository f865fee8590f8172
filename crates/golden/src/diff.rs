//! File-level differences between the root filesystems of two images (qcow2 chains or raw), read
//! only: added, removed, changed content, changed metadata (kind, mode, owner, mtime, symlink
//! target). Both trees are walked in sorted order, so the report is deterministic.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_ext4::{FileKind, Filesystem, Metadata};
use kiln_partition::Selector;
use serde::Serialize;

use crate::Error;

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Difference {
    Added {
        path: String,
        kind: &'static str,
    },
    Removed {
        path: String,
        kind: &'static str,
    },
    Content {
        path: String,
        size_a: u64,
        size_b: u64,
    },
    Metadata {
        path: String,
        fields: Vec<String>,
    },
}

impl Difference {
    pub fn path(&self) -> &str {
        match self {
            Difference::Added { path, .. }
            | Difference::Removed { path, .. }
            | Difference::Content { path, .. }
            | Difference::Metadata { path, .. } => path,
        }
    }
}

/// The sorted differences between `a` and `b` (empty: same files, content and metadata).
pub fn diff(a: &Path, b: &Path) -> Result<Vec<Difference>, Error> {
    with_root_fs(a, |fa, ta| {
        with_root_fs(b, |fb, tb| compare_trees(a, (fa, ta), (fb, tb)))
    })
}

type Tree = BTreeMap<String, Metadata>;

fn compare_trees(
    a: &Path,
    (fa, ta): (&Filesystem<'_>, &Tree),
    (fb, tb): (&Filesystem<'_>, &Tree),
) -> Result<Vec<Difference>, Error> {
    let mut out = Vec::new();
    for (path, ma) in ta {
        match tb.get(path) {
            None => out.push(Difference::Removed {
                path: path.clone(),
                kind: ma.kind.as_str(),
            }),
            Some(mb) => compare(fa, fb, path, ma, mb, a, &mut out)?,
        }
    }
    for (path, mb) in tb {
        if !ta.contains_key(path) {
            out.push(Difference::Added {
                path: path.clone(),
                kind: mb.kind.as_str(),
            });
        }
    }
    out.sort_by(|x, y| x.path().cmp(y.path()).then(x.cmp(y)));
    Ok(out)
}

/// Opens the root filesystem of `image` read-only, walks it, and hands both to `f`.
pub(crate) fn with_root_fs<T>(
    image: &Path,
    f: impl FnOnce(&Filesystem<'_>, &BTreeMap<String, Metadata>) -> Result<T, Error>,
) -> Result<T, Error> {
    let disk = crate::rootfs::open_image(image)?;
    crate::rootfs::with_root_fs(&disk, image, Selector::Root, |fs, _| {
        let tree = walk(&fs, image)?;
        f(&fs, &tree)
    })
}

pub(crate) fn ext4_err(p: &Path) -> impl Fn(kiln_ext4::Error) -> Error {
    let p = p.to_owned();
    move |source| Error::Ext4 {
        op: "reading the root filesystem",
        image: p.clone(),
        source: Box::new(source),
    }
}

/// Every path below `/` with its metadata, sorted.
fn walk(fs: &Filesystem<'_>, img: &Path) -> Result<BTreeMap<String, Metadata>, Error> {
    let mut out = BTreeMap::new();
    let mut stack = vec!["/".to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs.read_dir(&dir).map_err(ext4_err(img))? {
            let p = if dir == "/" {
                format!("/{}", e.name_lossy())
            } else {
                format!("{dir}/{}", e.name_lossy())
            };
            let md = fs.lstat(&p).map_err(ext4_err(img))?;
            if md.kind == FileKind::Dir {
                stack.push(p.clone());
            }
            out.insert(p, md);
        }
    }
    Ok(out)
}

fn compare(
    fa: &Filesystem<'_>,
    fb: &Filesystem<'_>,
    path: &str,
    ma: &Metadata,
    mb: &Metadata,
    img: &Path,
    out: &mut Vec<Difference>,
) -> Result<(), Error> {
    let mut fields = Vec::new();
    if ma.kind != mb.kind {
        fields.push(format!("kind {} -> {}", ma.kind.as_str(), mb.kind.as_str()));
    }
    if ma.perm != mb.perm {
        fields.push(format!("mode {:04o} -> {:04o}", ma.perm, mb.perm));
    }
    if (ma.uid, ma.gid) != (mb.uid, mb.gid) {
        fields.push(format!(
            "owner {}:{} -> {}:{}",
            ma.uid, ma.gid, mb.uid, mb.gid
        ));
    }
    if ma.mtime != mb.mtime {
        fields.push(format!("mtime {} -> {}", ma.mtime, mb.mtime));
    }
    if ma.kind == FileKind::Symlink && mb.kind == FileKind::Symlink {
        let (ta, tb) = (
            fa.read_link(path).map_err(ext4_err(img))?,
            fb.read_link(path).map_err(ext4_err(img))?,
        );
        if ta != tb {
            fields.push(format!(
                "target {:?} -> {:?}",
                String::from_utf8_lossy(&ta),
                String::from_utf8_lossy(&tb)
            ));
        }
    }
    if ma.kind == FileKind::File && mb.kind == FileKind::File {
        let differs = ma.size != mb.size
            || fa.read(path).map_err(ext4_err(img))? != fb.read(path).map_err(ext4_err(img))?;
        if differs {
            out.push(Difference::Content {
                path: path.to_owned(),
                size_a: ma.size,
                size_b: mb.size,
            });
        }
    }
    if !fields.is_empty() {
        out.push(Difference::Metadata {
            path: path.to_owned(),
            fields,
        });
    }
    Ok(())
}
