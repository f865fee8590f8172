//! `kiln diff A B [--json]`: file-level differences between the root filesystems of two images —
//! added, removed, changed content, changed metadata — for golden-image reproducibility checks.

use std::path::PathBuf;

use clap::Args;
use kiln_golden::Difference;

use crate::exit::{CmdResult, OrExit};

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The first image (qcow2 chain or raw).
    a: PathBuf,
    /// The second image.
    b: PathBuf,
    /// Print the differences as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DiffArgs) -> CmdResult {
    let diffs = kiln_golden::diff(&args.a, &args.b).or_exit()?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&diffs)?);
        return Ok(());
    }
    for d in &diffs {
        match d {
            Difference::Added { path, kind } => outln!("+ {path} ({kind})"),
            Difference::Removed { path, kind } => outln!("- {path} ({kind})"),
            Difference::Content {
                path,
                size_a,
                size_b,
            } => outln!("M {path} (content, {size_a} -> {size_b} bytes)"),
            Difference::Metadata { path, fields } => outln!("m {path} ({})", fields.join(", ")),
        }
    }
    eprintln!("{} difference(s)", diffs.len());
    Ok(())
}
