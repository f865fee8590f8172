//! Guest paths are bytes: ext4 stores names as up to 255 arbitrary bytes (anything but `/` and
//! NUL), so a guest may hold names that are not UTF-8. [`GuestPath`] (borrowed) and
//! [`GuestPathBuf`] (owned) carry such a path exactly, the way [`std::path::Path`] does for host
//! paths, and every [`crate::Filesystem`] call takes one (`&str`, `String`, `&[u8]` and `Vec<u8>`
//! convert, so literal paths keep working).
//!
//! # The escaped form
//!
//! Where a path has to be text — `Display`, error messages, JSON and YAML (serde), manifests and
//! lock files — it is written in one escaped form:
//!
//! - a backslash is written `\\`;
//! - every byte that is not part of valid UTF-8, and every byte of a control character (U+0000 to
//!   U+001F, U+007F to U+009F), is written `\xHH` (two lower-case hex digits);
//! - everything else is written as it is.
//!
//! So a UTF-8 path without backslashes or control characters reads exactly as before, and the
//! form is unambiguous: [`GuestPathBuf::from_escaped`] reads it back to the same bytes (it takes
//! `\\` and `\xHH` with either case of hex digit, and refuses any other backslash sequence).
//! serde serialises a path as this string and deserialises it with `from_escaped`.
//!
//! ```
//! use kiln_ext4::{GuestPath, GuestPathBuf};
//!
//! let p = GuestPath::new(b"/tmp/bad\xffname");
//! assert_eq!(p.to_string(), r"/tmp/bad\xffname");
//! assert_eq!(GuestPathBuf::from_escaped(r"/tmp/bad\xffname")?, p);
//! assert_eq!(GuestPath::new("/tmp").join(b"bad\xffname"), p);
//! assert_eq!(p.parent(), Some(GuestPath::new("/tmp")));
//! assert_eq!(p.file_name(), Some(&b"bad\xffname"[..]));
//! # Ok::<(), kiln_ext4::ParseGuestPathError>(())
//! ```

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::ops::Deref;

use crate::error::{Error, Op, Result};

/// A borrowed guest path: a byte string, not necessarily UTF-8 (see the [module docs](self) for
/// its escaped text form). Unvalidated: [`crate::Filesystem`] calls refuse relative paths, `..`,
/// NUL bytes and over-long components when they use one.
#[derive(PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct GuestPath([u8]);

/// An owned guest path (see [`GuestPath`]); sorts by bytes, like the directory listings.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestPathBuf(Vec<u8>);

/// Why [`GuestPathBuf::from_escaped`] refused a text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("guest path {text:?}: {reason} at byte {offset}")]
pub struct ParseGuestPathError {
    /// The text given.
    pub text: String,
    /// Byte offset of the bad escape sequence in `text`.
    pub offset: usize,
    /// What is wrong there.
    pub reason: &'static str,
}

impl GuestPath {
    /// Views bytes (or a `str`) as a guest path, unchanged.
    pub fn new<S: AsRef<[u8]> + ?Sized>(s: &S) -> &GuestPath {
        let bytes: &[u8] = s.as_ref();
        // SAFETY: `GuestPath` is `repr(transparent)` over `[u8]`, so `&[u8]` and `&GuestPath`
        // have the same layout and pointer metadata (the length); the lifetime is kept.
        unsafe { &*(bytes as *const [u8] as *const GuestPath) }
    }

