//! `cargo xtask e2e`: real systemd, real cloud-init and the real Linux ext4 driver judge kiln's
//! work.
//!
//! 1. a small bootable Debian base, built without mounting anything and booted once
//!    ([`base`], cached outside the repository);
//! 2. `kiln build` of a golden image from it (stand-in k3s assets, the usual scrub catalog);
//! 3. `kiln cluster` for a 3-node spec in QEMU's own 10.0.2.0/24; the third node's seed is broken
//!    on purpose (its network-config names a MAC the VM's NIC does not have);
//! 4. every node booted at once under `qemu-system-x86_64` ([`vm`]: KVM when it works, else TCG;
//!    user-mode networking with `restrict=on`), powered off with the ACPI button when its
//!    cloud-init final message shows;
//! 5. [`checks`] on the console and on the overlay read back with `kiln cat`, then `e2fsck -fn`.
//!
//! Passes when every check of the good nodes passes and the broken node's address check fails
//! (saying which node and what was expected). Writes `target/e2e/report.json`.

pub(crate) mod base;
mod checks;
mod vm;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use self::checks::{Check, Expect, Observed};
use self::vm::{Accel, Vm, VmConfig, tail};
use crate::util::{root, run, s};

const K3S_VERSION: &str = "v1.34.3+k3s1";
const SERVER_IP: &str = "10.0.2.11";
/// The node whose seed is broken, and the MAC its VM's NIC really has.
const BROKEN_NODE: &str = "e2e-agent-2";
const BROKEN_NIC_MAC: &str = "52:54:00:e2:e0:13";
const BROKEN_CHECK: &str = "static address on the NIC matched by MAC";

const SPEC: &str = r#"# kiln e2e: three nodes in QEMU's user-mode network (10.0.2.0/24, gateway .2, DNS .3).
cluster:
  name: e2e
  k3s:
    version: v1.34.3+k3s1
    token_file: secrets/e2e-token
  network:
    match: mac
    interface: lan0
    ipv4: { cidr: 10.0.2.0/24, gateway: 10.0.2.2 }
    dns: [10.0.2.3]
  disk_size: 4G
  wait: { network: 30s, ready: 90s }
nodes:
  - { name: e2e-server-1, role: server, ipv4: 10.0.2.11, mac: "52:54:00:e2:e0:11" }
  - { name: e2e-agent-1, role: agent, ipv4: 10.0.2.12, mac: "52:54:00:e2:e0:12" }
  # The broken seed: its network-config names a MAC that this VM's NIC (…:13) does not have.
  - { name: e2e-agent-2, role: agent, ipv4: 10.0.2.13, mac: "52:54:00:e2:e0:99" }
"#;

const USAGE: &str = "usage: cargo xtask e2e [--rebuild-base] [--base-only]

  --rebuild-base  build the cached Debian base image again (debootstrap + first boot)
  --base-only     stop once the base image is ready

Environment: KILN_E2E_CACHE (base image cache; default ~/.cache/kiln/e2e),
KILN_E2E_MIRROR (Debian mirror), KILN_E2E_ACCEL=kvm|tcg (default: KVM when it works).";

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

    let work = root().join("target/e2e");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;

    let t = Instant::now();
    let golden = golden(&kiln, &base, &work)?;
    println!(
        "golden image: {} ({:.1} s)",
        golden.display(),
        t.elapsed().as_secs_f64()
    );
    let (nodes_dir, expects) = cluster(&kiln, &golden, &work)?;

    let t = Instant::now();
    println!(
        "booting {} nodes under {} (each until its cloud-init final message, then power-off)…",
        expects.len(),
        accel.name()
    );
    let observed = boot_all(&expects, &nodes_dir, &base, accel, &work)?;
    println!("boots: {:.0} s", t.elapsed().as_secs_f64());

    verdict(&kiln, &base, accel, &work, &expects, &observed, t0)
}

