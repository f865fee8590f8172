//! Validation of the spec as written: every value is checked as text, so that *all* problems are
//! reported at once (rather than the first one a typed parse trips over), each with its field path.
//! A spec made in code is checked by the same code, through its written form.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use sha2::Digest;

use super::file::{NodeFile, SpecFile, SubnetFile};
use super::values::{Addr, Cidr, normalize_mac, parse_cidr, parse_duration, parse_size};
use super::{MatchBy, Problems, RESERVED_K3S_KEYS, Role};
use crate::docs::ConfigValue;

impl SpecFile {
    /// Collect every problem of the written values (the token file is checked separately).
    pub(super) fn check(&self, p: &mut Problems) {
        self.check_cluster(p);
        self.check_nodes(p);
    }

    fn first_server(&self) -> Option<&NodeFile> {
        self.nodes.iter().find(|n| n.role == Role::Server)
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
        check_server_url(c.k3s.server_url.as_deref(), p);
        check_registries(&c.k3s.registries, p);
        check_manifests(&c.k3s.manifests, p);
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
        if c.boot == super::Boot::SdCard && c.disk_size.is_some() {
            p.push(
                "cluster.disk_size",
                "cluster.disk_size does not apply to `boot: sd_card` (each node's image is the golden \
                 image's size; cloud-init grows the root filesystem to the card on first boot)",
            );
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
            if self.cluster.boot == super::Boot::SdCard && n.disk_size.is_some() {
                at.bad(
                    "disk_size",
                    "does not apply to `boot: sd_card` (the node's image is the golden image's size)",
                );
            }
        }
    }

    fn check_node_ipv4(&self, at: &mut NodeAt<'_>, n: &NodeFile, nets: &Nets, seen: &mut Seen) {
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

    fn check_node_ipv6(&self, at: &mut NodeAt<'_>, n: &NodeFile, nets: &Nets, seen: &mut Seen) {
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

    fn check_node_nic(&self, at: &mut NodeAt<'_>, n: &NodeFile, seen: &mut Seen) {
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

fn check_node_name(at: &mut NodeAt<'_>, n: &NodeFile, seen: &mut Seen) {
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

fn check_subnet<A: Addr>(what: &str, s: &SubnetFile, p: &mut Problems) {
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

fn check_server_url(url: Option<&str>, p: &mut Problems) {
    let Some(url) = url else { return };
    const F: &str = "cluster.k3s.server_url";
    match parse_url(url) {
        Err(why) => p.push(F, format!("{F}: {why}")),
        Ok(u) if u.scheme != "https" => p.push(
            F,
            format!("{F} {url:?} is not an https:// URL (k3s servers only speak https)"),
        ),
        Ok(u) if !u.path.is_empty() && u.path != "/" => p.push(
            F,
            format!("{F} {url:?} has a path; give only https://host[:port]"),
        ),
        Ok(_) => {}
    }
}

/// The host of a `server_url` that passed the check, as a `tls-san` entry (IPv6 without
/// brackets); `None` for anything else.
pub(crate) fn server_url_host(url: &str) -> Option<String> {
    parse_url(url).ok().map(|u| u.host.to_owned())
}

/// An `http(s)://host[:port][/path]` URL taken apart; `host` is an RFC 1123 name or an IP
/// address (IPv6 in brackets in the URL, without them here).
struct Url<'a> {
    scheme: &'a str,
    host: &'a str,
    path: &'a str,
}

/// Messages never quote a URL that carries user info: it would be a credential.
fn parse_url(url: &str) -> Result<Url<'_>, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{url:?} is not a URL like https://host[:port]"));
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(
            "the URL has user info (user:password@); put credentials in              cluster.k3s.registries.configs.<host>.auth instead"
                .to_owned(),
        );
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) || path.contains(['?', '#']) {
        return Err(format!(
            "{url:?} has a path with spaces, a query or a fragment"
        ));
    }
    let Some(host) = host_of(authority) else {
        return Err(format!(
            "{url:?} does not have a valid host[:port] (an RFC 1123 name or an IP address, a port 1-65535)"
        ));
    };
    Ok(Url { scheme, host, path })
}

/// `host[:port]` with an RFC 1123 name, an IPv4 address or a bracketed IPv6 address: the host
/// (brackets removed), or `None`.
fn host_of(authority: &str) -> Option<&str> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        h.parse::<Ipv6Addr>().ok()?;
        match after {
            "" => (h, None),
            _ => (h, Some(after.strip_prefix(':')?)),
        }
    } else {
        let (h, port) = match authority.split_once(':') {
            Some((h, port)) => (h, Some(port)),
            None => (authority, None),
        };
        if h.parse::<Ipv4Addr>().is_err() && (h.is_empty() || !is_hostname(h)) {
            return None;
        }
        (h, port)
    };
    if let Some(port) = port {
        let ok = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|n| n > 0);
        if !ok {
            return None;
        }
    }
    Some(host)
}