    /// The root directory, `/`.
    pub fn root() -> &'static GuestPath {
        GuestPath::new("/")
    }

    /// The path's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path as `str` when it is valid UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// An owned copy.
    pub fn to_guest_path_buf(&self) -> GuestPathBuf {
        GuestPathBuf(self.0.to_vec())
    }

    /// Whether the path starts with `/`.
    pub fn is_absolute(&self) -> bool {
        self.0.first() == Some(&b'/')
    }

    /// `self` followed by `/` and `name` (no second `/` when `self` already ends with one):
    /// `/tmp` + `x` = `/tmp/x`, `/` + `x` = `/x`. `name` is taken as it is (normally one
    /// directory entry's name).
    pub fn join(&self, name: impl AsRef<[u8]>) -> GuestPathBuf {
        let name = name.as_ref();
        let mut out = Vec::with_capacity(self.0.len() + 1 + name.len());
        out.extend_from_slice(&self.0);
        if out.last() != Some(&b'/') {
            out.push(b'/');
        }
        out.extend_from_slice(name);
        GuestPathBuf(out)
    }

    /// The path without its last component (trailing `/` ignored): `/a/b` → `/a`, `/a` → `/`;
    /// `None` for `/`, the empty path and a single relative component.
    pub fn parent(&self) -> Option<&GuestPath> {
        let trimmed = trim_end_slashes(&self.0);
        let cut = trimmed.iter().rposition(|&b| b == b'/')?;
        let parent = trim_end_slashes(&trimmed[..cut]);
        // Only slashes before the last one: the parent is the root.
        Some(if parent.is_empty() {
            GuestPath::root()
        } else {
            GuestPath::new(parent)
        })
    }

    /// The last component (trailing `/` ignored); `None` for `/` and the empty path.
    pub fn file_name(&self) -> Option<&[u8]> {
        let trimmed = trim_end_slashes(&self.0);
        let start = trimmed
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(0, |i| i + 1);
        let name = &trimmed[start..];
        (!name.is_empty()).then_some(name)
    }

    /// The components between the slashes, empty ones and `.` skipped (`..` is kept):
    /// `//etc/./hosts/` → `etc`, `hosts`.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.0
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
    }
}

fn trim_end_slashes(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., b'/'] = b {
        b = rest;
    }
    b
}

/// Writes `bytes` in the escaped form (module docs).
fn write_escaped(bytes: &[u8], out: &mut impl fmt::Write) -> fmt::Result {
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        let mut plain = 0;
        for (i, c) in valid.char_indices() {
            if c == '\\' || c.is_control() {
                out.write_str(&valid[plain..i])?;
                if c == '\\' {
                    out.write_str("\\\\")?;
                } else {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        write!(out, "\\x{b:02x}")?;
                    }
                }
                plain = i + c.len_utf8();
            }
        }
        out.write_str(&valid[plain..])?;
        for b in chunk.invalid() {
            write!(out, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

impl fmt::Display for GuestPath {
    /// The escaped form (module docs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.width().is_none() && f.precision().is_none() {
            return write_escaped(&self.0, f);
        }
        let mut s = String::new();
        write_escaped(&self.0, &mut s)?;
        f.pad(&s)
    }
}

impl fmt::Debug for GuestPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestPath(\"{self}\")")
    }
}

impl GuestPathBuf {
    /// An empty path.
    pub fn new() -> GuestPathBuf {
        GuestPathBuf(Vec::new())
    }

    /// Reads the escaped form (module docs) back into bytes: `\\` is a backslash, `\xHH` one
    /// byte; any other backslash sequence is refused.
    pub fn from_escaped(text: &str) -> std::result::Result<GuestPathBuf, ParseGuestPathError> {
        let bad = |offset, reason| ParseGuestPathError {
            text: text.to_owned(),
            offset,
            reason,
        };
        let b = text.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'\\' {
                out.push(b[i]);
                i += 1;
                continue;
            }
            match b.get(i + 1) {
                Some(b'\\') => {
                    out.push(b'\\');
                    i += 2;
                }
                Some(b'x') => {
                    let hex = b
                        .get(i + 2..i + 4)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| bad(i, "`\\x` must be followed by two hex digits"))?;
                    out.push(hex);
                    i += 4;
                }
                _ => return Err(bad(i, "a backslash must start `\\\\` or `\\xHH`")),
            }
        }
        Ok(GuestPathBuf(out))
    }

    /// The path's bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The borrowed path.
    pub fn as_guest_path(&self) -> &GuestPath {
        GuestPath::new(&self.0)
    }

    /// Appends `/` (unless the path ends with one) and `name`, like [`GuestPath::join`].
    pub fn push(&mut self, name: impl AsRef<[u8]>) {
        if self.0.last() != Some(&b'/') {
            self.0.push(b'/');
        }
        self.0.extend_from_slice(name.as_ref());
    }
}

