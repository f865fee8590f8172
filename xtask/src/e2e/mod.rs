//! `cargo xtask e2e`: real systemd, real cloud-init and the real Linux ext4 driver judge kiln's
//! work, and the nodes it seeds form clusters.
//!
//! 1. a small bootable Debian base, built without mounting anything and booted once
//!    ([`base`], cached outside the repository);
//! 2. `kiln build` of one golden image from it (k3s assets: the generated stand-in, or real ones
//!    from `KILN_E2E_K3S_ASSETS`; the usual scrub catalog);
//! 3. for each [`scenario`] — kiln's 3-node spec with a broken seed and a wrong-token agent, the
//!    committed HA spec, the committed dual-stack spec — `kiln cluster`, then every node booted at
//!    once under `qemu-system-x86_64` ([`vm`]: KVM when it works, else TCG) with one NIC on the
//!    scenario's own switch ([`net`]: unix sockets, nothing reaches a host interface);
//! 4. the first server's k3s node list (written to its disk and announced on its console by the
//!    golden image's `kiln-e2e-nodes` unit) is awaited, then every VM is powered off with the ACPI
//!    button;
//! 5. [`checks`] per node on the console and on the overlay read back with `kiln cat`, then
//!    `e2fsck -fn`; [`scenario`]'s cluster checks on the node list.
//!
//! Passes when every check passes and the broken node's address check fails (saying which node and
//! what was expected). Writes `target/e2e/report.json`, one entry per scenario.

pub(crate) mod base;
mod checks;
mod net;
mod scenario;
mod vm;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use self::checks::{Check, Expect, Observed};
use self::net::Switch;
use self::scenario::{BROKEN_CHECK, BROKEN_NIC_MAC, INTRUDER, Scenario};
use self::vm::{Accel, Vm, VmConfig, tail};
use crate::util::{run, s};

const K3S_VERSION: &str = "v1.34.3+k3s1";

/// The golden image's reporter: on a node running a k3s server, whenever the node list changes,
/// write `kubectl get nodes -o json` to `/var/lib/kiln-e2e/nodes.json` and the names to the
/// console; the stand-in's first refusal goes to the console too.
const NODES_SCRIPT: &str = r#"#!/bin/sh
# kiln e2e: report the k3s node list seen from this server (test images only).
out=/var/lib/kiln-e2e
log=/var/lib/rancher/k3s/server/kiln-stand-in/registrations.log
mkdir -p "$out"
prev=""
refused=""
while sleep 10; do
  systemctl is-active --quiet k3s.service || continue
  names=$(k3s kubectl get nodes -o name 2>/dev/null | sed 's|^node/||' | sort | tr '\n' ' ')
  if [ -n "$names" ] && [ "$names" != "$prev" ] &&
     k3s kubectl get nodes -o json > "$out/nodes.json.tmp" 2>/dev/null; then
    mv "$out/nodes.json.tmp" "$out/nodes.json"
    sync
    echo "kiln-e2e: $(hostname) lists nodes: $names" > /dev/console
    prev=$names
  fi
  if [ -z "$refused" ] && [ -f "$log" ] && grep -q '^refused ' "$log"; then
    refused=$(grep -m1 '^refused ' "$log")
    echo "kiln-e2e: $(hostname) $refused" > /dev/console
  fi
done
"#;

const NODES_UNIT: &str = "[Unit]
Description=kiln e2e: report the k3s node list
After=multi-user.target

[Service]
ExecStart=/usr/local/lib/kiln-e2e/report-nodes
";

const USAGE: &str = "usage: cargo xtask e2e [--rebuild-base] [--base-only]

  --rebuild-base  build the cached Debian base image again (debootstrap + first boot)
  --base-only     stop once the base image is ready

