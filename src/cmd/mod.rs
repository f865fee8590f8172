//! One module per verb. Each parses its arguments (clap), validates them, then calls the library.

use clap::{Parser, Subcommand};

use crate::exit::CmdResult;
use crate::signals::Signals;

mod args;
mod build;
mod cat;
mod cluster;
mod convert;
mod diff;
mod guest;
mod image_args;
mod inspect;
mod lock;
mod ls;
mod overlay;
mod progress;
mod scrub;
mod seed;
mod verify;

/// Offline, reproducible golden VM images and per-node cloud-init seeds for k3s clusters.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show an image's format, sizes, compression, backing chain and cluster allocation.
    Inspect(inspect::InspectArgs),
    /// List a directory inside an image (IMAGE:/path), without mounting it.
    Ls(ls::LsArgs),
    /// Print a file from inside an image (IMAGE:/path), without mounting it.
    Cat(cat::CatArgs),
    /// Create a qcow2 overlay backed by an image.
    Overlay(overlay::OverlayArgs),
    /// Flatten an image and its backing chain into one qcow2 (or raw) file.
    Convert(convert::ConvertArgs),
    /// Write a cloud-init NoCloud seed (ISO, vfat or directory) for every node of a cluster spec.
    Seed(seed::SeedArgs),
    /// Every node's qcow2 overlay (backed by a golden image) and seed ISO, plus an inventory.
    Cluster(cluster::ClusterArgs),
    /// Build a golden image (base + scrub + k3s + prerequisites) and its manifest from a recipe.
    Build(build::BuildArgs),
    /// Show the scrub-op catalog (`--list`).
    Scrub(scrub::ScrubArgs),
    /// Check a built image against its manifest (injected files, scrubbed paths, image sha256).
    Verify(verify::VerifyArgs),
    /// File-level differences between the root filesystems of two images.
    Diff(diff::DiffArgs),
}

/// Runs the verb; `build`, `cluster` and `convert` (to qcow2) route SIGINT and SIGTERM to their
/// cancel handle.
pub fn run(cli: Cli, signals: &Signals) -> CmdResult {
    match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Ls(args) => ls::run(args),
        Command::Cat(args) => cat::run(args),
        Command::Overlay(args) => overlay::run(args),
        Command::Convert(args) => convert::run(args, signals),
        Command::Seed(args) => seed::run(args),
        Command::Cluster(args) => cluster::run(args, signals.cancel()),
        Command::Build(args) => build::run(args, signals.cancel()),
        Command::Scrub(args) => scrub::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Diff(args) => diff::run(args),
    }
}
