//! The cluster spec: one YAML file describing a k3s cluster and its nodes, and its validation.
//!
//! Addresses, MACs, sizes and durations are kept as the user wrote them and checked in
//! [`ClusterSpec::validate`], so that *every* problem is reported at once rather than the first one
//! serde trips over. Unknown keys are rejected at load time.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;
use crate::docs::ConfigValue;

/// A whole cluster spec file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub cluster: Cluster,
    pub nodes: Vec<NodeSpec>,
    /// Directory of the spec file; `token_file` is resolved against it. Not part of the YAML.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    pub k3s: K3s,
    pub network: Network,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// Default disk size of every node, e.g. `80G`.
    #[serde(default)]
    pub disk_size: Option<String>,
    /// Bounds of the first-boot waits (durations such as `300s`, `5m`).
    #[serde(default)]
    pub wait: Wait,
    /// Optional cloud-config shipped as every node's `vendor-data` (same typed subset as
    /// user-data; user-data wins where both set a key).
    #[serde(default)]
    pub vendor_data: Option<crate::docs::VendorData>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3s {
    pub version: String,
    pub token_file: PathBuf,
    /// Extra `config.yaml` keys for every server.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
    /// Extra `config.yaml` keys for every agent.
    #[serde(default)]
    pub agent_config: BTreeMap<String, ConfigValue>,
    /// Extra subject alternative names for the servers' API certificate.
    #[serde(default)]
    pub tls_san: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchBy {
    Mac,
    Name,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(rename = "match", default = "default_match")]
    pub match_by: MatchBy,
    #[serde(default)]
    pub interface: Option<String>,
    pub ipv4: Subnet,
    #[serde(default)]
    pub ipv6: Option<Subnet>,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub search: Vec<String>,
}

fn default_match() -> MatchBy {
    MatchBy::Mac
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    pub cidr: String,
    pub gateway: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    /// How long to wait for the default route and DNS before giving up.
    #[serde(default = "default_network_wait")]
    pub network: String,
    /// How long to wait for k3s to become ready after the install.
    #[serde(default = "default_ready_wait")]
    pub ready: String,
}

impl Default for Wait {
    fn default() -> Self {
        Wait {
            network: default_network_wait(),
            ready: default_ready_wait(),
        }
    }
}

fn default_network_wait() -> String {
    "300s".into()
}

fn default_ready_wait() -> String {
    "600s".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Server,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    pub role: Role,
    pub ipv4: String,
    #[serde(default)]
    pub ipv6: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    /// Overrides `cluster.network.interface`.
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<String>,
    /// Extra `config.yaml` keys, laid over the cluster's `config`/`agent_config`.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
    #[serde(default)]
    pub disk_size: Option<String>,
}

/// `config.yaml` keys kiln writes itself; setting them in a spec's extra config is an error.
pub const RESERVED_K3S_KEYS: &[&str] = &[
    "agent-token",
    "agent-token-file",
    "cluster-init",
    "node-ip",
    "node-label",
    "node-name",
    "node-taint",
    "server",
    "tls-san",
    "token",
    "token-file",
];

pub use kiln_common::{Problem, Problems};

