//! The scrub-op catalog: named, documented edits that remove the state a booted-once cloud image
//! carries (identity, cloud-init state, keys, logs, caches), each reporting exactly which paths it
//! changed. Ops run in catalog order; which ones run is the default set adjusted by the recipe's
//! `scrub.enable` / `scrub.disable`.
//!
//! Every op is idempotent: on an image that is already clean it changes nothing and reports nothing.
//!
//! Names are bytes: an op that walks a directory matches each entry's name as bytes and removes
//! it by its exact path, so an entry whose name is not UTF-8 (`/tmp/bad\xffname`) is handled
//! exactly like any other, and recorded in the escaped form of [`GuestPath`].

use kiln_ext4::{FileKind, Filesystem, GuestPath, GuestPathBuf, NewFile};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::recipe::MachineIdMode;

/// What an op did to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// Removed (a directory with everything below it).
    Removed,
    /// Cut to zero bytes (kept, with its mode and owner).
    Truncated,
    /// Rewritten with fixed content.
    Reset,
    /// Replaced by a symlink.
    Linked,
}

impl Action {
    /// The name the manifest uses (`removed`, `truncated`, `reset`, `linked`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Removed => "removed",
            Action::Truncated => "truncated",
            Action::Reset => "reset",
            Action::Linked => "linked",
        }
    }
}

/// One changed path (an item of a manifest scrub record's `changed`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Change {
    /// Absolute guest path (bytes; serialised in the escaped form of [`GuestPath`], so a UTF-8
    /// path without backslashes or control characters reads as it is).
    pub path: GuestPathBuf,
    /// What the op did to it.
    pub action: Action,
}

/// Inputs an op may need besides the filesystem.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ScrubInput {
    /// What `/etc/machine-id` becomes (the recipe's `machine_id`).
    pub machine_id: MachineIdMode,
}

impl ScrubInput {
    /// The inputs of a recipe whose `machine_id` is `machine_id`.
    pub fn new(machine_id: MachineIdMode) -> ScrubInput {
        ScrubInput { machine_id }
    }
}

type OpFn = fn(&mut Scrubber<'_, '_>) -> Result<(), Error>;

/// A catalog entry.
pub struct ScrubOp {
    /// The op's name, as `scrub.enable` / `scrub.disable` and the manifest write it.
    pub name: &'static str,
    /// One line for `kiln scrub --list`.
    pub summary: &'static str,
    /// Runs unless the recipe disables it.
    pub default: bool,
    run: OpFn,
}

impl std::fmt::Debug for ScrubOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrubOp")
            .field("name", &self.name)
            .field("default", &self.default)
            .finish()
    }
}

