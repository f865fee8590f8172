//! `cargo xtask <task>`: kiln's developer tasks, one small binary (see matklad/cargo-xtask).

mod apt;
mod bench;
mod build_image;
mod e2e;
mod fixtures;
mod repro;
mod setup;
mod test;
mod tidy;
mod util;

use anyhow::{Result, bail};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  test [--skip STEP]… [--only STEP]…  README's test command (what CI runs): install what is missing,
                    fmt, clippy, docs + doctests, fuzz build, the suite, build-image --locked, example, e2e,
                    Debian 13 rebuild
  build-image [RECIPE]  fixtures → golden image → 3 nodes' seeds and overlays → rebuild and compare
  e2e [--rebuild-base] [--base-only]  boot 3 clusters (3-node, HA, dual-stack) from kiln's outputs under QEMU on
                    private segments; real cloud-init judges each node, the first server's k3s the cluster
  bench [--quick]   measure kiln against qemu-img / qemu-io side by side, print ratios
  fixtures [--force]  generate the Ubuntu-like base image and stand-in k3s assets in target/fixtures/
  fuzz-lock         make fuzz/Cargo.lock agree with Cargo.lock
  help              this text";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some("build-image") => build_image::run_task(&args[1..]),
        Some("e2e") => e2e::run_task(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("fixtures") => fixtures::run(&args[1..]),
        Some("test") => test::run_task(&args[1..]),
        Some("fuzz-lock") => test::fuzz_lock(),
        Some(other) => bail!("unknown task {other:?}\n\n{USAGE}"),
    }
}
