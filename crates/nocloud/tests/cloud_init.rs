//! Real oracles on the scenario specs in `recipes/clusters/`:
//! - `cloud-init schema --config-file` accepts every user-data,
//! - `cloud-init devel net-convert … -O netplan` converts every network-config (and the result
//!   carries the node's addresses and MAC),
//! - PyYAML (a YAML 1.1 reader, what cloud-init itself uses) reads every document back with the
//!   values we meant: strings stay strings, the embedded k3s config.yaml has the right keys.
//!
//! These need Debian's `cloud-init` package (`apt-get install -y cloud-init`, done by `.ci/run`).
//! A missing oracle is a failure, not a skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_nocloud::{ClusterSpec, NodeSeed, Token, render_all};

const CLOUD_INIT: &str = "/usr/bin/cloud-init";
/// Debian's python (has `yaml` and `cloudinit`), not whatever `python3` is first on PATH.
const PYTHON: &str = "/usr/bin/python3";
const TOKEN: &str = "K10-test-token-1b2c3d4e5f-must-not-leak";

pub const SCENARIOS: &[&str] = &[
    "libvirt-3node.yaml",
    "dualstack-cilium.yaml",
    "raspi-dualstack.yaml",
    "observability.yaml",
    "ha-3server.yaml",
    "private-registry.yaml",
];

fn recipes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/clusters")
}

fn require(tool: &str) {
    assert!(
        Path::new(tool).exists(),
        "test oracle {tool} is missing: install Debian's cloud-init (apt-get install -y cloud-init)"
    );
}

fn load(name: &str) -> ClusterSpec {
    let spec = ClusterSpec::load(&recipes().join(name)).expect("scenario spec loads");
    spec.validate().expect("scenario spec is valid");
    spec
}

fn render(name: &str) -> (ClusterSpec, Vec<NodeSeed>) {
    let spec = load(name);
    let seeds = render_all(&spec, &Token::new(TOKEN)).expect("render");
    (spec, seeds)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    text
}

/// Writes `data` to `dir/name` and runs `cloud-init schema --config-file` on it, which must
/// succeed; returns its output.
fn schema(dir: &std::path::Path, name: &str, data: &[u8]) -> String {
    let f = dir.join(name);
    std::fs::write(&f, data).expect("write");
    run(Command::new(CLOUD_INIT)
        .arg("schema")
        .arg("--config-file")
        .arg(&f))
}

#[test]
fn every_user_data_passes_cloud_init_schema() {
    require(CLOUD_INIT);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    let mut vendor = 0;
    for sc in SCENARIOS {
        let (_, seeds) = render(sc);
        for s in &seeds {
            let out = schema(dir.path(), &format!("{}-user-data", s.node), &s.user_data);
            assert!(out.contains("Valid cloud-config"), "{sc}/{}: {out}", s.node);
            checked += 1;
            if let Some(vd) = &s.vendor_data {
                let out = schema(dir.path(), &format!("{}-vendor-data", s.node), vd);
                assert!(out.contains("Valid cloud-config"), "{sc}/{}: {out}", s.node);
                vendor += 1;
            }
        }
    }
    assert_eq!(checked, 3 + 3 + 2 + 2 + 4 + 2);
    assert_eq!(vendor, 2, "observability ships vendor-data on both nodes");
}

#[test]
fn schema_oracle_rejects_a_broken_user_data() {
    // The oracle can fail: a wrongly typed runcmd is refused.
    require(CLOUD_INIT);
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("bad");
    std::fs::write(&f, "#cloud-config\nruncmd: 5\n").expect("write");
    let out = Command::new(CLOUD_INIT)
        .arg("schema")
        .arg("--config-file")
        .arg(&f)
        .output()
        .expect("run");
    assert!(!out.status.success());
}

