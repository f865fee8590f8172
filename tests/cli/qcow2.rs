//! The qcow2 verbs through the real binary: outputs, JSON, exit codes, nothing left on failure.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::Path;
use std::process::Command;

fn kiln(args: &[&str]) -> (i32, String, String) {
    let out = crate::util::kiln(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} must be installed (.ci/run): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn compressed_base(dir: &Path) -> std::path::PathBuf {
    let raw = dir.join("base.raw");
    let mut data = vec![0u8; 8 << 20];
    for (i, b) in data.iter_mut().enumerate().take(3 << 20) {
        *b = (i % 251) as u8 ^ (i >> 13) as u8;
    }
    std::fs::write(&raw, data).unwrap();
    let base = dir.join("base.qcow2");
    tool(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            "compression_type=zstd",
            p(&raw),
            p(&base),
        ],
    );
    base
}

#[test]
fn overlay_inspect_convert_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let base = compressed_base(dir.path());
    let ov = dir.path().join("node.qcow2");
    let (code, _, err) = kiln(&["overlay", p(&base), p(&ov), "--size", "16M"]);
    assert_eq!(code, 0, "{err}");
    tool("qemu-img", &["check", p(&ov)]);
    tool("qemu-io", &["-c", "write -P 0x42 1M 64k", p(&ov)]);

    let (code, out, err) = kiln(&["inspect", "--json", p(&ov)]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect --json is JSON");
    assert_eq!(v["format"], "qcow2");
    let chain = v["chain"].as_array().expect("chain");
    assert_eq!(chain.len(), 2, "{out}");
    assert_eq!(chain[0]["virtual_size"], 16 << 20);
    assert_eq!(chain[0]["backing_file"], "base.qcow2");
    assert_eq!(chain[0]["clusters"]["data"], 1);
    assert_eq!(chain[1]["compression_type"], "zstd");
    assert!(chain[1]["clusters"]["compressed"].as_u64().unwrap() > 0);

    let (code, table, _) = kiln(&["inspect", p(&ov)]);
    assert_eq!(code, 0);
    assert!(
        table.contains("backing file:  base.qcow2") && table.contains("compression:   zstd"),
        "{table}"
    );

    let flat = dir.path().join("flat.qcow2");
    let (code, out, err) = kiln(&["convert", "--json", p(&ov), p(&flat)]);
    assert_eq!(code, 0, "{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(s["clusters"]["passthrough"].as_u64().unwrap() > 0, "{out}");
    tool("qemu-img", &["check", p(&flat)]);
    tool("qemu-img", &["compare", p(&flat), p(&ov)]);
    let raw = dir.path().join("flat.raw");
    let (code, _, err) = kiln(&["convert", "--format", "raw", p(&ov), p(&raw)]);
    assert_eq!(code, 0, "{err}");
    tool(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "qcow2", p(&raw), p(&ov)],
    );
}

