//! The boot test's scenarios and the checks that need the whole cluster: what the first server's
//! k3s reports (`k3s kubectl get nodes -o json`, written to its disk by the golden image's
//! `kiln-e2e-nodes` unit) against the spec.
//!
//! - `3node`: kiln's own spec, one server and two agents in 10.0.2.0/24. The second agent's seed
//!   is broken on purpose (its network-config names a MAC the VM's NIC does not have).
//! - `ha`: `recipes/clusters/ha-3server.yaml` (seed 004): three servers with embedded etcd and an
//!   agent, registering at `server_url`'s DNS name (the golden image's `/etc/hosts` stands in for
//!   the lab's DNS record of that name).
//! - `dualstack`: `recipes/clusters/dualstack-cilium.yaml` (seed 001): IPv4 + IPv6, Cilium's
//!   manifest on the server. Its last agent's place is taken by an agent seeded from a copy of the
//!   spec with another token, which must be refused.
//!
//! The committed specs are booted as they are but for what a test VM cannot have: overlays of
//! 4 GiB, a token file of the test's own, first-boot waits sized for emulation, and the version of
//! the k3s assets under test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use kiln_nocloud::{ByteSize, ClusterSpec, Role};

use super::checks::{Check, Expect};

/// The node whose seed is broken in `3node`, the MAC its VM's NIC really has, and the check that
/// must catch it.
pub const BROKEN_NODE: &str = "e2e-agent-2";
pub const BROKEN_NIC_MAC: &str = "52:54:00:e2:e0:13";
pub const BROKEN_CHECK: &str = "static address on the NIC matched by MAC";
/// The agent of `dualstack` that holds another token: it takes the place of the spec's last agent.
pub const INTRUDER: &str = "ds-intruder";

const SPEC_3NODE: &str = r#"# kiln e2e: three nodes on one private segment (10.0.2.0/24).
cluster:
  name: e2e
  k3s:
    version: v1.34.3+k3s1
    token_file: token
  network:
    match: mac
    interface: lan0
    ipv4: { cidr: 10.0.2.0/24, gateway: 10.0.2.2 }
    dns: [10.0.2.3]
  disk_size: 4G
  wait: { network: 60s, ready: 600s }
nodes:
  - { name: e2e-server-1, role: server, ipv4: 10.0.2.11, mac: "52:54:00:e2:e0:11",
      labels: { topology.kubernetes.io/zone: rack-1 } }
  - { name: e2e-agent-1, role: agent, ipv4: 10.0.2.12, mac: "52:54:00:e2:e0:12",
      labels: { node.kiln.dev/pool: edge, topology.kubernetes.io/zone: rack-2 },
      taints: ["dedicated=edge:NoSchedule"] }
  # The broken seed: its network-config names a MAC that this VM's NIC (…:13) does not have.
  - { name: e2e-agent-2, role: agent, ipv4: 10.0.2.13, mac: "52:54:00:e2:e0:99" }
"#;

/// One cluster the test boots.
#[derive(Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    /// The spec as the test wrote it (under `target/e2e/<name>/`).
    pub spec: PathBuf,
    /// The spec's nodes (labels, taints, addresses), as kiln reads it.
    pub parsed: ClusterSpec,
    /// A second spec whose only booted node is [`INTRUDER`] (`dualstack` only).
    pub intruder_spec: Option<PathBuf>,
    /// Nodes of the spec that are not booted.
    pub skip: Vec<String>,
    /// `/etc/hosts` lines the golden image needs (`server_url`'s name → the first server).
    pub hosts: Vec<String>,
}

impl Scenario {
    pub fn dir(&self) -> PathBuf {
        self.spec
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// The node whose seed is broken, if this scenario has one.
    pub fn broken(&self) -> Option<&'static str> {
        (self.name == "3node").then_some(BROKEN_NODE)
    }
}

