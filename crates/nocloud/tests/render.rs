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
