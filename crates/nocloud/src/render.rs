//! From a validated [`ClusterSpec`] to the four NoCloud documents of one node.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::docs::{
    CloudConfig, Command, ConfigValue, DefaultUser, Ethernet, K3sConfig, Match, MetaData,
    Nameservers, NetworkConfig, NetworkV2, Route, User, UserSpec, WriteFile,
};
use crate::spec::{ClusterSpec, MANIFESTS_DIR, Manifest, MatchBy, NodeSpec, REGISTRIES_PATH, Role};
use crate::{Error, K3S_INSTALL_SCRIPT, Token};

/// Where k3s reads its per-node settings.
pub const K3S_CONFIG_PATH: &str = "/etc/rancher/k3s/config.yaml";

/// The documents of one node's seed, serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeSeed {
    /// The node's name.
    pub node: String,
    /// The node's role.
    pub role: Role,
    /// The `instance-id` in `meta_data`: `<node>-` and 16 hex digits of a hash of the documents.
    pub instance_id: String,
    /// `meta-data` bytes.
    pub meta_data: Vec<u8>,
    /// `user-data` bytes (`#cloud-config`). Contains the cluster token: never print or log it.
    pub user_data: Vec<u8>,
    /// `network-config` bytes (version 2).
    pub network_config: Vec<u8>,
    /// `vendor-data` bytes, when the spec has `cluster.vendor_data`.
    pub vendor_data: Option<Vec<u8>>,
}

impl std::fmt::Debug for NodeSeed {
    // user-data holds the token: keep it out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSeed")
            .field("node", &self.node)
            .field("role", &self.role)
            .field("instance_id", &self.instance_id)
            .field(
                "user_data",
                &format_args!("<{} bytes, redacted>", self.user_data.len()),
            )
            .finish_non_exhaustive()
    }
}

impl NodeSeed {
    /// The files of the seed volume, sorted by name: `meta-data`, `network-config`, `user-data`
    /// and, when present, `vendor-data`.
    pub fn files(&self) -> Vec<(&'static str, &[u8])> {
        let mut v: Vec<(&'static str, &[u8])> = vec![
            ("meta-data", &self.meta_data),
            ("network-config", &self.network_config),
            ("user-data", &self.user_data),
        ];
        if let Some(vd) = &self.vendor_data {
            v.push(("vendor-data", vd));
        }
        v
    }
}

/// Render every node of `spec`, in spec order. `spec` must have passed [`ClusterSpec::validate`].
pub fn render_all(spec: &ClusterSpec, token: &Token) -> Result<Vec<NodeSeed>, Error> {
    spec.nodes
        .iter()
        .map(|n| render_node(spec, n, token))
        .collect()
}