/// Every scenario (or those named in `KILN_E2E_SCENARIOS`, comma-separated), their specs written
/// under `work`.
pub fn scenarios(work: &Path, k3s_version: &str) -> Result<Vec<Scenario>> {
    let wanted = std::env::var("KILN_E2E_SCENARIOS").ok();
    let pick = |n: &str| {
        wanted
            .as_deref()
            .is_none_or(|w| w.split(',').any(|x| x.trim() == n))
    };
    let clusters = crate::util::root().join("recipes/clusters");
    let mut out = Vec::new();
    if pick("3node") {
        let dir = work.join("3node");
        std::fs::create_dir_all(&dir)?;
        let spec = dir.join("spec.yaml");
        std::fs::write(&spec, SPEC_3NODE.replace("v1.34.3+k3s1", k3s_version))?;
        out.push(Scenario {
            name: "3node",
            about: "1 server + 2 agents, one with a broken seed",
            parsed: load(&spec)?,
            spec,
            intruder_spec: None,
            skip: Vec::new(),
            hosts: Vec::new(),
        });
    }
    for (name, file, about) in [
        (
            "ha",
            "ha-3server.yaml",
            "recipes/clusters/ha-3server.yaml: 3 servers (embedded etcd) + 1 agent via server_url",
        ),
        (
            "dualstack",
            "dualstack-cilium.yaml",
            "recipes/clusters/dualstack-cilium.yaml: IPv4 + IPv6, Cilium manifest; its last agent's \
             place taken by an agent with another token",
        ),
    ] {
        if !pick(name) {
            continue;
        }
        let dir = work.join(name);
        std::fs::create_dir_all(&dir)?;
        let committed = clusters.join(file);
        let mut spec = load(&committed)?;
        adapt(&mut spec, &committed, &dir, k3s_version)?;
        let path = dir.join("spec.yaml");
        std::fs::write(&path, spec.to_yaml().map_err(|e| anyhow!("{e}"))?)?;
        let hosts = server_url_hosts(&spec);
        let (intruder_spec, skip) = if name == "dualstack" {
            let (p, skipped) = intruder(&spec, &dir)?;
            (Some(p), vec![skipped])
        } else {
            (None, Vec::new())
        };
        out.push(Scenario {
            name,
            about,
            parsed: load(&path)?,
            spec: path,
            intruder_spec,
            skip,
            hosts,
        });
    }
    if out.is_empty() {
        anyhow::bail!("KILN_E2E_SCENARIOS={wanted:?} names none of 3node, ha, dualstack");
    }
    Ok(out)
}

fn load(path: &Path) -> Result<ClusterSpec> {
    ClusterSpec::load(path).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// The wrong-token agent's spec: the cluster's first server and, in the place (address, MAC) of
/// the spec's last agent, [`INTRUDER`], with a token file of its own. Returns the spec's path and
/// the agent it stands in for (not booted: four guests side by side on two emulating cores run
/// over twice as slow as three).
fn intruder(spec: &ClusterSpec, dir: &Path) -> Result<(PathBuf, String)> {
    let mut s = spec.clone();
    s.cluster.k3s.token_file = Some(dir.join("intruder-token"));
    let server = spec
        .nodes
        .iter()
        .find(|n| n.role == Role::Server)
        .context("the spec has no server")?;
    let agent = spec
        .nodes
        .iter()
        .rev()
        .find(|n| n.role == Role::Agent)
        .context("the spec has no agent for the intruder to stand in for")?;
    let mut intruder = agent.clone();
    intruder.name = INTRUDER.to_owned();
    s.nodes = vec![server.clone(), intruder];
    let path = dir.join("intruder.yaml");
    std::fs::write(&path, s.to_yaml().map_err(|e| anyhow!("{e}"))?)?;
    Ok((path, agent.name.clone()))
}

/// What a test VM cannot have, replaced; everything else as committed.
fn adapt(spec: &mut ClusterSpec, committed: &Path, dir: &Path, version: &str) -> Result<()> {
    let base = committed.parent().context("spec without a directory")?;
    spec.cluster.k3s.version = version.to_owned();
    spec.cluster.k3s.token_file = Some(dir.join("token"));
    for m in &mut spec.cluster.k3s.manifests {
        m.source = base.join(&m.source);
    }
    spec.cluster.disk_size = Some(ByteSize::gib(4));
    spec.cluster.wait.network = Duration::from_secs(120);
    spec.cluster.wait.ready = Duration::from_secs(600);
    for n in &mut spec.nodes {
        n.disk_size = None;
    }
    Ok(())
}

/// `/etc/hosts` lines that resolve a `server_url` DNS name to the first server.
fn server_url_hosts(spec: &ClusterSpec) -> Vec<String> {
    let Some(url) = &spec.cluster.k3s.server_url else {
        return Vec::new();
    };
    let host = url_host(url);
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return Vec::new();
    }
    spec.nodes
        .iter()
        .find(|n| n.role == Role::Server)
        .map(|n| vec![format!("{} {host}", n.ipv4)])
        .unwrap_or_default()
}

fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or_default();
    match hostport.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.to_owned(),
        _ => hostport.to_owned(),
    }
}