/// `kiln cluster` for the e2e spec against `golden`; the nodes' directory and what each must show.
fn cluster(kiln: &Path, golden: &Path, work: &Path) -> Result<(PathBuf, Vec<Expect>)> {
    let t = Instant::now();
    let spec = work.join("e2e-cluster.yaml");
    std::fs::write(&spec, SPEC)?;
    let nodes_dir = work.join("nodes");
    run(Command::new(kiln)
        .env("SOURCE_DATE_EPOCH", "1767225600")
        .arg("cluster")
        .arg(&spec)
        .arg("--golden")
        .arg(golden)
        .arg("-o")
        .arg(&nodes_dir))?;
    let expects = expectations(&nodes_dir, work)?;
    println!(
        "kiln cluster: {} nodes in {} ({:.1} s)",
        expects.len(),
        nodes_dir.display(),
        t.elapsed().as_secs_f64()
    );

    Ok((nodes_dir, expects))
}

/// Runs every check on what the boots showed, prints them and the negative case, writes the
/// report, and fails unless every check passed and the broken seed was caught.
fn verdict(
    kiln: &Path,
    base: &base::Base,
    accel: Accel,
    work: &Path,
    expects: &[Expect],
    observed: &[Observed],
    t0: Instant,
) -> Result<()> {
    let mut good = Vec::new();
    let mut broken = Vec::new();
    for (e, obs) in expects.iter().zip(observed) {
        let cs = checks::node_checks(kiln, e, obs, base);
        if e.name == BROKEN_NODE {
            broken.extend(cs);
        } else {
            good.extend(cs);
        }
    }
    let named: Vec<(String, &Observed)> = expects
        .iter()
        .map(|e| e.name.clone())
        .zip(observed.iter())
        .collect();
    good.push(checks::distinct_machine_ids(kiln, &named));

    println!();
    for c in &good {
        print_check(c, if c.ok { "PASS" } else { "FAIL" });
    }
    println!(
        "\n{BROKEN_NODE}: broken seed (network-config MAC 52:54:00:e2:e0:99, NIC {BROKEN_NIC_MAC}); its checks must notice:"
    );
    for c in &broken {
        print_check(c, if c.ok { "ok  " } else { "bad " });
    }
    let negative = broken.iter().find(|c| c.name == BROKEN_CHECK);
    let negative_ok = negative.is_some_and(|c| !c.ok);
    let negative_detail = match negative {
        Some(c) if !c.ok => format!("the broken seed was caught: {}", c.detail),
        Some(_) => format!("{BROKEN_NODE}'s {BROKEN_CHECK:?} check passed on a broken seed"),
        None => format!("no {BROKEN_CHECK:?} check ran for {BROKEN_NODE}"),
    };
    print_check(
        &Check {
            node: BROKEN_NODE.into(),
            name: "negative check: broken seed detected",
            ok: negative_ok,
            detail: negative_detail.clone(),
        },
        if negative_ok { "PASS" } else { "FAIL" },
    );

    let failed: Vec<&Check> = good.iter().filter(|c| !c.ok).collect();
    write_report(work, accel, &good, &broken, negative_ok, &negative_detail)?;
    println!(
        "\n{} checks passed, {} failed; negative check {}; {:.0} s in all (report: {})",
        good.len() - failed.len(),
        failed.len(),
        if negative_ok { "passed" } else { "FAILED" },
        t0.elapsed().as_secs_f64(),
        work.join("report.json").display()
    );
    if !failed.is_empty() || !negative_ok {
        bail!(
            "e2e failed: {}",
            failed
                .iter()
                .map(|c| format!("{} / {}", c.node, c.name))
                .chain((!negative_ok).then(|| "negative check".to_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn print_check(c: &Check, verdict: &str) {
    println!("{verdict}  {:<13} {:<46} {}", c.node, c.name, c.detail);
}

/// Stand-in k3s assets, a recipe pinning the base and them, `kiln build` and `kiln verify`.
fn golden(kiln: &Path, base: &base::Base, work: &Path) -> Result<PathBuf> {
    let assets = kiln_fixtures::make_k3s_assets(&work.join("k3s"), K3S_VERSION, "amd64", 1 << 20)?;
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
  version: {K3S_VERSION}
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
",
        base = base.image.display(),
        sha = base.sha256,
        assets = assets.dir.display(),
        install = assets.install_sh_sha256,
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

/// Each node as the inventory describes it (the broken node's NIC keeps its real MAC).
fn expectations(nodes_dir: &Path, work: &Path) -> Result<Vec<Expect>> {
    let inv_path = nodes_dir.join("inventory.json");
    let inv: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&inv_path).with_context(|| format!("reading {}", inv_path.display()))?,
    )?;
    let sums = std::fs::read_to_string(work.join("k3s/sha256sum-amd64.txt"))?;
    let k3s_sha256 = sums
        .lines()
        .find_map(|l| l.strip_suffix("  k3s"))
        .context("sha256sum-amd64.txt lists no k3s")?
        .to_owned();
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
        let name = field(n, "name")?;
        let nic_mac = if name == BROKEN_NODE {
            BROKEN_NIC_MAC.to_owned()
        } else {
            field(n, "mac")?
        };
        out.push(Expect {
            role: field(n, "role")?,
            ipv4: field(n, "ipv4")?,
            nic_mac,
            interface: "lan0".into(),
            instance_id: field(n, "instance_id")?,
            first_server_ipv4: SERVER_IP.into(),
            k3s_version: K3S_VERSION.into(),
            k3s_sha256: k3s_sha256.clone(),
            name,
        });
    }
    Ok(out)
}

/// Boot every node at once; each thread waits for its node's final message, then powers it off.
fn boot_all(
    expects: &[Expect],
    nodes_dir: &Path,
    base: &base::Base,
    accel: Accel,
    work: &Path,
) -> Result<Vec<Observed>> {
    let boot_limit = Duration::from_secs(150 * u64::from(accel.slowness()));
    let off_limit = Duration::from_secs(30 * u64::from(accel.slowness()));
    std::thread::scope(|scope| {
        let handles: Vec<_> = expects
            .iter()
            .map(|e| {
                scope.spawn(move || -> Result<Observed> {
                    let cfg = VmConfig {
                        name: e.name.clone(),
                        disk: Some(nodes_dir.join(format!("{}.qcow2", e.name))),
                        seed: Some(nodes_dir.join(format!("{}-seed.iso", e.name))),
                        mac: e.nic_mac.clone(),
                        kernel: base.kernel.clone(),
                        initrd: base.initrd.clone(),
                        accel,
                        dir: work.join("vm").join(&e.name),
                    };
                    let t = Instant::now();
                    let mut vm = Vm::start(&cfg)?;
                    let done = format!("kiln: {} ({}) finished first boot", e.name, e.role);
                    let seen = vm.wait_console(&[done.as_str()], boot_limit);
                    let booted_secs = match &seen {
                        Ok(Some(_)) => Some(t.elapsed().as_secs_f64()),
                        _ => None,
                    };
                    let clean = match seen {
                        Ok(_) => vm.shutdown(off_limit).unwrap_or_else(|err| {
                            println!("  {}: {err:#}", e.name);
                            vm.kill();
                            false
                        }),
                        Err(err) => {
                            println!("  {}: {err:#}", e.name);
                            vm.kill();
                            false
                        }
                    };
                    let console = vm.console_text();
                    println!(
                        "  {}: {} in {:.0} s{}",
                        e.name,
                        if booted_secs.is_some() {
                            "first boot finished"
                        } else {
                            "first boot did NOT finish"
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
                        overlay: cfg.disk.clone().unwrap_or_default(),
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
            .collect()
    })
}

fn write_report(
    work: &Path,
    accel: Accel,
    good: &[Check],
    broken: &[Check],
    negative_ok: bool,
    negative_detail: &str,
) -> Result<()> {
    let list = |cs: &[Check]| -> Vec<serde_json::Value> {
        cs.iter()
            .map(|c| {
                serde_json::json!({"node": c.node, "check": c.name, "ok": c.ok, "detail": c.detail})
            })
            .collect()
    };
    let report = serde_json::json!({
        "accelerator": accel.name(),
        "checks": list(good),
        "broken_seed": {
            "node": BROKEN_NODE,
            "detected": negative_ok,
            "detail": negative_detail,
            "checks": list(broken),
        },
    });
    let mut text = serde_json::to_string_pretty(&report)?;
    text.push('\n');
    std::fs::write(work.join("report.json"), text)?;
    Ok(())
}
