//! `kiln cat IMAGE:/path`: write a file from inside an image to stdout, without mounting it.

use std::io::Write;

use clap::Args;

use super::guest::{FsArgs, GuestSpec, spec_parser, with_fs};
use crate::exit::{CmdResult, OrExit};

#[derive(Debug, Args)]
pub struct CatArgs {
    /// IMAGE:/path of a regular file (symlinks are followed inside the guest).
    #[arg(value_parser = spec_parser(), value_name = "IMAGE:/PATH")]
    target: GuestSpec,
    #[command(flatten)]
    fs: FsArgs,
}

pub fn run(args: CatArgs) -> CmdResult {
    let mut out = std::io::stdout().lock();
    with_fs(&args.target, &args.fs, |fs| {
        fs.read_to(&args.target.path, &mut out).or_exit()?;
        Ok(())
    })?;
    out.flush()?;
    Ok(())
}
