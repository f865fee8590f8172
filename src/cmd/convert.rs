//! `kiln convert IN OUT [--compress zstd|zlib|none] [--format qcow2|raw]`: flatten an image and its
//! whole backing chain into one standalone file. SIGINT / SIGTERM stop a qcow2 conversion with
//! nothing written (exit 130 / 143); a raw export keeps the signals' default action.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use kiln_qcow2::{CompressionType, Disk, FlattenOptions};

use super::args::{human_size, parse_size};
use super::image_args::OpenArgs;
use super::progress;
use crate::exit::{CmdResult, Failure, OrExit};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Compress {
    Zstd,
    Zlib,
    None,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Qcow2,
    Raw,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The source image (qcow2 with any backing chain, or raw).
    input: PathBuf,
    /// The output file (replaced atomically when complete).
    output: PathBuf,
    /// Compression of the output's clusters.
    #[arg(long, value_enum, default_value_t = Compress::Zstd)]
    compress: Compress,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Qcow2)]
    format: Format,
    /// Output cluster size, 512 to 2M (default: the source's).
    #[arg(long, value_parser = parse_size)]
    cluster_size: Option<u64>,
    /// Recompress every cluster instead of copying already-compressed ones as they are.
    #[arg(long)]
    no_passthrough: bool,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    open: OpenArgs,
}

pub fn run(args: ConvertArgs, signals: &crate::signals::Signals) -> CmdResult {
    let cluster_bits = match args.cluster_size {
        None => None,
        Some(cs) if cs.is_power_of_two() && (512..=2 << 20).contains(&cs) => {
            Some(cs.trailing_zeros())
        }
        Some(cs) => {
            return Err(Failure::input(anyhow::anyhow!(
                "--cluster-size {cs} must be a power of two from 512 to 2M"
            )));
        }
    };
    let src = Disk::open(&args.input, &args.open.options()).or_exit()?;
    // The output must be none of the files the input reads — the top image or any backing file —
    // however it is named (symlinks, hard links, `..`): compared by device and inode.
    if let Ok(out) = std::fs::metadata(&args.output) {
        use std::os::unix::fs::MetadataExt;
        let id = (out.dev(), out.ino());
        if let Some(f) = src
            .files()
            .into_iter()
            .find(|f| std::fs::metadata(f).is_ok_and(|m| (m.dev(), m.ino()) == id))
        {
            let what = if f == src.files()[0] {
                "the input"
            } else {
                "a backing file of the input"
            };
            return Err(Failure::input(anyhow::anyhow!(
                "the output {} is {what} ({}); choose another name",
                args.output.display(),
                f.display()
            )));
        }
    }
    let bar = progress::bytes(
        "convert",
        kiln_blockdev::BlockDev::len(&src),
        args.quiet || args.json,
    );
    let report = |done: u64, _total: u64| bar.set_position(done);
    let summary = match args.format {
        Format::Raw => {
            kiln_qcow2::export_raw(&src, &args.output, &report).or_exit()?;
            serde_json::json!({ "output": args.output, "format": "raw" })
        }
        Format::Qcow2 => {
            let opts = FlattenOptions {
                compression: match args.compress {
                    Compress::Zstd => Some(CompressionType::Zstd),
                    Compress::Zlib => Some(CompressionType::Zlib),
                    Compress::None => None,
                },
                cluster_bits,
                passthrough: !args.no_passthrough,
                cancel: signals.cancel(),
            };
            let st = kiln_qcow2::flatten_to_path(&src, &args.output, &opts, &report).or_exit()?;
            serde_json::json!({
                "output": args.output,
                "format": "qcow2",
                "file_size": st.file_len,
                "clusters": { "total": st.clusters, "zero": st.zero, "raw": st.raw,
                              "compressed": st.compressed, "passthrough": st.passthrough },
            })
        }
    };
    bar.finish_and_clear();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&summary)?);
    } else if let Some(c) = summary.get("clusters") {
        eprintln!(
            "wrote {} ({}): {} clusters passed through, {} compressed, {} stored raw, {} zero",
            args.output.display(),
            human_size(summary["file_size"].as_u64().unwrap_or(0)),
            c["passthrough"],
            c["compressed"],
            c["raw"],
            c["zero"]
        );
    } else {
        eprintln!("wrote {}", args.output.display());
    }
    Ok(())
}
