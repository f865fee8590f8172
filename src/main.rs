//! `kiln`: the command-line face of the kiln libraries. This crate is glue only: it parses arguments,
//! validates them, calls one library function per verb and prints the result. Only this crate (and
//! xtask) knows clap and anyhow.

mod cmd;
mod exit;

use clap::Parser;

fn main() -> std::process::ExitCode {
    quiet_on_broken_pipe();
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// `kiln … | head` is not an error: once stdout's reader has gone, stop quietly with exit 0 (as
/// ripgrep does) instead of panicking inside `println!`.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}
