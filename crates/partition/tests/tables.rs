//! Partition discovery against tables made by sgdisk / sfdisk and filesystems made by mkfs.ext4,
//! checked with `sgdisk -i`, `sfdisk -J` and `blkid -p`. Missing tools fail the tests.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_blockdev::{BlockDev, FileDev};
use kiln_partition::{Error, FsType, Guid, PartType, Selector, TableKind, scan, window};

use kiln_fixtures::testing::run;

fn sparse_file(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// A new sparse file `dir/name` of `len` bytes.
fn blank_disk(dir: &Path, name: &str, len: u64) -> PathBuf {
    let disk = dir.join(name);
    sparse_file(&disk, len);
    disk
}

/// `mkfs.ext4` with `label` on the whole file `path`.
fn mkfs_ext4(path: &Path, label: &str) {
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", label])
        .arg(path));
}

/// `sfdisk -q disk` with `script` on its standard input; must succeed.
fn sfdisk(disk: &Path, script: &str) {
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg(disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run sfdisk");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

/// An ext4 filesystem of `len` bytes with `label`, written at `offset` of `disk`.
fn put_ext4(dir: &Path, disk: &FileDev, offset: u64, len: u64, label: &str) {
    let f = dir.join(format!("fs-{offset}.ext4"));
    sparse_file(&f, len);
    mkfs_ext4(&f, label);
    disk.write_at(&std::fs::read(&f).unwrap(), offset).unwrap();
}

/// A FAT16 boot sector and two empty FATs (what blkid needs to call it vfat).
fn put_vfat(disk: &FileDev, offset: u64, label: &[u8; 11]) {
    let mut b = [0u8; 512];
    b[..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
    b[3..11].copy_from_slice(b"kiln    ");
    b[11..13].copy_from_slice(&512u16.to_le_bytes());
    b[13] = 4; // sectors per cluster
    b[14..16].copy_from_slice(&4u16.to_le_bytes()); // reserved sectors
    b[16] = 2; // FATs
    b[17..19].copy_from_slice(&512u16.to_le_bytes()); // root entries
    b[19..21].copy_from_slice(&16384u16.to_le_bytes()); // sectors
    b[21] = 0xF8;
    b[22..24].copy_from_slice(&16u16.to_le_bytes()); // sectors per FAT
    b[36] = 0x80;
    b[38] = 0x29;
    b[39..43].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    b[43..54].copy_from_slice(label);
    b[54..62].copy_from_slice(b"FAT16   ");
    b[510] = 0x55;
    b[511] = 0xAA;
    disk.write_at(&b, offset).unwrap();
    for fat in 0..2u64 {
        disk.write_at(&[0xF8, 0xFF, 0xFF, 0xFF], offset + (4 + fat * 16) * 512)
            .unwrap();
    }
}

/// `blkid -p` on a byte range: (TYPE, label) where label is LABEL or the FAT boot-sector label.
fn blkid(disk: &Path, offset: u64, size: u64) -> (Option<String>, Option<String>) {
    let out = Command::new("blkid")
        .args([
            "-p",
            "-o",
            "export",
            "-O",
            &offset.to_string(),
            "-S",
            &size.to_string(),
        ])
        .arg(disk)
        .output()
        .expect("cannot run blkid");
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_owned))
    };
    (get("TYPE"), get("LABEL").or_else(|| get("LABEL_FATBOOT")))
}

/// `sgdisk -i N`: (first sector, sector count, type GUID, name).
fn sgdisk_info(disk: &Path, n: u32) -> (u64, u64, String, String) {
    let out = run(Command::new("sgdisk")
        .arg("-i")
        .arg(n.to_string())
        .arg(disk));
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} in {out}"))
            .trim()
            .to_owned()
    };
    let first = field("First sector:")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let size = field("Partition size:")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let guid = field("Partition GUID code:")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let name = field("Partition name:").trim_matches('\'').to_owned();
    (first, size, guid, name)
}

