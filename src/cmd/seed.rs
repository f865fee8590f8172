//! `kiln seed CLUSTER.yaml -o DIR [--format iso|vfat|dir] [--json]`: one NoCloud seed per node.
//!
//! Everything is validated and rendered before the first file is written; the token is never
//! printed (the summary carries node, role, addresses, instance-id, path and sha256 only).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use kiln_nocloud::{ClusterSpec, SeedFormat, Token};
use serde::Serialize;

use crate::exit::{CmdResult, Failure, InputErr, OrExit};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Iso,
    Vfat,
    Dir,
}

impl From<FormatArg> for SeedFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Iso => SeedFormat::Iso,
            FormatArg::Vfat => SeedFormat::Vfat,
            FormatArg::Dir => SeedFormat::Dir,
        }
    }
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// The cluster spec (YAML).
    spec: PathBuf,
    /// Output directory (created if missing); gets `<node>-seed.iso` (or `.img`, or a directory).
    #[arg(short = 'o', long = "output")]
    out: PathBuf,
    /// Seed container.
    #[arg(long, value_enum, default_value = "iso")]
    format: FormatArg,
    /// Print a JSON summary on stdout instead of one line per node.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Summary {
    cluster: String,
    format: &'static str,
    source_date_epoch: u64,
    nodes: Vec<NodeSummary>,
}

#[derive(Debug, Serialize)]
struct NodeSummary {
    node: String,
    role: &'static str,
    addresses: Vec<String>,
    instance_id: String,
    path: PathBuf,
    sha256: String,
}

pub(super) fn source_date_epoch() -> Result<u64, Failure> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(0),
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .with_context(|| format!("SOURCE_DATE_EPOCH {s:?} is not a number of seconds"))
            .input_err(),
    }
}

/// The spec's token file; a spec made for library use may name none, which the CLI cannot work
/// without (`hint` names the command's own way to give one).
pub fn token_path(spec: &ClusterSpec, hint: &str) -> Result<std::path::PathBuf, Failure> {
    spec.token_path()
        .with_context(|| {
            format!("the cluster spec names no cluster.k3s.token_file: add one to the spec{hint}")
        })
        .input_err()
}

pub fn run(args: SeedArgs) -> CmdResult {
    let epoch = source_date_epoch()?;
    let spec = ClusterSpec::load(&args.spec).or_exit()?;
    spec.validate().or_exit()?;
    let token = Token::load_or_create(&token_path(&spec, "")?).or_exit()?;
    let seeds = kiln_nocloud::render_all(&spec, &token)?;
    drop(token);

    let format = SeedFormat::from(args.format);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating output directory {}", args.out.display()))?;
    let mut nodes = Vec::with_capacity(seeds.len());
    for seed in &seeds {
        let path = args.out.join(format.file_name(&seed.node));
        let digest = kiln_nocloud::write_seed(seed, format, epoch, &path)?;
        let node = spec
            .node(&seed.node)
            .context("rendered node missing from the spec")?;
        let mut addresses = vec![node.ipv4.to_string()];
        addresses.extend(node.ipv6.iter().map(ToString::to_string));
        nodes.push(NodeSummary {
            node: seed.node.clone(),
            role: seed.role.as_str(),
            addresses,
            instance_id: seed.instance_id.clone(),
            path,
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        });
    }
    if args.json {
        let summary = Summary {
            cluster: spec.cluster.name.clone(),
            format: format.as_str(),
            source_date_epoch: epoch,
            nodes,
        };
        outln!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        for n in &nodes {
            outln!(
                "{}\t{}\t{}\t{}\t{}",
                n.node,
                n.role,
                n.addresses.join(","),
                n.instance_id,
                display(&n.path)
            );
        }
    }
    Ok(())
}

fn display(p: &Path) -> std::path::Display<'_> {
    p.display()
}