/// Fill in what the spec says about each node the inventory lists: the `server` URL config.yaml
/// must hold, labels, taints, manifests.
pub fn complete(e: &mut Expect, spec: &ClusterSpec, manifest_sums: &[(String, String)]) {
    let Some(node) = spec.nodes.iter().find(|n| n.name == e.name) else {
        return;
    };
    let first = spec.nodes.iter().find(|n| n.role == Role::Server);
    let is_first = first.is_some_and(|f| f.name == node.name);
    e.node_ip = match node.ipv6 {
        Some(v6) => format!("{},{v6}", node.ipv4),
        None => node.ipv4.to_string(),
    };
    e.server = if is_first {
        None
    } else {
        Some(spec.cluster.k3s.server_url.clone().unwrap_or_else(|| {
            format!(
                "https://{}:6443",
                first.map(|f| f.ipv4.to_string()).unwrap_or_default()
            )
        }))
    };
    e.tls_san = spec.cluster.k3s.server_url.as_deref().map(url_host);
    if let Some(i) = node
        .interface
        .as_ref()
        .or(spec.cluster.network.interface.as_ref())
    {
        e.interface = i.clone();
    }
    e.labels = node
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    e.taints = node.taints.clone();
    if node.role == Role::Server {
        e.manifests = manifest_sums.to_vec();
    }
}

/// The nodes k3s listed, by name: addresses, labels, taints (`key=value:Effect`).
#[derive(Debug, Default)]
pub struct Registered {
    pub addresses: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<String>,
}