impl ClusterSpec {
    /// Read and parse a spec file (unknown keys are errors). Does not validate: call
    /// [`ClusterSpec::validate`].
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = fs::read_to_string(path).map_err(|source| Error::ReadSpec {
            path: path.to_owned(),
            source,
        })?;
        let mut spec = Self::from_yaml(&text, path)?;
        spec.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(spec)
    }

    /// Parse spec text; `path` is only used in error messages.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, Error> {
        // Only the first line (position + reason): the parser's source excerpt could echo a
        // secret someone pasted into the spec by mistake.
        serde_saphyr::from_str(text).map_err(|e| Error::ParseSpec {
            path: path.to_owned(),
            message: e
                .to_string()
                .lines()
                .next()
                .unwrap_or("invalid YAML")
                .trim_start_matches("error: ")
                .to_owned(),
        })
    }

    /// Where the token file lives (relative paths are relative to the spec file's directory).
    pub fn token_path(&self) -> PathBuf {
        let p = &self.cluster.k3s.token_file;
        if p.is_absolute() {
            p.clone()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The servers, in spec order; the first one bootstraps the cluster.
    pub fn servers(&self) -> impl Iterator<Item = &NodeSpec> {
        self.nodes.iter().filter(|n| n.role == Role::Server)
    }

    /// The node every other node joins.
    pub fn first_server(&self) -> Option<&NodeSpec> {
        self.servers().next()
    }

    /// The disk size of `node` in bytes: its own `disk_size`, else the cluster's (validated specs
    /// only; `None` when neither is set).
    pub fn disk_size_of(&self, node: &NodeSpec) -> Option<u64> {
        node.disk_size
            .as_deref()
            .or(self.cluster.disk_size.as_deref())
            .and_then(|s| parse_size(s).ok())
    }

    /// Look a node up by name.
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Check everything that can be checked without writing anything; all problems are collected.
    /// The token file must be readable, or absent with a directory it can be created in.
    pub fn validate(&self) -> Result<(), Error> {
        let mut p = Problems::new("the cluster spec");
        self.check_cluster(&mut p);
        self.check_nodes(&mut p);
        check_token_file(&self.token_path(), &mut p);
        p.into_result().map_err(Error::Invalid)
    }

    fn check_cluster(&self, p: &mut Problems) {
        let c = &self.cluster;
        if !is_dns_label(&c.name) {
            p.push(
                "cluster.name",
                format!("cluster.name {:?} is not an RFC 1123 label", c.name),
            );
        }
        if !is_k3s_version(&c.k3s.version) {
            p.push(
                "cluster.k3s.version",
                format!(
                    "cluster.k3s.version {:?} is not a pinned k3s release like v1.34.3+k3s1",
                    c.k3s.version
                ),
            );
        }
        check_extra_keys("cluster.k3s.config", "cluster.k3s.config", &c.k3s.config, p);
        check_extra_keys(
            "cluster.k3s.agent_config",
            "cluster.k3s.agent_config",
            &c.k3s.agent_config,
            p,
        );
        for (j, san) in c.k3s.tls_san.iter().enumerate() {
            if san.parse::<IpAddr>().is_err() && !is_hostname(san) {
                p.push(
                    format!("cluster.k3s.tls_san[{j}]"),
                    format!(
                        "cluster.k3s.tls_san: {san:?} is neither an IP address nor an RFC 1123 name"
                    ),
                );
            }
        }
        let net = &c.network;
        match net.match_by {
            MatchBy::Name => {
                if net.interface.is_none() && self.nodes.iter().any(|n| n.interface.is_none()) {
                    p.push("cluster.network.interface", 
                        "cluster.network.interface is required when match is `name` (or set `interface` on every node)",
                    );
                }
            }
            MatchBy::Mac => {}
        }
        if let Some(i) = &net.interface
            && !is_ifname(i)
        {
            p.push(
                "cluster.network.interface",
                format!("cluster.network.interface {i:?} is not a valid interface name"),
            );
        }
        check_subnet::<Ipv4Addr>("cluster.network.ipv4", &net.ipv4, p);
        if let Some(v6) = &net.ipv6 {
            check_subnet::<Ipv6Addr>("cluster.network.ipv6", v6, p);
        }
        for (j, d) in net.dns.iter().enumerate() {
            if d.parse::<IpAddr>().is_err() {
                p.push(
                    format!("cluster.network.dns[{j}]"),
                    format!("cluster.network.dns: {d:?} is not an IP address"),
                );
            }
        }
        for (j, s) in net.search.iter().enumerate() {
            if !is_hostname(s) {
                p.push(
                    format!("cluster.network.search[{j}]"),
                    format!("cluster.network.search: {s:?} is not an RFC 1123 domain name"),
                );
            }
        }
        if let Some(u) = &c.user
            && !is_username(u)
        {
            p.push(
                "cluster.user",
                format!("cluster.user {u:?} is not a valid user name"),
            );
        }
        for (i, k) in c.ssh_authorized_keys.iter().enumerate() {
            if k.contains('\n') || k.split_whitespace().count() < 2 {
                p.push(format!("cluster.ssh_authorized_keys[{i}]"), format!(
                    "cluster.ssh_authorized_keys[{i}] is not a single `type base64 [comment]` line"
                ));
            }
        }
        if let Some(s) = &c.disk_size
            && let Err(e) = parse_size(s)
        {
            p.push("cluster.disk_size", format!("cluster.disk_size: {e}"));
        }
        if let Err(e) = parse_duration(&c.wait.network) {
            p.push("cluster.wait.network", format!("cluster.wait.network: {e}"));
        }
        if let Err(e) = parse_duration(&c.wait.ready) {
            p.push("cluster.wait.ready", format!("cluster.wait.ready: {e}"));
        }
    }

    fn check_nodes(&self, p: &mut Problems) {
        if self.nodes.is_empty() {
            p.push("nodes", "nodes: the cluster has no nodes");
        }
        if self.first_server().is_none() {
            p.push("nodes", "nodes: at least one node must have role `server`");
        }
        let net = &self.cluster.network;
        let nets = Nets {
            v4: parse_cidr::<Ipv4Addr>(&net.ipv4.cidr).ok(),
            v6: net
                .ipv6
                .as_ref()
                .and_then(|s| parse_cidr::<Ipv6Addr>(&s.cidr).ok()),
            gw4: net.ipv4.gateway.parse::<Ipv4Addr>().ok(),
            gw6: net
                .ipv6
                .as_ref()
                .and_then(|s| s.gateway.parse::<Ipv6Addr>().ok()),
        };
        let mut seen = Seen::default();
        for (i, n) in self.nodes.iter().enumerate() {
            let mut at = NodeAt {
                i,
                who: format!("node {:?}", n.name),
                p,
            };
            check_node_name(&mut at, n, &mut seen);
            self.check_node_ipv4(&mut at, n, &nets, &mut seen);
            self.check_node_ipv6(&mut at, n, &nets, &mut seen);
            self.check_node_nic(&mut at, n, &mut seen);
            for (k, v) in &n.labels {
                if !is_label_key(k) || !is_label_value(v) {
                    let text = format!("label {k:?}={v:?} is not a valid Kubernetes label");
                    at.bad(&format!("labels.{k}"), text);
                }
            }
            for (j, t) in n.taints.iter().enumerate() {
                if !is_taint(t) {
                    let text = format!(
                        "taint {t:?} is not `key[=value]:NoSchedule|PreferNoSchedule|NoExecute`"
                    );
                    at.bad(&format!("taints[{j}]"), text);
                }
            }
            let (field, what) = (at.field("config"), format!("{}: config", at.who));
            check_extra_keys(&field, &what, &n.config, at.p);
            if let Some(s) = &n.disk_size
                && let Err(e) = parse_size(s)
            {
                at.bad("disk_size", format!("disk_size: {e}"));
            }
        }
    }

    fn check_node_ipv4(&self, at: &mut NodeAt<'_>, n: &NodeSpec, nets: &Nets, seen: &mut Seen) {
        let cidr = &self.cluster.network.ipv4.cidr;
        let a = match n.ipv4.parse::<Ipv4Addr>() {
            Err(_) => {
                return at.bad("ipv4", format!("ipv4 {:?} is not an IPv4 address", n.ipv4));
            }
            Ok(a) => a,
        };
        if let Some(c) = &nets.v4 {
            if !c.contains(a) {
                at.bad("ipv4", format!("ipv4 {a} is outside {cidr}"));
            } else if c.is_network_or_broadcast(a) {
                let text = format!("ipv4 {a} is the network or broadcast address of {cidr}");
                at.bad("ipv4", text);
            }
        }
        if nets.gw4 == Some(a) {
            at.bad("ipv4", format!("ipv4 {a} is the gateway address"));
        }
        if let Some(prev) = seen.ips.insert(IpAddr::V4(a), n.name.clone()) {
            at.bad("ipv4", format!("ipv4 {a} is already used by node {prev:?}"));
        }
    }

    fn check_node_ipv6(&self, at: &mut NodeAt<'_>, n: &NodeSpec, nets: &Nets, seen: &mut Seen) {
        let net6 = self.cluster.network.ipv6.as_ref();
        let s = match (&n.ipv6, net6) {
            (None, None) => return,
            (Some(_), None) => {
                return at.bad("ipv6", "ipv6 is set but cluster.network.ipv6 is not");
            }
            (None, Some(_)) => {
                let text = "ipv6 is missing (cluster.network.ipv6 is set: every node needs an \
                            IPv6 address)";
                return at.bad("ipv6", text);
            }
            (Some(s), Some(_)) => s,
        };
        let Ok(a) = s.parse::<Ipv6Addr>() else {
            return at.bad("ipv6", format!("ipv6 {s:?} is not an IPv6 address"));
        };
        if let Some(c) = &nets.v6
            && !c.contains(a)
        {
            let cidr = net6.map_or("", |s| s.cidr.as_str());
            at.bad("ipv6", format!("ipv6 {a} is outside {cidr}"));
        }
        if nets.gw6 == Some(a) {
            at.bad("ipv6", format!("ipv6 {a} is the gateway address"));
        }
        if let Some(prev) = seen.ips.insert(IpAddr::V6(a), n.name.clone()) {
            at.bad("ipv6", format!("ipv6 {a} is already used by node {prev:?}"));
        }
    }

    fn check_node_nic(&self, at: &mut NodeAt<'_>, n: &NodeSpec, seen: &mut Seen) {
        match &n.mac {
            None if self.cluster.network.match_by == MatchBy::Mac => {
                at.bad("mac", "mac is required when cluster.network.match is `mac`");
            }
            None => {}
            Some(m) => match normalize_mac(m) {
                None => {
                    let text = format!("mac {m:?} is not a MAC address like 52:54:00:12:34:56");
                    at.bad("mac", text);
                }
                Some(m) => {
                    if let Some(prev) = seen.macs.insert(m.clone(), n.name.clone()) {
                        at.bad("mac", format!("mac {m} is already used by node {prev:?}"));
                    }
                }
            },
        }
        if let Some(i) = &n.interface
            && !is_ifname(i)
        {
            let text = format!("interface {i:?} is not a valid interface name");
            at.bad("interface", text);
        }
    }
}

fn check_node_name(at: &mut NodeAt<'_>, n: &NodeSpec, seen: &mut Seen) {
    if !is_dns_label(&n.name) {
        let text = "name is not an RFC 1123 hostname label (lowercase a-z, 0-9, '-', at most 63)";
        at.bad("name", text);
    }
    if let Some(prev) = seen
        .names
        .insert(n.name.to_ascii_lowercase(), n.name.clone())
    {
        at.bad("name", format!("duplicate node name (also {prev:?})"));
    }
}

/// The cluster's subnets and gateways, parsed once for the node checks.
struct Nets {
    v4: Option<Cidr<Ipv4Addr>>,
    v6: Option<Cidr<Ipv6Addr>>,
    gw4: Option<Ipv4Addr>,
    gw6: Option<Ipv6Addr>,
}

/// Names, addresses and MACs of the nodes checked so far, with the node that has each.
#[derive(Default)]
struct Seen {
    names: HashMap<String, String>,
    ips: HashMap<IpAddr, String>,
    macs: HashMap<String, String>,
}

/// Problems of one node, `nodes[i]`, told as `node "name": …`.
struct NodeAt<'p> {
    i: usize,
    who: String,
    p: &'p mut Problems,
}

