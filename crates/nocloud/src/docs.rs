//! Typed NoCloud documents: `meta-data`, `user-data` (a cloud-config subset), `network-config`
//! (version 2) and `vendor-data`.
//!
//! Every document is a plain serde struct turned into bytes by [`crate::yaml`]; nothing here builds
//! YAML text by hand. Optional fields are skipped when empty so the output stays minimal and stable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::yaml;

/// `meta-data`: identifies the instance. A new `instance-id` makes cloud-init run its first-boot
/// modules again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaData {
    #[serde(rename = "instance-id")]
    /// `instance-id`: `<node>-<16 hex digits>` derived from the node's documents; a new id makes
    /// cloud-init treat the next boot as a first boot.
    pub instance_id: String,
    #[serde(rename = "local-hostname")]
    /// `local-hostname`: the node's name.
    pub local_hostname: String,
}

impl MetaData {
    /// The document as YAML bytes, ending in one newline.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        yaml::document(self, "meta-data", None)
    }
}

/// `user-data` in cloud-config form (the subset kiln emits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// `hostname`: the short host name cloud-init sets.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hostname: Option<String>,
    /// `fqdn`: the fully qualified name (node name and the first search domain).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fqdn: Option<String>,
    /// `preserve_hostname`: `false` lets cloud-init set the host name from this document.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub preserve_hostname: Option<bool>,
    /// `users`: accounts to create; `default` keeps the image's default user.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub users: Vec<User>,
    /// Keys for the image's default user (when `users` does not name one).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub ssh_authorized_keys: Vec<String>,
    /// `write_files`: files written at first boot (the k3s `config.yaml`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub write_files: Vec<WriteFile>,
    /// `bootcmd`: commands run early on every boot.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub bootcmd: Vec<Command>,
    /// `runcmd`: commands run once, late in first boot (the network wait, the k3s install, the
    /// ready wait).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub runcmd: Vec<Command>,
    /// `final_message`: the line cloud-init prints when first boot is done.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub final_message: Option<String>,
}

impl CloudConfig {
    /// Serialized with the `#cloud-config` header line cloud-init needs to recognise the part.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        yaml::document(self, "user-data", Some("#cloud-config"))
    }
}

/// `vendor-data` has the same shape as user-data; user-data wins where both set a key.
pub type VendorData = CloudConfig;

/// An entry of `users:`: the distro's default user, or a user described in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum User {
    /// Serialized as the plain string `default`.
    Default(DefaultUser),
    /// A user described in full.
    Full(UserSpec),
}

/// Marker for the `default` entry of `users:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DefaultUser {
    /// `default`.
    #[serde(rename = "default")]
    Default,
}

/// A user cloud-init creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// `name`: the login name.
    pub name: String,
    /// `groups`: comma-separated supplementary groups.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub groups: Option<String>,
    /// `shell`: the login shell.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shell: Option<String>,
    /// `sudo`: a sudoers rule for the user.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sudo: Option<String>,
    /// `lock_passwd`: `true` disables password login.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lock_passwd: Option<bool>,
    /// `ssh_authorized_keys`: OpenSSH public key lines for the user.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub ssh_authorized_keys: Vec<String>,
}

/// An entry of `write_files:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteFile {
    /// `path`: absolute path of the file in the guest.
    pub path: String,
    /// `content`: the file's content, encoded as `encoding` says (plain text by default).
    pub content: String,
    /// `owner`: `user:group`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub owner: Option<String>,
    /// Octal mode as a string, e.g. `0600` (quoted on output: YAML 1.1 would read it as a number).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub permissions: Option<String>,
    /// `encoding`: how `content` is encoded.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub encoding: Option<Encoding>,
    /// `defer`: `true` writes the file late (after users and packages exist).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub defer: Option<bool>,
}

