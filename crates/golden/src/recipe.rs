//! The typed golden-image recipe (YAML, unknown keys are errors), its validation and its digest.
//!
//! ```yaml
//! name: k3s-node-ubuntu-24.04
//! base: { path: ../target/fixtures/ubuntu-24.04-base.qcow2, sha256: 0123… }
//! arch: amd64
//! output: { kind: qcow2, compression: zstd }
//! source_date_epoch: 1767225600
//! machine_id: uninitialized
//! scrub: { disable: [hostname] }
//! k3s: { version: v1.34.3+k3s1, assets: ../target/fixtures/k3s, install_sh_sha256: 4567… }
//! prerequisites:
//!   - modules_load: { name: k3s, modules: [overlay, br_netfilter] }
//! boot_files:                      # files on a vfat partition, found by its label
//!   - partition: system-boot
//!     path: /cmdline.txt
//!     cmdline_add: [cgroup_memory=1, cgroup_enable=memory]
//! ```
//!
//! Relative paths are resolved against the recipe file's directory ([`Recipe::base_dir`]).
//!
//! The same recipe made in code — the constructors take the required keys and fill in what YAML
//! gives for an omitted key; the `with_*` setters change the rest:
//!
//! ```
//! use kiln_golden::recipe::{Arch, Base, DirEntry, K3s, ModulesLoad, Recipe, ScrubSelection};
//!
//! let recipe = Recipe::new(
//!     "k3s-node-ubuntu-24.04",
//!     Base::new("../target/fixtures/ubuntu-24.04-base.qcow2", "0".repeat(64)),
//!     Arch::Amd64,
//!     1_767_225_600,
//! )
//! .with_scrub(ScrubSelection::default().with_disabled("hostname"))
//! .with_k3s(K3s::new("v1.34.3+k3s1", "../target/fixtures/k3s"))
//! .with_prerequisite(ModulesLoad::new("k3s", ["overlay", "br_netfilter"]))
//! .with_prerequisite(DirEntry::new("/etc/rancher/k3s"));
//! recipe.validate()?;
//! assert_eq!(recipe.digest().len(), 64);
//! # Ok::<(), kiln_golden::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::scrub;

/// A parsed recipe. Parsing checks the shape; [`Recipe::validate`] checks the values.
///
/// Made in code with [`Recipe::new`] (the required keys; every other field as YAML leaves it
/// when its key is omitted) and the `with_*` setters. Fields are public to read and change, but new
/// fields may be added in any release, so a struct literal is not possible outside this crate.
///
/// Serialises (serde) to the YAML/JSON shape it is read from, and reads back to an equal value;
/// [`Recipe::base_dir`] is not serialised.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Recipe {
    /// `name`: the output file stem, `<name>.qcow2` and `<name>.manifest.json`. Letters, digits,
    /// `.`, `_`, `-`, `+`; not starting with `.`. Required.
    pub name: String,
    /// `base`: the pinned vendor cloud image. Required.
    pub base: Base,
    /// `arch`: the image's architecture; picks the k3s assets. Required.
    pub arch: Arch,
    /// `output`: what is written. Default: a standalone zstd-compressed qcow2.
    #[serde(default)]
    pub output: Output,
    /// `source_date_epoch`: every time kiln writes into the image, in seconds since 1970-01-01
    /// UTC (0 to 15032385535, what ext4 can store). Required.
    pub source_date_epoch: i64,
    /// `machine_id`: what `/etc/machine-id` becomes. Default: `uninitialized`.
    #[serde(default)]
    pub machine_id: MachineIdMode,
    /// `scrub`: changes to the default scrub catalog. Default: none (the default catalog runs).
    #[serde(default)]
    pub scrub: ScrubSelection,
    /// `k3s`: the pinned k3s release to inject. Default: none (no k3s in the image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s: Option<K3s>,
    /// `prerequisites`: written into the image after k3s, in this order. Default: none.
    #[serde(default)]
    pub prerequisites: Vec<Prerequisite>,
    /// `boot_files`: files added or changed on vfat partitions (a Raspberry Pi's `system-boot`,
    /// an ESP), found by filesystem label, after the root filesystem is closed, in this order.
    /// Default: none (and then the key is not serialised, so the digest of a recipe without it is
    /// what it was before the key existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boot_files: Vec<BootFile>,
    /// The directory relative paths are resolved against: the recipe file's directory for
    /// [`Recipe::load`]; empty (the current directory) for [`Recipe::new`] and
    /// [`Recipe::from_yaml`]. Not a YAML key, not serialised, not part of [`Recipe::digest`].
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// The pinned vendor cloud image (`base:`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Base {
    /// `path`: the image file — qcow2, raw, or raw compressed with xz (`.img.xz`, decompressed by
    /// the build) — relative to the recipe's directory unless absolute. Required.
    #[serde(serialize_with = "path_str")]
    pub path: PathBuf,
    /// `sha256`: lower-case hex sha256 of the image file as downloaded (for an `.img.xz`, of the
    /// compressed file), checked before anything is built. Required.
    pub sha256: String,
}

impl Base {
    /// The base image at `path`, pinned to `sha256` (64 lower-case hex digits).
    pub fn new(path: impl Into<PathBuf>, sha256: impl Into<String>) -> Base {
        Base {
            path: path.into(),
            sha256: sha256.into(),
        }
    }
}

/// The image's architecture (`arch:`, `amd64` or `arm64`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Arch {
    /// `amd64` (x86-64).
    Amd64,
    /// `arm64` (AArch64).
    Arm64,
}

impl Arch {
    /// The name in recipes, manifests and k3s asset names (`amd64`, `arm64`).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What the build writes (`output:`). [`Output::default`] is what YAML gives when the key (or
/// either of its keys) is omitted: `qcow2` with `zstd`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Output {
    /// `kind`: a standalone qcow2 or an overlay of the base. Default: `qcow2`.
    #[serde(default)]
    pub kind: OutputKind,
    /// `compression`: of a standalone qcow2's clusters (an overlay's are never compressed).
    /// Default: `zstd`.
    #[serde(default)]
    pub compression: Compression,
}

impl Output {
    /// An output of `kind` with `compression`.
    pub fn new(kind: OutputKind, compression: Compression) -> Output {
        Output { kind, compression }
    }
}

/// `overlay`: a qcow2 overlay whose backing file is the base (names the base relative to the output
/// directory). `qcow2`: one standalone, flattened qcow2. `raw`: one standalone raw disk image.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OutputKind {
    /// `overlay`: only the changed clusters, backed by the base image.
    Overlay,
    /// `qcow2` (the default): the whole image, flattened, standalone.
    #[default]
    Qcow2,
    /// `raw`: the whole image as a raw disk, `<name>.img`, sparse (holes wherever a MiB of the
    /// image holds no data), to flash onto an SD card (`dd`, rpi-imager) or upload where qcow2 is
    /// not taken. `output.compression` does not apply.
    Raw,
}

