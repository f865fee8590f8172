//! Differential tests with qemu-img / qemu-io as the oracle: images made by qemu are read by kiln;
//! images written by kiln are checked and compared by qemu.

mod common;

use std::path::Path;

use common::*;
use kiln_blockdev::BlockDev;
use kiln_qcow2::{
    CompressionType, Disk, FlattenOptions, OpenOptions, begin_overlay, flatten_to_path,
};

const MIB: usize = 1 << 20;

fn write_raw(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("write raw");
}

fn kiln_read_all(path: &Path) -> Vec<u8> {
    let disk = Disk::open(path, &OpenOptions::default()).expect("kiln opens the image");
    let mut buf = vec![0u8; disk.len() as usize];
    // Read in odd-sized pieces so requests straddle cluster boundaries.
    let mut off = 0;
    let mut step = 12_345;
    while off < buf.len() {
        let n = step.min(buf.len() - off);
        disk.read_at(&mut buf[off..off + n], off as u64)
            .expect("kiln reads");
        off += n;
        step = step * 3 % 300_007 + 1;
    }
    buf
}

/// `qemu-img create` of the qcow2 `dir/name` over `backing` (with `opts`, and `size` when given),
/// then `qemu-io` runs each of `writes` on it.
fn qemu_layer(
    dir: &Path,
    name: &str,
    backing: &str,
    opts: &str,
    size: Option<&str>,
    writes: &[&str],
) -> std::path::PathBuf {
    let p = dir.join(name);
    let mut create = vec![
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        opts,
        "-b",
        backing,
        "-F",
        "qcow2",
        s(&p),
    ];
    create.extend(size);
    run("qemu-img", &create);
    let mut io = Vec::new();
    for w in writes {
        io.extend(["-c", *w]);
    }
    io.push(s(&p));
    run("qemu-io", &io);
    p
}

/// A compressed base, a 2-level chain with writes and zero clusters, and an overlay larger than its base.
fn qemu_chain(dir: &Path, cluster: usize, ty: &str) -> (std::path::PathBuf, Vec<u8>) {
    let base_len = 6 * MIB + 4096 * 3; // not a multiple of the cluster size
    let opts = format!("cluster_size={cluster},compression_type={ty}");
    compressed_base(dir, base_len, cluster as u64, &opts);
    qemu_layer(
        dir,
        "mid.qcow2",
        "base.qcow2",
        &opts,
        None,
        &[
            "write -P 0x5a 1000 70000",
            "write -z 2097152 1048576",
            "write -P 0x11 4194304 4096",
        ],
    );
    let bigger = (10 * MIB).to_string();
    let top = qemu_layer(
        dir,
        "top.qcow2",
        "mid.qcow2",
        &opts,
        Some(&bigger),
        &[
            "write -P 0xc3 300000 5000",
            "write -z 65536 131072",
            "write -P 0x77 9437184 70000",
        ],
    );
    let expect = qemu_raw(&top, dir);
    (top, expect)
}

#[test]
fn reads_match_qemu_for_chains_cluster_sizes_and_compression() {
    for ty in ["zlib", "zstd"] {
        for cluster in [512usize, 4096, 65536, 2 * MIB] {
            let dir = tempfile::tempdir().unwrap();
            let (top, expect) = qemu_chain(dir.path(), cluster, ty);
            let got = kiln_read_all(&top);
            assert_eq!(got.len(), expect.len(), "{ty}/{cluster}: virtual size");
            assert_same(
                &got,
                &expect,
                &format!("{ty}/{cluster}: guest bytes vs qemu-img"),
            );
            // And the base alone, which is fully compressed.
            let base = dir.path().join("base.qcow2");
            assert_same(
                &kiln_read_all(&base),
                &qemu_raw(&base, dir.path()),
                &format!("{ty}/{cluster}: compressed base"),
            );
        }
    }
}

