//! `kiln`: the command-line face of the kiln libraries. This crate is glue only: it parses arguments,
//! validates them, calls one library function per verb and prints the result. Only this crate (and
//! xtask) knows clap and anyhow.

/// `println!` that hands a write error back with `?` instead of panicking: a closed stdout
/// (`kiln … | head`) then ends the run quietly with exit 0 in `Failure::report`.
macro_rules! outln {
    () => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock())?
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod cmd;
mod exit;
mod signals;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // First, so that the window in which a signal finds no handler is as short as it can be.
    let signals = match signals::Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiln: error: installing the SIGINT/SIGTERM handlers: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let cli = cmd::Cli::parse();
    match cmd::run(cli, &signals) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => failure.report(signals.received()),
    }
}