#[test]
fn every_network_config_converts_to_netplan() {
    require(CLOUD_INIT);
    let dir = tempfile::tempdir().expect("tempdir");
    for sc in SCENARIOS {
        let (spec, seeds) = render(sc);
        for s in &seeds {
            let node = spec.node(&s.node).expect("node");
            let f = dir.path().join(format!("{}-network-config", s.node));
            std::fs::write(&f, &s.network_config).expect("write");
            for kind in ["netplan", "networkd"] {
                let out = dir.path().join(format!("{}-{kind}", s.node));
                run(Command::new(CLOUD_INIT)
                    .args([
                        "devel",
                        "net-convert",
                        "-k",
                        "yaml",
                        "-D",
                        "ubuntu",
                        "-O",
                        kind,
                        "-p",
                    ])
                    .arg(&f)
                    .arg("-d")
                    .arg(&out));
                if kind != "netplan" {
                    continue;
                }
                let np = std::fs::read(out.join("etc/netplan/50-cloud-init.yaml"))
                    .expect("net-convert wrote etc/netplan/50-cloud-init.yaml");
                // Read netplan's file back with the YAML 1.1 reader.
                let np = pyyaml_json(&np, false);
                let eths = np["network"]["ethernets"].as_object().expect("ethernets");
                assert_eq!(eths.len(), 1, "{np}");
                let eth = eths.values().next().expect("eth");
                let addrs = eth["addresses"].as_array().expect("addresses");
                let has = |a: &str| {
                    addrs
                        .iter()
                        .any(|x| x.as_str().is_some_and(|x| x.starts_with(&format!("{a}/"))))
                };
                assert!(has(&node.ipv4.to_string()), "{sc}/{}: {np}", s.node);
                if let Some(v6) = &node.ipv6 {
                    assert!(has(&v6.to_string()), "{sc}/{}: {np}", s.node);
                }
                match &node.mac {
                    Some(mac) => assert_eq!(eth["match"]["macaddress"], mac.to_string(), "{np}"),
                    None => assert_eq!(
                        eth["match"]["name"],
                        spec.cluster.network.interface.as_deref().unwrap_or(""),
                        "{np}"
                    ),
                }
                let routes = eth["routes"].as_array().expect("routes");
                assert!(
                    routes
                        .iter()
                        .any(|r| r["via"] == spec.cluster.network.ipv4.gateway.to_string()),
                    "{np}"
                );
                assert!(eth.get("gateway4").is_none(), "{np}");
            }
        }
    }
}

/// Parse `text` with PyYAML (YAML 1.1) and print it back as JSON.
fn pyyaml_json(text: &[u8], strip_header: bool) -> serde_json::Value {
    require(PYTHON);
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("doc.yaml");
    std::fs::write(&f, text).expect("write");
    let script = format!(
        "import json,sys,yaml\n\
         t=open(sys.argv[1]).read()\n\
         assert (not {strip}) or t.startswith('#cloud-config\\n'), 'missing header'\n\
         print(json.dumps(yaml.safe_load(t), default=str))",
        strip = if strip_header { "True" } else { "False" }
    );
    let out = run(Command::new(PYTHON).arg("-c").arg(script).arg(&f));
    serde_json::from_str(out.lines().last().unwrap_or("")).expect("json from pyyaml")
}

/// The k3s config (the first of `write_files`) of parsed user-data, parsed by PyYAML.
fn k3s_config(ud: &serde_json::Value) -> serde_json::Value {
    let content = ud["write_files"][0]["content"].as_str().expect("content");
    pyyaml_json(content.as_bytes(), false)
}

/// [`k3s_config`] of the first seed of `scenario`.
fn first_k3s_config(scenario: &str) -> serde_json::Value {
    let (_, seeds) = render(scenario);
    k3s_config(&pyyaml_json(&seeds[0].user_data, true))
}