#[test]
fn refcount_widths_and_v2_images_read() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("d.raw");
    let data = pattern(3 * MIB, 99);
    write_raw(&raw, &data);
    for opts in [
        "compat=0.10",
        "refcount_bits=1",
        "refcount_bits=2",
        "refcount_bits=8",
        "refcount_bits=32",
        "refcount_bits=64",
    ] {
        let img = dir.path().join("x.qcow2");
        let _ = std::fs::remove_file(&img);
        run(
            "qemu-img",
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-o",
                opts,
                s(&raw),
                s(&img),
            ],
        );
        assert_same(&kiln_read_all(&img), &data, opts);
    }
}

#[test]
fn flatten_is_checked_compared_and_deterministic() {
    for (ty, kiln_ty) in [
        ("zlib", CompressionType::Zlib),
        ("zstd", CompressionType::Zstd),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (top, expect) = qemu_chain(dir.path(), 65536, ty);
        let src = Disk::open(&top, &OpenOptions::default()).unwrap();
        for compression in [Some(kiln_ty), None] {
            let opts = FlattenOptions {
                compression,
                ..FlattenOptions::default()
            };
            let a = dir.path().join("flat-a.qcow2");
            let b = dir.path().join("flat-b.qcow2");
            let stats = flatten_to_path(&src, &a, &opts, &|_, _| {}).unwrap();
            flatten_to_path(&src, &b, &opts, &|_, _| {}).unwrap();
            qemu_check(&a);
            qemu_compare(&a, &top);
            assert_same(&qemu_raw(&a, dir.path()), &expect, "flattened guest bytes");
            assert_eq!(
                sha256(&a),
                sha256(&b),
                "{ty} {compression:?}: flatten must be deterministic"
            );
            if compression.is_some() {
                assert!(
                    stats.passthrough > 0,
                    "{ty}: untouched compressed clusters pass through: {stats:?}"
                );
                assert!(
                    stats.compressed > 0,
                    "{ty}: clusters written in the chain are recompressed: {stats:?}"
                );
            } else {
                assert_eq!(stats.passthrough + stats.compressed, 0, "{stats:?}");
            }
            let info = run("qemu-img", &["info", "-U", s(&a)]);
            assert!(
                info.contains(&format!(
                    "compression type: {}",
                    compression.unwrap_or_default().name()
                )),
                "{info}"
            );
            std::fs::remove_file(&a).unwrap();
            std::fs::remove_file(&b).unwrap();
        }
    }
}

#[test]
fn passthrough_copies_stored_bytes_unchanged() {
    // Flatten a fully compressed zstd image into zstd: every cluster must be passed through, so the
    // result holds the very same compressed bytes.
    let dir = tempfile::tempdir().unwrap();
    let base = compressed_base(dir.path(), 4 * MIB, 5, "compression_type=zstd");
    let src = Disk::open(&base, &OpenOptions::default()).unwrap();
    let out = dir.path().join("flat.qcow2");
    let stats = flatten_to_path(&src, &out, &FlattenOptions::default(), &|_, _| {}).unwrap();
    let Disk::Qcow2(img) = &src else {
        panic!("qcow2 expected")
    };
    let counts = img.allocation().unwrap();
    assert_eq!(
        stats.passthrough, counts.compressed,
        "{stats:?} vs {counts:?}"
    );
    assert_eq!(
        stats.compressed, 0,
        "nothing may be recompressed: {stats:?}"
    );
    qemu_check(&out);
    qemu_compare(&out, &base);
}

