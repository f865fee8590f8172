//! `cargo xtask build-image [RECIPE]`: the main job, on a fresh machine.
//!
//! With a lock beside the recipe (the committed recipe and cluster spec have one) the outputs are
//! checked against it (`--locked`, the default then); `--update-lock` rewrites the locks,
//! `--no-lock` skips them.
//!
//! 1. builds kiln (release) and makes the fixtures if they are missing (`cargo xtask fixtures`);
//! 2. builds the golden image from RECIPE (default `recipes/k3s-node-ubuntu-24.04.yaml`);
//! 3. `kiln cluster` for `recipes/clusters/libvirt-3node.yaml` into `out/cluster`: for every node a
//!    NoCloud seed ISO and a qcow2 overlay backed by the golden image (sized as the spec says), and
//!    `inventory.json`; a second run must leave every file unchanged;
//! 4. checks every image with `qemu-img check` and the golden image against its manifest
//!    (`kiln verify`);
//! 5. rebuilds everything in another directory and compares every file's sha256;
//! 6. prints a summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::util::{root, run, s};

/// The cluster token `build-image` uses: fixed, so that the seeds can be locked. It guards nothing
/// (the lab cluster is never started from these outputs); real clusters use their own token file.
const LAB_TOKEN: &str = "kiln-build-image-lab-token-0123456789abcdef-not-a-secret\n";

/// How `build-image` treats the committed locks (`recipes/*.lock`, `recipes/clusters/*.lock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockMode {
    None,
    Check,
    Update,
}

pub fn run_task(args: &[String]) -> Result<()> {
    let mut mode = None;
    let mut recipe = None;
    for a in args {
        match a.as_str() {
            "--locked" => mode = Some(LockMode::Check),
            "--update-lock" => mode = Some(LockMode::Update),
            "--no-lock" => mode = Some(LockMode::None),
            x if x.starts_with('-') => bail!(
                "usage: cargo xtask build-image [--locked | --update-lock | --no-lock] [RECIPE] (got {x:?})"
            ),
            x => recipe = Some(PathBuf::from(x)),
        }
    }
    let recipe = recipe.unwrap_or_else(|| root().join("recipes/k3s-node-ubuntu-24.04.yaml"));
    // Checked against its lock whenever the recipe has one (the committed recipe does).
    let mode = mode.unwrap_or(if recipe.with_extension("lock").exists() {
        LockMode::Check
    } else {
        LockMode::None
    });
    match mode {
        LockMode::Check => println!(
            "checking the outputs against {} and the cluster spec's lock",
            recipe.with_extension("lock").display()
        ),
        LockMode::None => println!("no lock checked (none for this recipe, or --no-lock)"),
        LockMode::Update => println!("rewriting the locks from this build"),
    }
    let cluster = root().join("recipes/clusters/libvirt-3node.yaml");
    let kiln = crate::util::build_kiln()?;
    crate::fixtures::ensure(false)?;
    let token = crate::fixtures::dir().join("lab-token");
    if std::fs::read_to_string(&token).ok().as_deref() != Some(LAB_TOKEN) {
        std::fs::write(&token, LAB_TOKEN)?;
    }
    let recipe = if mode == LockMode::Check {
        pinned_or_explained(&recipe)?
    } else {
        recipe
    };
    let stand_in_lock = recipe_lock(&recipe);
    let ctx = Ctx {
        kiln: &kiln,
        recipe: &recipe,
        cluster: &cluster,
        token: &token,
        lock_flag: match mode {
            LockMode::None => None,
            LockMode::Check => Some("--locked"),
            LockMode::Update => Some("--update-lock"),
        },
        lock: stand_in_lock.as_deref(),
    };

    let first_dir = root().join("out");
    let second_dir = root().join("target/build-image-rebuild");
    let t = Instant::now();
    let first = build_all(&ctx, &first_dir);
    if let (Err(e), Some(t)) = (&first, &ctx.pin_note()) {
        bail!("{e:#}\n{t}");
    }
    let first = first?;
    let first_secs = t.elapsed().as_secs_f64();
    println!(
        "rebuilding in {} to check reproducibility…",
        second_dir.display()
    );
    let second = build_all(
        &Ctx {
            lock_flag: None,
            ..ctx
        },
        &second_dir,
    )?;

    println!();
    println!("| file | size | sha256 | rebuild |");
    println!("|---|---:|---|---|");
    let mut differ = Vec::new();
    for (name, (size, sha)) in &first {
        let same = second.get(name).map(|(_, s2)| s2 == sha).unwrap_or(false);
        if !same {
            differ.push(name.clone());
        }
        println!(
            "| {name} | {size} | {} | {} |",
            &sha[..16],
            if same { "identical" } else { "DIFFERS" }
        );
    }
    for name in second.keys().filter(|n| !first.contains_key(*n)) {
        differ.push(name.clone());
    }
    println!(
        "\nfirst build: {first_secs:.2} s (golden image, {} node seeds and overlays) in {}",
        node_count(&first),
        first_dir.display()
    );
    if !differ.is_empty() {
        bail!("the rebuild differs in: {}", differ.join(", "));
    }
    println!("rebuild: every file identical");
    Ok(())
}

fn node_count(files: &BTreeMap<String, (u64, String)>) -> usize {
    files.keys().filter(|k| k.ends_with("-seed.iso")).count()
}

/// What one `build_all` needs.
#[derive(Debug, Clone, Copy)]
struct Ctx<'a> {
    kiln: &'a Path,
    recipe: &'a Path,
    cluster: &'a Path,
    token: &'a Path,
    /// `--locked` / `--update-lock`, passed to `kiln build` and `kiln cluster`.
    lock_flag: Option<&'static str>,
    /// The recipe's lock, when the recipe is a stand-in for a committed one (see
    /// [`pinned_or_explained`]).
    lock: Option<&'a Path>,
}

