//! The e2e base image: a small bootable Debian cloud image made without mounting anything, booted
//! once so it carries genuine first-boot state (machine-id, ssh host keys, cloud-init's instance
//! data, logs) — what kiln's golden build must scrub.
//!
//! `debootstrap` (cloud kernel, systemd, cloud-init, netplan, openssh-server) into a directory →
//! `mkfs.ext4 -d` labelled `cloudimg-rootfs` → a GPT disk with that partition → `qemu-img convert -c`
//! → one boot with a NoCloud seed whose user-data powers the guest off when cloud-init is done.
//!
//! The result is cached outside the repository, keyed by everything that shapes it, so later runs
//! skip the ~3 minutes it takes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kiln_nocloud::{NodeSeed, Role, SeedFormat};

use super::vm::{Accel, Vm, VmConfig, tail};
use crate::util::{run, s};

pub const SUITE: &str = "trixie";
/// On top of debootstrap's minbase. `dbus` is listed because debootstrap does not resolve
/// systemd-resolved's virtual dependency on a system bus; `e2fsprogs` and `cloud-guest-utils`
/// because cloud-init's growpart/resizefs need them (as on Ubuntu's images).
pub const PACKAGES: &[&str] = &[
    "linux-image-cloud-amd64",
    "systemd-sysv",
    "dbus",
    "systemd-resolved",
    "udev",
    "iproute2",
    "e2fsprogs",
    "cloud-guest-utils",
    "cloud-init",
    "netplan.io",
    "openssh-server",
];
/// Bump when the steps below change what the image holds.
const RECIPE_VERSION: &str = "kiln-e2e-base-3";
const FIRST_BOOT_MAC: &str = "52:54:00:e2:e0:01";
pub const FIRST_BOOT_INSTANCE: &str = "kiln-e2e-base-first-boot";

/// A built (and once booted) base image, with what its first boot left behind.
#[derive(Debug, Clone)]
pub struct Base {
    pub image: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub sha256: String,
    /// `/etc/machine-id` after the first boot.
    pub machine_id: String,
    /// The `/etc/ssh/ssh_host_*_key.pub` lines after the first boot.
    pub host_keys: Vec<String>,
}

