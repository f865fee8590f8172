//! One test per validation rule: a good spec passes; each mutation yields a message naming the
//! node/field; several problems are all reported at once.

use std::path::Path;

use kiln_nocloud::{ClusterSpec, Error};

const GOOD: &str = r#"
cluster:
  name: lab
  k3s:
    version: v1.34.3+k3s1
    token_file: secrets/k3s-token
  network:
    match: mac
    interface: ens3
    ipv4: { cidr: 192.168.122.0/24, gateway: 192.168.122.1 }
    ipv6: { cidr: "fd12:3456:789a:14::/64", gateway: "fd12:3456:789a:14::1" }
    dns: [192.168.122.1]
    search: [lab.internal]
  user: ubuntu
  ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKiln admin@laptop"]
  disk_size: 80G
nodes:
  - { name: cp-01, role: server, ipv4: 192.168.122.10, ipv6: "fd12:3456:789a:14::10", mac: "52:54:00:00:00:10" }
  - { name: worker-01, role: agent, ipv4: 192.168.122.11, ipv6: "fd12:3456:789a:14::11", mac: "52:54:00:00:00:11",
      labels: { role: observability }, taints: ["observability=true:NoSchedule"], disk_size: 120G }
"#;

fn spec(yaml: &str) -> (tempfile::TempDir, ClusterSpec) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("cluster.yaml");
    std::fs::write(&p, yaml).expect("write spec");
    let s = ClusterSpec::load(&p).expect("spec parses");
    (dir, s)
}

/// Every problem of `yaml`: loading checks the values (all at once), `validate` checks the same
/// again on the typed value (and the token file).
fn problems(yaml: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("cluster.yaml");
    std::fs::write(&p, yaml).expect("write spec");
    match ClusterSpec::load(&p).and_then(|s| s.validate()) {
        Ok(()) => Vec::new(),
        Err(Error::Invalid(p)) => p.lines().collect(),
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

/// Assert exactly one problem mentioning every needle.
fn expect_one(yaml: &str, needles: &[&str]) {
    let p = problems(yaml);
    assert_eq!(p.len(), 1, "expected one problem, got {p:#?}");
    for n in needles {
        assert!(p[0].contains(n), "{:?} does not mention {n:?}", p[0]);
    }
}

/// For each (from, to, needles): `GOOD` with `from` replaced by `to` has exactly one problem,
/// mentioning every needle.
fn expect_one_each(cases: &[(&str, &str, &[&str])]) {
    for (from, to, needles) in cases {
        expect_one(&GOOD.replace(from, to), needles);
    }
}

#[test]
fn good_spec_is_valid() {
    assert_eq!(problems(GOOD), Vec::<String>::new());
}

#[test]
fn unknown_keys_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (from, to) in [
        ("  disk_size: 80G\n", "  disk_size: 80G\n  disksize: 80G\n"),
        ("role: server,", "role: server, colour: red,"),
        ("    token_file:", "    token: hunter2\n    token_file:"),
    ] {
        let y = GOOD.replacen(from, to, 1);
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, &y).expect("write");
        let e = ClusterSpec::load(&p).expect_err("unknown key must fail");
        let m = e.to_string();
        assert!(m.contains("c.yaml"), "{m}");
        assert!(m.contains("unknown field"), "{m}");
        assert!(!m.contains("hunter2"), "no source excerpt in errors: {m}");
        assert!(!m.contains("AAAAC3"), "no source excerpt in errors: {m}");
    }
}

#[test]
fn hostname_must_be_rfc1123() {
    let long = format!("name: {}", "a".repeat(64));
    expect_one_each(&[
        ("name: cp-01", "name: CP_01", &["\"CP_01\"", "RFC 1123"]),
        ("name: cp-01", "name: -cp", &["\"-cp\"", "RFC 1123"]),
        ("name: cp-01", &long, &["RFC 1123"]),
    ]);
}

#[test]
fn search_domain_must_be_rfc1123() {
    expect_one(
        &GOOD.replace("[lab.internal]", "[lab..internal]"),
        &["cluster.network.search"],
    );
}

