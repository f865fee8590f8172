//! Golden builds on every image shape users start from (issue 12): Ubuntu 22.04 (qcow2 v2, no
//! /boot partition), 24.04 amd64 and arm64, 26.04 (/boot on 13, `metadata_csum_seed` and
//! `orphan_file`) and the Raspberry Pi's xz-compressed raw MBR image. Oracles: `qemu-img
//! info/check`, `sfdisk --json` for the partition tables, `e2fsck -fn`, `dumpe2fs -h` and
//! `debugfs` on partitions cut out with `dd`, `fsck.vfat -n` and `mtype` for the Pi's firmware
//! partition.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_fixtures::testing::run;
use kiln_fixtures::{self as fixtures, BaseSpec, Flavor};
use kiln_golden::{BuildOptions, build_file};

const VERSION: &str = "v1.34.3+k3s1";
const EPOCH: i64 = 1_767_225_600;

/// The base of `flavor`, its k3s assets and a recipe building it into `out/`.
struct Case {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    base: fixtures::BaseFixture,
    assets: fixtures::K3sAssets,
    flavor: Flavor,
}

impl Case {
    fn new(flavor: Flavor) -> Case {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let base = fixtures::make_base(
            &root.join("in"),
            flavor.file_name(),
            &BaseSpec::small_of(flavor),
        )
        .unwrap();
        let assets =
            fixtures::make_k3s_assets(&root.join("in/k3s"), VERSION, flavor.arch(), 64 << 10)
                .unwrap();
        Case {
            _tmp: tmp,
            root,
            base,
            assets,
            flavor,
        }
    }

