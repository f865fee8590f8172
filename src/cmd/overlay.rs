//! `kiln overlay BASE OUT [--size 80G]`: a new qcow2 overlay backed by BASE (backing name stored
//! relative to OUT's directory).

use std::path::PathBuf;

use clap::Args;

use super::args::{human_size, parse_size};
use super::image_args::OpenArgs;
use crate::exit::{CmdResult, Failure, OrExit};

#[derive(Debug, Args)]
pub struct OverlayArgs {
    /// The backing image (qcow2 or raw).
    base: PathBuf,
    /// The overlay to create (must not exist).
    out: PathBuf,
    /// Virtual size of the overlay (default: the base's); may exceed the base. Rounded up to 512 bytes.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    #[command(flatten)]
    open: OpenArgs,
}

pub fn run(args: OverlayArgs) -> CmdResult {
    if args.out.exists() {
        return Err(Failure::input(anyhow::anyhow!(
            "{} already exists; remove it or choose another name (kiln never overwrites an overlay)",
            args.out.display()
        )));
    }
    let size = args.size.map(|s| s.div_ceil(512) * 512);
    let pending =
        kiln_qcow2::begin_overlay(&args.out, &args.base, size, &args.open.options()).or_exit()?;
    let vs = pending.image().header().size;
    let backing = pending
        .image()
        .header()
        .backing_file
        .clone()
        .unwrap_or_default();
    pending.commit()?;
    eprintln!(
        "created {} ({}, backing file {backing})",
        args.out.display(),
        human_size(vs)
    );
    Ok(())
}
