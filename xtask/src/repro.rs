//! `cargo xtask test`'s `repro-debian13` step: the main job, run inside a Debian 13 root with
//! `chroot`, must give exactly the bytes of the committed locks — another distribution, another
//! libext2fs (1.47.2 there, 1.47.0 on Debian 12), another `mkfs.ext4` for the fixtures, another
//! directory, an empty page cache and a different process environment.
//!
//! The root is the one the boot test debootstrapped (kept in its cache); kiln's and xtask's
//! release binaries, the recipes with their locks and `fixtures/mke2fs.conf` are copied into it at
//! the repository's own path, and `xtask build-image --locked` runs there with `KILN_BIN` pointing
//! at the copied kiln: it generates the fixtures with Debian 13's `mkfs.ext4`, builds, checks the
//! locks and rebuilds.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{root, run};

pub fn run_task() -> Result<String> {
    if !crate::setup::is_root() {
        bail!(
            "the Debian 13 rebuild needs root (chroot); run `cargo xtask test` as root, as CI does"
        );
    }
    let Some(chroot) = crate::e2e::base::debian_root()? else {
        bail!(
            "no debootstrapped Debian root in the boot test's cache: run `cargo xtask e2e` first \
             (`cargo xtask test` runs it before this step)"
        );
    };
    let release = |what: &str| -> Result<String> {
        let v = run(Command::new("chroot").arg(&chroot).args(["sh", "-c", what]))?;
        Ok(v.trim().to_owned())
    };
    let os = release(". /etc/os-release; echo \"$PRETTY_NAME\"")?;
    let e2fs = release("dpkg-query -W -f '${Version}' 'libext2fs2*' 2>/dev/null || true")?;

    let kiln = crate::util::build_kiln()?;
    let xtask = std::env::current_exe().context("finding the xtask binary")?;
    let repo = root();
    let inside = |p: &Path| -> PathBuf { chroot.join(p.strip_prefix("/").unwrap_or(p)) };
    let mirror_repo = inside(&repo);
    if mirror_repo.exists() {
        std::fs::remove_dir_all(&mirror_repo)
            .with_context(|| format!("clearing {}", mirror_repo.display()))?;
    }
    let bin = repo.join("target/repro-bin");
    for (from, to) in [
        (kiln.clone(), bin.join("kiln")),
        (xtask.clone(), bin.join("xtask")),
        (
            repo.join("fixtures/mke2fs.conf"),
            repo.join("fixtures/mke2fs.conf"),
        ),
    ] {
        copy(&from, &inside(&to))?;
    }
    copy_dir(&repo.join("recipes"), &inside(&repo.join("recipes")))?;

    println!(
        "running `xtask build-image --locked` in {os} (libext2fs {e2fs}) under chroot {}",
        chroot.display()
    );
    let status = Command::new("chroot")
        .arg(&chroot)
        .arg(bin.join("xtask"))
        .args(["build-image", "--locked"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("KILN_BIN", bin.join("kiln"))
        .env("HOME", "/root")
        .status()
        .context("running chroot")?;
    if !status.success() {
        bail!(
            "the main job inside {os} does not reproduce the committed locks ({status}); its output is above"
        );
    }
    Ok(format!(
        "{os} (libext2fs {e2fs}): fixtures, golden and cluster match the committed locks"
    ))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            // Token files stay outside: build-image uses its own fixed lab token.
            if e.file_name() != "secrets" {
                copy_dir(&src, &dst)?;
            }
        } else {
            copy(&src, &dst)?;
        }
    }
    Ok(())
}