Environment: KILN_E2E_CACHE (base image cache; default ~/.cache/kiln/e2e),
KILN_E2E_MIRROR (Debian mirror), KILN_E2E_ACCEL=kvm|tcg (default: KVM when it works),
KILN_E2E_SCENARIOS=3node,ha,dualstack (default: all),
KILN_E2E_K3S_ASSETS=DIR (real k3s release assets: k3s, k3s-airgap-images-amd64.tar.zst,
sha256sum-amd64.txt, install.sh; default: generated stand-ins) with KILN_E2E_K3S_VERSION
(their version; default v1.34.3+k3s1).";

pub fn run_task(args: &[String]) -> Result<()> {
    let mut rebuild = false;
    let mut base_only = false;
    for a in args {
        match a.as_str() {
            "--rebuild-base" => rebuild = true,
            "--base-only" => base_only = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    let t0 = Instant::now();
    let kiln = crate::util::build_kiln()?;
    let mut accel = None;
    let base = base::ensure(&kiln, &mut accel, rebuild)?;
    // Detected while building the base when it was built (and printed there).
    let accel = accel.unwrap_or_else(|| {
        let a = Accel::detect(&base.kernel, &base.initrd);
        println!("accelerator: {}", a.name());
        a
    });
    if base_only {
        println!(
            "base image: {} (sha256 {})",
            base.image.display(),
            base.sha256
        );
        return Ok(());
    }

    let work = crate::util::root().join("target/e2e");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;

    let assets = k3s_assets(&work)?;
    let scenarios = scenario::scenarios(&work, &assets.version)?;
    let t = Instant::now();
    let hosts: Vec<String> = scenarios.iter().flat_map(|s| s.hosts.clone()).collect();
    let golden = golden(&kiln, &base, &work, &assets, &hosts)?;
    println!(
        "golden image: {} ({:.1} s; k3s {} from {})",
        golden.display(),
        t.elapsed().as_secs_f64(),
        assets.version,
        assets.dir.display()
    );

    let mut plans = Vec::new();
    for sc in &scenarios {
        println!("\n== scenario {}: {}", sc.name, sc.about);
        plans.push(cluster(&kiln, &golden, sc, &assets)?);
    }
    // One scenario after the other, each scenario's VMs at once on its own switch: more guests
    // than that on two emulating cores each run several times slower (measured: 3 guests boot in
    // ~120 s side by side, 11 at once had not reached user space after 200 s).
    let t = Instant::now();
    let mut booted = Vec::new();
    for (sc, plan) in scenarios.iter().zip(&plans) {
        let ts = Instant::now();
        println!(
            "\nbooting {}: {} VMs under {} on the scenario's own switch…",
            sc.name,
            plan.len(),
            accel.name()
        );
        booted.push(boot_scenario(sc, plan, &base, accel, &work));
        println!(
            "  [{}] booted in {:.0} s",
            sc.name,
            ts.elapsed().as_secs_f64()
        );
    }
    println!("boots: {:.0} s", t.elapsed().as_secs_f64());

    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for ((sc, plan), observed) in scenarios.iter().zip(&plans).zip(booted) {
        println!("\n== scenario {}: checks", sc.name);
        let observed = observed?;
        let (report, fails) = verdict(&kiln, &base, sc, plan, &observed, &work)?;
        reports.push(report);
        failed.extend(fails);
    }

    let report = serde_json::json!({
        "accelerator": accel.name(),
        "k3s": { "version": assets.version, "assets": assets.dir.display().to_string(),
                 "stand_in": assets.stand_in },
        "seconds": t0.elapsed().as_secs(),
        "scenarios": reports,
    });
    let mut text = serde_json::to_string_pretty(&report)?;
    text.push('\n');
    std::fs::write(work.join("report.json"), text)?;
    println!(
        "\n{} scenario(s), {} failure(s); {:.0} s in all (report: {})",
        scenarios.len(),
        failed.len(),
        t0.elapsed().as_secs_f64(),
        work.join("report.json").display()
    );
    if !failed.is_empty() {
        bail!("e2e failed: {}", failed.join(", "));
    }
    Ok(())
}

/// The k3s assets under test.
struct Assets {
    dir: PathBuf,
    version: String,
    install_sh_sha256: String,
    /// The sha256 `sha256sum-amd64.txt` lists for `k3s`.
    k3s_sha256: String,
    stand_in: bool,
}

/// Real assets from `KILN_E2E_K3S_ASSETS`, else generated stand-ins.
fn k3s_assets(work: &Path) -> Result<Assets> {
    let (dir, version, install, stand_in) = match std::env::var_os("KILN_E2E_K3S_ASSETS") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let version =
                std::env::var("KILN_E2E_K3S_VERSION").unwrap_or_else(|_| K3S_VERSION.to_owned());
            let install = kiln_fixtures::sha256_of(&dir.join("install.sh")).with_context(|| {
                format!(
                    "KILN_E2E_K3S_ASSETS={}: no install.sh (the real assets need get.k3s.io's script beside them)",
                    dir.display()
                )
            })?;
            (dir, version, install, false)
        }
        None => {
            let a =
                kiln_fixtures::make_k3s_assets(&work.join("k3s"), K3S_VERSION, "amd64", 1 << 20)?;
            (a.dir, a.version, a.install_sh_sha256, true)
        }
    };
    let sums_path = dir.join("sha256sum-amd64.txt");
    let sums = std::fs::read_to_string(&sums_path)
        .with_context(|| format!("reading {}", sums_path.display()))?;
    let k3s_sha256 = sums
        .lines()
        .find_map(|l| l.strip_suffix("  k3s"))
        .with_context(|| format!("{} lists no k3s", sums_path.display()))?
        .to_owned();
    Ok(Assets {
        dir,
        version,
        install_sh_sha256: install,
        k3s_sha256,
        stand_in,
    })
}