pub fn cache_dir() -> PathBuf {
    if let Ok(d) = std::env::var("KILN_E2E_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|_| PathBuf::from("/tmp"));
    base.join("kiln").join("e2e")
}

/// The Debian mirror: `$KILN_E2E_MIRROR`, else the one this machine's apt uses.
fn mirror() -> Result<String> {
    crate::apt::debian_mirror()
}

/// The cached base for this recipe, built (and booted once) when missing or when `rebuild`.
/// The cache directory of the base for this recipe (and mirror).
fn base_dir() -> Result<PathBuf> {
    Ok(cache_dir().join(format!("debian-{SUITE}-{}", key()?)))
}

fn key() -> Result<String> {
    use sha2::{Digest, Sha256};
    let text = format!(
        "{RECIPE_VERSION}\n{SUITE}\n{}\n{}",
        PACKAGES.join(","),
        mirror()?
    );
    let d = Sha256::digest(text.as_bytes());
    Ok(d[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// The debootstrapped Debian root the cached base was made from (kept for the Debian 13
/// reproducibility build), if the base has been built.
pub fn debian_root() -> Result<Option<PathBuf>> {
    let root = base_dir()?.join("rootfs");
    Ok(root.join("usr/sbin/mke2fs").exists().then_some(root))
}

pub fn ensure(kiln: &Path, accel: &mut Option<Accel>, rebuild: bool) -> Result<Base> {
    let key = key()?;
    let dir = base_dir()?;
    if !rebuild && let Some(b) = load(&dir)? {
        println!("base image: cached, {}", dir.display());
        return Ok(b);
    }
    let work = cache_dir().join(format!(".work-{key}"));
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    fs::create_dir_all(&work)?;
    build(kiln, &work, accel)?;
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::rename(&work, &dir).with_context(|| format!("moving the base into {}", dir.display()))?;
    load(&dir)?.context("the base just built is incomplete")
}

fn load(dir: &Path) -> Result<Option<Base>> {
    let meta = dir.join("first-boot.txt");
    let image = dir.join("base.qcow2");
    if !meta.is_file() || !image.is_file() {
        return Ok(None);
    }
    let text = fs::read_to_string(&meta)?;
    let mut machine_id = String::new();
    let mut host_keys = Vec::new();
    let mut sha256 = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("machine-id ") {
            machine_id = v.to_owned();
        } else if let Some(v) = line.strip_prefix("sha256 ") {
            sha256 = v.to_owned();
        } else if let Some(v) = line.strip_prefix("host-key ") {
            host_keys.push(v.to_owned());
        }
    }
    if sha256.is_empty() || machine_id.is_empty() || host_keys.is_empty() {
        return Ok(None);
    }
    Ok(Some(Base {
        image,
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        sha256,
        machine_id,
        host_keys,
    }))
}

fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    print!("  {what}… ");
    let _ = std::io::stdout().flush();
    let r = f();
    match &r {
        Ok(_) => println!("{:.1} s", t.elapsed().as_secs_f64()),
        Err(_) => println!("failed"),
    }
    r
}

fn build(kiln: &Path, work: &Path, accel: &mut Option<Accel>) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user.
    if fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0) != 0 {
        bail!(
            "building the e2e base image needs root (debootstrap creates device nodes and chroots); \
             run `cargo xtask e2e` as root, as CI does, or point KILN_E2E_CACHE at a cache that \
             already holds the base"
        );
    }
    println!("base image: building Debian {SUITE} in {}", work.display());
    let root = work.join("root");
    step("debootstrap", || debootstrap(work, &root))?;
    step("configure", || configure(&root, work))?;
    let part = work.join("root.ext4");
    step("mkfs.ext4 -d", || mkfs(&root, &part))?;
    // Kept: `cargo xtask test`'s Debian 13 reproducibility build runs kiln inside it.
    fs::rename(&root, work.join("rootfs"))?;
    let raw = work.join("disk.raw");
    step("GPT disk", || gpt_disk(&part, &raw))?;
    fs::remove_file(&part)?;
    let image = work.join("base.qcow2");
    step("qemu-img convert -c", || {
        run(Command::new("qemu-img")
            .args(["convert", "-q", "-c", "-f", "raw", "-O", "qcow2"])
            .args(["-o", "compression_type=zlib"])
            .arg(&raw)
            .arg(&image))
        .map(drop)
    })?;
    fs::remove_file(&raw)?;
    let accel = match accel {
        Some(a) => *a,
        None => {
            let a = Accel::detect(&work.join("vmlinuz"), &work.join("initrd.img"));
            *accel = Some(a);
            println!("  accelerator: {}", a.name());
            a
        }
    };
    step("first boot (cloud-init, then power-off)", || {
        first_boot(work, &image, accel)
    })?;
    run(Command::new("qemu-img").args(["check", "-q", s(&image)]))?;
    let read =
        |p: &str| super::checks::read_guest(kiln, &image, work, p).map_err(anyhow::Error::msg);
    let machine_id = read("/etc/machine-id")?.trim().to_owned();
    let mut keys = Vec::new();
    for alg in ["ecdsa", "ed25519", "rsa"] {
        let p = format!("/etc/ssh/ssh_host_{alg}_key.pub");
        keys.push(read(&p)?.trim().to_owned());
    }
    let sha = kiln_fixtures::sha256_of(&image)?;
    let mut meta = format!("sha256 {sha}\nmachine-id {machine_id}\n");
    for k in &keys {
        meta.push_str(&format!("host-key {k}\n"));
    }
    fs::write(work.join("first-boot.txt"), meta)?;
    Ok(())
}

fn debootstrap(work: &Path, root: &Path) -> Result<()> {
    let log = work.join("debootstrap.log");
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", "--merged-usr"])
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(SUITE)
        .arg(root)
        .arg(mirror()?)
        .output()
        .context("running debootstrap (is it installed? see .ci/run)")?;
    fs::write(&log, [&out.stdout[..], &out.stderr[..]].concat())?;
    if !out.status.success() {
        let detail = fs::read_to_string(root.join("debootstrap/debootstrap.log"))
            .map(|t| tail(&t, 30))
            .unwrap_or_default();
        bail!(
            "debootstrap {SUITE} failed ({}); its log is {}:\n{}\n{detail}",
            out.status,
            log.display(),
            tail(&String::from_utf8_lossy(&out.stderr), 10)
        );
    }
    Ok(())
}

