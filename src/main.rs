//! `kiln`: the command-line face of the kiln libraries. This crate is glue only: it parses arguments,
//! validates them, calls one library function per verb and prints the result. Only this crate (and
//! xtask) knows clap and anyhow.

mod cmd;
mod exit;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}