#[test]
fn ipv4_must_be_inside_cidr() {
    expect_one(
        &GOOD.replace("ipv4: 192.168.122.11", "ipv4: 192.168.123.11"),
        &["worker-01", "192.168.123.11", "outside 192.168.122.0/24"],
    );
}

#[test]
fn ipv6_must_be_inside_cidr() {
    expect_one(
        &GOOD.replace("fd12:3456:789a:14::11\"", "fd12:3456:789a:15::11\""),
        &["worker-01", "outside"],
    );
}

#[test]
fn address_syntax() {
    expect_one(
        &GOOD.replace("ipv4: 192.168.122.11", "ipv4: 192.168.122.300"),
        &["worker-01", "not an IPv4 address"],
    );
}

#[test]
fn network_and_broadcast_addresses_are_rejected() {
    expect_one(
        &GOOD.replace("ipv4: 192.168.122.11", "ipv4: 192.168.122.255"),
        &["worker-01", "broadcast"],
    );
}

#[test]
fn cidr_syntax_and_host_bits() {
    expect_one_each(&[
        (
            "cidr: 192.168.122.0/24",
            "cidr: 192.168.122.0/33",
            &["cluster.network.ipv4.cidr"],
        ),
        (
            "cidr: 192.168.122.0/24",
            "cidr: 192.168.122.5/24",
            &["cluster.network.ipv4.cidr", "host bits"],
        ),
    ]);
}

#[test]
fn gateway_must_be_inside_subnet() {
    expect_one_each(&[
        (
            "gateway: 192.168.122.1",
            "gateway: 10.0.0.1",
            &["cluster.network.ipv4.gateway", "outside"],
        ),
        (
            "gateway: \"fd12:3456:789a:14::1\"",
            "gateway: \"fd99::1\"",
            &["cluster.network.ipv6.gateway", "outside"],
        ),
    ]);
}

#[test]
fn node_may_not_take_the_gateway_address() {
    expect_one(
        &GOOD.replace("ipv4: 192.168.122.11", "ipv4: 192.168.122.1"),
        &["worker-01", "gateway"],
    );
}

#[test]
fn names_must_be_unique() {
    expect_one(
        &GOOD.replace("name: worker-01", "name: cp-01"),
        &["duplicate node name", "cp-01"],
    );
}

#[test]
fn ips_must_be_unique() {
    expect_one_each(&[
        (
            "ipv4: 192.168.122.11",
            "ipv4: 192.168.122.10",
            &[
                "worker-01",
                "192.168.122.10",
                "already used by node \"cp-01\"",
            ],
        ),
        (
            "fd12:3456:789a:14::11\"",
            "fd12:3456:789a:14::10\"",
            &["worker-01", "already used"],
        ),
    ]);
}

#[test]
fn macs_must_be_unique_case_insensitively() {
    expect_one(
        &GOOD.replace("52:54:00:00:00:11", "52:54:00:00:00:10"),
        &["worker-01", "mac", "already used"],
    );
    let y = GOOD
        .replace("52:54:00:00:00:10", "52:54:00:00:00:aa")
        .replace("52:54:00:00:00:11", "52-54-00-00-00-AA");
    expect_one(&y, &["worker-01", "52:54:00:00:00:aa", "already used"]);
}

#[test]
fn mac_syntax() {
    expect_one_each(&[
        (
            "52:54:00:00:00:11",
            "52:54:00:00:11",
            &["worker-01", "not a MAC"],
        ),
        (
            "52:54:00:00:00:11",
            "52:54:00:00:00:zz",
            &["worker-01", "not a MAC"],
        ),
    ]);
}

#[test]
fn mac_required_when_matching_by_mac() {
    expect_one(
        &GOOD.replace(", mac: \"52:54:00:00:00:11\"", ""),
        &["worker-01", "mac is required"],
    );
}

#[test]
fn interface_required_when_matching_by_name() {
    expect_one(
        &GOOD
            .replace("match: mac", "match: name")
            .replace("    interface: ens3\n", ""),
        &["cluster.network.interface"],
    );
}

#[test]
fn at_least_one_server() {
    expect_one(
        &GOOD.replace("role: server", "role: agent"),
        &["at least one", "server"],
    );
}

