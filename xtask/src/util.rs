//! Small helpers: running tools, timing, the workspace root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Result;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Run a command, failing with its output when it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    Ok(kiln_fixtures::testing::try_run(cmd)?)
}

/// Best of `n` runs of `f`, in seconds.
pub fn best_of(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

pub use kiln_fixtures::testing::Rng;

/// Build kiln (release) and return the binary's path (under `$CARGO_TARGET_DIR` when set, as cargo
/// puts it there); `$KILN_BIN`, when set, is used as it is (the Debian 13 reproducibility build
/// runs inside a root that has no cargo).
pub fn build_kiln() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("KILN_BIN") {
        return Ok(PathBuf::from(bin));
    }
    println!("building kiln (release)…");
    run(Command::new(env!("CARGO")).current_dir(root()).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "kiln",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| root().join(t))
        .unwrap_or_else(|| root().join("target"));
    Ok(target.join("release/kiln"))
}