/// A recipe pinning the base and the assets, with the node-list reporter and the `/etc/hosts`
/// lines the scenarios need; `kiln build`, `qemu-img check` and `kiln verify`.
fn golden(
    kiln: &Path,
    base: &base::Base,
    work: &Path,
    assets: &Assets,
    hosts: &[String],
) -> Result<PathBuf> {
    let indent = |text: &str| -> String {
        text.lines()
            .map(|l| {
                if l.is_empty() {
                    "\n".to_owned()
                } else {
                    format!("        {l}\n")
                }
            })
            .collect()
    };
    let mut hosts_file =
        String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n");
    hosts_file.push_str("# kiln e2e: the lab's DNS records for the scenarios' server_url names\n");
    for h in hosts {
        hosts_file.push_str(h);
        hosts_file.push('\n');
    }
    let recipe = format!(
        "# kiln e2e golden image (generated by cargo xtask e2e)
name: k3s-node-debian-13-e2e
base:
  path: {base}
  sha256: {sha}
arch: amd64
output:
  kind: qcow2
  compression: zstd
source_date_epoch: 1767225600
machine_id: uninitialized
scrub:
  disable: []
k3s:
  version: {version}
  assets: {assets}
  install_sh_sha256: {install}
prerequisites:
  - modules_load: {{ name: k3s, modules: [overlay, br_netfilter] }}
  - sysctl:
      name: 90-k3s
      settings:
        net.ipv4.ip_forward: \"1\"
  - cloud_init_datasource: {{ list: [NoCloud, None] }}
  - directory: {{ path: /etc/rancher/k3s, mode: \"0755\" }}
  - file:
      path: /etc/hosts
      content: |
{hosts}  - file:
      path: /usr/local/lib/kiln-e2e/report-nodes
      mode: \"0755\"
      content: |
{script}  - file:
      path: /etc/systemd/system/kiln-e2e-nodes.service
      content: |
{unit}  - systemd_enable: {{ unit: kiln-e2e-nodes.service }}
",
        base = base.image.display(),
        sha = base.sha256,
        version = assets.version,
        assets = assets.dir.display(),
        install = assets.install_sh_sha256,
        hosts = indent(&hosts_file),
        script = indent(NODES_SCRIPT),
        unit = indent(NODES_UNIT),
    );
    let recipe_path = work.join("golden.yaml");
    std::fs::write(&recipe_path, recipe)?;
    let out = work.join("golden");
    run(Command::new(kiln)
        .arg("build")
        .arg(&recipe_path)
        .arg("-o")
        .arg(&out))?;
    let golden = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "qcow2"))
        .context("kiln build wrote no .qcow2")?;
    run(Command::new("qemu-img").args(["check", "-q", s(&golden)]))?;
    run(Command::new(kiln).arg("verify").arg(&golden))?;
    Ok(golden)
}

