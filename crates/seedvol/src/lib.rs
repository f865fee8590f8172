//! Deterministic writers for small read-only volumes: ISO 9660 (ECMA-119) with Joliet and
//! Rock Ridge, and vfat — what cloud-init's NoCloud seed (`cidata`) needs, usable for any small
//! tree.
//!
//! ```
//! use kiln_seedvol::{IsoOptions, Tree, VfatOptions, write_iso, write_vfat};
//! let mut tree = Tree::new();
//! tree.add_file("meta-data", b"instance-id: node-1\n".to_vec(), 0o644)?;
//! tree.add_file("user-data", b"#cloud-config\n".to_vec(), 0o644)?;
//!
//! // ISO 9660 into a Vec: the volume id is what cloud-init looks for.
//! let opts = IsoOptions { volume_id: "cidata".into(), epoch: 1_700_000_000 };
//! let mut iso = Vec::new();
//! let n = write_iso(&tree, &opts, &mut iso)?;
//! assert_eq!(n as usize, iso.len());
//! assert_eq!(&iso[16 * 2048 + 1..16 * 2048 + 6], b"CD001"); // primary volume descriptor
//!
//! // The same tree as vfat (FAT labels are upper case), into anything Read + Write + Seek.
//! let opts = VfatOptions { volume_label: "CIDATA".into(), epoch: 1_700_000_000 };
//! let mut fat = std::io::Cursor::new(Vec::new());
//! write_vfat(&tree, &opts, &mut fat)?;
//! assert_eq!(&fat.get_ref()[510..512], &[0x55, 0xAA]);
//!
//! // Identical inputs, identical bytes.
//! let mut again = Vec::new();
//! write_iso(&tree, &IsoOptions { volume_id: "cidata".into(), epoch: 1_700_000_000 }, &mut again)?;
//! assert_eq!(iso, again);
//! # Ok::<(), Box<dyn std::error::Error>>(())
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

#![deny(missing_docs)]

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
