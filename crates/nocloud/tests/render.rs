//! Rendering rules that are pure logic: config layering, roles, name matching.

use kiln_nocloud::docs::ConfigValue;
use kiln_nocloud::render::{k3s_config, network_config};
use kiln_nocloud::{ClusterSpec, Token};

const SPEC: &str = r#"
cluster:
  name: lab
  k3s:
    version: v1.34.3+k3s1
    token_file: secrets/t
    config: { flannel-backend: none, disable: [traefik] }
    agent_config: { kubelet-arg: ["max-pods=50"] }
  network:
    match: name
    interface: ens3
    ipv4: { cidr: 10.1.0.0/16, gateway: 10.1.0.1 }
nodes:
  - { name: s1, role: server, ipv4: 10.1.0.10, config: { flannel-backend: vxlan } }
  - { name: s2, role: server, ipv4: 10.1.0.11 }
  - { name: a1, role: agent, ipv4: 10.1.0.20, interface: eth1 }
"#;

#[test]
fn config_layers_roles_and_ha() {
    let spec = ClusterSpec::from_yaml(SPEC, "t.yaml".as_ref()).expect("parse");
    spec.validate().expect("valid");
    let t = Token::new("tok");
    let s1 = k3s_config(&spec, &spec.nodes[0], &t);
    assert_eq!(
        s1["flannel-backend"],
        ConfigValue::from("vxlan"),
        "node config wins"
    );
    assert_eq!(s1["cluster-init"], ConfigValue::Bool(true));
    assert!(!s1.contains_key("server"));
    assert!(!s1.contains_key("kubelet-arg"));
    let s2 = k3s_config(&spec, &spec.nodes[1], &t);
    assert_eq!(s2["flannel-backend"], ConfigValue::from("none"));
    assert_eq!(s2["server"], ConfigValue::from("https://10.1.0.10:6443"));
    assert!(!s2.contains_key("cluster-init"));
    let a1 = k3s_config(&spec, &spec.nodes[2], &t);
    assert!(
        !a1.contains_key("flannel-backend"),
        "server config stays off agents"
    );
    assert!(!a1.contains_key("tls-san"));
    assert_eq!(
        a1["kubelet-arg"],
        ConfigValue::List(vec!["max-pods=50".into()])
    );
    assert_eq!(a1["server"], ConfigValue::from("https://10.1.0.10:6443"));
    assert_eq!(a1["token"], ConfigValue::from("tok"));

    let n = network_config(&spec, &spec.nodes[2]).expect("net");
    let (id, eth) = n.network.ethernets.iter().next().expect("one");
    assert_eq!(id, "eth1", "per-node interface override");
    assert_eq!(
        eth.match_.as_ref().and_then(|m| m.name.as_deref()),
        Some("eth1")
    );
    assert_eq!(eth.addresses, vec!["10.1.0.20/16".to_owned()]);
}

#[test]
fn single_server_has_no_cluster_init() {
    let y = SPEC.replace("  - { name: s2, role: server, ipv4: 10.1.0.11 }\n", "");
    let spec = ClusterSpec::from_yaml(&y, "t.yaml".as_ref()).expect("parse");
    let s1 = k3s_config(&spec, &spec.nodes[0], &Token::new("tok"));
    assert!(!s1.contains_key("cluster-init"));
    assert!(!s1.contains_key("server"));
}

