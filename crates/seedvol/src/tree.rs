//! The in-memory file tree both writers consume.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{Error, Result};

/// Longest Rock Ridge / POSIX name component, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Longest Joliet name component, in UCS-2 characters (Joliet specification).
pub const MAX_JOLIET_CHARS: usize = 64;

const S_IFMT: u32 = 0o170_000;
pub(crate) const S_IFREG: u32 = 0o100_000;
pub(crate) const S_IFDIR: u32 = 0o040_000;

/// One node of a [`Tree`].
#[derive(Clone)]
pub(crate) enum Node {
    File { data: Vec<u8>, mode: u32 },
    Dir(Dir),
}

/// A directory: children sorted by their (byte-wise) name, so iteration is deterministic.
#[derive(Clone, Default)]
pub(crate) struct Dir {
    pub(crate) mode: u32,
    /// Created implicitly as the parent of another entry (an explicit `add_dir` may still set it).
    pub(crate) implicit: bool,
    pub(crate) children: BTreeMap<String, Node>,
}

/// An in-memory tree of files and directories, owned by uid/gid 0.
///
/// Paths are `/`-separated and relative (`"user-data"`, `"a/b/c"`; a leading `/` is accepted and
/// ignored). Missing parent directories are created with mode `0755`; a later [`Tree::add_dir`]
/// on such a directory sets its mode. Names are validated when added against every namespace a
/// writer records (Rock Ridge: 255 bytes; Joliet: 64 UCS-2 characters, no `* / : ; ? \`).
#[derive(Clone)]
pub struct Tree {
    pub(crate) root: Dir,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (mut files, mut dirs, mut bytes) = (0u64, 0u64, 0u64);
        self.walk(|_, node| match node {
            Node::File { data, .. } => {
                files += 1;
                bytes += data.len() as u64;
            }
            Node::Dir(_) => dirs += 1,
        });
        f.debug_struct("Tree")
            .field("files", &files)
            .field("dirs", &dirs)
            .field("bytes", &bytes)
            .finish()
    }
}

impl Tree {
    /// An empty tree (root directory mode `0755`).
    pub fn new() -> Self {
        Self {
            root: Dir {
                mode: 0o755,
                implicit: false,
                children: BTreeMap::new(),
            },
        }
    }

    /// Adds a regular file with permission bits `mode` (`0o644`; a file-type part, if any, must
    /// say "regular file").
    pub fn add_file(&mut self, path: &str, data: Vec<u8>, mode: u32) -> Result<()> {
        let perm = check_mode(path, mode, S_IFREG, "file")?;
        let size = data.len() as u64;
        if size > u64::from(u32::MAX) {
            return Err(Error::FileTooLarge {
                path: path.to_owned(),
                size,
                max: u64::from(u32::MAX),
            });
        }
        let (parent, name) = self.parent_of(path)?;
        if parent.children.contains_key(name) {
            return Err(Error::DuplicatePath {
                path: path.to_owned(),
            });
        }
        parent
            .children
            .insert(name.to_owned(), Node::File { data, mode: perm });
        Ok(())
    }

    /// Adds a directory with permission bits `mode` (`0o755`).
    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let perm = check_mode(path, mode, S_IFDIR, "directory")?;
        let (parent, name) = self.parent_of(path)?;
        match parent.children.get_mut(name) {
            Some(Node::Dir(d)) if d.implicit => {
                d.mode = perm;
                d.implicit = false;
                Ok(())
            }
            Some(_) => Err(Error::DuplicatePath {
                path: path.to_owned(),
            }),
            None => {
                parent.children.insert(
                    name.to_owned(),
                    Node::Dir(Dir {
                        mode: perm,
                        implicit: false,
                        children: BTreeMap::new(),
                    }),
                );
                Ok(())
            }
        }
    }

    /// Number of entries (files and directories, root excluded).
    pub fn len(&self) -> usize {
        let mut n = 0;
        self.walk(|_, _| n += 1);
        n
    }

    /// Whether the tree has no entry besides the root.
    pub fn is_empty(&self) -> bool {
        self.root.children.is_empty()
    }

    /// Visits every node depth-first in name order, with its path.
    pub(crate) fn walk(&self, mut f: impl FnMut(&str, &Node)) {
        fn go(dir: &Dir, prefix: &str, f: &mut impl FnMut(&str, &Node)) {
            for (name, node) in &dir.children {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                f(&path, node);
                if let Node::Dir(d) = node {
                    go(d, &path, f);
                }
            }
        }
        go(&self.root, "", &mut f);
    }

    /// Validates `path`, creates missing parents, and returns the parent directory and last name.
    fn parent_of<'a>(&mut self, path: &'a str) -> Result<(&mut Dir, &'a str)> {
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        let comps: Vec<&str> = trimmed.split('/').collect();
        for c in &comps {
            validate_name(path, c)?;
        }
        let (last, parents) = comps.split_last().ok_or_else(|| Error::InvalidName {
            op: "adding",
            path: path.to_owned(),
            name: String::new(),
            reason: "empty path",
        })?;
        let mut dir = &mut self.root;
        for (i, comp) in parents.iter().enumerate() {
            let node = dir.children.entry((*comp).to_owned()).or_insert_with(|| {
                Node::Dir(Dir {
                    mode: 0o755,
                    implicit: true,
                    children: BTreeMap::new(),
                })
            });
            dir = match node {
                Node::Dir(d) => d,
                Node::File { .. } => {
                    return Err(Error::NotADirectory {
                        path: path.to_owned(),
                        parent: parents[..=i].join("/"),
                    });
                }
            };
        }
        Ok((dir, last))
    }
}