    fn recipe(&self, name: &str, kind: &str, extra: &str) -> PathBuf {
        let text = format!(
            "name: {name}\nbase:\n  path: {}\n  sha256: {}\narch: {}\noutput:\n  kind: {kind}\nsource_date_epoch: {EPOCH}\nk3s:\n  version: {VERSION}\n  assets: {}\n  install_sh_sha256: {}\n{extra}",
            self.base.path.display(),
            self.base.sha256,
            self.flavor.arch(),
            self.assets.dir.display(),
            self.assets.install_sh_sha256,
        );
        let p = self.root.join(format!("{name}.yaml"));
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// The partitions of a raw disk as `sfdisk --json` reads them: (number, type, start, sectors).
fn sfdisk(raw: &Path) -> (String, Vec<(u32, String, u64, u64)>) {
    let out = run(Command::new("sfdisk").arg("--json").arg(raw));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let t = &v["partitiontable"];
    let mut parts = Vec::new();
    for p in t["partitions"].as_array().unwrap() {
        let node = p["node"].as_str().unwrap();
        // `<disk path><number>`: the trailing digits.
        let digits = node.len() - node.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let number: u32 = node[node.len() - digits..].parse().unwrap();
        parts.push((
            number,
            p["type"].as_str().unwrap().to_owned(),
            p["start"].as_u64().unwrap(),
            p["size"].as_u64().unwrap(),
        ));
    }
    (t["label"].as_str().unwrap().to_owned(), parts)
}

/// The guest disk of `image` (qcow2 or raw) as a raw file `work/<tag>.raw`.
fn to_raw(image: &Path, work: &Path, tag: &str) -> PathBuf {
    let raw = work.join(format!("{tag}.raw"));
    let mut c = Command::new("qemu-img");
    c.args(["convert", "-O", "raw"]);
    if image.extension().is_some_and(|e| e == "img") {
        c.args(["-f", "raw"]);
    }
    run(c.arg(image).arg(&raw));
    raw
}

/// Partition `number` of the raw disk `raw`, cut out with `dd` into `work/<tag>-p<number>`.
fn cut(raw: &Path, number: u32, work: &Path, tag: &str) -> PathBuf {
    let (_, parts) = sfdisk(raw);
    let &(_, _, start, size) = parts
        .iter()
        .find(|p| p.0 == number)
        .unwrap_or_else(|| panic!("no partition {number} in {parts:?}"));
    let out = work.join(format!("{tag}-p{number}"));
    run(Command::new("dd")
        .arg(format!("if={}", raw.display()))
        .arg(format!("of={}", out.display()))
        .args(["bs=512", "conv=sparse", "status=none"])
        .arg(format!("skip={start}"))
        .arg(format!("count={size}")));
    out
}

fn debugfs(part: &Path, req: &str) -> String {
    let o = Command::new("debugfs")
        .arg("-R")
        .arg(req)
        .arg(part)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// Builds `flavor`'s fixture with k3s and checks the result with the oracles.
fn build_and_check(flavor: Flavor) {
    let case = Case::new(flavor);
    let work = case.root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let kind = if flavor == Flavor::Raspi {
        "raw"
    } else {
        "qcow2"
    };
    let recipe = case.recipe(
        "golden",
        kind,
        "prerequisites:\n  - directory: { path: /etc/rancher/k3s, mode: \"0755\" }\n",
    );
    let built = build_file(&recipe, &BuildOptions::new(case.root.join("out"))).unwrap();
    let m = &built.manifest;
    assert_eq!(m.base.root_partition, flavor.root_partition(), "{flavor:?}");

    // The base, as a raw disk, against the output.
    let base_raw = if flavor == Flavor::Raspi {
        let raw = work.join("base.raw");
        let out = std::fs::File::create(&raw).unwrap();
        let st = Command::new("xz")
            .arg("-dc")
            .arg(&case.base.path)
            .stdout(out)
            .status()
            .expect("xz (xz-utils) must be installed");
        assert!(st.success());
        raw
    } else {
        to_raw(&case.base.path, &work, "base")
    };
    let out_raw = to_raw(&built.image, &work, "out");
    assert_eq!(
        std::fs::metadata(&base_raw).unwrap().len(),
        std::fs::metadata(&out_raw).unwrap().len(),
        "{flavor:?}: virtual size kept"
    );
    let (label, parts) = sfdisk(&out_raw);
    assert_eq!(
        sfdisk(&base_raw),
        (label.clone(), parts.clone()),
        "{flavor:?}"
    );

    // The container.
    if flavor == Flavor::Raspi {
        assert_eq!(built.image.extension().unwrap(), "img");
        assert_eq!(label, "dos");
        let md = std::fs::metadata(&built.image).unwrap();
        assert!(
            md.blocks() * 512 < md.len() / 2,
            "raw output is not sparse: {} of {} bytes allocated",
            md.blocks() * 512,
            md.len()
        );
        assert_eq!(
            std::fs::read(&built.image).unwrap(),
            std::fs::read(&out_raw).unwrap()
        );
    } else {
        run(Command::new("qemu-img").arg("check").arg(&built.image));
        assert_eq!(label, "gpt");
        let info = run(Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&case.base.path));
        let compat = if flavor == Flavor::Jammy {
            "\"compat\": \"0.10\""
        } else {
            "\"compat\": \"1.1\""
        };
        assert!(info.contains(compat), "{flavor:?}: {info}");
    }

    // The root filesystem: clean, scrubbed, k3s of the image's architecture.
    let root = cut(&out_raw, flavor.root_partition(), &work, "out");
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{flavor:?}: e2fsck -fn: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let features = run(Command::new("dumpe2fs").arg("-h").arg(&root));
    let volname = format!("Filesystem volume name:   {}", flavor.root_label());
    assert!(features.contains(&volname), "{features}");
    for f in ["metadata_csum_seed", "orphan_file"] {
        assert_eq!(
            features.contains(f),
            flavor == Flavor::Resolute,
            "{flavor:?}: {f} in {features}"
        );
    }
    let k3s = debugfs(&root, "cat /usr/local/bin/k3s");
    assert!(k3s.contains(VERSION), "{flavor:?}: {k3s}");
    let bin = if flavor.arch() == "amd64" {
        "k3s".to_owned()
    } else {
        format!("k3s-{}", flavor.arch())
    };
    let k = m.k3s.as_ref().unwrap();
    assert!(
        k.assets.iter().any(|a| a.name == bin),
        "{flavor:?}: {:?}",
        k.assets
    );
    assert!(debugfs(&root, "stat /etc/machine-id").contains("Size: 14"));
    if flavor == Flavor::Raspi {
        // What makes cloud-init read the seed from system-boot survives the scrub.
        let cfg = debugfs(&root, "cat /etc/cloud/cloud.cfg.d/99-fake_cloud.cfg");
        assert!(cfg.contains("fs_label: system-boot"), "{cfg}");
    }
    assert!(debugfs(&root, "stat /var/lib/cloud/instance").contains("File not found"));

    // Every partition but the root is untouched.
    for &(n, ..) in &parts {
        if n == flavor.root_partition() {
            continue;
        }
        let a = std::fs::read(cut(&base_raw, n, &work, "base")).unwrap();
        let b = std::fs::read(cut(&out_raw, n, &work, "out")).unwrap();
        assert!(a == b, "{flavor:?}: partition {n} changed");
    }
    if let Some(boot) = flavor.boot_partition() {
        let b = cut(&out_raw, boot, &work, "out");
        assert!(
            run(Command::new("dumpe2fs").arg("-h").arg(&b)).contains("volume name:   BOOT"),
            "{flavor:?}: /boot is not partition {boot}"
        );
    }
}

#[test]
fn ubuntu_22_04_qcow2_v2_without_boot_partition() {
    build_and_check(Flavor::Jammy);
}

#[test]
fn ubuntu_24_04_amd64() {
    build_and_check(Flavor::Noble);
}

#[test]
fn ubuntu_24_04_arm64_takes_the_arm64_assets() {
    build_and_check(Flavor::NobleArm64);
}

#[test]
fn ubuntu_26_04_boot_on_13_and_new_ext4_features() {
    build_and_check(Flavor::Resolute);
}

#[test]
fn raspberry_pi_xz_raw_mbr_to_sparse_raw() {
    build_and_check(Flavor::Raspi);
}

/// An xz base that does not decompress, or one asked for as an overlay's backing file, fails as
/// bad input with nothing left in the output directory; the base is unchanged.
#[test]
fn bad_xz_bases_fail_cleanly() {
    let case = Case::new(Flavor::Raspi);
    let out = case.root.join("out");
    // Overlay output cannot be backed by a base that is only decompressed for the build.
    let r = case.recipe("ov", "overlay", "");
    let e = build_file(&r, &BuildOptions::new(&out)).unwrap_err();
    assert_eq!(e.kind(), kiln_golden::ErrorKind::Input, "{e}");
    assert!(e.to_string().contains("output.kind"), "{e}");
    // A truncated stream: its pin is right (the recipe pins what was downloaded), its data not.
    let bytes = std::fs::read(&case.base.path).unwrap();
    let cut = case.root.join("cut.img.xz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let sha = fixtures::sha256_of(&cut).unwrap();
    let text = std::fs::read_to_string(case.recipe("cut", "raw", ""))
        .unwrap()
        .replace(
            &case.base.path.display().to_string(),
            &cut.display().to_string(),
        )
        .replace(&case.base.sha256, &sha);
    let r = case.root.join("cut.yaml");
    std::fs::write(&r, text).unwrap();
    let e = build_file(&r, &BuildOptions::new(&out)).unwrap_err();
    assert_eq!(e.kind(), kiln_golden::ErrorKind::Input, "{e}");
    assert!(format!("{e}").contains("decompressing xz"), "{e}");
    assert!(
        !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
        "output left behind"
    );
    assert_eq!(
        fixtures::sha256_of(&case.base.path).unwrap(),
        case.base.sha256
    );
}

/// `recipes/k3s-node-ubuntu-24.04-raspi.yaml` pins the Pi fixture `cargo xtask fixtures` makes, and
/// builds (with the fixture and assets made here) into a sparse raw image whose `cmdline.txt`
/// turns the memory cgroup on — `mtype` reading the FAT partition as the oracle.
#[test]
fn the_committed_raspi_recipe_pins_the_fixture_and_enables_memory_cgroups() {
    let case = Case::new(Flavor::Raspi);
    let committed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../recipes/k3s-node-ubuntu-24.04-raspi.yaml");
    let mut recipe = kiln_golden::Recipe::load(&committed).unwrap();
    assert_eq!(
        recipe.base.sha256, case.base.sha256,
        "re-pin after changing the Pi fixture"
    );
    assert_eq!(recipe.arch, kiln_golden::Arch::Arm64);
    assert_eq!(recipe.output.kind, kiln_golden::OutputKind::Raw);
    recipe.base.path = case.base.path.clone();
    recipe.k3s.as_mut().unwrap().assets = case.assets.dir.clone();
    let built = kiln_golden::build(&recipe, &BuildOptions::new(case.root.join("out"))).unwrap();
    let (start, ..) = {
        let (_, parts) = sfdisk(&built.image);
        parts
            .into_iter()
            .find(|p| p.0 == 1)
            .map(|p| (p.2, p.3))
            .unwrap()
    };
    let o = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{}", built.image.display(), start * 512))
        .arg("::cmdline.txt")
        .output()
        .expect("mtype (mtools)");
    assert!(o.status.success());
    let line = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        line,
        fixtures::RASPI_CMDLINE.trim_end().to_owned() + " cgroup_memory=1 cgroup_enable=memory\n"
    );
}