impl Ctx<'_> {
    fn pin_note(&self) -> Option<String> {
        self.lock.map(|_| {
            "The generated base image no longer has the sha256 the recipe pins: the fixtures changed \
             (see the file-level differences above). If that is intended, update the pin in the recipe \
             and run `cargo xtask build-image --update-lock`."
                .to_owned()
        })
    }
}

/// The committed recipe's lock, when `recipe` is a stand-in written by [`pinned_or_explained`].
fn recipe_lock(recipe: &Path) -> Option<PathBuf> {
    recipe.starts_with(root().join("target")).then(|| {
        root().join("recipes").join(
            recipe
                .with_extension("lock")
                .file_name()
                .unwrap_or_default(),
        )
    })
}

/// With `--locked`: when the generated base no longer matches the recipe's pin, `kiln build` would
/// stop at the pin (exit 2) and say nothing about *what* changed. Build instead from a copy of the
/// recipe pinned to the base as generated (paths made absolute), so that `--locked` explains the
/// difference file by file against the committed lock — and then fail all the same.
fn pinned_or_explained(recipe: &Path) -> Result<PathBuf> {
    let r = kiln_golden::Recipe::load(recipe).map_err(|e| anyhow::anyhow!("{e}"))?;
    let base = r.resolve(&r.base.path);
    let actual = kiln_fixtures::sha256_of(&base)
        .with_context(|| format!("hashing the base {}", base.display()))?;
    if actual == r.base.sha256 {
        return Ok(recipe.to_owned());
    }
    println!(
        "the base {} has sha256 {actual}, the recipe pins {}: building from it anyway to explain the difference",
        base.display(),
        r.base.sha256
    );
    let dir = recipe.parent().unwrap_or(Path::new("."));
    let text = std::fs::read_to_string(recipe)?
        .replace(&r.base.sha256, &actual)
        .replace("../", &format!("{}/", dir.join("..").display()));
    let stand_in = root()
        .join("target/build-image-pin")
        .join(recipe.file_name().unwrap_or_default());
    std::fs::create_dir_all(stand_in.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&stand_in, text)?;
    Ok(stand_in)
}

/// Build the golden image and the cluster directory (seeds, overlays, inventory) into `out`; return every file's size and sha256.
fn build_all(ctx: &Ctx<'_>, out: &Path) -> Result<BTreeMap<String, (u64, String)>> {
    let kiln = ctx.kiln;
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(out)?;
    let mut build = Command::new(kiln);
    build.args(["build", s(ctx.recipe), "-o", s(out)]);
    if let Some(flag) = ctx.lock_flag {
        build.arg(flag);
        if let Some(lock) = ctx.lock {
            build.arg("--lock").arg(lock);
        }
    }
    run(&mut build)?;
    let golden = std::fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "qcow2"))
        .context("kiln build wrote no .qcow2")?;
    qemu_img(&["check", s(&golden)])?;
    run(Command::new(kiln).args(["verify", s(&golden)]))?;

    // Every node's overlay + seed ISO + inventory.json, in one call.
    let nodes_dir = out.join("cluster");
    // A fixed epoch and token: the seeds are locked.
    let mut cluster_cmd = Command::new(kiln);
    cluster_cmd.env("SOURCE_DATE_EPOCH", "1700000000").args([
        "cluster",
        s(ctx.cluster),
        "--token-file",
        s(ctx.token),
        "--golden",
        s(&golden),
        "-o",
        s(&nodes_dir),
    ]);
    if let Some(flag) = ctx.lock_flag {
        cluster_cmd.arg(flag);
    }
    print!("{}", run(&mut cluster_cmd)?);
    let spec = kiln_nocloud::ClusterSpec::load(ctx.cluster).map_err(|e| anyhow::anyhow!("{e}"))?;
    for node in &spec.nodes {
        let overlay = nodes_dir.join(format!("{}.qcow2", node.name));
        qemu_img(&["check", s(&overlay)])?;
        let info = qemu_img(&["info", s(&overlay)])?;
        let golden_name = golden.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(info) = info
            && !info.contains(&format!("backing file: ../{golden_name}"))
        {
            bail!(
                "{}: backing file is not ../{golden_name}:\n{info}",
                overlay.display()
            );
        }
    }
    // A second run must leave every file as it is.
    let again = run(&mut cluster_cmd)?;
    if again.contains("created") || again.contains("updated") {
        bail!("kiln cluster is not idempotent; the second run reported:\n{again}");
    }
    hash_tree(out)
}

/// `qemu-img ARGS` — an independent oracle, not something the main job needs: where it is not
/// installed the check is skipped, saying so (once), never passed silently.
fn qemu_img(args: &[&str]) -> Result<Option<String>> {
    static SAID: std::sync::Once = std::sync::Once::new();
    match Command::new("qemu-img").arg("--version").output() {
        Ok(o) if o.status.success() => run(Command::new("qemu-img").args(args)).map(Some),
        _ => {
            SAID.call_once(|| {
                println!(
                    "note: qemu-img is not installed (Debian package qemu-utils): the `qemu-img check` \
                     and `qemu-img info` oracle checks of the outputs are SKIPPED; kiln verify still runs"
                );
            });
            Ok(None)
        }
    }
}

fn hash_tree(dir: &Path) -> Result<BTreeMap<String, (u64, String)>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
                let sha = kiln_fixtures::sha256_of(&p)?;
                out.insert(rel, (std::fs::metadata(&p)?.len(), sha));
            }
        }
    }
    Ok(out)
}
