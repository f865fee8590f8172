//! `kiln seed` end to end, running the built binary on the scenario specs.
//! Oracles: the files on disk (modes, bytes), `cloud-init schema` on what the CLI wrote, and the
//! token file's content searched for in everything the CLI prints.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{kiln, text};
const SCENARIOS: &[&str] = &[
    "libvirt-3node.yaml",
    "dualstack-cilium.yaml",
    "raspi-dualstack.yaml",
    "observability.yaml",
    "ha-3server.yaml",
    "private-registry.yaml",
];

/// The fake registry password `private-registry.yaml` reads from `secrets/registry-password`.
const REGISTRY_PASSWORD: &str = "FAKE-registry-token-for-the-example-only-0000";

fn recipe(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("recipes/clusters")
        .join(name)
}

/// Copy a scenario spec into `dir` (so its token file is created there, not in the repo), with
/// the manifests and the registry password file the scenarios name.
fn stage(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(recipe(name), &p).expect("copy spec");
    for f in [
        "manifests/cilium.yaml",
        "manifests/flux-system.yaml",
        "secrets/registry-password",
    ] {
        let to = dir.join(f);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(recipe(f), to).expect("copy input");
    }
    p
}

fn seed(spec: &Path, out: &Path, format: &str, json: bool) -> Output {
    let mut a: Vec<&std::ffi::OsStr> = vec![
        "seed".as_ref(),
        spec.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--format".as_ref(),
        format.as_ref(),
    ];
    if json {
        a.push("--json".as_ref());
    }
    kiln(&a)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

fn token_of(spec_dir: &Path, spec: &Path) -> String {
    let s = kiln_nocloud::ClusterSpec::load(spec).expect("load");
    let p = spec_dir.join(
        s.cluster
            .k3s
            .token_file
            .expect("the spec names a token file"),
    );
    assert_eq!(mode(&p), 0o600, "token file {} mode", p.display());
    std::fs::read_to_string(p).expect("token").trim().to_owned()
}

#[test]
fn dir_seeds_for_every_scenario_never_leak_the_token_and_are_reproducible() {
    for sc in SCENARIOS {
        let d = tempfile::tempdir().expect("tempdir");
        let spec = stage(d.path(), sc);
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let oa = seed(&spec, &a, "dir", true);
        assert!(oa.status.success(), "{sc}: {}", text(&oa));
        let token = token_of(d.path(), &spec);
        assert!(token.len() >= 32);
        let ob = seed(&spec, &b, "dir", false);
        assert!(ob.status.success(), "{sc}: {}", text(&ob));
        for o in [&oa, &ob] {
            assert!(!text(o).contains(&token), "{sc}: token printed");
            assert!(
                !text(o).contains(REGISTRY_PASSWORD),
                "{sc}: password printed"
            );
        }
        let summary: serde_json::Value =
            serde_json::from_slice(&oa.stdout).expect("--json is JSON");
        let nodes = summary["nodes"].as_array().expect("nodes");
        assert!(!nodes.is_empty());
        for n in nodes {
            let name = n["node"].as_str().expect("node");
            assert!(
                n["instance_id"]
                    .as_str()
                    .expect("id")
                    .starts_with(&format!("{name}-"))
            );
            assert!(matches!(n["role"].as_str(), Some("server" | "agent")));
            assert_eq!(n["sha256"].as_str().expect("sha").len(), 64);
            let da = a.join(format!("{name}-seed"));
            let db = b.join(format!("{name}-seed"));
            assert_eq!(Path::new(n["path"].as_str().expect("path")), da);
            let ud = std::fs::read_to_string(da.join("user-data")).expect("user-data");
            assert!(ud.contains(&token), "the token does reach user-data");
            assert_eq!(
                ud.contains(REGISTRY_PASSWORD),
                *sc == "private-registry.yaml",
                "{sc}: the registry password reaches only its spec's user-data"
            );
            for f in ["meta-data", "network-config", "user-data"] {
                assert_eq!(mode(&da.join(f)), 0o600, "{sc}/{name}/{f}");
                assert_eq!(
                    std::fs::read(da.join(f)).expect("a"),
                    std::fs::read(db.join(f)).expect("b"),
                    "{sc}/{name}/{f} differs between runs"
                );
            }
            // Only the observability scenario ships vendor-data.
            assert_eq!(
                da.join("vendor-data").exists(),
                *sc == "observability.yaml",
                "{sc}"
            );
        }
        // No stray temporaries.
        for e in std::fs::read_dir(&a).expect("ls") {
            let n = e.expect("entry").file_name();
            assert!(n.to_string_lossy().ends_with("-seed"), "{n:?}");
        }
    }
}

#[test]
fn cli_user_data_passes_cloud_init_schema() {
    let ci = Path::new("/usr/bin/cloud-init");
    assert!(ci.exists(), "oracle missing: apt-get install -y cloud-init");
    let d = tempfile::tempdir().expect("tempdir");
    let spec = stage(d.path(), "ha-3server.yaml");
    let out = d.path().join("out");
    let o = seed(&spec, &out, "dir", false);
    assert!(o.status.success(), "{}", text(&o));
    let ud = out.join("k3s-server-2-seed/user-data");
    let s = Command::new(ci)
        .arg("schema")
        .arg("--config-file")
        .arg(&ud)
        .output()
        .expect("schema");
    assert!(s.status.success(), "{}", text(&s));
}

#[test]
fn bad_input_exits_2_names_every_problem_writes_nothing_and_hides_the_token() {
    let d = tempfile::tempdir().expect("tempdir");
    let good = std::fs::read_to_string(recipe("libvirt-3node.yaml")).expect("read");
    std::fs::create_dir_all(d.path().join("secrets")).expect("mkdir");
    std::fs::write(
        d.path().join("secrets/lab-token"),
        "TOPSECRET-abcdef0123456789\n",
    )
    .expect("token");
    let bad = good
        .replace("ipv4: 192.168.122.12", "ipv4: 10.9.9.9")
        .replace("name: k3s-worker-01", "name: K3S_Worker")
        .replace("\"52:54:00:00:00:12\"", "\"52:54:00:00:00:10\"");
    let spec = d.path().join("bad.yaml");
    std::fs::write(&spec, bad).expect("write");
    let out = d.path().join("out");
    let o = seed(&spec, &out, "dir", true);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("k3s-worker-02") && t.contains("10.9.9.9"), "{t}");
    assert!(t.contains("K3S_Worker"), "{t}");
    assert!(t.contains("already used"), "{t}");
    assert!(!t.contains("TOPSECRET"), "{t}");
    assert!(o.stdout.is_empty(), "nothing on stdout on error");
    assert!(!out.exists(), "nothing written on bad input");

    // Unknown key: exit 2, the file is named.
    let spec2 = d.path().join("typo.yaml");
    std::fs::write(&spec2, good.replace("  disk_size: 40G", "  disksize: 40G")).expect("write");
    let o = seed(&spec2, &out, "dir", false);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("typo.yaml"), "{}", text(&o));
    assert!(!out.exists());

    // A token pasted inline is refused without being echoed back.
    let spec3 = d.path().join("inline.yaml");
    std::fs::write(
        &spec3,
        good.replace(
            "    token_file:",
            "    token: INLINESECRET-42\n    token_file:",
        ),
    )
    .expect("write");
    let o = seed(&spec3, &out, "dir", true);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unknown field `token`"), "{}", text(&o));
    assert!(!text(&o).contains("INLINESECRET"), "{}", text(&o));
    assert!(!out.exists());

    // Missing spec file: exit 2.
    let o = seed(&d.path().join("nope.yaml"), &out, "dir", false);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// Registry credentials and manifests: a missing password file or a manifest off its pin exits 2