impl OutputKind {
    /// The output image's file extension: `qcow2` (also for an overlay) or `img` (raw).
    pub fn extension(self) -> &'static str {
        match self {
            OutputKind::Overlay | OutputKind::Qcow2 => "qcow2",
            OutputKind::Raw => "img",
        }
    }
}

/// Cluster compression of a standalone qcow2 (`output.compression`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Compression {
    /// `zstd` (the default): zstd frames (qcow2 compression type 1).
    #[default]
    Zstd,
    /// `zlib`: raw deflate, readable by every qemu.
    Zlib,
    /// `none`: uncompressed clusters.
    None,
}

/// What `/etc/machine-id` becomes (`machine_id:`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum MachineIdMode {
    /// `uninitialized` (the default): `uninitialized\n`, mode 0444: the next boot is a first boot
    /// (ConditionFirstBoot units run).
    #[default]
    Uninitialized,
    /// `empty`: an empty file: an id is generated at boot, but it is not a first boot.
    Empty,
}

/// Changes to the default scrub catalog, by op name (`scrub:`; see [`scrub::CATALOG`]).
/// [`ScrubSelection::default`] (both lists empty) is what YAML gives when the key is omitted.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ScrubSelection {
    /// `enable`: ops that run although they are not on by default. Default: empty.
    #[serde(default)]
    pub enable: Vec<String>,
    /// `disable`: default ops that do not run. Default: empty.
    #[serde(default)]
    pub disable: Vec<String>,
}

impl ScrubSelection {
    /// Also run the op `name`.
    #[must_use]
    pub fn with_enabled(mut self, name: impl Into<String>) -> Self {
        self.enable.push(name.into());
        self
    }

    /// Do not run the default op `name`.
    #[must_use]
    pub fn with_disabled(mut self, name: impl Into<String>) -> Self {
        self.disable.push(name.into());
        self
    }
}

/// The pinned k3s release, from a directory holding its assets (`k3s:`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct K3s {
    /// `version`: the release, e.g. `v1.34.3+k3s1`. Required.
    pub version: String,
    /// `assets`: directory with `k3s` (`k3s-arm64`), `k3s-airgap-images-ARCH.tar.zst`,
    /// `install.sh` and `sha256sum-ARCH.txt`; relative to the recipe's directory unless absolute.
    /// Required.
    #[serde(serialize_with = "path_str")]
    pub assets: PathBuf,
    /// `install_sh_sha256`: sha256 of `install.sh` when the release's sums file does not list it
    /// (the release's does not: the script is published separately). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_sh_sha256: Option<String>,
    /// `airgap_images`: ship the air-gap images tarball. Default: true.
    #[serde(default = "yes")]
    pub airgap_images: bool,
}

impl K3s {
    /// The release `version` (e.g. `v1.34.3+k3s1`) from the assets directory `assets`, with the
    /// air-gap images and no `install.sh` pin.
    pub fn new(version: impl Into<String>, assets: impl Into<PathBuf>) -> K3s {
        K3s {
            version: version.into(),
            assets: assets.into(),
            install_sh_sha256: None,
            airgap_images: true,
        }
    }

    /// Pin `install.sh` to `sha256`.
    #[must_use]
    pub fn with_install_sh_sha256(mut self, sha256: impl Into<String>) -> Self {
        self.install_sh_sha256 = Some(sha256.into());
        self
    }

    /// Ship the air-gap images tarball, or not.
    #[must_use]
    pub fn with_airgap_images(mut self, ship: bool) -> Self {
        self.airgap_images = ship;
        self
    }
}

fn yes() -> bool {
    true
}

/// One prerequisite, written into the image after k3s (an item of `prerequisites:`, a one-key map
/// naming its kind). Every entry type converts into it with `From`, so
/// [`Recipe::with_prerequisite`] takes the entry itself.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Prerequisite {
    /// `file`: a regular file, from inline `content` or a host `source` file.
    File(FileEntry),
    /// `directory`: a directory (and its parents).
    Directory(DirEntry),
    /// `symlink`: a symlink.
    Symlink(SymlinkEntry),
    /// `modules_load`: `/etc/modules-load.d/<name>.conf`, one module per line.
    ModulesLoad(ModulesLoad),
    /// `sysctl`: `/etc/sysctl.d/<name>.conf`, `key = value` lines in key order.
    Sysctl(Sysctl),
    /// `systemd_enable`: enable a systemd unit: `/etc/systemd/system/<wanted_by>.wants/<unit>` →
    /// the unit file.
    SystemdEnable(SystemdEnable),
    /// `cloud_init_datasource`: `/etc/cloud/cloud.cfg.d/90-kiln-datasource.cfg` with
    /// `datasource_list: [...]`.
    CloudInitDatasource(Datasource),
    /// `deb`: a pinned `.deb` staged in `/var/lib/kiln/debs/`, installed offline at first boot by
    /// the `kiln-install-debs.service` oneshot (ordered before cloud-final, where k3s is installed).
    Deb(DebEntry),
}

macro_rules! prerequisite_from {
    ($($entry:ident => $variant:ident),* $(,)?) => {$(
        impl From<$entry> for Prerequisite {
            fn from(e: $entry) -> Prerequisite {
                Prerequisite::$variant(e)
            }
        }
    )*};
}

prerequisite_from! {
    FileEntry => File,
    DirEntry => Directory,
    SymlinkEntry => Symlink,
    ModulesLoad => ModulesLoad,
    Sysctl => Sysctl,
    SystemdEnable => SystemdEnable,
    Datasource => CloudInitDatasource,
    DebEntry => Deb,
}

/// A file on a vfat partition (an item of `boot_files:`): exactly one of `content`, `cmdline_add`
/// and `lines` says what it becomes. Its dates become `source_date_epoch`.
///
/// ```yaml
/// boot_files:
///   - partition: system-boot            # the vfat filesystem's label
///     path: /cmdline.txt
///     cmdline_add: [cgroup_memory=1, cgroup_enable=memory]
///   - partition: system-boot
///     path: /config.txt
///     lines: ["arm_64bit=1"]
///   - partition: system-boot
///     path: /kiln.txt
///     content: "hello\n"
/// ```
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BootFile {
    /// `partition`: the label of the vfat filesystem to edit (`system-boot`, `UEFI`), compared
    /// without regard to ASCII case; exactly one partition of the image must carry it. Required.
    pub partition: String,
    /// `path`: absolute, normalised path on that filesystem; missing parent directories are
    /// created. Required.
    pub path: String,
    /// `content`: the file's whole text (created or replaced). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// `cmdline_add`: kernel flags added to the one-line command line in the file, which must
    /// exist ([`kiln_vfat::cmdline_add`]: a flag already there is kept, `key=value` replaces
    /// `key=...`, order and the trailing newline kept). Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmdline_add: Vec<String>,
    /// `lines`: lines appended to the file unless already there ([`kiln_vfat::config_lines`]);
    /// the file is created when missing. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<String>,
}

