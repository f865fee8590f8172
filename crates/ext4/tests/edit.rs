//! End-to-end tests of kiln-ext4 against generated images, checked by e2fsck, debugfs and
//! dumpe2fs.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;
use kiln_blockdev::{BlockDev, FileDev, SliceDev};
use kiln_ext4::{Error, FileKind, Filesystem, NewDir, NewFile, OpenOptions, Refusal, Times};

const T: i64 = 1_750_000_000;

/// `root.ext4` on `dev`, opened read-only.
fn open_ro(dev: &FileDev) -> Filesystem<'_> {
    Filesystem::open(dev, "root.ext4", OpenOptions::read_only()).unwrap()
}

/// `root.ext4` on `dev`, opened read-write with the time `T`.
fn open_rw(dev: &FileDev) -> Filesystem<'_> {
    Filesystem::open(dev, "root.ext4", OpenOptions::read_write(T)).unwrap()
}

/// Writes `/etc/machine-id` as a cloud image ships it: `uninitialized`, mode 0444.
fn write_machine_id(fs: &mut Filesystem<'_>) {
    fs.write(
        "/etc/machine-id",
        b"uninitialized\n",
        NewFile {
            perm: 0o444,
            ..Default::default()
        },
    )
    .unwrap();
}

/// 5 MB of incompressible-looking file content.
fn big_data() -> Vec<u8> {
    (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

#[test]
fn ffi_values_match_dumpe2fs() {
    let (_dir, img) = temp_rootfs(64, 10);
    let dev = FileDev::open_read_only(&img).unwrap();
    let fs = open_ro(&dev);
    let info = fs.info();
    let d = dumpe2fs(&img);
    assert_eq!(info.label, d["Filesystem volume name"]);
    assert_eq!(info.block_size.to_string(), d["Block size"]);
    assert_eq!(info.blocks_count.to_string(), d["Block count"]);
    assert_eq!(info.free_blocks.to_string(), d["Free blocks"]);
    assert_eq!(info.inodes_count.to_string(), d["Inode count"]);
    assert_eq!(info.free_inodes.to_string(), d["Free inodes"]);
    assert_eq!(info.inode_size.to_string(), d["Inode size"]);
    let uuid = info
        .uuid
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert_eq!(uuid, d["Filesystem UUID"].replace('-', ""));
    for f in [
        "metadata_csum",
        "64bit",
        "extent",
        "flex_bg",
        "dir_index",
        "huge_file",
        "has_journal",
    ] {
        assert!(
            d["Filesystem features"].split_whitespace().any(|x| x == f),
            "{f}"
        );
    }
    assert!(kiln_ext4::library_version().starts_with("1.47"));
    fs.close().unwrap();
}

#[test]
fn reads_match_debugfs_and_symlinks_resolve_inside_the_guest() {
    let (_dir, img) = temp_rootfs(64, 3000);
    let dev = FileDev::open_read_only(&img).unwrap();
    let fs = open_ro(&dev);
    assert_eq!(fs.read("/etc/hostname").unwrap(), b"golden\n");
    // Relative, absolute and directory symlinks resolve inside the image, never on the host.
    assert_eq!(
        fs.read("/etc/os-release").unwrap(),
        b"ID=kiln\nVERSION_ID=1\n"
    );
    assert_eq!(
        fs.read("/etc/abs-os/os-release").unwrap(),
        b"ID=kiln\nVERSION_ID=1\n"
    );
    assert_eq!(
        fs.read("/lib/os/os-release").unwrap(),
        b"ID=kiln\nVERSION_ID=1\n"
    );
    assert_eq!(
        fs.read_link("/etc/slow-link").unwrap(),
        format!("/usr/lib/os/{}", "x".repeat(150)).into_bytes()
    );
    assert!(matches!(
        fs.read("/etc/loop-a"),
        Err(Error::TooManySymlinks { .. })
    ));
    assert!(matches!(fs.read("/etc/nope"), Err(Error::NotFound { .. })));
    assert!(matches!(
        fs.read("etc/hostname"),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        fs.read("/etc/../etc/hostname"),
        Err(Error::InvalidPath { .. })
    ));
    assert_eq!(fs.lstat("/etc/os-release").unwrap().kind, FileKind::Symlink);
    let st = fs.stat("/etc/ssh/sshd_config").unwrap();
    assert_eq!(
        (st.kind, st.perm, st.size),
        (FileKind::File, 0o600, 19 * 500)
    );
    // The htree directory: all entries, sorted, and it really is indexed.
    let many = fs.read_dir("/var/lib/many").unwrap();
    assert_eq!(many.len(), 3000);
    assert!(many.windows(2).all(|w| w[0].name < w[1].name));
    assert_eq!(many[0].name_lossy(), "entry-00000-with-a-longish-name");
    let st = fs.stat("/var/lib/many").unwrap();
    assert_ne!(
        st.flags & 0x1000,
        0,
        "expected an htree (indexed) directory"
    );
    let names: Vec<String> = fs
        .read_dir("/etc")
        .unwrap()
        .iter()
        .map(|e| e.name_lossy().into_owned())
        .collect();
    let out = debugfs(&img, &["ls -l /etc".into()]);
    for n in &names {
        assert!(out[0].contains(n.as_str()), "{n} not in debugfs ls");
    }
    fs.close().unwrap();
}

#[test]
fn writes_are_checked_by_e2fsck_and_debugfs() {
    let (dir, img) = temp_rootfs(256, 3000);
    {
        let dev = FileDev::open_read_write(&img).unwrap();
        let mut fs = open_rw(&dev);
        write_machine_id(&mut fs);
        fs.create_dir_all("/var/lib/rancher/k3s/agent/images", NewDir::default())
            .unwrap();
        let big = big_data();
        fs.write(
            "/var/lib/rancher/k3s/agent/images/big.tar",
            &big,
            NewFile {
                uid: 100000,
                gid: 70000,
                ..Default::default()
            },
        )
        .unwrap();
        // Grow the htree directory by another 2000 entries.
        for i in 0..2000 {
            fs.write(
                format!("/var/lib/many/new-{i:05}"),
                format!("n{i}").as_bytes(),
                NewFile::default(),
            )
            .unwrap();
        }
        fs.symlink("/etc/machine-id", "/var/lib/dbus-machine-id", 0, 0)
            .unwrap();
        fs.symlink("y".repeat(300), "/slow", 0, 0).unwrap();
        fs.remove_file("/etc/hostname").unwrap();
        fs.remove_all("/usr/lib/os").unwrap();
        fs.truncate("/etc/ssh/sshd_config", 10).unwrap();
        fs.set_permissions("/etc/ssh/sshd_config", 0o640).unwrap();
        fs.set_owner("/etc/ssh/sshd_config", 1, 2, true).unwrap();
        fs.set_times(
            "/etc/ssh/sshd_config",
            Times {
                mtime: Some(5_000_000_000),
                ..Default::default()
            },
            true,
        )
        .unwrap();
        // Write through a final symlink replaces the link by a file.
        fs.write("/etc/os-release", b"replaced", NewFile::default())
            .unwrap();
        assert!(matches!(
            fs.write("/etc", b"x", NewFile::default()),
            Err(Error::IsADirectory { .. })
        ));
        assert!(matches!(
            fs.write("/etc/machine-id/x", b"x", NewFile::default()),
            Err(Error::NotADirectory { .. })
        ));
        assert_eq!(
            fs.read("/var/lib/rancher/k3s/agent/images/big.tar")
                .unwrap(),
            big
        );
        fs.close().unwrap();
    }
    fsck_clean(&img);
    let out = debugfs(
        &img,
        &[
            "cat /etc/machine-id".into(),
            "stat /etc/machine-id".into(),
            "stat /var/lib/rancher/k3s/agent/images/big.tar".into(),
            "stat /etc/ssh/sshd_config".into(),
            "cat /etc/ssh/sshd_config".into(),
            "stat /var/lib/dbus-machine-id".into(),
            "stat /etc/hostname".into(),
            "cat /var/lib/many/new-01999".into(),
            "cat /slow".into(),
            "stat /var/lib/many".into(),
        ],
    );
    assert_eq!(out[0], "uninitialized\n");
    let s = parse_stat(&out[1]).unwrap();
    assert_eq!((s.mode, s.mtime, s.uid), (0o444, T, 0));
    let s = parse_stat(&out[2]).unwrap();
    assert_eq!((s.size, s.uid, s.gid), (5_000_000, 100000, 70000));
    assert_ne!(s.flags & 0x80000, 0, "new files use extents");
    let s = parse_stat(&out[3]).unwrap();
    assert_eq!(
        (s.mode, s.uid, s.gid, s.size, s.mtime),
        (0o640, 1, 2, 10, 5_000_000_000)
    );
    assert_eq!(out[4], "PermitRoot");
    assert_eq!(
        parse_stat(&out[5]).unwrap().fast_link.as_deref(),
        Some("/etc/machine-id")
    );
    assert!(
        out[6].contains("not found") || out[6].is_empty(),
        "{}",
        out[6]
    );
    assert_eq!(out[7], "n1999");
    assert_eq!(out[8], "y".repeat(300));
    assert_ne!(
        parse_stat(&out[9]).unwrap().flags & 0x1000,
        0,
        "still indexed"
    );
    // Large write: dump and compare with the host copy.
    let dumped = dir.path().join("big.out");
    debugfs(
        &img,
        &[format!(
            "dump /var/lib/rancher/k3s/agent/images/big.tar {}",
            dumped.display()
        )],
    );
    let big = big_data();
    assert!(std::fs::read(&dumped).unwrap() == big);
    // The superblock write time is ours, not the wall clock's.
    let d = dumpe2fs(&img);
    let wtime = &d["Last write time"];
    let parsed = run(Command::new("date")
        .env("TZ", "UTC")
        .args(["-u", "+%s", "-d", wtime]));
    assert_eq!(parsed.trim(), T.to_string(), "s_wtime {wtime}");
    assert_eq!(d["Last mount time"], "n/a", "s_mtime untouched");
}

fn edit_once(img: &std::path::Path) {
    let dev = FileDev::open_read_write(img).unwrap();
    let mut fs = open_rw(&dev);
    write_machine_id(&mut fs);
    fs.create_dir_all("/opt/a/b/c", NewDir::default()).unwrap();
    fs.write("/opt/a/b/c/data", &vec![7u8; 3 << 20], NewFile::default())
        .unwrap();
    fs.symlink("/opt/a", "/opt/link", 0, 0).unwrap();
    fs.symlink("z".repeat(100), "/opt/slow", 0, 0).unwrap();
    for i in 0..300 {
        fs.write(format!("/var/lib/many/d-{i}"), b"x", NewFile::default())
            .unwrap();
    }
    fs.remove_all("/usr").unwrap();
    fs.truncate("/etc/ssh/sshd_config", 1).unwrap();
    fs.close().unwrap();
}

#[test]
fn same_edits_give_identical_bytes_across_wall_clock_time() {
    let (dir, base) = temp_rootfs(64, 1000);
    let a = dir.path().join("a.ext4");
    let b = dir.path().join("b.ext4");
    std::fs::copy(&base, &a).unwrap();
    std::fs::copy(&base, &b).unwrap();
    edit_once(&a);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    edit_once(&b);
    assert_ne!(sha256(&a), sha256(&base));
    assert_eq!(sha256(&a), sha256(&b), "two runs of the same edit differ");
    fsck_clean(&a);
}

#[test]
fn unclean_is_read_only_and_unsupported_features_are_refused_without_writing() {
    let (dir, img) = temp_rootfs(64, 10);
    type Check = fn(&Refusal) -> bool;
    let cases: [(&str, &str, Check); 4] = [
        ("dirty", "feature needs_recovery", |r| {
            matches!(r, Refusal::NeedsRecovery)
        }),
        ("unknown-incompat", "ssv feature_incompat 0x802c2", |r| {
            matches!(
                r,
                Refusal::UnsupportedFeatures {
                    kind: "incompat",
                    ..
                }
            )
        }),
        ("errors", "ssv state 3", |r| {
            matches!(r, Refusal::ErrorState { .. })
        }),
        // libext2fs overran a heap buffer reading the bitmaps (found by fuzz/ext4_edit).
        ("first-data-block", "ssv first_data_block 33", |r| {
            matches!(
                r,
                Refusal::BadSuperblock {
                    field: "s_first_data_block",
                    value: 33,
                    ..
                }
            )
        }),
    ];
    for (name, cmd, is_expected) in cases {
        let bad = dir.path().join(format!("{name}.ext4"));
        std::fs::copy(&img, &bad).unwrap();
        run(Command::new("debugfs").args(["-w", "-R", cmd]).arg(&bad));
        let before = sha256(&bad);
        // A filesystem left unclean (a journal to replay, errors noted) is read as it is and
        // refused only for writing; unsupported or unsafe superblocks are refused either way.
        let read_ok = matches!(name, "dirty" | "errors");
        for write in [true, false] {
            let dev = FileDev::open_read_write(&bad).unwrap();
            let opts = if write {
                OpenOptions::read_write(T)
            } else {
                OpenOptions::read_only()
            };
            if !write && read_ok {
                let fs = Filesystem::open(&dev, name, opts).expect("an unclean fs opens read-only");
                assert!(
                    !fs.info().unclean().is_empty(),
                    "{name}: not reported unclean"
                );
                assert!(fs.read_dir("/").is_ok(), "{name}: root not listed");
                fs.close().unwrap();
                continue;
            }
            let err = Filesystem::open(&dev, name, opts).unwrap_err();
            match &err {
                Error::Refused { reason, device, .. } => {
                    assert!(is_expected(reason), "{name}: {err}");
                    assert_eq!(device, name);
                }
                other => panic!("{name}: expected a refusal, got {other}"),
            }
            assert!(err.to_string().contains(name), "{err}");
        }
        assert_eq!(sha256(&bad), before, "{name} was modified");
    }
    // A read-only device cannot be opened for writing; a read-only open refuses writes.
    let dev = FileDev::open_read_only(&img).unwrap();
    assert!(Filesystem::open(&dev, "ro", OpenOptions::read_write(T)).is_err());
    let mut fs = Filesystem::open(&dev, "ro", OpenOptions::read_only()).unwrap();
    assert!(matches!(
        fs.write("/x", b"x", NewFile::default()),
        Err(Error::ReadOnly { .. })
    ));
    fs.close().unwrap();
}

#[test]
fn works_through_a_gpt_partition_window() {
    let (dir, root) = temp_rootfs(64, 10);
    let disk = dir.path().join("disk.img");
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len(80 << 20).unwrap();
    drop(f);
    run(Command::new("sgdisk")
        .args([
            "-n",
            "14:2048:+4M",
            "-t",
            "14:ef02",
            "-n",
            "1:0:+64M",
            "-t",
            "1:8300",
            "-c",
            "1:root",
        ])
        .arg(&disk));
    let dev = FileDev::open_read_write(&disk).unwrap();
    let table = kiln_partition::scan(&dev, "disk.img").unwrap();
    let p1 = table.get(1).unwrap().clone();
    // Copy the filesystem into partition 1.
    let data = std::fs::read(&root).unwrap();
    dev.write_at(&data, p1.start).unwrap();
    let table = kiln_partition::scan(&dev, "disk.img").unwrap();
    let root_part = table.root().unwrap();
    assert_eq!(root_part.number, 1);
    let win = SliceDev::new(&dev, root_part.start, root_part.len).unwrap();
    let mut fs = Filesystem::open(&win, "disk.img#1", OpenOptions::read_write(T)).unwrap();
    fs.write("/etc/hostname", b"node-1\n", NewFile::default())
        .unwrap();
    fs.close().unwrap();
    let part = dir.path().join("p1.ext4");
    let mut buf = vec![0u8; root_part.len as usize];
    dev.read_at(&mut buf, root_part.start).unwrap();
    std::fs::write(&part, &buf).unwrap();
    fsck_clean(&part);
    assert_eq!(debugfs(&part, &["cat /etc/hostname".into()])[0], "node-1\n");
}

/// Edit through a qcow2 overlay twice (a wall-clock second apart): identical overlay sha256,
/// `qemu-img check` clean, e2fsck clean on the result.
#[test]
fn the_same_overlay_edit_twice_gives_the_same_sha256() {
    let (dir, root) = temp_rootfs(64, 1000);
    let (base, start, len) = gpt_qcow2(dir.path(), &root);
    let make = |name: &str| {
        let out = dir.path().join(name);
        let pending =
            kiln_qcow2::begin_overlay(&out, &base, None, &kiln_qcow2::OpenOptions::default())
                .unwrap();
        {
            let table = kiln_partition::scan(pending.image(), name).unwrap();
            let part = table.root().unwrap();
            let win = kiln_partition::window(pending.image(), name, part).unwrap();
            let mut fs = Filesystem::open(&win, name, OpenOptions::read_write(T)).unwrap();
            write_machine_id(&mut fs);
            fs.remove_all("/usr/lib/os").unwrap();
            fs.create_dir_all("/var/lib/rancher/k3s/agent/images", NewDir::default())
                .unwrap();
            fs.write(
                "/var/lib/rancher/k3s/agent/images/x.tar.zst",
                &vec![3u8; 2 << 20],
                NewFile::default(),
            )
            .unwrap();
            fs.symlink("/etc/machine-id", "/var/lib/dbus-machine-id", 0, 0)
                .unwrap();
            fs.close().unwrap();
        }
        pending.commit().unwrap();
        out
    };
    let a = make("a.qcow2");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = make("b.qcow2");
    assert_eq!(sha256(&a), sha256(&b), "overlays differ");
    qemu_img_check(&a);
    let part = dir.path().join("a-part.ext4");
    extract_partition(&a, start, len, &part);
    fsck_clean(&part);
    assert_eq!(
        debugfs(&part, &["cat /etc/machine-id".into()])[0],
        "uninitialized\n"
    );
    eprintln!(
        "overlay size {} bytes",
        std::fs::metadata(&a).unwrap().len()
    );
}

/// Regression (found by the overlay property test): blocks preallocated for a known-length write
/// hold old data; the tail of the last block must read as zeros after the file grows.
#[test]
fn growing_a_file_after_a_preallocated_write_reads_zeros() {
    let (_dir, img) = temp_rootfs(64, 10);
    let dev = FileDev::open_read_write(&img).unwrap();
    let mut fs = open_rw(&dev);
    fs.write("/junk", &vec![0xFFu8; 1 << 20], NewFile::default())
        .unwrap();
    fs.remove_file("/junk").unwrap();
    fs.write("/f", &[1u8; 5000], NewFile::default()).unwrap();
    fs.truncate("/f", 3 * 4096).unwrap();
    let got = fs.read("/f").unwrap();
    assert_eq!(&got[..5000], &[1u8; 5000][..]);
    assert!(got[5000..].iter().all(|&b| b == 0), "stale bytes after EOF");
    fs.close().unwrap();
    fsck_clean(&img);
}

/// Regression (found by the model property test, persisted in model.proptest-regressions): a
/// known-length write into fragmented free space needs more than the 4 extents the inode holds,
/// so the extent tree grows a leaf block; the blocks of every extent inserted after that must
/// still count in i_blocks (e2fsck: "i_blocks is 104, should be 5344").
#[test]
fn a_preallocated_write_over_fragmented_free_space_counts_every_block() {
    let dir = tempfile::tempdir().unwrap();
    let img = rootfs(dir.path(), 64, 10);
    let dev = FileDev::open_read_write(&img).unwrap();
    let mut fs = Filesystem::open(&dev, "root.ext4", OpenOptions::read_write(T)).unwrap();
    // One-block files back to back, then every other one removed: one-block holes.
    fs.create_dir_all("/frag", NewDir::default()).unwrap();
    for i in 0..24u8 {
        fs.write(format!("/frag/{i:02}"), &[i; 4096], NewFile::default())
            .unwrap();
    }
    for i in (0..24).step_by(2) {
        fs.remove_file(format!("/frag/{i:02}")).unwrap();
    }
    let data: Vec<u8> = (0..40 * 4096u32).map(|i| (i % 251) as u8).collect();
    fs.write("/big", &data, NewFile::default()).unwrap();
    assert!(fs.read("/big").unwrap() == data, "kiln read-back");
    fs.close().unwrap();
    let out = debugfs(&img, &["stat /big".into(), "ex /big".into()]);
    // 40 data blocks in 1-block holes: more extents than the 4 an inode holds, so a leaf block.
    assert!(
        out[1].lines().any(|l| l.trim_start().starts_with("0/ 1")),
        "{}",
        out[1]
    );
    // 40 data blocks + the leaf, in 512-byte sectors.
    assert!(out[0].contains("Blockcount: 328"), "{}", out[0]);
    fsck_clean(&img);
}

/// Open read-write and close without edits: not one byte changes. Dropped without `close`, a
/// handle flushes nothing: the superblock and bitmaps stay as they were (the edit is incomplete
/// by design, see the crate docs).
#[test]
fn close_without_edits_changes_nothing_and_drop_does_not_flush() {
    let (_dir, img) = temp_rootfs(64, 10);
    let before = sha256(&img);
    {
        let dev = FileDev::open_read_write(&img).unwrap();
        let fs = open_rw(&dev);
        assert_eq!(fs.bytes_written(), 0);
        fs.close().unwrap();
    }
    assert_eq!(
        sha256(&img),
        before,
        "open + close without edits modified the image"
    );
    let free_before = dumpe2fs(&img)["Free blocks"].clone();
    {
        let dev = FileDev::open_read_write(&img).unwrap();
        let mut fs = open_rw(&dev);
        fs.write("/x", &[5u8; 100_000], NewFile::default()).unwrap();
        drop(fs);
    }
    assert_eq!(
        dumpe2fs(&img)["Free blocks"],
        free_before,
        "Drop flushed the superblock"
    );
}

/// `normalize_fresh` on a new mkfs.ext4 filesystem: no group left `BLOCK_UNINIT`, the
/// lifetime-writes counter zero in the primary and in a backup superblock, the backup group
/// descriptors equal to the primary ones, and e2fsck finds nothing.
#[test]
fn normalize_fresh_leaves_no_release_dependent_state() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fresh.ext4");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(600 << 20)
        .unwrap();
    run(Command::new("mkfs.ext4")
        .env("E2FSPROGS_FAKE_TIME", EPOCH.to_string())
        .args(["-q", "-F", "-b", "4096", "-O", FEATURES])
        .arg(&img));
    let before = run(Command::new("dumpe2fs").arg(&img));
    assert!(
        before.contains("BLOCK_UNINIT"),
        "mkfs left no uninitialised group to test with"
    );
    {
        let dev = FileDev::open_read_write(&img).unwrap();
        let mut fs = Filesystem::open(&dev, "fresh.ext4", OpenOptions::read_write(EPOCH)).unwrap();
        fs.normalize_fresh().unwrap();
        fs.close().unwrap();
    }
    let after = run(Command::new("dumpe2fs").arg(&img));
    assert!(!after.contains("BLOCK_UNINIT"), "{after}");
    assert!(
        !after.contains("Lifetime writes"),
        "s_kbytes_written is not zero:\n{after}"
    );
    // dumpe2fs and e2fsck cannot read the bitmaps through a backup descriptor table even of a
    // fresh mkfs, so the backup's header is read and its descriptor table compared byte for byte.
    let backup = run(Command::new("dumpe2fs")
        .args(["-h", "-o", "superblock=32768", "-o", "blocksize=4096"])
        .arg(&img));
    assert!(!backup.contains("Lifetime writes"), "{backup}");
    let raw = std::fs::read(&img).unwrap();
    let block = |n: usize| &raw[n * 4096..(n + 1) * 4096];
    assert_eq!(
        block(1),
        block(32768 + 1),
        "the backup group descriptors were not rewritten"
    );
    run(Command::new("e2fsck").arg("-fn").arg(&img));

    let ro = FileDev::open_read_only(&img).unwrap();
    let mut fs = Filesystem::open(&ro, "fresh.ext4", OpenOptions::read_only()).unwrap();
    assert!(
        fs.normalize_fresh().is_err(),
        "a read-only handle must refuse"
    );
}
