//! Lock files: the committed digests of a recipe's (or a cluster spec's) outputs, so that a build
//! on any machine can be checked against bytes made on another (`kiln build --locked`, `kiln
//! cluster --locked`), and a mismatch explained file by file without the other machine's outputs.
//!
//! A lock is a text file, one line per fact, sorted, so that a change to it reads well in a diff:
//!
//! ```text
//! # kiln lock v1 …
//! output k3s-node.qcow2 sha256:7587e1ed…
//!   file 0644 0:0 12 1767225600 1b2c3d4e5f607182 /etc/hostname
//!   dir 0755 0:0 - 1767225600 - /etc
//!   link 0777 0:0 44 1767225600 9a8b7c6d5e4f3a2b /var/lib/cloud/instance
//! output k3s-cp-01-seed.iso sha256:3f83a639…
//!   doc - - 512 - 0a1b2c3d4e5f6071 user-data
//! ```
//!
//! An `output` line gives a file's sha256; the indented lines under it describe its parts — for
//! an image, every entry of its root filesystem (kind, mode, owner, size, mtime, the first 64 bits
//! of the sha256 of the content or link target, path); for a seed, its documents. Parts are what a
//! mismatch is explained with; the `output` digests are what is checked.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use kiln_ext4::FileKind;
use sha2::{Digest, Sha256};

use crate::Error;

/// The first line of every lock file.
pub const HEADER: &str = "# kiln lock v1";

/// One output file: its sha256 and (optionally) the parts that explain a mismatch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockedOutput {
    /// The file's sha256, lowercase hex.
    pub sha256: String,
    /// Part name (a guest path, a seed document name) → its description (fields before the name).
    pub parts: BTreeMap<String, String>,
}

/// A whole lock: output file name → its record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lock {
    /// Output file names (relative to the output directory) → records.
    pub outputs: BTreeMap<String, LockedOutput>,
}

/// Why an output does not match its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mismatch {
    /// The lock has this output; the build did not make it.
    Missing {
        /// The output's file name.
        output: String,
    },
    /// The build made an output the lock does not list.
    Unexpected {
        /// The output's file name.
        output: String,
    },
    /// Same name, other bytes; `parts` says which parts differ (empty when the lock has none).
    Differs {
        /// The output's file name.
        output: String,
        /// The locked sha256.
        expected: String,
        /// The built file's sha256.
        actual: String,
        /// One line per differing part: `changed /etc/hosts (content, size 21 -> 22)`,
        /// `added /x (file)`, `removed /y (dir)`.
        parts: Vec<String>,
    },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::Missing { output } => write!(f, "{output}: in the lock, not built"),
            Mismatch::Unexpected { output } => write!(f, "{output}: built, not in the lock"),
            Mismatch::Differs {
                output,
                expected,
                actual,
                parts,
            } => {
                write!(
                    f,
                    "{output}: sha256 {actual}, the lock has {expected}",
                    actual = short(actual),
                    expected = short(expected)
                )?;
                for p in parts {
                    write!(f, "\n    {p}")?;
                }
                Ok(())
            }
        }
    }
}

fn short(sha: &str) -> &str {
    sha.get(..16).unwrap_or(sha)
}