#[test]
fn bad_input_exits_2_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let base = compressed_base(dir.path());
    let broken = dir.path().join("broken.qcow2");
    let mut d = std::fs::read(&base).unwrap();
    d[40..48].copy_from_slice(&(1u64 << 40).to_be_bytes()); // L1 table far past the end
    std::fs::write(&broken, &d).unwrap();
    let out = dir.path().join("out.qcow2");
    let (code, _, err) = kiln(&["convert", p(&broken), p(&out)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("L1 table") && err.contains("broken.qcow2"),
        "{err}"
    );
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().contains("kiln-tmp")),
        "{leftovers:?}"
    );

    // Found broken only while converting (an L2 table past the end of the file): still bad input,
    // for both output formats, with nothing left behind.
    let late = dir.path().join("late.qcow2");
    let mut d = std::fs::read(&base).unwrap();
    let l1 = u64::from_be_bytes(d[40..48].try_into().unwrap()) as usize;
    d[l1..l1 + 8].copy_from_slice(&((1u64 << 40) | (1 << 63)).to_be_bytes());
    std::fs::write(&late, &d).unwrap();
    for format in ["qcow2", "raw"] {
        let (code, _, err) = kiln(&["convert", p(&late), p(&out), "--format", format]);
        assert_eq!(code, 2, "{format}: {err}");
        assert!(err.contains("L2 table"), "{format}: {err}");
        assert!(!out.exists());
    }

    let (code, _, err) = kiln(&["convert", p(&dir.path().join("missing.qcow2")), p(&out)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot open") && err.contains("missing.qcow2"),
        "{err}"
    );

    let (code, _, err) = kiln(&["inspect", p(&dir.path().join("missing.qcow2"))]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot open") && err.contains("missing.qcow2"),
        "{err}"
    );

    let (code, _, err) = kiln(&["overlay", p(&base), p(&base)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already exists"), "{err}");

    let (code, _, err) = kiln(&["overlay", p(&base), p(&out), "--size", "12Q"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("12Q"), "{err}");
    assert!(!out.exists());
}

#[test]
fn convert_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let base = compressed_base(dir.path());
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.qcow2");
    for (out, compress) in [(&a, "zlib"), (&b, "zlib")] {
        let (code, _, err) = kiln(&[
            "convert",
            "--compress",
            compress,
            "--no-passthrough",
            p(&base),
            p(out),
        ]);
        assert_eq!(code, 0, "{err}");
    }
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "two converts differ"
    );
}

/// `convert` never writes over a file its input reads: the top image or a backing file, named
/// directly, through a symlink or as a hard link. Exit 2, and every file stays as it was.
#[test]
fn convert_refuses_to_overwrite_any_file_of_the_input_chain() {
    let dir = tempfile::tempdir().unwrap();
    let base = compressed_base(dir.path());
    let top = dir.path().join("top.qcow2");
    let (code, _, err) = kiln(&["overlay", p(&base), p(&top)]);
    assert_eq!(code, 0, "{err}");
    std::os::unix::fs::symlink(&base, dir.path().join("link.qcow2")).unwrap();
    std::fs::hard_link(&base, dir.path().join("hard.qcow2")).unwrap();
    let before = (std::fs::read(&base).unwrap(), std::fs::read(&top).unwrap());
    for (out, what) in [
        (top.clone(), "is the input"),
        (base.clone(), "is a backing file of the input"),
        (
            dir.path().join("link.qcow2"),
            "is a backing file of the input",
        ),
        (
            dir.path().join("hard.qcow2"),
            "is a backing file of the input",
        ),
    ] {
        let (code, _, err) = kiln(&["convert", p(&top), p(&out)]);
        assert_eq!(code, 2, "{}: {err}", out.display());
        assert!(err.contains(what), "{}: {err}", out.display());
    }
    assert!(
        (std::fs::read(&base).unwrap(), std::fs::read(&top).unwrap()) == before,
        "an input changed"
    );
}

/// A raw input whose size is not a multiple of 512 keeps every byte: the qcow2 is rounded up to a
/// whole sector, as qemu-img does, and reads back as the input followed by zeros.
#[test]
fn odd_sized_raw_input_is_rounded_up_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("odd.raw");
    let data: Vec<u8> = (0..1690u32).map(|i| (i * 7 + 1) as u8).collect();
    std::fs::write(&raw, &data).unwrap();
    let out = dir.path().join("odd.qcow2");
    let (code, _, err) = kiln(&["convert", p(&raw), p(&out)]);
    assert_eq!(code, 0, "{err}");
    let info = tool("qemu-img", &["info", "--output=json", p(&out)]);
    assert!(info.contains("\"virtual-size\": 2048"), "{info}");
    let back = dir.path().join("back.raw");
    tool("qemu-img", &["convert", "-O", "raw", p(&out), p(&back)]);
    let mut want = data.clone();
    want.resize(2048, 0);
    assert_eq!(std::fs::read(&back).unwrap(), want);
    tool("qemu-img", &["check", p(&out)]);
}

