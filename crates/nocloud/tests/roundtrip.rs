//! The cluster spec made in code: it equals the same spec read from YAML, it is checked with the
//! same messages and field paths, and every valid spec serialises (YAML, JSON) and reads back equal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use kiln_nocloud::spec::{Boot, ByteSize, Cidr, Cluster, ClusterSpec, Network, NodeSpec, Subnet};
use kiln_nocloud::{
    ConfigValue, Error, Manifest, Mirror, Problems, Registries, RegistryAuth, RegistryConfig,
    RegistryTls,
};
use proptest::prelude::*;

const YAML: &str = r#"
cluster:
  name: lab
  k3s: { version: v1.34.3+k3s1 }
  network:
    interface: ens3
    ipv4: { cidr: 192.168.122.0/24, gateway: 192.168.122.1 }
    dns: [192.168.122.1]
  disk_size: 20G
nodes:
  - { name: cp-01, role: server, ipv4: 192.168.122.10, mac: "52:54:00:00:00:10" }
  - { name: w-01, role: agent, ipv4: 192.168.122.11, mac: "52:54:00:00:00:11", disk_size: 512M }
"#;

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().expect("ipv4")
}

fn in_code() -> ClusterSpec {
    let net = Network::new(Subnet::new(
        "192.168.122.0/24".parse().expect("cidr"),
        ip4("192.168.122.1"),
    ))
    .with_interface("ens3")
    .with_dns(IpAddr::V4(ip4("192.168.122.1")));
    ClusterSpec::new(
        Cluster::new("lab", "v1.34.3+k3s1", net).with_disk_size(ByteSize::gib(20)),
        vec![
            NodeSpec::server("cp-01", ip4("192.168.122.10"))
                .with_mac("52:54:00:00:00:10".parse().expect("mac")),
            NodeSpec::agent("w-01", ip4("192.168.122.11"))
                .with_mac("52:54:00:00:00:11".parse().expect("mac"))
                .with_disk_size(ByteSize::mib(512)),
        ],
    )
}

fn invalid(r: Result<impl std::fmt::Debug, Error>) -> Problems {
    match r {
        Err(Error::Invalid(p)) => p,
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn made_in_code_equals_the_yaml_and_needs_no_token_file() {
    let code = in_code();
    let file = ClusterSpec::from_yaml(YAML, "lab.yaml".as_ref()).expect("yaml");
    assert_eq!(code, file);
    assert_eq!(code.token_path(), None);
    code.validate().expect("valid without a token file");
    assert_eq!(code.disk_size_of(&code.nodes[1]), Some(512 << 20));
    assert_eq!(code.cluster.wait.network, Duration::from_secs(300));
}

#[test]
fn made_in_code_is_checked_with_the_yaml_messages_and_paths() {
    let mut code = in_code();
    code.cluster.network.ipv4.gateway = ip4("10.0.0.1");
    code.nodes[1].mac = code.nodes[0].mac;
    code.nodes[1].ipv4 = ip4("192.168.122.255");
    code.cluster.wait.ready = Duration::from_millis(1500);
    let yaml = YAML
        .replace("gateway: 192.168.122.1", "gateway: 10.0.0.1")
        .replace("52:54:00:00:00:11", "52:54:00:00:00:10")
        .replace("ipv4: 192.168.122.11", "ipv4: 192.168.122.255")
        .replace(
            "  disk_size: 20G\n",
            "  disk_size: 20G\n  wait: { ready: 1.500000000s }\n",
        );
    let from_code = invalid(code.validate());
    let from_yaml = invalid(ClusterSpec::from_yaml(&yaml, "lab.yaml".as_ref()));
    assert_eq!(from_code.list, from_yaml.list);
    let fields: Vec<&str> = from_code.list.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "cluster.network.ipv4.gateway",
            "cluster.wait.ready",
            "nodes[1].ipv4",
            "nodes[1].mac"
        ],
        "{from_code}"
    );
}

#[test]
fn typed_values_parse_with_the_spec_messages() {
    let e = "52:54:00:zz:00:10"
        .parse::<kiln_nocloud::MacAddr>()
        .expect_err("bad mac");
    assert_eq!(
        e,
        "\"52:54:00:zz:00:10\" is not a MAC address like 52:54:00:12:34:56"
    );
    let e = "10.0.0.1/24"
        .parse::<Cidr<Ipv4Addr>>()
        .expect_err("host bits");
    assert_eq!(e, "\"10.0.0.1/24\" has host bits set");
    let e = "0".parse::<ByteSize>().expect_err("zero");
    assert_eq!(e, "\"0\" is zero");
    assert_eq!(
        "52-54-00-AB-CD-EF"
            .parse::<kiln_nocloud::MacAddr>()
            .expect("mac")
            .to_string(),
        "52:54:00:ab:cd:ef"
    );
    assert_eq!(ByteSize::gib(40).to_string(), "40G");
    assert_eq!(ByteSize(4097).to_string(), "4097");
}