impl ScrubOp {
    /// Run the op; returns the changed paths, sorted.
    pub fn run(&self, fs: &mut Filesystem<'_>, input: &ScrubInput) -> Result<Vec<Change>, Error> {
        let mut s = Scrubber {
            fs,
            input,
            op: self.name,
            out: Vec::new(),
        };
        (self.run)(&mut s)?;
        let mut out = s.out;
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// The catalog, in the order ops run.
pub static CATALOG: &[ScrubOp] = &[
    ScrubOp {
        name: "machine-id",
        summary: "/etc/machine-id becomes `uninitialized` (first boot, mode 0444) or empty, per the recipe's machine_id",
        default: true,
        run: machine_id,
    },
    ScrubOp {
        name: "dbus-machine-id",
        summary: "/var/lib/dbus/machine-id: a copied id is replaced by a symlink to /etc/machine-id",
        default: true,
        run: dbus_machine_id,
    },
    ScrubOp {
        name: "cloud-init-state",
        summary: "what `cloud-init clean --logs --seed` removes: everything in /var/lib/cloud, /var/log/cloud-init.log, /var/log/cloud-init-output.log and rotated copies",
        default: true,
        run: cloud_init_state,
    },
    ScrubOp {
        name: "cloud-init-network",
        summary: "network configs cloud-init rendered: /etc/netplan/50-cloud-init.yaml, NetworkManager 99-cloud-init.conf / 30-cloud-init-ip6-addr-gen-mode.conf / cloud-init-*.nmconnection, networkd 10-cloud-init-*.network, ENI 50-cloud-init.cfg",
        default: true,
        run: cloud_init_network,
    },
    ScrubOp {
        name: "cloud-init-ssh-config",
        summary: "/etc/ssh/sshd_config.d/50-cloud-init.conf, rendered by cloud-init from the last instance's user-data",
        default: true,
        run: cloud_init_ssh_config,
    },
    ScrubOp {
        name: "ssh-hostkeys",
        summary: "/etc/ssh/ssh_host_*_key and .pub: every clone must generate its own host keys",
        default: true,
        run: ssh_hostkeys,
    },
    ScrubOp {
        name: "udev-persistent-net",
        summary: "/etc/udev/rules.d/70-persistent-net.rules and 70-persistent-cd.rules (NIC names pinned to old MACs)",
        default: true,
        run: udev_persistent_net,
    },
    ScrubOp {
        name: "random-seed",
        summary: "/var/lib/systemd/random-seed, /var/lib/urandom/random-seed and /var/lib/systemd/credential.secret (shared entropy and secrets)",
        default: true,
        run: random_seed,
    },
    ScrubOp {
        name: "logfiles",
        summary: "/var/log: rotated logs (*.1, *.gz, *.old, …) and journal directories removed, other log files truncated",
        default: true,
        run: logfiles,
    },
    ScrubOp {
        name: "tmp-files",
        summary: "everything in /tmp and /var/tmp",
        default: true,
        run: tmp_files,
    },
    ScrubOp {
        name: "shell-history",
        summary: "shell, less, vim and python histories of root and every /home user",
        default: true,
        run: shell_history,
    },
    ScrubOp {
        name: "apt-cache",
        summary: "what `apt-get clean` removes: /var/cache/apt/*.bin, downloaded .debs and partial downloads",
        default: true,
        run: apt_cache,
    },
    ScrubOp {
        name: "dhcp-leases",
        summary: "DHCP leases of dhclient, NetworkManager and systemd-networkd",
        default: true,
        run: dhcp_leases,
    },
    ScrubOp {
        name: "hostname",
        summary: "/etc/hostname emptied (cloud-init sets each node's name at first boot)",
        default: true,
        run: hostname,
    },
];

/// Look an op up by name.
pub fn find(name: &str) -> Option<&'static ScrubOp> {
    CATALOG.iter().find(|o| o.name == name)
}

/// One op at work: the filesystem, the op's inputs, its name (named in every error) and the
/// changes it made so far.
struct Scrubber<'a, 'd> {
    fs: &'a mut Filesystem<'d>,
    input: &'a ScrubInput,
    op: &'static str,
    out: Vec<Change>,
}

impl Scrubber<'_, '_> {
    fn err(&self, path: &GuestPath) -> impl FnOnce(kiln_ext4::Error) -> Error {
        let (op, path) = (self.op, path.to_string());
        move |source| Error::Scrub {
            op,
            path,
            source: Box::new(source),
        }
    }

    fn record(&mut self, path: &GuestPath, action: Action) {
        self.out.push(Change {
            path: path.to_owned(),
            action,
        });
    }

    fn lstat(&self, path: &GuestPath) -> Result<Option<kiln_ext4::Metadata>, Error> {
        match self.fs.lstat(path) {
            Ok(m) => Ok(Some(m)),
            Err(kiln_ext4::Error::NotFound { .. } | kiln_ext4::Error::NotADirectory { .. }) => {
                Ok(None)
            }
            Err(e) => Err(self.err(path)(e)),
        }
    }

    /// Whether `path` is a real directory (not a symlink to one).
    fn is_dir(&self, path: &GuestPath) -> Result<bool, Error> {
        Ok(self.lstat(path)?.is_some_and(|m| m.kind == FileKind::Dir))
    }

    /// Removes `path` (recursively for a directory) if it exists; whether it did.
    fn remove_unrecorded(&mut self, path: &GuestPath) -> Result<bool, Error> {
        let Some(m) = self.lstat(path)? else {
            return Ok(false);
        };
        let done = if m.kind == FileKind::Dir {
            self.fs.remove_all(path)
        } else {
            self.fs.remove_file(path)
        };
        done.map_err(self.err(path))?;
        Ok(true)
    }

    /// Removes `path` (recursively for a directory) if it exists, and records it.
    fn remove(&mut self, path: &GuestPath) -> Result<(), Error> {
        if self.remove_unrecorded(path)? {
            self.record(path, Action::Removed);
        }
        Ok(())
    }

    /// Removes each of `paths` that exists.
    fn remove_all(&mut self, paths: &[&str]) -> Result<(), Error> {
        paths
            .iter()
            .try_for_each(|p| self.remove(GuestPath::new(p)))
    }

    /// Names in directory `dir`, as bytes (empty if it does not exist or is not a real
    /// directory).
    fn names(&self, dir: &GuestPath) -> Result<Vec<Vec<u8>>, Error> {
        if !self.is_dir(dir)? {
            return Ok(Vec::new());
        }
        Ok(self
            .fs
            .read_dir(dir)
            .map_err(self.err(dir))?
            .into_iter()
            .map(|e| e.name)
            .collect())
    }