fn check_registries(r: &super::Registries, p: &mut Problems) {
    const F: &str = "cluster.k3s.registries";
    for (host, m) in &r.mirrors {
        let at = format!("{F}.mirrors[{host:?}]");
        if host != "*" && host_of(host).is_none() {
            p.push(
                at.clone(),
                format!("{at}: {host:?} is not a registry host[:port] (or `*`)"),
            );
        }
        if m.endpoint.is_empty() {
            p.push(
                format!("{at}.endpoint"),
                format!("{at}.endpoint: a mirror needs at least one endpoint URL"),
            );
        }
        for (j, e) in m.endpoint.iter().enumerate() {
            if let Err(why) = parse_url(e) {
                let f = format!("{at}.endpoint[{j}]");
                p.push(f.clone(), format!("{f}: {why}"));
            }
        }
        for (pattern, replacement) in &m.rewrite {
            let f = format!("{at}.rewrite[{pattern:?}]");
            let bad = |s: &str| s.is_empty() || s.chars().any(char::is_control);
            if bad(pattern) || bad(replacement) {
                p.push(
                    f.clone(),
                    format!("{f}: a rewrite needs a pattern and a replacement, on one line each"),
                );
            }
        }
    }
    for (host, c) in &r.configs {
        let at = format!("{F}.configs[{host:?}]");
        if host != "*" && host_of(host).is_none() {
            p.push(
                at.clone(),
                format!("{at}: {host:?} is not a registry host[:port] (or `*`)"),
            );
        }
        if c.auth.is_none() && c.tls.is_none() {
            p.push(at.clone(), format!("{at}: set `auth`, `tls` or both"));
        }
        if let Some(a) = &c.auth {
            if a.username.is_empty() || a.username.chars().any(char::is_control) {
                let f = format!("{at}.auth.username");
                p.push(
                    f.clone(),
                    format!("{f}: must be a non-empty name on one line"),
                );
            }
            if a.password_file.as_os_str().is_empty() {
                let f = format!("{at}.auth.password_file");
                p.push(f.clone(), format!("{f}: must name a file"));
            }
        }
        if let Some(t) = &c.tls {
            for (name, v) in [
                ("ca_file", &t.ca_file),
                ("cert_file", &t.cert_file),
                ("key_file", &t.key_file),
            ] {
                if let Some(v) = v
                    && (!v.starts_with('/') || v.chars().any(char::is_control))
                {
                    let f = format!("{at}.tls.{name}");
                    p.push(
                        f.clone(),
                        format!("{f}: {v:?} is not an absolute path on the node"),
                    );
                }
            }
            if t.cert_file.is_some() != t.key_file.is_some() {
                let f = format!("{at}.tls");
                p.push(
                    f.clone(),
                    format!(
                        "{f}: cert_file and key_file go together (a client certificate and its key)"
                    ),
                );
            }
        }
    }
}