#[test]
fn deserialising_checks_every_value() {
    let mut json = serde_json::to_value(in_code()).expect("json");
    json["nodes"][1]["ipv4"] = "192.168.122.300".into();
    let e = serde_json::from_value::<ClusterSpec>(json).expect_err("bad address");
    assert!(
        e.to_string()
            .contains("\"w-01\": ipv4 \"192.168.122.300\" is not an IPv4 address"),
        "{e}"
    );
}

fn sha256(b: &str) -> String {
    use sha2::Digest;
    kiln_common::digest::hex(&sha2::Sha256::digest(b))
}

fn config_value() -> impl Strategy<Value = ConfigValue> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(ConfigValue::Bool),
        any::<i64>().prop_map(ConfigValue::Int),
        prop_oneof![
            Just("on".to_owned()),
            Just("0777".to_owned()),
            Just("12:30".to_owned()),
            Just("~".to_owned()),
            Just("true".to_owned()),
            "[a-z0-9 ./:=,-]{0,12}",
        ]
        .prop_map(ConfigValue::Str),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(ConfigValue::List),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..3).prop_map(ConfigValue::Map),
        ]
    })
}

fn config() -> impl Strategy<Value = std::collections::BTreeMap<String, ConfigValue>> {
    prop::collection::btree_map("[a-z][a-z-]{0,10}[a-z]", config_value(), 0..3)
}

prop_compose! {
    fn node(i: usize, v6: bool)(
        agent in any::<bool>(),
        with_mac in any::<bool>(),
        disk in prop::option::of(1u64..=u64::MAX),
        labels in prop::collection::btree_map("[a-z]{1,8}", "[a-z0-9]{0,8}", 0..3),
        taint in prop::option::of("[a-z]{1,8}"),
        config in config(),
    ) -> NodeSpec {
        let octet = u8::try_from(10 + i).unwrap_or(200);
        let name = format!("node-{i}");
        let ipv4 = Ipv4Addr::new(10, 20, 0, octet);
        let mut n = if agent && i > 0 {
            NodeSpec::agent(name, ipv4)
        } else {
            NodeSpec::server(name, ipv4)
        };
        n.mac = (with_mac || i.is_multiple_of(2)).then(|| format!("52:54:00:00:01:{octet:02x}").parse().expect("mac"));
        if v6 {
            n = n.with_ipv6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(octet)));
        }
        n.disk_size = disk.map(ByteSize);
        n.labels = labels;
        if let Some(t) = taint {
            n = n.with_taint(format!("{t}=yes:NoSchedule"));
        }
        n.config = config;
        n
    }
}

/// The manifest files a generated spec may name, with their content (written into the test's
/// directory, so `validate` finds them with their pins).
const MANIFESTS: &[(&str, &str)] = &[
    ("m/cni.yaml", "kind: HelmChart\n"),
    ("m/ns.yml", "kind: Namespace\n\ttab: on\n"),
    ("flux.json", "{\"kind\": \"List\"}"),
];

fn registries() -> impl Strategy<Value = Registries> {
    let host = prop_oneof![
        Just("*".to_owned()),
        "[a-z]{1,6}(\\.[a-z]{1,6}){0,2}(:[1-9][0-9]{0,3})?",
        Just("[fd00::5]:5000".to_owned()),
        Just("10.20.0.9".to_owned()),
    ];
    let endpoint = prop_oneof![
        "https?://[a-z]{1,6}\\.lab(:[1-9][0-9]{0,3})?(/[a-z0-9]{1,5}){0,2}",
        Just("https://[fd00::5]:5000".to_owned()),
    ];
    let mirror = (
        prop::collection::vec(endpoint, 1..3),
        prop::collection::btree_map("\\^[a-z/().*]{1,8}", "[a-z/$1]{1,8}", 0..2),
    )
        .prop_map(|(endpoints, rewrite)| {
            let mut m = Mirror::new(endpoints);
            for (k, v) in rewrite {
                m = m.with_rewrite(k, v);
            }
            m
        });
    let path = prop::option::of("/[a-z]{1,6}/[a-z.]{1,8}");
    let tls = (
        path.clone(),
        prop::option::of(("/[a-z]{1,8}", "/[a-z]{1,8}")),
        any::<bool>(),
    )
        .prop_map(|(ca, client, skip)| {
            let mut t = RegistryTls::new();
            if let Some(ca) = ca {
                t = t.with_ca_file(ca);
            }
            if let Some((c, k)) = client {
                t = t.with_client_cert(c, k);
            }
            if skip {
                t = t.insecure_skip_verify();
            }
            t
        });
    let config = (
        prop::option::of("[a-z][a-z0-9_-]{0,8}"),
        prop::option::of(tls),
    )
        .prop_map(|(user, tls)| {
            let mut c = RegistryConfig::new();
            if let Some(u) = user {
                c = c.with_auth(RegistryAuth::new(u, "secrets/registry"));
            }
            if let Some(t) = tls {
                c = c.with_tls(t);
            }
            c
        })
        .prop_filter("auth or tls", |c| c.auth.is_some() || c.tls.is_some());
    (
        prop::collection::btree_map(host.clone(), mirror, 0..3),
        prop::collection::btree_map(host, config, 0..3),
    )
        .prop_map(|(mirrors, configs)| {
            let mut r = Registries::new();
            for (h, m) in mirrors {
                r = r.with_mirror(h, m);
            }
            for (h, c) in configs {
                r = r.with_config(h, c);
            }
            r
        })
}