impl Lock {
    /// Parses a lock file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Lock, Error> {
        let bad = |line: usize, why: &str| Error::ParseLock {
            path: path.to_owned(),
            line,
            reason: why.to_owned(),
        };
        let mut lock = Lock::default();
        let mut current: Option<String> = None;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            // `lines` leaves a lone `\r` on the last line; it is a line ending all the same.
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix("output ") {
                let (name, sha) = rest
                    .rsplit_once(" sha256:")
                    .ok_or_else(|| bad(n, "expected `output NAME sha256:HEX`"))?;
                if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(n, "the sha256 is not 64 hex digits"));
                }
                let rec = LockedOutput {
                    sha256: sha.to_ascii_lowercase(),
                    parts: BTreeMap::new(),
                };
                if lock.outputs.insert(name.to_owned(), rec).is_some() {
                    return Err(bad(n, "this output is listed twice"));
                }
                current = Some(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("  ") {
                let out = current
                    .as_ref()
                    .ok_or_else(|| bad(n, "a part line before any `output` line"))?;
                let mut fields = rest.splitn(7, ' ');
                let desc: Vec<&str> = fields.by_ref().take(6).collect();
                let name = fields.next().filter(|_| desc.len() == 6).ok_or_else(|| {
                    bad(
                        n,
                        "expected `  KIND MODE OWNER SIZE MTIME DIGEST NAME` under an output",
                    )
                })?;
                if let Some(o) = lock.outputs.get_mut(out) {
                    o.parts.insert(name.to_owned(), desc.join(" "));
                }
            } else {
                return Err(bad(n, "expected `output …`, an indented part line or `#`"));
            }
        }
        Ok(lock)
    }

    /// Reads and parses the lock at `path`.
    pub fn load(path: &Path) -> Result<Lock, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadInput {
            what: "lock file",
            path: path.to_owned(),
            source,
        })?;
        Lock::parse(&text, path)
    }

    /// The lock's text, `comment` lines (without `# `) after the header.
    pub fn to_text(&self, comment: &[&str]) -> String {
        let mut s = format!("{HEADER}\n");
        for c in comment {
            let _ = writeln!(s, "# {c}");
        }
        for (name, o) in &self.outputs {
            let _ = writeln!(s, "output {name} sha256:{}", o.sha256);
            for (part, desc) in &o.parts {
                let _ = writeln!(s, "  {desc} {part}");
            }
        }
        s
    }

    /// Every way `actual` differs from `self` (the lock), sorted by output name; empty = matches.
    pub fn check(&self, actual: &Lock) -> Vec<Mismatch> {
        let mut out = Vec::new();
        for (name, want) in &self.outputs {
            match actual.outputs.get(name) {
                None => out.push(Mismatch::Missing {
                    output: name.clone(),
                }),
                Some(got) if got.sha256 != want.sha256 => out.push(Mismatch::Differs {
                    output: name.clone(),
                    expected: want.sha256.clone(),
                    actual: got.sha256.clone(),
                    parts: part_differences(&want.parts, &got.parts),
                }),
                Some(_) => {}
            }
        }
        for name in actual.outputs.keys() {
            if !self.outputs.contains_key(name) {
                out.push(Mismatch::Unexpected {
                    output: name.clone(),
                });
            }
        }
        out.sort_by(|a, b| name_of(a).cmp(name_of(b)));
        out
    }
}

fn name_of(m: &Mismatch) -> &str {
    match m {
        Mismatch::Missing { output }
        | Mismatch::Unexpected { output }
        | Mismatch::Differs { output, .. } => output,
    }
}

const FIELDS: [&str; 6] = ["kind", "mode", "owner", "size", "mtime", "content"];

/// `changed /etc/hosts (content, size 21 -> 22)`, `added /x (file)`, `removed /y (dir)`.
fn part_differences(
    want: &BTreeMap<String, String>,
    got: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    let kind = |d: &str| d.split(' ').next().unwrap_or("").to_owned();
    for (name, w) in want {
        match got.get(name) {
            None => out.push(format!("removed {name} ({})", kind(w))),
            Some(g) if g != w => {
                let fields: Vec<String> = w
                    .split(' ')
                    .zip(g.split(' '))
                    .zip(FIELDS)
                    .filter(|((a, b), _)| a != b)
                    .map(|((a, b), f)| {
                        if f == "content" {
                            f.to_owned()
                        } else {
                            format!("{f} {a} -> {b}")
                        }
                    })
                    .collect();
                out.push(format!("changed {name} ({})", fields.join(", ")));
            }
            Some(_) => {}
        }
    }
    for (name, g) in got {
        if !want.contains_key(name) {
            out.push(format!("added {name} ({})", kind(g)));
        }
    }
    out
}

/// The first 64 bits of a sha256, as a part's digest field.
pub fn part_digest(data: &[u8]) -> String {
    crate::hex(&Sha256::digest(data)[..8])
}