#[test]
fn ipv6_consistency() {
    expect_one(
        &GOOD.replace(", ipv6: \"fd12:3456:789a:14::11\"", ""),
        &["worker-01", "ipv6 is missing"],
    );
}

#[test]
fn sizes_must_parse() {
    expect_one_each(&[
        (
            "disk_size: 80G",
            "disk_size: 80X",
            &["cluster.disk_size", "80X"],
        ),
        (
            "disk_size: 120G",
            "disk_size: lots",
            &["worker-01", "disk_size"],
        ),
    ]);
    assert_eq!(kiln_nocloud::parse_size("512M"), Ok(512 << 20));
    let (_d, s) = spec(GOOD);
    assert_eq!(
        s.disk_size_of(&s.nodes[0]),
        Some(80 << 30),
        "cluster default"
    );
    assert_eq!(
        s.disk_size_of(&s.nodes[1]),
        Some(120 << 30),
        "per-node override"
    );
    assert_eq!(kiln_nocloud::parse_size("80G"), Ok(80 << 30));
    assert!(kiln_nocloud::parse_size("0G").is_err());
}

#[test]
fn durations_must_parse() {
    let y = GOOD.replace(
        "  disk_size: 80G\n",
        "  disk_size: 80G\n  wait: { network: 5x, ready: 10m }\n",
    );
    expect_one(&y, &["cluster.wait.network", "5x"]);
    assert_eq!(kiln_nocloud::parse_duration("1h30m"), Ok(5400));
    assert_eq!(kiln_nocloud::parse_duration("300"), Ok(300));
    assert!(kiln_nocloud::parse_duration("0s").is_err());
    assert!(kiln_nocloud::parse_duration("5").is_ok());
}

#[test]
fn labels_and_taints_must_be_well_formed() {
    expect_one_each(&[
        (
            "observability=true:NoSchedule",
            "observability=true:Sometimes",
            &["worker-01", "taint"],
        ),
        (
            "role: observability",
            "role: \"bad value!\"",
            &["worker-01", "label"],
        ),
    ]);
}

#[test]
fn reserved_k3s_keys_are_rejected() {
    let y = GOOD.replace(
        "    token_file: secrets/k3s-token\n",
        "    token_file: secrets/k3s-token\n    config: { server: \"https://x:6443\" }\n",
    );
    expect_one(&y, &["cluster.k3s.config", "\"server\""]);
}

#[test]
fn k3s_version_must_be_pinned() {
    expect_one(
        &GOOD.replace("v1.34.3+k3s1", "latest"),
        &["cluster.k3s.version"],
    );
}

#[test]
fn token_file_must_be_readable_or_creatable() {
    // Readable: a directory where a file is expected is not.
    let (d, s) = spec(GOOD);
    std::fs::create_dir_all(d.path().join("secrets/k3s-token")).expect("mkdir");
    let e = s.validate().expect_err("dir as token file");
    assert!(e.to_string().contains("token_file"), "{e}");
    // Creatable: its would-be parent is a regular file.
    let (d, s) = spec(&GOOD.replace("secrets/k3s-token", "blocker/k3s-token"));
    std::fs::write(d.path().join("blocker"), b"x").expect("write");
    let e = s.validate().expect_err("parent is a file");
    assert!(e.to_string().contains("cannot be created"), "{e}");
    // Missing but creatable: fine, and validation creates nothing.
    let (d, s) = spec(GOOD);
    s.validate().expect("creatable");
    assert!(!d.path().join("secrets").exists());
}

#[test]
fn all_problems_are_reported_together() {
    let y = GOOD
        .replace("name: cp-01", "name: Cp")
        .replace("52:54:00:00:00:11", "nope")
        .replace("gateway: 192.168.122.1", "gateway: 10.1.1.1")
        .replace("disk_size: 80G", "disk_size: big");
    let p = problems(&y);
    assert_eq!(p.len(), 4, "{p:#?}");
}