/// Files written straight into the tree (no chroot): what a cloud image's build would set.
fn configure(root: &Path, work: &Path) -> Result<()> {
    let put = |rel: &str, text: &str| -> Result<()> {
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d)?;
        }
        let _ = fs::remove_file(&p);
        fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    put(
        "etc/fstab",
        "LABEL=cloudimg-rootfs / ext4 discard,errors=remount-ro 0 1\n",
    )?;
    // debootstrap copies the build host's name and hosts file; a cloud image ships neutral ones.
    put("etc/hostname", "debian\n")?;
    put(
        "etc/hosts",
        "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    )?;
    // Empty: systemd treats the first boot as such and commits a new id.
    put("etc/machine-id", "")?;
    put(
        "etc/cloud/cloud.cfg.d/90-kiln-e2e.cfg",
        "# kiln e2e base: only the NoCloud seed is looked for.\ndatasource_list: [ NoCloud, None ]\n",
    )?;
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        for e in fs::read_dir(root.join(dir))? {
            let p = e?.path();
            if p.is_file() {
                fs::remove_file(&p)?;
            }
        }
    }
    let boot = root.join("boot");
    let mut kernel = None;
    let mut initrd = None;
    for e in fs::read_dir(&boot)? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("vmlinuz-") {
            kernel = Some(p.clone());
        } else if name.starts_with("initrd.img-") {
            initrd = Some(p.clone());
        }
    }
    let kernel = kernel.context("debootstrap left no /boot/vmlinuz-*")?;
    let initrd = initrd.context("debootstrap left no /boot/initrd.img-*")?;
    fs::copy(&kernel, work.join("vmlinuz"))?;
    fs::copy(&initrd, work.join("initrd.img"))?;
    Ok(())
}

fn mkfs(root: &Path, part: &Path) -> Result<()> {
    let du = run(Command::new("du").args(["-s", "--block-size=1M"]).arg(root))?;
    let used: u64 = du
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("reading du's output")?;
    // Room for the first boot and the golden build's injected files; a multiple of 64 MiB.
    let mib = (used * 2 + 256).div_ceil(64) * 64;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "cloudimg-rootfs", "-d"])
        .arg(root)
        .arg(part)
        .arg(format!("{mib}M")))?;
    Ok(())
}

fn gpt_disk(part: &Path, raw: &Path) -> Result<()> {
    let size = fs::metadata(part)?.len();
    let mib = 1u64 << 20;
    let f = fs::File::create(raw)?;
    // 1 MiB in front of the partition, 1 MiB behind it for the backup GPT.
    f.set_len(size + 2 * mib)?;
    run(Command::new("sgdisk")
        .arg(format!("--new=1:2048:+{}M", size / mib))
        .args(["--typecode=1:8300", "--change-name=1:cloudimg-rootfs"])
        .arg(raw))?;
    let f = fs::OpenOptions::new().write(true).open(raw)?;
    kiln_fixtures::copy_sparse(part, &f, mib)?;
    f.sync_all()?;
    Ok(())
}

fn first_boot(work: &Path, image: &Path, accel: Accel) -> Result<()> {
    let seed = NodeSeed {
        node: "debian".into(),
        role: Role::Server,
        instance_id: FIRST_BOOT_INSTANCE.into(),
        meta_data: format!("instance-id: {FIRST_BOOT_INSTANCE}\nlocal-hostname: debian\n").into_bytes(),
        user_data: b"#cloud-config\n# kiln e2e: the base's one boot; off when cloud-init is done.\npower_state:\n  mode: poweroff\n  delay: now\n  timeout: 120\n".to_vec(),
        network_config: format!(
            "network:\n  version: 2\n  ethernets:\n    nic:\n      match:\n        macaddress: \"{FIRST_BOOT_MAC}\"\n      dhcp4: true\n"
        )
        .into_bytes(),
        vendor_data: None,
    };
    let seed_path = work.join("first-boot-seed.iso");
    kiln_nocloud::write_seed(&seed, SeedFormat::Iso, 0, &seed_path)?;
    let mut vm = Vm::start(&VmConfig {
        name: "base-first-boot".into(),
        disk: Some(image.to_owned()),
        seed: Some(seed_path),
        mac: FIRST_BOOT_MAC.into(),
        kernel: work.join("vmlinuz"),
        initrd: work.join("initrd.img"),
        accel,
        netdev: None,
        dir: work.join("first-boot"),
    })?;
    let limit = Duration::from_secs(120 * u64::from(accel.slowness()));
    let exited = vm.wait_exit(limit)?;
    let console = vm.console_text();
    if exited.is_none() {
        vm.kill();
        bail!(
            "the base's first boot did not power off within {} s; console tail:\n{}",
            limit.as_secs(),
            tail(&console, 40)
        );
    }
    if !console.contains("Cloud-init v.") || !console.contains(" finished at ") {
        bail!(
            "the base's first boot ended without cloud-init finishing; console tail:\n{}",
            tail(&console, 40)
        );
    }
    Ok(())
}
