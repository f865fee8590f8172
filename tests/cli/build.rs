//! `kiln build` and `kiln scrub --list` end to end on a generated Ubuntu-like base (GPT, zlib qcow2,
//! booted-once root fs) and stand-in k3s assets; oracles: qemu-img check, e2fsck -fn, debugfs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{KILN, assert_success, kiln};

use kiln_fixtures::{self as fixtures, BaseSpec};

use kiln_fixtures::testing::{BUILD_STEPS, BuildEnv, run};

type Env = BuildEnv;

fn env() -> Env {
    BuildEnv::new("v1.34.3+k3s1", 64 << 10)
}

/// `kiln build -q` of the recipe `r` into `out_dir`, which must succeed; returns the image.
fn build_quiet(r: &str, out_dir: &Path) -> PathBuf {
    assert_success(&kiln(&["build", r, "-o", out_dir.to_str().unwrap(), "-q"]));
    out_dir.join("node.qcow2")
}

fn recipe(env: &Env, name: &str, text: String) -> String {
    let p = env.root.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn default_recipe(env: &Env) -> String {
    recipe(
        env,
        "recipe.yaml",
        fixtures::recipe_yaml(
            "node",
            &env.base,
            &env.assets,
            "prerequisites:\n  - modules_load: { name: k3s, modules: [overlay, br_netfilter] }\n",
        ),
    )
}

fn root_partition(image: &Path, work: &Path) -> PathBuf {
    fixtures::extract_root_partition(image, work).expect("extract the root partition")
}

use kiln_fixtures::testing::sha256;

#[test]
fn build_json_then_oracles() {
    let env = env();
    let r = default_recipe(&env);
    let out_dir = env.root.join("out");
    let out = kiln(&["build", &r, "-o", out_dir.to_str().unwrap(), "--json"]);
    assert_success(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, BUILD_STEPS);
    assert!(report["steps"][0]["millis"].is_u64());
    let image = out_dir.join("node.qcow2");
    assert_eq!(report["sha256"].as_str().unwrap(), sha256(&image));
    run(Command::new("qemu-img").arg("check").arg(&image));

    let part = root_partition(&image, &env.root);
    run(Command::new("e2fsck").arg("-fn").arg(&part));
    let cat = |p: &str| {
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {p}"))
            .arg(&part)
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(cat("/etc/machine-id"), b"uninitialized\n");
    assert_eq!(
        cat("/etc/modules-load.d/k3s.conf"),
        b"overlay\nbr_netfilter\n"
    );
    assert_eq!(
        cat("/usr/local/bin/k3s"),
        std::fs::read(env.assets.dir.join("k3s")).unwrap()
    );
    let stat = Command::new("debugfs")
        .args(["-R", "stat /etc/netplan/50-cloud-init.yaml"])
        .arg(&part)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&stat.stderr).contains("File not found"),
        "netplan config survived"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("node.manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["output"]["sha256"], report["sha256"]);
}

#[test]
fn rebuild_elsewhere_later_is_identical() {
    let env = env();
    let r = default_recipe(&env);
    let a = env.root.join("a");
    let b = env.root.join("x/y/b");
    build_quiet(&r, &a);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build_quiet(&r, &b);
    for f in ["node.qcow2", "node.manifest.json"] {
        assert_eq!(sha256(&a.join(f)), sha256(&b.join(f)), "{f} differs");
    }
}

#[test]
fn bad_inputs_exit_2_and_leave_nothing() {
    let env = env();
    let good = fixtures::recipe_yaml("node", &env.base, &env.assets, "");
    let out_dir = env.root.join("out");
    let cases = [
        (
            "wrong-sha.yaml",
            good.replace(&env.base.sha256, &"a".repeat(64)),
            "sha256",
        ),
        (
            "unknown-key.yaml",
            format!("{good}colour: blue\n"),
            "colour",
        ),
        (
            "unknown-op.yaml",
            format!("{good}scrub:\n  enable: [defrag]\n"),
            "unknown scrub op \"defrag\"",
        ),
        (
            "missing-asset.yaml",
            good.replace(
                &env.assets.dir.display().to_string(),
                &env.root.join("nowhere").display().to_string(),
            ),
            "missing",
        ),
        (
            "missing-boot-partition.yaml",
            format!(
                "{good}boot_files:\n  - {{ partition: system-boot, path: /cmdline.txt, cmdline_add: [cgroup_memory=1] }}\n"
            ),
            "no vfat partition labelled \"system-boot\"",
        ),
    ];
    for (name, text, needle) in cases {
        let r = recipe(&env, name, text);
        let out = kiln(&["build", &r, "-o", out_dir.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(needle), "{name}: {err}");
        let left: Vec<_> = std::fs::read_dir(&out_dir)
            .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{name}: left {left:?}");
    }
    assert_eq!(sha256(&env.base.path), env.base.sha256);
}

#[test]
fn scrub_list_prints_the_catalog() {
    let out = kiln(&["scrub", "--list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "machine-id",
        "dbus-machine-id",
        "cloud-init-state",
        "cloud-init-network",
        "ssh-hostkeys",
        "udev-persistent-net",
        "random-seed",
        "logfiles",
        "tmp-files",
        "shell-history",
        "apt-cache",
        "dhcp-leases",
        "hostname",
    ] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} missing from:\n{text}"
        );
    }
    let out = kiln(&["scrub", "--list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), kiln_golden::CATALOG.len());
    assert_eq!(kiln(&["scrub"]).status.code(), Some(2));
}

/// The committed recipe builds from freshly generated full-size fixtures (so its pins are right and
/// the fixtures are reproducible), the result passes the oracles, and a build killed midway leaves
/// nothing under the final names.
#[test]
fn committed_recipe_builds_from_fresh_full_size_fixtures() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fx = root.join("target/fixtures");
    fixtures::make_base(&fx, "ubuntu-24.04-base.qcow2", &BaseSpec::ubuntu()).unwrap();
    fixtures::make_k3s_assets(&fx.join("k3s"), "v1.34.3+k3s1", "amd64", 8 << 20).unwrap();
    std::fs::create_dir_all(root.join("recipes")).unwrap();
    let recipe = root.join("recipes/k3s-node-ubuntu-24.04.yaml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/k3s-node-ubuntu-24.04.yaml"),
        &recipe,
    )
    .unwrap();
    let out_dir = root.join("out");
    let out = kiln(&[
        "build",
        recipe.to_str().unwrap(),
        "-o",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "the committed recipe's pins do not match freshly generated fixtures: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = out_dir.join("k3s-node-ubuntu-24.04.qcow2");
    run(Command::new("qemu-img").arg("check").arg(&image));
    let info = run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&image));
    assert!(info.contains("\"virtual-size\": 3758096384"), "{info}");
    let part = root_partition(&image, root);
    run(Command::new("e2fsck").arg("-fn").arg(&part));
    let features = run(Command::new("dumpe2fs").arg("-h").arg(&part));
    for f in [
        "has_journal",
        "extent",
        "huge_file",
        "flex_bg",
        "metadata_csum",
        "64bit",
        "dir_nlink",
        "extra_isize",
        "dir_index",
    ] {
        assert!(features.contains(f), "{f} missing:\n{features}");
    }
    std::fs::remove_file(&part).unwrap();

    // Kill a build midway: as soon as its temporary output exists, SIGKILL it.
    let killed = root.join("killed");
    std::fs::create_dir_all(&killed).unwrap();
    let mut child = Command::new(KILN)
        .args([
            "build",
            recipe.to_str().unwrap(),
            "-o",
            killed.to_str().unwrap(),
            "-q",
        ])
        .spawn()
        .unwrap();
    let tmp_name = killed.join(".k3s-node-ubuntu-24.04.qcow2.kiln-tmp");
    let t0 = std::time::Instant::now();
    while !tmp_name.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before its temporary output was seen"
        );
        assert!(
            t0.elapsed().as_secs() < 60,
            "no temporary output after 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for f in [
        "k3s-node-ubuntu-24.04.qcow2",
        "k3s-node-ubuntu-24.04.manifest.json",
    ] {
        assert!(!killed.join(f).exists(), "{f} exists after a killed build");
    }
}

