//! `cargo xtask fixtures [--force]`: the large generated inputs, under `target/fixtures/` (never
//! committed): an Ubuntu-24.04-like base cloud image that looks booted once
//! (`ubuntu-24.04-base.qcow2`: GPT 1 = ext4 `cloudimg-rootfs`, 14 = BIOS boot, 15 = vfat `UEFI`,
//! 16 = ext4 `BOOT`; 3.5 GiB virtual; zlib-compressed) and stand-in k3s release assets
//! (`k3s/`: `k3s`, `k3s-airgap-images-amd64.tar.zst`, `install.sh`, `sha256sum-amd64.txt`).
//!
//! For the Raspberry Pi recipe (`recipes/k3s-node-ubuntu-24.04-raspi.yaml`) it also makes the
//! Pi-shaped base (`ubuntu-24.04-raspi.img.xz`: xz-compressed raw, MBR 1 = vfat `system-boot`,
//! 2 = ext4 `writable`; 300 MiB) and arm64 stand-in assets (`k3s-arm64/`).
//!
//! All are deterministic, so the recipes can pin their hashes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kiln_fixtures::{self as fixtures, BaseSpec};

use crate::util::root;

/// The k3s release the fixtures stand in for.
pub const K3S_VERSION: &str = "v1.34.3+k3s1";
/// Size of the layer data in the stand-in air-gap tarball.
pub const AIRGAP_BYTES: usize = 200 << 20;
pub const BASE_NAME: &str = "ubuntu-24.04-base.qcow2";
/// Size of the layer data in the arm64 stand-in air-gap tarball.
pub const AIRGAP_BYTES_ARM64: usize = 16 << 20;

pub fn dir() -> PathBuf {
    root().join("target/fixtures")
}

pub fn run(args: &[String]) -> Result<()> {
    let force = match args {
        [] => false,
        [f] if f == "--force" => true,
        other => bail!("usage: cargo xtask fixtures [--force] (got {other:?})"),
    };
    ensure(force)
}

/// Make the fixtures unless they are already there (or `force`).
pub fn ensure(force: bool) -> Result<()> {
    let dir = dir();
    ensure_base(&dir, BASE_NAME, &BaseSpec::ubuntu(), force)?;
    ensure_assets(&dir.join("k3s"), "amd64", AIRGAP_BYTES, force)?;
    let pi = fixtures::Flavor::Raspi;
    ensure_base(&dir, pi.file_name(), &BaseSpec::small_of(pi), force)?;
    ensure_assets(&dir.join("k3s-arm64"), "arm64", AIRGAP_BYTES_ARM64, force)
}

/// The base image `dir/name` made from `spec` unless it exists (or `force`).
fn ensure_base(dir: &Path, name: &str, spec: &BaseSpec, force: bool) -> Result<()> {
    let path = dir.join(name);
    if !force && path.exists() {
        println!(
            "{} exists (sha256 {})",
            path.display(),
            fixtures::sha256_of(&path)?
        );
        return Ok(());
    }
    let t = Instant::now();
    let b = fixtures::make_base(dir, name, spec)
        .with_context(|| format!("making {}", path.display()))?;
    println!(
        "{}  sha256 {}  ({:.1} s)",
        b.path.display(),
        b.sha256,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Stand-in k3s assets for `arch` in `assets` unless they exist (or `force`).
fn ensure_assets(assets: &Path, arch: &str, airgap_bytes: usize, force: bool) -> Result<()> {
    if !force && assets.join(format!("sha256sum-{arch}.txt")).exists() {
        println!("{} exists", assets.display());
        return Ok(());
    }
    let t = Instant::now();
    let a = fixtures::make_k3s_assets(assets, K3S_VERSION, arch, airgap_bytes)
        .with_context(|| format!("making {}", assets.display()))?;
    println!(
        "{}  install.sh sha256 {}  ({:.1} s)",
        a.dir.display(),
        a.install_sh_sha256,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
