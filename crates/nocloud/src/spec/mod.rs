//! The cluster spec: one YAML file (or a value made in code) describing a k3s cluster and its
//! nodes, and its validation.
//!
//! Values are typed — addresses, subnets with prefixes, MACs, byte sizes, durations — but a spec
//! file is first read as text and checked as a whole, so that *every* problem is reported at once,
//! each with its field path (`nodes[2].ipv4`), rather than the first one a typed parse trips over.
//! A spec made in code goes through the same check ([`ClusterSpec::validate`]) with the same
//! messages. Unknown keys are rejected at load time.
//!
//! ```
//! use kiln_nocloud::spec::{ByteSize, ClusterSpec, Cluster, Network, NodeSpec, Subnet};
//! let network = Network::new(Subnet::new("192.168.122.0/24".parse()?, "192.168.122.1".parse()?))
//!     .with_interface("ens3")
//!     .with_dns("192.168.122.1".parse()?);
//! let spec = ClusterSpec::new(
//!     Cluster::new("lab", "v1.34.3+k3s1", network).with_disk_size(ByteSize::gib(20)),
//!     vec![
//!         NodeSpec::server("cp-01", "192.168.122.10".parse()?).with_mac("52:54:00:00:00:10".parse()?),
//!         NodeSpec::agent("w-01", "192.168.122.11".parse()?).with_mac("52:54:00:00:00:11".parse()?),
//!     ],
//! );
//! spec.validate()?; // no token file named: the caller passes its token in code
//! assert_eq!(spec.first_server().map(|n| n.name.as_str()), Some("cp-01"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod check;
mod file;
mod inputs;
mod values;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;
use crate::docs::{ConfigValue, VendorData};

pub use check::{is_dns_label, is_hostname};
pub(crate) use check::{manifest_problem, server_url_host};
pub use inputs::{
    MANIFESTS_DIR, Manifest, Mirror, REGISTRIES_PATH, Registries, RegistryAuth, RegistryConfig,
    RegistryTls,
};
pub use kiln_common::{Problem, Problems};
pub use values::{
    Addr, ByteSize, Cidr, MacAddr, normalize_mac, parse_cidr, parse_duration, parse_size,
};

/// A whole cluster: the settings every node shares and the nodes themselves.
///
/// Serialises (YAML, JSON) as the spec file format and reads back to an equal value; reading
/// checks every value, so a deserialised spec is always well-formed (cross-field rules too).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterSpec {
    /// The `cluster:` section.
    pub cluster: Cluster,
    /// The `nodes:` list, in order; the first server bootstraps the cluster.
    pub nodes: Vec<NodeSpec>,
    /// The directory a relative `cluster.k3s.token_file` is resolved against: the spec file's
    /// directory when loaded with [`ClusterSpec::load`], else empty (the current directory). Not
    /// part of the file.
    pub base_dir: PathBuf,
}

/// The `cluster:` section: what every node shares.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cluster {
    /// `name`: the cluster's name, an RFC 1123 label; part of every node's instance id.
    pub name: String,
    /// `k3s`: the pinned release and its configuration.
    pub k3s: K3s,
    /// `network`: the one network all nodes are on.
    pub network: Network,
    /// `user`: a sudo user created with the authorized keys; `None` gives the keys to the
    /// image's default user instead.
    pub user: Option<String>,
    /// `ssh_authorized_keys`: OpenSSH public key lines (`type base64 [comment]`).
    pub ssh_authorized_keys: Vec<String>,
    /// `disk_size`: every node's overlay size unless the node sets its own; `None` uses the golden
    /// image's virtual size.
    pub disk_size: Option<ByteSize>,
    /// `wait`: bounds of the first-boot waits.
    pub wait: Wait,
    /// `vendor_data`: an optional cloud-config shipped as every node's `vendor-data` (the same
    /// typed subset as user-data; user-data wins where both set a key).
    pub vendor_data: Option<VendorData>,
    /// `boot`: what the nodes boot from; default [`Boot::Disk`].
    pub boot: Boot,
}