impl BootFile {
    /// `path` on the vfat partition labelled `partition`, holding `content`.
    pub fn content(
        partition: impl Into<String>,
        path: impl Into<String>,
        content: impl Into<String>,
    ) -> BootFile {
        BootFile {
            content: Some(content.into()),
            ..BootFile::empty(partition, path)
        }
    }

    /// The kernel command line at `path` on the partition labelled `partition`, with `flags`
    /// added.
    pub fn cmdline_add<S: Into<String>>(
        partition: impl Into<String>,
        path: impl Into<String>,
        flags: impl IntoIterator<Item = S>,
    ) -> BootFile {
        BootFile {
            cmdline_add: flags.into_iter().map(Into::into).collect(),
            ..BootFile::empty(partition, path)
        }
    }

    /// The file at `path` on the partition labelled `partition`, with `lines` appended unless
    /// present.
    pub fn lines<S: Into<String>>(
        partition: impl Into<String>,
        path: impl Into<String>,
        lines: impl IntoIterator<Item = S>,
    ) -> BootFile {
        BootFile {
            lines: lines.into_iter().map(Into::into).collect(),
            ..BootFile::empty(partition, path)
        }
    }

    fn empty(partition: impl Into<String>, path: impl Into<String>) -> BootFile {
        BootFile {
            partition: partition.into(),
            path: path.into(),
            content: None,
            cmdline_add: Vec::new(),
            lines: Vec::new(),
        }
    }
}

/// A pinned Debian package (`deb:`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DebEntry {
    /// `source`: host path of the `.deb`, relative to the recipe's directory unless absolute.
    /// Required.
    #[serde(serialize_with = "path_str")]
    pub source: PathBuf,
    /// `sha256`: the package's pin, lower-case hex. Required.
    pub sha256: String,
}

impl DebEntry {
    /// The package at `source`, pinned to `sha256`.
    pub fn new(source: impl Into<PathBuf>, sha256: impl Into<String>) -> DebEntry {
        DebEntry {
            source: source.into(),
            sha256: sha256.into(),
        }
    }
}

/// A regular file (`file:`): exactly one of `content` and `source`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FileEntry {
    /// `path`: absolute, normalised guest path. Parent directories are created (0755, root).
    /// Required.
    pub path: String,
    /// `content`: the file's text. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// `source`: a host file to copy, relative to the recipe's directory unless absolute.
    /// Default: none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_path_str"
    )]
    pub source: Option<PathBuf>,
    /// `sha256`: pin for `source` (optional; the file's hash is recorded in the manifest either
    /// way). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `mode`: permission bits. Default: `"0644"`.
    #[serde(default = "mode_644")]
    pub mode: Mode,
    /// `owner`: numeric owner. Default: `"0:0"`.
    #[serde(default)]
    pub owner: Owner,
}

impl FileEntry {
    /// A file at guest `path` holding `content`, mode 0644, owned by 0:0.
    pub fn inline(path: impl Into<String>, content: impl Into<String>) -> FileEntry {
        FileEntry {
            path: path.into(),
            content: Some(content.into()),
            source: None,
            sha256: None,
            mode: mode_644(),
            owner: Owner::ROOT,
        }
    }

    /// A file at guest `path` copied from the host file `source`, mode 0644, owned by 0:0.
    pub fn from_source(path: impl Into<String>, source: impl Into<PathBuf>) -> FileEntry {
        FileEntry {
            path: path.into(),
            content: None,
            source: Some(source.into()),
            sha256: None,
            mode: mode_644(),
            owner: Owner::ROOT,
        }
    }

    /// Pin the `source` file to `sha256`.
    #[must_use]
    pub fn with_sha256(mut self, sha256: impl Into<String>) -> Self {
        self.sha256 = Some(sha256.into());
        self
    }

    /// Permission bits.
    #[must_use]
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Numeric owner.
    #[must_use]
    pub fn with_owner(mut self, owner: Owner) -> Self {
        self.owner = owner;
        self
    }
}

/// A directory and its parents (`directory:`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DirEntry {
    /// `path`: absolute, normalised guest path. Required.
    pub path: String,
    /// `mode`: permission bits of the directory itself (created parents get 0755). Default:
    /// `"0755"`.
    #[serde(default = "mode_755")]
    pub mode: Mode,
    /// `owner`: numeric owner of the directory itself. Default: `"0:0"`.
    #[serde(default)]
    pub owner: Owner,
}

impl DirEntry {
    /// The directory at guest `path`, mode 0755, owned by 0:0.
    pub fn new(path: impl Into<String>) -> DirEntry {
        DirEntry {
            path: path.into(),
            mode: mode_755(),
            owner: Owner::ROOT,
        }
    }

    /// Permission bits.
    #[must_use]
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Numeric owner.
    #[must_use]
    pub fn with_owner(mut self, owner: Owner) -> Self {
        self.owner = owner;
        self
    }
}

/// A symbolic link (`symlink:`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SymlinkEntry {
    /// `path`: absolute, normalised guest path of the link. Required.
    pub path: String,
    /// `target`: what the link points to, stored as given (relative or absolute). Required.
    pub target: String,
    /// `owner`: numeric owner of the link. Default: `"0:0"`.
    #[serde(default)]
    pub owner: Owner,
}

impl SymlinkEntry {
    /// A link at guest `path` pointing to `target`, owned by 0:0.
    pub fn new(path: impl Into<String>, target: impl Into<String>) -> SymlinkEntry {
        SymlinkEntry {
            path: path.into(),
            target: target.into(),
            owner: Owner::ROOT,
        }
    }

    /// Numeric owner.
    #[must_use]
    pub fn with_owner(mut self, owner: Owner) -> Self {
        self.owner = owner;
        self
    }
}

/// Kernel modules loaded at boot (`modules_load:`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ModulesLoad {
    /// `name`: the file stem, `/etc/modules-load.d/<name>.conf`. Required.
    pub name: String,
    /// `modules`: module names, one per line in this order; not empty. Required.
    pub modules: Vec<String>,
}

impl ModulesLoad {
    /// `/etc/modules-load.d/<name>.conf` listing `modules`.
    pub fn new<S: Into<String>>(
        name: impl Into<String>,
        modules: impl IntoIterator<Item = S>,
    ) -> ModulesLoad {
        ModulesLoad {
            name: name.into(),
            modules: modules.into_iter().map(Into::into).collect(),
        }
    }
}

/// Kernel parameters set at boot (`sysctl:`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Sysctl {
    /// `name`: the file stem, `/etc/sysctl.d/<name>.conf`. Required.
    pub name: String,
    /// `settings`: key → value, written in key order; not empty. Required.
    pub settings: BTreeMap<String, String>,
}

