//! `kiln cluster` end to end on a generated Ubuntu-like golden (kiln_fixtures, BaseSpec::small).
//! Oracles: `qemu-img info --output=json` / `qemu-img check` on every overlay, `isoinfo -R` on every
//! seed ISO, the files' inodes and mtimes across re-runs, and the token searched for in every output
//! and in everything the CLI prints.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_fixtures::{self as fixtures, BaseSpec};

use crate::util::{KILN, text};
const NODES: [&str; 3] = ["k3s-cp-01", "k3s-worker-01", "k3s-worker-02"];

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    golden: PathBuf,
    spec: PathBuf,
    out: PathBuf,
}

/// The golden in `ROOT/golden/`, the spec (libvirt-3node) in `ROOT/`, outputs to `ROOT/out/cluster`.
fn env() -> Env {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().to_owned();
    let base = fixtures::make_base(&root.join("golden"), "golden.qcow2", &BaseSpec::small())
        .expect("make the base image (needs .ci/run's tools)");
    let spec = root.join("cluster.yaml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/clusters/libvirt-3node.yaml"),
        &spec,
    )
    .expect("copy spec");
    Env {
        _tmp: tmp,
        out: root.join("out/cluster"),
        root,
        golden: base.path,
        spec,
    }
}

fn cluster(env: &Env, extra: &[&str]) -> Output {
    Command::new(KILN)
        .arg("cluster")
        .arg(&env.spec)
        .arg("--golden")
        .arg(&env.golden)
        .arg("-o")
        .arg(&env.out)
        .args(extra)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("run kiln")
}

fn ok_json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(o));
    serde_json::from_slice(&o.stdout).expect("--json prints JSON")
}

fn tool(cmd: &str, args: &[&std::ffi::OsStr]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("oracle {cmd} must be installed (.ci/run): {e}"));
    assert!(o.status.success(), "{cmd} {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn qemu_info(p: &Path) -> serde_json::Value {
    let s = tool(
        "qemu-img",
        &["info".as_ref(), "--output=json".as_ref(), p.as_ref()],
    );
    serde_json::from_str(&s).expect("qemu-img info JSON")
}

fn iso_file(iso: &Path, name: &str) -> String {
    tool(
        "isoinfo",
        &[
            "-R".as_ref(),
            "-i".as_ref(),
            iso.as_ref(),
            "-x".as_ref(),
            format!("/{name}").as_ref(),
        ],
    )
}

/// name → (inode, mtime seconds, mtime nanoseconds) of every file in `dir`.
fn snapshot(dir: &Path) -> BTreeMap<String, (u64, i64, i64)> {
    std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| {
            let e = e.expect("entry");
            let m = e.metadata().expect("stat");
            (
                e.file_name().to_string_lossy().into_owned(),
                (m.ino(), m.mtime(), m.mtime_nsec()),
            )
        })
        .collect()
}

/// An environment whose cluster was built once (`--json`, which must succeed), and the snapshot
/// of its output directory.
fn built_env() -> (Env, BTreeMap<String, (u64, i64, i64)>) {
    let env = env();
    ok_json(&cluster(&env, &["--json"]));
    let before = snapshot(&env.out);
    (env, before)
}

fn statuses(report: &serde_json::Value) -> BTreeMap<String, String> {
    report["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().expect("path").to_owned(),
                f["status"].as_str().expect("status").to_owned(),
            )
        })
        .collect()
}

