//! `kiln cluster CLUSTER.yaml --golden GOLDEN.qcow2 -o DIR [--recreate-disks] [--json]`: every node's
//! qcow2 overlay (backed by GOLDEN, relative name) and NoCloud seed ISO, plus `DIR/inventory.json`.
//! For a spec with `cluster.boot: sd_card` (Raspberry Pis), one flashable raw image per node
//! instead, `<node>.img`: the golden image with the node's seed in its `system-boot` partition.
//!
//! The spec and the golden image are checked before the token file is read or created, and the whole
//! plan before the first output is written. The token is never printed. Files of nodes no longer in
//! the spec (and other `*.qcow2` / `*-seed.iso` no node owns) are left in place and reported: one
//! `left in place …` line per node in the table, `leftovers` in `--json`; the exit code stays 0.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use kiln_cluster::{Cancel, Leftover, Options, Report, Status};
use kiln_nocloud::{ClusterSpec, Token};

use kiln_golden::lock::{self, Lock, LockedOutput};

use super::image_args::OpenArgs;
use super::lock::LockArgs;
use crate::exit::{CmdResult, InputErr, OrExit};

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The cluster spec (YAML).
    spec: PathBuf,
    /// The golden image every node's overlay is backed by (qcow2); for `boot: sd_card`, the
    /// image each node's SD-card image is copied from (raw or qcow2).
    #[arg(long, value_name = "GOLDEN")]
    golden: PathBuf,
    /// The cluster directory (created if missing): `<node>.qcow2`, `<node>-seed.iso` (or
    /// `<node>.img` for `boot: sd_card`), `inventory.json`.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    out: PathBuf,
    /// Replace overlays that no longer match (golden changed, size or backing differ). They may hold
    /// a booted node's data: without this flag kiln refuses.
    #[arg(long)]
    recreate_disks: bool,
    /// Print the report (inventory, every file's status, files left in place) as JSON instead of a
    /// table.
    #[arg(long)]
    json: bool,
    /// The cluster token file, in place of the spec's `cluster.k3s.token_file` (e.g. a secret
    /// mounted by CI). Created 0600 when missing, like the spec's.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    open: OpenArgs,
    #[command(flatten)]
    lock: LockArgs,
}

pub fn run(args: ClusterArgs, cancel: Cancel) -> CmdResult {
    let epoch = super::seed::source_date_epoch()?;
    let expected = args.lock.preload(&args.spec)?;
    let mut spec = ClusterSpec::load(&args.spec).or_exit()?;
    if let Some(t) = &args.token_file {
        spec.cluster.k3s.token_file = Some(
            std::path::absolute(t)
                .with_context(|| format!("--token-file {}", t.display()))
                .input_err()?,
        );
    }
    let opts = Options::new(epoch)
        .with_recreate_disks(args.recreate_disks)
        .with_golden_open(args.open.options())
        .with_cancel(cancel);
    // Spec, golden image and disk sizes are checked before the token file may be created.
    kiln_cluster::preflight(&spec, &args.golden, &opts).or_exit()?;
    opts.cancel
        .check()
        .map_err(kiln_cluster::Error::from)
        .or_exit()?;
    let token_file = super::seed::token_path(&spec, ", or pass --token-file FILE")?;
    let token = Token::load_or_create(&token_file).or_exit()?;
    let report = kiln_cluster::build(&spec, &token, &args.golden, &args.out, &opts).or_exit()?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report)?;
    }
    if args.lock.wanted() {
        let actual = |parts: bool| -> anyhow::Result<Lock> {
            let seeds = if parts {
                kiln_nocloud::render_all(&spec, &token)?
            } else {
                Vec::new()
            };
            let mut l = Lock::default();
            for f in &report.files {
                let mut rec = LockedOutput {
                    sha256: lock::file_sha256(&args.out.join(&f.path))?,
                    parts: Default::default(),
                };
                if let Some(seed) = seeds.iter().find(|s| {
                    matches!(
                        f.kind,
                        kiln_cluster::FileKind::Seed | kiln_cluster::FileKind::SdCard
                    ) && f.node.as_deref() == Some(&s.node)
                }) {
                    let docs = [
                        ("meta-data", Some(&seed.meta_data)),
                        ("network-config", Some(&seed.network_config)),
                        ("user-data", Some(&seed.user_data)),
                        ("vendor-data", seed.vendor_data.as_ref()),
                    ];
                    for (name, data) in docs {
                        if let Some(d) = data {
                            rec.parts.insert(name.to_owned(), lock::document_part(d));
                        }
                    }
                }
                l.outputs.insert(f.path.clone(), rec);
            }
            Ok(l)
        };
        args.lock.finish(
            ("cluster", &args.spec),
            "each seed's documents are listed under it, for explanations",
            expected,
            actual,
            args.json,
        )?;
    }
    drop(token);
    Ok(())
}

fn print_table(report: &Report) -> std::io::Result<()> {
    let status = |path: &str| report.status_of(path).map_or("?", Status::as_str);
    let mut rows = vec![[
        "NODE".to_owned(),
        "ROLE".into(),
        "IPV4".into(),
        "MAC".into(),
        "DISK".into(),
        "SEED".into(),
        "STATUS".into(),
    ]];
    for n in &report.inventory.nodes {
        rows.push([
            n.info.name.clone(),
            n.info.role.as_str().into(),
            n.info.ipv4.to_string(),
            n.info.mac.map_or_else(|| "-".into(), |m| m.to_string()),
            n.disk.path.clone(),
            match &n.seed.partition {
                Some(part) => format!("{}:{part}", n.seed.path),
                None => n.seed.path.clone(),
            },
            if n.seed.partition.is_some() {
                format!("image {}", status(&n.disk.path))
            } else {
                format!(
                    "disk {}, seed {}",
                    status(&n.disk.path),
                    status(&n.seed.path)
                )
            },
        ]);
    }
    let mut widths = [0usize; 7];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        outln!("{}", line.join("  ").trim_end());
    }
    outln!(
        "{}: {} (golden {}, sha256 {})",
        report.out_dir.join(kiln_cluster::INVENTORY_FILE).display(),
        status(kiln_cluster::INVENTORY_FILE),
        report.inventory.golden.path,
        &report.inventory.golden.sha256
    );
    for line in leftover_lines(&report.leftovers) {
        outln!("{line}");
    }
    Ok(())
}

/// One line per node whose files were left in place (in report order), then one for the files no
/// inventory attributes to a node.
fn leftover_lines(leftovers: &[Leftover]) -> Vec<String> {
    let mut groups: Vec<(Option<&str>, Vec<&str>)> = Vec::new();
    for l in leftovers {
        let node = l.node.as_deref();
        match groups.iter_mut().find(|(n, _)| *n == node) {
            Some((_, files)) => files.push(&l.path),
            None => groups.push((node, vec![&l.path])),
        }
    }
    groups.sort_by_key(|(node, _)| node.is_none());
    groups
        .into_iter()
        .map(|(node, files)| {
            let why = match node {
                Some(_) => "no longer in the spec",
                None => "no node in the spec owns them",
            };
            format!("left in place ({why}): {}", files.join(", "))
        })
        .collect()
}