impl Sysctl {
    /// `/etc/sysctl.d/<name>.conf` with `settings`.
    pub fn new<K: Into<String>, V: Into<String>>(
        name: impl Into<String>,
        settings: impl IntoIterator<Item = (K, V)>,
    ) -> Sysctl {
        Sysctl {
            name: name.into(),
            settings: settings
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

/// A systemd unit enabled by a `.wants` link (`systemd_enable:`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SystemdEnable {
    /// `unit`: the unit's name (`iscsid.service`); its file must exist in the image. Required.
    pub unit: String,
    /// `wanted_by`: the target whose `.wants` directory gets the link. Default:
    /// `multi-user.target`.
    #[serde(default = "multi_user")]
    pub wanted_by: String,
}

impl SystemdEnable {
    /// Enable `unit`, wanted by `multi-user.target`.
    pub fn new(unit: impl Into<String>) -> SystemdEnable {
        SystemdEnable {
            unit: unit.into(),
            wanted_by: multi_user(),
        }
    }

    /// Wanted by `target` instead.
    #[must_use]
    pub fn with_wanted_by(mut self, target: impl Into<String>) -> Self {
        self.wanted_by = target.into();
        self
    }
}

fn multi_user() -> String {
    "multi-user.target".into()
}

/// cloud-init's datasource list (`cloud_init_datasource:`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Datasource {
    /// `list`: datasource names in order (`[NoCloud, None]`); not empty. Required.
    pub list: Vec<String>,
}

impl Datasource {
    /// `datasource_list: [list…]`.
    pub fn new<S: Into<String>>(list: impl IntoIterator<Item = S>) -> Datasource {
        Datasource {
            list: list.into_iter().map(Into::into).collect(),
        }
    }
}

/// Serialises a path as a string; a path that is not UTF-8 (which [`Recipe::validate`] rejects, and
/// YAML cannot hold) is written lossily rather than failing.
fn path_str<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

fn opt_path_str<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => path_str(p, s),
        None => s.serialize_none(),
    }
}

/// Permission bits (0 to 0o7777), written in YAML as a quoted octal string (`"0644"`; `"0o644"`
/// is read too). Serialises as that string, so it reads back; [`fmt::Display`] and [`FromStr`]
/// use the same form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode(pub u16);

fn mode_644() -> Mode {
    Mode(0o644)
}
fn mode_755() -> Mode {
    Mode(0o755)
}

impl FromStr for Mode {
    type Err = String;

    /// `"0644"`, `"644"` or `"0o644"`; at most 0o7777.
    fn from_str(s: &str) -> Result<Mode, String> {
        let digits = s.strip_prefix("0o").unwrap_or(s);
        match u16::from_str_radix(digits, 8) {
            Ok(m) if !digits.is_empty() && !digits.starts_with('+') && m <= 0o7777 => Ok(Mode(m)),
            _ => Err(format!("mode {s:?} is not an octal mode from 0000 to 7777")),
        }
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Mode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quoted octal mode like \"0644\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Mode, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Mode, E> {
                Err(E::custom(format!(
                    "mode {n} must be a quoted octal string like \"0{n}\" (YAML reads an unquoted number as decimal)"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Mode, E> {
                self.visit_u64(n.unsigned_abs())
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for Mode {
    /// Four octal digits, `0644`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{:04o}", self.0))
    }
}

/// Numeric owner, written `"uid:gid"` (names would need the image's passwd database). Serialises
/// as that string, so it reads back; [`fmt::Display`] and [`FromStr`] use the same form.
/// [`Owner::default`] is [`Owner::ROOT`], `0:0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl Owner {
    /// `0:0`.
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };

    /// `uid:gid`.
    pub const fn new(uid: u32, gid: u32) -> Owner {
        Owner { uid, gid }
    }
}

impl FromStr for Owner {
    type Err = String;

    /// `"uid:gid"`, both decimal.
    fn from_str(s: &str) -> Result<Owner, String> {
        let num = |x: &str| {
            x.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| x.parse::<u32>().ok())
                .flatten()
        };
        match s.split_once(':').map(|(u, g)| (num(u), num(g))) {
            Some((Some(uid), Some(gid))) => Ok(Owner { uid, gid }),
            _ => Err(format!("owner {s:?} must be numeric \"uid:gid\"")),
        }
    }
}

impl fmt::Display for Owner {
    /// `uid:gid`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{}:{}", self.uid, self.gid))
    }
}

impl Serialize for Owner {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Owner {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

pub use kiln_common::{Problem, Problems};

impl Recipe {
    /// A recipe with the required keys; every other field is what YAML gives when its key is
    /// omitted: [`Output::default`] (qcow2, zstd), [`MachineIdMode::Uninitialized`], the default
    /// scrub catalog, no k3s, no prerequisites, no boot files, and an empty [`Recipe::base_dir`] (relative paths
    /// resolve against the current directory).
    pub fn new(name: impl Into<String>, base: Base, arch: Arch, source_date_epoch: i64) -> Recipe {
        Recipe {
            name: name.into(),
            base,
            arch,
            output: Output::default(),
            source_date_epoch,
            machine_id: MachineIdMode::default(),
            scrub: ScrubSelection::default(),
            k3s: None,
            prerequisites: Vec::new(),
            boot_files: Vec::new(),
            base_dir: PathBuf::new(),
        }
    }

    /// Write `output` instead.
    #[must_use]
    pub fn with_output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// `/etc/machine-id` becomes `machine_id`.
    #[must_use]
    pub fn with_machine_id(mut self, machine_id: MachineIdMode) -> Self {
        self.machine_id = machine_id;
        self
    }

    /// Adjust the scrub catalog with `scrub`.
    #[must_use]
    pub fn with_scrub(mut self, scrub: ScrubSelection) -> Self {
        self.scrub = scrub;
        self
    }

    /// Inject the k3s release `k3s`.
    #[must_use]
    pub fn with_k3s(mut self, k3s: K3s) -> Self {
        self.k3s = Some(k3s);
        self
    }

    /// Append a prerequisite (any entry type: [`FileEntry`], [`DirEntry`], …).
    #[must_use]
    pub fn with_prerequisite(mut self, prerequisite: impl Into<Prerequisite>) -> Self {
        self.prerequisites.push(prerequisite.into());
        self
    }

    /// Append a file on a vfat partition ([`BootFile`]).
    #[must_use]
    pub fn with_boot_file(mut self, file: BootFile) -> Self {
        self.boot_files.push(file);
        self
    }

    /// Resolve relative paths against `dir`.
    #[must_use]
    pub fn with_base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = dir.into();
        self
    }

    /// The recipe's canonical digest: lower-case hex sha256 of [`Recipe::canonical_json`]. The
    /// build records it in the manifest (`recipe_sha256`).
    ///
    /// It covers the whole typed value — every key, defaults filled in, paths as written (not
    /// resolved) — and nothing else: not [`Recipe::base_dir`], not the YAML's comments, key order,
    /// quoting or layout. So the same recipe gives the same digest whether it was read from a file
    /// (wherever that file lives) or made in code. Content behind paths is covered only through
    /// the pins (`base.sha256`, `k3s` sums, `sha256` of files and packages).
    pub fn digest(&self) -> String {
        crate::hex(&Sha256::digest(self.canonical_json()))
    }