#[test]
fn verify_passes_then_catches_a_forged_manifest() {
    let env = env();
    let r = default_recipe(&env);
    let out_dir = env.root.join("out");
    let image = build_quiet(&r, &out_dir);
    let ok = kiln(&["verify", image.to_str().unwrap()]);
    assert_success(&ok);
    assert!(String::from_utf8_lossy(&ok.stderr).contains("verified"));

    let manifest = std::fs::read_to_string(out_dir.join("node.manifest.json")).unwrap();
    let forged = out_dir.join("forged.json");
    std::fs::write(
        &forged,
        manifest.replace(
            "\"path\": \"/etc/modules-load.d/k3s.conf\"",
            "\"path\": \"/etc/modules-load.d/gone.conf\"",
        ),
    )
    .unwrap();
    let bad = kiln(&[
        "verify",
        image.to_str().unwrap(),
        "--manifest",
        forged.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(
        text.contains("MISMATCH injected /etc/modules-load.d/gone.conf"),
        "{text}"
    );
    let missing = kiln(&[
        "verify",
        image.to_str().unwrap(),
        "--manifest",
        "/nonexistent.json",
    ]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn diff_reports_what_the_build_changed() {
    let env = env();
    let r = default_recipe(&env);
    let out_dir = env.root.join("out");
    let image = build_quiet(&r, &out_dir);
    let out = kiln(&[
        "diff",
        env.base.path.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "+ /usr/local/bin/k3s (file)",
        "- /etc/netplan/50-cloud-init.yaml (file)",
        "- /etc/ssh/ssh_host_ed25519_key (file)",
        "M /etc/machine-id (content, 33 -> 14 bytes)",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    // Names are bytes: the fixture's files whose names are not UTF-8 are listed, escaped.
    assert!(
        text.lines().any(|l| l == r"- /tmp/bad\xffname (file)"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(r"M /var/log/bad\xfe.log (content, ")
                && l.ends_with(" -> 0 bytes)")),
        "{text}"
    );
    let json = kiln(&[
        "diff",
        env.base.path.to_str().unwrap(),
        image.to_str().unwrap(),
        "--json",
    ]);
    assert_success(&json);
    let diffs: Vec<kiln_golden::Difference> = serde_json::from_slice(&json.stdout).unwrap();
    assert!(diffs.iter().any(|d| {
        matches!(d, kiln_golden::Difference::Removed { .. })
            && *d.path() == *kiln_golden::GuestPath::new(fixtures::NON_UTF8_TMP)
    }));
    let raw: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        raw.as_array()
            .unwrap()
            .iter()
            .any(|d| d["path"] == r"/tmp/bad\xffname" && d["change"] == "removed"),
        "{raw}"
    );
    let same = kiln(&[
        "diff",
        image.to_str().unwrap(),
        image.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(String::from_utf8_lossy(&same.stdout).trim(), "[]");
}

/// `--update-lock` writes the lock, `--locked` passes on the same inputs, and a lock whose digests
/// differ makes `--locked` exit 1 naming the changed file; a missing lock is bad input (exit 2).
#[test]
fn locked_builds_match_or_explain_file_by_file() {
    let env = env();
    let r = default_recipe(&env);
    let out = env.root.join("out");
    let lock = env.root.join("recipe.lock");
    let o = out.to_str().unwrap();
    let missing = kiln(&["build", &r, "-o", o, "--locked"]);
    assert_eq!(
        missing.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    assert!(
        !out.join("node.qcow2").exists(),
        "nothing is built without the lock"
    );

    let w = kiln(&["build", &r, "-o", o, "--update-lock"]);
    assert_success(&w);
    let text = std::fs::read_to_string(&lock).unwrap();
    let image_sha = sha256(&out.join("node.qcow2"));
    assert!(text.starts_with("# kiln lock v1\n"), "{text}");
    assert!(
        text.contains(&format!("output node.qcow2 sha256:{image_sha}\n")),
        "{text}"
    );
    let hostname = text
        .lines()
        .find(|l| l.ends_with(" /etc/hosts"))
        .expect("the lock lists /etc/hosts")
        .to_owned();

    let ok = kiln(&["build", &r, "-o", o, "--locked"]);
    assert_success(&ok);

    // Another machine's lock: other image bytes, and /etc/hosts with other content.
    let forged_line = format!(
        "{} ffffffffffffffff /etc/hosts",
        hostname.rsplitn(3, ' ').nth(2).unwrap()
    );
    let forged = text
        .replace(&image_sha, &"0".repeat(64))
        .replace(&hostname, &forged_line);
    std::fs::write(&lock, forged).unwrap();
    let bad = kiln(&["build", &r, "-o", o, "--locked"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(err.contains("differ from the lock"), "{err}");
    assert!(err.contains("node.qcow2: sha256"), "{err}");
    assert!(err.contains("changed /etc/hosts (content)"), "{err}");
    assert!(
        !err.contains("changed /etc/hostname"),
        "only what differs is named: {err}"
    );

    std::fs::write(&lock, "output node.qcow2 sha256:zz\n").unwrap();
    let garbage = kiln(&["build", &r, "-o", o, "--locked"]);
    let err = String::from_utf8_lossy(&garbage.stderr);
    assert_eq!(garbage.status.code(), Some(2), "{err}");
    assert!(err.contains("recipe.lock:1"), "{err}");
}

/// Two `kiln build`s of one recipe into one directory at the same moment never write into each
/// other's files: each either completes, or stops with the "another kiln run" error (exit 1) while
/// the other holds the output's temporary file; what ends under the final names is always a
/// complete build, identical to an undisturbed one, and no temporary file is left.
#[test]
fn concurrent_builds_into_one_directory_never_collide() {
    let env = env();
    let r = default_recipe(&env);
    let reference = build_quiet(&r, &env.root.join("ref"));
    let want = sha256(&reference);
    let mut refused = 0;
    for round in 0..4 {
        let out = env.root.join(format!("out{round}"));
        let spawn = || {
            Command::new(KILN)
                .args(["build", &r, "-o", out.to_str().unwrap(), "-q"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let outputs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let mut ok = 0;
        for o in &outputs {
            let text = crate::util::text(o);
            if o.status.success() {
                ok += 1;
            } else {
                assert_eq!(o.status.code(), Some(1), "{text}");
                assert!(text.contains("another kiln run is writing"), "{text}");
                refused += 1;
            }
        }
        assert!(ok >= 1, "round {round}: neither build completed");
        assert_eq!(sha256(&out.join("node.qcow2")), want, "round {round}");
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["node.manifest.json", "node.qcow2"], "round {round}");
    }
    eprintln!("{refused} of 8 concurrent builds were refused as busy");
}
