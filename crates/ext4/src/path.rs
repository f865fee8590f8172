//! Guest paths: absolute, no `..`, split into components.

use crate::error::{Error, Op, Result};

/// Split an absolute guest path into its components (`.` and empty ones dropped). Refuses relative
/// paths, `..`, NUL bytes and components longer than 255 bytes.
pub(crate) fn components(op: Op, path: &str) -> Result<Vec<&[u8]>> {
    let bad = |reason| Error::InvalidPath {
        op,
        path: path.to_owned(),
        reason,
    };
    if !path.starts_with('/') {
        return Err(bad("must be absolute"));
    }
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(bad("contains `..`")),
            c if c.len() > 255 => return Err(bad("a component is longer than 255 bytes")),
            c => out.push(c.as_bytes()),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert_eq!(components(Op::Stat, "/").unwrap(), Vec::<&[u8]>::new());
        assert_eq!(
            components(Op::Stat, "//etc/./hosts/").unwrap(),
            vec![&b"etc"[..], b"hosts"]
        );
        assert!(matches!(
            components(Op::Stat, "etc"),
            Err(Error::InvalidPath { .. })
        ));
        assert!(matches!(
            components(Op::Stat, "/etc/../x"),
            Err(Error::InvalidPath { .. })
        ));
        assert!(matches!(
            components(Op::Stat, "/a\0b"),
            Err(Error::InvalidPath { .. })
        ));
        assert!(components(Op::Stat, &format!("/{}", "x".repeat(256))).is_err());
        let e = components(Op::Write, "/a/..").unwrap_err().to_string();
        assert!(
            e.contains("write") && e.contains("/a/..") && e.contains(".."),
            "{e}"
        );
    }
}
