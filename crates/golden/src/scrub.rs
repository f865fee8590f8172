//! The scrub-op catalog: named, documented edits that remove the state a booted-once cloud image
//! carries (identity, cloud-init state, keys, logs, caches), each reporting exactly which paths it
//! changed. Ops run in catalog order; which ones run is the default set adjusted by the recipe's
//! `scrub.enable` / `scrub.disable`.
//!
//! Every op is idempotent: on an image that is already clean it changes nothing and reports nothing.

use kiln_ext4::{FileKind, Filesystem, NewFile};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::recipe::MachineIdMode;

/// What an op did to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Change {
    pub path: String,
    pub action: Action,
}

/// Inputs an op may need besides the filesystem.
#[derive(Debug, Clone, Copy)]
pub struct ScrubInput {
    pub machine_id: MachineIdMode,
}

type OpFn = fn(&mut Filesystem<'_>, &ScrubInput, &mut Vec<Change>) -> Result<(), Error>;

/// A catalog entry.
pub struct ScrubOp {
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
        let mut out = Vec::new();
        (self.run)(fs, input, &mut out)?;
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

fn err(op: &'static str, path: &str) -> impl FnOnce(kiln_ext4::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Scrub {
        op,
        path,
        source: Box::new(source),
    }
}

fn lstat(
    fs: &Filesystem<'_>,
    op: &'static str,
    path: &str,
) -> Result<Option<kiln_ext4::Metadata>, Error> {
    match fs.lstat(path) {
        Ok(m) => Ok(Some(m)),
        Err(kiln_ext4::Error::NotFound { .. } | kiln_ext4::Error::NotADirectory { .. }) => Ok(None),
        Err(e) => Err(err(op, path)(e)),
    }
}

/// Whether `path` is a real directory (not a symlink to one).
fn is_dir(fs: &Filesystem<'_>, op: &'static str, path: &str) -> Result<bool, Error> {
    Ok(lstat(fs, op, path)?.is_some_and(|m| m.kind == FileKind::Dir))
}

/// Remove `path` (recursively for a directory) if it exists.
fn remove(
    fs: &mut Filesystem<'_>,
    op: &'static str,
    path: &str,
    out: &mut Vec<Change>,
) -> Result<(), Error> {
    let Some(m) = lstat(fs, op, path)? else {
        return Ok(());
    };
    if m.kind == FileKind::Dir {
        fs.remove_all(path).map_err(err(op, path))?;
    } else {
        fs.remove_file(path).map_err(err(op, path))?;
    }
    out.push(Change {
        path: path.to_owned(),
        action: Action::Removed,
    });
    Ok(())
}

/// Names in directory `dir` (empty if it does not exist or is not a real directory).
fn names(fs: &Filesystem<'_>, op: &'static str, dir: &str) -> Result<Vec<String>, Error> {
    if !is_dir(fs, op, dir)? {
        return Ok(Vec::new());
    }
    Ok(fs
        .read_dir(dir)
        .map_err(err(op, dir))?
        .into_iter()
        .map(|e| e.name_lossy().into_owned())
        .collect())
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Remove every entry of `dir` whose name satisfies `pick`.
fn remove_matching(
    fs: &mut Filesystem<'_>,
    op: &'static str,
    dir: &str,
    pick: impl Fn(&str) -> bool,
    out: &mut Vec<Change>,
) -> Result<(), Error> {
    for n in names(fs, op, dir)? {
        if pick(&n) {
            remove(fs, op, &join(dir, &n), out)?;
        }
    }
    Ok(())
}

fn machine_id(
    fs: &mut Filesystem<'_>,
    input: &ScrubInput,
    out: &mut Vec<Change>,
) -> Result<(), Error> {
    const P: &str = "/etc/machine-id";
    let want: &[u8] = match input.machine_id {
        MachineIdMode::Uninitialized => b"uninitialized\n",
        MachineIdMode::Empty => b"",
    };
    let current = lstat(fs, "machine-id", P)?;
    if let Some(m) = &current
        && m.kind == FileKind::File
        && m.perm == 0o444
        && m.uid == 0
        && m.gid == 0
        && fs.read(P).map_err(err("machine-id", P))? == want
    {
        return Ok(());
    }
    if current.is_some_and(|m| m.kind != FileKind::File) {
        remove(fs, "machine-id", P, &mut Vec::new())?;
    }
    fs.write(
        P,
        want,
        NewFile {
            perm: 0o444,
            ..NewFile::default()
        },
    )
    .map_err(err("machine-id", P))?;
    out.push(Change {
        path: P.into(),
        action: Action::Reset,
    });
    Ok(())
}

fn dbus_machine_id(
    fs: &mut Filesystem<'_>,
    _: &ScrubInput,
    out: &mut Vec<Change>,
) -> Result<(), Error> {
    const P: &str = "/var/lib/dbus/machine-id";
    let op = "dbus-machine-id";
    match lstat(fs, op, P)? {
        None => Ok(()),
        Some(m) if m.kind == FileKind::Symlink => Ok(()),
        Some(_) => {
            remove(fs, op, P, &mut Vec::new())?;
            fs.symlink("/etc/machine-id", P, 0, 0).map_err(err(op, P))?;
            out.push(Change {
                path: P.into(),
                action: Action::Linked,
            });
            Ok(())
        }
    }
}

/// cloud-init's own log files and their rotated copies (`cloud-init.log.1`, `.gz`, …).
fn is_cloud_init_log(name: &str) -> bool {
    ["cloud-init.log", "cloud-init-output.log"]
        .iter()
        .any(|b| name == *b || name.strip_prefix(b).is_some_and(|r| r.starts_with('.')))
}

fn cloud_init_state(
    fs: &mut Filesystem<'_>,
    _: &ScrubInput,
    out: &mut Vec<Change>,
) -> Result<(), Error> {
    let op = "cloud-init-state";
    remove_matching(fs, op, "/var/lib/cloud", |_| true, out)?;
    remove_matching(fs, op, "/var/log", is_cloud_init_log, out)
}

fn cloud_init_network(
    fs: &mut Filesystem<'_>,
    _: &ScrubInput,
    out: &mut Vec<Change>,
) -> Result<(), Error> {
    let op = "cloud-init-network";
    for p in [
        "/etc/netplan/50-cloud-init.yaml",
        "/etc/NetworkManager/conf.d/99-cloud-init.conf",
        "/etc/NetworkManager/conf.d/30-cloud-init-ip6-addr-gen-mode.conf",
        "/etc/network/interfaces.d/50-cloud-init.cfg",
    ] {
        remove(fs, op, p, out)?;
    }
    remove_matching(
        fs,
        op,
        "/etc/NetworkManager/system-connections",
        |n| n.starts_with("cloud-init-") && n.ends_with(".nmconnection"),
        out,
    )?;
    remove_matching(
        fs,
        op,
        "/etc/systemd/network",
        |n| n.starts_with("10-cloud-init-") && n.ends_with(".network"),
        out,
    )
}

fn cloud_init_ssh_config(
    fs: &mut Filesystem<'_>,
    _: &ScrubInput,
    out: &mut Vec<Change>,
) -> Result<(), Error> {
    remove(
        fs,
        "cloud-init-ssh-config",
        "/etc/ssh/sshd_config.d/50-cloud-init.conf",
        out,
    )
}

fn ssh_hostkeys(
    fs: &mut Filesystem<'_>,
    _: &ScrubInput,
    out: &mut Vec<Change>,
) -> Result<(), Error> {
    remove_matching(
        fs,
        "ssh-hostkeys",
        "/etc/ssh",
        |n| n.starts_with("ssh_host_") && (n.ends_with("_key") || n.ends_with("_key.pub")),
        out,
    )
}

fn udev_persistent_net(
    fs: &mut Filesystem<'_>,
    _: &ScrubInput,
    out: &mut Vec<Change>,
) -> Result<(), Error> {
    for p in [
        "/etc/udev/rules.d/70-persistent-net.rules",
        "/etc/udev/rules.d/70-persistent-cd.rules",
    ] {
        remove(fs, "udev-persistent-net", p, out)?;
    }
    Ok(())
}

fn random_seed(
    fs: &mut Filesystem<'_>,
    _: &ScrubInput,
    out: &mut Vec<Change>,
) -> Result<(), Error> {
    for p in [
        "/var/lib/systemd/random-seed",
        "/var/lib/urandom/random-seed",
        "/var/lib/systemd/credential.secret",
    ] {
        remove(fs, "random-seed", p, out)?;
    }
    Ok(())
}

/// Rotated or archived logs: `syslog.1`, `dmesg.0`, `auth.log.2.gz`, `foo.old`, `x.xz`, ….
fn is_rotated_log(name: &str) -> bool {
    let ext = name.rsplit_once('.').map(|(_, e)| e);
    match ext {
        Some("gz" | "xz" | "bz2" | "zst" | "old") => true,
        Some(e) => !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

fn logfiles(fs: &mut Filesystem<'_>, _: &ScrubInput, out: &mut Vec<Change>) -> Result<(), Error> {
    let op = "logfiles";
    // The journal: per-machine-id directories under /var/log/journal (the directory itself stays,
    // so persistent journaling stays on).
    remove_matching(fs, op, "/var/log/journal", |_| true, out)?;
    walk_logs(fs, op, "/var/log", 0, out)
}

fn walk_logs(
    fs: &mut Filesystem<'_>,
    op: &'static str,
    dir: &str,
    depth: u32,
    out: &mut Vec<Change>,
) -> Result<(), Error> {
    if depth > 32 {
        return Ok(());
    }
    for n in names(fs, op, dir)? {
        let p = join(dir, &n);
        if p == "/var/log/journal" {
            continue;
        }
        let Some(m) = lstat(fs, op, &p)? else {
            continue;
        };
        match m.kind {
            FileKind::Dir => walk_logs(fs, op, &p, depth + 1, out)?,
            FileKind::File if is_rotated_log(&n) => remove(fs, op, &p, out)?,
            FileKind::File if m.size > 0 => {
                fs.truncate(&p, 0).map_err(err(op, &p))?;
                out.push(Change {
                    path: p,
                    action: Action::Truncated,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

fn tmp_files(fs: &mut Filesystem<'_>, _: &ScrubInput, out: &mut Vec<Change>) -> Result<(), Error> {
    remove_matching(fs, "tmp-files", "/tmp", |_| true, out)?;
    remove_matching(fs, "tmp-files", "/var/tmp", |_| true, out)
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

fn shell_history(
    fs: &mut Filesystem<'_>,
    _: &ScrubInput,
    out: &mut Vec<Change>,
) -> Result<(), Error> {
    let op = "shell-history";
    let mut homes = vec!["/root".to_owned()];
    for n in names(fs, op, "/home")? {
        homes.push(join("/home", &n));
    }
    for h in homes {
        if !is_dir(fs, op, &h)? {
            continue;
        }
        for f in HISTORIES {
            remove(fs, op, &join(&h, f), out)?;
        }
    }
    Ok(())
}

fn apt_cache(fs: &mut Filesystem<'_>, _: &ScrubInput, out: &mut Vec<Change>) -> Result<(), Error> {
    let op = "apt-cache";
    remove_matching(fs, op, "/var/cache/apt", |n| n.ends_with(".bin"), out)?;
    remove_matching(
        fs,
        op,
        "/var/cache/apt/archives",
        |n| n.ends_with(".deb"),
        out,
    )?;
    remove_matching(fs, op, "/var/cache/apt/archives/partial", |_| true, out)
}

fn dhcp_leases(
    fs: &mut Filesystem<'_>,
    _: &ScrubInput,
    out: &mut Vec<Change>,
) -> Result<(), Error> {
    let op = "dhcp-leases";
    let lease = |n: &str| n.ends_with(".leases") || n.ends_with(".lease");
    remove_matching(fs, op, "/var/lib/dhcp", lease, out)?;
    remove_matching(fs, op, "/var/lib/dhclient", lease, out)?;
    remove_matching(fs, op, "/var/lib/NetworkManager", lease, out)?;
    remove_matching(fs, op, "/var/lib/systemd/netif/leases", |_| true, out)
}

fn hostname(fs: &mut Filesystem<'_>, _: &ScrubInput, out: &mut Vec<Change>) -> Result<(), Error> {
    const P: &str = "/etc/hostname";
    if let Some(m) = lstat(fs, "hostname", P)?
        && m.kind == FileKind::File
        && m.size > 0
    {
        fs.truncate(P, 0).map_err(err("hostname", P))?;
        out.push(Change {
            path: P.into(),
            action: Action::Truncated,
        });
    }
    Ok(())
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
        assert!(is_cloud_init_log("cloud-init.log"));
        assert!(is_cloud_init_log("cloud-init.log.1"));
        assert!(is_cloud_init_log("cloud-init-output.log.2.gz"));
        assert!(!is_cloud_init_log("cloud-init.logs"));
        assert!(is_rotated_log("syslog.1"));
        assert!(is_rotated_log("auth.log.2.gz"));
        assert!(!is_rotated_log("syslog"));
        assert!(!is_rotated_log("auth.log"));
    }
}
