//! Hostile and broken images: each is refused with a clear, specific error, never a panic, and the
//! input file is never modified.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::path::Path;

use common::*;
use kiln_blockdev::BlockDev;
use kiln_qcow2::{Disk, Error, Image, OpenOptions};

fn make(dir: &Path, name: &str, args: &[&str]) -> std::path::PathBuf {
    let p = dir.join(name);
    let mut a = vec!["create", "-q", "-f", "qcow2"];
    a.extend_from_slice(args);
    a.push(s(&p));
    a.push("4M");
    run("qemu-img", &a);
    p
}

/// `qemu-img rebase -u`: point `img` at the qcow2 `backing` without looking at either.
fn rebase_unsafe(img: &Path, backing: &str) {
    run(
        "qemu-img",
        &[
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-b",
            backing,
            "-F",
            "qcow2",
            s(img),
        ],
    );
}

/// Open for reading and for writing; both must fail with `check`, and the file must be unchanged.
fn refused(path: &Path, opts: OpenOptions, check: impl Fn(&Error) -> bool) -> String {
    let before = std::fs::read(path).unwrap();
    let mut msg = String::new();
    for write in [false, true] {
        let o = OpenOptions {
            write,
            ..opts.clone()
        };
        match Image::open(path, &o) {
            Ok(_) => panic!(
                "{} opened (write={write}) but must be refused",
                path.display()
            ),
            Err(e) => {
                assert!(check(&e), "{}: unexpected error: {e:?}", path.display());
                assert_eq!(
                    e.kind(),
                    kiln_blockdev::ErrorKind::Input,
                    "{e}: must count as bad input"
                );
                msg = e.to_string();
            }
        }
    }
    assert!(
        std::fs::read(path).unwrap() == before,
        "{} was modified",
        path.display()
    );
    msg
}

fn patch(path: &Path, at: usize, bytes: &[u8]) {
    let mut d = std::fs::read(path).unwrap();
    d[at..at + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, d).unwrap();
}

#[test]
fn truncated_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = make(dir.path(), "t.qcow2", &[]);
    let d = std::fs::read(&p).unwrap();
    std::fs::write(&p, &d[..40]).unwrap();
    let m = refused(&p, OpenOptions::default(), |e| {
        matches!(e, Error::HeaderTruncated { len: 40, .. })
    });
    assert!(m.contains("truncated"), "{m}");
}

#[test]
fn l1_table_past_end_of_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = make(dir.path(), "l1.qcow2", &[]);
    patch(&p, 40, &(1u64 << 40).to_be_bytes());
    let m = refused(&p, OpenOptions::default(), |e| {
        matches!(
            e,
            Error::PastEndOfFile {
                what: "L1 table",
                ..
            }
        )
    });
    assert!(m.contains("L1 table") && m.contains("past the end"), "{m}");
}

