//! End-to-end golden builds on a generated Ubuntu-like base (GPT, zlib qcow2, booted-once root fs),
//! checked with independent oracles: `qemu-img check`, `e2fsck -fn` and `debugfs` on the root
//! partition extracted by `qemu-img convert` + `sgdisk -i`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_fixtures::{self as fixtures, BaseFixture, BaseSpec};
use kiln_golden::{BuildOptions, Cancel, Error, GuestPath, Step, StepEvent, build_file};

const VERSION: &str = "v1.34.3+k3s1";

use kiln_fixtures::testing::{BUILD_STEPS, BuildEnv, run};

type Env = BuildEnv;

fn env() -> Env {
    BuildEnv::new(VERSION, 256 << 10)
}

const PREREQS: &str = r#"prerequisites:
  - file: { path: /etc/rancher/k3s/registries.yaml, content: "mirrors: {}\n", mode: "0600", owner: "0:0" }
  - file: { path: /home/ubuntu/notes.txt, content: "hello\n", mode: "0640", owner: "1000:1000" }
  - directory: { path: /var/lib/rancher/k3s/server/manifests, mode: "0700" }
  - symlink: { path: /usr/local/bin/kubectl, target: k3s }
  - modules_load: { name: k3s, modules: [overlay, br_netfilter] }
  - sysctl: { name: 90-k3s, settings: { net.ipv4.ip_forward: "1", net.bridge.bridge-nf-call-iptables: "1" } }
  - systemd_enable: { unit: iscsid.service }
  - cloud_init_datasource: { list: [NoCloud, None] }
"#;

fn write_recipe(env: &Env, file: &str, extra: &str) -> PathBuf {
    let p = env.root.join(file);
    std::fs::write(
        &p,
        fixtures::recipe_yaml("golden", &env.base, &env.assets, extra),
    )
    .unwrap();
    p
}

fn opts(dir: &Path) -> BuildOptions {
    BuildOptions::new(dir)
}

fn root_partition(image: &Path, work: &Path) -> PathBuf {
    fixtures::extract_root_partition(image, work).expect("extract the root partition")
}

fn debugfs(part: &Path, req: &str) -> (String, String) {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(req)
        .arg(part)
        .output()
        .expect("debugfs (e2fsprogs) must be installed");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn debugfs_cat(part: &Path, path: &str) -> Vec<u8> {
    Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(part)
        .output()
        .unwrap()
        .stdout
}

/// Asserts that `link` is a fast symlink to `target` in `part`; returns its `debugfs stat`.
fn assert_fast_link(part: &Path, link: &str, target: &str) -> String {
    let (st, _) = debugfs(part, &format!("stat {link}"));
    assert!(
        st.contains(&format!("Fast link dest: \"{target}\"")),
        "{link}: {st}"
    );
    st
}

/// The entries of directory `dir` in `part` as debugfs lists them (`ls -p`: names as raw bytes),
/// without `.` and `..`: (name, size).
fn debugfs_entries(part: &Path, dir: &str) -> Vec<(Vec<u8>, u64)> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("ls -p {dir}"))
        .arg(part)
        .output()
        .expect("debugfs (e2fsprogs) must be installed");
    out.stdout
        .split(|&b| b == b'\n')
        .filter_map(|l| {
            // `/ino/mode/uid/gid/name/size/`: a name never holds a `/`.
            let f: Vec<&[u8]> = l.split(|&b| b == b'/').collect();
            let size = std::str::from_utf8(f.get(6)?).ok()?.parse().ok()?;
            Some((f[5].to_vec(), size))
        })
        .filter(|(n, _)| n != b"." && n != b"..")
        .collect()
}

/// (mode bits, uid, gid, type) from `debugfs stat`.
fn debugfs_stat(part: &Path, path: &str) -> Option<(u32, u32, u32, String)> {
    let (out, err) = debugfs(part, &format!("stat {path}"));
    if err.contains("File not found") || out.is_empty() {
        return None;
    }
    let word_after = |k: &str| -> String {
        let i = out.find(k).unwrap_or_else(|| panic!("{k} in {out}")) + k.len();
        out[i..].split_whitespace().next().unwrap().to_owned()
    };
    let mode = u32::from_str_radix(&word_after("Mode:"), 8).unwrap();
    let uid = word_after("User:").parse().unwrap();
    let gid = word_after("Group:").parse().unwrap();
    Some((mode, uid, gid, word_after("Type:")))
}