/// Images of other formats are named and refused (exit 2, nothing written) by every verb that
/// opens an image, instead of passing for raw data.
#[test]
fn foreign_formats_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases: Vec<(std::path::PathBuf, &str)> = Vec::new();
    for (fmt, opts, name) in [
        ("vmdk", "", "VMDK (sparse)"),
        ("vmdk", "subformat=streamOptimized", "VMDK (sparse)"),
        ("vhdx", "", "VHDX"),
        ("vpc", "", "VHD (vpc)"),
        ("vdi", "", "VDI"),
        ("qed", "", "QED"),
        ("parallels", "", "Parallels"),
    ] {
        let f = dir.path().join(format!("disk-{fmt}-{}.img", opts.len()));
        let mut args = vec!["create", "-q", "-f", fmt];
        if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        args.extend([p(&f), "8M"]);
        tool("qemu-img", &args);
        cases.push((f, name));
    }
    let luks = dir.path().join("luks.img");
    let mut head = b"LUKS\xba\xbe\x00\x01".to_vec();
    head.resize(1 << 20, 0);
    std::fs::write(&luks, head).unwrap();
    cases.push((luks, "LUKS-encrypted"));

    let out = dir.path().join("out.qcow2");
    // Compressed streams are named too, with how to decompress them.
    for (magic, name, tool) in [
        (&b"\xfd7zXZ\0"[..], "xz", "xz -dk"),
        (b"\x1f\x8b\x08\0", "gzip", "gzip -dk"),
        (b"\x28\xb5\x2f\xfd", "zstd", "zstd -dk"),
        (b"BZh9", "bzip2", "bzip2 -dk"),
    ] {
        let f = dir.path().join(format!("disk.img.{name}"));
        let mut bytes = magic.to_vec();
        bytes.resize(4096, 7);
        std::fs::write(&f, bytes).unwrap();
        for verb in [vec!["inspect", p(&f)], vec!["convert", p(&f), p(&out)]] {
            let (code, _, err) = kiln(&verb);
            assert_eq!(code, 2, "{verb:?}: {err}");
            assert!(
                err.contains(&format!("is {name}-compressed, not a disk image"))
                    && err.contains(tool),
                "{verb:?}: {err}"
            );
            assert!(!out.exists(), "{verb:?} wrote an output");
        }
    }
    for (img, name) in &cases {
        let want = format!("is a {name} image, which kiln does not read");
        for verb in [
            vec!["inspect", p(img)],
            vec!["convert", p(img), p(&out)],
            vec!["overlay", p(img), p(&out)],
        ] {
            let (code, _, err) = kiln(&verb);
            assert_eq!(code, 2, "{verb:?}: {err}");
            assert!(
                err.contains(&want) && err.contains("qemu-img convert"),
                "{verb:?}: {err}"
            );
            assert!(!out.exists(), "{verb:?} wrote an output");
        }
    }
}

/// A compressed cluster that does not decompress is not passed through into the output as it is
/// (which would make an output qemu-img cannot read): the convert fails as bad input, writing
/// nothing, with or without passthrough.
#[test]
fn broken_compressed_cluster_is_not_passed_through() {
    let dir = tempfile::tempdir().unwrap();
    let base = compressed_base(dir.path());
    let mut d = std::fs::read(&base).unwrap();
    let be64 = |d: &[u8], at: usize| u64::from_be_bytes(d[at..at + 8].try_into().unwrap());
    let cluster_bits = u32::from_be_bytes(d[20..24].try_into().unwrap());
    let l2 = (be64(&d, be64(&d, 40) as usize) & ((1 << 56) - 1) & !511) as usize;
    let entry = be64(&d, l2);
    assert!(entry & (1 << 62) != 0, "guest cluster 0 must be compressed");
    let host = (entry & ((1u64 << (62 - (cluster_bits - 8))) - 1)) as usize;
    d[host..host + 32].fill(0xa5);
    let broken = dir.path().join("broken.qcow2");
    std::fs::write(&broken, &d).unwrap();
    let out = dir.path().join("out.qcow2");
    for extra in [&[][..], &["--no-passthrough"][..]] {
        let mut args = vec!["convert", p(&broken), p(&out), "--compress", "zstd"];
        args.extend_from_slice(extra);
        let (code, _, err) = kiln(&args);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert!(err.contains("does not decompress"), "{extra:?}: {err}");
        assert!(!out.exists());
    }
}