/// `cluster.boot`: what the nodes boot from, which decides what `kiln cluster` writes per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Boot {
    /// `disk` (the default): a virtual machine's disk — a qcow2 overlay of the golden image and a
    /// NoCloud seed ISO per node.
    #[default]
    Disk,
    /// `sd_card`: a board that boots from an SD card (a Raspberry Pi) — one flashable raw image
    /// per node, the golden image with the node's `user-data`, `network-config` and `meta-data`
    /// in its FAT partition labelled [`SD_CARD_SEED_LABEL`], where the image's cloud-init looks
    /// for its NoCloud seed. `disk_size` does not apply (cloud-init grows the root filesystem to
    /// the card on first boot).
    SdCard,
}

impl Boot {
    /// Whether this is the default ([`Boot::Disk`]), which a written spec leaves out.
    pub fn is_default(&self) -> bool {
        *self == Boot::Disk
    }
}

/// The FAT label of the partition an SD-card node's seed goes into: Ubuntu's Raspberry Pi
/// images mount it on `/boot/firmware` and point NoCloud at it (`fs_label: system-boot`).
pub const SD_CARD_SEED_LABEL: &str = "system-boot";

/// `cluster.k3s`: the pinned release and its `config.yaml` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct K3s {
    /// `version`: a pinned release such as `v1.34.3+k3s1` (it must match the golden image's).
    pub version: String,
    /// `token_file`: where the cluster token is kept (created 0600 when missing); relative to
    /// [`ClusterSpec::base_dir`]. `None` when the caller hands the token over in code.
    pub token_file: Option<PathBuf>,
    /// `config`: extra `config.yaml` keys for every server (kiln's own keys are refused).
    pub config: BTreeMap<String, ConfigValue>,
    /// `agent_config`: extra `config.yaml` keys for every agent.
    pub agent_config: BTreeMap<String, ConfigValue>,
    /// `tls_san`: extra subject alternative names (IPs or DNS names) on the servers' API
    /// certificate.
    pub tls_san: Vec<String>,
    /// `server_url`: a fixed registration address in front of the servers (a VIP or DNS name,
    /// `https://k8s.lab.internal:6443`). When set, agents and joining servers register there
    /// instead of at the first server's own address, and its host is in every server's
    /// `tls-san`.
    pub server_url: Option<String>,
    /// `registries`: private registries and mirrors, `/etc/rancher/k3s/registries.yaml` on every
    /// node (not written when empty).
    pub registries: Registries,
    /// `manifests`: files k3s applies on the servers (auto-deploy manifests), pinned by sha256.
    pub manifests: Vec<Manifest>,
}

/// `cluster.network.match`: how a node's `network-config` finds its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchBy {
    /// By the node's `mac` (required on every node); the interface is renamed to `interface`
    /// when one is set.
    #[default]
    Mac,
    /// By interface name (`interface` on the network or on every node).
    Name,
}

/// `cluster.network`: one subnet (IPv4, optionally IPv6) with static addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Network {
    /// `match`: how the interface is found; default [`MatchBy::Mac`].
    pub match_by: MatchBy,
    /// `interface`: the interface name to match or to set; a node's own `interface` wins.
    pub interface: Option<String>,
    /// `ipv4`: the IPv4 subnet and gateway.
    pub ipv4: Subnet<Ipv4Addr>,
    /// `ipv6`: the IPv6 subnet and gateway; when set every node needs an `ipv6`.
    pub ipv6: Option<Subnet<Ipv6Addr>>,
    /// `dns`: resolvers; the first one is what the first-boot network wait looks for.
    pub dns: Vec<IpAddr>,
    /// `search`: DNS search domains; the first one makes each node's FQDN.
    pub search: Vec<String>,
}

/// A subnet and its gateway (`{ cidr: 192.168.122.0/24, gateway: 192.168.122.1 }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Subnet<A> {
    /// `cidr`: network address and prefix; host bits must be zero.
    pub cidr: Cidr<A>,
    /// `gateway`: the default route's next hop, inside `cidr`.
    pub gateway: A,
}

