//! Fixture generation and oracles (mkfs.ext4 -d, sgdisk, e2fsck, debugfs, dumpe2fs). A missing
//! tool makes the test fail, never skip.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const EPOCH: i64 = 1_700_000_000;
pub const FEATURES: &str =
    "metadata_csum,64bit,extents,flex_bg,dir_index,huge_file,dir_nlink,extra_isize";

#[allow(unused_imports)]
pub use kiln_fixtures::testing::{run, sha256};

/// Source tree: a few files and dirs, symlinks (fast, slow, absolute, relative) and an htree
/// directory of `htree_entries` files.
pub fn make_source(dir: &Path, htree_entries: usize) {
    fs::create_dir_all(dir.join("etc/ssh")).unwrap();
    fs::create_dir_all(dir.join("usr/lib/os")).unwrap();
    fs::create_dir_all(dir.join("var/lib/many")).unwrap();
    fs::write(dir.join("etc/hostname"), b"golden\n").unwrap();
    fs::write(
        dir.join("etc/machine-id"),
        b"0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    fs::write(
        dir.join("usr/lib/os/os-release"),
        b"ID=kiln\nVERSION_ID=1\n",
    )
    .unwrap();
    fs::write(
        dir.join("etc/ssh/sshd_config"),
        "PermitRootLogin no\n".repeat(500),
    )
    .unwrap();
    fs::set_permissions(
        dir.join("etc/ssh/sshd_config"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    symlink("../usr/lib/os/os-release", dir.join("etc/os-release")).unwrap();
    symlink("/usr/lib/os", dir.join("etc/abs-os")).unwrap();
    symlink("usr/lib", dir.join("lib")).unwrap();
    let long = format!("/usr/lib/os/{}", "x".repeat(150));
    symlink(&long, dir.join("etc/slow-link")).unwrap();
    symlink("loop-b", dir.join("etc/loop-a")).unwrap();
    symlink("loop-a", dir.join("etc/loop-b")).unwrap();
    for i in 0..htree_entries {
        fs::write(
            dir.join(format!("var/lib/many/entry-{i:05}-with-a-longish-name")),
            format!("{i}\n"),
        )
        .unwrap();
    }
}

/// mkfs.ext4 -d with Ubuntu's features into `img` (created, `size_mb` MiB), deterministic.
pub fn mkfs(img: &Path, src: &Path, size_mb: u64, label: &str) {
    let f = fs::File::create(img).unwrap();
    f.set_len(size_mb << 20).unwrap();
    drop(f);
    run(Command::new("mkfs.ext4")
        .env("E2FSPROGS_FAKE_TIME", EPOCH.to_string())
        .args([
            "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-L", label, "-O", FEATURES,
        ])
        .args(["-U", "6b1e5c1a-0000-4000-8000-000000000001"])
        .args([
            "-E",
            "root_owner=0:0,hash_seed=6b1e5c1a-0000-4000-8000-000000000002,lazy_itable_init=0",
        ])
        .arg("-d")
        .arg(src)
        .arg(img));
}

/// `e2fsck -fyD`: (re)build directory indexes, so large directories become htrees as on a
/// system where the kernel grew them (mke2fs -d writes linear directories).
pub fn index_dirs(img: &Path) {
    let out = Command::new("e2fsck")
        .arg("-fyD")
        .arg(img)
        .output()
        .expect("cannot run e2fsck");
    // 0 = clean, 1 = "errors corrected" (the directory optimisation counts as a change).
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "e2fsck -fyD: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A fresh rootfs image in `dir` (ext4, `cloudimg-rootfs`, htree dir of 3000 entries).
pub fn rootfs(dir: &Path, size_mb: u64, htree_entries: usize) -> PathBuf {
    let src = dir.join("src");
    make_source(&src, htree_entries);
    let img = dir.join("root.ext4");
    mkfs(&img, &src, size_mb, "cloudimg-rootfs");
    index_dirs(&img);
    img
}

/// [`rootfs`] in a new temporary directory (removed when the returned handle drops).
pub fn temp_rootfs(size_mb: u64, htree_entries: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let img = rootfs(dir.path(), size_mb, htree_entries);
    (dir, img)
}

/// `e2fsck -fn`: must exit 0 (clean, nothing to fix).
pub fn fsck_clean(img: &Path) {
    run(Command::new("e2fsck").arg("-fn").arg(img));
}

/// Run debugfs commands (read-only) in one batch; returns the output of each command in order.
pub fn debugfs(img: &Path, cmds: &[String]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("cmds");
    fs::write(&script, cmds.join("\n") + "\n").unwrap();
    // debugfs echoes "debugfs: <cmd>" before each command's output (on stdout); output without a
    // final newline runs straight into the next echo, so split on the exact echoes, in order.
    let text = run(Command::new("debugfs").arg("-f").arg(&script).arg(img));
    let mut starts = Vec::new();
    let mut from = 0;
    for c in cmds {
        let marker = format!("debugfs: {c}\n");
        let at = text[from..]
            .find(&marker)
            .map(|i| i + from)
            .unwrap_or_else(|| panic!("no echo of {c:?} in:\n{text}"));
        starts.push((at, at + marker.len()));
        from = at + marker.len();
    }
    let mut parts: Vec<String> = Vec::new();
    for (i, &(_, body)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(text.len(), |&(next, _)| next);
        parts.push(text[body..end].to_owned());
    }
    assert_eq!(
        parts.len(),
        cmds.len(),
        "debugfs output did not split per command:\n{text}"
    );
    parts
}

/// Fields of `debugfs stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DStat {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u32,
    pub mtime: i64,
    pub fast_link: Option<String>,
    pub flags: u32,
}

pub fn parse_stat(out: &str) -> Option<DStat> {
    let field = |key: &str| -> Option<String> {
        let at = out.find(key)? + key.len();
        Some(out[at..].split_whitespace().next()?.to_owned())
    };
    let kind = field("Type:")?;
    let mode = u32::from_str_radix(&field("Mode:")?, 8).ok()?;
    let flags = u32::from_str_radix(field("Flags:")?.trim_start_matches("0x"), 16).ok()?;
    let uid = field("User:")?.parse().ok()?;
    let gid = field("Group:")?.parse().ok()?;
    let size = field("Size:")?.parse().ok()?;
    let links = field("Links:")?.parse().ok()?;
    let mt = field("mtime:")?;
    let (lo, extra) = mt.split_once(':').unwrap_or((&mt, "0"));
    let lo = u32::from_str_radix(lo.trim_start_matches("0x"), 16).ok()?;
    let extra = u32::from_str_radix(extra, 16).ok()?;
    let mtime = i64::from(lo as i32) + (i64::from(extra & 3) << 32);
    let fast_link = out.find("Fast link dest: \"").map(|at| {
        let rest = &out[at + 17..];
        rest[..rest.rfind('"').unwrap_or(rest.len())].to_owned()
    });
    Some(DStat {
        kind,
        mode,
        uid,
        gid,
        size,
        links,
        mtime,
        fast_link,
        flags,
    })
}

/// `dumpe2fs -h` as key → value.
pub fn dumpe2fs(img: &Path) -> BTreeMap<String, String> {
    let out = run(Command::new("dumpe2fs").arg("-h").arg(img));
    out.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Put `root` into partition 1 of a GPT disk (14 = BIOS boot, 1 = root, like Ubuntu's) and
/// convert it to a zlib-compressed qcow2. Returns (qcow2 path, partition start, partition length).
pub fn gpt_qcow2(dir: &Path, root: &Path) -> (PathBuf, u64, u64) {
    let d = kiln_fixtures::testing::gpt_qcow2(dir, "base.qcow2", root, 0).unwrap();
    (d.qcow2, d.start, d.root_len)
}

/// `qemu-img check` must report no errors and no leaks (exit 0).
pub fn qemu_img_check(img: &Path) {
    run(Command::new("qemu-img").arg("check").arg(img));
}

/// The bytes of one partition of a qcow2 chain, as a raw file (via `qemu-img convert`).
pub fn extract_partition(qcow: &Path, start: u64, len: u64, out: &Path) {
    let raw = out.with_extension("whole.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(qcow)
        .arg(&raw));
    let f = fs::File::open(&raw).unwrap();
    let mut buf = vec![0u8; len as usize];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, start).unwrap();
    fs::write(out, &buf).unwrap();
    fs::remove_file(&raw).unwrap();
}