impl fmt::Display for GuestPathBuf {
    /// The escaped form (module docs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_guest_path(), f)
    }
}

impl fmt::Debug for GuestPathBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestPathBuf(\"{self}\")")
    }
}

impl Deref for GuestPathBuf {
    type Target = GuestPath;
    fn deref(&self) -> &GuestPath {
        self.as_guest_path()
    }
}

impl Borrow<GuestPath> for GuestPathBuf {
    fn borrow(&self) -> &GuestPath {
        self.as_guest_path()
    }
}

impl ToOwned for GuestPath {
    type Owned = GuestPathBuf;
    fn to_owned(&self) -> GuestPathBuf {
        self.to_guest_path_buf()
    }
}

macro_rules! as_ref_guest_path {
    ($($t:ty),*) => {$(
        impl AsRef<GuestPath> for $t {
            fn as_ref(&self) -> &GuestPath {
                GuestPath::new(self)
            }
        }
    )*};
}
as_ref_guest_path!(str, String, [u8], Vec<u8>);

impl AsRef<GuestPath> for GuestPath {
    fn as_ref(&self) -> &GuestPath {
        self
    }
}

impl AsRef<GuestPath> for GuestPathBuf {
    fn as_ref(&self) -> &GuestPath {
        self.as_guest_path()
    }
}