fn check_manifests(list: &[super::Manifest], p: &mut Problems) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, m) in list.iter().enumerate() {
        let at = format!("cluster.k3s.manifests[{i}]");
        match m.file_name() {
            Some(n) if is_manifest_name(n) => {
                if let Some(prev) = names.insert(n, i) {
                    p.push(
                        format!("{at}.source"),
                        format!(
                            "{at}.source: file name {n:?} is already used by cluster.k3s.manifests[{prev}]                              (both would be {}/{n})",
                            super::MANIFESTS_DIR
                        ),
                    );
                }
            }
            _ => p.push(
                format!("{at}.source"),
                format!(
                    "{at}.source {}: the file name must be letters, digits, '.', '_', '-' ending in                      .yaml, .yml or .json (k3s applies only those)",
                    m.source.display()
                ),
            ),
        }
        if !kiln_common::digest::is_sha256(&m.sha256) {
            p.push(
                format!("{at}.sha256"),
                format!(
                    "{at}.sha256 {:?} is not a sha256 (64 lowercase hex digits)",
                    m.sha256
                ),
            );
        }
    }
}

fn is_manifest_name(n: &str) -> bool {
    !n.starts_with('.')
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| n.len() > ext.len() && n.ends_with(ext))
}

/// The files a spec names besides the token file: every registry password file must be a
/// readable, non-empty regular file; every manifest a readable UTF-8 file whose sha256 is its
/// pin. Messages name the field and the path, never the content.
pub(super) fn check_input_files(file: &SpecFile, base: &Path, p: &mut Problems) {
    let k3s = &file.cluster.k3s;
    for (host, c) in &k3s.registries.configs {
        let Some(a) = &c.auth else { continue };
        if a.password_file.as_os_str().is_empty() {
            continue; // the value check reports it
        }
        let f = format!("cluster.k3s.registries.configs[{host:?}].auth.password_file");
        let path = super::resolve(base, &a.password_file);
        match read_regular(&path) {
            Err(why) => p.push(f.clone(), format!("{f} {}: {why}", path.display())),
            Ok(bytes) => {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    p.push(f.clone(), format!("{f} {}: is empty", path.display()));
                } else if std::str::from_utf8(&bytes).is_err() {
                    p.push(
                        f.clone(),
                        format!("{f} {}: is not UTF-8 text", path.display()),
                    );
                }
            }
        }
    }
    for (i, m) in k3s.manifests.iter().enumerate() {
        if !m.file_name().is_some_and(is_manifest_name) {
            continue; // the value check reports it
        }
        let f = format!("cluster.k3s.manifests[{i}].source");
        let path = super::resolve(base, &m.source);
        match read_regular(&path) {
            Err(why) => p.push(f.clone(), format!("{f} {}: {why}", path.display())),
            Ok(bytes) => {
                if let Some(why) = manifest_problem(&bytes, &m.sha256) {
                    p.push(f.clone(), format!("{f} {}: {why}", path.display()));
                }
            }
        }
    }
}

/// What is wrong with a manifest's bytes against its pin, if anything (used again when
/// rendering, which reads the file a second time).
pub(crate) fn manifest_problem(bytes: &[u8], pinned: &str) -> Option<String> {
    let actual = kiln_common::digest::hex(&sha2::Sha256::digest(bytes));
    if kiln_common::digest::is_sha256(pinned) && actual != pinned {
        return Some(format!("sha256 is {actual}, the spec pins {pinned}"));
    }
    if std::str::from_utf8(bytes).is_err() {
        return Some("is not UTF-8 text (k3s manifests are YAML or JSON)".to_owned());
    }
    None
}

fn read_regular(path: &Path) -> Result<Vec<u8>, String> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() => fs::read(path).map_err(|e| format!("cannot be read: {e}")),
        Ok(_) => Err("is not a regular file".to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("does not exist".to_owned()),
        Err(e) => Err(format!("cannot be read: {e}")),
    }
}

pub(super) fn check_token_file(path: &Path, p: &mut Problems) {
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