#[test]
fn golden_build_passes_oracles() {
    let env = env();
    let recipe = write_recipe(&env, "recipe.yaml", PREREQS);
    let out_dir = env.root.join("out");
    let built = build_file(&recipe, &opts(&out_dir)).unwrap();
    assert_eq!(
        built
            .steps
            .iter()
            .map(|s| s.name.name())
            .collect::<Vec<_>>(),
        BUILD_STEPS
    );

    // qemu-img: a clean, standalone qcow2 of the base's virtual size.
    run(Command::new("qemu-img").arg("check").arg(&built.image));
    let info = run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&built.image));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert!(info.get("backing-filename").is_none());
    assert_eq!(
        info["virtual-size"].as_u64().unwrap(),
        BaseSpec::small().virtual_size
    );

    let work = env.root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let part = root_partition(&built.image, &work);
    run(Command::new("e2fsck").arg("-fn").arg(&part));

    // Scrubbed: gone or reset.
    let reset = [
        "/etc/machine-id",
        "/var/lib/dbus/machine-id",
        "/etc/hostname",
        "/var/log/syslog",
        "/var/log/apt/history.log",
    ];
    for p in fixtures::DIRTY {
        if reset.contains(p) {
            continue;
        }
        assert!(debugfs_stat(&part, p).is_none(), "{p} survived the scrub");
    }
    assert_eq!(debugfs_cat(&part, "/etc/machine-id"), b"uninitialized\n");
    assert_eq!(
        debugfs_stat(&part, "/etc/machine-id").unwrap(),
        (0o444, 0, 0, "regular".into())
    );
    let dbus = assert_fast_link(&part, "/var/lib/dbus/machine-id", "/etc/machine-id");
    assert!(dbus.contains("Type: symlink"), "{dbus}");
    assert_eq!(debugfs_cat(&part, "/etc/hostname"), b"");
    assert_eq!(debugfs_cat(&part, "/var/log/syslog"), b"");
    // Kept: the directories themselves and unrelated files next to the scrubbed ones.
    for keep in fixtures::KEEP {
        assert!(debugfs_stat(&part, keep).is_some(), "{keep} was removed");
    }
    assert_eq!(debugfs_cat(&part, "/var/log/apt/history.log"), b"");
    // Names are bytes: the file in /tmp whose name is not UTF-8 is gone like any other, and the
    // log file whose name is not UTF-8 is truncated like any other.
    assert_eq!(debugfs_entries(&part, "/tmp"), vec![]);
    let log_name = GuestPath::new(fixtures::NON_UTF8_LOG).file_name().unwrap();
    let logs = debugfs_entries(&part, "/var/log");
    assert!(
        logs.contains(&(log_name.to_vec(), 0)),
        "{} not truncated: {logs:?}",
        GuestPath::new(fixtures::NON_UTF8_LOG)
    );
    let (ls, _) = debugfs(&part, "ls -l /var/lib/cloud");
    assert_eq!(
        ls.lines().filter(|l| !l.trim().is_empty()).count(),
        2,
        "only . and .. left: {ls}"
    );

    // Injected: bytes, mode, owner as the recipe says.
    let k3s = std::fs::read(env.assets.dir.join("k3s")).unwrap();
    assert_eq!(debugfs_cat(&part, "/usr/local/bin/k3s"), k3s);
    assert_eq!(
        debugfs_stat(&part, "/usr/local/bin/k3s").unwrap(),
        (0o755, 0, 0, "regular".into())
    );
    let images = "/var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst";
    assert_eq!(
        debugfs_cat(&part, images),
        std::fs::read(env.assets.dir.join("k3s-airgap-images-amd64.tar.zst")).unwrap()
    );
    assert_eq!(
        debugfs_cat(&part, kiln_nocloud::K3S_INSTALL_SCRIPT),
        std::fs::read(env.assets.dir.join("install.sh")).unwrap()
    );
    assert_eq!(
        debugfs_stat(&part, kiln_nocloud::K3S_INSTALL_SCRIPT).unwrap(),
        (0o755, 0, 0, "regular".into())
    );
    assert_eq!(
        debugfs_stat(&part, "/etc/rancher/k3s/registries.yaml").unwrap(),
        (0o600, 0, 0, "regular".into())
    );
    assert_eq!(
        debugfs_stat(&part, "/home/ubuntu/notes.txt").unwrap(),
        (0o640, 1000, 1000, "regular".into())
    );
    assert_eq!(
        debugfs_stat(&part, "/var/lib/rancher/k3s/server/manifests").unwrap(),
        (0o700, 0, 0, "directory".into())
    );
    assert_eq!(
        debugfs_cat(&part, "/etc/modules-load.d/k3s.conf"),
        b"overlay\nbr_netfilter\n"
    );
    assert_eq!(
        debugfs_cat(&part, "/etc/sysctl.d/90-k3s.conf"),
        b"net.bridge.bridge-nf-call-iptables = 1\nnet.ipv4.ip_forward = 1\n"
    );
    assert_eq!(
        debugfs_cat(&part, "/etc/cloud/cloud.cfg.d/90-kiln-datasource.cfg"),
        b"datasource_list: [NoCloud, None]\n"
    );
    assert_fast_link(
        &part,
        "/etc/systemd/system/multi-user.target.wants/iscsid.service",
        "/usr/lib/systemd/system/iscsid.service",
    );

    // No wall-clock time on anything kiln touched: every changed inode carries SOURCE_DATE_EPOCH.
    let (st, _) = debugfs(&part, "stat /usr/local/bin/k3s");
    assert!(st.contains("ctime: 0x6955b900"), "{st}"); // 1767225600
    let (st, _) = debugfs(&part, "stat /var/lib/cloud");
    assert!(st.contains("mtime: 0x6955b900"), "{st}");

    // The manifest lists every scrubbed and injected path, with hashes that match the image.
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&built.manifest_path).unwrap()).unwrap();
    let scrubbed: Vec<&str> = m["scrub"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["changed"].as_array().unwrap())
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    for p in fixtures::DIRTY {
        let covered = scrubbed
            .iter()
            .any(|s| p == s || p.starts_with(&format!("{s}/")));
        assert!(covered, "{p} not in the manifest's scrub records");
    }
    // In the escaped form, with the action, and read back typed to the same bytes.
    for (op, path, action) in [
        ("tmp-files", r"/tmp/bad\xffname", "removed"),
        ("logfiles", r"/var/log/bad\xfe.log", "truncated"),
    ] {
        let rec = m["scrub"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["op"] == op)
            .unwrap();
        assert!(
            rec["changed"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["path"] == path && c["action"] == action),
            "{path} ({action}) not in {rec}"
        );
    }
    let typed = built.manifest.scrub.iter().flat_map(|r| &r.changed);
    let paths: Vec<&GuestPath> = typed.map(|c| c.path.as_guest_path()).collect();
    assert!(paths.contains(&GuestPath::new(fixtures::NON_UTF8_TMP)));
    assert!(paths.contains(&GuestPath::new(fixtures::NON_UTF8_LOG)));
    let injected = m["injected"].as_array().unwrap();
    let k3s_entry = injected
        .iter()
        .find(|e| e["path"] == "/usr/local/bin/k3s")
        .unwrap();
    assert_eq!(k3s_entry["mode"], "0755");
    assert_eq!(
        k3s_entry["sha256"].as_str().unwrap(),
        fixtures::sha256_of(&env.assets.dir.join("k3s")).unwrap()
    );
    assert_eq!(
        m["output"]["sha256"].as_str().unwrap(),
        fixtures::sha256_of(&built.image).unwrap()
    );
    assert_eq!(m["base"]["sha256"].as_str().unwrap(), env.base.sha256);
    let text = std::fs::read_to_string(&built.manifest_path).unwrap();
    assert!(!text.contains("hunter2"), "manifest leaks file content");
    // Inputs untouched.
    assert_eq!(
        fixtures::sha256_of(&env.base.path).unwrap(),
        env.base.sha256
    );
}

