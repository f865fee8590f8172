//! Raspberry Pi clusters end to end: the Pi base fixture (xz-compressed raw, MBR, vfat
//! `system-boot` + ext4 `writable`) built into a raw golden with `kiln build`, then
//! `recipes/clusters/raspi-dualstack.yaml` (seed 001 on SD cards) turned into one flashable image
//! per node by `kiln cluster`. Oracles: `sfdisk --json` (layout), `fsck.vfat -n` and `mcopy` on
//! each node's `system-boot`, cloud-init's own NoCloud datasource on what `mcopy` reads there,
//! `e2fsck -fn` on the root, the files' allocated blocks (sparse), modes, inodes across re-runs,
//! and the token searched for in everything printed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_fixtures::{self as fixtures, BaseSpec, Flavor};

use crate::util::{KILN, text};

const VERSION: &str = "v1.34.3+k3s1";
const NODES: [&str; 2] = ["cow", "sheep"];

fn kiln(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(KILN)
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1767225600")
        .output()
        .expect("run kiln")
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

/// (start sector, sectors) of partition `n` of the raw disk `raw`, as `sfdisk --json` reads it.
fn partition(raw: &Path, n: u32) -> (u64, u64, String) {
    let o = Command::new("/usr/sbin/sfdisk")
        .arg("--json")
        .arg(raw)
        .output()
        .expect("sfdisk (fdisk)");
    assert!(o.status.success(), "sfdisk: {}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["partitiontable"]["label"], "dos");
    let p = v["partitiontable"]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .find(|p| p["node"].as_str().expect("node").ends_with(&n.to_string()))
        .unwrap_or_else(|| panic!("no partition {n}: {v}"))
        .clone();
    (
        p["start"].as_u64().expect("start"),
        p["size"].as_u64().expect("size"),
        p["type"].as_str().expect("type").to_owned(),
    )
}

/// Partition `n` of `raw` cut out into `dest` (sparse).
fn cut(raw: &Path, n: u32, dest: &Path) {
    let (start, size, _) = partition(raw, n);
    let o = Command::new("dd")
        .arg(format!("if={}", raw.display()))
        .arg(format!("of={}", dest.display()))
        .args(["bs=512", "conv=sparse", "status=none"])
        .arg(format!("skip={start}"))
        .arg(format!("count={size}"))
        .output()
        .expect("dd");
    assert!(o.status.success(), "dd: {}", text(&o));
}

fn mcopy(fat: &Path, name: &str) -> Vec<u8> {
    let o = Command::new("/usr/bin/mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-n")
        .arg("-i")
        .arg(fat)
        .arg(format!("::{name}"))
        .arg("-")
        .output()
        .expect("mcopy (mtools)");
    assert!(o.status.success(), "mcopy {name}: {}", text(&o));
    o.stdout
}

/// The Pi fixture, arm64 assets and a raw golden built from them: (tempdir, root, golden image).
fn golden() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().to_owned();
    let base = fixtures::make_base(
        &root.join("in"),
        Flavor::Raspi.file_name(),
        &BaseSpec::small_of(Flavor::Raspi),
    )
    .expect("make the Pi base (needs .ci/run's tools)");
    let assets = fixtures::make_k3s_assets(&root.join("in/k3s"), VERSION, "arm64", 64 << 10)
        .expect("assets");
    let recipe = root.join("pi.yaml");
    std::fs::write(
        &recipe,
        format!(
            "name: pi\nbase:\n  path: {}\n  sha256: {}\narch: arm64\noutput:\n  kind: raw\nsource_date_epoch: 1767225600\nk3s:\n  version: {VERSION}\n  assets: {}\n  install_sh_sha256: {}\n",
            base.path.display(),
            base.sha256,
            assets.dir.display(),
            assets.install_sh_sha256
        ),
    )
    .expect("recipe");
    let o = kiln(&[
        os("build"),
        recipe.as_os_str(),
        os("-o"),
        root.join("out").as_os_str(),
    ]);
    assert!(o.status.success(), "kiln build: {}", text(&o));
    let golden = root.join("out/pi.img");
    assert!(golden.is_file());
    (tmp, root, golden)
}

/// What cloud-init's NoCloud datasource makes of the seed files in `dir`/seed/nocloud.
fn nocloud(root: &Path) -> serde_json::Value {
    let o = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(crate::seed::NOCLOUD_PY)
        .arg(root)
        .output()
        .expect("python3 with cloud-init");
    assert!(o.status.success(), "NoCloud: {}", text(&o));
    serde_json::from_slice(o.stdout.trim_ascii()).expect("datasource json")
}

#[test]
fn sd_card_images_per_node_carry_their_seed_in_system_boot() {
    for tool in [
        "/usr/sbin/fsck.vfat",
        "/usr/bin/mcopy",
        "/usr/bin/cloud-init",
    ] {
        assert!(Path::new(tool).exists(), "oracle missing: {tool}");
    }
    let (_tmp, root, golden) = golden();
    let spec = root.join("cluster.yaml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/clusters/raspi-dualstack.yaml"),
        &spec,
    )
    .expect("copy spec");
    let out = root.join("pis");
    let run = || {
        kiln(&[
            os("cluster"),
            spec.as_os_str(),
            os("--golden"),
            golden.as_os_str(),
            os("-o"),
            out.as_os_str(),
            os("--json"),
        ])
    };
    let o = run();
    assert!(o.status.success(), "kiln cluster: {}", text(&o));
    let token = std::fs::read_to_string(root.join("secrets/homelab-token")).expect("token");
    let token = token.trim();
    assert!(
        !token.is_empty() && !text(&o).contains(token),
        "token printed"
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("report");
    let files: Vec<(String, String, String)> = report["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().expect("path").to_owned(),
                f["kind"].as_str().expect("kind").to_owned(),
                f["status"].as_str().expect("status").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        files,
        [
            ("cow.img".into(), "sdcard".into(), "created".into()),
            ("sheep.img".into(), "sdcard".into(), "created".into()),
            (
                "inventory.json".into(),
                "inventory".into(),
                "created".into()
            ),
        ]
    );
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .expect("out")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["cow.img", "inventory.json", "sheep.img"]);

    let golden_len = std::fs::metadata(&golden).expect("golden").len();
    let golden_boot = root.join("golden-boot.vfat");
    cut(&golden, 1, &golden_boot);
    for (i, node) in NODES.iter().enumerate() {
        let img = out.join(format!("{node}.img"));
        let md = std::fs::metadata(&img).expect("image");
        assert_eq!(md.len(), golden_len, "{node}: a whole card image");
        assert_eq!(
            md.permissions().mode() & 0o777,
            0o600,
            "{node}: holds the token"
        );
        assert!(
            md.blocks() * 512 < md.len() / 2,
            "{node}: not sparse ({} of {} bytes allocated)",
            md.blocks() * 512,
            md.len()
        );
        let rec = &report["inventory"]["nodes"][i];
        assert_eq!(rec["name"], *node);
        assert_eq!(rec["disk"]["path"], format!("{node}.img"));
        assert_eq!(rec["seed"]["path"], format!("{node}.img"));
        assert_eq!(rec["seed"]["partition"], "system-boot");
        assert_eq!(
            partition(&img, 1).2,
            "c",
            "{node}: FAT32 LBA partition kept"
        );

        // system-boot: fsck-clean, the firmware files untouched, the seed in place.
        let boot = root.join(format!("{node}-boot.vfat"));
        cut(&img, 1, &boot);
        let f = Command::new("/usr/sbin/fsck.vfat")
            .arg("-n")
            .arg(&boot)
            .output()
            .expect("fsck.vfat");
        assert!(f.status.success(), "{node}: fsck.vfat -n: {}", text(&f));
        for keep in ["cmdline.txt", "config.txt", "vmlinuz"] {
            assert_eq!(
                mcopy(&boot, keep),
                mcopy(&golden_boot, keep),
                "{node}: {keep}"
            );
        }
        let seed_dir = root.join(format!("cloud-{node}/seed/nocloud"));
        std::fs::create_dir_all(&seed_dir).expect("mkdir");
        for file in ["meta-data", "network-config", "user-data"] {
            std::fs::write(seed_dir.join(file), mcopy(&boot, file)).expect("write");
        }
        let user_data = mcopy(&boot, "user-data");
        assert!(
            String::from_utf8_lossy(&user_data).contains(token),
            "{node}: the token reaches the node"
        );
        let ds = nocloud(&root.join(format!("cloud-{node}")));
        assert_eq!(ds["instance_id"], rec["instance_id"], "{node}");
        assert_eq!(ds["hostname"], *node);
        assert_eq!(ds["network"]["network"]["version"], 2);

        // The root filesystem is the golden's, clean.
        let rootfs = root.join(format!("{node}-root.ext4"));
        cut(&img, 2, &rootfs);
        let e = Command::new("e2fsck")
            .arg("-fn")
            .arg(&rootfs)
            .output()
            .expect("e2fsck");
        assert!(e.status.success(), "{node}: e2fsck -fn: {}", text(&e));
    }

    // Again: nothing changes, nothing is rewritten.
    let inodes: Vec<u64> = NODES
        .iter()
        .map(|n| {
            std::fs::metadata(out.join(format!("{n}.img")))
                .expect("md")
                .ino()
        })
        .collect();
    let again = run();
    assert!(again.status.success(), "{}", text(&again));
    let r2: serde_json::Value = serde_json::from_slice(&again.stdout).expect("report");
    assert!(
        r2["files"]
            .as_array()
            .expect("files")
            .iter()
            .all(|f| f["status"] == "unchanged"),
        "{r2}"
    );
    for (n, ino) in NODES.iter().zip(inodes) {
        assert_eq!(
            std::fs::metadata(out.join(format!("{n}.img")))
                .expect("md")
                .ino(),
            ino
        );
    }

    // A qcow2 golden (no system-boot) is refused for SD cards, exit 2, nothing written.
    let other = root.join("other");
    let plain =
        fixtures::make_base(&root.join("plain"), "base.qcow2", &BaseSpec::small()).expect("base");
    let o = kiln(&[
        os("cluster"),
        spec.as_os_str(),
        os("--golden"),
        plain.path.as_os_str(),
        os("-o"),
        other.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("system-boot"), "{}", text(&o));
    assert!(!other.exists());
}
