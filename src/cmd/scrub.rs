//! `kiln scrub --list`: the scrub-op catalog a recipe selects from (`scrub.enable` / `scrub.disable`).

use clap::Args;

use crate::exit::{CmdResult, Failure};

#[derive(Debug, Args)]
pub struct ScrubArgs {
    /// Print the catalog: name, whether it runs by default, what it does.
    #[arg(long)]
    list: bool,
    /// Print the catalog as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ScrubArgs) -> CmdResult {
    if !args.list && !args.json {
        return Err(Failure::input(anyhow::anyhow!(
            "scrub ops run as part of `kiln build RECIPE`; use `kiln scrub --list` to see them"
        )));
    }
    let ops = kiln_golden::CATALOG;
    if args.json {
        let v: Vec<_> = ops
            .iter()
            .map(|o| serde_json::json!({ "name": o.name, "default": o.default, "summary": o.summary }))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let width = ops.iter().map(|o| o.name.len()).max().unwrap_or(0);
    for o in ops {
        let on = if o.default { "default" } else { "opt-in " };
        outln!("{:width$}  {on}  {}", o.name, o.summary);
    }
    Ok(())
}