/// Ubuntu's cloud-image layout: 1 root, 14 BIOS boot, 15 ESP (vfat `UEFI`), 16 /boot (`BOOT`).
fn ubuntu_disk(dir: &Path) -> std::path::PathBuf {
    let disk = blank_disk(dir, "disk.img", 160 << 20);
    run(Command::new("sgdisk")
        .args(["-n", "14:2048:+4M", "-t", "14:ef02"])
        .args(["-n", "15:0:+8M", "-t", "15:ef00"])
        .args(["-n", "16:0:+40M", "-t", "16:8300", "-c", "16:boot"])
        .args(["-n", "1:0:0", "-t", "1:8300", "-c", "1:root"])
        .arg(&disk));
    let dev = FileDev::open_read_write(&disk).unwrap();
    let table = scan(&dev, "disk.img").unwrap();
    let (p1, p15, p16) = (
        table.get(1).unwrap(),
        table.get(15).unwrap(),
        table.get(16).unwrap(),
    );
    put_ext4(dir, &dev, p1.start, p1.len, "cloudimg-rootfs");
    put_vfat(&dev, p15.start, b"UEFI       ");
    put_ext4(dir, &dev, p16.start, p16.len, "BOOT");
    disk
}

#[test]
fn gpt_ubuntu_layout_matches_sgdisk_and_blkid() {
    let dir = tempfile::tempdir().unwrap();
    let disk = ubuntu_disk(dir.path());
    let dev = FileDev::open_read_only(&disk).unwrap();
    let table = scan(&dev, "disk.img").unwrap();
    assert_eq!(table.kind, TableKind::Gpt);
    assert_eq!(table.sector_size, 512);
    let numbers: Vec<u32> = table.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, vec![1, 14, 15, 16]);
    for p in &table.partitions {
        let (first, sectors, guid, name) = sgdisk_info(&disk, p.number);
        assert_eq!(
            (p.start, p.len),
            (first * 512, sectors * 512),
            "partition {}",
            p.number
        );
        let PartType::Gpt(g) = p.part_type else {
            panic!("not a GPT type")
        };
        assert_eq!(g.to_string(), guid, "partition {}", p.number);
        assert_eq!(p.name, name, "partition {}", p.number);
        let (ty, label) = blkid(&disk, p.start, p.len);
        let ours = (p.fs != FsType::Unknown).then(|| p.fs.as_str().to_owned());
        assert_eq!(ours, ty, "fs type of partition {}", p.number);
        assert_eq!(p.label, label, "label of partition {}", p.number);
    }
    assert_eq!(
        table.get(1).unwrap().part_type,
        PartType::Gpt(Guid::LINUX_FS)
    );
    let root = table.root().unwrap();
    assert_eq!(
        (root.number, root.fs, root.label.as_deref()),
        (1, FsType::Ext4, Some("cloudimg-rootfs"))
    );
    assert_eq!(
        table.select(Selector::Number(16)).unwrap().label.as_deref(),
        Some("BOOT")
    );
    let e = table.get(7).unwrap_err().to_string();
    assert!(
        e.contains("disk.img") && e.contains('7') && e.contains("16=ext4(BOOT)"),
        "{e}"
    );
    // The window is exactly the partition: its superblock magic sits at +1024+56.
    let w = window(&dev, "disk.img", root).unwrap();
    let mut magic = [0u8; 2];
    w.read_at(&mut magic, 1024 + 56).unwrap();
    assert_eq!(magic, [0x53, 0xEF]);
}

#[test]
fn root_falls_back_to_the_largest_linux_filesystem_and_refuses_ambiguity() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "d.img", 64 << 20);
    run(Command::new("sgdisk")
        .args(["-n", "1:2048:+8M", "-n", "2:0:+20M", "-n", "3:0:+12M"])
        .arg(&disk));
    let dev = FileDev::open_read_write(&disk).unwrap();
    let t = scan(&dev, "d.img").unwrap();
    for (n, label) in [(1, "one"), (2, "two"), (3, "three")] {
        let p = t.get(n).unwrap();
        put_ext4(dir.path(), &dev, p.start, p.len, label);
    }
    let t = scan(&dev, "d.img").unwrap();
    assert_eq!(t.root().unwrap().number, 2, "largest ext fs");
    // Two partitions labelled cloudimg-rootfs: refuse to guess.
    for n in [1, 3] {
        let p = t.get(n).unwrap();
        put_ext4(dir.path(), &dev, p.start, p.len, "cloudimg-rootfs");
    }
    let t = scan(&dev, "d.img").unwrap();
    assert!(
        matches!(t.root(), Err(Error::AmbiguousRoot { ref numbers, .. }) if numbers == &vec![1, 3])
    );
    assert_eq!(
        t.select(Selector::Number(2)).unwrap().label.as_deref(),
        Some("two")
    );
}

