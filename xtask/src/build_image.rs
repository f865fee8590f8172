//! `cargo xtask build-image [RECIPE]`: the main job, on a fresh machine.
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

pub fn run_task(args: &[String]) -> Result<()> {
    let recipe = match args.first() {
        Some(r) => PathBuf::from(r),
        None => root().join("recipes/k3s-node-ubuntu-24.04.yaml"),
    };
    let cluster = root().join("recipes/clusters/libvirt-3node.yaml");
    let kiln = crate::util::build_kiln()?;
    crate::fixtures::ensure(false)?;

    let first_dir = root().join("out");
    let second_dir = root().join("target/build-image-rebuild");
    let t = Instant::now();
    let first = build_all(&kiln, &recipe, &cluster, &first_dir)?;
    let first_secs = t.elapsed().as_secs_f64();
    println!(
        "rebuilding in {} to check reproducibility…",
        second_dir.display()
    );
    let second = build_all(&kiln, &recipe, &cluster, &second_dir)?;

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

/// Build the golden image and the cluster directory (seeds, overlays, inventory) into `out`; return every file's size and sha256.
fn build_all(
    kiln: &Path,
    recipe: &Path,
    cluster: &Path,
    out: &Path,
) -> Result<BTreeMap<String, (u64, String)>> {
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(out)?;
    run(Command::new(kiln).args(["build", s(recipe), "-o", s(out)]))?;
    let golden = std::fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "qcow2"))
        .context("kiln build wrote no .qcow2")?;
    run(Command::new("qemu-img").args(["check", s(&golden)]))?;
    run(Command::new(kiln).args(["verify", s(&golden)]))?;

    // Every node's overlay + seed ISO + inventory.json, in one call.
    let nodes_dir = out.join("cluster");
    let epoch = std::env::var("SOURCE_DATE_EPOCH").unwrap_or_else(|_| "1700000000".into());
    let mut cluster_cmd = Command::new(kiln);
    cluster_cmd.env("SOURCE_DATE_EPOCH", &epoch).args([
        "cluster",
        s(cluster),
        "--golden",
        s(&golden),
        "-o",
        s(&nodes_dir),
    ]);
    print!("{}", run(&mut cluster_cmd)?);
    let spec = kiln_nocloud::ClusterSpec::load(cluster).map_err(|e| anyhow::anyhow!("{e}"))?;
    for node in &spec.nodes {
        let overlay = nodes_dir.join(format!("{}.qcow2", node.name));
        run(Command::new("qemu-img").args(["check", s(&overlay)]))?;
        let info = run(Command::new("qemu-img").args(["info", s(&overlay)]))?;
        let golden_name = golden.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !info.contains(&format!("backing file: ../{golden_name}")) {
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
                let sum = run(Command::new("sha256sum").arg(&p))?;
                let sha = sum.split_whitespace().next().unwrap_or_default().to_owned();
                out.insert(rel, (std::fs::metadata(&p)?.len(), sha));
            }
        }
    }
    Ok(out)
}
