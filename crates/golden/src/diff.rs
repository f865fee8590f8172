//! File-level differences between the root filesystems of two images (qcow2 chains or raw), read
//! only: added, removed, changed content, changed metadata (kind, mode, owner, mtime, symlink
//! target). Both trees are walked in sorted order, so the report is deterministic. Paths are
//! bytes ([`GuestPathBuf`]): an entry whose name is not UTF-8 is compared like any other, and
//! shown and serialised in the escaped form (`/tmp/bad\xffname`).

use std::collections::BTreeMap;
use std::path::Path;

use kiln_ext4::{FileKind, Filesystem, GuestPath, GuestPathBuf, Metadata};
use kiln_partition::Selector;
use serde::{Deserialize, Serialize};

use crate::Error;

/// What kind of file a path is, as a [`Difference`] names it (`"file"`, `"dir"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EntryKind {
    /// `file`: a regular file.
    File,
    /// `dir`: a directory.
    Dir,
    /// `symlink`: a symbolic link.
    Symlink,
    /// `char`: a character device.
    Char,
    /// `block`: a block device.
    Block,
    /// `fifo`: a named pipe.
    Fifo,
    /// `socket`: a Unix socket.
    Socket,
    /// `unknown`: an inode whose type ext4 does not define.
    Unknown,
}

impl EntryKind {
    /// The name in reports (`file`, `dir`, `symlink`, `char`, `block`, `fifo`, `socket`,
    /// `unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Char => "char",
            EntryKind::Block => "block",
            EntryKind::Fifo => "fifo",
            EntryKind::Socket => "socket",
            EntryKind::Unknown => "unknown",
        }
    }
}

impl From<FileKind> for EntryKind {
    fn from(k: FileKind) -> EntryKind {
        match k {
            FileKind::File => EntryKind::File,
            FileKind::Dir => EntryKind::Dir,
            FileKind::Symlink => EntryKind::Symlink,
            FileKind::CharDevice => EntryKind::Char,
            FileKind::BlockDevice => EntryKind::Block,
            FileKind::Fifo => EntryKind::Fifo,
            FileKind::Socket => EntryKind::Socket,
            FileKind::Unknown => EntryKind::Unknown,
            // Should kiln-ext4 ever mark FileKind non-exhaustive.
            #[allow(unreachable_patterns)]
            _ => EntryKind::Unknown,
        }
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One difference between image A and image B. Serialises with a `change` tag
/// (`{"change": "added", "path": …, "kind": "file"}`; the path in the escaped form of
/// [`GuestPath`]) and reads back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Difference {
    /// `added`: the path exists only in B.
    Added {
        /// Absolute guest path.
        path: GuestPathBuf,
        /// What it is in B.
        kind: EntryKind,
    },
    /// `removed`: the path exists only in A.
    Removed {
        /// Absolute guest path.
        path: GuestPathBuf,
        /// What it was in A.
        kind: EntryKind,
    },
    /// `content`: a regular file in both whose bytes differ.
    Content {
        /// Absolute guest path.
        path: GuestPathBuf,
        /// Its size in A, in bytes.
        size_a: u64,
        /// Its size in B, in bytes.
        size_b: u64,
    },
    /// `metadata`: kind, mode, owner, mtime or symlink target differ.
    Metadata {
        /// Absolute guest path.
        path: GuestPathBuf,
        /// One `"<field> <a> -> <b>"` line per differing field (`"mode 0644 -> 0600"`).
        fields: Vec<String>,
    },
}

impl Difference {
    /// The guest path the difference is about.
    pub fn path(&self) -> &GuestPath {
        match self {
            Difference::Added { path, .. }
            | Difference::Removed { path, .. }
            | Difference::Content { path, .. }
            | Difference::Metadata { path, .. } => path,
        }
    }
}

impl std::fmt::Display for Difference {
    /// One line, as `kiln diff` prints it: `+ /x (file)`, `- /y (dir)`,
    /// `M /z (content, 3 -> 4 bytes)`, `m /w (mode 0644 -> 0600)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Added { path, kind } => write!(f, "+ {path} ({kind})"),
            Difference::Removed { path, kind } => write!(f, "- {path} ({kind})"),
            Difference::Content {
                path,
                size_a,
                size_b,
            } => write!(f, "M {path} (content, {size_a} -> {size_b} bytes)"),
            Difference::Metadata { path, fields } => {
                write!(f, "m {path} ({})", fields.join(", "))
            }
        }
    }
}

/// The sorted differences between the root filesystems of images `a` and `b` (empty: same
/// files, content and metadata), read-only. Errors when an image cannot be opened
/// ([`Error::Qcow2`]), partitioned ([`Error::Partition`]) or its root
/// filesystem read ([`Error::Ext4`]).
pub fn diff(a: &Path, b: &Path) -> Result<Vec<Difference>, Error> {
    with_root_fs(a, |fa, ta| {
        with_root_fs(b, |fb, tb| compare_trees(a, (fa, ta), (fb, tb)))
    })
}

type Tree = BTreeMap<GuestPathBuf, Metadata>;

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
                kind: ma.kind.into(),
            }),
            Some(mb) => compare(fa, fb, path, ma, mb, a, &mut out)?,
        }
    }
    for (path, mb) in tb {
        if !ta.contains_key(path) {
            out.push(Difference::Added {
                path: path.clone(),
                kind: mb.kind.into(),
            });
        }
    }
    out.sort_by(|x, y| x.path().cmp(y.path()).then(x.cmp(y)));
    Ok(out)
}

/// Opens the root filesystem of `image` read-only, walks it, and hands both to `f`.
pub(crate) fn with_root_fs<T>(
    image: &Path,
    f: impl FnOnce(&Filesystem<'_>, &Tree) -> Result<T, Error>,
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

/// Every path below `/` with its metadata, sorted by bytes.
fn walk(fs: &Filesystem<'_>, img: &Path) -> Result<Tree, Error> {
    let mut out = BTreeMap::new();
    let mut stack = vec![GuestPathBuf::from("/")];
    while let Some(dir) = stack.pop() {
        for e in fs.read_dir(&dir).map_err(ext4_err(img))? {
            let p = dir.join(&e.name);
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
    path: &GuestPath,
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