fn spec() -> impl Strategy<Value = ClusterSpec> {
    (any::<bool>(), 1usize..5, any::<bool>())
        .prop_flat_map(|(v6, count, by_name)| {
            let nodes: Vec<_> = (0..count).map(|i| node(i, v6)).collect();
            (
                Just(v6),
                Just(by_name),
                nodes,
                config(),
                config(),
                prop::option::of(1u64..=1 << 50),
                1u64..100_000,
                1u64..100_000,
                prop::option::of("[a-z_][a-z0-9_-]{0,8}"),
                (
                    prop::option::of(prop_oneof![
                        "https://[a-z]{1,8}\\.lab(:[1-9][0-9]{0,3})?",
                        Just("https://10.20.0.5".to_owned()),
                        Just("https://[fd00::5]:6443/".to_owned()),
                    ]),
                    registries(),
                    prop::sample::subsequence(MANIFESTS.to_vec(), 0..=MANIFESTS.len()),
                ),
            )
        })
        .prop_map(
            |(v6, by_name, mut nodes, cfg, agent_cfg, disk, net_wait, ready_wait, user, inputs)| {
                let (server_url, registries, manifests) = inputs;
                let mut net = Network::new(Subnet::new(
                    "10.20.0.0/16".parse().expect("cidr"),
                    Ipv4Addr::new(10, 20, 0, 1),
                ))
                .with_interface("ens3")
                .with_dns(IpAddr::V4(Ipv4Addr::new(10, 20, 0, 1)))
                .with_search("lab.internal");
                if v6 {
                    net = net.with_ipv6(Subnet::new(
                        "fd00::/64".parse().expect("cidr6"),
                        "fd00::1".parse().expect("gw6"),
                    ));
                }
                if by_name {
                    net = net.match_by_name();
                } else {
                    for (i, n) in nodes.iter_mut().enumerate() {
                        n.mac = Some(format!("52:54:00:00:02:{i:02x}").parse().expect("mac"));
                    }
                }
                let mut c = Cluster::new("lab", "v1.34.3+k3s1", net)
                    .with_wait(
                        Duration::from_secs(net_wait),
                        Duration::from_secs(ready_wait),
                    )
                    .with_ssh_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKiln admin@laptop");
                c.k3s.config = cfg;
                c.k3s.agent_config = agent_cfg;
                c.k3s.tls_san = vec!["api.lab.internal".into(), "10.20.0.5".into()];
                c.disk_size = disk.map(ByteSize);
                c.user = user;
                if by_name && c.disk_size.is_none() && nodes.iter().all(|n| n.disk_size.is_none()) {
                    c = c.with_boot(Boot::SdCard);
                }
                if v6 {
                    c = c.with_token_file("secrets/token");
                }
                if let Some(url) = server_url {
                    c = c.with_server_url(url);
                }
                c = c.with_registries(registries);
                for (source, content) in manifests {
                    c = c.with_manifest(Manifest::new(source, sha256(content)));
                }
                ClusterSpec::new(c, nodes)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_valid_spec_round_trips_through_yaml_and_json(s in spec()) {
        // A generated config key may happen to be one kiln reserves (`server`, `token`): such a
        // spec is invalid and skipped.
        // The files the spec names exist beside it, as a loaded spec's would.
        let dir = tempfile::tempdir().expect("tempdir");
        for (source, content) in MANIFESTS.iter().copied().chain([("secrets/registry", "pw\n")]) {
            let p = dir.path().join(source);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, content).expect("write");
        }
        let mut s = s;
        s.base_dir = dir.path().to_owned();
        let v = s.validate();
        prop_assume!(v.is_ok(), "{:?}", v);
        s.base_dir = std::path::PathBuf::new();
        let json = serde_json::to_string(&s).expect("to json");
        let back: ClusterSpec = serde_json::from_str(&json).expect("from json");
        prop_assert_eq!(&back, &s);
        let yaml = s.to_yaml().expect("to yaml");
        let back = ClusterSpec::from_yaml(&yaml, "spec.yaml".as_ref()).expect("from yaml");
        prop_assert_eq!(&back, &s, "{}", yaml);
    }
}