impl NodeAt<'_> {
    fn field(&self, sub: &str) -> String {
        format!("nodes[{}].{sub}", self.i)
    }

    fn bad(&mut self, sub: &str, text: impl std::fmt::Display) {
        let message = format!("{}: {text}", self.who);
        self.p.push(self.field(sub), message);
    }
}

fn check_extra_keys(
    field: &str,
    what: &str,
    map: &BTreeMap<String, ConfigValue>,
    p: &mut Problems,
) {
    for k in map.keys() {
        if RESERVED_K3S_KEYS.contains(&k.as_str()) {
            p.push(
                format!("{field}.{k}"),
                format!("{what}: key {k:?} is set by kiln itself (use the spec's own fields)"),
            );
        } else if k.starts_with('-') || k.is_empty() {
            p.push(
                format!("{field}.{k}"),
                format!("{what}: key {k:?} must be a flag name without leading dashes"),
            );
        }
    }
}

fn check_subnet<A: Addr>(what: &str, s: &Subnet, p: &mut Problems) {
    let cidr = match parse_cidr::<A>(&s.cidr) {
        Ok(c) => Some(c),
        Err(e) => {
            p.push(format!("{what}.cidr"), format!("{what}.cidr: {e}"));
            None
        }
    };
    match s.gateway.parse::<A>() {
        Err(_) => p.push(
            format!("{what}.gateway"),
            format!(
                "{what}.gateway {:?} is not an {} address",
                s.gateway,
                A::FAMILY
            ),
        ),
        Ok(g) => {
            if let Some(c) = cidr
                && !c.contains(g)
            {
                p.push(
                    format!("{what}.gateway"),
                    format!("{what}.gateway {} is outside {}", s.gateway, s.cidr),
                );
            }
        }
    }
}