#[test]
fn two_builds_are_identical() {
    let env = env();
    let recipe = write_recipe(&env, "recipe.yaml", PREREQS);
    let a = build_file(&recipe, &opts(&env.root.join("a"))).unwrap();
    let b = build_file(&recipe, &opts(&env.root.join("deeper/b"))).unwrap();
    assert_eq!(
        fixtures::sha256_of(&a.image).unwrap(),
        fixtures::sha256_of(&b.image).unwrap()
    );
    assert_eq!(
        std::fs::read(&a.manifest_path).unwrap(),
        std::fs::read(&b.manifest_path).unwrap()
    );
    // The manifest reads back typed to the value that was written, and prints to the same bytes.
    let bytes = std::fs::read(&a.manifest_path).unwrap();
    let back = kiln_golden::Manifest::from_json(&bytes, &a.manifest_path).unwrap();
    assert_eq!(back, a.manifest);
    assert_eq!(back.to_json(), bytes);
    // Another version, an unknown field or a wrong type is named as a malformed manifest (exit 2).
    let text = String::from_utf8(bytes).unwrap();
    for bad in [
        text.replacen("\"kiln_manifest\": 1", "\"kiln_manifest\": 9", 1),
        text.replacen("{", "{\n  \"surprise\": 1,", 1),
        text.replacen("\"kind\": \"file\"", "\"kind\": \"fifo\"", 1),
    ] {
        assert_ne!(bad, text);
        let e = kiln_golden::Manifest::from_json(bad.as_bytes(), &a.manifest_path).unwrap_err();
        assert!(e.to_string().contains("not a kiln manifest"), "{e}");
        assert_eq!(e.kind(), kiln_golden::ErrorKind::Input);
    }
}

/// The crate doc's example, run: a recipe made in code builds the same image and the same
/// manifest as the same recipe read from YAML, and its manifest records `Recipe::digest`.
#[test]
fn a_recipe_made_in_code_builds_what_its_yaml_builds() {
    use kiln_golden::{
        Arch, Base, DirEntry, FileEntry, K3s, Mode, ModulesLoad, Owner, Recipe, Sysctl,
        SystemdEnable, build,
    };
    let env = env();
    let recipe = Recipe::new(
        "golden",
        Base::new(&env.base.path, env.base.sha256.as_str()),
        Arch::Amd64,
        1_767_225_600,
    )
    .with_k3s(
        K3s::new(VERSION, &env.assets.dir)
            .with_install_sh_sha256(env.assets.install_sh_sha256.as_str()),
    )
    .with_prerequisite(
        FileEntry::inline("/etc/rancher/k3s/registries.yaml", "mirrors: {}\n")
            .with_mode(Mode(0o600)),
    )
    .with_prerequisite(
        FileEntry::inline("/home/ubuntu/notes.txt", "hello\n")
            .with_mode(Mode(0o640))
            .with_owner(Owner::new(1000, 1000)),
    )
    .with_prerequisite(
        DirEntry::new("/var/lib/rancher/k3s/server/manifests").with_mode(Mode(0o700)),
    )
    .with_prerequisite(kiln_golden::SymlinkEntry::new(
        "/usr/local/bin/kubectl",
        "k3s",
    ))
    .with_prerequisite(ModulesLoad::new("k3s", ["overlay", "br_netfilter"]))
    .with_prerequisite(Sysctl::new(
        "90-k3s",
        [
            ("net.ipv4.ip_forward", "1"),
            ("net.bridge.bridge-nf-call-iptables", "1"),
        ],
    ))
    .with_prerequisite(SystemdEnable::new("iscsid.service"))
    .with_prerequisite(kiln_golden::Datasource::new(["NoCloud", "None"]));
    let from_code = build(&recipe, &opts(&env.root.join("code"))).unwrap();
    let file = write_recipe(&env, "recipe.yaml", PREREQS);
    let from_file = build_file(&file, &opts(&env.root.join("file"))).unwrap();
    assert_eq!(from_code.manifest, from_file.manifest);
    assert_eq!(from_code.manifest.recipe_sha256, recipe.digest());
    assert_eq!(
        std::fs::read(&from_code.image).unwrap(),
        std::fs::read(&from_file.image).unwrap()
    );
    assert_eq!(
        std::fs::read(&from_code.manifest_path).unwrap(),
        std::fs::read(&from_file.manifest_path).unwrap()
    );
    // The build's whole result serialises and reads back.
    let json = serde_json::to_vec(&from_code).unwrap();
    assert_eq!(
        serde_json::from_slice::<kiln_golden::BuildOutput>(&json).unwrap(),
        from_code
    );
    // An invalid recipe made in code is refused before anything is written.
    let mut bad = recipe.clone();
    bad.name = "../escape".into();
    let e = build(&bad, &opts(&env.root.join("bad"))).unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
    assert_no_output(&env.root.join("bad"));
}

#[test]
fn overlay_output_is_a_clean_overlay_of_the_base() {
    let env = env();
    let recipe = env.root.join("in/recipe.yaml");
    let text = fixtures::recipe_yaml("golden", &env.base, &env.assets, "")
        .replace("kind: qcow2", "kind: overlay")
        .replace(&env.base.path.display().to_string(), "base.qcow2");
    std::fs::write(&recipe, text).unwrap();
    let built = build_file(&recipe, &opts(&env.root.join("in"))).unwrap();
    run(Command::new("qemu-img").arg("check").arg(&built.image));
    let info = run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&built.image));
    assert!(
        info.contains("\"backing-filename\": \"base.qcow2\""),
        "{info}"
    );
    assert_eq!(built.manifest.output.backing.as_deref(), Some("base.qcow2"));
    let work = env.root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let part = root_partition(&built.image, &work);
    run(Command::new("e2fsck").arg("-fn").arg(&part));
    assert_eq!(
        debugfs_cat(&part, "/usr/local/bin/k3s"),
        std::fs::read(env.assets.dir.join("k3s")).unwrap()
    );
}

