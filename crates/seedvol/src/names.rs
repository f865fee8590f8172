//! File identifiers: deterministic ISO 9660 level-1 mangling, Joliet encoding, and the
//! identifier ordering of ECMA-119 §9.3 (used for directory records and path tables).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// Maps one character to a d-character (`A-Z 0-9 _`), upper-casing letters.
fn d_char(c: char) -> u8 {
    match c {
        'a'..='z' => c.to_ascii_uppercase() as u8,
        'A'..='Z' | '0'..='9' | '_' => c as u8,
        _ => b'_',
    }
}

/// Level-1 identifier parts for one entry before collision handling: (name ≤ 8, extension ≤ 3).
fn base_parts(name: &str, is_dir: bool) -> (Vec<u8>, Vec<u8>) {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if !is_dir && i > 0 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    };
    let mut stem: Vec<u8> = stem.chars().map(d_char).take(8).collect();
    if stem.is_empty() {
        stem.push(b'_');
    }
    let ext: Vec<u8> = ext.chars().map(d_char).take(3).collect();
    (stem, ext)
}

/// Assigns unique level-1 identifiers to the entries of one directory.
///
/// `entries` are `(name, is_dir)` in byte-wise name order; the result is parallel to it. Files
/// get `NAME.EXT;1` (the dot is always present), directories `NAME`. When two entries map to the
/// same name and extension, the later one (in name order) gets its stem shortened and a decimal
/// counter appended (`USER_DA1`), the smallest counter that is still free.
pub(crate) fn mangle_dir(entries: &[(&str, bool)]) -> Vec<Vec<u8>> {
    let mut used: BTreeSet<(Vec<u8>, Vec<u8>)> = BTreeSet::new();
    // Next counter to try per original (stem, ext), so long runs of collisions stay linear.
    let mut next: BTreeMap<(Vec<u8>, Vec<u8>), u64> = BTreeMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for &(name, is_dir) in entries {
        let (stem, ext) = base_parts(name, is_dir);
        let mut key = (stem.clone(), ext.clone());
        let counter = next.entry(key.clone()).or_insert(1);
        let mut n = *counter;
        while used.contains(&key) {
            let digits = n.to_string().into_bytes();
            let keep = 8usize.saturating_sub(digits.len()).min(stem.len());
            let mut s = stem[..keep].to_vec();
            s.extend_from_slice(&digits);
            key = (s, ext.clone());
            n += 1;
        }
        *counter = n;
        let mut id = key.0.clone();
        if !is_dir {
            id.push(b'.');
            id.extend_from_slice(&key.1);
            id.extend_from_slice(b";1");
        }
        used.insert(key);
        out.push(id);
    }
    out
}

/// Joliet identifier: the name in UCS-2 big-endian (validated as BMP-only when added), no version.
pub(crate) fn joliet_id(name: &str) -> Vec<u8> {
    name.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// Splits an identifier (as code units) into (name, extension, version) per ECMA-119 §7.5.
fn split(units: &[u16]) -> (&[u16], &[u16], &[u16]) {
    let (body, version) = match units.iter().position(|&u| u == u16::from(b';')) {
        Some(i) => (&units[..i], &units[i + 1..]),
        None => (units, &units[units.len()..]),
    };
    match body.iter().position(|&u| u == u16::from(b'.')) {
        Some(i) => (&body[..i], &body[i + 1..], version),
        None => (body, &body[body.len()..], version),
    }
}

/// Compares two code-unit strings, the shorter padded with spaces (ECMA-119 §9.3 b, c).
fn cmp_padded(a: &[u16], b: &[u16]) -> Ordering {
    let n = a.len().max(b.len());
    let space = u16::from(b' ');
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(space);
        let y = b.get(i).copied().unwrap_or(space);
        match x.cmp(&y) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    Ordering::Equal
}

/// ECMA-119 §9.3 ordering of file identifiers given as code units (bytes for the primary
/// hierarchy, UCS-2 for Joliet): name, then extension, both space-padded; then version in
/// descending order. Ties are broken on the raw units so the order is total.
pub(crate) fn cmp_ident(a: &[u16], b: &[u16]) -> Ordering {
    let (an, ae, av) = split(a);
    let (bn, be, bv) = split(b);
    cmp_padded(an, bn)
        .then_with(|| cmp_padded(ae, be))
        .then_with(|| cmp_padded(bv, av))
        .then_with(|| a.cmp(b))
}

/// Primary identifier bytes as code units.
pub(crate) fn units_of_bytes(id: &[u8]) -> Vec<u16> {
    id.iter().map(|&b| u16::from(b)).collect()
}

/// Joliet identifier (UCS-2 BE bytes) as code units.
pub(crate) fn units_of_ucs2(id: &[u8]) -> Vec<u16> {
    id.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn s(v: &[Vec<u8>]) -> Vec<String> {
        v.iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    #[test]
    fn mangles_seed_names() {
        let got = mangle_dir(&[
            ("meta-data", false),
            ("network-config", false),
            ("user-data", false),
            ("vendor-data", false),
        ]);
        assert_eq!(
            s(&got),
            ["META_DAT.;1", "NETWORK_.;1", "USER_DAT.;1", "VENDOR_D.;1"]
        );
    }

    #[test]
    fn resolves_collisions_deterministically() {
        let got = mangle_dir(&[
            ("README.md", false),
            ("a.tar.gz", false),
            ("a.tar.gzip", false),
            ("readme.md", false),
            ("readme.mdx", false),
            ("sub.dir", true),
        ]);
        assert_eq!(
            s(&got),
            [
                "README.MD;1",
                "A_TAR.GZ;1",
                "A_TAR.GZI;1",
                "README1.MD;1",
                "README.MDX;1",
                "SUB_DIR"
            ]
        );
        // Many collisions keep the identifier within 8 characters.
        let names: Vec<String> = (0..1200).map(|i| format!("longname-{i:04}")).collect();
        let entries: Vec<(&str, bool)> = names.iter().map(|n| (n.as_str(), false)).collect();
        let got = mangle_dir(&entries);
        let set: BTreeSet<_> = got.iter().collect();
        assert_eq!(set.len(), got.len());
        assert!(got.iter().all(|id| id.len() <= 12));
        assert_eq!(got[1100], b"LONG1100.;1");
    }

    #[test]
    fn ordering_follows_ecma119() {
        let ids: Vec<&[u8]> = vec![b"AB.;1", b"A.B;1", b"A;1", b"A.;2", b"B", b"A_"];
        let mut units: Vec<Vec<u16>> = ids.iter().map(|i| units_of_bytes(i)).collect();
        units.sort_by(|a, b| cmp_ident(a, b));
        let back: Vec<String> = units
            .iter()
            .map(|u| u.iter().map(|&c| c as u8 as char).collect())
            .collect();
        assert_eq!(back, ["A.;2", "A;1", "A.B;1", "AB.;1", "A_", "B"]);
    }

    #[test]
    fn joliet_is_ucs2_be() {
        assert_eq!(joliet_id("aé"), vec![0, b'a', 0, 0xE9]);
        assert_eq!(units_of_ucs2(&joliet_id("aé")), vec![0x61, 0xE9]);
    }
}
