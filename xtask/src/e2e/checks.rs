//! What a booted node must show, read from its serial console and — after power-off — from its
//! overlay with kiln itself (`kiln cat`), judged against the cluster spec and the base's first-boot
//! state. Each check has a name, a verdict and a sentence that says what was expected and seen.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use sha2::{Digest, Sha256};

use super::base::Base;

/// One node as the e2e expects it to come up.
#[derive(Debug, Clone)]
pub struct Expect {
    pub name: String,
    pub role: String,
    pub ipv4: String,
    /// The MAC of the VM's NIC (for the broken-seed node, not the one its seed names).
    pub nic_mac: String,
    /// The interface name the seed renames the matched NIC to.
    pub interface: String,
    pub instance_id: String,
    /// `node-ip` as config.yaml must hold it (`v4` or `v4,v6`).
    pub node_ip: String,
    /// The `server` URL config.yaml must hold (`None` on the server that starts the cluster).
    pub server: Option<String>,
    /// A name every server's `tls-san` must hold (the spec's `server_url` host).
    pub tls_san: Option<String>,
    /// The spec's labels and taints for this node.
    pub labels: Vec<(String, String)>,
    pub taints: Vec<String>,
    /// Auto-deploy manifests this node must carry (servers): file name and sha256.
    pub manifests: Vec<(String, String)>,
    pub k3s_version: String,
    pub k3s_sha256: String,
}

/// What one boot left: the console and the overlay (plus where kiln may find its backing file).
#[derive(Debug)]
pub struct Observed {
    pub console: String,
    pub booted_secs: Option<f64>,
    pub clean_poweroff: bool,
    pub overlay: PathBuf,
    pub allow_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub node: String,
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

struct Reader<'a> {
    kiln: &'a Path,
    obs: &'a Observed,
}

impl Reader<'_> {
    fn bytes(&self, path: &str) -> Result<Vec<u8>, String> {
        read_guest_bytes(self.kiln, &self.obs.overlay, &self.obs.allow_dir, path)
    }
    fn text(&self, path: &str) -> Result<String, String> {
        read_guest(self.kiln, &self.obs.overlay, &self.obs.allow_dir, path)
    }
}

