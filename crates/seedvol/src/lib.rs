//! Deterministic writers for small read-only volumes: ISO 9660 (ECMA-119) with Joliet and
//! Rock Ridge, and vfat — what cloud-init's NoCloud seed (`cidata`) needs, usable for any small
//! tree.
//!
//! ```
//! use kiln_seedvol::{IsoOptions, Tree, write_iso};
//! let mut tree = Tree::new();
//! tree.add_file("meta-data", b"instance-id: node-1\n".to_vec(), 0o644)?;
//! tree.add_file("user-data", b"#cloud-config\n".to_vec(), 0o644)?;
//! let opts = IsoOptions { volume_id: "cidata".into(), epoch: 1_700_000_000 };
//! let mut iso = Vec::new();
//! let n = write_iso(&tree, &opts, &mut iso)?;
//! assert_eq!(n as usize, iso.len());
//! # Ok::<(), kiln_seedvol::Error>(())
//! ```
//!
//! # ISO layout (2048-byte sectors, written strictly in this order)
//!
//! ```text
//!  0..15  system area (zeros)
//!  16     primary volume descriptor ─┐ root record, path table locations, dates = epoch
//!  17     Joliet SVD (escape %/E)  ──┤
//!  18     descriptor set terminator  │
//!  19..   path tables: primary L, primary M, Joliet L, Joliet M (each sector-padded)
//!  ..     primary directories in path-table order (records carry Rock Ridge SUSP:
//!         root "." = SP, PX, TF, CE→ER; entries = PX, TF, NM [, CE→NM…])
//!  ..     Joliet directories in path-table order (UCS-2 BE identifiers, no SUSP)
//!  ..     Rock Ridge continuation area (ER, long NMs; none straddles a sector)
//!  ..     file data, one extent per file, in primary directory order (shared by both trees)
//! ```
//!
//! Determinism: entries are kept sorted ([`Tree`] uses ordered maps); directory records and
//! path tables follow ECMA-119's identifier ordering; primary names are mangled to level-1
//! `NAME.EXT;1` with collisions numbered in name order; inode numbers (Rock Ridge PX serials)
//! are assigned depth-first in name order; every date is `epoch` (UTC); the volume set id is the
//! volume id. Nothing reads the clock, the environment or the host's users.
//!
//! The vfat writer ([`write_vfat`]) formats through the `fatfs` crate with an epoch-based clock
//! and a volume serial hashed from the inputs.

mod error;
mod iso;
mod names;
mod records;
mod time;
mod tree;
mod vfat;

pub use error::{Error, Result};
pub use iso::{IsoOptions, write_iso};
pub use tree::{MAX_JOLIET_CHARS, MAX_NAME_BYTES, Tree};
pub use vfat::{VfatOptions, write_vfat, write_vfat_sized};
