//! kiln-nocloud: per-node cloud-init NoCloud seeds for a k3s cluster, from one typed cluster spec.
//!
//! ```text
//! cluster.yaml ──load──▶ ClusterSpec ──validate──▶ (all problems, or ok)
//!                             │
//!            Token::load_or_create (0600, never printed)
//!                             │
//!                 render_node ▼  typed docs ──serde-saphyr──▶ bytes
//!                         NodeSeed { meta_data, user_data, network_config, vendor_data }
//!                             │
//!                 write_seed  ▼  dir (or an ISO/vfat volume), temp file + rename, mode 0600
//! ```
//!
//! **Architecture invariant:** no YAML is produced by string formatting; every document is a serde
//! value serialized by [`yaml`], which quotes YAML-1.1 traps (`on`, `no`, `0777`, `12:30`, …).
//! **Architecture invariant:** the cluster token only ever flows into the `user-data` bytes; it is
//! not in any error, `Debug` output or summary.
//!
//! # Use from another provisioner
//!
//! ```
//! use kiln_nocloud::{ClusterSpec, SeedFormat, Token, render_node, write_seed};
//!
//! let spec = ClusterSpec::from_yaml(r#"
//! cluster:
//!   name: lab
//!   k3s: { version: v1.34.3+k3s1, token_file: secrets/k3s-token }
//!   network:
//!     match: mac
//!     interface: ens3
//!     ipv4: { cidr: 192.168.122.0/24, gateway: 192.168.122.1 }
//!     dns: [192.168.122.1]
//! nodes:
//!   - { name: cp-01, role: server, ipv4: 192.168.122.10, mac: "52:54:00:00:00:10" }
//! "#, "lab.yaml".as_ref())?;
//! spec.validate()?;                                   // every problem at once
//! let token = Token::new("from-your-secret-store");   // or Token::load_or_create(token_file)
//! let seed = render_node(&spec, &spec.nodes[0], &token)?;
//! assert!(seed.instance_id.starts_with("cp-01-"));
//! assert!(seed.user_data.starts_with(b"#cloud-config\n"));
//! let dir = tempfile::tempdir()?;
//! let sha256 = write_seed(&seed, SeedFormat::Iso, 0, &dir.path().join("cp-01-seed.iso"))?;
//! # let _ = sha256;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod docs;
pub mod render;
pub mod spec;
mod token;
mod write;
pub mod yaml;

use std::path::PathBuf;

pub use docs::{CloudConfig, ConfigValue, MetaData, NetworkConfig, VendorData};
pub use render::{NodeSeed, render_all, render_node};
pub use spec::{
    Boot, ByteSize, Cidr, Cluster, ClusterSpec, K3s, MacAddr, Manifest, MatchBy, Mirror, Network,
    NodeSpec, Problem, Problems, Registries, RegistryAuth, RegistryConfig, RegistryTls, Role,
    SD_CARD_SEED_LABEL, Subnet, Wait, parse_duration, parse_size,
};
pub use token::Token;
pub use write::{SeedFormat, seed_volume, write_seed};

impl Error {
    /// Who is at fault: the spec and the token file are the caller's input (a token file that
    /// cannot be created is the spec's `token_file` to fix); writing the seed is the host's.
    pub fn kind(&self) -> kiln_blockdev::ErrorKind {
        use kiln_blockdev::ErrorKind;
        match self {
            Error::BadInput { .. }
            | Error::CreateToken { .. }
            | Error::EmptyToken { .. }
            | Error::Invalid(_)
            | Error::ParseSpec { .. }
            | Error::ReadSpec { .. }
            | Error::ReadInput { .. }
            | Error::ReadToken { .. }
            | Error::Render { .. } => ErrorKind::Input,
            Error::Serialize { .. } => ErrorKind::Internal,
            Error::Volume { .. } | Error::WriteSeed { .. } => ErrorKind::Host,
        }
    }
}

/// Where the golden image carries k3s' `install.sh`; the seed's runcmd runs it at first boot.
pub const K3S_INSTALL_SCRIPT: &str = "/usr/local/lib/kiln/k3s-install.sh";

/// Everything that can go wrong; each variant names the operation and the path or node. No
/// variant ever holds the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file the spec names (a registry `password_file`, a manifest `source`) has the wrong
    /// content: empty, not UTF-8, a sha256 other than its pin. The message never quotes the
    /// content. Kind: input.
    #[error("{field} {path}: {message}")]
    BadInput {
        /// The spec field naming the file (`cluster.k3s.manifests[0].source`).
        field: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// [`Token::load_or_create`] found no token file and could not create it (or its directory).
    /// Kind: input (the spec's `token_file` names a place that cannot be written).
    #[error("creating token file {path}")]
    CreateToken {
        /// The token file.
        path: PathBuf,
        /// The failed I/O.
        source: std::io::Error,
    },
    /// The token file exists but holds only whitespace. Kind: input.
    #[error("token file {path} is empty")]
    EmptyToken {
        /// The token file.
        path: PathBuf,
    },
    /// The spec fails its checks: every problem, each with its field path. Returned by
    /// [`ClusterSpec::load`], [`ClusterSpec::from_yaml`] and [`ClusterSpec::validate`]. Kind: input.
    #[error("{0}")]
    Invalid(Problems),
    /// The spec text is not YAML of the spec's shape (syntax, an unknown key, a missing one, a
    /// wrong type); the message has the position and reason, never an excerpt. Kind: input.
    #[error("parsing cluster spec {path}: {message}")]
    ParseSpec {
        /// The spec file (or the name given to [`ClusterSpec::from_yaml`]).
        path: PathBuf,
        /// First line of the parser's message.
        message: String,
    },
    /// The spec file cannot be read (missing, unreadable, not UTF-8). Kind: input.
    #[error("reading cluster spec {path}")]
    ReadSpec {
        /// The spec file.
        path: PathBuf,
        /// The failed I/O.
        source: std::io::Error,
    },
    /// A file the spec names (a registry `password_file`, a manifest `source`) cannot be read.
    /// Kind: input.
    #[error("reading {field} {path}")]
    ReadInput {
        /// The spec field naming the file.
        field: String,
        /// The file.
        path: PathBuf,
        /// The failed I/O.
        source: std::io::Error,
    },
    /// The token file exists but cannot be read. Kind: input.
    #[error("reading token file {path}")]
    ReadToken {
        /// The token file.
        path: PathBuf,
        /// The failed I/O.
        source: std::io::Error,
    },
    /// A node's documents cannot be rendered from a spec that skipped validation (e.g. no MAC
    /// when the network matches by MAC). Kind: input.
    #[error("rendering the seed of node {node:?}: {message}")]
    Render {
        /// The node.
        node: String,
        /// What is missing.
        message: String,
    },
    /// A typed document failed to serialise: a bug. Kind: internal.
    #[error("serializing {document}: {message}")]
    Serialize {
        /// Which document (`user-data`, `cluster spec`, …).
        document: &'static str,
        /// The serialiser's message.
        message: String,
    },
    /// Building the ISO 9660 or vfat seed volume failed (I/O on the output). Kind: host.
    #[error("writing the {format} seed volume {path}: {message}")]
    Volume {
        /// `iso` or `vfat`.
        format: &'static str,
        /// The output file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Writing a seed file or directory failed. Kind: host.
    #[error("writing seed {path}")]
    WriteSeed {
        /// The output path.
        path: PathBuf,
        /// The failed I/O.
        source: std::io::Error,
    },
}
