//! The spec as a file writes it: every value as text. YAML and JSON are read into this form,
//! checked as a whole ([`super::check`]), and only then turned into the typed [`ClusterSpec`]; the
//! typed spec is written back through it, so both directions share one set of names and messages.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::duration_text;
use super::{
    Boot, Cluster, ClusterSpec, K3s, Manifest, MatchBy, Network, NodeSpec, Problems, Registries,
    Role, Subnet, Wait,
};
use crate::docs::{ConfigValue, VendorData};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpecFile {
    pub cluster: ClusterFile,
    pub nodes: Vec<NodeFile>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterFile {
    pub name: String,
    pub k3s: K3sFile,
    pub network: NetworkFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size: Option<String>,
    #[serde(default)]
    pub wait: WaitFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_data: Option<VendorData>,
    #[serde(default, skip_serializing_if = "Boot::is_default")]
    pub boot: Boot,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct K3sFile {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, ConfigValue>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agent_config: BTreeMap<String, ConfigValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_san: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    #[serde(default, skip_serializing_if = "Registries::is_empty")]
    pub registries: Registries,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<Manifest>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NetworkFile {
    #[serde(rename = "match", default)]
    pub match_by: MatchBy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    pub ipv4: SubnetFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<SubnetFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubnetFile {
    pub cidr: String,
    pub gateway: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitFile {
    #[serde(default = "default_network_wait")]
    pub network: String,
    #[serde(default = "default_ready_wait")]
    pub ready: String,
}

impl Default for WaitFile {
    fn default() -> Self {
        WaitFile {
            network: default_network_wait(),
            ready: default_ready_wait(),
        }
    }
}

fn default_network_wait() -> String {
    duration_text(Wait::default().network)
}

fn default_ready_wait() -> String {
    duration_text(Wait::default().ready)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeFile {
    pub name: String,
    pub role: Role,
    pub ipv4: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, ConfigValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size: Option<String>,
}

fn text<T: ToString>(v: &T) -> String {
    v.to_string()
}

impl From<&ClusterSpec> for SpecFile {
    fn from(spec: &ClusterSpec) -> SpecFile {
        let c = &spec.cluster;
        let net = &c.network;
        SpecFile {
            cluster: ClusterFile {
                name: c.name.clone(),
                k3s: K3sFile {
                    version: c.k3s.version.clone(),
                    token_file: c.k3s.token_file.clone(),
                    config: c.k3s.config.clone(),
                    agent_config: c.k3s.agent_config.clone(),
                    tls_san: c.k3s.tls_san.clone(),
                    server_url: c.k3s.server_url.clone(),
                    registries: c.k3s.registries.clone(),
                    manifests: c.k3s.manifests.clone(),
                },
                network: NetworkFile {
                    match_by: net.match_by,
                    interface: net.interface.clone(),
                    ipv4: SubnetFile::from(&net.ipv4),
                    ipv6: net.ipv6.as_ref().map(SubnetFile::from),
                    dns: net.dns.iter().map(text).collect(),
                    search: net.search.clone(),
                },
                user: c.user.clone(),
                ssh_authorized_keys: c.ssh_authorized_keys.clone(),
                disk_size: c.disk_size.as_ref().map(text),
                wait: WaitFile {
                    network: duration_text(c.wait.network),
                    ready: duration_text(c.wait.ready),
                },
                vendor_data: c.vendor_data.clone(),
                boot: c.boot,
            },
            nodes: spec.nodes.iter().map(NodeFile::from).collect(),
        }
    }
}

impl<A: std::fmt::Display> From<&Subnet<A>> for SubnetFile
where
    super::Cidr<A>: std::fmt::Display,
{
    fn from(s: &Subnet<A>) -> SubnetFile {
        SubnetFile {
            cidr: text(&s.cidr),
            gateway: text(&s.gateway),
        }
    }
}

impl From<&NodeSpec> for NodeFile {
    fn from(n: &NodeSpec) -> NodeFile {
        NodeFile {
            name: n.name.clone(),
            role: n.role,
            ipv4: text(&n.ipv4),
            ipv6: n.ipv6.as_ref().map(text),
            mac: n.mac.as_ref().map(text),
            interface: n.interface.clone(),
            labels: n.labels.clone(),
            taints: n.taints.clone(),
            config: n.config.clone(),
            disk_size: n.disk_size.as_ref().map(text),
        }
    }
}

/// Parses a value the check has already accepted; a failure here is a problem all the same (the
/// check and the parse disagreeing must not panic).
struct Parser<'p> {
    p: &'p mut Problems,
}

impl Parser<'_> {
    fn get<T: std::str::FromStr>(&mut self, field: &str, text: &str) -> Option<T>
    where
        T::Err: std::fmt::Display,
    {
        match text.parse() {
            Ok(v) => Some(v),
            Err(e) => {
                self.p.push(field.to_owned(), format!("{field}: {e}"));
                None
            }
        }
    }

    fn opt<T: std::str::FromStr>(&mut self, field: &str, text: Option<&String>) -> Option<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        match text {
            None => Some(None),
            Some(t) => self.get(field, t).map(Some),
        }
    }

    fn secs(&mut self, field: &str, text: &str) -> Option<Duration> {
        match super::values::parse_duration(text) {
            Ok(s) => Some(Duration::from_secs(s)),
            Err(e) => {
                self.p.push(field.to_owned(), format!("{field}: {e}"));
                None
            }
        }
    }
}

impl SpecFile {
    /// Check every value, then type them: all problems at once, or the typed spec.
    pub(crate) fn into_typed(self) -> Result<ClusterSpec, Problems> {
        let mut p = Problems::new("the cluster spec");
        self.check(&mut p);
        if !p.list.is_empty() {
            return Err(p);
        }
        let typed = self.typed(&mut Parser { p: &mut p });
        match typed {
            Some(spec) if p.list.is_empty() => Ok(spec),
            _ => Err(p),
        }
    }

    fn typed(self, x: &mut Parser<'_>) -> Option<ClusterSpec> {
        let c = self.cluster;
        let n = c.network;
        let ipv6 = match &n.ipv6 {
            None => None,
            Some(s) => Some(Subnet {
                cidr: x.get("cluster.network.ipv6.cidr", &s.cidr)?,
                gateway: x.get("cluster.network.ipv6.gateway", &s.gateway)?,
            }),
        };
        let network = Network {
            match_by: n.match_by,
            interface: n.interface,
            ipv4: Subnet {
                cidr: x.get("cluster.network.ipv4.cidr", &n.ipv4.cidr)?,
                gateway: x.get("cluster.network.ipv4.gateway", &n.ipv4.gateway)?,
            },
            ipv6,
            dns: n
                .dns
                .iter()
                .map(|d| x.get("cluster.network.dns", d))
                .collect::<Option<_>>()?,
            search: n.search,
        };
        let cluster = Cluster {
            name: c.name,
            k3s: K3s {
                version: c.k3s.version,
                token_file: c.k3s.token_file,
                config: c.k3s.config,
                agent_config: c.k3s.agent_config,
                tls_san: c.k3s.tls_san,
                server_url: c.k3s.server_url,
                registries: c.k3s.registries,
                manifests: c.k3s.manifests,
            },
            network,
            user: c.user,
            ssh_authorized_keys: c.ssh_authorized_keys,
            disk_size: x.opt("cluster.disk_size", c.disk_size.as_ref())?,
            wait: Wait {
                network: x.secs("cluster.wait.network", &c.wait.network)?,
                ready: x.secs("cluster.wait.ready", &c.wait.ready)?,
            },
            vendor_data: c.vendor_data,
            boot: c.boot,
        };
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for (i, f) in self.nodes.into_iter().enumerate() {
            let at = |sub: &str| format!("nodes[{i}].{sub}");
            nodes.push(NodeSpec {
                ipv4: x.get(&at("ipv4"), &f.ipv4)?,
                ipv6: x.opt(&at("ipv6"), f.ipv6.as_ref())?,
                mac: x.opt(&at("mac"), f.mac.as_ref())?,
                disk_size: x.opt(&at("disk_size"), f.disk_size.as_ref())?,
                name: f.name,
                role: f.role,
                interface: f.interface,
                labels: f.labels,
                taints: f.taints,
                config: f.config,
            });
        }
        Some(ClusterSpec {
            cluster,
            nodes,
            base_dir: PathBuf::new(),
        })
    }
}