    /// The canonical serialisation [`Recipe::digest`] hashes: compact JSON of the value, fields in
    /// declaration order, map keys (sysctl settings) sorted, absent optional fields (`k3s`, a
    /// file's `content`/`source`/`sha256`, `install_sh_sha256`) omitted, every other default
    /// written out, modes as `"0644"` and owners as `"uid:gid"`.
    pub fn canonical_json(&self) -> Vec<u8> {
        // Cannot fail: every map key is a string and paths are written as (lossy) strings.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Read and parse a recipe file (unknown keys are errors), then validate it.
    pub fn load(path: &Path) -> Result<Recipe, Error> {
        let text = std::fs::read(path).map_err(|source| Error::ReadInput {
            what: "recipe",
            path: path.to_owned(),
            source,
        })?;
        let mut r = Self::from_yaml(&text, path)?;
        r.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if r.base_dir.as_os_str().is_empty() {
            r.base_dir = PathBuf::from(".");
        }
        r.validate()?;
        Ok(r)
    }

    /// Parse recipe text; `path` only names it in errors. Does not validate. [`Recipe::base_dir`]
    /// is left empty. Reads back what a YAML serialiser (`serde_saphyr::to_string`) writes for a
    /// `Recipe`.
    pub fn from_yaml(text: &[u8], path: &Path) -> Result<Recipe, Error> {
        let text = std::str::from_utf8(text).map_err(|_| Error::ParseRecipe {
            path: path.to_owned(),
            message: "not UTF-8".into(),
        })?;
        serde_saphyr::from_str(text).map_err(|e| Error::ParseRecipe {
            path: path.to_owned(),
            // The first line only: position and reason, no excerpt of the input.
            message: e
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_owned(),
        })
    }

    /// Resolve a recipe-relative path.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The scrub ops that run, in catalog order.
    pub fn scrub_ops(&self) -> Vec<&'static scrub::ScrubOp> {
        scrub::CATALOG
            .iter()
            .filter(|op| {
                let on = self.scrub.enable.iter().any(|n| n == op.name);
                let off = self.scrub.disable.iter().any(|n| n == op.name);
                on || (op.default && !off)
            })
            .collect()
    }

    /// Check every value; all problems are reported together, each with its field path
    /// (`prerequisites[2].mode`), as [`Error::Invalid`].
    pub fn validate(&self) -> Result<(), Error> {
        let mut p = Problems::new("the recipe");
        self.check_host_paths(&mut p);
        if self.name.is_empty()
            || self.name.starts_with('.')
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
        {
            p.push(
                "name",
                format!(
                    "name {:?} must be a file name of letters, digits, '.', '_', '-' or '+'",
                    self.name
                ),
            );
        }
        if !is_sha256(&self.base.sha256) {
            p.push(
                "base.sha256",
                format!(
                    "base.sha256 {:?} is not 64 lower-case hex digits",
                    self.base.sha256
                ),
            );
        }
        if self.source_date_epoch < 0 || self.source_date_epoch > (1 << 34) - (1 << 31) - 1 {
            p.push(
                "source_date_epoch",
                format!(
                    "source_date_epoch {} is outside what ext4 can store (0 to 15032385535)",
                    self.source_date_epoch
                ),
            );
        }
        for (list, other, what) in [
            (&self.scrub.enable, &self.scrub.disable, "scrub.enable"),
            (&self.scrub.disable, &self.scrub.enable, "scrub.disable"),
        ] {
            for (j, n) in list.iter().enumerate() {
                if scrub::find(n).is_none() {
                    p.push(
                        format!("{what}[{j}]"),
                        format!(
                            "{what}: unknown scrub op {n:?} (known: {})",
                            scrub::CATALOG
                                .iter()
                                .map(|o| o.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                } else if what == "scrub.enable" && other.contains(n) {
                    p.push(
                        format!("{what}[{j}]"),
                        format!("scrub op {n:?} is both enabled and disabled"),
                    );
                }
            }
        }
        if let Some(k) = &self.k3s {
            if !is_k3s_version(&k.version) {
                p.push(
                    "k3s.version",
                    format!(
                        "k3s.version {:?} is not a pinned k3s release like v1.34.3+k3s1",
                        k.version
                    ),
                );
            }
            if let Some(s) = &k.install_sh_sha256
                && !is_sha256(s)
            {
                p.push(
                    "k3s.install_sh_sha256",
                    format!("k3s.install_sh_sha256 {s:?} is not 64 lower-case hex digits"),
                );
            }
        }
        for (i, pr) in self.prerequisites.iter().enumerate() {
            check_prereq(i, pr, &mut p);
        }
        for (i, f) in self.boot_files.iter().enumerate() {
            check_boot_file(i, f, &mut p);
        }
        p.into_result().map_err(Error::Invalid)
    }
}

impl Recipe {
    /// Host paths must be UTF-8: a recipe is text, and the digest and the manifest hold them as
    /// strings.
    fn check_host_paths(&self, p: &mut Problems) {
        let mut paths = vec![("base.path".to_owned(), &self.base.path)];
        if let Some(k) = &self.k3s {
            paths.push(("k3s.assets".to_owned(), &k.assets));
        }
        for (i, pr) in self.prerequisites.iter().enumerate() {
            match pr {
                Prerequisite::File(FileEntry {
                    source: Some(s), ..
                }) => paths.push((format!("prerequisites[{i}].source"), s)),
                Prerequisite::Deb(d) => {
                    paths.push((format!("prerequisites[{i}].source"), &d.source))
                }
                _ => {}
            }
        }
        for (field, path) in paths {
            if path.to_str().is_none() {
                let message = format!("{field} {} is not UTF-8", path.display());
                p.push(field, message);
            }
        }
    }
}

fn check_prereq(i: usize, pr: &Prerequisite, p: &mut Problems) {
    let mut at = At {
        at: format!("prerequisites[{i}]"),
        p,
    };
    match pr {
        Prerequisite::File(f) => check_file(&mut at, f),
        Prerequisite::Directory(d) => {
            at.path("path", &d.path);
            at.mode(d.mode);
        }
        Prerequisite::Symlink(s) => {
            at.path("path", &s.path);
            if s.target.is_empty() || s.target.contains('\0') {
                at.bad("target", "must be a non-empty path");
            }
        }
        Prerequisite::ModulesLoad(m) => {
            at.conf_name(&m.name);
            if m.modules.is_empty() {
                at.bad("modules", "is empty");
            }
            let module = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
            for md in &m.modules {
                if md.is_empty() || !md.bytes().all(module) {
                    at.bad_in("modules", format!("{md:?} is not a kernel module name"));
                }
            }
        }
        Prerequisite::Sysctl(s) => check_sysctl(&mut at, s),
        Prerequisite::SystemdEnable(u) => {
            const UNIT_KINDS: [&str; 6] = [
                ".service", ".socket", ".timer", ".target", ".path", ".mount",
            ];
            for (what, n) in [("unit", &u.unit), ("wanted_by", &u.wanted_by)] {
                if !UNIT_KINDS.iter().any(|s| n.ends_with(s)) || !is_conf_name(n) {
                    at.bad(what, format!("{n:?} is not a systemd unit name"));
                }
            }
        }
        Prerequisite::Deb(d) => {
            if !is_sha256(&d.sha256) {
                at.bad(
                    "sha256",
                    format!("{:?} is not 64 lower-case hex digits", d.sha256),
                );
            }
            let name = d
                .source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !name.ends_with(".deb") || !is_conf_name(&name.replace(['+', '~'], "_")) {
                let source = d.source.display();
                at.bad("source", format!("{source:?} must name a .deb file"));
            }
        }
        Prerequisite::CloudInitDatasource(d) => {
            if d.list.is_empty() {
                at.bad("list", "is empty");
            }
            for n in &d.list {
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    at.bad_in("list", format!("{n:?} is not a datasource name"));
                }
            }
        }
    }
}

/// Problems of one prerequisite, `prerequisites[i]`.
struct At<'p> {
    at: String,
    p: &'p mut Problems,
}

impl At<'_> {
    fn field(&self, sub: &str) -> String {
        if sub.is_empty() {
            self.at.clone()
        } else {
            format!("{}.{sub}", self.at)
        }
    }

