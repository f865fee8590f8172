//! kiln-vfat against independent oracles: `fsck.vfat -n` (dosfstools) must find edited volumes
//! clean and mtools (`mtype`, `mdir`) must read back what was written, with the epoch's dates, on
//! FAT16 (kiln-seedvol's writer) and FAT32 (`mkfs.fat`) volumes; corrupt volumes are refused
//! without panicking.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use kiln_blockdev::{BlockDev, MemDev};
use kiln_fixtures::testing::{Rng, run};
use kiln_vfat::{Error, FatType, OpenOptions, Volume, Written, cmdline_add, config_lines};

const EPOCH: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const CMDLINE: &str = "console=serial0,115200 dwc_otg.lpm_enable=0 console=tty1 root=LABEL=writable rootfstype=ext4 rootwait fixrtc quiet splash\n";
const CONFIG: &str = "[all]\nkernel=vmlinuz\ncmdline=cmdline.txt\n";

/// A FAT16 volume from kiln-seedvol holding the Pi boot files.
fn fat16() -> Vec<u8> {
    let mut t = kiln_seedvol::Tree::new();
    t.add_file("cmdline.txt", CMDLINE.as_bytes().to_vec(), 0o644)
        .unwrap();
    t.add_file("config.txt", CONFIG.as_bytes().to_vec(), 0o644)
        .unwrap();
    t.add_file("overlays/README", b"overlays\n".to_vec(), 0o644)
        .unwrap();
    t.add_file("old.bin", vec![7; 5000], 0o644).unwrap();
    let opts = kiln_seedvol::VfatOptions {
        volume_label: "SYSTEM-BOOT".into(),
        epoch: 1_600_000_000,
    };
    let mut img = std::io::Cursor::new(Vec::new());
    kiln_seedvol::write_vfat_sized(&t, &opts, Some(8 << 20), &mut img).unwrap();
    img.into_inner()
}

/// A FAT32 volume made by `mkfs.fat`, files copied in with `mcopy`.
fn fat32(dir: &Path) -> Vec<u8> {
    let img = dir.join("fat32.img");
    let _ = std::fs::remove_file(&img);
    run(Command::new("mkfs.fat")
        .args([
            "-F",
            "32",
            "-s",
            "1",
            "-S",
            "512",
            "-n",
            "SYSTEM-BOOT",
            "-i",
            "1234abcd",
            "-C",
        ])
        .arg(&img)
        .arg("40960"));
    for (name, data) in [
        ("cmdline.txt", CMDLINE.as_bytes()),
        ("config.txt", CONFIG.as_bytes()),
        ("old.bin", &[7u8; 5000][..]),
    ] {
        let src = dir.join(name);
        std::fs::write(&src, data).unwrap();
        mtools(
            "mcopy",
            &img,
            &[src.to_str().unwrap(), &format!("::/{name}")],
        );
    }
    mtools("mmd", &img, &["::/overlays"]);
    std::fs::read(&img).unwrap()
}

fn mtools(tool: &str, img: &Path, args: &[&str]) -> String {
    run(Command::new(tool)
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(img)
        .args(args))
}

fn fsck_clean(img: &Path) {
    let out = Command::new("fsck.vfat")
        .arg("-n")
        .arg(img)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "fsck.vfat -n {}:\n{text}",
        img.display()
    );
}

/// The Pi edits plus a new nested file, a removal and an unchanged write.
fn edit(dev: &dyn BlockDev) {
    let mut v = Volume::open(dev, "test", OpenOptions::read_write(EPOCH)).unwrap();
    let line = String::from_utf8(v.read("/cmdline.txt").unwrap()).unwrap();
    let line = cmdline_add(&line, &["cgroup_memory=1", "cgroup_enable=memory"]);
    assert_eq!(
        v.write("/cmdline.txt", line.as_bytes()).unwrap(),
        Written::Replaced
    );
    let cfg = String::from_utf8(v.read("/CONFIG.TXT").unwrap()).unwrap();
    let cfg = config_lines(&cfg, &["arm_64bit=1"]);
    assert_eq!(
        v.write("/config.txt", cfg.as_bytes()).unwrap(),
        Written::Replaced
    );
    assert_eq!(
        v.write("/config.txt", cfg.as_bytes()).unwrap(),
        Written::Unchanged
    );
    assert_eq!(
        v.write("/kiln/nested/dir/kiln.txt", b"hello\n").unwrap(),
        Written::Created
    );
    assert_eq!(
        v.write("/overlays/a-long-file-name.dtbo", &[1; 3000])
            .unwrap(),
        Written::Created
    );
    v.remove("/old.bin").unwrap();
    v.close().unwrap();
}