fn check_mode(path: &str, mode: u32, want_type: u32, kind: &'static str) -> Result<u32> {
    let ty = mode & S_IFMT;
    if (ty != 0 && ty != want_type) || mode & !(S_IFMT | 0o7777) != 0 {
        return Err(Error::InvalidMode {
            path: path.to_owned(),
            mode,
            kind,
        });
    }
    Ok(mode & 0o7777)
}

/// Checks one path component against the POSIX/Rock Ridge and Joliet namespaces.
fn validate_name(path: &str, name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            op: "adding",
            path: path.to_owned(),
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty path component");
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are not allowed");
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::NameTooLong {
            path: path.to_owned(),
            name: name.to_owned(),
            len: name.len(),
            max: MAX_NAME_BYTES,
            unit: "bytes",
            namespace: "Rock Ridge",
        });
    }
    let mut units = 0usize;
    for ch in name.chars() {
        if u32::from(ch) > 0xFFFF {
            return bad(
                "character outside the Basic Multilingual Plane cannot be encoded in UCS-2 (Joliet)",
            );
        }
        if u32::from(ch) < 0x20 {
            return bad("control characters are not allowed");
        }
        if matches!(ch, '*' | ':' | ';' | '?' | '\\') {
            return bad("Joliet forbids the characters * : ; ? \\");
        }
        units += 1;
    }
    if units > MAX_JOLIET_CHARS {
        return Err(Error::NameTooLong {
            path: path.to_owned(),
            name: name.to_owned(),
            len: units,
            max: MAX_JOLIET_CHARS,
            unit: "UCS-2 characters",
            namespace: "Joliet",
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn implicit_parents_and_duplicates() {
        let mut t = Tree::new();
        t.add_file("a/b/c", b"x".to_vec(), 0o644).unwrap();
        t.add_dir("a", 0o700).unwrap();
        assert!(matches!(
            t.add_dir("a", 0o700),
            Err(Error::DuplicatePath { .. })
        ));
        assert!(matches!(
            t.add_file("a/b/c", vec![], 0o644),
            Err(Error::DuplicatePath { .. })
        ));
        assert!(matches!(
            t.add_file("a/b/c/d", vec![], 0o644),
            Err(Error::NotADirectory { ref parent, .. }) if parent == "a/b/c"
        ));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn bad_names_are_errors() {
        let mut t = Tree::new();
        let long = "x".repeat(256);
        assert!(matches!(
            t.add_file(&long, vec![], 0o644),
            Err(Error::NameTooLong {
                namespace: "Rock Ridge",
                ..
            })
        ));
        let joliet_long = "y".repeat(65);
        assert!(matches!(
            t.add_file(&joliet_long, vec![], 0o644),
            Err(Error::NameTooLong {
                namespace: "Joliet",
                ..
            })
        ));
        assert!(matches!(
            t.add_file("emoji-\u{1F600}", vec![], 0o644),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            t.add_file("a//b", vec![], 0o644),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            t.add_file("a/../b", vec![], 0o644),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            t.add_file("what?", vec![], 0o644),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            t.add_file("", vec![], 0o644),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            t.add_file("f", vec![], 0o040_755),
            Err(Error::InvalidMode { .. })
        ));
        // Zeroed allocations are lazy: this does not touch 4 GiB of memory.
        let huge = vec![0u8; u32::MAX as usize + 1];
        assert!(matches!(
            t.add_file("big.img", huge, 0o644),
            Err(Error::FileTooLarge { ref path, size, .. }) if path == "big.img" && size == 1 << 32
        ));
        assert!(t.is_empty());
        t.add_file("/user-data", vec![], 0o100_644).unwrap();
        assert_eq!(t.len(), 1);
    }
}
