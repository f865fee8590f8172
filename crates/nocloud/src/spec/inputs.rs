//! The k3s inputs a spec names beside its `config.yaml` keys: private registries
//! (`/etc/rancher/k3s/registries.yaml`) and auto-deploy manifests. Their values are the same in
//! the file and in code; the secrets and file contents they point at are read only when a node's
//! `user-data` is rendered, so no spec value, `Debug` output or message ever holds them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `cluster.k3s.registries`: k3s' private-registry configuration, written to
/// `/etc/rancher/k3s/registries.yaml` (mode 0600) on every node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Registries {
    /// `mirrors`: per registry host (`docker.io`, `registry.lab:5000`, or `*` for every
    /// registry), where to pull its images from instead.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mirrors: BTreeMap<String, Mirror>,
    /// `configs`: per registry host (a mirror endpoint's host or a registry's own), how to
    /// authenticate and what TLS to use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, RegistryConfig>,
}

impl Registries {
    /// No mirrors and no configs (nothing is written to the nodes).
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there is nothing to write (no mirrors, no configs).
    pub fn is_empty(&self) -> bool {
        self.mirrors.is_empty() && self.configs.is_empty()
    }

    /// Pull the images of registry `host` through `mirror`.
    #[must_use]
    pub fn with_mirror(mut self, host: impl Into<String>, mirror: Mirror) -> Self {
        self.mirrors.insert(host.into(), mirror);
        self
    }

    /// Authentication and TLS for registry `host`.
    #[must_use]
    pub fn with_config(mut self, host: impl Into<String>, config: RegistryConfig) -> Self {
        self.configs.insert(host.into(), config);
        self
    }
}

/// `cluster.k3s.registries.mirrors.<host>`: the endpoints that serve a registry's images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Mirror {
    /// `endpoint`: `http://` or `https://` URLs, tried in order (at least one).
    pub endpoint: Vec<String>,
    /// `rewrite`: image-name rewrites, regular expression → replacement.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rewrite: BTreeMap<String, String>,
}

impl Mirror {
    /// A mirror served at `endpoints`, with no rewrites.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Mirror {
            endpoint: endpoints.into_iter().map(Into::into).collect(),
            rewrite: BTreeMap::new(),
        }
    }

    /// Rewrite image names matching the regular expression `pattern` to `replacement`.
    #[must_use]
    pub fn with_rewrite(
        mut self,
        pattern: impl Into<String>,
        replacement: impl Into<String>,
    ) -> Self {
        self.rewrite.insert(pattern.into(), replacement.into());
        self
    }
}

/// `cluster.k3s.registries.configs.<host>`: authentication and TLS for one registry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RegistryConfig {
    /// `auth`: a user name and a password (or token) read from a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RegistryAuth>,
    /// `tls`: CA and client certificate paths on the node, certificate checking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RegistryTls>,
}

impl RegistryConfig {
    /// No authentication and default TLS.
    pub fn new() -> Self {
        Self::default()
    }

    /// Authenticate with `auth`.
    #[must_use]
    pub fn with_auth(mut self, auth: RegistryAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Use `tls`.
    #[must_use]
    pub fn with_tls(mut self, tls: RegistryTls) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// `cluster.k3s.registries.configs.<host>.auth`: the secret itself is never in the spec, only
/// the file holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RegistryAuth {
    /// `username`: the registry user.
    pub username: String,
    /// `password_file`: a file holding the password or token (surrounding whitespace trimmed),
    /// relative to [`super::ClusterSpec::base_dir`]; read only into the seeds' `user-data`.
    pub password_file: PathBuf,
}

impl RegistryAuth {
    /// `username` with the password (or token) kept in `password_file`.
    pub fn new(username: impl Into<String>, password_file: impl Into<PathBuf>) -> Self {
        RegistryAuth {
            username: username.into(),
            password_file: password_file.into(),
        }
    }
}

/// `cluster.k3s.registries.configs.<host>.tls`: paths are on the node (put the files there with
/// the golden recipe or vendor-data).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RegistryTls {
    /// `ca_file`: the CA bundle that signs the registry's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// `cert_file`: a client certificate (with `key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// `key_file`: the client certificate's key (with `cert_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// `insecure_skip_verify`: do not check the registry's certificate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

impl RegistryTls {
    /// Default TLS: the system's CAs, no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust the CA bundle at `path` on the node.
    #[must_use]
    pub fn with_ca_file(mut self, path: impl Into<String>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Present the client certificate `cert` with its key `key` (paths on the node).
    #[must_use]
    pub fn with_client_cert(mut self, cert: impl Into<String>, key: impl Into<String>) -> Self {
        self.cert_file = Some(cert.into());
        self.key_file = Some(key.into());
        self
    }

    /// Do not check the registry's certificate.
    #[must_use]
    pub fn insecure_skip_verify(mut self) -> Self {
        self.insecure_skip_verify = true;
        self
    }
}

/// An entry of `cluster.k3s.manifests`: a file k3s applies on its servers (any resource,
/// `HelmChart` included), pinned by its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Manifest {
    /// `source`: the file, relative to [`super::ClusterSpec::base_dir`]; its file name (`.yaml`,
    /// `.yml` or `.json`) is its name in [`MANIFESTS_DIR`].
    pub source: PathBuf,
    /// `sha256`: the file's pinned digest (64 lowercase hex digits).
    pub sha256: String,
}

impl Manifest {
    /// The manifest `source`, pinned to `sha256`.
    pub fn new(source: impl Into<PathBuf>, sha256: impl Into<String>) -> Self {
        Manifest {
            source: source.into(),
            sha256: sha256.into(),
        }
    }

    /// The name the file gets on the servers: `source`'s file name.
    pub fn file_name(&self) -> Option<&str> {
        self.source.file_name().and_then(|n| n.to_str())
    }
}

/// Where k3s servers pick up auto-deploy manifests.
pub const MANIFESTS_DIR: &str = "/var/lib/rancher/k3s/server/manifests";

/// Where k3s reads its private-registry configuration.
pub const REGISTRIES_PATH: &str = "/etc/rancher/k3s/registries.yaml";
