//! `kiln diff A B [--json]`: file-level differences between the root filesystems of two images —
//! added, removed, changed content, changed metadata — for golden-image reproducibility checks.

use std::path::PathBuf;

use clap::Args;

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
        outln!("{d}");
    }
    eprintln!("{} difference(s)", diffs.len());
    Ok(())
}