/// naming the spec field and the file, writes nothing and never shows the password; the password
/// reaches only the seeds' user-data, never `--json` output.
#[test]
fn registry_credentials_stay_in_user_data_and_bad_inputs_exit_2() {
    let d = tempfile::tempdir().expect("tempdir");
    let spec = stage(d.path(), "private-registry.yaml");
    let out = d.path().join("out");
    let o = seed(&spec, &out, "iso", true);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains(REGISTRY_PASSWORD), "{}", text(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(summary["nodes"].as_array().map(Vec::len), Some(2));
    for n in ["node1", "node2"] {
        let ud = isoinfo_extract(&out.join(format!("{n}-seed.iso")), "user-data");
        let ud = String::from_utf8(ud).expect("utf-8");
        assert!(
            ud.contains(REGISTRY_PASSWORD),
            "{n}: registries.yaml carries it"
        );
        assert!(ud.contains("/etc/rancher/k3s/registries.yaml"), "{n}");
        assert_eq!(
            ud.contains("/var/lib/rancher/k3s/server/manifests/flux-system.yaml"),
            n == "node1",
            "{n}: manifests go to servers only"
        );
    }

    // The password file is missing: exit 2, the field and the path, nothing written.
    let out2 = d.path().join("out2");
    std::fs::remove_file(d.path().join("secrets/registry-password")).expect("rm");
    let o = seed(&spec, &out2, "dir", true);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains(
            "cluster.k3s.registries.configs[\"registry.sites.internal:5000\"].auth.password_file"
        ),
        "{t}"
    );
    assert!(
        t.contains("secrets/registry-password: does not exist"),
        "{t}"
    );
    assert!(o.stdout.is_empty(), "nothing on stdout on error");
    assert!(!out2.exists(), "nothing written on bad input");

    // A manifest off its pin: exit 2, the file, the pinned and the actual digest; the password
    // (back in place) is not in the message.
    std::fs::copy(
        recipe("secrets/registry-password"),
        d.path().join("secrets/registry-password"),
    )
    .expect("copy");
    std::fs::write(d.path().join("manifests/flux-system.yaml"), "kind: List\n").expect("edit");
    let o = seed(&spec, &out2, "dir", false);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("cluster.k3s.manifests[0].source"), "{t}");
    assert!(t.contains("flux-system.yaml"), "{t}");
    assert!(
        t.contains("808edde0c07ee04a4d27c6050e58ed26b9972cafddb1a5f804508666bc6e9a92"),
        "the pin: {t}"
    );
    assert!(!t.contains(REGISTRY_PASSWORD), "{t}");
    assert!(!out2.exists(), "nothing written on bad input");
}

