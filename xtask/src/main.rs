//! `cargo xtask <task>`: kiln's developer tasks, one small binary (see matklad/cargo-xtask).

use anyhow::{Result, bail};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  help          this text";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task {other:?}\n\n{USAGE}"),
    }
}
