//! `cargo xtask test`: README's test command, and exactly what CI (`.ci/run`) runs.
//!
//! 1. `setup`: install what is missing (Debian packages, pycdlib, cargo-nextest; see `setup.rs`);
//! 2. `fmt`: `cargo fmt --all --check`;
//! 3. `clippy`: `cargo clippy --workspace --all-targets -- -D warnings`;
//! 4. `doc`: for every library crate of the workspace, `cargo doc --no-deps` with
//!    `RUSTDOCFLAGS="-D missing_docs -D warnings"` (every public item documented, no broken
//!    intra-doc links), then `cargo test --doc` (nextest does not run doctests);
//! 5. `fuzz-build`: the fuzz targets build against `fuzz/Cargo.lock` (`--locked`), whose versions
//!    must equal the workspace lock's;
//! 6. `nextest`: the test suite;
//! 7. `build-image`: the main job, `--locked` against the committed digests;
//! 8. `example`: the library example (`examples/provisioner`, what README's "Use kiln from Rust"
//!    shows) built and run against the generated fixtures;
//! 9. `e2e`: the QEMU boot test (needs root for debootstrap);
//! 10. `repro-debian13`: the main job inside the Debian 13 root the boot test debootstrapped
//!     (chroot), which must match the same locks (see `repro.rs`).
//!
//! Every step runs even when an earlier one failed (so one run shows every problem), except that
//! a failed `setup` stops everything. The summary table ends with the suite's counts.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::util::root;

pub const STEPS: &[&str] = &[
    "setup",
    "fmt",
    "clippy",
    "doc",
    "fuzz-build",
    "nextest",
    "build-image",
    "example",
    "e2e",
    "repro-debian13",
];

const USAGE: &str = "usage: cargo xtask test [--skip STEP]… [--only STEP]…
steps: setup fmt clippy doc fuzz-build nextest build-image example e2e repro-debian13";

/// Packages the `doc` step leaves out: the CLI and this task runner are binaries with no public
/// API. Every other workspace package is a library whose docs must be complete (or, like the
/// example, a binary whose docs build without warnings).
const NOT_LIBRARIES: &[&str] = &["kiln", "xtask"];

pub fn run_task(args: &[String]) -> Result<()> {
    let mut skip = Vec::new();
    let mut only = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let list = match a.as_str() {
            "--skip" => &mut skip,
            "--only" => &mut only,
            _ => bail!("unknown argument {a:?}\n{USAGE}"),
        };
        let step = it
            .next()
            .with_context(|| format!("{a} needs a step\n{USAGE}"))?;
        if !STEPS.contains(&step.as_str()) {
            bail!("unknown step {step:?}\n{USAGE}");
        }
        list.push(step.clone());
    }
    let wanted =
        |s: &str| !skip.iter().any(|x| x == s) && (only.is_empty() || only.iter().any(|x| x == s));

    let mut results: Vec<(&str, Result<String>, f64)> = Vec::new();
    let mut suite_line = None;
    for &step in STEPS {
        if !wanted(step) {
            continue;
        }
        println!("\n==> {step}");
        let t = Instant::now();
        let r = match step {
            "setup" => crate::setup::provision().map(|i| {
                let mut all: Vec<String> = i.debs;
                all.extend(i.other);
                if all.is_empty() {
                    "nothing missing".to_owned()
                } else {
                    format!("installed {}", all.join(", "))
                }
            }),
            "fmt" => cargo(&["fmt", "--all", "--check"]),
            "clippy" => cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--quiet",
                "--",
                "-D",
                "warnings",
            ]),
            "doc" => doc(),
            "fuzz-build" => fuzz_build(),
            "nextest" => nextest().inspect(|line| suite_line = Some(line.clone())),
            "build-image" => crate::build_image::run_task(&["--locked".to_owned()]).map(|()| {
                "golden + cluster match the committed locks, rebuild identical".to_owned()
            }),
            "example" => example(),
            "e2e" => crate::e2e::run_task(&[]).map(|()| "every boot check passed".to_owned()),
            "repro-debian13" => crate::repro::run_task(),
            _ => unreachable!("STEPS lists every step"),
        };
        let secs = t.elapsed().as_secs_f64();
        let stop = step == "setup" && r.is_err();
        if let Err(e) = &r {
            println!("==> {step} FAILED: {e:#}");
        }
        results.push((step, r, secs));
        if stop {
            break;
        }
    }

    println!("\n| step | result | seconds |\n|---|---|---:|");
    let mut failed = Vec::new();
    for (step, r, secs) in &results {
        let text = match r {
            Ok(t) => format!("ok: {t}"),
            Err(e) => {
                failed.push(*step);
                format!("FAILED: {}", first_line(&format!("{e:#}")))
            }
        };
        println!("| {step} | {text} | {secs:.0} |");
    }
    let passed = results.len() - failed.len();
    println!("\nsteps: {passed} passed, {} failed", failed.len());
    if let Some(line) = suite_line {
        println!("{line}");
    }
    if !failed.is_empty() {
        bail!("failed steps: {}", failed.join(", "));
    }
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn cargo(args: &[&str]) -> Result<String> {
    let status = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(format!("cargo {}", args[0]))
}