impl AsRef<[u8]> for GuestPath {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for GuestPathBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for GuestPathBuf {
    /// The string's bytes, as they are (not the escaped form: see
    /// [`GuestPathBuf::from_escaped`]).
    fn from(s: &str) -> GuestPathBuf {
        GuestPathBuf(s.as_bytes().to_vec())
    }
}

impl From<String> for GuestPathBuf {
    /// The string's bytes, as they are (not the escaped form).
    fn from(s: String) -> GuestPathBuf {
        GuestPathBuf(s.into_bytes())
    }
}

impl From<&[u8]> for GuestPathBuf {
    fn from(b: &[u8]) -> GuestPathBuf {
        GuestPathBuf(b.to_vec())
    }
}

impl From<Vec<u8>> for GuestPathBuf {
    fn from(b: Vec<u8>) -> GuestPathBuf {
        GuestPathBuf(b)
    }
}

impl From<&GuestPath> for GuestPathBuf {
    fn from(p: &GuestPath) -> GuestPathBuf {
        p.to_guest_path_buf()
    }
}

impl PartialEq<GuestPath> for GuestPathBuf {
    fn eq(&self, other: &GuestPath) -> bool {
        self.0 == other.0
    }
}

impl PartialEq<&GuestPath> for GuestPathBuf {
    fn eq(&self, other: &&GuestPath) -> bool {
        self.0 == other.0
    }
}

impl PartialEq<GuestPathBuf> for GuestPath {
    fn eq(&self, other: &GuestPathBuf) -> bool {
        self.0 == other.0
    }
}

impl PartialEq<GuestPathBuf> for &GuestPath {
    fn eq(&self, other: &GuestPathBuf) -> bool {
        self.0 == other.0
    }
}

impl PartialEq<str> for GuestPath {
    /// Byte equality with a (raw, not escaped) string.
    fn eq(&self, other: &str) -> bool {
        &self.0 == other.as_bytes()
    }
}

impl PartialEq<str> for GuestPathBuf {
    /// Byte equality with a (raw, not escaped) string.
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for GuestPathBuf {
    /// Byte equality with a (raw, not escaped) string.
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl serde::Serialize for GuestPath {
    /// The escaped form (module docs), as a string.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl serde::Serialize for GuestPathBuf {
    /// The escaped form (module docs), as a string.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for GuestPathBuf {
    /// A string in the escaped form (module docs).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = <Cow<'de, str>>::deserialize(d)?;
        GuestPathBuf::from_escaped(&text).map_err(serde::de::Error::custom)
    }
}

/// Split an absolute guest path into its components (`.` and empty ones dropped). Refuses relative
/// paths, `..`, NUL bytes and components longer than 255 bytes.
pub(crate) fn components(op: Op, path: &GuestPath) -> Result<Vec<&[u8]>> {
    let bad = |reason| Error::InvalidPath {
        op,
        path: path.to_string(),
        reason,
    };
    if !path.is_absolute() {
        return Err(bad("must be absolute"));
    }
    if path.as_bytes().contains(&0) {
        return Err(bad("contains a NUL byte"));
    }
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            b".." => return Err(bad("contains `..`")),
            c if c.len() > 255 => return Err(bad("a component is longer than 255 bytes")),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(op: Op, p: &str) -> Result<Vec<&[u8]>> {
        components(op, GuestPath::new(p))
    }

    #[test]
    fn validation() {
        assert_eq!(c(Op::Stat, "/").unwrap(), Vec::<&[u8]>::new());
        assert_eq!(
            c(Op::Stat, "//etc/./hosts/").unwrap(),
            vec![&b"etc"[..], b"hosts"]
        );
        assert!(matches!(c(Op::Stat, "etc"), Err(Error::InvalidPath { .. })));
        assert!(matches!(
            c(Op::Stat, "/etc/../x"),
            Err(Error::InvalidPath { .. })
        ));
        assert!(matches!(
            c(Op::Stat, "/a\0b"),
            Err(Error::InvalidPath { .. })
        ));
        assert!(c(Op::Stat, &format!("/{}", "x".repeat(256))).is_err());
        let e = c(Op::Write, "/a/..").unwrap_err().to_string();
        assert!(
            e.contains("write") && e.contains("/a/..") && e.contains(".."),
            "{e}"
        );
        assert_eq!(
            components(Op::Stat, GuestPath::new(b"/tmp/bad\xffname")).unwrap(),
            vec![&b"tmp"[..], b"bad\xffname"]
        );
        let e = components(Op::Stat, GuestPath::new(b"/x\xfe/.."))
            .unwrap_err()
            .to_string();
        assert!(e.contains(r"/x\xfe/.."), "{e}");
    }

    #[test]
    fn escaped_form() {
        for (bytes, text) in [
            (&b"/etc/hosts"[..], "/etc/hosts"),
            (b"/tmp/bad\xffname", r"/tmp/bad\xffname"),
            (b"/a\\x2db.mount", r"/a\\x2db.mount"),
            (b"/line\nbreak\x7f", r"/line\x0abreak\x7f"),
            ("/caf\u{e9}/\u{85}".as_bytes(), "/caf\u{e9}/\\xc2\\x85"),
            (b"/\xe2\x82", r"/\xe2\x82"),
            (b"", ""),
        ] {
            let p = GuestPath::new(bytes);
            assert_eq!(p.to_string(), text);
            assert_eq!(GuestPathBuf::from_escaped(text).unwrap(), p);
        }
        assert_eq!(
            GuestPathBuf::from_escaped(r"/A\xFF").unwrap(),
            GuestPath::new(b"/A\xff")
        );
        for bad in [r"/a\", r"/a\x", r"/a\xf", r"/a\xzz", r"/a\n", r"/\u{41}"] {
            let e = GuestPathBuf::from_escaped(bad).unwrap_err();
            assert_eq!(e.offset, bad.find('\\').unwrap(), "{bad}");
        }
        assert_eq!(format!("{:>6}", GuestPath::new("/a")), "    /a");
        assert_eq!(
            format!("{:?}", GuestPath::new(b"/\xff")),
            r#"GuestPath("/\xff")"#
        );
    }

    #[test]
    fn join_parent_file_name() {
        let root = GuestPath::root();
        assert_eq!(root.join("etc"), "/etc");
        assert_eq!(
            GuestPath::new("/etc").join(b"x\xff"),
            GuestPath::new(b"/etc/x\xff")
        );
        assert_eq!(GuestPath::new("/etc/").join("x"), "/etc/x");
        let mut b = GuestPathBuf::from("/");
        b.push("a");
        b.push(b"b\xff");
        assert_eq!(b, GuestPath::new(b"/a/b\xff"));
        for (p, parent) in [
            ("/a/b", Some("/a")),
            ("/a/b/", Some("/a")),
            ("/a", Some("/")),
            ("//a", Some("/")),
            ("/a//b", Some("/a")),
            ("/", None),
            ("", None),
            ("a", None),
            ("a/b", Some("a")),
        ] {
            assert_eq!(
                GuestPath::new(p).parent(),
                parent.map(GuestPath::new),
                "{p}"
            );
        }
        for (p, name) in [
            ("/a/b", Some(&b"b"[..])),
            ("/a/b/", Some(b"b")),
            ("/", None),
            ("", None),
            ("x", Some(b"x")),
        ] {
            assert_eq!(GuestPath::new(p).file_name(), name, "{p}");
        }
        let comps: Vec<&[u8]> = GuestPath::new("//etc/./x/../y/").components().collect();
        assert_eq!(comps, [&b"etc"[..], b"x", b"..", b"y"]);
        assert!(GuestPath::new("/x").is_absolute() && !GuestPath::new("x").is_absolute());
        assert_eq!(GuestPath::new(b"/\xff").to_str(), None);
        assert_eq!(GuestPath::new("/x").to_str(), Some("/x"));
    }

    #[test]
    fn serde_form() {
        let p = GuestPathBuf::from(b"/tmp/bad\xffname\\".to_vec());
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#""/tmp/bad\\xffname\\\\""#);
        assert_eq!(serde_json::from_str::<GuestPathBuf>(&json).unwrap(), p);
        assert!(serde_json::from_str::<GuestPathBuf>(r#""/a\\q""#).is_err());
    }

    proptest! {
        #[test]
        fn escaped_form_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let p = GuestPathBuf::from(bytes.clone());
            let text = p.to_string();
            prop_assert!(!text.chars().any(char::is_control), "{text:?}");
            prop_assert_eq!(GuestPathBuf::from_escaped(&text).unwrap().into_bytes(), bytes.clone());
            let json = serde_json::to_string(&p).unwrap();
            prop_assert_eq!(serde_json::from_str::<GuestPathBuf>(&json).unwrap(), p.clone());
            let yaml = serde_saphyr::to_string(&p).unwrap();
            prop_assert_eq!(serde_saphyr::from_str::<GuestPathBuf>(&yaml).unwrap(), p.clone());
            // Printable UTF-8 without backslashes reads exactly as it is.
            if let Ok(s) = std::str::from_utf8(&bytes)
                && !s.contains('\\')
                && !s.chars().any(char::is_control)
            {
                prop_assert_eq!(text, s);
            }
        }

        #[test]
        fn utf8_text_round_trips(s in "\\PC*") {
            let p = GuestPathBuf::from(s.as_str());
            prop_assert_eq!(GuestPathBuf::from_escaped(&p.to_string()).unwrap(), p);
        }

        #[test]
        fn join_then_split(dir in proptest::collection::vec(
            proptest::collection::vec(any::<u8>().prop_filter("no slash or NUL", |b| *b != b'/' && *b != 0), 1..8), 0..4),
            name in proptest::collection::vec(any::<u8>().prop_filter("no slash or NUL", |b| *b != b'/' && *b != 0), 1..8)) {
            let mut p = GuestPathBuf::from("/");
            for c in &dir {
                p.push(c);
            }
            let child = p.join(&name);
            prop_assert_eq!(child.parent(), Some(p.as_guest_path()));
            prop_assert_eq!(child.file_name(), Some(name.as_slice()));
            prop_assume!(!dir.iter().any(|c| c == b"." || c == b"..") && name != b"." && name != b"..");
            let comps: Vec<&[u8]> = child.components().collect();
            prop_assert_eq!(comps.len(), dir.len() + 1);
        }
    }
}