fn assert_no_output(dir: &Path) {
    let left: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name()).collect(),
        Err(_) => Vec::new(),
    };
    assert!(left.is_empty(), "output left behind: {left:?}");
}

#[test]
fn bad_inputs_fail_cleanly_with_nothing_left() {
    let env = env();
    let out = env.root.join("out");

    // Wrong base pin.
    let wrong = "0".repeat(64);
    let p = env.root.join("wrong-base.yaml");
    std::fs::write(
        &p,
        fixtures::recipe_yaml("golden", &env.base, &env.assets, "")
            .replace(&env.base.sha256, &wrong),
    )
    .unwrap();
    let e = build_file(&p, &opts(&out)).unwrap_err();
    assert_eq!(e.kind(), kiln_golden::ErrorKind::Input, "{e}");
    assert!(matches!(e, Error::ChecksumMismatch { .. }), "{e}");
    assert!(e.to_string().contains(&wrong), "{e}");
    assert_no_output(&out);

    // Tampered asset (after the sums file was written).
    let k3s = env.assets.dir.join("k3s");
    let orig = std::fs::read(&k3s).unwrap();
    std::fs::write(&k3s, b"#!/bin/sh\necho evil\n").unwrap();
    let p = write_recipe(&env, "r.yaml", "");
    let e = build_file(&p, &opts(&out)).unwrap_err();
    assert!(
        e.kind() == kiln_golden::ErrorKind::Input && e.to_string().contains("k3s"),
        "{e}"
    );
    assert!(matches!(e, Error::ChecksumMismatch { .. }), "{e}");
    assert_no_output(&out);

    // Missing asset.
    std::fs::remove_file(&k3s).unwrap();
    let e = build_file(&p, &opts(&out)).unwrap_err();
    assert!(matches!(e, Error::AssetMissing { .. }), "{e}");
    assert!(e.to_string().contains("missing"), "{e}");
    assert_no_output(&out);
    std::fs::write(&k3s, orig).unwrap();

    // Unknown scrub op, bad values: all reported at once.
    let p = write_recipe(
        &env,
        "r2.yaml",
        "scrub:\n  disable: [no-such-op]\nprerequisites:\n  - file: { path: relative/x, content: x }\n",
    );
    let e = build_file(&p, &opts(&out)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
    assert!(msg.contains("unknown scrub op \"no-such-op\""), "{msg}");
    assert!(msg.contains("must be absolute"), "{msg}");
    assert_no_output(&out);

    // Unknown recipe key.
    let p = write_recipe(&env, "r3.yaml", "colour: blue\n");
    let e = build_file(&p, &opts(&out)).unwrap_err();
    assert!(matches!(e, Error::ParseRecipe { .. }), "{e}");
    assert!(e.to_string().contains("colour"), "{e}");
    assert_no_output(&out);

    // A systemd unit that does not exist in the image: fails mid-build, nothing left.
    let p = write_recipe(
        &env,
        "r4.yaml",
        "prerequisites:\n  - systemd_enable: { unit: nope.service }\n",
    );
    let e = build_file(&p, &opts(&out)).unwrap_err();
    assert!(matches!(e, Error::Prereq { .. }), "{e}");
    assert_no_output(&out);
    assert_eq!(
        fixtures::sha256_of(&env.base.path).unwrap(),
        env.base.sha256
    );
}

#[test]
fn fixture_is_deterministic_and_ubuntu_shaped() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = BaseSpec::small();
    let a = fixtures::make_base(&tmp.path().join("a"), "base.qcow2", &spec).unwrap();
    let b = fixtures::make_base(&tmp.path().join("b"), "base.qcow2", &spec).unwrap();
    assert_eq!(a.sha256, b.sha256);
    let raw = tmp.path().join("disk.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&a.path)
        .arg(&raw));
    let table = run(Command::new("sgdisk").arg("-p").arg(&raw));
    for (n, code) in [(1, "8300"), (14, "EF02"), (15, "EF00"), (16, "EA00")] {
        assert!(
            table.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.first() == Some(&n.to_string().as_str()) && w.contains(&code)
            }),
            "partition {n} ({code}) missing:\n{table}"
        );
    }
    let blkid = run(Command::new("blkid")
        .arg("-p")
        .arg("-o")
        .arg("export")
        .arg("--offset")
        .arg((10240u64 * 512).to_string())
        .arg(&raw));
    assert!(
        blkid.contains("LABEL=UEFI") && blkid.contains("TYPE=vfat"),
        "{blkid}"
    );
    let info = run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&a.path));
    assert!(info.contains("\"compression-type\": \"zlib\""), "{info}");
}

#[test]
fn dirty_journal_is_refused_with_nothing_left() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let spec = BaseSpec {
        dirty_journal: true,
        ..BaseSpec::small()
    };
    let base = fixtures::make_base(&root.join("in"), "base.qcow2", &spec).unwrap();
    let assets = fixtures::make_k3s_assets(&root.join("in/k3s"), VERSION, "amd64", 4096).unwrap();
    let p = root.join("r.yaml");
    std::fs::write(&p, fixtures::recipe_yaml("golden", &base, &assets, "")).unwrap();
    let out = root.join("out");
    let e = build_file(&p, &opts(&out)).unwrap_err();
    assert_eq!(e.kind(), kiln_golden::ErrorKind::Input, "{e}");
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(
        chain.contains("recovery") || chain.contains("journal"),
        "{chain}"
    );
    assert_no_output(&out);
    assert_eq!(fixtures::sha256_of(&base.path).unwrap(), base.sha256);
}