/// `kubectl get nodes -o json` output, by node name.
pub fn parse_nodes(json: &str) -> Result<BTreeMap<String, Registered>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("the node list is not JSON: {e}"))?;
    let items = v["items"]
        .as_array()
        .ok_or("the node list has no items array")?;
    let mut out = BTreeMap::new();
    for it in items {
        let name = it["metadata"]["name"]
            .as_str()
            .ok_or("a node without metadata.name")?;
        let labels = it["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let taints = it["spec"]["taints"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .map(|t| {
                        let key = t["key"].as_str().unwrap_or_default();
                        let effect = t["effect"].as_str().unwrap_or_default();
                        match t["value"].as_str() {
                            Some(v) if !v.is_empty() => format!("{key}={v}:{effect}"),
                            _ => format!("{key}:{effect}"),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let addresses = it["status"]["addresses"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["type"] == "InternalIP")
                    .filter_map(|x| x["address"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        out.insert(
            name.to_owned(),
            Registered {
                addresses,
                labels,
                taints,
            },
        );
    }
    Ok(out)
}

fn check(node: &str, name: &'static str, r: Result<String, String>) -> Check {
    let (ok, detail) = match r {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    Check {
        node: node.to_owned(),
        name,
        ok,
        detail,
    }
}

/// What the first server's k3s listed, judged against the spec: each node that should have
/// joined is there with its own address, labels and taints; the servers are the control plane
/// (with etcd when there are several); the broken and the wrong-token node are not there, the
/// latter refused (as the stand-in's log says, when it is the stand-in).
pub fn cluster_checks(
    first_server: &str,
    nodes: Result<BTreeMap<String, Registered>, String>,
    registrations: Option<&str>,
    expects: &[Expect],
    broken: Option<&str>,
) -> Vec<Check> {
    let nodes = match nodes {
        Ok(n) => n,
        Err(e) => {
            return vec![check(
                first_server,
                "node list from the first server",
                Err(format!("{first_server}: {e}")),
            )];
        }
    };
    let mut out = Vec::new();
    let listed = nodes.keys().cloned().collect::<Vec<_>>().join(", ");
    for e in expects
        .iter()
        .filter(|e| Some(e.name.as_str()) != broken && e.name != INTRUDER)
    {
        out.push(check(
            &e.name,
            "registered with its address, labels and taints",
            registered(e, nodes.get(&e.name), &listed),
        ));
    }
    let servers: Vec<&Expect> = expects.iter().filter(|e| e.role == "server").collect();
    let cp: Vec<&String> = nodes
        .iter()
        .filter(|(_, n)| {
            n.labels
                .get("node-role.kubernetes.io/control-plane")
                .is_some_and(|v| v == "true")
        })
        .map(|(k, _)| k)
        .collect();
    let ha = servers.len() > 1;
    out.push(check(
        first_server,
        if ha {
            "HA membership: every server in the control plane with etcd"
        } else {
            "control plane: the server"
        },
        {
            let want: Vec<&String> = servers.iter().map(|e| &e.name).collect();
            let mut sorted_want = want.clone();
            sorted_want.sort();
            let no_etcd: Vec<&&String> = cp
                .iter()
                .filter(|n| {
                    ha && nodes[**n]
                        .labels
                        .get("node-role.kubernetes.io/etcd")
                        .is_none_or(|v| v != "true")
                })
                .collect();
            if cp != sorted_want {
                Err(format!(
                    "control-plane nodes {cp:?}, the spec's servers are {sorted_want:?}"
                ))
            } else if !no_etcd.is_empty() {
                Err(format!("{no_etcd:?} in the control plane without etcd"))
            } else {
                Ok(format!(
                    "{} server(s) {}: {}",
                    cp.len(),
                    if ha {
                        "with etcd"
                    } else {
                        "in the control plane"
                    },
                    cp.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ))
            }
        },
    ));
    if expects.iter().any(|e| e.name == INTRUDER) {
        out.push(check(INTRUDER, "wrong token refused", {
            if nodes.contains_key(INTRUDER) {
                Err(format!("{INTRUDER} joined with another cluster's token (listed: {listed})"))
            } else {
                let said = registrations.and_then(|log| {
                    log.lines()
                        .find(|l| l.starts_with(&format!("refused agent {INTRUDER} ")))
                        .map(str::to_owned)
                });
                match (registrations, said) {
                    (_, Some(line)) => Ok(format!("not listed; the server logged {line:?}")),
                    (Some(_), None) => Err(format!(
                        "{INTRUDER} is not listed, but the server never logged refusing it: it did not try"
                    )),
                    (None, None) => Ok(format!("not listed by {first_server} ({listed})")),
                }
            }
        }));
    }
    if let Some(b) = broken {
        out.push(check(b, "broken seed: never joined", {
            if nodes.contains_key(b) {
                Err(format!("{b} joined although its seed is broken"))
            } else {
                Ok(format!("not listed by {first_server}"))
            }
        }));
    }
    out
}

fn registered(e: &Expect, n: Option<&Registered>, listed: &str) -> Result<String, String> {
    let n = n.ok_or_else(|| format!("{} is not in the node list ({listed})", e.name))?;
    let want_addrs: Vec<String> = e.node_ip.split(',').map(str::to_owned).collect();
    if n.addresses != want_addrs {
        return Err(format!(
            "{}: InternalIP {:?}, the spec says {want_addrs:?}",
            e.name, n.addresses
        ));
    }
    for (k, v) in &e.labels {
        if n.labels.get(k) != Some(v) {
            return Err(format!(
                "{}: label {k}={v} missing (labels: {:?})",
                e.name, n.labels
            ));
        }
    }
    let mut want_taints = e.taints.clone();
    want_taints.sort();
    let mut got = n.taints.clone();
    got.sort();
    if got != want_taints {
        return Err(format!(
            "{}: taints {got:?}, the spec says {want_taints:?}",
            e.name
        ));
    }
    let role = if e.role == "server" {
        "control-plane"
    } else {
        "agent"
    };
    Ok(format!(
        "{} {role}{}{}",
        n.addresses.join(","),
        if e.labels.is_empty() {
            String::new()
        } else {
            format!(
                " labels {}",
                e.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        },
        if got.is_empty() {
            String::new()
        } else {
            format!(" taints {}", got.join(","))
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_hosts() {
        assert_eq!(url_host("https://k8s.home.arpa:6443"), "k8s.home.arpa");
        assert_eq!(url_host("https://10.0.0.5:6443/"), "10.0.0.5");
        assert_eq!(url_host("https://vip.lab"), "vip.lab");
    }

    #[test]
    fn node_list_is_read_like_kubectl_writes_it() {
        let json = r#"{"items":[{"metadata":{"name":"a","labels":{"x":"1"}},
            "spec":{"taints":[{"key":"k","value":"v","effect":"NoSchedule"},{"key":"e","effect":"NoExecute"}]},
            "status":{"addresses":[{"type":"InternalIP","address":"10.0.0.2"},{"type":"Hostname","address":"a"}]}}]}"#;
        let n = parse_nodes(json).unwrap();
        assert_eq!(n["a"].addresses, ["10.0.0.2"]);
        assert_eq!(n["a"].taints, ["k=v:NoSchedule", "e:NoExecute"]);
        assert_eq!(n["a"].labels["x"], "1");
        assert!(parse_nodes("{}").is_err());
    }
}