fn check_token_file(path: &Path, p: &mut Problems) {
    match fs::metadata(path) {
        Ok(m) if m.is_file() => {
            if let Err(e) = fs::File::open(path) {
                p.push(
                    "cluster.k3s.token_file",
                    format!(
                        "cluster.k3s.token_file {}: cannot be read: {e}",
                        path.display()
                    ),
                );
            }
        }
        Ok(_) => p.push(
            "cluster.k3s.token_file",
            format!(
                "cluster.k3s.token_file {}: is not a regular file",
                path.display()
            ),
        ),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            // Creatable: the nearest existing ancestor must be a writable directory.
            let mut dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            if dir.as_os_str().is_empty() {
                dir = PathBuf::from(".");
            }
            loop {
                match fs::metadata(&dir) {
                    Ok(m) if m.is_dir() => {
                        if m.permissions().readonly() {
                            p.push(
                                "cluster.k3s.token_file",
                                format!(
                                    "cluster.k3s.token_file {}: missing and {} is read-only",
                                    path.display(),
                                    dir.display()
                                ),
                            );
                        }
                        break;
                    }
                    Ok(_) => {
                        p.push("cluster.k3s.token_file", format!(
                            "cluster.k3s.token_file {}: missing and cannot be created ({} is not a directory)",
                            path.display(),
                            dir.display()
                        ));
                        break;
                    }
                    Err(_) => match dir.parent() {
                        Some(up) if !up.as_os_str().is_empty() => dir = up.to_path_buf(),
                        _ => break,
                    },
                }
            }
        }
        Err(e) => p.push(
            "cluster.k3s.token_file",
            format!(
                "cluster.k3s.token_file {}: cannot be read: {e}",
                path.display()
            ),
        ),
    }
}

