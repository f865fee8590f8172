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
    pub instance_id: String,
    #[serde(rename = "local-hostname")]
    pub local_hostname: String,
}

impl MetaData {
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        yaml::document(self, "meta-data", None)
    }
}

/// `user-data` in cloud-config form (the subset kiln emits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fqdn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub preserve_hostname: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub users: Vec<User>,
    /// Keys for the image's default user (when `users` does not name one).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub ssh_authorized_keys: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub write_files: Vec<WriteFile>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub bootcmd: Vec<Command>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub runcmd: Vec<Command>,
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
    Full(UserSpec),
}

/// Marker for the `default` entry of `users:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DefaultUser {
    #[serde(rename = "default")]
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub groups: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shell: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sudo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lock_passwd: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub ssh_authorized_keys: Vec<String>,
}

/// An entry of `write_files:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteFile {
    pub path: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub owner: Option<String>,
    /// Octal mode as a string, e.g. `0600` (quoted on output: YAML 1.1 would read it as a number).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub permissions: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub encoding: Option<Encoding>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub defer: Option<bool>,
}

/// `write_files[].encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    #[serde(rename = "text/plain")]
    Text,
    #[serde(rename = "b64")]
    Base64,
    #[serde(rename = "gz+b64")]
    GzipBase64,
}

/// A `bootcmd`/`runcmd` entry: a shell snippet, or an argv run without a shell (no quoting issues).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Command {
    Shell(String),
    Argv(Vec<String>),
}

/// `network-config`, version 2 (netplan-compatible), wrapped in the top-level `network:` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    pub network: NetworkV2,
}

impl NetworkConfig {
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        yaml::document(self, "network-config", None)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkV2 {
    /// Always 2.
    pub version: u8,
    /// Keyed by the netplan id (sorted: BTreeMap).
    pub ethernets: BTreeMap<String, Ethernet>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ethernet {
    #[serde(rename = "match", skip_serializing_if = "Option::is_none", default)]
    pub match_: Option<Match>,
    #[serde(rename = "set-name", skip_serializing_if = "Option::is_none", default)]
    pub set_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dhcp4: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dhcp6: Option<bool>,
    #[serde(rename = "accept-ra", skip_serializing_if = "Option::is_none", default)]
    pub accept_ra: Option<bool>,
    /// `address/prefix` strings.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub addresses: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub routes: Vec<Route>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nameservers: Option<Nameservers>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub macaddress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
}

/// A route (`to` + `via`), used instead of the deprecated `gateway4`/`gateway6`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub to: String,
    pub via: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nameservers {
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub addresses: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub search: Vec<String>,
}

/// A value of k3s' `config.yaml` (flag names without `--` as keys). Typed so that it is serialized,
/// never pasted: `true` stays a boolean, `"on"` stays a string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<ConfigValue>),
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