#[test]
fn l2_table_past_end_of_file_is_a_read_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let p = make(dir.path(), "l2.qcow2", &[]);
    run("qemu-io", &["-c", "write -P 1 0 4096", s(&p)]);
    let d = std::fs::read(&p).unwrap();
    let l1_off = u64::from_be_bytes(d[40..48].try_into().unwrap()) as usize;
    patch(&p, l1_off, &((1u64 << 40) | (1 << 63)).to_be_bytes());
    let img = Image::open(&p, &OpenOptions::default()).unwrap();
    let mut buf = [0u8; 16];
    let e = img.read(&mut buf, 0).unwrap_err();
    assert!(
        matches!(
            e,
            Error::PastEndOfFile {
                what: "L2 table",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(BlockDev::read_at(&img, &mut buf, 0).is_err());
}

#[test]
fn cyclic_backing_chain() {
    let dir = tempfile::tempdir().unwrap();
    let a = make(dir.path(), "a.qcow2", &[]);
    make(
        dir.path(),
        "b.qcow2",
        &["-u", "-b", "a.qcow2", "-F", "qcow2"],
    );
    rebase_unsafe(&a, "b.qcow2");
    let m = refused(&a, OpenOptions::default(), |e| {
        matches!(e, Error::BackingChainCycle { .. })
    });
    assert!(m.contains("loops"), "{m}");
    // A self-reference is a cycle too.
    let c = make(dir.path(), "c.qcow2", &[]);
    rebase_unsafe(&c, "c.qcow2");
    refused(&c, OpenOptions::default(), |e| {
        matches!(e, Error::BackingChainCycle { .. })
    });
}

#[test]
fn too_deep_backing_chain() {
    let dir = tempfile::tempdir().unwrap();
    make(dir.path(), "l0.qcow2", &[]);
    for i in 1..=20 {
        let b = format!("l{}.qcow2", i - 1);
        make(
            dir.path(),
            &format!("l{i}.qcow2"),
            &["-u", "-b", &b, "-F", "qcow2"],
        );
    }
    let top = dir.path().join("l20.qcow2");
    let m = refused(&top, OpenOptions::default(), |e| {
        matches!(e, Error::BackingChainTooDeep { .. })
    });
    assert!(m.contains("deeper"), "{m}");
    // A chain within the cap opens.
    Image::open(dir.path().join("l10.qcow2"), &OpenOptions::default()).unwrap();
}

#[test]
fn backing_file_outside_the_allowed_directory() {
    let dir = tempfile::tempdir().unwrap();
    make(dir.path(), "base.qcow2", &[]);
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let top = make(
        &dir.path().join("sub"),
        "top.qcow2",
        &["-u", "-b", "../base.qcow2", "-F", "qcow2"],
    );
    let m = refused(&top, OpenOptions::default(), |e| {
        matches!(e, Error::BackingOutsideAllowedDir { .. })
    });
    assert!(m.contains("outside the allowed directory"), "{m}");
    // An absolute path to a host file is refused the same way.
    let etc = make(
        &dir.path().join("sub"),
        "etc.qcow2",
        &["-u", "-b", "/etc/passwd", "-F", "raw"],
    );
    refused(&etc, OpenOptions::default(), |e| {
        matches!(e, Error::BackingOutsideAllowedDir { .. })
    });
    // Protocol names are never opened.
    let nbd = make(
        &dir.path().join("sub"),
        "nbd.qcow2",
        &["-u", "-b", "nbd://127.0.0.1:1/x", "-F", "raw"],
    );
    refused(&nbd, OpenOptions::default(), |e| {
        matches!(e, Error::BackingNameInvalid { .. })
    });
    // Widening the allowed directory lets the first one open.
    Image::open(&top, &OpenOptions::default().allow_backing_dir(dir.path())).unwrap();
}

#[test]
fn refcount_overflow_when_opening_for_write() {
    // 1-bit refcounts and two L2 entries pointing at one host cluster: the cluster needs a count of 2.
    let dir = tempfile::tempdir().unwrap();
    let p = make(dir.path(), "rc.qcow2", &["-o", "refcount_bits=1"]);
    run("qemu-io", &["-c", "write -P 1 0 131072", s(&p)]);
    let d = std::fs::read(&p).unwrap();
    let l1_off = u64::from_be_bytes(d[40..48].try_into().unwrap()) as usize;
    let l2_off = (u64::from_be_bytes(d[l1_off..l1_off + 8].try_into().unwrap())
        & 0x00ff_ffff_ffff_fe00) as usize;
    let e0: [u8; 8] = d[l2_off..l2_off + 8].try_into().unwrap();
    patch(&p, l2_off + 8, &e0);
    // Reading is fine; writing needs consistent refcounts.
    Image::open(&p, &OpenOptions::default()).unwrap();
    let before = std::fs::read(&p).unwrap();
    let e = Image::open(&p, &OpenOptions::read_write()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::RefcountOverflow {
                bits: 1,
                max: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("reference count above 1"), "{e}");
    assert!(
        std::fs::read(&p).unwrap() == before,
        "refused image was modified"
    );
}

#[test]
fn unsupported_features_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let ext = make(dir.path(), "ext.qcow2", &["-o", "extended_l2=on"]);
    assert!(
        refused(&ext, OpenOptions::default(), |e| matches!(
            e,
            Error::Unsupported { .. }
        ))
        .contains("extended L2")
    );
    let data = make(
        dir.path(),
        "data.qcow2",
        &[
            "-o",
            &format!("data_file={}", s(&dir.path().join("data.raw"))),
        ],
    );
    assert!(
        refused(&data, OpenOptions::default(), |e| matches!(
            e,
            Error::Unsupported { .. }
        ))
        .contains("external data file")
    );
    // An encrypted image: crypt_method (header offset 32) set to 1 (AES) in a plain image. (Made
    // by patching rather than `qemu-img create -o encrypt.format=luks`, whose key-derivation
    // benchmark fails at random — "Unable to get accurate CPU usage" — on coarse CPU clocks.)
    let enc = make(dir.path(), "enc.qcow2", &[]);
    {
        let f = std::fs::OpenOptions::new().write(true).open(&enc).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &1u32.to_be_bytes(), 32).unwrap();
    }
    assert!(
        refused(&enc, OpenOptions::default(), |e| matches!(
            e,
            Error::Unsupported { .. }
        ))
        .contains("encryption")
    );
    let raw = dir.path().join("not.qcow2");
    std::fs::write(&raw, b"definitely not qcow2").unwrap();
    refused(&raw, OpenOptions::default(), |e| {
        matches!(e, Error::BadMagic { .. })
    });
}

#[test]
fn mutated_images_never_panic() {
    // A deterministic mini-fuzzer over the header, L1 and L2 of a real image; the cargo-fuzz target
    // (fuzz/fuzz_targets/qcow2_open_read.rs) explores further. Every outcome must be Ok or an Err.
    let dir = tempfile::tempdir().unwrap();
    let base = compressed_base(dir.path(), 1 << 20, 3, "cluster_size=4096");
    let pristine = std::fs::read(&base).unwrap();
    let mut rng = Rng(2024);
    for round in 0..300 {
        let mut d = pristine.clone();
        for _ in 0..(1 + rng.below(4)) {
            let region = if rng.below(2) == 0 { 128 } else { 3 * 4096 };
            let at = rng.below(region.min(d.len() as u64)) as usize;
            d[at] ^= 1 << rng.below(8);
        }
        let dev = kiln_blockdev::MemDev::from_vec(d);
        let opts = OpenOptions::default().allow_backing_dir(dir.path());
        if let Ok(img) =
            Image::open_storage(Box::new(dev), dir.path().join(format!("m{round}")), &opts)
        {
            let mut buf = vec![0u8; 64 * 1024];
            let mut off = 0;
            while off < img.len().min(1 << 20) {
                let n = (img.len() - off).min(buf.len() as u64) as usize;
                let _ = img.read(&mut buf[..n], off);
                off += n as u64;
            }
            let _ = img.allocation();
        }
    }
    let _ = Disk::open(&base, &OpenOptions::default()).unwrap();
}

/// Runs `f` on another thread and fails the test if it has not returned within 20 s (a hang).
fn within_20s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::sync::mpsc::RecvTimeoutError;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(20)) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("{what}: still blocked after 20 s"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what}: failed (see the panic above)"),
    }
}