#[test]
fn existing_token_file_is_used_not_replaced() {
    let d = tempfile::tempdir().expect("tempdir");
    let spec = stage(d.path(), "observability.yaml");
    std::fs::create_dir_all(d.path().join("secrets")).expect("mkdir");
    let tp = d.path().join("secrets/sites-token");
    std::fs::write(&tp, "K10fixedtoken0123456789abcdef\n").expect("write");
    let out = d.path().join("out");
    let o = seed(&spec, &out, "dir", true);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("K10fixedtoken"));
    assert_eq!(
        std::fs::read_to_string(&tp).expect("read"),
        "K10fixedtoken0123456789abcdef\n"
    );
    let ud = std::fs::read_to_string(out.join("node2-seed/user-data")).expect("ud");
    assert!(ud.contains("token: K10fixedtoken0123456789abcdef"), "{ud}");
}

/// Read `/name` out of an ISO with isoinfo (Rock Ridge names).
fn isoinfo_extract(iso: &Path, name: &str) -> Vec<u8> {
    let tool = Path::new("/usr/bin/isoinfo");
    assert!(
        tool.exists(),
        "oracle missing: apt-get install -y genisoimage"
    );
    let o = Command::new(tool)
        .arg("-R")
        .arg("-i")
        .arg(iso)
        .arg("-x")
        .arg(format!("/{name}"))
        .output()
        .expect("isoinfo");
    assert!(o.status.success(), "isoinfo -x /{name}: {}", text(&o));
    o.stdout
}