#[test]
fn no_linux_filesystem_is_an_error_naming_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "empty-parts.img", 16 << 20);
    run(Command::new("sgdisk").args(["-n", "1:2048:0"]).arg(&disk));
    let dev = FileDev::open_read_only(&disk).unwrap();
    let t = scan(&dev, "empty-parts.img").unwrap();
    let e = t.root().unwrap_err().to_string();
    assert!(
        e.contains("empty-parts.img") && e.contains("no root filesystem"),
        "{e}"
    );
}

#[test]
fn mbr_with_logical_partitions_matches_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "mbr.img", 64 << 20);
    let script = "label: dos\nstart=2048, size=16384, type=83\nstart=20480, type=5\nstart=22528, size=40960, type=83\n";
    sfdisk(&disk, script);
    let dev = FileDev::open_read_write(&disk).unwrap();
    let t = scan(&dev, "mbr.img").unwrap();
    assert_eq!(t.kind, TableKind::Mbr);
    let json = run(Command::new("sfdisk").arg("-J").arg(&disk));
    // Every non-extended partition sfdisk lists, with its start and size.
    let mut expected = Vec::new();
    for chunk in json.split("\"node\":").skip(1) {
        let num = |k: &str| -> u64 {
            let at = chunk.find(k).unwrap() + k.len();
            chunk[at..]
                .trim_start_matches([' ', ':'])
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let node = chunk.split('"').nth(1).unwrap().to_owned();
        let n: u32 = node
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        if chunk.contains("\"type\":\"5\"") || chunk.contains("\"type\": \"5\"") {
            continue;
        }
        expected.push((n, num("\"start\"") * 512, num("\"size\"") * 512));
    }
    assert_eq!(expected.len(), 2, "{json}");
    let ours: Vec<(u32, u64, u64)> = t
        .partitions
        .iter()
        .map(|p| (p.number, p.start, p.len))
        .collect();
    assert_eq!(ours, expected);
    let (p1, p5) = (t.get(1).unwrap().clone(), t.get(5).unwrap().clone());
    put_ext4(dir.path(), &dev, p1.start, p1.len, "small");
    put_ext4(dir.path(), &dev, p5.start, p5.len, "big");
    let t = scan(&dev, "mbr.img").unwrap();
    assert_eq!(t.root().unwrap().number, 5);
    assert_eq!(t.get(5).unwrap().part_type, PartType::Mbr(0x83));
}

#[test]
fn whole_disk_filesystem_without_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "bare.ext4", 32 << 20);
    mkfs_ext4(&disk, "cloudimg-rootfs");
    let dev = FileDev::open_read_only(&disk).unwrap();
    let t = scan(&dev, "bare.ext4").unwrap();
    assert_eq!(t.kind, TableKind::None);
    let root = t.root().unwrap();
    assert_eq!(
        (root.number, root.start, root.len, root.fs),
        (0, 0, 32 << 20, FsType::Ext4)
    );
    // A bare vfat volume is recognised too (its boot sector ends in 55 AA like an MBR).
    let fat = blank_disk(dir.path(), "bare.vfat", 8 << 20);
    let fdev = FileDev::open_read_write(&fat).unwrap();
    put_vfat(&fdev, 0, b"CIDATA     ");
    let t = scan(&fdev, "bare.vfat").unwrap();
    assert_eq!(
        (t.kind, t.partitions[0].fs, t.partitions[0].label.as_deref()),
        (TableKind::None, FsType::Vfat, Some("CIDATA"))
    );
}