#[test]
fn verify_accepts_the_build_and_catches_tampering() {
    let env = env();
    let recipe = write_recipe(&env, "recipe.yaml", PREREQS);
    let out_dir = env.root.join("out");
    let built = build_file(&recipe, &opts(&out_dir)).unwrap();
    let rep = kiln_golden::verify(&built.image, &built.manifest_path).unwrap();
    assert!(rep.ok(), "{:?}", rep.problems);
    assert!(rep.injected >= 10 && rep.scrubbed >= 20, "{rep:?}");

    // A manifest that claims another mode and content for k3s.
    let text = std::fs::read_to_string(&built.manifest_path).unwrap();
    let k3s_sha = fixtures::sha256_of(&env.assets.dir.join("k3s")).unwrap();
    let forged = out_dir.join("forged.json");
    std::fs::write(
        &forged,
        text.replace(&k3s_sha, &"e".repeat(64))
            .replace("\"mode\": \"0640\"", "\"mode\": \"0644\""),
    )
    .unwrap();
    let rep = kiln_golden::verify(&built.image, &forged).unwrap();
    let all = rep.problems.join("\n");
    assert!(all.contains("/usr/local/bin/k3s: content sha256"), "{all}");
    assert!(all.contains("/home/ubuntu/notes.txt: mode 0640"), "{all}");

    // An image edited after the build (through an overlay): its hash and the file both differ.
    let edited = out_dir.join("edited.qcow2");
    let img = kiln_qcow2::create_overlay(
        &edited,
        &built.image,
        None,
        &kiln_qcow2::OpenOptions::default(),
    )
    .unwrap();
    {
        let table = kiln_partition::scan(&img, "x").unwrap();
        let part = table.root().unwrap().clone();
        let win = kiln_partition::window(&img, "x", &part).unwrap();
        let mut fs =
            kiln_ext4::Filesystem::open(&win, "x", kiln_ext4::OpenOptions::read_write(1767225600))
                .unwrap();
        fs.write(
            "/usr/local/bin/k3s",
            b"#!/bin/sh\necho trojan\n",
            kiln_ext4::NewFile {
                perm: 0o755,
                ..Default::default()
            },
        )
        .unwrap();
        fs.write(
            "/var/lib/cloud/instance-id",
            b"i-stale\n",
            kiln_ext4::NewFile::default(),
        )
        .unwrap();
        fs.close().unwrap();
    }
    img.close().unwrap();
    let rep = kiln_golden::verify(&edited, &built.manifest_path).unwrap();
    let all = rep.problems.join("\n");
    assert!(all.contains("image sha256"), "{all}");
    assert!(all.contains("/usr/local/bin/k3s: content sha256"), "{all}");
}

#[test]
fn diff_against_the_base_matches_the_manifest() {
    let env = env();
    let recipe = write_recipe(&env, "recipe.yaml", PREREQS);
    let a = build_file(&recipe, &opts(&env.root.join("a"))).unwrap();
    let b = build_file(&recipe, &opts(&env.root.join("b"))).unwrap();
    assert_eq!(kiln_golden::diff(&a.image, &b.image).unwrap(), vec![]);

    let d = kiln_golden::diff(&env.base.path, &a.image).unwrap();
    let find = |p: &GuestPath| d.iter().filter(|x| x.path() == p).collect::<Vec<_>>();
    // Every injected file is new or changed; every removed path is reported removed.
    for i in &a.manifest.injected {
        let hits = find(GuestPath::new(&i.path));
        assert!(
            hits.iter().any(|h| matches!(
                h,
                kiln_golden::Difference::Added { .. } | kiln_golden::Difference::Content { .. }
            )) || i.kind == kiln_golden::inject::InjectedKind::Dir,
            "{} missing from the diff: {hits:?}",
            i.path
        );
    }
    for r in &a.manifest.scrub {
        for c in &r.changed {
            let hits = find(&c.path);
            let ok = match c.action {
                kiln_golden::scrub::Action::Removed => hits
                    .iter()
                    .any(|h| matches!(h, kiln_golden::Difference::Removed { .. })),
                _ => !hits.is_empty(),
            };
            assert!(ok, "{} ({:?}) not in the diff: {hits:?}", c.path, c.action);
        }
    }
    // Names are bytes: the file whose name is not UTF-8 is reported removed, the log truncated.
    let bad = find(GuestPath::new(fixtures::NON_UTF8_TMP));
    assert!(
        matches!(bad[..], [kiln_golden::Difference::Removed { .. }]),
        "{bad:?}"
    );
    let log = find(GuestPath::new(fixtures::NON_UTF8_LOG));
    assert!(
        log.iter()
            .any(|d| matches!(d, kiln_golden::Difference::Content { size_b: 0, .. })),
        "{log:?}"
    );
    // Nothing outside the manifest changed except directory times of parents.
    for x in &d {
        let p = x.path();
        let in_manifest = a.manifest.injected.iter().any(|i| *p == *i.path)
            || a.manifest.scrub.iter().flat_map(|r| &r.changed).any(|c| {
                p == c.path
                    || p.as_bytes()
                        .starts_with(&[c.path.as_bytes(), b"/"].concat())
            });
        let dir_times = matches!(x, kiln_golden::Difference::Metadata { fields, .. }
            if fields.iter().all(|f| f.starts_with("mtime")));
        assert!(in_manifest || dir_times, "unexplained difference {x:?}");
    }
}

/// A minimal Debian package: an ar archive whose first member is `debian-binary`.
fn fake_deb(name: &str) -> Vec<u8> {
    let mut v = b"!<arch>\n".to_vec();
    let member = |v: &mut Vec<u8>, n: &str, data: &[u8]| {
        v.extend_from_slice(
            format!(
                "{n:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                0,
                0,
                0,
                100644,
                data.len()
            )
            .as_bytes(),
        );
        v.extend_from_slice(data);
        if data.len() % 2 == 1 {
            v.push(b'\n');
        }
    };
    member(&mut v, "debian-binary", b"2.0\n");
    member(&mut v, "control.tar.xz", name.as_bytes());
    v
}