#[test]
fn iso_seeds_hold_the_documents_and_are_reproducible() {
    for sc in SCENARIOS {
        let d = tempfile::tempdir().expect("tempdir");
        let spec = stage(d.path(), sc);
        let (dir, a, b) = (d.path().join("dir"), d.path().join("a"), d.path().join("b"));
        for (out, fmt) in [(&dir, "dir"), (&a, "iso"), (&b, "iso")] {
            let o = seed(&spec, out, fmt, true);
            assert!(o.status.success(), "{sc} {fmt}: {}", text(&o));
        }
        let token = token_of(d.path(), &spec);
        let o = seed(&spec, &a, "iso", true);
        assert!(!text(&o).contains(&token));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        for n in summary["nodes"].as_array().expect("nodes") {
            let name = n["node"].as_str().expect("node");
            let iso_a = a.join(format!("{name}-seed.iso"));
            let iso_b = b.join(format!("{name}-seed.iso"));
            assert_eq!(mode(&iso_a), 0o600);
            let bytes = std::fs::read(&iso_a).expect("iso");
            assert_eq!(
                bytes,
                std::fs::read(&iso_b).expect("iso b"),
                "{sc}/{name}: ISOs differ"
            );
            let sum = Command::new("/usr/bin/sha256sum")
                .arg(&iso_a)
                .output()
                .expect("sha256sum");
            let sum = String::from_utf8_lossy(&sum.stdout);
            assert_eq!(n["sha256"], sum.split_whitespace().next().unwrap_or(""));
            for f in ["user-data", "meta-data", "network-config"] {
                let want =
                    std::fs::read(dir.join(format!("{name}-seed")).join(f)).expect("dir file");
                assert_eq!(
                    isoinfo_extract(&iso_a, f),
                    want,
                    "{sc}/{name}: /{f} in the ISO"
                );
            }
        }
    }
}