fn not_regular(e: &Error) -> String {
    let text = format!(
        "{e}: {}",
        std::error::Error::source(e)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(text.contains("not a regular file"), "{text}");
    assert_eq!(e.kind(), kiln_blockdev::ErrorKind::Input, "{text}");
    text
}

/// A backing name that points at a FIFO or a directory inside the allowed directory is refused by
/// name — opening never blocks on the FIFO — and so are a FIFO, a directory and a device named as
/// the image itself.
#[test]
fn fifo_directory_and_device_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    run("mkfifo", &[s(&dir.path().join("fifo"))]);
    std::fs::create_dir(dir.path().join("subdir")).unwrap();
    for backing in ["fifo", "subdir"] {
        let top = make(
            dir.path(),
            &format!("on-{backing}.qcow2"),
            &["-u", "-b", backing, "-F", "raw"],
        );
        within_20s(backing, move || {
            refused(&top, OpenOptions::default(), |e| {
                not_regular(e);
                true
            })
        });
    }
    for (image, what) in [
        (dir.path().join("fifo"), "FIFO"),
        (dir.path().join("subdir"), "directory"),
        (Path::new("/dev/zero").to_owned(), "character device"),
    ] {
        let e = within_20s(what, move || {
            Disk::open(&image, &OpenOptions::default()).map(drop)
        })
        .unwrap_err();
        let text = not_regular(&e);
        assert!(
            text.contains(&format!("is a {what}, not a regular file")),
            "{text}"
        );
    }
}
/// A backing-name offset near 2^64 with a small size must not wrap around the bounds check.
#[test]
fn backing_file_offset_near_u64_max_is_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for off in [u64::MAX, u64::MAX - 7, u64::MAX - 15] {
        let p = make(dir.path(), &format!("wrap-{}.qcow2", u64::MAX - off), &[]);
        patch(&p, 8, &off.to_be_bytes());
        patch(&p, 16, &16u32.to_be_bytes());
        let m = refused(&p, OpenOptions::default(), |e| {
            matches!(e, Error::InvalidHeader { .. })
        });
        assert!(m.contains("backing_file_offset"), "{m}");
    }
}