#[test]
fn overlay_writes_copy_on_write_and_close_clean() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = qemu_chain(dir.path(), 65536, "zlib");
    let mut model = qemu_raw(&base, dir.path());
    let grown = model.len() + 3 * MIB + 7 * 512;
    let ov_path = dir.path().join("node.qcow2");
    let ov = begin_overlay(&ov_path, &base, Some(grown as u64), &OpenOptions::default()).unwrap();
    model.resize(grown, 0);
    let mut rng = Rng(42);
    for i in 0..400 {
        let len = match i % 4 {
            0 => rng.below(200) as usize + 1,
            1 => 4096,
            2 => rng.below(200_000) as usize + 1,
            _ => 65536,
        };
        let off = rng.below((grown - len) as u64) as usize;
        let byte = (i % 251) as u8;
        let data: Vec<u8> = if i % 9 == 0 {
            vec![0; len]
        } else {
            (0..len).map(|k| byte ^ (k as u8)).collect()
        };
        ov.image().write_at(&data, off as u64).unwrap();
        model[off..off + len].copy_from_slice(&data);
    }
    assert!(
        !ov_path.exists(),
        "the overlay must not appear before commit"
    );
    ov.commit().unwrap();
    assert_qemu_checks_and_reads(&ov_path, dir.path(), &model, "overlay after commit");
    let info = run("qemu-img", &["info", "-U", s(&ov_path)]);
    assert!(
        info.contains("backing file: top.qcow2"),
        "relative backing name: {info}"
    );
    assert!(info.contains("backing file format: qcow2"), "{info}");
    // Re-open, write more, close again: still clean.
    let disk = Disk::open(&ov_path, &OpenOptions::read_write()).unwrap();
    disk.write_at(&[0xEE; 5000], 12_345).unwrap();
    model[12_345..17_345].fill(0xEE);
    disk.close().unwrap();
    assert_qemu_checks_and_reads(&ov_path, dir.path(), &model, "overlay after reopen");
}

#[test]
fn same_writes_give_identical_overlays() {
    let dir = tempfile::tempdir().unwrap();
    let base = compressed_base(dir.path(), 3 * MIB, 8, "");
    let mut hashes = Vec::new();
    for name in ["a.qcow2", "b.qcow2"] {
        let p = dir.path().join(name);
        let ov = begin_overlay(&p, &base, None, &OpenOptions::default()).unwrap();
        let mut rng = Rng(7);
        for _ in 0..100 {
            let off = rng.below(3 * MIB as u64 - 10_000);
            ov.image()
                .write_at(&[rng.next() as u8; 9_999], off)
                .unwrap();
        }
        ov.commit().unwrap();
        hashes.push(sha256(&p));
    }
    assert_eq!(hashes[0], hashes[1]);
}

#[test]
fn flatten_at_extreme_cluster_sizes() {
    for cluster in [512usize, 2 * MIB] {
        let dir = tempfile::tempdir().unwrap();
        let (top, expect) = qemu_chain(dir.path(), cluster, "zstd");
        let src = Disk::open(&top, &OpenOptions::default()).unwrap();
        let out = dir.path().join("flat.qcow2");
        let stats = flatten_to_path(&src, &out, &FlattenOptions::default(), &|_, _| {}).unwrap();
        qemu_check(&out);
        qemu_compare(&out, &top);
        assert_same(
            &qemu_raw(&out, dir.path()),
            &expect,
            &format!("{cluster}: flattened guest bytes"),
        );
        // With 2 MiB clusters every cluster of this small chain has been written over, so there is
        // nothing to pass through; with 512 B clusters most are untouched.
        if cluster == 512 {
            assert!(stats.passthrough > stats.compressed, "{cluster}: {stats:?}");
        }
    }
}

#[test]
fn overlay_over_a_raw_backing_file() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("base.raw");
    let mut model = pattern(2 * MIB + 3 * 512, 31);
    write_raw(&raw, &model);
    let ov_path = dir.path().join("ov.qcow2");
    let ov = begin_overlay(
        &ov_path,
        &raw,
        Some(4 * MIB as u64),
        &OpenOptions::default(),
    )
    .unwrap();
    model.resize(4 * MIB, 0);
    for (off, len) in [
        (100usize, 70_000usize),
        (2 * MIB - 10, 5000),
        (3 * MIB, 65536),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i % 13) as u8 + 1).collect();
        ov.image().write_at(&data, off as u64).unwrap();
        model[off..off + len].copy_from_slice(&data);
    }
    ov.commit().unwrap();
    qemu_check(&ov_path);
    let info = run("qemu-img", &["info", "-U", s(&ov_path)]);
    assert!(info.contains("backing file format: raw"), "{info}");
    assert_same(&qemu_raw(&ov_path, dir.path()), &model, "overlay over raw");
    assert_same(
        &kiln_read_all(&ov_path),
        &model,
        "kiln reads overlay over raw",
    );
}