/// One VM to boot: what it must show, and its disk and seed.
struct Planned {
    expect: Expect,
    disk: PathBuf,
    seed: PathBuf,
}

/// `kiln cluster` for the scenario's spec (and the intruder's) against `golden`.
fn cluster(kiln: &Path, golden: &Path, sc: &Scenario, assets: &Assets) -> Result<Vec<Planned>> {
    let t = Instant::now();
    let manifest_sums: Vec<(String, String)> = sc
        .parsed
        .cluster
        .k3s
        .manifests
        .iter()
        .map(|m| {
            let name = m
                .source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, m.sha256.clone())
        })
        .collect();
    let mut out = Vec::new();
    let mut specs = vec![(sc.spec.clone(), sc.dir().join("nodes"), None)];
    if let Some(i) = &sc.intruder_spec {
        specs.push((i.clone(), sc.dir().join("intruder"), Some(INTRUDER)));
    }
    for (spec, nodes_dir, only) in specs {
        run(Command::new(kiln)
            .env("SOURCE_DATE_EPOCH", "1767225600")
            .arg("cluster")
            .arg(&spec)
            .arg("--golden")
            .arg(golden)
            .arg("-o")
            .arg(&nodes_dir))?;
        let parsed = kiln_nocloud::ClusterSpec::load(&spec).map_err(|e| anyhow::anyhow!("{e}"))?;
        for mut e in expectations(&nodes_dir, assets)? {
            if only.is_some_and(|o| o != e.name) || sc.skip.contains(&e.name) {
                continue;
            }
            if sc.broken() == Some(e.name.as_str()) {
                e.nic_mac = BROKEN_NIC_MAC.to_owned();
            }
            scenario::complete(&mut e, &parsed, &manifest_sums);
            out.push(Planned {
                disk: nodes_dir.join(format!("{}.qcow2", e.name)),
                seed: nodes_dir.join(format!("{}-seed.iso", e.name)),
                expect: e,
            });
        }
    }
    println!(
        "kiln cluster: {} VMs to boot in {} ({:.1} s)",
        out.len(),
        sc.dir().display(),
        t.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// Each node as the inventory describes it.
fn expectations(nodes_dir: &Path, assets: &Assets) -> Result<Vec<Expect>> {
    let inv_path = nodes_dir.join("inventory.json");
    let inv: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&inv_path).with_context(|| format!("reading {}", inv_path.display()))?,
    )?;
    let field = |n: &serde_json::Value, k: &str| -> Result<String> {
        n[k].as_str()
            .map(str::to_owned)
            .with_context(|| format!("{}: a node without {k:?}", inv_path.display()))
    };
    let mut out = Vec::new();
    for n in inv["nodes"]
        .as_array()
        .context("inventory.json has no nodes list")?
    {
        out.push(Expect {
            name: field(n, "name")?,
            role: field(n, "role")?,
            ipv4: field(n, "ipv4")?,
            nic_mac: field(n, "mac")?,
            interface: n["interface"].as_str().unwrap_or("lan0").to_owned(),
            instance_id: field(n, "instance_id")?,
            node_ip: field(n, "ipv4")?,
            server: None,
            tls_san: None,
            labels: Vec::new(),
            taints: Vec::new(),
            manifests: Vec::new(),
            k3s_version: assets.version.clone(),
            k3s_sha256: assets.k3s_sha256.clone(),
        });
    }
    Ok(out)
}