/// Render one node's seed. `spec` must have passed [`ClusterSpec::validate`].
pub fn render_node(spec: &ClusterSpec, node: &NodeSpec, token: &Token) -> Result<NodeSeed, Error> {
    let user_data = user_data(spec, node, token)?.to_bytes()?;
    let network_config = network_config(spec, node)?.to_bytes()?;
    let vendor_data: Option<Vec<u8>> = match &spec.cluster.vendor_data {
        Some(v) => Some(v.to_bytes()?),
        None => None,
    };

    let mut h = Sha256::new();
    for (name, part) in [
        ("local-hostname", node.name.as_bytes()),
        ("user-data", &user_data[..]),
        ("network-config", &network_config[..]),
        ("vendor-data", vendor_data.as_deref().unwrap_or(b"")),
    ] {
        h.update(name.as_bytes());
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    let instance_id = format!("{}-{}", node.name, hex(&digest[..8]));
    let meta_data = MetaData {
        instance_id: instance_id.clone(),
        local_hostname: node.name.clone(),
    }
    .to_bytes()?;
    Ok(NodeSeed {
        node: node.name.clone(),
        role: node.role,
        instance_id,
        meta_data,
        user_data,
        network_config,
        vendor_data,
    })
}

pub(crate) use kiln_common::digest::hex;

fn fqdn(spec: &ClusterSpec, node: &NodeSpec) -> Option<String> {
    spec.cluster
        .network
        .search
        .first()
        .map(|d| format!("{}.{d}", node.name))
}

/// The node's `network-config`: one ethernet, static addresses, default routes, DNS.
pub fn network_config(spec: &ClusterSpec, node: &NodeSpec) -> Result<NetworkConfig, Error> {
    let net = &spec.cluster.network;
    let mut eth = Ethernet {
        dhcp4: Some(false),
        ..Default::default()
    };
    eth.addresses
        .push(format!("{}/{}", node.ipv4, net.ipv4.cidr.prefix));
    // `0.0.0.0/0` and `::/0` rather than `default`: netplan takes either, but cloud-init before 23.x
    // rejects `default` when it renders for networkd/ENI (seen with Debian 12's 22.4).
    eth.routes.push(Route {
        to: "0.0.0.0/0".into(),
        via: net.ipv4.gateway.to_string(),
    });
    if let (Some(sub), Some(a6)) = (&net.ipv6, &node.ipv6) {
        eth.dhcp6 = Some(false);
        eth.accept_ra = Some(false);
        eth.addresses.push(format!("{a6}/{}", sub.cidr.prefix));
        eth.routes.push(Route {
            to: "::/0".into(),
            via: sub.gateway.to_string(),
        });
    }
    if !net.dns.is_empty() || !net.search.is_empty() {
        eth.nameservers = Some(Nameservers {
            addresses: net.dns.iter().map(ToString::to_string).collect(),
            search: net.search.clone(),
        });
    }
    let ifname = node.interface.clone().or_else(|| net.interface.clone());
    let id = match net.match_by {
        MatchBy::Mac => {
            let mac = node
                .mac
                .map(|m| m.to_string())
                .ok_or_else(|| Error::Render {
                    node: node.name.clone(),
                    message: "no valid mac".into(),
                })?;
            eth.match_ = Some(Match {
                macaddress: Some(mac),
                name: None,
            });
            eth.set_name = ifname.clone();
            ifname.unwrap_or_else(|| "primary".into())
        }
        MatchBy::Name => {
            let name = ifname.ok_or_else(|| Error::Render {
                node: node.name.clone(),
                message: "no interface name to match".into(),
            })?;
            eth.match_ = Some(Match {
                macaddress: None,
                name: Some(name.clone()),
            });
            name
        }
    };
    Ok(NetworkConfig {
        network: NetworkV2 {
            version: 2,
            ethernets: BTreeMap::from([(id, eth)]),
        },
    })
}

/// The k3s `config.yaml` of a node (contains the token).
pub fn k3s_config(spec: &ClusterSpec, node: &NodeSpec, token: &Token) -> K3sConfig {
    let k3s = &spec.cluster.k3s;
    let mut cfg: K3sConfig = match node.role {
        Role::Server => k3s.config.clone(),
        Role::Agent => k3s.agent_config.clone(),
    };
    for (k, v) in &node.config {
        cfg.insert(k.clone(), v.clone());
    }
    cfg.insert("token".into(), ConfigValue::Str(token.expose().to_owned()));
    let first = spec.first_server();
    let is_first = first.is_some_and(|f| f.name == node.name);
    let multi_server = spec.servers().count() > 1;
    if is_first {
        if multi_server {
            cfg.insert("cluster-init".into(), ConfigValue::Bool(true));
        }
    } else if let Some(url) = &k3s.server_url {
        cfg.insert("server".into(), ConfigValue::Str(url.clone()));
    } else if let Some(f) = first {
        cfg.insert(
            "server".into(),
            ConfigValue::Str(format!("https://{}:6443", f.ipv4)),
        );
    }
    let mut ips = vec![node.ipv4.to_string()];
    if let Some(v6) = &node.ipv6 {
        ips.push(v6.to_string());
    }
    cfg.insert("node-ip".into(), ConfigValue::Str(ips.join(",")));
    if node.role == Role::Server {
        let mut sans = ips.clone();
        sans.push(node.name.clone());
        if let Some(f) = fqdn(spec, node) {
            sans.push(f);
        }
        sans.extend(k3s.tls_san.iter().cloned());
        if let Some(host) = k3s
            .server_url
            .as_deref()
            .and_then(crate::spec::server_url_host)
            && !sans.contains(&host)
        {
            sans.push(host);
        }
        cfg.insert("tls-san".into(), sans.into());
    }
    if !node.labels.is_empty() {
        let labels: Vec<String> = node
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        cfg.insert("node-label".into(), labels.into());
    }
    if !node.taints.is_empty() {
        cfg.insert("node-taint".into(), node.taints.clone().into());
    }
    cfg
}

/// The node's cloud-config.
pub fn user_data(spec: &ClusterSpec, node: &NodeSpec, token: &Token) -> Result<CloudConfig, Error> {
    let c = &spec.cluster;
    let config_yaml = crate::yaml::to_string(&k3s_config(spec, node, token), "k3s config.yaml")?;
    // A named user replaces the image's default user (listing both would make cloud-init merge
    // two entries when the names coincide, e.g. `ubuntu`); without one, keys go to the default user.
    let (users, default_user_keys) = match &c.user {
        Some(name) => (
            vec![User::Full(UserSpec {
                name: name.clone(),
                groups: Some("sudo".into()),
                shell: Some("/bin/bash".into()),
                sudo: Some("ALL=(ALL) NOPASSWD:ALL".into()),
                lock_passwd: Some(true),
                ssh_authorized_keys: c.ssh_authorized_keys.clone(),
            })],
            Vec::new(),
        ),
        None => (
            vec![User::Default(DefaultUser::Default)],
            c.ssh_authorized_keys.clone(),
        ),
    };
    let mut write_files = vec![root_file(K3S_CONFIG_PATH.into(), config_yaml)];
    if let Some(registries) = registries_yaml(spec)? {
        write_files.push(root_file(REGISTRIES_PATH.into(), registries));
    }
    if node.role == Role::Server {
        for (i, m) in c.k3s.manifests.iter().enumerate() {
            let (name, content) = manifest(spec, i, m)?;
            write_files.push(root_file(format!("{MANIFESTS_DIR}/{name}"), content));
        }
    }
    let net_wait = c.wait.network.as_secs();
    let ready_wait = c.wait.ready.as_secs();
    let exec = node.role.as_str();
    let runcmd = vec![
        Command::Argv(vec![
            "hostnamectl".into(),
            "set-hostname".into(),
            node.name.clone(),
        ]),
        Command::Shell(network_wait_script(spec, node, net_wait)),
        Command::Argv(vec![
            "env".into(),
            "INSTALL_K3S_SKIP_DOWNLOAD=true".into(),
            format!("INSTALL_K3S_VERSION={}", c.k3s.version),
            format!("INSTALL_K3S_EXEC={exec}"),
            "sh".into(),
            K3S_INSTALL_SCRIPT.into(),
        ]),
        Command::Shell(ready_wait_script(node, ready_wait)),
    ];
    Ok(CloudConfig {
        hostname: Some(node.name.clone()),
        fqdn: fqdn(spec, node),
        preserve_hostname: Some(false),
        users,
        ssh_authorized_keys: default_user_keys,
        write_files,
        bootcmd: Vec::new(),
        runcmd,
        final_message: Some(format!(
            "kiln: {} ({}) finished first boot after $UPTIME seconds",
            node.name, exec
        )),
    })
}

/// A `write_files` entry owned by root, mode 0600 (k3s' files may hold secrets).
fn root_file(path: String, content: String) -> WriteFile {
    WriteFile {
        path,
        content,
        owner: Some("root:root".into()),
        permissions: Some("0600".into()),
        encoding: None,
        defer: None,
    }
}

/// `registries.yaml` in k3s' format (holds the registry passwords read from their files), or
/// `None` when the spec has no registries. `spec` must have passed [`ClusterSpec::validate`].
pub fn registries_yaml(spec: &ClusterSpec) -> Result<Option<String>, Error> {
    let r = &spec.cluster.k3s.registries;
    if r.is_empty() {
        return Ok(None);
    }
    let mut configs = BTreeMap::new();
    for (host, c) in &r.configs {
        let auth = match &c.auth {
            None => None,
            Some(a) => {
                let field = format!("cluster.k3s.registries.configs[{host:?}].auth.password_file");
                let path = spec.input_path(&a.password_file);
                let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadInput {
                    field: field.clone(),
                    path: path.clone(),
                    source,
                })?;
                let password = text.trim();
                if password.is_empty() {
                    return Err(Error::BadInput {
                        field,
                        path,
                        message: "is empty".into(),
                    });
                }
                Some(RegistryAuthYaml {
                    username: a.username.clone(),
                    password: password.to_owned(),
                })
            }
        };
        let tls = c.tls.as_ref().map(|t| RegistryTlsYaml {
            ca_file: t.ca_file.clone(),
            cert_file: t.cert_file.clone(),
            key_file: t.key_file.clone(),
            insecure_skip_verify: t.insecure_skip_verify.then_some(true),
        });
        configs.insert(host.clone(), RegistryConfigYaml { auth, tls });
    }
    let doc = RegistriesYaml {
        mirrors: r
            .mirrors
            .iter()
            .map(|(host, m)| {
                let m = MirrorYaml {
                    endpoint: m.endpoint.clone(),
                    rewrite: m.rewrite.clone(),
                };
                (host.clone(), m)
            })
            .collect(),
        configs,
    };
    crate::yaml::to_string(&doc, "k3s registries.yaml").map(Some)
}