impl<A> Subnet<A> {
    /// A subnet with its gateway.
    pub fn new(cidr: Cidr<A>, gateway: A) -> Self {
        Subnet { cidr, gateway }
    }
}

/// `cluster.wait`: how long first boot waits before giving up (written `300s`, `5m`, `1h30m`;
/// whole seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Wait {
    /// `network`: for the node's address, the default route and DNS (default 300 s).
    pub network: Duration,
    /// `ready`: for k3s to be ready after the install (default 600 s).
    pub ready: Duration,
}

impl Default for Wait {
    fn default() -> Self {
        Wait {
            network: Duration::from_secs(300),
            ready: Duration::from_secs(600),
        }
    }
}

/// A node's role in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A k3s server (control plane); the first one in the spec bootstraps the cluster.
    Server,
    /// A k3s agent (worker), joining the first server.
    Agent,
}

impl Role {
    /// `server` or `agent`, as specs and k3s write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

/// One entry of `nodes:`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeSpec {
    /// `name`: hostname and Kubernetes node name, an RFC 1123 label, unique in the cluster.
    pub name: String,
    /// `role`: server or agent.
    pub role: Role,
    /// `ipv4`: the node's static address inside `cluster.network.ipv4` (the prefix is the
    /// subnet's).
    pub ipv4: Ipv4Addr,
    /// `ipv6`: the node's static IPv6 address, required exactly when the network has IPv6.
    pub ipv6: Option<Ipv6Addr>,
    /// `mac`: the NIC's MAC address; required when the network matches by MAC.
    pub mac: Option<MacAddr>,
    /// `interface`: overrides `cluster.network.interface` for this node.
    pub interface: Option<String>,
    /// `labels`: Kubernetes labels (`node-label`).
    pub labels: BTreeMap<String, String>,
    /// `taints`: `key[=value]:Effect` (`node-taint`).
    pub taints: Vec<String>,
    /// `config`: extra `config.yaml` keys, laid over the cluster's `config`/`agent_config`.
    pub config: BTreeMap<String, ConfigValue>,
    /// `disk_size`: this node's overlay size, over `cluster.disk_size`.
    pub disk_size: Option<ByteSize>,
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

impl ClusterSpec {
    /// A spec of `cluster` and `nodes`, with no base directory (a relative token file is
    /// resolved against the current directory).
    pub fn new(cluster: Cluster, nodes: Vec<NodeSpec>) -> Self {
        ClusterSpec {
            cluster,
            nodes,
            base_dir: PathBuf::new(),
        }
    }

    /// Read, parse and check a spec file: unknown keys are errors, and every value problem is
    /// reported at once ([`Error::Invalid`]), with the token file's own problem when it names
    /// one. The token file's directory is the spec file's.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadSpec {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let file = parse_file(&text, path)?;
        let mut token = Problems::new("the cluster spec");
        if let Some(t) = &file.cluster.k3s.token_file {
            check::check_token_file(&resolve(&base_dir, t), &mut token);
        }
        check::check_input_files(&file, &base_dir, &mut token);
        let mut spec = file.into_typed().map_err(|mut p| {
            p.list.append(&mut token.list);
            Error::Invalid(p)
        })?;
        token.into_result().map_err(Error::Invalid)?;
        spec.base_dir = base_dir;
        Ok(spec)
    }