fn blkid(p: &Path) -> String {
    let tool = Path::new("/usr/sbin/blkid");
    assert!(tool.exists(), "oracle missing: blkid (util-linux)");
    let o = Command::new(tool).arg("-p").arg(p).output().expect("blkid");
    assert!(o.status.success(), "blkid {}: {}", p.display(), text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn vfat_seeds_pass_fsck_and_mtools_reads_the_documents() {
    for tool in ["/usr/sbin/fsck.vfat", "/usr/bin/mcopy"] {
        assert!(
            Path::new(tool).exists(),
            "oracle missing: {tool} (dosfstools, mtools)"
        );
    }
    let d = tempfile::tempdir().expect("tempdir");
    let spec = stage(d.path(), "dualstack-cilium.yaml");
    let (dir, a, b) = (d.path().join("dir"), d.path().join("a"), d.path().join("b"));
    for (out, fmt) in [(&dir, "dir"), (&a, "vfat"), (&b, "vfat")] {
        let o = seed(&spec, out, fmt, false);
        assert!(o.status.success(), "{fmt}: {}", text(&o));
    }
    for name in ["ds-cp-01", "ds-worker-01", "ds-worker-02"] {
        let img = a.join(format!("{name}-seed.img"));
        assert_eq!(mode(&img), 0o600);
        assert_eq!(
            std::fs::read(&img).expect("a"),
            std::fs::read(b.join(format!("{name}-seed.img"))).expect("b"),
            "{name}: vfat images differ between runs"
        );
        let f = Command::new("/usr/sbin/fsck.vfat")
            .arg("-n")
            .arg(&img)
            .output()
            .expect("fsck");
        assert!(f.status.success(), "fsck.vfat -n {name}: {}", text(&f));
        let id = blkid(&img);
        assert!(
            id.contains("LABEL=\"CIDATA\"") && id.contains("TYPE=\"vfat\""),
            "{id}"
        );
        for file in ["user-data", "meta-data", "network-config"] {
            let o = Command::new("/usr/bin/mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-n")
                .arg("-i")
                .arg(&img)
                .arg(format!("::{file}"))
                .arg("-")
                .output()
                .expect("mcopy");
            assert!(o.status.success(), "mcopy {file}: {}", text(&o));
            let want = std::fs::read(dir.join(format!("{name}-seed")).join(file)).expect("dir");
            assert_eq!(o.stdout, want, "{name}: {file} in the vfat image");
        }
    }
}

/// cloud-init's own NoCloud datasource (Debian's python) reads a seed directory.
pub(crate) const NOCLOUD_PY: &str = r#"
import json, sys
from cloudinit import helpers
from cloudinit.sources.DataSourceNoCloud import DataSourceNoCloud
root = sys.argv[1]
ds = DataSourceNoCloud(sys_cfg={}, distro=None,
                       paths=helpers.Paths({'cloud_dir': root, 'run_dir': root + '/run'}))
assert ds._get_data(), 'NoCloud found no seed'
parts = [p.get_content_type() for p in ds.get_userdata().walk()]
print(json.dumps({'instance_id': ds.get_instance_id(),
                  'hostname': ds.get_hostname().hostname,
                  'network': ds.network_config,
                  'parts': parts,
                  'vendor': bool(ds.vendordata_raw)}))
"#;

#[test]
fn cloud_init_nocloud_datasource_reads_every_iso_seed() {
    let py = Path::new("/usr/bin/python3");
    assert!(
        Path::new("/usr/bin/cloud-init").exists() && py.exists(),
        "oracle missing: apt-get install -y cloud-init"
    );
    for sc in SCENARIOS {
        let d = tempfile::tempdir().expect("tempdir");
        let spec = stage(d.path(), sc);
        let out = d.path().join("out");
        let o = seed(&spec, &out, "iso", true);
        assert!(o.status.success(), "{sc}: {}", text(&o));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        for n in summary["nodes"].as_array().expect("nodes") {
            let name = n["node"].as_str().expect("node");
            let iso = out.join(format!("{name}-seed.iso"));
            // What a VM would see: the files of the ISO, as cloud-init's seed directory.
            let root = d.path().join(format!("cloud-{name}"));
            let seed_dir = root.join("seed/nocloud");
            std::fs::create_dir_all(&seed_dir).expect("mkdir");
            for f in ["user-data", "meta-data", "network-config"] {
                std::fs::write(seed_dir.join(f), isoinfo_extract(&iso, f)).expect("write");
            }
            let has_vendor = *sc == "observability.yaml";
            if has_vendor {
                let vd = isoinfo_extract(&iso, "vendor-data");
                std::fs::write(seed_dir.join("vendor-data"), vd).expect("write");
            }
            let o = Command::new(py)
                .arg("-c")
                .arg(NOCLOUD_PY)
                .arg(&root)
                .output()
                .expect("python");
            assert!(o.status.success(), "{sc}/{name}: {}", text(&o));
            let got: serde_json::Value =
                serde_json::from_slice(o.stdout.trim_ascii()).expect("datasource json");
            assert_eq!(got["instance_id"], n["instance_id"], "{sc}/{name}");
            assert_eq!(got["hostname"], name);
            assert_eq!(got["network"]["network"]["version"], 2);
            assert_eq!(
                got["parts"],
                serde_json::json!(["multipart/mixed", "text/cloud-config"])
            );
            assert_eq!(
                got["vendor"], has_vendor,
                "{sc}/{name}: vendor-data seen by NoCloud"
            );
        }
    }
}