#[test]
fn debs_are_staged_with_a_first_boot_unit() {
    let env = env();
    let debs = env.root.join("in/debs");
    std::fs::create_dir_all(&debs).unwrap();
    let a = fake_deb("open-iscsi");
    std::fs::write(debs.join("open-iscsi_2.1.9-3_amd64.deb"), &a).unwrap();
    let sha = fixtures::sha256_of(&debs.join("open-iscsi_2.1.9-3_amd64.deb")).unwrap();
    let extra = format!(
        "prerequisites:\n  - deb: {{ source: {}, sha256: {sha} }}\n",
        debs.join("open-iscsi_2.1.9-3_amd64.deb").display()
    );
    let recipe = write_recipe(&env, "recipe.yaml", &extra);
    let built = build_file(&recipe, &opts(&env.root.join("out"))).unwrap();
    let work = env.root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let part = root_partition(&built.image, &work);
    run(Command::new("e2fsck").arg("-fn").arg(&part));
    assert_eq!(
        debugfs_cat(&part, "/var/lib/kiln/debs/open-iscsi_2.1.9-3_amd64.deb"),
        a
    );
    let unit = String::from_utf8(debugfs_cat(
        &part,
        "/etc/systemd/system/kiln-install-debs.service",
    ))
    .unwrap();
    assert!(unit.contains("Before=cloud-final.service"), "{unit}");
    assert!(unit.contains("dpkg -i /var/lib/kiln/debs/*.deb"), "{unit}");
    assert_fast_link(
        &part,
        "/etc/systemd/system/multi-user.target.wants/kiln-install-debs.service",
        "/etc/systemd/system/kiln-install-debs.service",
    );

    // A wrong pin and a file that is not a package fail with nothing left.
    let out = env.root.join("out2");
    let r = write_recipe(&env, "bad.yaml", &extra.replace(&sha, &"d".repeat(64)));
    let e = build_file(&r, &opts(&out)).unwrap_err();
    assert!(matches!(e, Error::ChecksumMismatch { .. }), "{e}");
    std::fs::write(debs.join("junk.deb"), b"not a deb").unwrap();
    let junk_sha = fixtures::sha256_of(&debs.join("junk.deb")).unwrap();
    let r = write_recipe(
        &env,
        "junk.yaml",
        &format!(
            "prerequisites:\n  - deb: {{ source: {}, sha256: {junk_sha} }}\n",
            debs.join("junk.deb").display()
        ),
    );
    let e = build_file(&r, &opts(&out)).unwrap_err();
    assert!(e.to_string().contains("not a Debian package"), "{e}");
    assert_no_output(&out);
}

/// No wall-clock time anywhere in the built root filesystem: every inode's atime, ctime, mtime and
/// crtime is either the base's own (the fixture's fixed time) or SOURCE_DATE_EPOCH, and so are the
/// superblock's times. Oracle: `debugfs rdump` lists the tree, one `debugfs -f` run stats it all.
#[test]
fn no_wall_clock_time_in_the_image() {
    let env = env();
    let recipe = write_recipe(&env, "recipe.yaml", PREREQS);
    let built = build_file(&recipe, &opts(&env.root.join("out"))).unwrap();
    let work = env.root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let part = root_partition(&built.image, &work);
    let tree = work.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", tree.display()))
        .arg(&part));
    // Paths as bytes: the fixture has names that are not UTF-8, which debugfs must get as they are.
    use std::os::unix::ffi::OsStrExt;
    let mut paths: Vec<Vec<u8>> = vec![b"/".to_vec()];
    let mut stack = vec![tree.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path.strip_prefix(&tree).unwrap().as_os_str().as_bytes();
            paths.push([b"/", rel].concat());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert!(paths.len() > 1500, "{} paths", paths.len());
    let cmds = work.join("cmds");
    std::fs::write(
        &cmds,
        paths
            .iter()
            .flat_map(|p| [&b"stat \""[..], p, b"\"\n"].concat())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let out = run(Command::new("debugfs").arg("-f").arg(&cmds).arg(&part));
    let allowed = ["0x67748580", "0x6955b900"]; // fixture time, SOURCE_DATE_EPOCH
    let mut seen = 0;
    for l in out.lines() {
        let l = l.trim_start();
        for k in ["ctime: ", "atime: ", "mtime: ", "crtime: "] {
            if let Some(rest) = l.strip_prefix(k) {
                seen += 1;
                let v = &rest[..10];
                assert!(allowed.contains(&v), "{l}");
            }
        }
    }
    assert!(
        seen >= 4 * paths.len(),
        "{seen} times for {} paths",
        paths.len()
    );
    let sb = run(Command::new("dumpe2fs")
        .env("TZ", "UTC")
        .arg("-h")
        .arg(&part));
    for k in ["Filesystem created:", "Last write time:", "Last checked:"] {
        let v = sb
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} in {sb}"))
            .trim();
        assert!(
            v == "Thu Jan  1 00:00:00 2026" || v == "Wed Jan  1 00:00:00 2025",
            "{k} {v}"
        );
    }
}

/// Scrub ops are idempotent: rebuilding from an already-scrubbed golden image changes nothing.
#[test]
fn scrubbing_a_golden_image_again_changes_nothing() {
    let env = env();
    let recipe = write_recipe(&env, "recipe.yaml", "");
    let first = build_file(&recipe, &opts(&env.root.join("first"))).unwrap();
    let golden = BaseFixture {
        path: first.image.clone(),
        sha256: first.manifest.output.sha256.clone(),
        ..env.base.clone()
    };
    let p = env.root.join("again.yaml");
    std::fs::write(
        &p,
        fixtures::recipe_yaml("again", &golden, &env.assets, "")
            .replace("k3s:\n", "scrub: {}\nk3s_unused:\n")
            .split("k3s_unused:")
            .next()
            .unwrap(),
    )
    .unwrap();
    let second = build_file(&p, &opts(&env.root.join("second"))).unwrap();
    let changed: Vec<_> = second
        .manifest
        .scrub
        .iter()
        .filter(|r| !r.changed.is_empty())
        .collect();
    assert!(changed.is_empty(), "{changed:?}");
    assert_eq!(second.manifest.scrub.len(), kiln_golden::CATALOG.len());
    assert_eq!(
        kiln_golden::diff(&first.image, &second.image).unwrap(),
        vec![]
    );
}