#[test]
fn pyyaml_reads_back_what_we_meant() {
    for sc in SCENARIOS {
        let (spec, seeds) = render(sc);
        let first = spec.first_server().expect("server");
        let servers = spec.servers().count();
        for s in &seeds {
            let node = spec.node(&s.node).expect("node");
            let md = pyyaml_json(&s.meta_data, false);
            assert_eq!(md["instance-id"], s.instance_id.as_str());
            assert_eq!(md["local-hostname"], s.node.as_str());

            let ud = pyyaml_json(&s.user_data, true);
            assert_eq!(ud["hostname"], s.node.as_str());
            assert_eq!(ud["preserve_hostname"], false);
            let wf = &ud["write_files"][0];
            assert_eq!(wf["path"], "/etc/rancher/k3s/config.yaml");
            assert_eq!(wf["permissions"], "0600", "permissions must stay a string");
            assert_eq!(wf["owner"], "root:root");
            let cfg = k3s_config(&ud);
            assert_eq!(cfg["token"], TOKEN);
            let want_ip = match &node.ipv6 {
                Some(v6) => format!("{},{v6}", node.ipv4),
                None => node.ipv4.to_string(),
            };
            assert_eq!(cfg["node-ip"], want_ip.as_str());
            if node.name == first.name {
                assert!(cfg.get("server").is_none());
                assert_eq!(
                    cfg.get("cluster-init").cloned(),
                    (servers > 1).then_some(true.into())
                );
            } else {
                let want = match &spec.cluster.k3s.server_url {
                    Some(url) => url.clone(),
                    None => format!("https://{}:6443", first.ipv4),
                };
                assert_eq!(cfg["server"], want.as_str());
                assert!(cfg.get("cluster-init").is_none());
            }
            // Registries on every node, manifests on servers only, every file root's and 0600.
            let files = ud["write_files"].as_array().expect("write_files");
            let paths: Vec<&str> = files.iter().filter_map(|f| f["path"].as_str()).collect();
            let mut want = vec!["/etc/rancher/k3s/config.yaml"];
            if !spec.cluster.k3s.registries.is_empty() {
                want.push("/etc/rancher/k3s/registries.yaml");
            }
            let manifests: Vec<String> = spec
                .cluster
                .k3s
                .manifests
                .iter()
                .map(|m| {
                    format!(
                        "{}/{}",
                        kiln_nocloud::spec::MANIFESTS_DIR,
                        m.file_name().expect("name")
                    )
                })
                .collect();
            if node.role == kiln_nocloud::Role::Server {
                want.extend(manifests.iter().map(String::as_str));
            }
            assert_eq!(paths, want, "{sc}/{}", s.node);
            for f in files {
                assert_eq!(f["permissions"], "0600");
                assert_eq!(f["owner"], "root:root");
            }
            if node.role == kiln_nocloud::Role::Server {
                let last = &files[files.len() - manifests.len()..];
                for (f, m) in last.iter().zip(&spec.cluster.k3s.manifests) {
                    let bytes = std::fs::read(spec.input_path(&m.source)).expect("manifest");
                    let got = f["content"].as_str().expect("manifest content");
                    assert_eq!(got.as_bytes(), &bytes[..], "{sc}/{}", s.node);
                }
            }
            for (k, v) in &node.labels {
                let want = format!("{k}={v}");
                assert!(
                    cfg["node-label"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == want.as_str())),
                    "{cfg}"
                );
            }
            for t in &node.taints {
                assert!(
                    cfg["node-taint"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == t.as_str()))
                );
            }
            let runcmd = ud["runcmd"].as_array().expect("runcmd");
            assert_eq!(
                runcmd[0],
                serde_json::json!(["hostnamectl", "set-hostname", s.node])
            );
            let install = runcmd[2].as_array().expect("install argv");
            assert!(
                install
                    .iter()
                    .any(|x| x == "INSTALL_K3S_SKIP_DOWNLOAD=true")
            );
            assert!(
                install
                    .iter()
                    .any(|x| x
                        == format!("INSTALL_K3S_VERSION={}", spec.cluster.k3s.version).as_str())
            );
            assert!(
                install
                    .iter()
                    .any(|x| x == format!("INSTALL_K3S_EXEC={}", node.role.as_str()).as_str())
            );
            assert!(
                install
                    .iter()
                    .any(|x| x == kiln_nocloud::K3S_INSTALL_SCRIPT)
            );

            let nc = pyyaml_json(&s.network_config, false);
            assert_eq!(nc["network"]["version"], 2);
            let eths = nc["network"]["ethernets"].as_object().expect("ethernets");
            let eth = eths.values().next().expect("one ethernet");
            for dns in &spec.cluster.network.dns {
                assert!(
                    eth["nameservers"]["addresses"]
                        .as_array()
                        .expect("dns")
                        .iter()
                        .any(|x| x == dns.to_string().as_str())
                );
            }
        }
    }
    // The dual-stack scenario's extra keys arrive typed.
    let cfg = first_k3s_config("dualstack-cilium.yaml");
    assert_eq!(cfg["flannel-backend"], "none");
    assert_eq!(cfg["disable-network-policy"], true);
    assert_eq!(cfg["disable"], serde_json::json!(["traefik", "servicelb"]));
    assert_eq!(cfg["cluster-cidr"], "10.42.0.0/16,fd22:2025:6a6a:42::/104");
    // ha: a "0644" mode stays a string; the registration address is in every server's tls-san.
    let cfg = first_k3s_config("ha-3server.yaml");
    assert_eq!(cfg["write-kubeconfig-mode"], "0644");
    let (_, seeds) = render("ha-3server.yaml");
    for s in seeds
        .iter()
        .filter(|s| s.role == kiln_nocloud::Role::Server)
    {
        let cfg = k3s_config(&pyyaml_json(&s.user_data, true));
        let sans = cfg["tls-san"].as_array().expect("tls-san");
        assert!(
            sans.iter().any(|x| x == "k8s.home.arpa"),
            "{}: {cfg}",
            s.node
        );
    }
    // private-registry: PyYAML reads registries.yaml back as k3s will.
    let (_, seeds) = render("private-registry.yaml");
    let ud = pyyaml_json(&seeds[1].user_data, true);
    let reg = pyyaml_json(
        ud["write_files"][1]["content"]
            .as_str()
            .expect("registries.yaml")
            .as_bytes(),
        false,
    );
    assert_eq!(
        reg,
        serde_json::json!({
            "mirrors": {
                "docker.io": {
                    "endpoint": ["https://registry.sites.internal:5000"],
                    "rewrite": { "^library/(.*)": "mirror/library/$1" },
                },
                "registry.sites.internal:5000": {
                    "endpoint": ["https://registry.sites.internal:5000"],
                },
            },
            "configs": {
                "registry.sites.internal:5000": {
                    "auth": {
                        "username": "sites-pull",
                        "password": "FAKE-registry-token-for-the-example-only-0000",
                    },
                    "tls": { "ca_file": "/usr/local/share/ca-certificates/sites-ca.crt" },
                },
            },
        })
    );
}

