//! `kiln verify IMAGE --manifest M [--json]`: re-read every injected file (content sha256, size,
//! mode, owner, symlink target), check every scrubbed path and the image's sha256 against the
//! manifest `kiln build` wrote. Exit 0 = verified, 1 = mismatches (listed), 2 = unreadable input.

use std::path::PathBuf;

use clap::Args;

use crate::exit::{CmdResult, OrExit};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The image `kiln build` produced.
    image: PathBuf,
    /// Its manifest (default: `<image stem>.manifest.json` beside it).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: VerifyArgs) -> CmdResult {
    let manifest = args.manifest.clone().unwrap_or_else(|| {
        let stem = args
            .image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        args.image.with_file_name(format!("{stem}.manifest.json"))
    });
    let rep = kiln_golden::verify(&args.image, &manifest).or_exit()?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        for p in &rep.problems {
            outln!("MISMATCH {p}");
        }
    }
    if rep.ok() {
        if !args.json {
            eprintln!(
                "verified {} against {}: sha256 {}, {} injected and {} scrubbed paths as recorded",
                args.image.display(),
                manifest.display(),
                rep.image_sha256,
                rep.injected,
                rep.scrubbed
            );
        }
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{} does not match {}: {} mismatch(es)",
            args.image.display(),
            manifest.display(),
            rep.problems.len()
        )
        .into())
    }
}
