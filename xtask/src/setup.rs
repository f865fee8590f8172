//! `cargo xtask test`'s first step: install what the tests, the main job and the boot test need on
//! a fresh Debian or Ubuntu machine — Debian packages with apt-get (as root, or through sudo),
//! pycdlib with pip (or apt), cargo-nextest with cargo — and nothing that is already there.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::apt;
use crate::util::run;

/// Debian packages and what needs them. `qemu-system-x86` is handled apart (it must come from the
/// suite the installed `qemu-utils` came from).
pub const DEBS: &[(&str, &str)] = &[
    (
        "qemu-utils",
        "qemu-img, qemu-io: qcow2 oracles, build-image's checks",
    ),
    (
        "e2fsprogs",
        "libext2fs2 (linked by kiln), mkfs.ext4 for fixtures, e2fsck/debugfs oracles",
    ),
    ("gdisk", "sgdisk: GPT oracle, the boot test's base disk"),
    ("fdisk", "sfdisk: partition-table oracle"),
    ("util-linux", "blkid: filesystem-probe oracle"),
    ("dosfstools", "fsck.vfat: vfat seed oracle"),
    ("mtools", "mdir/mtype/mcopy: vfat seed oracle"),
    ("genisoimage", "isoinfo: ISO seed oracle"),
    (
        "xz-utils",
        "xz: decompression oracle for the Raspberry Pi base fixture",
    ),
    ("xorriso", "ISO seed oracle"),
    (
        "cloud-init",
        "cloud-init schema / NoCloud datasource: seed oracle",
    ),
    (
        "cloud-image-utils",
        "cloud-localds: the seed bench's reference",
    ),
    (
        "debootstrap",
        "the boot test's Debian base and the Debian 13 reproducibility build",
    ),
];

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn privileged(args: &[&str]) -> Command {
    let mut c = if is_root() {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]);
        c
    } else {
        let mut c = Command::new("sudo");
        c.args(args);
        c
    };
    c.env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// What one provisioning run installed, for the summary and the closing note.
#[derive(Debug, Default)]
pub struct Installed {
    pub debs: Vec<String>,
    pub other: Vec<String>,
}

/// Install whatever is missing. Idempotent: a second run installs nothing and asks no registry.
pub fn provision() -> Result<Installed> {
    let mut done = Installed::default();
    let mut missing: Vec<String> = DEBS
        .iter()
        .filter(|(p, _)| apt::installed_version(p).is_none())
        .map(|(p, _)| (*p).to_owned())
        .collect();
    let emulator_missing = apt::installed_version("qemu-system-x86").is_none();
    let mut updated = false;
    let update = |updated: &mut bool| -> Result<()> {
        if !*updated {
            println!("apt-get update");
            run(&mut privileged(&["apt-get", "update", "-qq"]))?;
            *updated = true;
        }
        Ok(())
    };
    if !missing.is_empty() {
        update(&mut updated)?;
        apt_install(&missing, None)?;
        done.debs.append(&mut missing);
    }
    if emulator_missing {
        // The emulator and qemu-utils break each other across versions: take the emulator of the
        // exact version, and from the suite, of the installed qemu-utils.
        match apt::suite_of_installed("qemu-utils")? {
            Some((suite, version)) => {
                if apt::ensure_suite(&suite)? {
                    updated = false;
                }
                update(&mut updated)?;
                let is_default = !suite.contains("backports");
                let pin = format!("qemu-system-x86={version}");
                apt_install(&[pin], (!is_default).then_some(suite.as_str()))?;
                done.debs
                    .push(format!("qemu-system-x86 {version} ({suite})"));
            }
            None => {
                update(&mut updated)?;
                apt_install(&["qemu-system-x86".to_owned()], None)?;
                done.debs.push("qemu-system-x86".into());
            }
        }
    }
    if !python_has("pycdlib") {
        println!("pip: installing pycdlib (ISO seed oracle)");
        let pip = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--root-user-action=ignore",
                "pycdlib",
            ])
            .status();
        if !matches!(pip, Ok(s) if s.success()) || !python_has("pycdlib") {
            // An externally managed Python (PEP 668): Debian packages pycdlib too.
            update(&mut updated)?;
            apt_install(&["python3-pycdlib".to_owned()], None)?;
            done.debs.push("python3-pycdlib".into());
        } else {
            done.other.push("pycdlib (pip)".into());
        }
    }
    if Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        println!("cargo: installing cargo-nextest");
        run(Command::new("cargo").args(["install", "--locked", "cargo-nextest"]))?;
        done.other.push("cargo-nextest (cargo install)".into());
    }
    Ok(done)
}

fn apt_install(pkgs: &[String], target: Option<&str>) -> Result<()> {
    println!(
        "apt-get install {}{}",
        pkgs.join(" "),
        target.map(|t| format!(" (from {t})")).unwrap_or_default()
    );
    let mut args = vec!["apt-get", "install", "-y", "-qq", "--no-install-recommends"];
    if let Some(t) = target {
        args.extend(["-t", t]);
    }
    args.extend(pkgs.iter().map(String::as_str));
    let out = privileged(&args)
        .output()
        .context("running apt-get install")?;
    if !out.status.success() {
        bail!(
            "apt-get install {} failed:\n{}{}",
            pkgs.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