/// A part line's description of a document (a seed file): `doc - - SIZE - DIGEST`.
pub fn document_part(data: &[u8]) -> String {
    format!("doc - - {} - {}", data.len(), part_digest(data))
}

/// Every entry of the root filesystem of `image` as lock parts (guest path, in the escaped form of
/// [`kiln_ext4::GuestPath`] — one line even for a name that is not UTF-8 or holds a newline —
/// → description).
pub fn image_parts(image: &Path) -> Result<BTreeMap<String, String>, Error> {
    crate::diff::with_root_fs(image, |fs, tree| {
        let mut parts = BTreeMap::new();
        for (path, md) in tree {
            let (kind, size, digest) = match md.kind {
                FileKind::File => {
                    // Streamed through the hash: an injected air-gap bundle is never held whole.
                    let mut h = Sha256::new();
                    fs.read_to(path, &mut h)
                        .map_err(crate::diff::ext4_err(image))?;
                    ("file", md.size.to_string(), crate::hex(&h.finalize()[..8]))
                }
                FileKind::Symlink => (
                    "link",
                    md.size.to_string(),
                    part_digest(&fs.read_link(path).map_err(crate::diff::ext4_err(image))?),
                ),
                FileKind::Dir => ("dir", "-".into(), "-".into()),
                other => (other.as_str(), "-".into(), "-".into()),
            };
            let desc = format!(
                "{kind} {:04o} {}:{} {size} {} {digest}",
                md.perm, md.uid, md.gid, md.mtime
            );
            parts.insert(path.to_string(), desc);
        }
        Ok(parts)
    })
}

/// The file name of an output path, as an `output` line names it.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// The sha256 of a host file, for an `output` line.
pub fn file_sha256(path: &Path) -> Result<String, Error> {
    crate::inject::sha256_file(path, "output file").map(|(sha, _)| sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(text: &str) -> Lock {
        Lock::parse(text, Path::new("t.lock")).unwrap()
    }

    #[test]
    fn round_trips_and_explains() {
        let a = "# kiln lock v1\noutput img.qcow2 sha256:".to_owned()
            + &"a".repeat(64)
            + "\n  dir 0755 0:0 - 0 - /etc\n  file 0644 0:0 3 0 0011223344556677 /etc/hosts\n  file 0600 0:0 1 0 8899aabbccddeeff /etc/old file\n";
        let want = lock(&a);
        assert_eq!(lock(&want.to_text(&[])), want);
        assert_eq!(
            want.outputs["img.qcow2"].parts["/etc/old file"],
            "file 0600 0:0 1 0 8899aabbccddeeff"
        );
        let mut got = want.clone();
        assert!(want.check(&got).is_empty());
        let o = got.outputs.get_mut("img.qcow2").unwrap();
        o.sha256 = "b".repeat(64);
        o.parts.insert(
            "/etc/hosts".into(),
            "file 0644 0:0 4 0 ffffffffffffffff".into(),
        );
        o.parts.remove("/etc/old file");
        o.parts
            .insert("/etc/new".into(), "dir 0755 0:0 - 0 -".into());
        got.outputs
            .insert("extra.iso".into(), LockedOutput::default());
        let m = want.check(&got);
        assert_eq!(m.len(), 2, "{m:?}");
        let text = m[1].to_string();
        assert!(
            text.contains("img.qcow2: sha256 bbbbbbbbbbbbbbbb, the lock has aaaaaaaaaaaaaaaa"),
            "{text}"
        );
        assert!(
            text.contains("changed /etc/hosts (size 3 -> 4, content)"),
            "{text}"
        );
        assert!(text.contains("removed /etc/old file (file)"), "{text}");
        assert!(text.contains("added /etc/new (dir)"), "{text}");
        assert_eq!(m[0].to_string(), "extra.iso: built, not in the lock");
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, line) in [
            ("output x sha256:12\n", 1),
            ("# c\n  file 0644 0:0 1 0 00 /x\n", 2),
            ("output x\n", 1),
            ("garbage\n", 1),
        ] {
            let e = Lock::parse(text, Path::new("t.lock"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("t.lock:{line}")), "{text:?}: {e}");
        }
    }
}