/// The `doc` step: every library crate's docs build with missing docs and rustdoc warnings as
/// errors, and their doctests pass.
fn doc() -> Result<String> {
    let mut packages = vec!["--workspace"];
    packages.extend(NOT_LIBRARIES.iter().flat_map(|p| ["--exclude", p]));
    let run = |args: &[&str], rustdocflags: Option<&str>| -> Result<()> {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(root()).args(args).args(&packages);
        if let Some(flags) = rustdocflags {
            cmd.env("RUSTDOCFLAGS", flags);
        }
        let status = cmd
            .status()
            .with_context(|| format!("running cargo {}", args.join(" ")))?;
        if !status.success() {
            bail!("cargo {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    run(
        &["doc", "--no-deps", "--quiet"],
        Some("-D missing_docs -D warnings"),
    )?;
    run(&["test", "--doc", "--quiet"], None)?;
    Ok("every library crate: docs complete, doctests pass".to_owned())
}

/// The `example` step: the provisioner program under `examples/provisioner` (the one README's
/// "Use kiln from Rust" shows) builds and runs against the generated fixtures: two golden builds
/// on two threads, a cancelled third, a cluster made in code. It asserts its own outcomes.
fn example() -> Result<String> {
    crate::fixtures::ensure(false)?;
    let out = root().join("target/example-provisioner");
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    let fixtures = crate::fixtures::dir();
    let status = Command::new(env!("CARGO"))
        .current_dir(root())
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "kiln-example-provisioner",
            "--",
        ])
        .arg(&fixtures)
        .arg(&out)
        .status()
        .context("running the example provisioner")?;
    if !status.success() {
        bail!("the example provisioner failed ({status})");
    }
    Ok("2 builds on 2 threads, 1 cancelled, a 3-node cluster: as asserted".to_owned())
}

/// The fuzz crate has its own lock (cargo-fuzz wants it outside the workspace); its versions of the
/// packages the workspace also uses must be the workspace's, or the fuzzers test other code.
fn fuzz_build() -> Result<String> {
    let main = lock_versions(&root().join("Cargo.lock"))?;
    let fuzz = lock_versions(&root().join("fuzz/Cargo.lock"))?;
    let drift: Vec<String> = fuzz
        .iter()
        .filter(|(name, vs)| {
            main.get(*name)
                .is_some_and(|m| vs.iter().any(|v| !m.contains(v)))
        })
        .map(|(name, vs)| format!("{name} {vs:?} (workspace: {:?})", main[name]))
        .collect();
    if !drift.is_empty() {
        bail!(
            "fuzz/Cargo.lock has drifted from Cargo.lock: {}; run `cargo xtask fuzz-lock`",
            drift.join(", ")
        );
    }
    let status = Command::new(env!("CARGO"))
        .current_dir(root().join("fuzz"))
        .env("CARGO_TARGET_DIR", root().join("target/fuzz"))
        .args(["build", "--locked", "--quiet", "--bins"])
        .status()
        .context("running cargo build in fuzz/")?;
    if !status.success() {
        bail!("building the fuzz targets failed ({status})");
    }
    Ok("fuzz targets build; fuzz/Cargo.lock agrees with Cargo.lock".to_owned())
}

/// `name → sorted versions` of a Cargo.lock.
pub fn lock_versions(
    path: &std::path::Path,
) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut name = None;
    for line in text.lines() {
        if line == "[[package]]" {
            name = None;
        } else if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_owned());
        } else if let Some(v) = line.strip_prefix("version = ")
            && let Some(n) = name.take()
        {
            out.entry(n)
                .or_default()
                .push(v.trim_matches('"').to_owned());
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    Ok(out)
}

/// Runs the suite, showing its output as it comes, and returns nextest's summary line.
fn nextest() -> Result<String> {
    let mut child = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["nextest", "run", "--workspace", "--no-fail-fast"])
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo nextest")?;
    let mut summary = String::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines() {
            let line = line.unwrap_or_default();
            eprintln!("{line}");
            if line.contains(" tests run: ") {
                summary = line.trim().to_owned();
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("the test suite failed ({status}): {summary}");
    }
    // "Summary [  60.1s] 183 tests run: 183 passed, 0 skipped" → "tests: 183 passed, 0 failed, 0 skipped".
    let count = |word: &str| -> u64 {
        summary
            .split([',', ':'])
            .find_map(|part| {
                let w: Vec<&str> = part.split_whitespace().collect();
                (w.get(1) == Some(&word))
                    .then(|| w[0].parse().ok())
                    .flatten()
            })
            .unwrap_or(0)
    };
    Ok(format!(
        "tests: {} passed, {} failed, {} skipped",
        count("passed"),
        count("failed"),
        count("skipped")
    ))
}

/// `cargo xtask fuzz-lock`: make `fuzz/Cargo.lock` agree with `Cargo.lock` — start from the
/// workspace's lock and let cargo add the fuzz-only packages and drop the rest.
pub fn fuzz_lock() -> Result<()> {
    std::fs::copy(root().join("Cargo.lock"), root().join("fuzz/Cargo.lock"))
        .context("copying Cargo.lock to fuzz/")?;
    let status = Command::new(env!("CARGO"))
        .current_dir(root().join("fuzz"))
        .args(["metadata", "--format-version", "1", "--quiet"])
        .stdout(Stdio::null())
        .status()
        .context("running cargo metadata in fuzz/")?;
    if !status.success() {
        bail!("cargo metadata in fuzz/ failed ({status})");
    }
    println!("fuzz/Cargo.lock now agrees with Cargo.lock");
    Ok(())
}