#[test]
fn created_zstd_images_keep_their_compression_type_after_close() {
    // A regression: `close` once rewrote the incompatible-features field without the compression-type
    // bit, so qemu-img refused a zstd image kiln had created.
    use kiln_blockdev::FileDev;
    use kiln_qcow2::{CreateOptions, Image};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.qcow2");
    let dev = FileDev::create_new(&path).unwrap();
    let img = Image::create(
        Box::new(dev),
        &path,
        CreateOptions {
            size: 4 * MIB as u64,
            cluster_bits: 16,
            compression: CompressionType::Zstd,
            backing: None,
        },
    )
    .unwrap();
    img.write_at(&[7u8; 100_000], 12_345).unwrap();
    img.close().unwrap();
    qemu_check(&path);
    let info = run("qemu-img", &["info", "-U", s(&path)]);
    assert!(info.contains("compression type: zstd"), "{info}");
    let again = Image::open(&path, &OpenOptions::default()).unwrap();
    assert_eq!(again.header().compression_type, CompressionType::Zstd);
}

/// A 1 PiB chain with two clusters of data costs what its data costs: allocation counts, the zero
/// runs and a flatten walk the L1 tables present instead of 2^34 guest clusters (before, `inspect`
/// of such an image ran for minutes). qemu reads the flattened copy back.
#[test]
fn a_petabyte_of_holes_is_skipped_not_walked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = dir.join("base.qcow2");
    let top = dir.join("top.qcow2");
    run("qemu-img", &["create", "-q", "-f", "qcow2", s(&base), "1P"]);
    run("qemu-io", &["-c", "write -P 7 512T 64k", s(&base)]);
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            s(&top),
        ],
    );
    run("qemu-io", &["-c", "write -P 9 1T 64k", s(&top)]);

    let disk = Disk::open(&top, &OpenOptions::default()).unwrap();
    let Disk::Qcow2(img) = &disk else {
        panic!("qcow2 expected")
    };
    let clusters = (1u64 << 50) / 65536;
    let a = img.allocation().unwrap();
    assert_eq!((a.data, a.compressed, a.zero), (1, 0, 0));
    assert_eq!(a.unallocated, clusters - 1);
    // Zero up to the top's cluster, then from there to the backing's.
    assert_eq!(disk.known_zero_len(0, 1 << 50).unwrap(), 1 << 40);
    assert_eq!(
        disk.known_zero_len((1 << 40) + 65536, 1 << 50).unwrap(),
        (512u64 << 40) - (1 << 40) - 65536
    );
    assert!(!disk.range_is_zero(512 << 40, 65536).unwrap());
    assert!(disk.range_is_zero((512 << 40) + 65536, 1 << 45).unwrap());

    let flat = dir.join("flat.qcow2");
    let opts = FlattenOptions {
        compression: None,
        ..FlattenOptions::default()
    };
    let stats = flatten_to_path(&disk, &flat, &opts, &|_, _| {}).unwrap();
    assert_eq!(stats.zero, clusters - 2);
    qemu_check(&flat);
    run(
        "qemu-io",
        &[
            "-c",
            "read -P 9 1T 64k",
            "-c",
            "read -P 7 512T 64k",
            "-c",
            "read -P 0 2T 64k",
            s(&flat),
        ],
    );
    let map = run("qemu-img", &["map", "--output=json", s(&flat)]);
    let data: Vec<&str> = map
        .lines()
        .filter(|l| l.contains("\"data\": true"))
        .collect();
    assert_eq!(data.len(), 2, "{map}");
}