#[test]
fn damaged_tables_fall_back_or_fail_with_the_device_name() {
    let dir = tempfile::tempdir().unwrap();
    let disk = ubuntu_disk(dir.path());
    let dev = FileDev::open_read_write(&disk).unwrap();
    // Break the primary header's CRC: gptman reads the backup header instead.
    let mut b = [0u8; 1];
    dev.read_at(&mut b, 512 + 40).unwrap();
    dev.write_at(&[b[0] ^ 0xFF], 512 + 40).unwrap();
    let t = scan(&dev, "disk.img").unwrap();
    assert_eq!(t.partitions.len(), 4);
    // Break the backup too: an error naming the device.
    let last = dev.len() - 512;
    dev.read_at(&mut b, last + 40).unwrap();
    dev.write_at(&[b[0] ^ 0xFF], last + 40).unwrap();
    let e = scan(&dev, "disk.img").unwrap_err();
    assert!(matches!(e, Error::Gpt { .. }), "{e}");
    assert!(e.to_string().contains("disk.img"), "{e}");
    // Remove both GPT signatures: the protective MBR is left alone.
    dev.write_at(&[0u8; 8], 512).unwrap();
    dev.write_at(&[0u8; 8], last).unwrap();
    let e = scan(&dev, "disk.img").unwrap_err();
    assert!(matches!(e, Error::ProtectiveMbrWithoutGpt { .. }), "{e}");
}

#[test]
fn a_partition_past_the_end_of_a_truncated_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let disk = ubuntu_disk(dir.path());
    let dev = FileDev::open_read_write(&disk).unwrap();
    dev.set_len(100 << 20).unwrap();
    let t = scan(&dev, "cut.img").unwrap();
    let p1 = t.get(1).unwrap();
    assert_eq!(p1.fs, FsType::Unknown, "not probed past the end");
    let e = window(&dev, "cut.img", p1).unwrap_err();
    assert!(matches!(e, Error::OutOfBounds { number: 1, .. }), "{e}");
}

mod mutation {
    use super::*;
    use kiln_blockdev::MemDev;
    use proptest::prelude::*;

    fn base_disks() -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let gpt = blank_disk(dir.path(), "gpt.img", 1 << 20);
        run(Command::new("sgdisk")
            .args(["-n", "1:34:+200K", "-n", "2:0:+300K", "-n", "3:0:0"])
            .arg(&gpt));
        let mbr = blank_disk(dir.path(), "mbr.img", 1 << 20);
        sfdisk(
            &mbr,
            "label: dos\nstart=64, size=256, type=83\nstart=512, type=5\nstart=600, size=100, type=83\nstart=800, size=100, type=83\n",
        );
        vec![std::fs::read(&gpt).unwrap(), std::fs::read(&mbr).unwrap()]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Corrupt bytes of real tables (headers, entry arrays, EBR chains, the backup GPT):
        /// discovery returns Ok or an error naming the device, and gptman/mbrman never panic.
        #[test]
        fn mutated_tables_never_panic(
            which in 0usize..2,
            edits in prop::collection::vec((prop_oneof![0usize..34 * 512, (1usize << 20) - 33 * 512..(1usize << 20), 0usize..1 << 20], any::<u8>()), 1..12),
            shrink_to in prop_oneof![Just(1usize << 20), 512usize..(1 << 20)],
        ) {
            thread_local!(static BASES: Vec<Vec<u8>> = base_disks());
            let mut disk = BASES.with(|b| b[which].clone());
            for (at, v) in edits {
                disk[at] = v;
            }
            disk.truncate(shrink_to);
            let dev = MemDev::from_vec(disk);
            match scan(&dev, "mutant") {
                Ok(t) => {
                    let _ = t.root();
                    for p in &t.partitions {
                        let _ = window(&dev, "mutant", p);
                    }
                }
                Err(e) => {
                    prop_assert!(!matches!(e, Error::ParserPanic { .. }), "parser panicked: {}", e);
                    prop_assert!(e.to_string().contains("mutant"), "{}", e);
                }
            }
        }
    }
}

/// fuzz/partition_scan found this: an MBR whose used entries start at LBA 0 made mbrman panic.
/// It must be a clear error, before any third-party parser runs.
#[test]
fn fuzz_regression_mbr_entry_at_lba0() {
    let mut disk = include_bytes!("fuzz-regressions/mbr-entry-at-lba0.bin").to_vec();
    disk.resize(64 * 1024, 0);
    let dev = kiln_blockdev::MemDev::from_vec(disk);
    let err = kiln_partition::scan(&dev, "crash").unwrap_err();
    assert!(
        matches!(
            err,
            kiln_partition::Error::CorruptMbr {
                number: 4,
                kind: 0x2b,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("starts at LBA 0"), "{err}");
}
