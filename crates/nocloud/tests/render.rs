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