fn check(img: &Path, fat_type: FatType) {
    fsck_clean(img);
    let dev = MemDev::from_vec(std::fs::read(img).unwrap());
    let v = Volume::open(&dev, "check", OpenOptions::read_only()).unwrap();
    assert_eq!(v.info().fat_type, fat_type);
    assert_eq!(v.info().label.as_deref(), Some("SYSTEM-BOOT"));
    let cmdline = mtools("mtype", img, &["::/cmdline.txt"]);
    assert_eq!(
        cmdline,
        CMDLINE.replace('\n', " cgroup_memory=1 cgroup_enable=memory\n")
    );
    assert_eq!(
        mtools("mtype", img, &["::/config.txt"]),
        format!("{CONFIG}arm_64bit=1\n")
    );
    assert_eq!(
        mtools("mtype", img, &["::/kiln/nested/dir/kiln.txt"]),
        "hello\n"
    );
    let root = mtools("mdir", img, &["::/"]);
    assert!(!root.to_lowercase().contains("old"), "{root}");
    for (dir, name) in [
        ("::/", "cmdline"),
        ("::/", "config"),
        ("::/kiln/nested/dir", "kiln"),
    ] {
        let listing = mtools("mdir", img, &[dir]);
        let line = listing
            .lines()
            .find(|l| l.to_lowercase().contains(name) && !l.contains("Directory for"))
            .unwrap_or_else(|| panic!("{name} in {listing}"));
        assert!(
            line.contains("2026-01-01") && line.contains(" 0:00"),
            "{line}"
        );
    }
    let listing = mtools("mdir", img, &["::/kiln"]);
    assert!(listing.contains("2026-01-01"), "{listing}");
    // Dates as kiln-vfat reads them.
    let st = v.stat("/kiln/nested/dir/kiln.txt").unwrap();
    assert_eq!(st.modified.to_string(), "2026-01-01 00:00:00");
    assert_eq!(st.size, 6);
    let names: Vec<String> = v
        .read_dir("/overlays")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(
        names.contains(&"a-long-file-name.dtbo".to_owned()),
        "{names:?}"
    );
}

#[test]
fn edited_fat16_and_fat32_volumes_pass_fsck_and_read_back_with_mtools() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, bytes, fat_type) in [
        ("fat16.img", fat16(), FatType::Fat16),
        ("fat32-edited.img", fat32(tmp.path()), FatType::Fat32),
    ] {
        let img = tmp.path().join(name);
        std::fs::write(&img, &bytes).unwrap();
        fsck_clean(&img);
        let dev = MemDev::from_vec(bytes);
        edit(&dev);
        let mut out = vec![0; dev.len() as usize];
        dev.read_at(&mut out, 0).unwrap();
        std::fs::write(&img, &out).unwrap();
        check(&img, fat_type);
    }
}

#[test]
fn the_same_edits_give_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    for base in [fat16(), fat32(tmp.path())] {
        let images: Vec<Vec<u8>> = (0..2)
            .map(|_| {
                let dev = MemDev::from_vec(base.clone());
                edit(&dev);
                let mut out = vec![0; dev.len() as usize];
                dev.read_at(&mut out, 0).unwrap();
                out
            })
            .collect();
        assert!(images[0] == images[1]);
        assert!(images[0] != base);
    }
}

#[test]
fn a_read_only_volume_writes_nothing() {
    let base = fat16();
    let dev = MemDev::from_vec(base.clone());
    let mut v = Volume::open(&dev, "ro", OpenOptions::read_only()).unwrap();
    assert_eq!(v.read("/cmdline.txt").unwrap(), CMDLINE.as_bytes());
    let e = v.write("/x", b"y").unwrap_err();
    assert!(matches!(e, Error::ReadOnly { .. }), "{e}");
    assert!(matches!(
        v.remove("/cmdline.txt"),
        Err(Error::ReadOnly { .. })
    ));
    v.close().unwrap();
    let mut out = vec![0; base.len()];
    dev.read_at(&mut out, 0).unwrap();
    assert!(out == base);
}

