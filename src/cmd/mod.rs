//! One module per verb. Each parses its arguments (clap), validates them, then calls the library.

use clap::{Parser, Subcommand};

use crate::exit::CmdResult;

mod seed;

/// Offline, reproducible golden VM images and per-node cloud-init seeds for k3s clusters.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a cloud-init NoCloud seed (ISO, vfat or directory) for every node of a cluster spec.
    Seed(seed::SeedArgs),
}

pub fn run(cli: Cli) -> CmdResult {
    match cli.command {
        Command::Seed(args) => seed::run(args),
    }
}