#[test]
fn pyyaml_reads_yaml_1_1_traps_as_strings() {
    let traps = [
        "on",
        "off",
        "yes",
        "no",
        "y",
        "n",
        "~",
        "null",
        "12:30",
        "0777",
        "1_000",
        "2001-12-14",
        ".inf",
    ];
    let m: std::collections::BTreeMap<String, String> = traps
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("k{i:02}"), (*t).to_owned()))
        .collect();
    let text = kiln_nocloud::yaml::to_string(&m, "traps").expect("yaml");
    let back = pyyaml_json(text.as_bytes(), false);
    for (i, t) in traps.iter().enumerate() {
        assert_eq!(
            back[format!("k{i:02}")],
            *t,
            "PyYAML read {t:?} as something else:\n{text}"
        );
    }
}

#[test]
fn rendering_is_deterministic_and_instance_id_tracks_content() {
    for sc in SCENARIOS {
        let (_, a) = render(sc);
        let (_, b) = render(sc);
        assert_eq!(a, b, "{sc}: two renders differ");
        let ids: std::collections::BTreeSet<_> = a.iter().map(|s| s.instance_id.clone()).collect();
        assert_eq!(ids.len(), a.len(), "instance ids are unique per node");
    }
    let spec = load("libvirt-3node.yaml");
    let a = render_all(&spec, &Token::new(TOKEN)).expect("render");
    let b = render_all(&spec, &Token::new("another-token")).expect("render");
    assert_ne!(
        a[0].instance_id, b[0].instance_id,
        "new seed content → new instance-id"
    );
    assert!(a[0].instance_id.starts_with("k3s-cp-01-"));
    let mut spec2 = spec.clone();
    spec2.nodes[1].ipv4 = std::net::Ipv4Addr::new(192, 168, 122, 21);
    let c = render_all(&spec2, &Token::new(TOKEN)).expect("render");
    assert_eq!(a[2], c[2], "unrelated node unchanged");
    assert_ne!(a[1].instance_id, c[1].instance_id);
}