/// Every input of the build, hashed: a cancelled build must leave them as they were.
fn input_hashes(env: &Env, recipe: &Path) -> Vec<(PathBuf, String)> {
    let mut files = vec![env.base.path.clone(), recipe.to_owned()];
    let mut assets: Vec<PathBuf> = std::fs::read_dir(&env.assets.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assets.sort();
    files.extend(assets);
    files
        .into_iter()
        .map(|f| {
            let sha = fixtures::sha256_of(&f).unwrap();
            (f, sha)
        })
        .collect()
}

/// A progress event as the tests compare them: `(kind, step, done, total)`.
fn event(ev: &StepEvent<'_>) -> (&'static str, String, u64, u64) {
    match ev {
        StepEvent::Start(s) => ("start", s.name().to_owned(), 0, 0),
        StepEvent::Done(r) => ("done", r.name.name().to_owned(), 0, 0),
        StepEvent::Bytes { step, done, total } => ("bytes", step.name().to_owned(), *done, *total),
        _ => ("other", String::new(), 0, 0),
    }
}

#[test]
fn cancelled_builds_leave_nothing_and_bytes_progress_is_reported() {
    let env = env();
    let recipe = write_recipe(&env, "recipe.yaml", PREREQS);
    let inputs = input_hashes(&env, &recipe);
    let out = env.root.join("out/nested");

    // Tripped before the build starts: nothing is even read.
    let cancel = Cancel::new();
    cancel.cancel();
    let e = build_file(&recipe, &opts(&out).with_cancel(cancel)).unwrap_err();
    assert!(matches!(e, Error::Cancelled), "{e}");
    assert_eq!(e.kind(), kiln_golden::ErrorKind::Cancelled);
    assert!(!env.root.join("out").exists());

    // A whole build: byte progress inside open-base, k3s, output and manifest, growing to its total.
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = events.clone();
    let built = build_file(
        &recipe,
        &opts(&out).with_progress(std::sync::Arc::new(move |ev: StepEvent<'_>| {
            log.lock().unwrap().push(event(&ev))
        })),
    )
    .unwrap();
    let events = events.lock().unwrap().clone();
    for step in [Step::OpenBase, Step::K3s, Step::Output, Step::Manifest] {
        let bytes: Vec<(u64, u64)> = events
            .iter()
            .filter(|(k, s, _, _)| *k == "bytes" && s == step.name())
            .map(|&(_, _, d, t)| (d, t))
            .collect();
        assert!(!bytes.is_empty(), "{step}: no byte progress in {events:?}");
        assert!(
            bytes
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 == w[1].1),
            "{step}: {bytes:?}"
        );
        let &(done, total) = bytes.last().unwrap();
        assert_eq!(done, total, "{step}: {bytes:?}");
        let start = events
            .iter()
            .position(|e| e.0 == "start" && e.1 == step.name())
            .unwrap();
        let end = events
            .iter()
            .position(|e| e.0 == "done" && e.1 == step.name())
            .unwrap();
        let inside = events[start..end]
            .iter()
            .filter(|e| e.0 == "bytes" && e.1 == step.name())
            .count();
        assert_eq!(inside, bytes.len(), "{step}: byte events outside the step");
    }
    let k3s_total = events
        .iter()
        .find(|e| e.0 == "bytes" && e.1 == "k3s")
        .unwrap()
        .3;
    assert_eq!(
        k3s_total,
        built
            .manifest
            .k3s
            .as_ref()
            .unwrap()
            .assets
            .iter()
            .map(|a| a.size)
            .sum::<u64>()
    );
    let image_sha = built.manifest.output.sha256.clone();
    std::fs::remove_dir_all(env.root.join("out")).unwrap();

    // Tripped from another thread at many points, the build running on a worker thread: at each
    // step's start, and on the first byte event of each long step (the worker waits until the
    // handle is tripped, so the build is stopped inside the step).
    let mut points: Vec<(&str, Step)> = Step::ALL.iter().map(|&s| ("start", s)).collect();
    points.extend([Step::OpenBase, Step::K3s, Step::Output, Step::Manifest].map(|s| ("bytes", s)));
    for (kind, step) in points {
        let cancel = Cancel::new();
        let (ask, asked) = std::sync::mpsc::channel::<std::sync::mpsc::Sender<()>>();
        let ask = std::sync::Mutex::new(Some(ask));
        let progress = move |ev: StepEvent<'_>| {
            let (k, s, _, _) = event(&ev);
            if k == kind
                && s == step.name()
                && let Some(ask) = ask.lock().unwrap().take()
            {
                let (done, wait) = std::sync::mpsc::channel();
                ask.send(done).unwrap();
                wait.recv().unwrap();
            }
        };
        let o = opts(&out)
            .with_progress(std::sync::Arc::new(progress))
            .with_cancel(cancel.clone());
        let r = recipe.clone();
        let worker = std::thread::spawn(move || build_file(&r, &o));
        let tripper = std::thread::spawn(move || {
            if let Ok(done) = asked.recv() {
                cancel.cancel();
                done.send(()).unwrap();
            }
        });
        let e = worker.join().unwrap().unwrap_err();
        tripper.join().unwrap();
        assert!(matches!(e, Error::Cancelled), "{kind} {step}: {e}");
        assert!(
            !env.root.join("out").exists(),
            "{kind} {step}: output left behind"
        );
    }
    assert_eq!(input_hashes(&env, &recipe), inputs);

    // And a build after all that is the same as before.
    let again = build_file(&recipe, &opts(&out)).unwrap();
    assert_eq!(again.manifest.output.sha256, image_sha);
}

const BOOT_FILES: &str = r#"boot_files:
  - partition: UEFI
    path: /cmdline.txt
    content: "console=tty1 root=LABEL=writable rootwait\n"
  - partition: uefi
    path: /cmdline.txt
    cmdline_add: [cgroup_memory=1, cgroup_enable=memory, rootwait]
  - partition: UEFI
    path: /config.txt
    lines: ["arm_64bit=1", "[all]"]
  - partition: UEFI
    path: /EFI/kiln/deep/kiln.txt
    content: "hello\n"
  - partition: UEFI
    path: /cmdline.txt
    cmdline_add: [cgroup_memory=1]
