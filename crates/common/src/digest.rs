//! Lower-case hex and sha256 digests.

use std::fmt::Write as _;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

/// `bytes` as lower-case hex, two digits each.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Whether `s` is a sha256 as kiln writes it: 64 lower-case hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The sha256 (hex) of everything `r` yields, and how many bytes that was.
pub fn sha256_reader(r: &mut dyn Read) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((hex(&h.finalize()), n))
}

/// Open the regular file at `path` for reading, with its size. A FIFO, device or directory is
/// refused (`InvalidInput`) before it is opened, so naming one cannot block; the opened file is
/// checked again, in case the name changed in between.
pub fn open_regular(path: &Path) -> io::Result<(std::fs::File, u64)> {
    let not_regular = || io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    Ok((file, meta.len()))
}

/// The sha256 (hex) and size of the file at `path`, read once from start to end. Only a regular
/// file is read ([`open_regular`]).
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    sha256_reader(&mut open_regular(path)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        assert_eq!(hex(&[0, 0x0f, 0xa0, 0xff]), "000fa0ff");
        let (d, n) = sha256_reader(&mut &b"abc"[..]).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            d,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_sha256(&d));
        assert!(!is_sha256(&d.to_uppercase()));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            sha256_file(dir.path()).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(sha256_file(&f).unwrap(), (d, 3));
    }
}