/// Many generated strings built from trap-prone pieces (YAML 1.1 bools, sexagesimals, octals,
/// floats, dates, indicators): PyYAML must read every one back as the identical string.
#[test]
fn pyyaml_reads_generated_trap_strings_back_unchanged() {
    const PIECES: &[&str] = &[
        "0",
        "1",
        "7",
        "9",
        "12",
        "60",
        ":",
        ".",
        "_",
        "-",
        "+",
        "e",
        "E",
        "x",
        "o",
        "b",
        "0x",
        "0o",
        "0b",
        "on",
        "off",
        "yes",
        "no",
        "y",
        "n",
        "Y",
        "N",
        "true",
        "false",
        "null",
        "~",
        " ",
        "#",
        "inf",
        "nan",
        ".inf",
        "-.nan",
        "2001-12-14",
        "t",
        "T",
        "Z",
        "=",
        "<<",
        "!",
        "&",
        "*",
        "%",
        "@",
        "`",
        "'",
        "\"",
        "[",
        "]",
        "{",
        "}",
        ",",
        "?",
        "|",
        ">",
        "\t",
        "é",
        "\\",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut strings = Vec::new();
    for _ in 0..3000 {
        let parts = 1 + next(4);
        let s: String = (0..parts).map(|_| PIECES[next(PIECES.len())]).collect();
        strings.push(s);
    }
    let map: std::collections::BTreeMap<String, ConfigList> =
        std::iter::once(("all".to_owned(), ConfigList(strings.clone())))
            .chain(
                strings
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (format!("k{i:04}"), ConfigList(vec![s.clone()]))),
            )
            .collect();
    let text = kiln_nocloud::yaml::to_string(&map, "generated").expect("yaml");
    let back = pyyaml_json(text.as_bytes(), false);
    let all = back["all"].as_array().expect("list");
    assert_eq!(all.len(), strings.len());
    for (i, s) in strings.iter().enumerate() {
        assert_eq!(
            all[i],
            s.as_str(),
            "list item {i}: {s:?} read back differently"
        );
        assert_eq!(back[format!("k{i:04}")][0], s.as_str(), "{s:?}");
    }
}

#[derive(serde::Serialize)]
struct ConfigList(Vec<String>);

#[test]
fn without_a_named_user_keys_go_to_the_default_user() {
    require(CLOUD_INIT);
    let text = std::fs::read_to_string(recipes().join("libvirt-3node.yaml")).expect("read");
    let text = text.replace("  user: ubuntu\n", "");
    let spec = ClusterSpec::from_yaml(&text, "nouser.yaml".as_ref()).expect("parse");
    let seeds = render_all(&spec, &Token::new(TOKEN)).expect("render");
    let ud = pyyaml_json(&seeds[0].user_data, true);
    assert_eq!(ud["users"], serde_json::json!(["default"]));
    assert_eq!(ud["ssh_authorized_keys"].as_array().map(Vec::len), Some(1));
    let with_user = render("libvirt-3node.yaml").1;
    let ud2 = pyyaml_json(&with_user[0].user_data, true);
    assert_eq!(ud2["users"][0]["name"], "ubuntu");
    assert!(ud2.get("ssh_authorized_keys").is_none());
    let dir = tempfile::tempdir().expect("tempdir");
    schema(dir.path(), "ud", &seeds[0].user_data);
}