/// Set once the scenario's first server has listed every node that should join (or gave up):
/// then every VM of the scenario may power off.
#[derive(Default)]
struct Release {
    done: Mutex<bool>,
    cv: Condvar,
}

impl Release {
    fn set(&self) {
        if let Ok(mut d) = self.done.lock() {
            *d = true;
        }
        self.cv.notify_all();
    }
    fn wait(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let Ok(mut d) = self.done.lock() else { return };
        while !*d {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.cv.wait_timeout(d, left) {
                Ok((g, _)) => d = g,
                Err(_) => return,
            }
        }
    }
}

/// Boot every VM of a scenario at once on its own switch. Each waits for its final message; the
/// first server's thread then waits for its console to list every node that should join (and, with
/// an intruder, for the refusal), and releases the others; then each powers off.
fn boot_scenario(
    sc: &Scenario,
    plan: &[Planned],
    base: &base::Base,
    accel: Accel,
    work: &Path,
) -> Result<Vec<Observed>> {
    let slow = u64::from(accel.slowness());
    let boot_limit = Duration::from_secs(150 * slow);
    let join_limit = Duration::from_secs(60 * slow);
    let off_limit = Duration::from_secs(30 * slow);
    let names: Vec<&str> = plan.iter().map(|p| p.expect.name.as_str()).collect();
    // Short socket paths: a unix socket path has 108 bytes.
    let net_dir = std::env::temp_dir().join(format!("kiln-e2e-{}-{}", std::process::id(), sc.name));
    let switch = Switch::start(&net_dir, &names)?;
    let first_server = plan
        .iter()
        .find(|p| p.expect.role == "server" && p.expect.server.is_none())
        .map(|p| p.expect.name.clone())
        .context("the scenario has no first server")?;
    let mut joiners: Vec<String> = plan
        .iter()
        .map(|p| p.expect.name.clone())
        .filter(|n| Some(n.as_str()) != sc.broken() && n != INTRUDER)
        .collect();
    joiners.sort();
    let listed_line = format!(
        "kiln-e2e: {first_server} lists nodes: {} ",
        joiners.join(" ")
    );
    let refusal_line = format!("kiln-e2e: {first_server} refused agent {INTRUDER} ");
    let with_intruder = names.contains(&INTRUDER);
    let release = Arc::new(Release::default());
    let result = std::thread::scope(|scope| {
        let handles: Vec<_> = plan
            .iter()
            .map(|p| {
                let e = &p.expect;
                let release = release.clone();
                let (switch, first_server, listed_line, refusal_line) =
                    (&switch, &first_server, &listed_line, &refusal_line);
                scope.spawn(move || -> Result<Observed> {
                    let cfg = VmConfig {
                        name: e.name.clone(),
                        disk: Some(p.disk.clone()),
                        seed: Some(p.seed.clone()),
                        mac: e.nic_mac.clone(),
                        kernel: base.kernel.clone(),
                        initrd: base.initrd.clone(),
                        accel,
                        netdev: switch.netdev(&e.name),
                        dir: work.join("vm").join(sc.name).join(&e.name),
                    };
                    let t = Instant::now();
                    let mut vm = match Vm::start(&cfg) {
                        Ok(vm) => vm,
                        Err(err) => {
                            release.set();
                            return Err(err);
                        }
                    };
                    let done = format!("kiln: {} ({}) finished first boot", e.name, e.role);
                    let seen = vm.wait_console(&[done.as_str()], boot_limit);
                    let booted_secs = match &seen {
                        Ok(Some(_)) => Some(t.elapsed().as_secs_f64()),
                        _ => None,
                    };
                    let mut joined_secs = None;
                    if e.name == *first_server {
                        if booted_secs.is_some() {
                            joined_secs = wait_for_members(
                                &vm,
                                listed_line,
                                with_intruder.then_some(refusal_line.as_str()),
                                join_limit,
                            )
                            .then(|| t.elapsed().as_secs_f64());
                        }
                        release.set();
                    } else {
                        release.wait(boot_limit + join_limit);
                    }
                    let clean = match seen {
                        Ok(_) => vm.shutdown(off_limit).unwrap_or_else(|err| {
                            println!("  [{}] {}: {err:#}", sc.name, e.name);
                            vm.kill();
                            false
                        }),
                        Err(err) => {
                            println!("  [{}] {}: {err:#}", sc.name, e.name);
                            vm.kill();
                            false
                        }
                    };
                    let console = vm.console_text();
                    println!(
                        "  [{}] {}: {}{} in {:.0} s{}",
                        sc.name,
                        e.name,
                        if booted_secs.is_some() {
                            "first boot finished"
                        } else {
                            "first boot did NOT finish"
                        },
                        match joined_secs {
                            Some(j) => format!(", every node listed after {j:.0} s"),
                            None if e.name == *first_server => ", NOT every node listed".into(),
                            None => String::new(),
                        },
                        t.elapsed().as_secs_f64(),
                        if booted_secs.is_none() {
                            format!("; console tail:\n{}", tail(&console, 15))
                        } else {
                            String::new()
                        }
                    );
                    Ok(Observed {
                        console,
                        booted_secs,
                        clean_poweroff: clean,
                        overlay: p.disk.clone(),
                        allow_dir: work.to_owned(),
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(_) => bail!("a boot thread panicked"),
            })
            .collect::<Result<Vec<_>>>()
    });
    println!(
        "  [{}] switch: {} frames forwarded",
        sc.name,
        switch.frames()
    );
    drop(switch);
    let _ = std::fs::remove_dir_all(&net_dir);
    result
}

/// Wait until the console shows `listed` (and `refused`, when given); false on timeout.
fn wait_for_members(vm: &Vm, listed: &str, refused: Option<&str>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let text = vm.console_text();
        // The names end the line: a longer list (a node that should not be there) does not match.
        let has_list = text
            .lines()
            .any(|l| l.trim_end().ends_with(listed.trim_end()));
        let has_refusal = refused.is_none_or(|r| text.contains(r));
        if has_list && has_refusal {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every check of one scenario, printed; its report entry and the names of failed checks.
fn verdict(
    kiln: &Path,
    base: &base::Base,
    sc: &Scenario,
    plan: &[Planned],
    observed: &[Observed],
    work: &Path,
) -> Result<(serde_json::Value, Vec<String>)> {
    let broken_node = sc.broken();
    let mut good = Vec::new();
    let mut broken = Vec::new();
    // Each node's checks (`kiln cat`s, an e2fsck) on a thread of its own.
    let per_node: Vec<Vec<Check>> = std::thread::scope(|scope| {
        let handles: Vec<_> = plan
            .iter()
            .zip(observed)
            .map(|(p, obs)| scope.spawn(move || checks::node_checks(kiln, &p.expect, obs, base)))
            .collect();
        handles
            .into_iter()
            .zip(plan)
            .map(|(h, p)| {
                h.join().unwrap_or_else(|_| {
                    vec![Check {
                        node: p.expect.name.clone(),
                        name: "node checks ran",
                        ok: false,
                        detail: "a check thread panicked".into(),
                    }]
                })
            })
            .collect()
    });
    for (p, cs) in plan.iter().zip(per_node) {
        if Some(p.expect.name.as_str()) == broken_node {
            broken.extend(cs);
        } else {
            good.extend(cs);
        }
    }
    let named: Vec<(String, &Observed)> = plan
        .iter()
        .map(|p| p.expect.name.clone())
        .zip(observed.iter())
        .collect();
    good.push(checks::distinct_machine_ids(kiln, &named));

    // The cluster as the first server's k3s lists it.
    let expects: Vec<Expect> = plan.iter().map(|p| p.expect.clone()).collect();
    let first = plan
        .iter()
        .zip(observed)
        .find(|(p, _)| p.expect.role == "server" && p.expect.server.is_none());
    let (first_name, nodes, registrations) = match first {
        Some((p, obs)) => {
            let nodes =
                checks::read_guest(kiln, &obs.overlay, work, "/var/lib/kiln-e2e/nodes.json")
                    .and_then(|j| scenario::parse_nodes(&j));
            let log = checks::read_guest(
                kiln,
                &obs.overlay,
                work,
                "/var/lib/rancher/k3s/server/kiln-stand-in/registrations.log",
            )
            .ok();
            (p.expect.name.clone(), nodes, log)
        }
        None => ("?".to_owned(), Err("no first server".to_owned()), None),
    };
    let cluster = scenario::cluster_checks(
        &first_name,
        nodes,
        registrations.as_deref(),
        &expects,
        broken_node,
    );

    println!();
    for c in good.iter().chain(&cluster) {
        print_check(c, if c.ok { "PASS" } else { "FAIL" });
    }
    let mut negative = serde_json::Value::Null;
    let mut negative_ok = true;
    if let Some(b) = broken_node {
        println!(
            "\n{b}: broken seed (network-config MAC 52:54:00:e2:e0:99, NIC {BROKEN_NIC_MAC}); its checks must notice:"
        );
        for c in &broken {
            print_check(c, if c.ok { "ok  " } else { "bad " });
        }
        let caught = broken.iter().find(|c| c.name == BROKEN_CHECK);
        negative_ok = caught.is_some_and(|c| !c.ok);
        let detail = match caught {
            Some(c) if !c.ok => format!("the broken seed was caught: {}", c.detail),
            Some(_) => format!("{b}'s {BROKEN_CHECK:?} check passed on a broken seed"),
            None => format!("no {BROKEN_CHECK:?} check ran for {b}"),
        };
        print_check(
            &Check {
                node: b.into(),
                name: "negative check: broken seed detected",
                ok: negative_ok,
                detail: detail.clone(),
            },
            if negative_ok { "PASS" } else { "FAIL" },
        );
        negative = serde_json::json!({
            "node": b, "detected": negative_ok, "detail": detail, "checks": list(&broken),
        });
    }

    let mut fails: Vec<String> = good
        .iter()
        .chain(&cluster)
        .filter(|c| !c.ok)
        .map(|c| format!("{} / {} / {}", sc.name, c.node, c.name))
        .collect();
    if !negative_ok {
        fails.push(format!("{} / negative check", sc.name));
    }
    let passed = good.len() + cluster.len() - (fails.len() - usize::from(!negative_ok));
    println!(
        "\nscenario {}: {passed} checks passed, {} failed{}",
        sc.name,
        fails.len() - usize::from(!negative_ok),
        match broken_node {
            Some(_) if negative_ok => "; negative check passed",
            Some(_) => "; negative check FAILED",
            None => "",
        }
    );
    let registration = |name: &str| -> Vec<serde_json::Value> {
        cluster.iter().filter(|c| c.name == name).map(one).collect()
    };
    let report = serde_json::json!({
        "scenario": sc.name,
        "about": sc.about,
        "spec": sc.spec.display().to_string(),
        "first_server": first_name,
        "not_booted": sc.skip,
        "registrations": registration("registered with its address, labels and taints"),
        "membership": cluster.iter().filter(|c| c.name.starts_with("HA membership") || c.name.starts_with("control plane")).map(one).collect::<Vec<_>>(),
        "wrong_token": registration("wrong token refused"),
        "broken_seed": negative,
        "checks": list(&good),
        "cluster_checks": list(&cluster),
        "passed": fails.is_empty(),
    });
    Ok((report, fails))
}

fn one(c: &Check) -> serde_json::Value {
    serde_json::json!({"node": c.node, "check": c.name, "ok": c.ok, "detail": c.detail})
}

fn list(cs: &[Check]) -> Vec<serde_json::Value> {
    cs.iter().map(one).collect()
}

fn print_check(c: &Check, verdict: &str) {
    println!("{verdict}  {:<13} {:<46} {}", c.node, c.name, c.detail);
}