#[test]
fn token_never_in_errors() {
    let (d, s) = spec(GOOD);
    std::fs::create_dir_all(d.path().join("secrets")).expect("mkdir");
    std::fs::write(d.path().join("secrets/k3s-token"), "sekrit-token-value\n").expect("write");
    let mut bad = s;
    bad.nodes.clear();
    let e = bad.validate().expect_err("no nodes");
    assert!(!format!("{e} {e:?}").contains("sekrit"));
    let t =
        kiln_nocloud::Token::load_or_create(&d.path().join("secrets/k3s-token")).expect("token");
    assert_eq!(t.expose(), "sekrit-token-value");
    assert!(!format!("{t:?}").contains("sekrit"));
    let _ = Path::new("");
}

/// Each problem names its field as a path a provider can map back to its own attribute.
#[test]
fn problems_name_their_field_paths() {
    let yaml = GOOD
        .replace("ipv4: 192.168.122.11", "ipv4: 192.168.123.11")
        .replace("[lab.internal]", "[lab..internal]")
        .replace("observability=true:NoSchedule", "bad taint")
        .replace("disk_size: 80G", "disk_size: 80X");
    let Err(Error::Invalid(p)) = ClusterSpec::from_yaml(&yaml, "c.yaml".as_ref()) else {
        panic!("expected problems")
    };
    let fields: Vec<&str> = p.list.iter().map(|x| x.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "cluster.network.search[0]",
            "cluster.disk_size",
            "nodes[1].ipv4",
            "nodes[1].taints[0]"
        ],
        "{p}"
    );
    assert!(p.list[2].message.contains("worker-01"), "{}", p.list[2]);
}

/// `GOOD` with a fixed registration address, a private registry and one manifest.
const INPUTS: &str = r#"
    server_url: https://api.lab.internal:6443
    registries:
      mirrors:
        docker.io:
          endpoint: ["https://mirror.lab.internal:5000", "http://10.0.0.5/v2"]
          rewrite: { "^library/(.*)": "lab/$1" }
        "*":
          endpoint: ["https://[fd00::5]:5000"]
      configs:
        mirror.lab.internal:5000:
          auth: { username: puller, password_file: secrets/registry }
          tls: { ca_file: /etc/ssl/lab-ca.pem, cert_file: /etc/ssl/c.pem, key_file: /etc/ssl/c.key }
        10.0.0.5:
          tls: { insecure_skip_verify: true }
    manifests:
      - { source: manifests/app.yaml, sha256: SHA }
"#;

const MANIFEST: &str = "apiVersion: v1\nkind: Namespace\nmetadata: { name: app }\n";
const PASSWORD: &str = "registry-SECRET-0451";

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    kiln_common::digest::hex(&sha2::Sha256::digest(b))
}

/// `GOOD` with `INPUTS`, edited by `edit`, in a directory holding the password and manifest files.
fn inputs_spec(edit: impl Fn(String) -> String) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("secrets")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("manifests")).expect("mkdir");
    std::fs::write(dir.path().join("secrets/registry"), format!("{PASSWORD}\n")).expect("pw");
    std::fs::write(dir.path().join("manifests/app.yaml"), MANIFEST).expect("manifest");
    let inputs = INPUTS.replace("SHA", &sha256(MANIFEST.as_bytes()));
    let yaml = GOOD.replace(
        "    token_file: secrets/k3s-token\n",
        &format!("    token_file: secrets/k3s-token{inputs}"),
    );
    let p = dir.path().join("cluster.yaml");
    std::fs::write(&p, edit(yaml)).expect("write spec");
    (dir, p)
}