    /// Removes every entry of `dir` whose name (bytes) satisfies `pick`.
    fn remove_matching(&mut self, dir: &str, pick: impl Fn(&[u8]) -> bool) -> Result<(), Error> {
        let dir = GuestPath::new(dir);
        for n in self.names(dir)? {
            if pick(&n) {
                self.remove(&dir.join(&n))?;
            }
        }
        Ok(())
    }

    /// Cuts `path` to zero bytes if `md` (its metadata) shows a non-empty regular file, and
    /// records it.
    fn truncate(&mut self, path: &GuestPath, md: Option<kiln_ext4::Metadata>) -> Result<(), Error> {
        if let Some(m) = md
            && m.kind == FileKind::File
            && m.size > 0
        {
            self.fs.truncate(path, 0).map_err(self.err(path))?;
            self.record(path, Action::Truncated);
        }
        Ok(())
    }
}

fn machine_id(s: &mut Scrubber<'_, '_>) -> Result<(), Error> {
    let p = GuestPath::new("/etc/machine-id");
    let want: &[u8] = match s.input.machine_id {
        MachineIdMode::Uninitialized => b"uninitialized\n",
        MachineIdMode::Empty => b"",
    };
    let current = s.lstat(p)?;
    if let Some(m) = &current
        && m.kind == FileKind::File
        && m.perm == 0o444
        && m.uid == 0
        && m.gid == 0
        && s.fs.read(p).map_err(s.err(p))? == want
    {
        return Ok(());
    }
    if current.is_some_and(|m| m.kind != FileKind::File) {
        s.remove_unrecorded(p)?;
    }
    let attrs = NewFile {
        perm: 0o444,
        ..NewFile::default()
    };
    s.fs.write(p, want, attrs).map_err(s.err(p))?;
    s.record(p, Action::Reset);
    Ok(())
}

fn dbus_machine_id(s: &mut Scrubber<'_, '_>) -> Result<(), Error> {
    let p = GuestPath::new("/var/lib/dbus/machine-id");
    match s.lstat(p)? {
        None => Ok(()),
        Some(m) if m.kind == FileKind::Symlink => Ok(()),
        Some(_) => {
            s.remove_unrecorded(p)?;
            s.fs.symlink("/etc/machine-id", p, 0, 0).map_err(s.err(p))?;
            s.record(p, Action::Linked);
            Ok(())
        }
    }
}

/// cloud-init's own log files and their rotated copies (`cloud-init.log.1`, `.gz`, …).
fn is_cloud_init_log(name: &[u8]) -> bool {
    [&b"cloud-init.log"[..], b"cloud-init-output.log"]
        .iter()
        .any(|b| name == *b || name.strip_prefix(*b).is_some_and(|r| r.starts_with(b".")))
}

fn cloud_init_state(s: &mut Scrubber<'_, '_>) -> Result<(), Error> {
    s.remove_matching("/var/lib/cloud", |_| true)?;
    s.remove_matching("/var/log", is_cloud_init_log)
}

fn cloud_init_network(s: &mut Scrubber<'_, '_>) -> Result<(), Error> {
    s.remove_all(&[
        "/etc/netplan/50-cloud-init.yaml",
        "/etc/NetworkManager/conf.d/99-cloud-init.conf",
        "/etc/NetworkManager/conf.d/30-cloud-init-ip6-addr-gen-mode.conf",
        "/etc/network/interfaces.d/50-cloud-init.cfg",
    ])?;
    s.remove_matching("/etc/NetworkManager/system-connections", |n| {
        n.starts_with(b"cloud-init-") && n.ends_with(b".nmconnection")
    })?;
    s.remove_matching("/etc/systemd/network", |n| {
        n.starts_with(b"10-cloud-init-") && n.ends_with(b".network")
    })
}

fn cloud_init_ssh_config(s: &mut Scrubber<'_, '_>) -> Result<(), Error> {
    s.remove(GuestPath::new("/etc/ssh/sshd_config.d/50-cloud-init.conf"))
}

fn ssh_hostkeys(s: &mut Scrubber<'_, '_>) -> Result<(), Error> {
    s.remove_matching("/etc/ssh", |n| {
        n.starts_with(b"ssh_host_") && (n.ends_with(b"_key") || n.ends_with(b"_key.pub"))
    })
}

fn udev_persistent_net(s: &mut Scrubber<'_, '_>) -> Result<(), Error> {
    s.remove_all(&[
        "/etc/udev/rules.d/70-persistent-net.rules",
        "/etc/udev/rules.d/70-persistent-cd.rules",
    ])
}

fn random_seed(s: &mut Scrubber<'_, '_>) -> Result<(), Error> {
    s.remove_all(&[
        "/var/lib/systemd/random-seed",
        "/var/lib/urandom/random-seed",
        "/var/lib/systemd/credential.secret",
    ])
}

/// Rotated or archived logs: `syslog.1`, `dmesg.0`, `auth.log.2.gz`, `foo.old`, `x.xz`, ….
fn is_rotated_log(name: &[u8]) -> bool {
    let Some(dot) = name.iter().rposition(|&b| b == b'.') else {
        return false;
    };
    match &name[dot + 1..] {
        b"gz" | b"xz" | b"bz2" | b"zst" | b"old" => true,
        e => !e.is_empty() && e.iter().all(u8::is_ascii_digit),
    }
}

fn logfiles(s: &mut Scrubber<'_, '_>) -> Result<(), Error> {
    // The journal: per-machine-id directories under /var/log/journal (the directory itself stays,
    // so persistent journaling stays on).
    s.remove_matching("/var/log/journal", |_| true)?;
    walk_logs(s, GuestPath::new("/var/log"), 0)
}

fn walk_logs(s: &mut Scrubber<'_, '_>, dir: &GuestPath, depth: u32) -> Result<(), Error> {
    if depth > 32 {
        return Ok(());
    }
    for n in s.names(dir)? {
        let p = dir.join(&n);
        if p == "/var/log/journal" {
            continue;
        }
        let Some(m) = s.lstat(&p)? else {
            continue;
        };
        match m.kind {
            FileKind::Dir => walk_logs(s, &p, depth + 1)?,
            FileKind::File if is_rotated_log(&n) => s.remove(&p)?,
            FileKind::File => s.truncate(&p, Some(m))?,
            _ => {}
        }
    }
    Ok(())
}

fn tmp_files(s: &mut Scrubber<'_, '_>) -> Result<(), Error> {
    s.remove_matching("/tmp", |_| true)?;
    s.remove_matching("/var/tmp", |_| true)
}

const HISTORIES: &[&str] = &[
    ".bash_history",
    ".zsh_history",
    ".ash_history",
    ".lesshst",
    ".viminfo",
    ".python_history",
    ".mysql_history",
    ".psql_history",
    ".wget-hsts",
];

fn shell_history(s: &mut Scrubber<'_, '_>) -> Result<(), Error> {
    let home = GuestPath::new("/home");
    let mut homes = vec![GuestPathBuf::from("/root")];
    for n in s.names(home)? {
        homes.push(home.join(&n));
    }
    for h in homes {
        if !s.is_dir(&h)? {
            continue;
        }
        for f in HISTORIES {
            s.remove(&h.join(f))?;
        }
    }
    Ok(())
}

fn apt_cache(s: &mut Scrubber<'_, '_>) -> Result<(), Error> {
    s.remove_matching("/var/cache/apt", |n| n.ends_with(b".bin"))?;
    s.remove_matching("/var/cache/apt/archives", |n| n.ends_with(b".deb"))?;
    s.remove_matching("/var/cache/apt/archives/partial", |_| true)
}

fn dhcp_leases(s: &mut Scrubber<'_, '_>) -> Result<(), Error> {
    let lease = |n: &[u8]| n.ends_with(b".leases") || n.ends_with(b".lease");
    s.remove_matching("/var/lib/dhcp", lease)?;
    s.remove_matching("/var/lib/dhclient", lease)?;
    s.remove_matching("/var/lib/NetworkManager", lease)?;
    s.remove_matching("/var/lib/systemd/netif/leases", |_| true)
}

fn hostname(s: &mut Scrubber<'_, '_>) -> Result<(), Error> {
    let p = GuestPath::new("/etc/hostname");
    let md = s.lstat(p)?;
    s.truncate(p, md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_kebab() {
        let mut seen = std::collections::BTreeSet::new();
        for op in CATALOG {
            assert!(seen.insert(op.name), "duplicate {}", op.name);
            assert!(op.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
            assert!(!op.summary.is_empty());
        }
    }

    #[test]
    fn log_patterns() {
        assert!(is_cloud_init_log(b"cloud-init.log"));
        assert!(is_cloud_init_log(b"cloud-init.log.1"));
        assert!(is_cloud_init_log(b"cloud-init-output.log.2.gz"));
        assert!(is_cloud_init_log(b"cloud-init.log.\xff"));
        assert!(!is_cloud_init_log(b"cloud-init.logs"));
        assert!(is_rotated_log(b"syslog.1"));
        assert!(is_rotated_log(b"auth.log.2.gz"));
        assert!(is_rotated_log(b"b\xffd.log.3"));
        assert!(!is_rotated_log(b"syslog"));
        assert!(!is_rotated_log(b"auth.log"));
        assert!(!is_rotated_log(b"auth.\xff"));
    }
}