/// Manifest `i` of the spec: its file name on the servers and its text, checked against its pin.
fn manifest(spec: &ClusterSpec, i: usize, m: &Manifest) -> Result<(String, String), Error> {
    let field = format!("cluster.k3s.manifests[{i}].source");
    let path = spec.input_path(&m.source);
    let Some(name) = m.file_name() else {
        return Err(Error::BadInput {
            field,
            path,
            message: "has no file name".into(),
        });
    };
    let bytes = std::fs::read(&path).map_err(|source| Error::ReadInput {
        field: field.clone(),
        path: path.clone(),
        source,
    })?;
    if let Some(message) = crate::spec::manifest_problem(&bytes, &m.sha256) {
        return Err(Error::BadInput {
            field,
            path,
            message,
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| Error::BadInput {
        field,
        path: path.clone(),
        message: "is not UTF-8 text".into(),
    })?;
    Ok((name.to_owned(), text))
}

/// k3s' `registries.yaml`: what kiln writes of it.
#[derive(serde::Serialize)]
struct RegistriesYaml {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    mirrors: BTreeMap<String, MirrorYaml>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    configs: BTreeMap<String, RegistryConfigYaml>,
}

#[derive(serde::Serialize)]
struct MirrorYaml {
    endpoint: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    rewrite: BTreeMap<String, String>,
}

#[derive(serde::Serialize)]
struct RegistryConfigYaml {
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<RegistryAuthYaml>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<RegistryTlsYaml>,
}

/// Holds a password: no `Debug`.
#[derive(serde::Serialize)]
struct RegistryAuthYaml {
    username: String,
    password: String,
}

#[derive(serde::Serialize)]
struct RegistryTlsYaml {
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    insecure_skip_verify: Option<bool>,
}

const POLL_SECS: u64 = 5;

/// Bounded wait until the node's own static address is up, a default route exists and the spec's
/// resolver is in effect; on timeout a clear console message and a non-zero exit, which stops the
/// rest of runcmd (so k3s is never installed on a half-up network).
///
/// Nothing is looked up over the network: an air-gapped cluster may have no resolvable names, and
/// reverse records for static private addresses are usually missing (a `getent hosts ADDRESS`
/// check here failed on every node of the QEMU e2e). k3s itself retries reaching the server.
fn network_wait_script(spec: &ClusterSpec, node: &NodeSpec, secs: u64) -> String {
    let tries = secs.div_ceil(POLL_SECS).max(1);
    let net = &spec.cluster.network;
    // The configured resolver must be in effect: systemd-resolved's per-link list where it runs,
    // /etc/resolv.conf otherwise. (Addresses are validated IPs: safe inside the script.)
    let dns_check = match net.dns.first() {
        None => String::new(),
        Some(dns) => format!(
            " && {{ resolvectl dns 2>/dev/null || cat /etc/resolv.conf; }} | grep -qF '{dns}'"
        ),
    };
    let route6 = if node.ipv6.is_some() {
        " && ip -6 route show default | grep -q ."
    } else {
        ""
    };
    format!(
        "i=0\n\
         until ip -4 -o addr show | grep -qF ' {addr}/' && ip -4 route show default | grep -q .{route6}{dns_check}; do\n\
         \x20 i=$((i+1))\n\
         \x20 if [ \"$i\" -ge {tries} ]; then\n\
         \x20   echo \"kiln: {name}: no address {addr}, default route or DNS after {secs}s; not installing k3s\" | tee /dev/console >&2\n\
         \x20   exit 1\n\
         \x20 fi\n\
         \x20 sleep {POLL_SECS}\n\
         done\n",
        addr = node.ipv4,
        name = node.name,
    )
}

/// Bounded wait for k3s to come up after the install.
fn ready_wait_script(node: &NodeSpec, secs: u64) -> String {
    let tries = secs.div_ceil(POLL_SECS).max(1);
    let (check, what) = match node.role {
        Role::Server => (
            "k3s kubectl get --raw=/readyz >/dev/null 2>&1",
            "k3s API server",
        ),
        Role::Agent => ("systemctl is-active --quiet k3s-agent", "k3s-agent service"),
    };
    format!(
        "i=0\n\
         until {check}; do\n\
         \x20 i=$((i+1))\n\
         \x20 if [ \"$i\" -ge {tries} ]; then\n\
         \x20   echo \"kiln: {name}: {what} not ready after {secs}s\" | tee /dev/console >&2\n\
         \x20   exit 1\n\
         \x20 fi\n\
         \x20 sleep {POLL_SECS}\n\
         done\n\
         echo \"kiln: {name}: {what} ready\" | tee /dev/console\n",
        name = node.name,
    )
}