    /// Parse and check spec text (the token file is not looked at); `path` only names the text in
    /// errors.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, Error> {
        parse_file(text, path)?.into_typed().map_err(Error::Invalid)
    }

    /// The spec as YAML text, in the file format [`ClusterSpec::from_yaml`] reads.
    pub fn to_yaml(&self) -> Result<String, Error> {
        crate::yaml::to_string(&file::SpecFile::from(self), "cluster spec")
    }

    /// Where the token file lives (relative paths are relative to [`ClusterSpec::base_dir`]);
    /// `None` when the spec names none.
    pub fn token_path(&self) -> Option<PathBuf> {
        self.cluster
            .k3s
            .token_file
            .as_deref()
            .map(|p| resolve(&self.base_dir, p))
    }

    /// The servers, in spec order; the first one bootstraps the cluster.
    pub fn servers(&self) -> impl Iterator<Item = &NodeSpec> {
        self.nodes.iter().filter(|n| n.role == Role::Server)
    }

    /// The node every other node joins.
    pub fn first_server(&self) -> Option<&NodeSpec> {
        self.servers().next()
    }

    /// The disk size of `node` in bytes: its own `disk_size`, else the cluster's; `None` when
    /// neither is set.
    pub fn disk_size_of(&self, node: &NodeSpec) -> Option<u64> {
        node.disk_size.or(self.cluster.disk_size).map(|s| s.0)
    }

    /// Look a node up by name.
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Check everything that can be checked without writing anything; all problems are
    /// collected, each with its field path. When the spec names a token file, it must be
    /// readable, or absent with a directory it can be created in; every registry password file
    /// must be readable and not empty, every manifest readable UTF-8 text with its pinned sha256.
    pub fn validate(&self) -> Result<(), Error> {
        let mut p = Problems::new("the cluster spec");
        let file = file::SpecFile::from(self);
        file.check(&mut p);
        if let Some(t) = self.token_path() {
            check::check_token_file(&t, &mut p);
        }
        check::check_input_files(&file, &self.base_dir, &mut p);
        p.into_result().map_err(Error::Invalid)
    }

    /// Where a file the spec names (a registry `password_file`, a manifest `source`) lives:
    /// relative paths are relative to [`ClusterSpec::base_dir`].
    pub fn input_path(&self, p: &Path) -> PathBuf {
        resolve(&self.base_dir, p)
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn parse_file(text: &str, path: &Path) -> Result<file::SpecFile, Error> {
    // Only the first line (position + reason): the parser's source excerpt could echo a secret
    // someone pasted into the spec by mistake.
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

impl Serialize for ClusterSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        file::SpecFile::from(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ClusterSpec {
    /// Reads the file format and checks every value (not the token file): a problem is an error
    /// listing them all.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        file::SpecFile::deserialize(d)?
            .into_typed()
            .map_err(serde::de::Error::custom)
    }
}

impl Cluster {
    /// A cluster named `name` running k3s `version` on `network`, with the defaults a spec file
    /// has when a key is left out (no token file, no user, no keys, the golden's disk size, the
    /// default waits, no vendor-data).
    pub fn new(name: impl Into<String>, version: impl Into<String>, network: Network) -> Self {
        Cluster {
            name: name.into(),
            k3s: K3s::new(version),
            network,
            user: None,
            ssh_authorized_keys: Vec::new(),
            disk_size: None,
            wait: Wait::default(),
            vendor_data: None,
            boot: Boot::Disk,
        }
    }

    /// What the nodes boot from ([`Boot::SdCard`]: one flashable image per node).
    #[must_use]
    pub fn with_boot(mut self, boot: Boot) -> Self {
        self.boot = boot;
        self
    }

    /// Keep the cluster token in `path` (created 0600 when missing).
    #[must_use]
    pub fn with_token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.k3s.token_file = Some(path.into());
        self
    }

    /// Create `user` (passwordless sudo) with the authorized keys.
    #[must_use]
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Add an authorized SSH public key line.
    #[must_use]
    pub fn with_ssh_key(mut self, key: impl Into<String>) -> Self {
        self.ssh_authorized_keys.push(key.into());
        self
    }

    /// Every node's disk size unless the node sets its own.
    #[must_use]
    pub fn with_disk_size(mut self, size: ByteSize) -> Self {
        self.disk_size = Some(size);
        self
    }

    /// Register agents and joining servers at `url` (a VIP or DNS name in front of the
    /// servers, `https://host[:port]`).
    #[must_use]
    pub fn with_server_url(mut self, url: impl Into<String>) -> Self {
        self.k3s.server_url = Some(url.into());
        self
    }

    /// Private registries and mirrors for every node.
    #[must_use]
    pub fn with_registries(mut self, registries: Registries) -> Self {
        self.k3s.registries = registries;
        self
    }

    /// Add an auto-deploy manifest for the servers.
    #[must_use]
    pub fn with_manifest(mut self, manifest: Manifest) -> Self {
        self.k3s.manifests.push(manifest);
        self
    }

    /// The first-boot waits.
    #[must_use]
    pub fn with_wait(mut self, network: Duration, ready: Duration) -> Self {
        self.wait = Wait { network, ready };
        self
    }
}

impl K3s {
    /// k3s `version` with no token file and no extra configuration.
    pub fn new(version: impl Into<String>) -> Self {
        K3s {
            version: version.into(),
            token_file: None,
            config: BTreeMap::new(),
            agent_config: BTreeMap::new(),
            tls_san: Vec::new(),
            server_url: None,
            registries: Registries::new(),
            manifests: Vec::new(),
        }
    }
}

impl Network {
    /// An IPv4 network matched by MAC, with no interface name, IPv6, resolvers or search domains.
    pub fn new(ipv4: Subnet<Ipv4Addr>) -> Self {
        Network {
            match_by: MatchBy::Mac,
            interface: None,
            ipv4,
            ipv6: None,
            dns: Vec::new(),
            search: Vec::new(),
        }
    }

    /// Match interfaces by name instead of MAC.
    #[must_use]
    pub fn match_by_name(mut self) -> Self {
        self.match_by = MatchBy::Name;
        self
    }

    /// The interface name to match or set.
    #[must_use]
    pub fn with_interface(mut self, name: impl Into<String>) -> Self {
        self.interface = Some(name.into());
        self
    }

    /// Add IPv6 (every node then needs an `ipv6`).
    #[must_use]
    pub fn with_ipv6(mut self, subnet: Subnet<Ipv6Addr>) -> Self {
        self.ipv6 = Some(subnet);
        self
    }

    /// Add a resolver.
    #[must_use]
    pub fn with_dns(mut self, resolver: IpAddr) -> Self {
        self.dns.push(resolver);
        self
    }

    /// Add a search domain.
    #[must_use]
    pub fn with_search(mut self, domain: impl Into<String>) -> Self {
        self.search.push(domain.into());
        self
    }
}

impl NodeSpec {
    /// A node with `role`, `name` and `ipv4`, and nothing else set.
    pub fn new(name: impl Into<String>, role: Role, ipv4: Ipv4Addr) -> Self {
        NodeSpec {
            name: name.into(),
            role,
            ipv4,
            ipv6: None,
            mac: None,
            interface: None,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            config: BTreeMap::new(),
            disk_size: None,
        }
    }

    /// A server node.
    pub fn server(name: impl Into<String>, ipv4: Ipv4Addr) -> Self {
        Self::new(name, Role::Server, ipv4)
    }

    /// An agent node.
    pub fn agent(name: impl Into<String>, ipv4: Ipv4Addr) -> Self {
        Self::new(name, Role::Agent, ipv4)
    }

    /// The NIC's MAC address.
    #[must_use]
    pub fn with_mac(mut self, mac: MacAddr) -> Self {
        self.mac = Some(mac);
        self
    }

    /// The node's IPv6 address.
    #[must_use]
    pub fn with_ipv6(mut self, a: Ipv6Addr) -> Self {
        self.ipv6 = Some(a);
        self
    }

    /// The interface name, over the network's.
    #[must_use]
    pub fn with_interface(mut self, name: impl Into<String>) -> Self {
        self.interface = Some(name.into());
        self
    }

    /// A Kubernetes label.
    #[must_use]
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// A taint, `key[=value]:Effect`.
    #[must_use]
    pub fn with_taint(mut self, taint: impl Into<String>) -> Self {
        self.taints.push(taint.into());
        self
    }

    /// An extra `config.yaml` key.
    #[must_use]
    pub fn with_config(mut self, key: impl Into<String>, value: ConfigValue) -> Self {
        self.config.insert(key.into(), value);
        self
    }

    /// This node's disk size.
    #[must_use]
    pub fn with_disk_size(mut self, size: ByteSize) -> Self {
        self.disk_size = Some(size);
        self
    }
}