    /// A problem with field `sub`, told as "prerequisites[i].sub REST".
    fn bad(&mut self, sub: &str, rest: impl std::fmt::Display) {
        let field = self.field(sub);
        let message = format!("{field} {rest}");
        self.p.push(field, message);
    }

    /// A problem with an item of field `sub`, told as "prerequisites[i]: REST".
    fn bad_in(&mut self, sub: &str, rest: impl std::fmt::Display) {
        let message = format!("{}: {rest}", self.at);
        self.p.push(self.field(sub), message);
    }

    fn path(&mut self, sub: &str, s: &str) {
        if let Err(r) = check_guest_path(s) {
            self.bad(sub, format!("{s:?} {r}"));
        }
    }

    fn mode(&mut self, mode: Mode) {
        if mode.0 > 0o7777 {
            self.bad("mode", format!("{:o} is more than 7777", mode.0));
        }
    }

    fn conf_name(&mut self, name: &str) {
        if !is_conf_name(name) {
            self.bad("name", format!("{name:?} must be a plain file stem"));
        }
    }
}

fn check_file(at: &mut At<'_>, f: &FileEntry) {
    at.path("path", &f.path);
    at.mode(f.mode);
    match (&f.content, &f.source) {
        (Some(_), Some(_)) => at.bad(
            "",
            format!("(file {:?}) has both content and source; give one", f.path),
        ),
        (None, None) => at.bad("", format!("(file {:?}) needs content or source", f.path)),
        _ => {}
    }
    if let Some(s) = &f.sha256 {
        if !is_sha256(s) {
            at.bad("sha256", format!("{s:?} is not 64 lower-case hex digits"));
        }
        if f.source.is_none() {
            at.bad("sha256", "only applies to a source file");
        }
    }
}

fn check_boot_file(i: usize, f: &BootFile, p: &mut Problems) {
    let mut at = At {
        at: format!("boot_files[{i}]"),
        p,
    };
    let label = &f.partition;
    if label.is_empty() || label.len() > 11 || label.chars().any(|c| c.is_control()) {
        at.bad(
            "partition",
            format!("{label:?} is not a vfat label (1 to 11 characters)"),
        );
    }
    at.path("path", &f.path);
    let given = [
        f.content.is_some(),
        !f.cmdline_add.is_empty(),
        !f.lines.is_empty(),
    ];
    match given.iter().filter(|g| **g).count() {
        1 => {}
        0 => at.bad(
            "",
            format!("({:?}) needs one of content, cmdline_add and lines", f.path),
        ),
        _ => at.bad(
            "",
            format!(
                "({:?}) has more than one of content, cmdline_add and lines; give one",
                f.path
            ),
        ),
    }
    for flag in &f.cmdline_add {
        if flag.is_empty() || flag.chars().any(|c| c.is_whitespace() || c.is_control()) {
            at.bad_in(
                "cmdline_add",
                format!("{flag:?} is not a kernel flag (one word)"),
            );
        }
    }
    for line in &f.lines {
        if line.trim().is_empty() || line.contains(['\n', '\r']) {
            at.bad_in("lines", format!("{line:?} is not one non-empty line"));
        }
    }
}

fn check_sysctl(at: &mut At<'_>, s: &Sysctl) {
    at.conf_name(&s.name);
    if s.settings.is_empty() {
        at.bad("settings", "is empty");
    }
    let key = |b: u8| b.is_ascii_alphanumeric() || b"._-/*".contains(&b);
    for (k, v) in &s.settings {
        let field = format!("settings.{k}");
        if k.is_empty() || !k.bytes().all(key) {
            at.bad_in(&field, format!("{k:?} is not a sysctl key"));
        }
        if v.contains('\n') {
            at.bad_in(&field, format!("the value of {k} contains a newline"));
        }
    }
}

fn is_conf_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

/// An absolute guest path without `.`/`..`/empty components or NUL.
pub(crate) fn check_guest_path(s: &str) -> Result<(), &'static str> {
    if !s.starts_with('/') {
        return Err("must be absolute");
    }
    if s == "/" {
        return Err("must not be the root directory");
    }
    if s.contains('\0') {
        return Err("contains NUL");
    }
    if s[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("must be normalised (no empty, '.' or '..' components)");
    }
    Ok(())
}

pub(crate) use kiln_common::digest::is_sha256;

/// `vMAJOR.MINOR.PATCH+k3sN` (optionally `-rcN` before `+`).
pub(crate) fn is_k3s_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let Some((semver, build)) = rest.split_once('+') else {
        return false;
    };
    let semver = semver.split_once('-').map_or(semver, |(a, _)| a);
    let nums: Vec<&str> = semver.split('.').collect();
    nums.len() == 3
        && nums
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && build
            .strip_prefix("k3s")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(is_k3s_version("v1.34.3+k3s1"));
        assert!(is_k3s_version("v1.33.0-rc1+k3s2"));
        assert!(!is_k3s_version("1.34.3+k3s1"));
        assert!(!is_k3s_version("v1.34+k3s1"));
        assert!(!is_k3s_version("stable"));
    }

    fn parse(text: &str) -> Result<Recipe, Error> {
        Recipe::from_yaml(text.as_bytes(), Path::new("r.yaml"))
    }

    const HEAD: &str = "name: n\nbase: { path: b.qcow2, sha256: 0000000000000000000000000000000000000000000000000000000000000000 }\narch: amd64\nsource_date_epoch: 1\n";

    #[test]
    fn every_prerequisite_kind_parses_and_defaults_apply() {
        let r = parse(&format!(
            "{HEAD}prerequisites:\n  - file: {{ path: /a, content: x }}\n  - file: {{ path: /b, source: f, sha256: {z}, mode: \"0600\", owner: \"1:2\" }}\n  - directory: {{ path: /d }}\n  - symlink: {{ path: /s, target: /a }}\n  - modules_load: {{ name: k, modules: [overlay] }}\n  - sysctl: {{ name: s, settings: {{ a.b: \"1\" }} }}\n  - systemd_enable: {{ unit: x.service }}\n  - cloud_init_datasource: {{ list: [NoCloud, None] }}\n  - deb: {{ source: p.deb, sha256: {z} }}\n",
            z = "0".repeat(64)
        ))
        .unwrap();
        r.validate().unwrap();
        assert_eq!(r.prerequisites.len(), 9);
        assert_eq!(r.output, Output::default());
        assert_eq!(r.output.kind, OutputKind::Qcow2);
        assert_eq!(r.machine_id, MachineIdMode::Uninitialized);
        let Prerequisite::File(f) = &r.prerequisites[0] else {
            panic!()
        };
        assert_eq!((f.mode, f.owner), (Mode(0o644), Owner { uid: 0, gid: 0 }));
        let Prerequisite::File(f) = &r.prerequisites[1] else {
            panic!()
        };
        assert_eq!((f.mode, f.owner), (Mode(0o600), Owner { uid: 1, gid: 2 }));
        let Prerequisite::SystemdEnable(u) = &r.prerequisites[6] else {
            panic!()
        };
        assert_eq!(u.wanted_by, "multi-user.target");
        assert_eq!(r.scrub_ops().len(), crate::scrub::CATALOG.len());
    }

    #[test]
    fn shape_errors_are_clear() {
        let msg = |t: String| parse(&t).unwrap_err().to_string();
        assert!(msg(format!("{HEAD}colour: x\n")).contains("colour"));
        let m = msg(format!(
            "{HEAD}prerequisites:\n  - file: {{ path: /a, content: x, mode: 0644 }}\n"
        ));
        assert!(m.contains("quoted octal"), "{m}");
        let m = msg(format!(
            "{HEAD}prerequisites:\n  - file: {{ path: /a, content: x, owner: root }}\n"
        ));
        assert!(m.contains("uid:gid"), "{m}");
        let m = msg(format!(
            "{HEAD}prerequisites:\n  - tarball: {{ path: /a }}\n"
        ));
        assert!(m.contains("tarball"), "{m}");
        assert!(msg(HEAD.replace("amd64", "riscv64")).contains("riscv64"));
        assert!(msg(format!("{HEAD}machine_id: random\n")).contains("random"));
    }

    #[test]
    fn value_problems_are_all_reported() {
        let r = parse(&format!(
            "{}scrub: {{ enable: [hostname, bogus], disable: [hostname] }}\nk3s: {{ version: latest, assets: a }}\nprerequisites:\n  - file: {{ path: /a }}\n  - symlink: {{ path: /x/../y, target: z }}\n",
            HEAD.replace("sha256: 0000", "sha256: X000")
        ))
        .unwrap();
        let Err(Error::Invalid(problems)) = r.validate() else {
            panic!("expected problems")
        };
        let fields: Vec<&str> = problems.list.iter().map(|x| x.field.as_str()).collect();
        for f in ["base.sha256", "k3s.version"] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        let p: Vec<String> = problems.lines().collect();
        let all = p.join("\n");
        for needle in [
            "base.sha256",
            "unknown scrub op \"bogus\"",
            "both enabled and disabled",
            "k3s.version \"latest\"",
            "needs content or source",
            "must be normalised",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
        assert_eq!(p.len(), 6, "{all}");
    }

    #[test]
    fn scrub_selection() {
        let r = parse(&format!(
            "{HEAD}scrub: {{ disable: [hostname, logfiles] }}\n"
        ))
        .unwrap();
        let names: Vec<&str> = r.scrub_ops().iter().map(|o| o.name).collect();
        assert!(!names.contains(&"hostname") && !names.contains(&"logfiles"));
        assert!(names.contains(&"machine-id"));
    }

    const PIN: &str = "c28c27067a1fde2d7192db05b922efa700a2919e8bd71a7c989866d8615ae4f1";

    #[test]
    fn the_constructors_give_what_yaml_gives_for_omitted_keys() {
        let yaml = parse(&format!(
            "name: n\nbase: {{ path: b.qcow2, sha256: {PIN} }}\narch: arm64\nsource_date_epoch: 7\nk3s: {{ version: v1.34.3+k3s1, assets: k }}\nprerequisites:\n  - file: {{ path: /a, content: x }}\n  - file: {{ path: /b, source: s }}\n  - directory: {{ path: /d }}\n  - symlink: {{ path: /s, target: t }}\n  - systemd_enable: {{ unit: u.service }}\n"
        ))
        .unwrap();
        let code = Recipe::new("n", Base::new("b.qcow2", PIN), Arch::Arm64, 7)
            .with_k3s(K3s::new("v1.34.3+k3s1", "k"))
            .with_prerequisite(FileEntry::inline("/a", "x"))
            .with_prerequisite(FileEntry::from_source("/b", "s"))
            .with_prerequisite(DirEntry::new("/d"))
            .with_prerequisite(SymlinkEntry::new("/s", "t"))
            .with_prerequisite(SystemdEnable::new("u.service"));
        assert_eq!(yaml, code);
        assert_eq!(yaml.digest(), code.digest());
        let minimal = parse(HEAD).unwrap();
        let zero = "0".repeat(64);
        assert_eq!(
            minimal,
            Recipe::new("n", Base::new("b.qcow2", zero.as_str()), Arch::Amd64, 1)
        );
    }

    /// The committed recipe, made in code: the same value and the same digest as the file, which
    /// is pinned here (it is what the committed manifest and its lock record).
    #[test]
    fn a_recipe_file_and_the_same_recipe_in_code_have_one_digest() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/k3s-node-ubuntu-24.04.yaml");
        let file = Recipe::load(&path).unwrap();
        let code = Recipe::new(
            "k3s-node-ubuntu-24.04",
            Base::new("../target/fixtures/ubuntu-24.04-base.qcow2", PIN),
            Arch::Amd64,
            1_767_225_600,
        )
        .with_output(Output::new(OutputKind::Qcow2, Compression::Zstd))
        .with_machine_id(MachineIdMode::Uninitialized)
        .with_k3s(
            K3s::new("v1.34.3+k3s1", "../target/fixtures/k3s").with_install_sh_sha256(
                "8dd65dcacc0aecc9b30c668b782a062815898abb4754a7e6d74c978c219a583c",
            ),
        )
        .with_prerequisite(ModulesLoad::new("k3s", ["overlay", "br_netfilter"]))
        .with_prerequisite(Sysctl::new(
            "90-k3s",
            [
                ("net.ipv4.ip_forward", "1"),
                ("net.bridge.bridge-nf-call-iptables", "1"),
                ("net.bridge.bridge-nf-call-ip6tables", "1"),
            ],
        ))
        .with_prerequisite(Datasource::new(["NoCloud", "None"]))
        .with_prerequisite(DirEntry::new("/etc/rancher/k3s").with_mode(Mode(0o755)))
        .with_prerequisite(SystemdEnable::new("iscsid.service"));
        assert_ne!(file.base_dir, code.base_dir);
        assert_eq!(file, code.clone().with_base_dir(&file.base_dir));
        assert_eq!(file.digest(), code.digest());
        assert_eq!(
            file.digest(),
            "56dc4d60d8485c70171270666bac212b665a75f40914cc0bd3ec96ab4d46356b"
        );
        // Comments, layout, quoting and key order are not the value; a changed value is.
        let text = std::fs::read_to_string(&path).unwrap();
        let relaid = format!(
            "{}\n# another comment\n",
            text.replace("arch: amd64\n", "")
                .replacen("\nname: ", "\narch: \"amd64\"\nname: ", 1)
        );
        assert_eq!(parse(&relaid).unwrap().digest(), file.digest());
        let mut other = file.clone();
        other.k3s.as_mut().unwrap().airgap_images = false;
        assert_ne!(other.digest(), file.digest());
    }

    #[test]
    fn modes_and_owners_serialise_as_they_are_written() {
        let f = FileEntry::inline("/a", "x")
            .with_mode(Mode(0o600))
            .with_owner(Owner::new(1000, 100));
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(
            json,
            r#"{"path":"/a","content":"x","mode":"0600","owner":"1000:100"}"#
        );
        assert_eq!(serde_json::from_str::<FileEntry>(&json).unwrap(), f);
        let yaml = serde_saphyr::to_string(&f).unwrap();
        assert!(yaml.contains("mode: \"0600\""), "{yaml}");
        assert_eq!(serde_saphyr::from_str::<FileEntry>(&yaml).unwrap(), f);
        assert_eq!("0o755".parse::<Mode>().unwrap(), Mode(0o755));
        assert_eq!("755".parse::<Mode>().unwrap().to_string(), "0755");
        assert_eq!(format!("{:>6}", Mode(0o7)), "  0007");
        for bad in ["", "0o", "8", "+7", "17777", "-1"] {
            assert!(bad.parse::<Mode>().is_err(), "{bad}");
        }
        assert_eq!("0:0".parse::<Owner>().unwrap(), Owner::ROOT);
        assert_eq!(Owner::new(5, 6).to_string(), "5:6");
        for bad in [
            "",
            "0",
            "root:root",
            "1:",
            ":1",
            "+1:1",
            "1:2:3",
            "4294967296:0",
        ] {
            assert!(bad.parse::<Owner>().is_err(), "{bad}");
        }
    }

    #[test]
    fn out_of_range_modes_and_non_utf8_paths_are_problems() {
        use std::os::unix::ffi::OsStrExt;
        let bad_path = PathBuf::from(std::ffi::OsStr::from_bytes(b"b\xff.qcow2"));
        let r = Recipe::new("n", Base::new(bad_path, PIN), Arch::Amd64, 1)
            .with_prerequisite(FileEntry::inline("/a", "x").with_mode(Mode(0o10000)))
            .with_prerequisite(DirEntry::new("/d").with_mode(Mode(0o17777)));
        let Err(Error::Invalid(p)) = r.validate() else {
            panic!("expected problems")
        };
        let fields: Vec<&str> = p.list.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "base.path",
                "prerequisites[0].mode",
                "prerequisites[1].mode"
            ]
        );
        // Its digest is still defined (the path is hashed lossily).
        assert_eq!(r.digest().len(), 64);
    }

    #[test]
    fn boot_files_parse_validate_and_match_the_builders() {
        let yaml = parse(&format!(
            "{HEAD}boot_files:\n  - partition: system-boot\n    path: /cmdline.txt\n    cmdline_add: [cgroup_memory=1, cgroup_enable=memory]\n  - {{ partition: system-boot, path: /config.txt, lines: [\"arm_64bit=1\"] }}\n  - {{ partition: UEFI, path: /kiln.txt, content: \"hello\\n\" }}\n"
        ))
        .unwrap();
        yaml.validate().unwrap();
        let zero = "0".repeat(64);
        let code = Recipe::new("n", Base::new("b.qcow2", zero.as_str()), Arch::Amd64, 1)
            .with_boot_file(BootFile::cmdline_add(
                "system-boot",
                "/cmdline.txt",
                ["cgroup_memory=1", "cgroup_enable=memory"],
            ))
            .with_boot_file(BootFile::lines(
                "system-boot",
                "/config.txt",
                ["arm_64bit=1"],
            ))
            .with_boot_file(BootFile::content("UEFI", "/kiln.txt", "hello\n"));
        assert_eq!(yaml, code);
        assert_eq!(yaml.digest(), code.digest());
        // Without boot files the key is not in the canonical form (old digests hold).
        let plain = parse(HEAD).unwrap();
        assert!(
            !String::from_utf8(plain.canonical_json())
                .unwrap()
                .contains("boot_files")
        );
        let m = parse(&format!(
            "{HEAD}boot_files:\n  - {{ partition: a, path: /x, content: y, colour: 1 }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(m.contains("colour"), "{m}");
        let bad = parse(&format!(
            "{HEAD}boot_files:\n  - {{ partition: \"\", path: x, content: y }}\n  - {{ partition: a, path: /x, content: y, lines: [z] }}\n  - {{ partition: a, path: /x }}\n  - {{ partition: a, path: /x, cmdline_add: [\"a b\"] }}\n  - {{ partition: a, path: /x, lines: [\"a\\nb\"] }}\n  - {{ partition: twelve-chars, path: /x, content: y }}\n"
        ))
        .unwrap();
        let Err(Error::Invalid(p)) = bad.validate() else {
            panic!("expected problems")
        };
        let fields: Vec<&str> = p.list.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "boot_files[0].partition",
                "boot_files[0].path",
                "boot_files[1]",
                "boot_files[2]",
                "boot_files[3].cmdline_add",
                "boot_files[4].lines",
                "boot_files[5].partition",
            ]
        );
        let all: Vec<String> = p.lines().collect();
        assert!(
            all.join("\n").contains("more than one of content"),
            "{all:?}"
        );
    }

    #[test]
    fn guest_paths() {
        assert!(check_guest_path("/etc/x").is_ok());
        assert!(check_guest_path("etc/x").is_err());
        assert!(check_guest_path("/etc/../x").is_err());
        assert!(check_guest_path("/etc//x").is_err());
        assert!(check_guest_path("/").is_err());
    }
}
