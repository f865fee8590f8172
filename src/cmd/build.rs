//! `kiln build RECIPE [-o DIR] [--json]`: the golden image — base + scrub + k3s + prerequisites —
//! as `<name>.qcow2` and `<name>.manifest.json` in DIR, reproducibly, without a VM.

use std::path::PathBuf;

use clap::Args;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_golden::{BuildOptions, Cancel, Step, StepEvent, build_file};

use kiln_golden::lock::{self, Lock, LockedOutput};

use super::lock::LockArgs;
use crate::exit::{CmdResult, OrExit};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The recipe (YAML): base image + sha256 pin, arch, output, scrub ops, k3s, prerequisites.
    recipe: PathBuf,
    /// Output directory (created if missing).
    #[arg(short, long, default_value = ".")]
    out: PathBuf,
    /// Print a JSON report (steps with what they changed and their durations, output hashes).
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    lock: LockArgs,
}

pub fn run(args: BuildArgs, cancel: Cancel) -> CmdResult {
    let expected = args.lock.preload(&args.recipe)?;
    // Each step is PER_STEP units of the bar; the long ones move it byte by byte.
    const PER_STEP: u64 = 1000;
    let bar = ProgressBar::with_draw_target(
        Some(Step::ALL.len() as u64 * PER_STEP),
        if args.quiet || args.json {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("build [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let show = !args.quiet && !args.json;
    let progress_bar = bar.clone();
    let index = |step: Step| Step::ALL.iter().position(|s| *s == step).unwrap_or(0) as u64;
    let label = move |step: Step| format!("{}/{} {step}", index(step) + 1, Step::ALL.len());
    let progress = move |ev: StepEvent<'_>| match ev {
        StepEvent::Start(step) => {
            progress_bar.set_position(index(step) * PER_STEP);
            progress_bar.set_message(label(step));
        }
        StepEvent::Bytes { step, done, total } => {
            let part = (done.min(total) * PER_STEP).checked_div(total).unwrap_or(0);
            progress_bar.set_position(index(step) * PER_STEP + part);
            progress_bar.set_message(format!(
                "{} {}/{}",
                label(step),
                HumanBytes(done),
                HumanBytes(total)
            ));
        }
        StepEvent::Done(r) => {
            let i = Step::ALL.iter().position(|s| *s == r.name).unwrap_or(0) as u64;
            progress_bar.set_position((i + 1) * PER_STEP);
            if show {
                let line = format!("{:>16} {:>6} ms  {}", r.name, r.millis, r.summary);
                if progress_bar.is_hidden() {
                    eprintln!("{line}");
                } else {
                    progress_bar.println(line);
                }
            }
        }
        _ => {}
    };
    let opts = BuildOptions::new(&args.out)
        .with_progress(std::sync::Arc::new(progress))
        .with_cancel(cancel);
    let out = build_file(&args.recipe, &opts).or_exit()?;
    bar.finish_and_clear();
    let total: u64 = out.steps.iter().map(|s| s.millis).sum();
    if args.json {
        let report = serde_json::json!({
            "image": out.image,
            "manifest": out.manifest_path,
            "sha256": out.manifest.output.sha256,
            "size": out.manifest.output.size,
            "virtual_size": out.manifest.output.virtual_size,
            "millis": total,
            "steps": out.steps,
        });
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!(
            "built {} (sha256 {}) and {} in {:.2} s",
            out.image.display(),
            out.manifest.output.sha256,
            out.manifest_path.display(),
            total as f64 / 1000.0
        );
    }
    if args.lock.wanted() {
        let actual = |parts: bool| -> anyhow::Result<Lock> {
            let mut l = Lock::default();
            let image = LockedOutput {
                sha256: out.manifest.output.sha256.clone(),
                parts: if parts {
                    lock::image_parts(&out.image)?
                } else {
                    Default::default()
                },
            };
            let manifest = LockedOutput {
                sha256: lock::file_sha256(&out.manifest_path)?,
                parts: Default::default(),
            };
            l.outputs.insert(lock::file_name(&out.image), image);
            l.outputs
                .insert(lock::file_name(&out.manifest_path), manifest);
            Ok(l)
        };
        args.lock.finish(
            ("build", &args.recipe),
            "the golden image's root filesystem is listed under it, for file-level explanations",
            expected,
            actual,
            args.json,
        )?;
    }
    Ok(())
}