/// Every shell step of runcmd parses (`sh -n`), and the network wait looks nothing up: it waits for
/// the node's own address, a default route and the spec's resolver (a reverse lookup of a static
/// private address, as an earlier version did, never succeeds on most networks).
#[test]
fn runcmd_scripts_parse_and_wait_for_the_nodes_own_address() {
    use kiln_nocloud::docs::Command as Step;
    let spec = ClusterSpec::from_yaml(
        &SPEC.replace(
            "interface: ens3\n",
            "interface: ens3\n    dns: [10.1.0.1]\n",
        ),
        "lab.yaml".as_ref(),
    )
    .unwrap();
    spec.validate().unwrap();
    let token = Token::new("t0ken-value");
    for node in &spec.nodes {
        let ud = kiln_nocloud::render::user_data(&spec, node, &token).unwrap();
        let shells: Vec<&String> = ud
            .runcmd
            .iter()
            .filter_map(|s| match s {
                Step::Shell(s) => Some(s),
                Step::Argv(_) => None,
            })
            .collect();
        assert_eq!(
            shells.len(),
            2,
            "{}: network wait and ready wait",
            node.name
        );
        for script in &shells {
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", script])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: sh -n rejects {script:?}: {}",
                node.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let wait = shells[0];
        assert!(
            wait.contains(&format!("grep -qF ' {}/'", node.ipv4)),
            "{wait}"
        );
        assert!(wait.contains("ip -4 route show default"), "{wait}");
        assert!(wait.contains("grep -qF '10.1.0.1'"), "{wait}");
        assert!(!wait.contains("getent"), "{wait}");
    }
}

/// `SPEC` made again in code with a registration address, a registry and a manifest, in `dir`.
fn inputs_spec(dir: &std::path::Path) -> ClusterSpec {
    use kiln_nocloud::{Manifest, Mirror, Registries, RegistryAuth, RegistryConfig, RegistryTls};
    use sha2::Digest;
    std::fs::create_dir_all(dir.join("secrets")).expect("mkdir");
    std::fs::create_dir_all(dir.join("m")).expect("mkdir");
    std::fs::write(dir.join("secrets/reg"), "  pull-SECRET-77 \n").expect("pw");
    std::fs::write(dir.join("m/cni.yaml"), MANIFEST).expect("manifest");
    let sha = kiln_common::digest::hex(&sha2::Sha256::digest(MANIFEST));
    let mut spec = ClusterSpec::from_yaml(SPEC, "t.yaml".as_ref()).expect("parse");
    spec.base_dir = dir.to_owned();
    let c = spec
        .cluster
        .clone()
        .with_server_url("https://k8s.lab.internal:6443")
        .with_registries(
            Registries::new()
                .with_mirror(
                    "docker.io",
                    Mirror::new(["https://reg.lab.internal:5000"]).with_rewrite("^(.*)$", "hub/$1"),
                )
                .with_config(
                    "reg.lab.internal:5000",
                    RegistryConfig::new()
                        .with_auth(RegistryAuth::new("puller", "secrets/reg"))
                        .with_tls(
                            RegistryTls::new()
                                .with_ca_file("/etc/ssl/ca.pem")
                                .with_client_cert("/etc/ssl/c.pem", "/etc/ssl/c.key"),
                        ),
                )
                .with_config(
                    "10.1.0.5",
                    RegistryConfig::new().with_tls(RegistryTls::new().insecure_skip_verify()),
                ),
        )
        .with_manifest(Manifest::new("m/cni.yaml", sha));
    spec.cluster = c;
    spec.validate().expect("valid");
    spec
}

/// Bytes a YAML emitter must keep exactly: leading spaces, a tab, trailing blanks, `: ` inside a
/// string, no final newline.
const MANIFEST: &str =
    "# cni\napiVersion: v1\nkind: ConfigMap\ndata:\n  x: \"a: b\"\n\tweird\n  trailing   \n\nend";

#[test]
fn server_url_registers_agents_and_joiners_and_is_in_every_tls_san() {
    let d = tempfile::tempdir().expect("tempdir");
    let spec = inputs_spec(d.path());
    let t = Token::new("tok");
    let s1 = k3s_config(&spec, &spec.nodes[0], &t);
    assert!(!s1.contains_key("server"), "the first server initialises");
    assert_eq!(s1["cluster-init"], ConfigValue::Bool(true));
    for n in &spec.nodes[1..] {
        let c = k3s_config(&spec, n, &t);
        assert_eq!(
            c["server"],
            ConfigValue::from("https://k8s.lab.internal:6443"),
            "{}",
            n.name
        );
    }
    for n in spec.servers() {
        let ConfigValue::List(sans) = &k3s_config(&spec, n, &t)["tls-san"] else {
            panic!("tls-san is a list")
        };
        assert!(
            sans.contains(&ConfigValue::from("k8s.lab.internal")),
            "{}: {sans:?}",
            n.name
        );
    }
    // An IPv6 address: its host without brackets, once even when tls_san lists it too.
    let mut v6 = spec.clone();
    v6.cluster.k3s.server_url = Some("https://[fd00::6443]".into());
    v6.cluster.k3s.tls_san = vec!["fd00::6443".into()];
    v6.validate().expect("valid");
    let ConfigValue::List(sans) = &k3s_config(&v6, &v6.nodes[1], &t)["tls-san"] else {
        panic!("tls-san is a list")
    };
    let n = sans
        .iter()
        .filter(|s| **s == ConfigValue::from("fd00::6443"))
        .count();
    assert_eq!(n, 1, "{sans:?}");
}

#[test]
fn registries_yaml_is_k3s_format_on_every_node_and_manifests_only_on_servers() {
    use kiln_nocloud::spec::{MANIFESTS_DIR, REGISTRIES_PATH};
    let d = tempfile::tempdir().expect("tempdir");
    let spec = inputs_spec(d.path());
    let t = Token::new("tok");
    for n in &spec.nodes {
        let ud = kiln_nocloud::render::user_data(&spec, n, &t).expect("user-data");
        let paths: Vec<&str> = ud.write_files.iter().map(|f| f.path.as_str()).collect();
        let mut want = vec![kiln_nocloud::render::K3S_CONFIG_PATH, REGISTRIES_PATH];
        let manifest = format!("{MANIFESTS_DIR}/cni.yaml");
        if n.role == kiln_nocloud::Role::Server {
            want.push(&manifest);
        }
        assert_eq!(paths, want, "{}", n.name);
        for f in &ud.write_files {
            assert_eq!(f.permissions.as_deref(), Some("0600"));
            assert_eq!(f.owner.as_deref(), Some("root:root"));
        }
        let reg: serde_json::Value =
            serde_saphyr::from_str(&ud.write_files[1].content).expect("registries.yaml is YAML");
        assert_eq!(
            reg,
            serde_json::json!({
                "mirrors": {
                    "docker.io": {
                        "endpoint": ["https://reg.lab.internal:5000"],
                        "rewrite": { "^(.*)$": "hub/$1" },
                    },
                },
                "configs": {
                    "10.1.0.5": { "tls": { "insecure_skip_verify": true } },
                    "reg.lab.internal:5000": {
                        "auth": { "username": "puller", "password": "pull-SECRET-77" },
                        "tls": {
                            "ca_file": "/etc/ssl/ca.pem",
                            "cert_file": "/etc/ssl/c.pem",
                            "key_file": "/etc/ssl/c.key",
                        },
                    },
                },
            })
        );
        // The serialized user-data carries the manifest's exact bytes through YAML.
        let seed = kiln_nocloud::render_node(&spec, n, &t).expect("render");
        let back: kiln_nocloud::CloudConfig =
            serde_saphyr::from_slice(&seed.user_data).expect("user-data reads back");
        if n.role == kiln_nocloud::Role::Server {
            assert_eq!(back.write_files[2].content.as_bytes(), MANIFEST.as_bytes());
        }
        // The password is only in the user-data bytes.
        assert!(String::from_utf8_lossy(&seed.user_data).contains("pull-SECRET-77"));
        for shown in [
            format!("{seed:?}"),
            format!("{spec:?}"),
            String::from_utf8_lossy(&seed.meta_data).into_owned(),
            String::from_utf8_lossy(&seed.network_config).into_owned(),
            spec.to_yaml().expect("yaml"),
        ] {
            assert!(!shown.contains("SECRET"), "{shown}");
        }
    }
    // Without registries or manifests nothing but config.yaml is written (old seeds unchanged).
    let plain = ClusterSpec::from_yaml(SPEC, "t.yaml".as_ref()).expect("parse");
    let ud = kiln_nocloud::render::user_data(&plain, &plain.nodes[0], &t).expect("user-data");
    assert_eq!(ud.write_files.len(), 1);
    assert_eq!(
        kiln_nocloud::render::registries_yaml(&plain).expect("none"),
        None
    );
}