/// A file from inside a (stopped) guest's disk, read with `kiln cat`; backing files may come from
/// under `allow`.
pub fn read_guest_bytes(
    kiln: &Path,
    image: &Path,
    allow: &Path,
    path: &str,
) -> Result<Vec<u8>, String> {
    let out = Command::new(kiln)
        .arg("cat")
        .arg(format!("{}:{path}", image.display()))
        .arg("--allow-backing-dir")
        .arg(allow)
        .output()
        .map_err(|e| format!("cannot run kiln cat: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "kiln cat {path}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

/// [`read_guest_bytes`] as text.
pub fn read_guest(kiln: &Path, image: &Path, allow: &Path, path: &str) -> Result<String, String> {
    read_guest_bytes(kiln, image, allow, path).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn check(node: &str, name: &'static str, r: Result<String, String>) -> Check {
    match r {
        Ok(detail) => Check {
            node: node.to_owned(),
            name,
            ok: true,
            detail,
        },
        Err(detail) => Check {
            node: node.to_owned(),
            name,
            ok: false,
            detail,
        },
    }
}

/// Every per-node check, in a fixed order.
pub fn node_checks(kiln: &Path, e: &Expect, obs: &Observed, base: &Base) -> Vec<Check> {
    let r = Reader { kiln, obs };
    let n = e.name.as_str();
    vec![
        check(n, "first boot finished", boot(e, obs)),
        check(n, "hostname", hostname(e, &r)),
        check(
            n,
            "static address on the NIC matched by MAC",
            address(e, obs),
        ),
        check(n, "machine-id new and valid", machine_id(&r, base)),
        check(n, "cloud-init new instance, no errors", cloud_init(e, &r)),
        check(n, "ssh host keys not the base's", host_keys(&r, base)),
        check(n, "k3s binary at the pinned version", k3s_binary(e, &r)),
        check(
            n,
            "k3s first-boot install with role and config",
            k3s_install(e, &r),
        ),
        check(n, "auto-deploy manifests in place", manifests(e, &r)),
        check(n, "k3s service ready", k3s_ready(e, obs)),
        check(n, "clean power-off", poweroff(obs)),
        check(n, "e2fsck -fn clean", e2fsck(obs)),
    ]
}

/// Machine-ids must differ between nodes (a cloned id is the classic golden-image bug).
pub fn distinct_machine_ids(kiln: &Path, nodes: &[(String, &Observed)]) -> Check {
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut dup = Vec::new();
    for (name, obs) in nodes {
        let r = Reader { kiln, obs };
        if let Ok(id) = r.text("/etc/machine-id") {
            let id = id.trim().to_owned();
            if let Some((other, _)) = seen.iter().find(|(_, i)| *i == id) {
                dup.push(format!("{name} and {other} share {id}"));
            }
            seen.push((name.clone(), id));
        }
    }
    let unread: Vec<&str> = nodes
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !seen.iter().any(|(s, _)| s == n))
        .collect();
    check(
        "cluster",
        "machine-ids differ between nodes",
        if !unread.is_empty() {
            Err(format!(
                "no machine-id could be read from {}",
                unread.join(", ")
            ))
        } else if dup.is_empty() {
            Ok(format!("{} distinct ids", seen.len()))
        } else {
            Err(dup.join("; "))
        },
    )
}

fn boot(e: &Expect, obs: &Observed) -> Result<String, String> {
    match obs.booted_secs {
        Some(s) => Ok(format!("final message on the console after {s:.0} s")),
        None => Err(format!(
            "{}: the console never showed \"kiln: {} ({}) finished first boot\"",
            e.name, e.name, e.role
        )),
    }
}

fn hostname(e: &Expect, r: &Reader<'_>) -> Result<String, String> {
    let h = r.text("/etc/hostname")?;
    if h.trim() == e.name {
        Ok(format!("/etc/hostname is {}", e.name))
    } else {
        Err(format!(
            "{}: expected /etc/hostname {:?}, found {:?}",
            e.name,
            e.name,
            h.trim()
        ))
    }
}

/// One row of cloud-init's "Net device info" table on the console.
#[derive(Debug, PartialEq, Eq)]
pub struct NetRow {
    pub device: String,
    pub up: bool,
    pub address: String,
    pub hw: String,
}

/// The rows of the last "Net device info" table cloud-init printed on the console.
pub fn net_rows(console: &str) -> Vec<NetRow> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in console.lines() {
        let Some(rest) = line.split("ci-info: ").nth(1) else {
            continue;
        };
        if rest.contains("Net device info") {
            in_table = true;
            rows.clear();
            continue;
        }
        if in_table && rest.contains("info") && rest.starts_with('+') && rest.contains("++") {
            in_table = false;
        }
        if !in_table || !rest.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = rest.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() != 6 || cells[0] == "Device" {
            continue;
        }
        rows.push(NetRow {
            device: cells[0].to_owned(),
            up: cells[1] == "True",
            address: cells[2].to_owned(),
            hw: cells[5].to_ascii_lowercase(),
        });
    }
    rows
}

fn address(e: &Expect, obs: &Observed) -> Result<String, String> {
    let rows = net_rows(&obs.console);
    if rows.is_empty() {
        return Err(format!(
            "{}: cloud-init printed no \"Net device info\" table on the console",
            e.name
        ));
    }
    let mac = e.nic_mac.to_ascii_lowercase();
    let nic: Vec<&NetRow> = rows.iter().filter(|r| r.hw == mac).collect();
    if let Some(row) = nic.iter().find(|r| r.address == e.ipv4 && r.up) {
        if row.device != e.interface {
            return Err(format!(
                "{}: {} is on the NIC with MAC {mac} but the NIC is named {}, expected {}",
                e.name, e.ipv4, row.device, e.interface
            ));
        }
        return Ok(format!(
            "{} up on {} (MAC {mac}), as cloud-init reported",
            e.ipv4, row.device
        ));
    }
    let seen: Vec<String> = rows
        .iter()
        .filter(|r| r.device != "lo")
        .map(|r| format!("{} {} {}", r.device, r.address, r.hw))
        .collect();
    Err(format!(
        "{}: expected {} on the NIC with MAC {mac} (renamed {}); cloud-init saw: {}",
        e.name,
        e.ipv4,
        e.interface,
        seen.join(", ")
    ))
}

fn machine_id(r: &Reader<'_>, base: &Base) -> Result<String, String> {
    let id = r.text("/etc/machine-id")?;
    let id = id.trim();
    let valid = id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && id.bytes().any(|b| b != b'0');
    if !valid {
        return Err(format!(
            "/etc/machine-id {id:?} is not 32 lowercase hex digits"
        ));
    }
    if id == base.machine_id {
        return Err(format!("/etc/machine-id {id} is the base's first-boot id"));
    }
    Ok(format!("{id} (base had {})", base.machine_id))
}

fn cloud_init(e: &Expect, r: &Reader<'_>) -> Result<String, String> {
    let iid = r.text("/var/lib/cloud/data/instance-id")?;
    if iid.trim() != e.instance_id {
        return Err(format!(
            "{}: expected instance-id {}, cloud-init recorded {:?}",
            e.name,
            e.instance_id,
            iid.trim()
        ));
    }
    let result = r.text("/var/lib/cloud/data/result.json")?;
    let v: serde_json::Value =
        serde_json::from_str(&result).map_err(|err| format!("result.json is not JSON: {err}"))?;
    let ds = v["v1"]["datasource"].as_str().unwrap_or_default();
    if !ds.contains("NoCloud") {
        return Err(format!(
            "{}: datasource is {ds:?}, expected NoCloud",
            e.name
        ));
    }
    match v["v1"]["errors"].as_array() {
        Some(errs) if errs.is_empty() => {
            Ok(format!("instance-id {}; {ds}; no errors", e.instance_id))
        }
        Some(errs) => Err(format!(
            "{}: result.json lists {} error(s): {}",
            e.name,
            errs.len(),
            errs.iter()
                .map(|x| x.as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" | ")
        )),
        None => Err(format!("{}: result.json has no v1.errors list", e.name)),
    }
}

fn host_keys(r: &Reader<'_>, base: &Base) -> Result<String, String> {
    let mut n = 0;
    for alg in ["ecdsa", "ed25519", "rsa"] {
        let p = format!("/etc/ssh/ssh_host_{alg}_key.pub");
        let key = r.text(&p)?;
        let key = key.trim();
        let body = key.split_whitespace().nth(1).unwrap_or_default();
        if body.is_empty() {
            return Err(format!("{p} is empty"));
        }
        if base
            .host_keys
            .iter()
            .any(|b| b.split_whitespace().nth(1) == Some(body))
        {
            return Err(format!("{p} is the base's key: the golden image leaked it"));
        }
        n += 1;
    }
    Ok(format!("{n} host keys, none from the base"))
}

fn k3s_binary(e: &Expect, r: &Reader<'_>) -> Result<String, String> {
    let bin = r.bytes("/usr/local/bin/k3s")?;
    let sum: String = Sha256::digest(&bin)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if sum != e.k3s_sha256 {
        return Err(format!(
            "/usr/local/bin/k3s has sha256 {sum}, the pinned release lists {}",
            e.k3s_sha256
        ));
    }
    Ok(format!(
        "sha256 {}… = sha256sum-amd64.txt of {}",
        &sum[..12],
        e.k3s_version
    ))
}

fn k3s_install(e: &Expect, r: &Reader<'_>) -> Result<String, String> {
    let log = r.text("/var/log/kiln-k3s-install.log")?;
    let unit = if e.role == "agent" {
        "k3s-agent"
    } else {
        "k3s"
    };
    for want in [
        format!("INSTALL_K3S_EXEC={}", e.role),
        format!("INSTALL_K3S_VERSION={}", e.k3s_version),
        "INSTALL_K3S_SKIP_DOWNLOAD=true".to_owned(),
        format!("service: {unit}.service started"),
    ] {
        if !log.lines().any(|l| l.trim() == want) {
            return Err(format!(
                "{}: the install log has no line {want:?} (it has: {})",
                e.name,
                log.lines().collect::<Vec<_>>().join(" / ")
            ));
        }
    }
    // config.yaml holds the token: only the keys below are looked at, and never echoed whole.
    let cfg = r.text("/etc/rancher/k3s/config.yaml")?;
    let value = |key: &str| {
        cfg.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_owned())
    };
    // k3s names the node after the hostname (checked above); kiln pins its address.
    let mut wants = vec![("node-ip", e.node_ip.clone())];
    if let Some(url) = &e.server {
        wants.push(("server", url.clone()));
    }
    for (k, v) in &wants {
        match value(k) {
            Some(got) if got == *v => {}
            got => {
                return Err(format!(
                    "{}: config.yaml {k} is {got:?}, expected {v:?}",
                    e.name
                ));
            }
        }
    }
    if value("token").is_none() {
        return Err(format!("{}: config.yaml has no token", e.name));
    }
    let mut san = String::new();
    if let (Some(host), "server") = (&e.tls_san, e.role.as_str()) {
        let sans = list_value(&cfg, "tls-san");
        if !sans.iter().any(|s| s == host) {
            return Err(format!(
                "{}: config.yaml tls-san is {sans:?}, without the registration address {host:?}",
                e.name
            ));
        }
        san = format!(", tls-san has {host}");
    }
    Ok(format!(
        "install.sh ran with INSTALL_K3S_EXEC={} and {}; config.yaml: node-ip {}{}{san}",
        e.role,
        e.k3s_version,
        e.node_ip,
        e.server
            .as_ref()
            .map(|u| format!(", server {u}"))
            .unwrap_or_default()
    ))
}

/// The items of a block list `key:` in config.yaml (`- "a"` lines), unquoted.
fn list_value(cfg: &str, key: &str) -> Vec<String> {
    cfg.lines()
        .skip_while(|l| l.trim_end() != format!("{key}:"))
        .skip(1)
        .map_while(|l| l.strip_prefix("- "))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .collect()
}

fn manifests(e: &Expect, r: &Reader<'_>) -> Result<String, String> {
    if e.manifests.is_empty() {
        return Ok("none in the spec for this node".into());
    }
    let mut seen = Vec::new();
    for (name, want) in &e.manifests {
        let path = format!("/var/lib/rancher/k3s/server/manifests/{name}");
        let bytes = r.bytes(&path)?;
        let got: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if got != *want {
            return Err(format!(
                "{}: {path} has sha256 {got}, the spec pins {want}",
                e.name
            ));
        }
        seen.push(name.as_str());
    }
    Ok(format!(
        "{} in /var/lib/rancher/k3s/server/manifests with the pinned sha256",
        seen.join(", ")
    ))
}

fn k3s_ready(e: &Expect, obs: &Observed) -> Result<String, String> {
    let what = if e.role == "agent" {
        "k3s-agent service"
    } else {
        "k3s API server"
    };
    let line = format!("kiln: {}: {what} ready", e.name);
    if obs.console.contains(&line) {
        Ok(format!("console: {line:?}"))
    } else {
        let kiln_lines: Vec<&str> = obs
            .console
            .lines()
            .filter(|l| l.contains("kiln: "))
            .collect();
        Err(format!(
            "{}: the console never said {line:?}; kiln's lines: {}",
            e.name,
            kiln_lines.join(" / ")
        ))
    }
}

fn poweroff(obs: &Observed) -> Result<String, String> {
    if obs.clean_poweroff {
        Ok("powered off after the ACPI power button".into())
    } else {
        Err("did not power off in time: killed by PID".into())
    }
}

fn e2fsck(obs: &Observed) -> Result<String, String> {
    let work = obs.overlay.with_extension("fsck");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let r = (|| {
        let part = kiln_fixtures::extract_root_partition(&obs.overlay, &work)
            .map_err(|e| format!("extracting the root partition: {e}"))?;
        let out = Command::new("e2fsck")
            .args(["-fn"])
            .arg(&part)
            .output()
            .map_err(|e| format!("cannot run e2fsck: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // `e2fsck -n` skips a journal that needs recovery: an unclean shutdown is caught here.
        let header = Command::new("dumpe2fs")
            .arg("-h")
            .arg(&part)
            .output()
            .map_err(|e| format!("cannot run dumpe2fs: {e}"))?;
        let header = String::from_utf8_lossy(&header.stdout);
        if header
            .lines()
            .any(|l| l.starts_with("Filesystem features:") && l.contains("needs_recovery"))
        {
            return Err("the journal needs recovery: the guest did not shut down cleanly".into());
        }
        if out.status.success() {
            Ok(text.lines().last().unwrap_or_default().to_owned())
        } else {
            Err(format!(
                "e2fsck -fn exit {}: {}{}",
                out.status,
                text,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })();
    let _ = std::fs::remove_dir_all(&work);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cloud_inits_net_device_table() {
        let console = "\
[   75.0] cloud-init[414]: ci-info: ++++++++++++++Net device info+++++++++++++++
[   75.0] cloud-init[414]: ci-info: +--------+------+------------+---------------+--------+-------------------+
[   75.0] cloud-init[414]: ci-info: | Device |  Up  |  Address   |      Mask     | Scope  |     Hw-Address    |
[   75.0] cloud-init[414]: ci-info: +--------+------+------------+---------------+--------+-------------------+
[   75.0] cloud-init[414]: ci-info: |  lan0  | True | 10.0.2.11  | 255.255.255.0 | global | 52:54:00:E2:E0:11 |
[   75.0] cloud-init[414]: ci-info: |   lo   | True | 127.0.0.1  |   255.0.0.0   |  host  |         .         |
[   75.0] cloud-init[414]: ci-info: +--------+------+------------+---------------+--------+-------------------+
[   75.0] cloud-init[414]: ci-info: +++++++++++++Route IPv4 info+++++++++++++
[   75.0] cloud-init[414]: ci-info: | Route | Destination | Gateway |    Genmask    | Interface | Flags |
[   75.0] cloud-init[414]: ci-info: |   0   |   10.0.2.0  | 0.0.0.0 | 255.255.255.0 |    lan0   |   U   |
";
        let rows = net_rows(console);
        assert_eq!(
            rows,
            vec![
                NetRow {
                    device: "lan0".into(),
                    up: true,
                    address: "10.0.2.11".into(),
                    hw: "52:54:00:e2:e0:11".into()
                },
                NetRow {
                    device: "lo".into(),
                    up: true,
                    address: "127.0.0.1".into(),
                    hw: ".".into()
                },
            ]
        );
        let e = Expect {
            name: "n1".into(),
            role: "server".into(),
            ipv4: "10.0.2.11".into(),
            nic_mac: "52:54:00:e2:e0:11".into(),
            interface: "lan0".into(),
            instance_id: String::new(),
            node_ip: "10.0.2.11".into(),
            server: None,
            tls_san: None,
            labels: Vec::new(),
            taints: Vec::new(),
            manifests: Vec::new(),
            k3s_version: String::new(),
            k3s_sha256: String::new(),
        };
        let obs = Observed {
            console: console.into(),
            booted_secs: None,
            clean_poweroff: true,
            overlay: PathBuf::new(),
            allow_dir: PathBuf::new(),
        };
        assert!(address(&e, &obs).is_ok());
        let wrong = Expect {
            nic_mac: "52:54:00:e2:e0:12".into(),
            ..e
        };
        let err = address(&wrong, &obs).unwrap_err();
        assert!(
            err.starts_with("n1: expected 10.0.2.11 on the NIC with MAC 52:54:00:e2:e0:12"),
            "{err}"
        );
    }
}