"#;

/// The ESP (label `UEFI`) of a built image as a file of its own, and its byte offset in `raw`
/// (the image converted by `qemu-img`).
fn extract_esp(image: &Path, work: &Path) -> (PathBuf, PathBuf, u64) {
    let raw = work.join("disk.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(image)
        .arg(&raw));
    let disk = kiln_blockdev::FileDev::open_read_only(&raw).unwrap();
    let table = kiln_partition::scan(&disk, "raw").unwrap();
    let esp = table
        .partitions
        .iter()
        .find(|p| p.label.as_deref() == Some("UEFI"))
        .unwrap();
    let bytes = std::fs::read(&raw).unwrap();
    let part = work.join("esp.img");
    std::fs::write(
        &part,
        &bytes[esp.start as usize..(esp.start + esp.len) as usize],
    )
    .unwrap();
    (raw, part, esp.start)
}

fn mtools(tool: &str, target: &str, args: &[&str]) -> String {
    run(Command::new(tool)
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", target])
        .args(args))
}

#[test]
fn boot_files_edit_the_esp_in_place_and_pass_fsck_and_mtools() {
    let env = env();
    let recipe = write_recipe(&env, "recipe.yaml", BOOT_FILES);
    let built = build_file(&recipe, &opts(&env.root.join("a"))).unwrap();
    let step = built
        .steps
        .iter()
        .find(|s| s.name == Step::BootFiles)
        .unwrap();
    assert_eq!(step.summary, "5 boot files, 4 changed", "{step:?}");
    let actions: Vec<(&str, &str, String)> = built
        .manifest
        .boot_files
        .iter()
        .map(|r| {
            (
                r.from.as_str(),
                r.path.as_str(),
                serde_json::to_string(&r.action).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("boot_files[0]", "/cmdline.txt", "\"created\"".to_owned()),
            ("boot_files[1]", "/cmdline.txt", "\"replaced\"".to_owned()),
            ("boot_files[2]", "/config.txt", "\"created\"".to_owned()),
            (
                "boot_files[3]",
                "/EFI/kiln/deep/kiln.txt",
                "\"created\"".to_owned()
            ),
            ("boot_files[4]", "/cmdline.txt", "\"unchanged\"".to_owned()),
        ]
    );
    assert!(built.manifest.boot_files.iter().all(|r| r.number == 15));

    run(Command::new("qemu-img").arg("check").arg(&built.image));
    let work = env.root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let (raw, esp, offset) = extract_esp(&built.image, &work);
    run(Command::new("fsck.vfat").arg("-n").arg(&esp));
    let target = format!("{}@@{offset}", raw.display());
    assert_eq!(
        mtools("mtype", &target, &["::/cmdline.txt"]),
        "console=tty1 root=LABEL=writable rootwait cgroup_memory=1 cgroup_enable=memory\n"
    );
    assert_eq!(
        mtools("mtype", &target, &["::/config.txt"]),
        "arm_64bit=1\n[all]\n"
    );
    assert_eq!(
        mtools("mtype", &target, &["::/EFI/kiln/deep/kiln.txt"]),
        "hello\n"
    );
    for (dir, name) in [("::/", "cmdline"), ("::/EFI/kiln/deep", "kiln")] {
        let listing = mtools("mdir", &target, &[dir]);
        let line = listing
            .lines()
            .find(|l| l.to_lowercase().contains(name) && !l.contains("Directory for"))
            .unwrap_or_else(|| panic!("{name} in {listing}"));
        assert!(
            line.contains("2026-01-01") && line.contains(" 0:00"),
            "{line}"
        );
    }
    // The root filesystem is as a build without boot files leaves it; the ESP is the only
    // difference (same recipe otherwise: the same root partition bytes).
    let plain = write_recipe(&env, "plain.yaml", "");
    let p = build_file(&plain, &opts(&env.root.join("plain"))).unwrap();
    assert!(p.manifest.boot_files.is_empty());
    assert!(
        !std::fs::read_to_string(&p.manifest_path)
            .unwrap()
            .contains("boot_files")
    );
    let roots: Vec<String> = [(&built.image, "r1"), (&p.image, "r2")]
        .into_iter()
        .map(|(image, dir)| {
            let dir = work.join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            fixtures::sha256_of(&root_partition(image, &dir)).unwrap()
        })
        .collect();
    assert_eq!(roots[0], roots[1]);

    // Deterministic: a second build gives the same bytes.
    let again = build_file(&recipe, &opts(&env.root.join("b"))).unwrap();
    assert_eq!(
        fixtures::sha256_of(&built.image).unwrap(),
        fixtures::sha256_of(&again.image).unwrap()
    );
    assert_eq!(
        std::fs::read(&built.manifest_path).unwrap(),
        std::fs::read(&again.manifest_path).unwrap()
    );
}

#[test]
fn a_missing_boot_partition_label_is_bad_input_with_nothing_left() {
    let env = env();
    let recipe = write_recipe(
        &env,
        "recipe.yaml",
        "boot_files:\n  - { partition: system-boot, path: /cmdline.txt, cmdline_add: [a=1] }\n",
    );
    let out = env.root.join("out");
    let e = build_file(&recipe, &opts(&out)).unwrap_err();
    assert_eq!(e.kind(), kiln_golden::ErrorKind::Input, "{e}");
    let m = e.to_string();
    assert!(
        m.contains("no vfat partition labelled \"system-boot\"") && m.contains("15=vfat(UEFI)"),
        "{m}"
    );
    assert_no_output(&out);
    // cmdline_add on a file that is not there is bad input too.
    let recipe = write_recipe(
        &env,
        "recipe2.yaml",
        "boot_files:\n  - { partition: UEFI, path: /cmdline.txt, cmdline_add: [a=1] }\n",
    );
    let e = build_file(&recipe, &opts(&out)).unwrap_err();
    assert_eq!(e.kind(), kiln_golden::ErrorKind::Input, "{e}");
    assert!(
        e.to_string().contains("boot_files[0] (/cmdline.txt)"),
        "{e}"
    );
    assert_no_output(&out);
}
