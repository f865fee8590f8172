//! The tree flattened: directories and files numbered, entries named and sorted per hierarchy.

use super::MAX_LEVEL;
use crate::error::{Error, Result};
use crate::names::{cmp_ident, joliet_id, mangle_dir, units_of_bytes, units_of_ucs2};
use crate::tree::{Dir, Node, S_IFDIR, S_IFREG, Tree};

#[derive(Debug)]
pub(super) enum Kind {
    Dir(usize),
    File(usize),
}

#[derive(Debug)]
pub(super) struct Entry<'t> {
    pub(super) name: &'t str,
    pub(super) kind: Kind,
    /// Primary (level 1) identifier.
    pub(super) iso_id: Vec<u8>,
    /// Joliet identifier (UCS-2 BE).
    pub(super) joliet_id: Vec<u8>,
}

#[derive(Debug)]
pub(super) struct FlatDir<'t> {
    pub(super) mode: u32,
    pub(super) parent: usize,
    pub(super) ino: u32,
    pub(super) nlink: u32,
    pub(super) entries: Vec<Entry<'t>>,
    /// Indices into `entries`, in primary identifier order.
    pub(super) pri_order: Vec<usize>,
    /// Indices into `entries`, in Joliet identifier order.
    pub(super) jol_order: Vec<usize>,
}

#[derive(Debug)]
pub(super) struct FlatFile<'t> {
    pub(super) path: String,
    pub(super) mode: u32,
    pub(super) ino: u32,
    pub(super) data: &'t [u8],
}

/// The tree flattened into arenas (index 0 = root), inode numbers in depth-first name order.
#[derive(Debug)]
pub(super) struct Flat<'t> {
    pub(super) dirs: Vec<FlatDir<'t>>,
    pub(super) files: Vec<FlatFile<'t>>,
}

impl<'t> Flat<'t> {
    pub(super) fn new(tree: &'t Tree) -> Result<Self> {
        let mut flat = Flat {
            dirs: Vec::new(),
            files: Vec::new(),
        };
        let mut next_ino = 1u32;
        flat.add_dir(&tree.root, String::new(), 0, 1, &mut next_ino)?;
        Ok(flat)
    }

    pub(super) fn add_dir(
        &mut self,
        dir: &'t Dir,
        path: String,
        parent: usize,
        level: usize,
        next_ino: &mut u32,
    ) -> Result<usize> {
        if level > MAX_LEVEL {
            return Err(Error::TooDeep {
                path,
                level,
                max: MAX_LEVEL,
            });
        }
        let idx = self.dirs.len();
        let ino = *next_ino;
        *next_ino += 1;
        let subdirs = dir
            .children
            .values()
            .filter(|n| matches!(n, Node::Dir(_)))
            .count();
        self.dirs.push(FlatDir {
            mode: S_IFDIR | dir.mode,
            parent: if idx == 0 { 0 } else { parent },
            ino,
            nlink: 2 + subdirs as u32,
            entries: Vec::new(),
            pri_order: Vec::new(),
            jol_order: Vec::new(),
        });
        let mut entries = Vec::with_capacity(dir.children.len());
        for (name, node) in &dir.children {
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            let kind = match node {
                Node::Dir(d) => Kind::Dir(self.add_dir(d, child_path, idx, level + 1, next_ino)?),
                Node::File { data, mode } => {
                    let fi = self.files.len();
                    self.files.push(FlatFile {
                        path: child_path,
                        mode: S_IFREG | mode,
                        ino: *next_ino,
                        data,
                    });
                    *next_ino += 1;
                    Kind::File(fi)
                }
            };
            entries.push(Entry {
                name,
                kind,
                iso_id: Vec::new(),
                joliet_id: joliet_id(name),
            });
        }
        let shape: Vec<(&str, bool)> = entries
            .iter()
            .map(|e| (e.name, matches!(e.kind, Kind::Dir(_))))
            .collect();
        for (e, id) in entries.iter_mut().zip(mangle_dir(&shape)) {
            e.iso_id = id;
        }
        let pri_keys: Vec<Vec<u16>> = entries.iter().map(|e| units_of_bytes(&e.iso_id)).collect();
        let jol_keys: Vec<Vec<u16>> = entries
            .iter()
            .map(|e| units_of_ucs2(&e.joliet_id))
            .collect();
        let mut pri: Vec<usize> = (0..entries.len()).collect();
        pri.sort_by(|&a, &b| cmp_ident(&pri_keys[a], &pri_keys[b]));
        let mut jol: Vec<usize> = (0..entries.len()).collect();
        jol.sort_by(|&a, &b| cmp_ident(&jol_keys[a], &jol_keys[b]));
        let d = &mut self.dirs[idx];
        d.entries = entries;
        d.pri_order = pri;
        d.jol_order = jol;
        Ok(idx)
    }

    /// Directories in path-table order (ECMA-119 §9.4: by level, parent number, identifier):
    /// breadth-first, children in the hierarchy's identifier order.
    pub(super) fn path_table_order(&self, joliet: bool) -> Vec<usize> {
        let mut order = vec![0usize];
        let mut i = 0;
        while i < order.len() {
            let d = &self.dirs[order[i]];
            let ord = if joliet { &d.jol_order } else { &d.pri_order };
            for &e in ord {
                if let Kind::Dir(c) = d.entries[e].kind {
                    order.push(c);
                }
            }
            i += 1;
        }
        order
    }
}