#[test]
fn bad_paths_and_kinds_are_errors_naming_them() {
    let dev = MemDev::from_vec(fat16());
    let mut v = Volume::open(&dev, "pi", OpenOptions::read_write(EPOCH)).unwrap();
    let msg = |e: Error| e.to_string();
    assert!(msg(v.read("/missing.txt").unwrap_err()).contains("/missing.txt"));
    assert!(matches!(v.read("/nope/x"), Err(Error::NotFound { ref path, .. }) if path == "/nope"));
    assert!(matches!(v.read("cmdline.txt"), Err(Error::BadPath { .. })));
    assert!(matches!(
        v.write("/a/../b", b""),
        Err(Error::BadPath { .. })
    ));
    assert!(matches!(v.write("/", b""), Err(Error::BadPath { .. })));
    assert!(matches!(v.write("/a?b", b""), Err(Error::BadPath { .. })));
    assert!(matches!(
        v.write("/overlays", b""),
        Err(Error::WrongKind { .. })
    ));
    assert!(matches!(
        v.write("/cmdline.txt/x", b""),
        Err(Error::WrongKind { .. })
    ));
    assert!(matches!(v.read("/overlays"), Err(Error::WrongKind { .. })));
    v.write("/longfilename.txt", b"1").unwrap();
    let e = v.write("/LONGFI~1.TXT", b"2").unwrap_err();
    assert!(matches!(e, Error::AliasCollision { .. }), "{e}");
    assert_eq!(v.read("/longfilename.txt").unwrap(), b"1");
    v.close().unwrap();
    assert_eq!(
        Volume::open(&dev, "pi", OpenOptions::read_write(5_000_000_000))
            .unwrap_err()
            .to_string(),
        "epoch 5000000000 is after 2107-12-31, the last date FAT records"
    );
}

#[test]
fn foreign_corrupt_and_dirty_volumes_are_refused() {
    let open = |bytes: Vec<u8>| {
        let dev = MemDev::from_vec(bytes);
        Volume::open(&dev, "disk", OpenOptions::read_write(EPOCH)).map(drop)
    };
    let e = open(vec![0; 1 << 20]).unwrap_err();
    assert!(
        matches!(e, Error::NotFat { .. }) && e.to_string().contains("55 AA"),
        "{e}"
    );
    assert_eq!(e.kind(), kiln_blockdev::ErrorKind::Input);
    let mut bad = fat16();
    bad[11] = 3; // bytes per sector
    assert!(
        open(bad)
            .unwrap_err()
            .to_string()
            .contains("bytes per sector 515")
    );
    let mut big = fat16();
    big[19..21].copy_from_slice(&0u16.to_le_bytes());
    big[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = open(big).unwrap_err();
    assert!(matches!(e, Error::NotFat { .. }), "{e}");
    // A FAT whose chain loops: cluster 3 → 3 (FAT16 at sector 1 with one reserved sector).
    let mut looped = fat16();
    let fat = 512 * usize::from(u16::from_le_bytes([looped[14], looped[15]]));
    looped[fat + 6..fat + 8].copy_from_slice(&3u16.to_le_bytes());
    let e = open(looped).unwrap_err();
    assert!(
        matches!(e, Error::CorruptFat { .. }) && e.to_string().contains("loops"),
        "{e}"
    );
    let mut dangling = fat16();
    dangling[fat + 6..fat + 8].copy_from_slice(&1u16.to_le_bytes());
    assert!(matches!(
        open(dangling).unwrap_err(),
        Error::CorruptFat { .. }
    ));
    // Dirty (bit 0 of the BPB's reserved byte): readable, not writable.
    let mut dirty = fat16();
    dirty[0x25] |= 1;
    let dev = MemDev::from_vec(dirty);
    assert!(matches!(
        Volume::open(&dev, "disk", OpenOptions::read_write(EPOCH)),
        Err(Error::Unclean { .. })
    ));
    let v = Volume::open(&dev, "disk", OpenOptions::read_only()).unwrap();
    assert_eq!(v.read("/cmdline.txt").unwrap(), CMDLINE.as_bytes());
}

/// Random damage to the boot sector, the FATs and the root directory never panics out of
/// kiln-vfat (the fuzz target `vfat_edit` does this at length).
#[test]
fn mutated_volumes_never_panic() {
    let base = fat16();
    let mut rng = Rng(7);
    for _ in 0..300 {
        let mut img = base.clone();
        for _ in 0..1 + rng.below(8) {
            let region = rng.below(3);
            let at = match region {
                0 => rng.below(512),
                1 => 512 + rng.below(64 << 10),
                _ => 512 + (64 << 10) + rng.below(32 << 10),
            } as usize;
            let last = img.len() - 1;
            img[at.min(last)] = rng.below(256) as u8;
        }
        let dev = MemDev::from_vec(img);
        let Ok(mut v) = Volume::open(&dev, "m", OpenOptions::read_write(EPOCH)) else {
            continue;
        };
        let _ = v.read_dir("/");
        let _ = v.read("/cmdline.txt");
        let _ = v.write("/cmdline.txt", b"x y\n");
        let _ = v.write("/new/dir/f", &[3; 2000]);
        let _ = v.remove("/old.bin");
        let _ = v.read_dir("/overlays");
        let _ = v.close();
    }
}