/// Every problem's (field, message) of the edited spec, from `load` (and `validate` when it loads).
fn input_problems(edit: impl Fn(String) -> String) -> Vec<(String, String)> {
    let (_d, p) = inputs_spec(edit);
    match ClusterSpec::load(&p).and_then(|s| s.validate()) {
        Ok(()) => Vec::new(),
        Err(Error::Invalid(p)) => p
            .list
            .iter()
            .map(|x| (x.field.clone(), x.message.clone()))
            .collect(),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[test]
fn registries_server_url_and_manifests_are_valid() {
    assert_eq!(input_problems(|y| y), Vec::new());
    let (_d, p) = inputs_spec(|y| y);
    let s = ClusterSpec::load(&p).expect("load");
    assert_eq!(
        s.cluster.k3s.server_url.as_deref(),
        Some("https://api.lab.internal:6443")
    );
    assert_eq!(s.cluster.k3s.registries.mirrors.len(), 2);
    assert_eq!(s.cluster.k3s.manifests[0].file_name(), Some("app.yaml"));
    // Nothing of the password in the spec's Debug, YAML or JSON.
    let shown = format!(
        "{s:?} {} {}",
        s.to_yaml().expect("yaml"),
        serde_json::to_string(&s).expect("json")
    );
    assert!(!shown.contains("SECRET"), "{shown}");
}

/// Each bad value is one problem naming its field path (and the value or file).
#[test]
fn every_bad_input_value_is_named_by_its_field_path() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // server_url
        (
            "https://api.lab.internal:6443",
            "http://api.lab.internal:6443",
            "cluster.k3s.server_url",
            "https://",
        ),
        (
            "https://api.lab.internal:6443",
            "api.lab.internal:6443",
            "cluster.k3s.server_url",
            "not a URL",
        ),
        (
            "https://api.lab.internal:6443",
            "https://API_lab:6443",
            "cluster.k3s.server_url",
            "host",
        ),
        (
            "https://api.lab.internal:6443",
            "https://api.lab.internal:99999",
            "cluster.k3s.server_url",
            "port",
        ),
        (
            "https://api.lab.internal:6443",
            "https://api.lab.internal:6443/k3s",
            "cluster.k3s.server_url",
            "path",
        ),
        // mirrors
        (
            "        docker.io:\n",
            "        docker_io:\n",
            "cluster.k3s.registries.mirrors[\"docker_io\"]",
            "registry host",
        ),
        (
            "[\"https://mirror.lab.internal:5000\", \"http://10.0.0.5/v2\"]",
            "[]",
            "cluster.k3s.registries.mirrors[\"docker.io\"].endpoint",
            "at least one",
        ),
        (
            "\"http://10.0.0.5/v2\"",
            "\"ftp://10.0.0.5\"",
            "cluster.k3s.registries.mirrors[\"docker.io\"].endpoint[1]",
            "http:// or https://",
        ),
        (
            "\"http://10.0.0.5/v2\"",
            "\"\"",
            "cluster.k3s.registries.mirrors[\"docker.io\"].endpoint[1]",
            "not a URL",
        ),
        (
            "\"https://[fd00::5]:5000\"",
            "\"https://[fd00::zz]:5000\"",
            "cluster.k3s.registries.mirrors[\"*\"].endpoint[0]",
            "host",
        ),
        (
            "\"lab/$1\"",
            "\"\"",
            "cluster.k3s.registries.mirrors[\"docker.io\"].rewrite[\"^library/(.*)\"]",
            "replacement",
        ),
        // configs
        (
            "        mirror.lab.internal:5000:\n",
            "        mirror.lab.internal:0:\n",
            "cluster.k3s.registries.configs[\"mirror.lab.internal:0\"]",
            "registry host",
        ),
        (
            "username: puller",
            "username: \"\"",
            "cluster.k3s.registries.configs[\"mirror.lab.internal:5000\"].auth.username",
            "non-empty",
        ),
        (
            "ca_file: /etc/ssl/lab-ca.pem",
            "ca_file: etc/ssl/lab-ca.pem",
            "cluster.k3s.registries.configs[\"mirror.lab.internal:5000\"].tls.ca_file",
            "absolute path",
        ),
        (
            ", key_file: /etc/ssl/c.key",
            "",
            "cluster.k3s.registries.configs[\"mirror.lab.internal:5000\"].tls",
            "go together",
        ),
        (
            "          tls: { insecure_skip_verify: true }\n",
            "          {}\n",
            "cluster.k3s.registries.configs[\"10.0.0.5\"]",
            "auth",
        ),
        // files
        (
            "password_file: secrets/registry",
            "password_file: secrets/nope",
            "cluster.k3s.registries.configs[\"mirror.lab.internal:5000\"].auth.password_file",
            "secrets/nope: does not exist",
        ),
        // manifests
        (
            "source: manifests/app.yaml",
            "source: manifests/missing.yaml",
            "cluster.k3s.manifests[0].source",
            "missing.yaml: does not exist",
        ),
        (
            "source: manifests/app.yaml",
            "source: manifests",
            "cluster.k3s.manifests[0].source",
            ".yaml, .yml or .json",
        ),
        (
            "sha256: ",
            "sha256: 00",
            "cluster.k3s.manifests[0].sha256",
            "is not a sha256",
        ),
    ];
    for (from, to, field, needle) in cases {
        let p = input_problems(|y| {
            assert!(y.contains(from), "{from:?} not in the spec");
            y.replacen(from, to, 1)
        });
        assert_eq!(p.len(), 1, "{from:?} → {to:?}: {p:#?}");
        assert_eq!(p[0].0, *field, "{from:?} → {to:?}: {p:#?}");
        assert!(p[0].1.contains(needle), "{from:?} → {to:?}: {:?}", p[0].1);
        assert!(!p[0].1.contains("SECRET"), "{:?}", p[0].1);
    }
}