/// An IP address family usable in a [`Cidr`].
pub trait Addr: std::str::FromStr + Copy + std::fmt::Display {
    const BITS: u32;
    const FAMILY: &'static str;
    fn to_u128(self) -> u128;
}

impl Addr for Ipv4Addr {
    const BITS: u32 = 32;
    const FAMILY: &'static str = "IPv4";
    fn to_u128(self) -> u128 {
        u128::from(u32::from(self))
    }
}

impl Addr for Ipv6Addr {
    const BITS: u32 = 128;
    const FAMILY: &'static str = "IPv6";
    fn to_u128(self) -> u128 {
        u128::from(self)
    }
}

/// `address/prefix`, with the host bits of `address` zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr<A> {
    pub network: A,
    pub prefix: u32,
}

impl<A: Addr> Cidr<A> {
    fn mask(&self) -> u128 {
        if self.prefix == 0 {
            0
        } else {
            (!0u128 << (A::BITS - self.prefix)) & (!0u128 >> (128 - A::BITS))
        }
    }

    pub fn contains(&self, a: A) -> bool {
        a.to_u128() & self.mask() == self.network.to_u128()
    }

    /// IPv4 network/broadcast addresses (meaningless for /31, /32 and IPv6).
    pub fn is_network_or_broadcast(&self, a: A) -> bool {
        if A::BITS != 32 || self.prefix >= 31 {
            return false;
        }
        let x = a.to_u128();
        x == self.network.to_u128() || x == self.network.to_u128() | !self.mask() & 0xffff_ffff
    }
}