/// `write_files[].encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    /// `text/plain`: the content as is.
    #[serde(rename = "text/plain")]
    Text,
    /// `b64`: base64.
    #[serde(rename = "b64")]
    Base64,
    /// `gz+b64`: gzip, then base64.
    #[serde(rename = "gz+b64")]
    GzipBase64,
}

/// A `bootcmd`/`runcmd` entry: a shell snippet, or an argv run without a shell (no quoting issues).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Command {
    /// A string run by `sh -c`.
    Shell(String),
    /// A program and its arguments, run without a shell.
    Argv(Vec<String>),
}

/// `network-config`, version 2 (netplan-compatible), wrapped in the top-level `network:` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// `network`: the version 2 configuration.
    pub network: NetworkV2,
}

impl NetworkConfig {
    /// The document as YAML bytes, ending in one newline.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        yaml::document(self, "network-config", None)
    }
}

/// The body of a version 2 `network-config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkV2 {
    /// Always 2.
    pub version: u8,
    /// Keyed by the netplan id (sorted: BTreeMap).
    pub ethernets: BTreeMap<String, Ethernet>,
}

/// One entry of `ethernets:`: how an interface is found and configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ethernet {
    /// `match`: which interface this entry is (by MAC or by name).
    #[serde(rename = "match", skip_serializing_if = "Option::is_none", default)]
    pub match_: Option<Match>,
    /// `set-name`: rename the matched interface (only with a MAC match).
    #[serde(rename = "set-name", skip_serializing_if = "Option::is_none", default)]
    pub set_name: Option<String>,
    /// `dhcp4`: `false` for kiln's static addresses.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dhcp4: Option<bool>,
    /// `dhcp6`: `false` when the node has a static IPv6 address.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dhcp6: Option<bool>,
    /// `accept-ra`: `false` so router advertisements add no second IPv6 address.
    #[serde(rename = "accept-ra", skip_serializing_if = "Option::is_none", default)]
    pub accept_ra: Option<bool>,
    /// `address/prefix` strings.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub addresses: Vec<String>,
    /// `routes`: the default routes.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub routes: Vec<Route>,
    /// `nameservers`: resolvers and search domains.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nameservers: Option<Nameservers>,
}

/// `match:` of an ethernet entry; exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// `macaddress`: lower case, colon-separated.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub macaddress: Option<String>,
    /// `name`: the interface name (may be a glob for netplan).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
}

/// A route (`to` + `via`), used instead of the deprecated `gateway4`/`gateway6`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// `to`: the destination (`0.0.0.0/0`, `::/0`).
    pub to: String,
    /// `via`: the gateway.
    pub via: String,
}

/// `nameservers:` of an ethernet entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nameservers {
    /// `addresses`: resolver IP addresses.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub addresses: Vec<String>,
    /// `search`: search domains.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub search: Vec<String>,
}

/// A value of k3s' `config.yaml` (flag names without `--` as keys). Typed so that it is serialized,
/// never pasted: `true` stays a boolean, `"on"` stays a string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// A boolean flag.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A string (always quoted where YAML 1.1 would read it otherwise).
    Str(String),
    /// A list (a repeatable flag).
    List(Vec<ConfigValue>),
    /// A map, keys sorted.
    Map(BTreeMap<String, ConfigValue>),
}

impl From<&str> for ConfigValue {
    fn from(s: &str) -> Self {
        ConfigValue::Str(s.to_owned())
    }
}

impl From<String> for ConfigValue {
    fn from(s: String) -> Self {
        ConfigValue::Str(s)
    }
}

impl From<bool> for ConfigValue {
    fn from(b: bool) -> Self {
        ConfigValue::Bool(b)
    }
}

impl From<Vec<String>> for ConfigValue {
    fn from(v: Vec<String>) -> Self {
        ConfigValue::List(v.into_iter().map(ConfigValue::Str).collect())
    }
}

/// The content of `/etc/rancher/k3s/config.yaml`: sorted keys, typed values.
pub type K3sConfig = BTreeMap<String, ConfigValue>;