#[test]
fn manifest_pins_and_password_files_are_checked_without_showing_them() {
    // A manifest whose bytes are not its pin: the file, the expected and the actual digest.
    let (d, p) = inputs_spec(|y| y);
    std::fs::write(d.path().join("manifests/app.yaml"), "changed\n").expect("write");
    let Err(Error::Invalid(problems)) = ClusterSpec::load(&p) else {
        panic!("a changed manifest must fail")
    };
    let m = problems.to_string();
    assert!(m.contains("cluster.k3s.manifests[0].source"), "{m}");
    assert!(m.contains("manifests/app.yaml"), "{m}");
    assert!(
        m.contains(&sha256(MANIFEST.as_bytes())),
        "expected digest: {m}"
    );
    assert!(m.contains(&sha256(b"changed\n")), "actual digest: {m}");
    // Rendering reads the file again and refuses it the same way (a spec loaded before the edit).
    let (d, p) = inputs_spec(|y| y);
    let s = ClusterSpec::load(&p).expect("load");
    std::fs::write(d.path().join("manifests/app.yaml"), "changed\n").expect("write");
    let e = kiln_nocloud::render_node(&s, &s.nodes[0], &kiln_nocloud::Token::new("t"))
        .expect_err("render checks the pin");
    assert_eq!(e.kind(), kiln_blockdev::ErrorKind::Input);
    assert!(
        e.to_string().contains("cluster.k3s.manifests[0].source"),
        "{e}"
    );

    // An empty password file, a directory in its place: named, never quoted.
    let (d, p) = inputs_spec(|y| y);
    std::fs::write(d.path().join("secrets/registry"), " \n").expect("write");
    let m = ClusterSpec::load(&p).expect_err("empty").to_string();
    assert!(
        m.contains("auth.password_file") && m.contains("is empty"),
        "{m}"
    );
    std::fs::remove_file(d.path().join("secrets/registry")).expect("rm");
    std::fs::create_dir(d.path().join("secrets/registry")).expect("mkdir");
    let m = ClusterSpec::load(&p).expect_err("dir").to_string();
    assert!(m.contains("is not a regular file"), "{m}");

    // A URL carrying credentials is refused without echoing them.
    let (_d, p) =
        inputs_spec(|y| y.replace("http://10.0.0.5/v2", "https://puller:URLSECRET@10.0.0.5/v2"));
    let m = ClusterSpec::load(&p).expect_err("user info").to_string();
    assert!(m.contains("user info"), "{m}");
    assert!(!m.contains("URLSECRET"), "{m}");
    // A password file the caller's own spec (made in code) names is checked by `validate`.
    let (d, p) = inputs_spec(|y| y);
    let s = ClusterSpec::load(&p).expect("load");
    std::fs::remove_file(d.path().join("secrets/registry")).expect("rm");
    let e = s.validate().expect_err("missing password file");
    assert!(e.to_string().contains("does not exist"), "{e}");
    let e = kiln_nocloud::render_node(&s, &s.nodes[0], &kiln_nocloud::Token::new("t"))
        .expect_err("render needs the password");
    assert!(e.to_string().contains("auth.password_file"), "{e}");
    assert_eq!(e.kind(), kiln_blockdev::ErrorKind::Input);
}
