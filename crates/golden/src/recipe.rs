//! The typed golden-image recipe (YAML, unknown keys are errors) and its validation.
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
//! ```
//!
//! Relative paths are resolved against the recipe file's directory.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::Error;
use crate::scrub;

/// A parsed recipe. Parsing checks the shape; [`Recipe::validate`] checks the values.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Output file stem: `<name>.qcow2` and `<name>.manifest.json`.
    pub name: String,
    pub base: Base,
    pub arch: Arch,
    #[serde(default)]
    pub output: Output,
    /// Every time written into the image (seconds since the epoch).
    pub source_date_epoch: i64,
    #[serde(default)]
    pub machine_id: MachineIdMode,
    #[serde(default)]
    pub scrub: ScrubSelection,
    #[serde(default)]
    pub k3s: Option<K3s>,
    #[serde(default)]
    pub prerequisites: Vec<Prerequisite>,
    /// The directory relative paths are resolved against (the recipe's own directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// The pinned vendor cloud image.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Base {
    pub path: PathBuf,
    /// Lower-case hex sha256 of the image file.
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Output {
    #[serde(default)]
    pub kind: OutputKind,
    #[serde(default)]
    pub compression: Compression,
}

/// `overlay`: a qcow2 overlay whose backing file is the base (names the base relative to the output
/// directory). `qcow2`: one standalone, flattened qcow2.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    Overlay,
    #[default]
    Qcow2,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Zlib,
    None,
}

/// What `/etc/machine-id` becomes.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MachineIdMode {
    /// `uninitialized\n`, mode 0444: the next boot is a first boot (ConditionFirstBoot units run).
    #[default]
    Uninitialized,
    /// An empty file: an id is generated at boot, but it is not a first boot.
    Empty,
}

/// Changes to the default scrub catalog, by op name.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct ScrubSelection {
    #[serde(default)]
    pub enable: Vec<String>,
    #[serde(default)]
    pub disable: Vec<String>,
}

/// The pinned k3s release, from a directory holding its assets.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct K3s {
    /// e.g. `v1.34.3+k3s1`.
    pub version: String,
    /// Directory with `k3s` (`k3s-arm64`), `k3s-airgap-images-ARCH.tar.zst`, `install.sh` and
    /// `sha256sum-ARCH.txt`.
    pub assets: PathBuf,
    /// sha256 of `install.sh` when the release's sums file does not list it (the release's does
    /// not: the script comes from get.k3s.io).
    #[serde(default)]
    pub install_sh_sha256: Option<String>,
    /// Ship the air-gap images tarball (default true).
    #[serde(default = "yes")]
    pub airgap_images: bool,
}

fn yes() -> bool {
    true
}

/// One prerequisite, written into the image after k3s.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Prerequisite {
    /// A regular file, from inline `content` or a host `source` file.
    File(FileEntry),
    /// A directory (and its parents).
    Directory(DirEntry),
    /// A symlink.
    Symlink(SymlinkEntry),
    /// `/etc/modules-load.d/<name>.conf`, one module per line.
    ModulesLoad(ModulesLoad),
    /// `/etc/sysctl.d/<name>.conf`, `key = value` lines in key order.
    Sysctl(Sysctl),
    /// Enable a systemd unit: `/etc/systemd/system/<wanted_by>.wants/<unit>` → the unit file.
    SystemdEnable(SystemdEnable),
    /// `/etc/cloud/cloud.cfg.d/90-kiln-datasource.cfg` with `datasource_list: [...]`.
    CloudInitDatasource(Datasource),
    /// A pinned `.deb` staged in `/var/lib/kiln/debs/`, installed offline at first boot by the
    /// `kiln-install-debs.service` oneshot (ordered before cloud-final, where k3s is installed).
    Deb(DebEntry),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DebEntry {
    /// Host path of the package (relative to the recipe).
    pub source: PathBuf,
    /// Required pin.
    pub sha256: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub source: Option<PathBuf>,
    /// Pin for `source` (optional; recorded in the manifest either way).
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default = "mode_644")]
    pub mode: Mode,
    #[serde(default)]
    pub owner: Owner,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DirEntry {
    pub path: String,
    #[serde(default = "mode_755")]
    pub mode: Mode,
    #[serde(default)]
    pub owner: Owner,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SymlinkEntry {
    pub path: String,
    pub target: String,
    #[serde(default)]
    pub owner: Owner,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ModulesLoad {
    pub name: String,
    pub modules: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Sysctl {
    pub name: String,
    pub settings: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SystemdEnable {
    pub unit: String,
    #[serde(default = "multi_user")]
    pub wanted_by: String,
}

fn multi_user() -> String {
    "multi-user.target".into()
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Datasource {
    pub list: Vec<String>,
}

/// Permission bits, written in YAML as a quoted octal string (`"0644"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mode(pub u16);

fn mode_644() -> Mode {
    Mode(0o644)
}
fn mode_755() -> Mode {
    Mode(0o755)
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
                let digits = s.strip_prefix("0o").unwrap_or(s);
                match u16::from_str_radix(digits, 8) {
                    Ok(m) if !digits.is_empty() && m <= 0o7777 => Ok(Mode(m)),
                    _ => Err(E::custom(format!(
                        "mode {s:?} is not an octal mode from 0000 to 7777"
                    ))),
                }
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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// Numeric `uid:gid` (names would need the image's passwd database).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl<'de> Deserialize<'de> for Owner {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let parse = |x: &str| x.parse::<u32>().ok();
        match s.split_once(':') {
            Some((u, g)) => match (parse(u), parse(g)) {
                (Some(uid), Some(gid)) => Ok(Owner { uid, gid }),
                _ => Err(serde::de::Error::custom(format!(
                    "owner {s:?} must be numeric \"uid:gid\""
                ))),
            },
            None => Err(serde::de::Error::custom(format!(
                "owner {s:?} must be numeric \"uid:gid\""
            ))),
        }
    }
}

pub use kiln_common::{Problem, Problems};

impl Recipe {
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

    /// Parse recipe text; `path` only names it in errors. Does not validate.
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

    /// Check every value; all problems are reported together.
    pub fn validate(&self) -> Result<(), Error> {
        let mut p = Problems::new("the recipe");
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
        p.into_result().map_err(Error::Invalid)
    }
}

fn check_prereq(i: usize, pr: &Prerequisite, p: &mut Problems) {
    let mut at = At {
        at: format!("prerequisites[{i}]"),
        p,
    };
    match pr {
        Prerequisite::File(f) => check_file(&mut at, f),
        Prerequisite::Directory(d) => at.path("path", &d.path),
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

    fn conf_name(&mut self, name: &str) {
        if !is_conf_name(name) {
            self.bad("name", format!("{name:?} must be a plain file stem"));
        }
    }
}

fn check_file(at: &mut At<'_>, f: &FileEntry) {
    at.path("path", &f.path);
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

    #[test]
    fn guest_paths() {
        assert!(check_guest_path("/etc/x").is_ok());
        assert!(check_guest_path("etc/x").is_err());
        assert!(check_guest_path("/etc/../x").is_err());
        assert!(check_guest_path("/etc//x").is_err());
        assert!(check_guest_path("/").is_err());
    }
}
