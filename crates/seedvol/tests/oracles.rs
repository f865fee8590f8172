//! kiln-seedvol against real readers: isoinfo (genisoimage), xorriso, blkid, pycdlib, and for vfat
//! fsck.fat, mtools and blkid. A missing oracle is a test failure, never a skip: install them
//! with `.ci/run` (apt: genisoimage xorriso dosfstools mtools; pip: pycdlib).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_seedvol::{IsoOptions, Tree, VfatOptions, write_iso, write_vfat};

const EPOCH: u64 = 1_700_000_000; // 2023-11-14T22:13:20Z

/// Runs an oracle; panics (fails the test) when it is missing or exits non-zero.
fn run(cmd: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&run_bytes(cmd, args)).into_owned()
}

/// [`run`], returning the standard output as bytes.
fn run_bytes(cmd: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("oracle `{cmd}` could not be run ({e}); install it (see .ci/run)")
    });
    assert!(
        out.status.success(),
        "`{cmd} {}` failed with {}:\n{}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A file entry of the sample trees: path, contents, mode.
type Spec = (String, Vec<u8>, u32);

fn seed_files() -> Vec<Spec> {
    vec![
        (
            "meta-data".into(),
            b"instance-id: node-1\nlocal-hostname: node-1\n".to_vec(),
            0o644,
        ),
        (
            "user-data".into(),
            b"#cloud-config\nhostname: node-1\npreserve_hostname: false\n".to_vec(),
            0o644,
        ),
        (
            "network-config".into(),
            b"version: 2\nethernets:\n  nic0:\n    match:\n      macaddress: '52:54:00:12:34:56'\n    dhcp4: true\n".to_vec(),
            0o600,
        ),
        ("vendor-data".into(), Vec::new(), 0o644),
    ]
}

/// Seed files plus nested directories and awkward names (collisions, case, dots, non-ASCII).
fn sample_files() -> Vec<Spec> {
    let mut v = seed_files();
    let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    v.extend([
        (
            "scripts/per-boot/10-hello.sh".into(),
            b"#!/bin/sh\necho hi\n".to_vec(),
            0o755,
        ),
        (
            "scripts/per-boot/10-hello.SH".into(),
            b"upper\n".to_vec(),
            0o644,
        ),
        ("scripts/a.tar.gz".into(), big.clone(), 0o644),
        ("scripts/a.tar.gzip".into(), big[..4097].to_vec(), 0o644),
        (
            "deep/l2/l3/l4/l5/l6/l7/leaf.txt".into(),
            b"deep\n".to_vec(),
            0o444,
        ),
        (
            "caf\u{e9}/men\u{fc}.txt".into(),
            "gr\u{fc}\u{df}e\n".as_bytes().to_vec(),
            0o644,
        ),
        (
            "\u{20ac}".repeat(64),
            b"long rock ridge name\n".to_vec(),
            0o644,
        ),
        ("README".into(), b"readme\n".to_vec(), 0o644),
        (".hidden".into(), b"dot\n".to_vec(), 0o600),
    ]);
    v
}

fn tree_of(files: &[Spec], dirs: &[(&str, u32)]) -> Tree {
    let mut t = Tree::new();
    for (p, data, mode) in files {
        t.add_file(p, data.clone(), *mode).unwrap();
    }
    for (p, mode) in dirs {
        t.add_dir(p, *mode).unwrap();
    }
    t
}

const SAMPLE_DIRS: &[(&str, u32)] = &[("scripts", 0o750), ("empty-dir", 0o700)];

/// Writes the same tree as plain files (for pycdlib's comparison). Implicit parents get 0755
/// like in [`Tree`], whatever the umask.
fn mirror(files: &[Spec], dirs: &[(&str, u32)], root: &Path) {
    for (p, data, mode) in files {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        for parent in Path::new(p).ancestors().skip(1) {
            if !parent.as_os_str().is_empty() {
                fs::set_permissions(root.join(parent), fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
    }
    for (p, mode) in dirs {
        let path = root.join(p);
        fs::create_dir_all(&path).unwrap();
        for parent in Path::new(p).ancestors().skip(1) {
            if !parent.as_os_str().is_empty() && !dirs.iter().any(|(d, _)| Path::new(d) == parent) {
                fs::set_permissions(root.join(parent), fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
    }
}

fn write_iso_file(tree: &Tree, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = fs::File::create(&path).unwrap();
    let opts = IsoOptions {
        volume_id: "cidata".into(),
        epoch: EPOCH,
    };
    let n = write_iso(tree, &opts, &mut f).unwrap();
    assert_eq!(n, fs::metadata(&path).unwrap().len());
    path
}

fn sample_iso(dir: &Path) -> PathBuf {
    write_iso_file(&tree_of(&sample_files(), SAMPLE_DIRS), dir, "seed.iso")
}

/// Parses `isoinfo -l` output into full paths (without `.` / `..`), and the line of each.
fn isoinfo_paths(listing: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in listing.lines() {
        if let Some(d) = line.strip_prefix("Directory listing of ") {
            cur = d.trim_end().to_owned();
            continue;
        }
        let Some((_, name)) = line.split_once("] ") else {
            continue;
        };
        let name = name.trim();
        if name == "." || name == ".." || name.is_empty() {
            continue;
        }
        out.push((format!("{cur}{name}"), line.to_owned()));
    }
    out
}

fn expected_paths(files: &[Spec], dirs: &[(&str, u32)]) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for (p, ..) in files {
        let comps: Vec<&str> = p.split('/').collect();
        for i in 1..=comps.len() {
            set.insert(format!("/{}", comps[..i].join("/")));
        }
    }
    for (p, _) in dirs {
        set.insert(format!("/{p}"));
    }
    set
}

#[test]
fn isoinfo_reports_volume_and_extensions() {
    let tmp = tempfile::tempdir().unwrap();
    let iso = sample_iso(tmp.path());
    let d = run("isoinfo", &["-d", "-i", iso.to_str().unwrap()]);
    assert!(d.contains("Volume id: cidata"), "{d}");
    assert!(d.contains("Joliet with UCS level 3 found"), "{d}");
    assert!(d.contains("Rock Ridge signatures version 1 found"), "{d}");
    assert!(d.contains("Logical block size is: 2048"), "{d}");
    let size = fs::metadata(&iso).unwrap().len() / 2048;
    assert!(d.contains(&format!("Volume size is: {size}")), "{d}");
    // Dates come from the epoch, not from the clock (PVD creation date, ECMA-119 8.4.26.1).
    let img = fs::read(&iso).unwrap();
    assert_eq!(&img[16 * 2048 + 813..16 * 2048 + 829], b"2023111422132000");
}

#[test]
fn isovfy_finds_no_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let iso = sample_iso(tmp.path());
    let out = run("isovfy", &[iso.to_str().unwrap()]);
    // isovfy flags problems with "***" lines even when it ends with its summary line.
    assert!(
        out.contains("No errors found") && !out.contains("**"),
        "{out}"
    );
}

#[test]
fn isoinfo_rock_ridge_listing_and_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let iso = sample_iso(tmp.path());
    let iso = iso.to_str().unwrap();
    let listing = run("isoinfo", &["-R", "-l", "-i", iso]);
    let got = isoinfo_paths(&listing);
    let names: BTreeSet<String> = got.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(
        names,
        expected_paths(&sample_files(), SAMPLE_DIRS),
        "{listing}"
    );
    let line = |p: &str| got.iter().find(|(q, _)| q == p).unwrap().1.clone();
    assert!(line("/user-data").starts_with("-rw-r--r--"), "{listing}");
    assert!(line("/user-data").contains("Nov 14 2023"), "{listing}");
    assert!(
        line("/network-config").starts_with("-rw-------"),
        "{listing}"
    );
    assert!(line("/scripts").starts_with("drwxr-x---"), "{listing}");
    assert!(line("/empty-dir").starts_with("drwx------"), "{listing}");
    assert!(
        line("/scripts/per-boot/10-hello.sh").starts_with("-rwxr-xr-x"),
        "{listing}"
    );
    for (path, data, _) in sample_files() {
        let got = run_bytes("isoinfo", &["-R", "-i", iso, "-x", &format!("/{path}")]);
        assert_eq!(got, data, "isoinfo -R -x /{path}");
    }
}

#[test]
fn isoinfo_joliet_listing_and_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let iso = sample_iso(tmp.path());
    let iso = iso.to_str().unwrap();
    // isoinfo prints Joliet names in ISO-8859-1, with `_` for characters outside it.
    let raw = run_bytes("isoinfo", &["-J", "-l", "-i", iso]);
    let listing: String = raw.iter().map(|&b| char::from(b)).collect();
    let names: BTreeSet<String> = isoinfo_paths(&listing)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let latin1 = |p: &String| -> String {
        p.chars()
            .map(|c| if u32::from(c) <= 0xFF { c } else { '_' })
            .collect()
    };
    let want: BTreeSet<String> = expected_paths(&sample_files(), SAMPLE_DIRS)
        .iter()
        .map(latin1)
        .collect();
    assert_eq!(names, want, "{listing}");
    for (path, data, _) in seed_files() {
        let got = run("isoinfo", &["-J", "-i", iso, "-x", &format!("/{path}")]);
        assert_eq!(got.as_bytes(), &data[..], "isoinfo -J -x /{path}");
    }
    // The plain ISO 9660 names are the deterministic level-1 manglings.
    let plain = run("isoinfo", &["-l", "-i", iso]);
    for id in [
        "USER_DAT.;1",
        "META_DAT.;1",
        "NETWORK_.;1",
        "VENDOR_D.;1",
        "SCRIPTS",
        "_HIDDEN.;1",
    ] {
        assert!(plain.contains(id), "{id} missing in\n{plain}");
    }
    let user = run("isoinfo", &["-i", iso, "-x", "/USER_DAT.;1"]);
    assert_eq!(user.as_bytes(), &seed_files()[1].1[..]);
}

#[test]
fn xorriso_reads_without_complaint() {
    let tmp = tempfile::tempdir().unwrap();
    let iso = sample_iso(tmp.path());
    // Exit code 32 on any SORRY-or-worse event (bad records, bad SUSP, ...).
    let out = Command::new("xorriso")
        .args(["-abort_on", "FAILURE", "-return_with", "SORRY", "32"])
        .args(["-indev", iso.to_str().unwrap()])
        .args(["-find", "/", "-exec", "lsdl", "--"])
        .output()
        .expect("oracle `xorriso` missing; install it (see .ci/run)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("Volume id    : 'cidata'"), "{stderr}");
    for p in expected_paths(&sample_files(), SAMPLE_DIRS) {
        assert!(
            stdout.contains(&format!("'{p}'")),
            "{p} missing in\n{stdout}"
        );
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("-rw-r--r--") && l.ends_with("'/user-data'")),
        "{stdout}"
    );
    // xorriso's own verdict on the Rock Ridge tree and its contents.
    let out = Command::new("xorriso")
        .args(["-abort_on", "FAILURE", "-return_with", "SORRY", "32"])
        .args(["-indev", iso.to_str().unwrap()])
        .args([
            "-osirrox",
            "on",
            "-extract",
            "/",
            tmp.path().join("x").to_str().unwrap(),
        ])
        .output()
        .expect("xorriso missing");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        fs::read(tmp.path().join("x/user-data")).unwrap(),
        seed_files()[1].1
    );
}

#[test]
fn blkid_sees_cidata_iso9660() {
    let tmp = tempfile::tempdir().unwrap();
    let iso = sample_iso(tmp.path());
    let out = run("blkid", &["-p", "-o", "export", iso.to_str().unwrap()]);
    assert!(out.lines().any(|l| l == "LABEL=cidata"), "{out}");
    assert!(out.lines().any(|l| l == "TYPE=iso9660"), "{out}");
}

#[test]
fn pycdlib_reads_every_file_via_rock_ridge_and_joliet() {
    let tmp = tempfile::tempdir().unwrap();
    let iso = sample_iso(tmp.path());
    let expected = tmp.path().join("expected");
    mirror(&sample_files(), SAMPLE_DIRS, &expected);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/check_iso.py");
    let out = run(
        "python3",
        &[
            script,
            iso.to_str().unwrap(),
            expected.to_str().unwrap(),
            "cidata",
        ],
    );
    assert!(out.starts_with("ok 13 files 11 dirs"), "{out}");
}

#[test]
fn two_writes_are_identical_and_epoch_matters() {
    let tree = tree_of(&sample_files(), SAMPLE_DIRS);
    let write = |epoch| {
        let mut v = Vec::new();
        write_iso(
            &tree,
            &IsoOptions {
                volume_id: "cidata".into(),
                epoch,
            },
            &mut v,
        )
        .unwrap();
        v
    };
    let (a, b, c) = (write(EPOCH), write(EPOCH), write(EPOCH + 1));
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Insertion order does not matter either.
    let mut rev = sample_files();
    rev.reverse();
    let mut v = Vec::new();
    write_iso(
        &tree_of(&rev, SAMPLE_DIRS),
        &IsoOptions {
            volume_id: "cidata".into(),
            epoch: EPOCH,
        },
        &mut v,
    )
    .unwrap();
    assert_eq!(a, v);
}

fn two_thousand_files() -> Vec<Spec> {
    let mut files: Vec<Spec> = Vec::new();
    for i in 0..2000u32 {
        let path = match i % 4 {
            0 => format!("flat/file-{i:04}.conf"),
            1 => format!("a/b/c/entry-number-{i}"),
            2 => format!("d{}/e{}/same-prefix-{i}.txt", i % 7, i % 5),
            _ => format!("top-{i}"),
        };
        files.push((
            path,
            format!("content {i}\n")
                .repeat((i % 9) as usize)
                .into_bytes(),
            0o644,
        ));
    }
    files
}

#[test]
fn two_thousand_files_in_nested_directories_round_trip() {
    let files = two_thousand_files();
    let tmp = tempfile::tempdir().unwrap();
    let iso = write_iso_file(&tree_of(&files, &[]), tmp.path(), "big.iso");
    let iso_s = iso.to_str().unwrap();
    let want = expected_paths(&files, &[]);
    for ns in ["-R", "-J"] {
        let listing = run("isoinfo", &[ns, "-l", "-i", iso_s]);
        let got: BTreeSet<String> = isoinfo_paths(&listing)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(got.len(), want.len(), "{ns}");
        assert_eq!(got, want, "{ns}");
    }
    for i in [0usize, 1, 2, 3, 1001, 1999] {
        let (p, data, _) = &files[i];
        let got = run("isoinfo", &["-R", "-i", iso_s, "-x", &format!("/{p}")]);
        assert_eq!(got.as_bytes(), &data[..], "{p}");
    }
    let vfy = run("isovfy", &[iso_s]);
    assert!(
        vfy.contains("No errors found") && !vfy.contains("**"),
        "{vfy}"
    );
    let expected = tmp.path().join("expected");
    mirror(&files, &[], &expected);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/check_iso.py");
    let out = run(
        "python3",
        &[script, iso_s, expected.to_str().unwrap(), "cidata"],
    );
    assert!(out.starts_with("ok 2000 files"), "{out}");
}

/// The sample without the pair of names that differ only in case (FAT cannot hold both).
fn vfat_files() -> Vec<Spec> {
    sample_files()
        .into_iter()
        .filter(|(p, ..)| !p.ends_with(".SH"))
        .collect()
}

fn sample_vfat(dir: &Path) -> PathBuf {
    vfat_of(&tree_of(&vfat_files(), SAMPLE_DIRS), dir, "seed.img")
}

fn vfat_of(tree: &Tree, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let opts = VfatOptions {
        volume_label: "CIDATA".into(),
        epoch: EPOCH,
    };
    write_vfat(tree, &opts, &mut f).unwrap();
    path
}

#[test]
fn vfat_passes_fsck_and_mtools_and_blkid() {
    let tmp = tempfile::tempdir().unwrap();
    let img = sample_vfat(tmp.path());
    let img_s = img.to_str().unwrap();
    run("fsck.vfat", &["-n", img_s]);
    let out = run("blkid", &["-p", "-o", "export", img_s]);
    assert!(out.lines().any(|l| l == "LABEL=CIDATA"), "{out}");
    assert!(out.lines().any(|l| l == "TYPE=vfat"), "{out}");
    let dir = run("mdir", &["-i", img_s, "::/"]);
    assert!(dir.contains("CIDATA"), "{dir}");
    for name in [
        "meta-data",
        "user-data",
        "network-config",
        "vendor-data",
        "scripts",
    ] {
        assert!(dir.contains(name), "{name} missing in\n{dir}");
    }
    for (path, data, _) in vfat_files() {
        let out = run_bytes("mtype", &["-i", img_s, &format!("::/{path}")]);
        assert_eq!(out, data, "mtype ::/{path}");
    }
    // Same inputs, same bytes.
    let other = tempfile::tempdir().unwrap();
    let third = sample_vfat(other.path());
    assert_eq!(fs::read(&img).unwrap(), fs::read(&third).unwrap());
}

#[test]
fn vfat_with_two_thousand_files_passes_fsck() {
    let files = two_thousand_files();
    let tmp = tempfile::tempdir().unwrap();
    let img = vfat_of(&tree_of(&files, &[]), tmp.path(), "big.img");
    let img_s = img.to_str().unwrap();
    run("fsck.vfat", &["-n", img_s]);
    let listing = run("mdir", &["-/", "-b", "-i", img_s, "::/"]);
    let n = listing.lines().filter(|l| !l.ends_with('/')).count();
    assert!(n >= 2000, "{n} entries:\n{listing}");
    for i in [0usize, 1, 2, 3, 1999] {
        let (p, data, _) = &files[i];
        let out = run("mtype", &["-i", img_s, &format!("::/{p}")]);
        assert_eq!(out.as_bytes(), &data[..], "{p}");
    }
}