fn token(env: &Env) -> String {
    std::fs::read_to_string(env.root.join("secrets/lab-token"))
        .expect("token file")
        .trim()
        .to_owned()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn overlays_seeds_inventory_then_idempotent_reruns() {
    let env = env();
    let o = cluster(&env, &["--json"]);
    let report = ok_json(&o);
    let tok = token(&env);
    assert!(tok.len() >= 32);
    assert!(!text(&o).contains(&tok), "the token was printed");
    assert!(statuses(&report).values().all(|s| s == "created"));

    // The inventory: relative golden path, its sha256 and size, nodes in spec order, no token.
    let inv_bytes = std::fs::read(env.out.join("inventory.json")).expect("inventory");
    assert!(inv_bytes.ends_with(b"}\n"));
    let inv: serde_json::Value = serde_json::from_slice(&inv_bytes).expect("inventory JSON");
    assert_eq!(inv, report["inventory"]);
    let golden_size = qemu_info(&env.golden)["virtual-size"]
        .as_u64()
        .expect("size");
    assert_eq!(inv["cluster"], "lab");
    assert_eq!(inv["golden"]["path"], "../../golden/golden.qcow2");
    assert_eq!(
        inv["golden"]["sha256"].as_str(),
        Some(fixtures::sha256_of(&env.golden).expect("sha").as_str())
    );
    assert_eq!(inv["golden"]["virtual_size"].as_u64(), Some(golden_size));
    let nodes = inv["nodes"].as_array().expect("nodes");
    let names: Vec<&str> = nodes
        .iter()
        .map(|n| n["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, NODES);

    for (i, n) in nodes.iter().enumerate() {
        let name = NODES[i];
        assert_eq!(n["ipv4"], format!("192.168.122.{}", 10 + i));
        assert_eq!(n["mac"], format!("52:54:00:00:00:{}", 10 + i));
        assert_eq!(n["role"], if i == 0 { "server" } else { "agent" });
        assert_eq!(n["disk"]["virtual_size"].as_u64(), Some(40 << 30));

        // The overlay: relative backing name, qcow2 backing format, the spec's size, clean.
        let disk = env.out.join(n["disk"]["path"].as_str().expect("disk"));
        assert_eq!(disk, env.out.join(format!("{name}.qcow2")));
        let info = qemu_info(&disk);
        assert_eq!(info["format"], "qcow2");
        assert_eq!(info["backing-filename"], "../../golden/golden.qcow2");
        assert_eq!(info["backing-filename-format"], "qcow2");
        assert_eq!(info["virtual-size"].as_u64(), Some(40 << 30));
        tool("qemu-img", &["check".as_ref(), disk.as_ref()]);

        // The seed: 0600, its sha256 recorded, meta-data naming the node and its instance-id.
        let seed = env.out.join(n["seed"]["path"].as_str().expect("seed"));
        assert_eq!(seed, env.out.join(format!("{name}-seed.iso")));
        let meta = std::fs::metadata(&seed).expect("stat seed");
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(
            n["seed"]["sha256"].as_str(),
            Some(fixtures::sha256_of(&seed).expect("sha").as_str())
        );
        let md = iso_file(&seed, "meta-data");
        let iid = n["instance_id"].as_str().expect("instance id");
        assert!(iid.starts_with(&format!("{name}-")));
        assert!(md.contains(&format!("instance-id: {iid}")), "{md}");
        assert!(md.contains(&format!("local-hostname: {name}")), "{md}");
        assert!(iso_file(&seed, "user-data").contains(&tok));
    }

    // The token reaches only the seeds' user-data.
    for (name, _) in snapshot(&env.out) {
        let bytes = std::fs::read(env.out.join(&name)).expect("read output");
        assert_eq!(
            contains(&bytes, &tok),
            name.ends_with("-seed.iso"),
            "token in {name}?"
        );
    }

    // Re-running (table and --json) rewrites nothing.
    let before = snapshot(&env.out);
    assert_eq!(before.len(), 7, "{before:?}");
    let o = cluster(&env, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.starts_with("NODE"), "{table}");
    assert!(table.contains("disk unchanged, seed unchanged"), "{table}");
    assert!(!text(&o).contains(&tok));
    let again = ok_json(&cluster(&env, &["--json"]));
    assert!(statuses(&again).values().all(|s| s == "unchanged"));
    assert_eq!(again["inventory"], inv);
    assert_eq!(snapshot(&env.out), before);

    // Labels on one node: only its seed (new instance-id) and the inventory are replaced.
    let spec = std::fs::read_to_string(&env.spec).expect("spec");
    let labelled = spec.replace(
        "ipv4: 192.168.122.11,",
        "ipv4: 192.168.122.11, labels: { tier: db },",
    );
    assert_ne!(spec, labelled);
    std::fs::write(&env.spec, labelled).expect("write spec");
    let changed = ok_json(&cluster(&env, &["--json"]));
    let after = snapshot(&env.out);
    for (file, id) in &before {
        let should_change = file == "k3s-worker-01-seed.iso" || file == "inventory.json";
        assert_eq!(after[file] != *id, should_change, "{file}");
        let want = if should_change {
            "updated"
        } else {
            "unchanged"
        };
        assert_eq!(statuses(&changed)[file], want, "{file}");
    }
    let new_iid = changed["inventory"]["nodes"][1]["instance_id"]
        .as_str()
        .expect("iid");
    assert_ne!(new_iid, nodes[1]["instance_id"].as_str().expect("old iid"));
    assert_eq!(
        changed["inventory"]["nodes"][0]["instance_id"],
        nodes[0]["instance_id"]
    );
    let md = iso_file(&env.out.join("k3s-worker-01-seed.iso"), "meta-data");
    assert!(md.contains(&format!("instance-id: {new_iid}")), "{md}");
    assert!(iso_file(&env.out.join("k3s-worker-01-seed.iso"), "user-data").contains("tier=db"));
    assert_eq!(
        std::fs::read_dir(&env.out).expect("ls").count(),
        7,
        "no temporaries left"
    );
}

#[test]
fn stale_overlays_are_refused_without_recreate_disks_and_replaced_with_it() {
    let (env, before) = built_env();

    // One node's disk grows: only that overlay is stale.
    let spec = std::fs::read_to_string(&env.spec).expect("spec");
    std::fs::write(
        &env.spec,
        spec.replace(
            "ipv4: 192.168.122.12,",
            "ipv4: 192.168.122.12, disk_size: 50G,",
        ),
    )
    .expect("write spec");
    let o = cluster(&env, &["--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("k3s-worker-02") && err.contains("--recreate-disks"),
        "{err}"
    );
    assert!(!err.contains("k3s-cp-01"), "{err}");
    assert!(o.stdout.is_empty());
    assert_eq!(snapshot(&env.out), before, "a refused run writes nothing");
    let r = ok_json(&cluster(&env, &["--json", "--recreate-disks"]));
    let st = statuses(&r);
    assert_eq!(st["k3s-worker-02.qcow2"], "updated");
    assert_eq!(st["k3s-cp-01.qcow2"], "unchanged");
    let w2 = env.out.join("k3s-worker-02.qcow2");
    assert_eq!(qemu_info(&w2)["virtual-size"].as_u64(), Some(50 << 30));
    tool("qemu-img", &["check".as_ref(), w2.as_ref()]);

    // A new golden (same name, other bytes): every overlay is stale.
    tool(
        "qemu-io",
        &[
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-c".as_ref(),
            "write -P 0x5a 1M 64k".as_ref(),
            env.golden.as_ref(),
        ],
    );
    let before = snapshot(&env.out);
    let o = cluster(&env, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for n in NODES {
        assert!(err.contains(n), "{err}");
    }
    assert!(err.contains("golden image changed"), "{err}");
    assert_eq!(snapshot(&env.out), before, "a refused run writes nothing");
    let r = ok_json(&cluster(&env, &["--json", "--recreate-disks"]));
    let st = statuses(&r);
    for n in NODES {
        assert_eq!(st[&format!("{n}.qcow2")], "updated");
        assert_eq!(st[&format!("{n}-seed.iso")], "unchanged");
        tool(
            "qemu-img",
            &[
                "check".as_ref(),
                env.out.join(format!("{n}.qcow2")).as_ref(),
            ],
        );
    }
    assert_eq!(st["inventory.json"], "updated");
    assert_eq!(
        r["inventory"]["golden"]["sha256"].as_str(),
        Some(fixtures::sha256_of(&env.golden).expect("sha").as_str())
    );
    let r = ok_json(&cluster(&env, &["--json"]));
    assert!(statuses(&r).values().all(|s| s == "unchanged"));
}

#[test]
fn bad_inputs_exit_2_and_write_nothing() {
    let env = env();
    let spec = std::fs::read_to_string(&env.spec).expect("spec");
    let raw = env.root.join("raw.img");
    std::fs::write(&raw, vec![0u8; 1 << 20]).expect("raw");
    let cases: Vec<(&str, String, PathBuf, &str)> = vec![
        (
            "invalid spec",
            spec.replace("ipv4: 192.168.122.12", "ipv4: 10.9.9.9"),
            env.golden.clone(),
            "10.9.9.9",
        ),
        (
            "missing golden",
            spec.clone(),
            env.root.join("nope.qcow2"),
            "nope.qcow2",
        ),
        ("golden not qcow2", spec.clone(), raw, "raw.img"),
        (
            "disk_size too small",
            spec.replace("disk_size: 40G", "disk_size: 100M"),
            env.golden.clone(),
            "smaller than the golden",
        ),
    ];
    for (what, text_, golden, needle) in cases {
        std::fs::write(&env.spec, &text_).expect("write spec");
        let o = Command::new(KILN)
            .arg("cluster")
            .arg(&env.spec)
            .arg("--golden")
            .arg(&golden)
            .arg("-o")
            .arg(&env.out)
            .arg("--json")
            .output()
            .expect("run kiln");
        assert_eq!(o.status.code(), Some(2), "{what}: {}", text(&o));
        assert!(text(&o).contains(needle), "{what}: {}", text(&o));
        assert!(o.stdout.is_empty(), "{what}");
        assert!(!env.root.join("out").exists(), "{what}: output written");
        assert!(
            !env.root.join("secrets").exists(),
            "{what}: token file created"
        );
    }
}

#[test]
fn removed_nodes_files_are_reported_and_left_in_place() {
    let (env, before) = built_env();
    let old_inventory = std::fs::read(env.out.join("inventory.json")).expect("inventory");
    let gone = ["k3s-worker-02.qcow2", "k3s-worker-02-seed.iso"];
    let sha_before: Vec<String> = gone
        .iter()
        .map(|f| fixtures::sha256_of(&env.out.join(f)).expect("sha"))
        .collect();

    let spec = std::fs::read_to_string(&env.spec).expect("spec");
    let line = spec
        .lines()
        .find(|l| l.contains("name: k3s-worker-02"))
        .expect("worker-02 line");
    std::fs::write(&env.spec, spec.replace(&format!("{line}\n"), "")).expect("write spec");

    // Only the inventory is replaced; the removed node's files stay exactly as they were.
    let check_untouched = |what: &str| {
        let after = snapshot(&env.out);
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>(),
            "{what}"
        );
        for (file, id) in &before {
            assert_eq!(
                after[file] != *id,
                file == "inventory.json",
                "{what}: {file}"
            );
        }
        for (f, sha) in gone.iter().zip(&sha_before) {
            assert_eq!(
                &fixtures::sha256_of(&env.out.join(f)).expect("sha"),
                sha,
                "{what}: {f}"
            );
        }
        let inv: serde_json::Value =
            serde_json::from_slice(&std::fs::read(env.out.join("inventory.json")).expect("inv"))
                .expect("inventory JSON");
        let names: Vec<&str> = inv["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, NODES[..2], "{what}");
    };

    // The table names both files on one line; exit 0.
    let table_run = || {
        let o = cluster(&env, &[]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let table = table_run();
    assert!(
        table.contains(
            "\nleft in place (no longer in the spec): k3s-worker-02.qcow2, k3s-worker-02-seed.iso\n"
        ),
        "{table}"
    );
    assert_eq!(table.matches("left in place").count(), 1, "{table}");
    assert!(!table.contains("k3s-worker-02  "), "no node row: {table}");
    check_untouched("table run");

    // --json from the same starting point (the old inventory back in place).
    std::fs::write(env.out.join("inventory.json"), &old_inventory).expect("restore inventory");
    let r = ok_json(&cluster(&env, &["--json"]));
    assert_eq!(
        r["leftovers"],
        serde_json::json!([
            {"path": "k3s-worker-02.qcow2", "kind": "disk", "node": "k3s-worker-02"},
            {"path": "k3s-worker-02-seed.iso", "kind": "seed", "node": "k3s-worker-02"},
        ])
    );
    let st = statuses(&r);
    assert_eq!(st.len(), 5, "{st:?}");
    assert_eq!(st["inventory.json"], "updated");
    assert!(
        st.iter()
            .all(|(f, s)| f == "inventory.json" || s == "unchanged")
    );
    check_untouched("json run");

    // Later runs: no inventory names the node any more, the files are still reported.
    let after = snapshot(&env.out);
    let table = table_run();
    assert!(
        table.contains(
            "left in place (no node in the spec owns them): k3s-worker-02-seed.iso, k3s-worker-02.qcow2\n"
        ),
        "{table}"
    );
    let r = ok_json(&cluster(&env, &["--json"]));
    assert_eq!(r["leftovers"].as_array().map(Vec::len), Some(2));
    assert!(r["leftovers"][0]["node"].is_null());
    assert!(statuses(&r).values().all(|s| s == "unchanged"));
    assert_eq!(snapshot(&env.out), after);
}

/// `--token-file` replaces the spec's token file; `--update-lock` records every output and each
/// seed's documents (never the token); `--locked` passes on a re-run and, against a lock from
/// other inputs, exits 1 naming the seed document that differs.
#[test]
fn token_file_override_and_locked_seeds() {
    let env = env();
    let tok_file = env.root.join("ci-token");
    std::fs::write(&tok_file, "a-token-from-ci-0123456789abcdef0123456789\n").expect("token");
    let t = tok_file.to_str().expect("path");
    let w = cluster(&env, &["--token-file", t, "--update-lock"]);
    assert!(w.status.success(), "{}", text(&w));
    assert!(
        !env.root.join("secrets/lab-token").exists(),
        "the spec's token file was made despite --token-file"
    );
    let lock_path = env.root.join("cluster.lock");
    let lock = std::fs::read_to_string(&lock_path).expect("lock written beside the spec");
    assert!(
        !lock.contains("a-token-from-ci"),
        "the token is in the lock"
    );
    for node in NODES {
        let seed = env.out.join(format!("{node}-seed.iso"));
        let sha = fixtures::sha256_of(&seed).expect("sha");
        assert!(
            lock.contains(&format!("output {node}-seed.iso sha256:{sha}\n")),
            "{lock}"
        );
    }
    assert!(
        lock.contains(" user-data\n") && lock.contains(" network-config\n"),
        "{lock}"
    );
    let again = cluster(&env, &["--token-file", t, "--locked"]);
    assert!(again.status.success(), "{}", text(&again));

    // Another token of the same length: every seed's user-data (and so the seed and the inventory)
    // differ.
    std::fs::write(&tok_file, "another-token-0123456789abcdef0123456789ab\n").expect("token");
    let bad = cluster(&env, &["--token-file", t, "--locked"]);
    let err = text(&bad);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(err.contains("k3s-cp-01-seed.iso: sha256"), "{err}");
    assert!(err.contains("changed user-data (content)"), "{err}");
    // The instance-id is derived from the seed's inputs, so meta-data changes too; the network
    // config does not.
    assert!(err.contains("changed meta-data (content)"), "{err}");
    assert!(!err.contains("changed network-config"), "{err}");
    assert!(
        !err.contains("another-token"),
        "the token was printed: {err}"
    );
}

/// A spec that names no token file (as a library caller's may) needs `--token-file` on the command
/// line: without it `kiln cluster` stops with exit 2 before writing anything; with it the cluster is
/// written.
#[test]
fn spec_without_token_file_needs_the_flag() {
    let env = env();
    let text_of_spec = std::fs::read_to_string(&env.spec).expect("spec");
    let without: String = text_of_spec
        .lines()
        .filter(|l| !l.trim_start().starts_with("token_file:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without, text_of_spec, "the spec had a token_file line");
    std::fs::write(&env.spec, &without).expect("write spec");
    let o = cluster(&env, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("names no cluster.k3s.token_file") && text(&o).contains("--token-file"),
        "{}",
        text(&o)
    );
    assert!(!env.out.exists(), "nothing is written without a token");
    let tok = env.root.join("ci-token");
    let t = tok.to_str().expect("path");
    let o = cluster(&env, &["--token-file", t]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(env.out.join("inventory.json").exists());
}

/// A private registry's password (read from a file the spec names) and the cluster's manifests:
/// the password reaches the seeds' user-data only — never `--json`, stderr, the inventory or the
/// lock; a missing password file exits 2 naming the field and the path, and writes nothing.
#[test]
fn registry_credentials_reach_only_the_seeds() {
    const PASSWORD: &str = "REGISTRY-PASSWORD-do-not-print-0123456789";
    let env = env();
    let spec = std::fs::read_to_string(&env.spec).expect("spec");
    std::fs::create_dir_all(env.root.join("creds")).expect("mkdir");
    std::fs::write(env.root.join("creds/registry"), format!("{PASSWORD}\n")).expect("password");
    std::fs::write(env.root.join("ns.yaml"), "kind: Namespace\n").expect("manifest");
    let inputs = "    token_file: secrets/lab-token\n    server_url: https://api.lab.internal:6443\n    registries:\n      mirrors: { docker.io: { endpoint: [\"https://registry.lab.internal:5000\"] } }\n      configs:\n        registry.lab.internal:5000: { auth: { username: lab, password_file: creds/registry } }\n    manifests:\n      - { source: ns.yaml, sha256: 6b5b5fe2b4d8d0cbda3bde6e3ec0ad53f3e4bde30b1d6ddd2b32b89a97d1c33d }\n";
    let sha = fixtures::sha256_of(&env.root.join("ns.yaml")).expect("sha");
    let with = spec.replacen(
        "    token_file: secrets/lab-token # created 0600 on first use; never commit it\n",
        &inputs.replace(
            "6b5b5fe2b4d8d0cbda3bde6e3ec0ad53f3e4bde30b1d6ddd2b32b89a97d1c33d",
            &sha,
        ),
        1,
    );
    assert_ne!(with, spec, "the spec's token_file line moved");
    std::fs::write(&env.spec, &with).expect("write spec");

    let o = cluster(&env, &["--json", "--update-lock"]);
    let shown = text(&o);
    let _ = ok_json(&o);
    assert!(!shown.contains(PASSWORD), "{shown}");
    let inventory = std::fs::read_to_string(env.out.join("inventory.json")).expect("inventory");
    assert!(!inventory.contains(PASSWORD), "{inventory}");
    let lock = std::fs::read_to_string(env.root.join("cluster.lock")).expect("lock");
    assert!(!lock.contains(PASSWORD), "{lock}");
    for node in NODES {
        let ud = iso_file(&env.out.join(format!("{node}-seed.iso")), "user-data");
        assert!(
            ud.contains(PASSWORD),
            "{node}: the password reaches user-data"
        );
        assert_eq!(
            ud.contains("/var/lib/rancher/k3s/server/manifests/ns.yaml"),
            node == NODES[0],
            "{node}: manifests on servers only"
        );
        if node != NODES[0] {
            assert!(
                ud.contains("server: https://api.lab.internal:6443"),
                "{node}: {ud}"
            );
        }
    }

    // The password file is gone: exit 2, the field and the file, nothing new written.
    std::fs::remove_file(env.root.join("creds/registry")).expect("rm");
    let before = snapshot(&env.out);
    let o = cluster(&env, &["--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("auth.password_file"), "{t}");
    assert!(t.contains("creds/registry: does not exist"), "{t}");
    assert!(o.stdout.is_empty(), "{t}");
    assert_eq!(snapshot(&env.out), before, "nothing rewritten");
}