/// A lazy-refcounts image whose writer died (qemu-io killed after a write: the dirty bit stays
/// set, the refcounts are stale) reads like qemu-img reads it, and is refused only for writing,
/// without touching the file.
#[test]
fn dirty_lazy_refcount_image_is_read_but_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let p = make(dir.path(), "dirty.qcow2", &["-o", "lazy_refcounts=on"]);
    let st = std::process::Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -P 0x5a 64k 128k",
            "-c",
            "sigraise 9",
            s(&p),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run qemu-io (installed by .ci/run)");
    assert!(!st.success(), "qemu-io was meant to die by SIGKILL");
    let before = std::fs::read(&p).unwrap();
    assert_eq!(before[79] & 1, 1, "the dirty bit is set");
    let img = Image::open(&p, &OpenOptions::read_only()).expect("a dirty image opens read-only");
    assert!(img.header().is_dirty());
    let mut buf = vec![0u8; 256 << 10];
    kiln_blockdev::BlockDev::read_at(&img, &mut buf, 0).unwrap();
    assert!(buf[..64 << 10].iter().all(|&b| b == 0));
    assert!(buf[64 << 10..192 << 10].iter().all(|&b| b == 0x5a));
    assert!(buf[192 << 10..].iter().all(|&b| b == 0));
    drop(img);
    let e = Image::open(&p, &OpenOptions::read_write()).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("dirty"), "{e}");
    assert_eq!(e.kind(), kiln_blockdev::ErrorKind::Input);
    assert_eq!(std::fs::read(&p).unwrap(), before, "the input was changed");
}

/// Header fields qemu-img refuses are refused here too (qemu's limits from `block/qcow2.h`): too
/// many internal snapshots, a snapshot table that is misaligned or wraps around, a
/// refcount table over 8 MiB, a backing format name over 1023 bytes. Each image is first shown to
/// be refused by `qemu-img info`, the oracle.
#[test]
fn headers_qemu_refuses_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let invalid = |field: &'static str| move |e: &Error| matches!(e, Error::InvalidHeader { field: f, .. } if *f == field);
    type Patches = Vec<(usize, Vec<u8>)>;
    type Check = Box<dyn Fn(&Error) -> bool>;
    let cases: Vec<(&str, Patches, Check)> = vec![
        (
            "snapshots-too-many",
            vec![
                (60, 65_537u32.to_be_bytes().to_vec()),
                (64, 65_536u64.to_be_bytes().to_vec()),
            ],
            Box::new(invalid("nb_snapshots")),
        ),
        (
            "snapshots-misaligned",
            vec![
                (60, 1u32.to_be_bytes().to_vec()),
                (64, 12_345u64.to_be_bytes().to_vec()),
            ],
            Box::new(|e: &Error| {
                matches!(
                    e,
                    Error::Misaligned {
                        what: "snapshot table",
                        ..
                    }
                )
            }),
        ),
        (
            "snapshots-wrap-around",
            vec![
                (60, 2u32.to_be_bytes().to_vec()),
                (64, (u64::MAX - 65_535).to_be_bytes().to_vec()),
            ],
            Box::new(invalid("snapshots_offset")),
        ),
        (
            "reftable-too-large",
            vec![(56, 129u32.to_be_bytes().to_vec())],
            Box::new(invalid("refcount_table_clusters")),
        ),
    ];
    for (name, patches, check) in cases {
        let p = make(dir.path(), &format!("{name}.qcow2"), &[]);
        for (at, bytes) in &patches {
            patch(&p, *at, bytes);
        }
        let oracle = std::process::Command::new("qemu-img")
            .args(["info", s(&p)])
            .output()
            .expect("qemu-img (installed by .ci/run)");
        assert!(!oracle.status.success(), "{name}: qemu-img accepts it");
        refused(&p, OpenOptions::default(), check);
    }

    // Not stricter than qemu: a snapshot table past the end of the file is read by qemu-img as
    // zeros, and kiln (which never reads it) opens the image too.
    let p = make(dir.path(), "snapshots-past-eof.qcow2", &[]);
    patch(&p, 60, &1u32.to_be_bytes());
    patch(&p, 64, &(1u64 << 40).to_be_bytes());
    let oracle = std::process::Command::new("qemu-img")
        .args(["info", s(&p)])
        .output()
        .expect("qemu-img");
    assert!(
        oracle.status.success(),
        "qemu-img refuses a snapshot table past EOF"
    );
    Image::open(&p, &OpenOptions::default()).expect("kiln reads it as qemu-img does");

    // A backing format name of 1024 bytes: the extension's length field made too large.
    let base = make(dir.path(), "base.qcow2", &[]);
    let top = make(dir.path(), "top.qcow2", &["-b", s(&base), "-F", "qcow2"]);
    let bytes = std::fs::read(&top).unwrap();
    let magic = 0xe279_2acau32.to_be_bytes();
    let at = bytes
        .windows(4)
        .position(|w| w == magic)
        .expect("a backing format extension");
    patch(&top, at + 4, &1024u32.to_be_bytes());
    let oracle = std::process::Command::new("qemu-img")
        .args(["info", s(&top)])
        .output()
        .expect("qemu-img");
    assert!(
        !oracle.status.success(),
        "qemu-img accepts a 1024-byte backing format"
    );
    refused(
        &top,
        OpenOptions::default(),
        invalid("backing format extension length"),
    );
}