/// Parse `192.168.122.0/24` or `fd00::/64`; host bits must be zero.
pub fn parse_cidr<A: Addr>(s: &str) -> Result<Cidr<A>, String> {
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not an {} CIDR like address/prefix", A::FAMILY))?;
    let network: A = a
        .parse()
        .map_err(|_| format!("{s:?}: {a:?} is not an {} address", A::FAMILY))?;
    let prefix: u32 = l
        .parse()
        .ok()
        .filter(|&n| n <= A::BITS)
        .ok_or_else(|| format!("{s:?}: prefix {l:?} is not 0..={}", A::BITS))?;
    let c = Cidr { network, prefix };
    if network.to_u128() & !c.mask() & (!0u128 >> (128 - A::BITS)) != 0 {
        return Err(format!("{s:?} has host bits set"));
    }
    Ok(c)
}

/// A MAC address `aa:bb:cc:dd:ee:ff` (or with `-`), returned lowercase with colons.
pub fn normalize_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(parts.join(":").to_ascii_lowercase())
}

/// One RFC 1123 label, lowercase (Kubernetes node names must be lowercase).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 host or domain name (dot-separated labels, at most 253 characters).
pub fn is_hostname(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn is_username(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
}

fn is_k3s_version(s: &str) -> bool {
    s.starts_with('v')
        && s.len() <= 64
        && s[1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
        && s[1..].starts_with(|c: char| c.is_ascii_digit())
}

fn is_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_label_key(k: &str) -> bool {
    match k.split_once('/') {
        Some((prefix, name)) => is_hostname(prefix) && is_name_part(name),
        None => is_name_part(k),
    }
}

fn is_label_value(v: &str) -> bool {
    v.is_empty() || is_name_part(v)
}

fn is_taint(t: &str) -> bool {
    let Some((kv, effect)) = t.rsplit_once(':') else {
        return false;
    };
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return false;
    }
    match kv.split_once('=') {
        Some((k, v)) => is_label_key(k) && is_label_value(v),
        None => is_label_key(kv),
    }
}

/// A disk size as specs write it: [`kiln_common::units::parse_size`]'s grammar (`80G`, `512M`,
/// `1.5T`, `10GiB`, `4096`), and not zero. Returns bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    match kiln_common::units::parse_size(s)? {
        0 => Err(format!("{s:?} is zero")),
        n => Ok(n),
    }
}

pub use kiln_common::units::parse_duration;
