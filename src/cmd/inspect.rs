//! `kiln inspect IMAGE [--json]`: format, sizes, compression, the whole backing chain and allocation.

use std::path::PathBuf;

use clap::Args;
use kiln_qcow2::{Backing, Disk, Image};
use serde_json::{Value, json};

use super::args::human_size;
use super::image_args::OpenArgs;
use crate::exit::{CmdResult, OrExit};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image (qcow2 or raw).
    image: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    open: OpenArgs,
}

fn layer_json(img: &Image) -> kiln_qcow2::Result<Value> {
    let h = img.header();
    let a = img.allocation()?;
    Ok(json!({
        "path": img.path(),
        "format": "qcow2",
        "version": h.version,
        "virtual_size": h.size,
        "file_size": img.file_len(),
        "cluster_size": h.cluster_size(),
        "compression_type": h.compression_type.name(),
        "refcount_bits": h.refcount_bits(),
        "backing_file": h.backing_file,
        "backing_format": h.backing_format,
        "clusters": { "data": a.data, "compressed": a.compressed, "zero": a.zero, "unallocated": a.unallocated },
    }))
}

pub fn run(args: InspectArgs) -> CmdResult {
    let disk = Disk::open(&args.image, &args.open.options()).or_exit()?;
    let mut chain = Vec::new();
    match &disk {
        Disk::Qcow2(top) => {
            let mut img = top;
            loop {
                chain.push(layer_json(img).or_exit()?);
                match img.backing() {
                    Some(Backing::Qcow2(b)) => img = b,
                    Some(Backing::Raw { path, dev }) => {
                        use kiln_blockdev::BlockDev;
                        chain.push(json!({ "path": path, "format": "raw", "virtual_size": dev.len(), "file_size": dev.len() }));
                        break;
                    }
                    None => break,
                }
            }
        }
        Disk::Raw(dev) => {
            use kiln_blockdev::BlockDev;
            chain.push(json!({ "path": args.image, "format": "raw", "virtual_size": dev.len(), "file_size": dev.len() }));
        }
    }
    // The partition table, when the guest disk has one (or a whole-disk filesystem).
    let table = kiln_partition::scan(&disk, &args.image.display().to_string()).ok();
    let partitions: Value = match &table {
        Some(t) => json!({
            "kind": format!("{:?}", t.kind).to_lowercase(),
            "partitions": t.partitions.iter().map(|p| json!({
                "number": p.number,
                "start": p.start,
                "size": p.len,
                "type": match p.part_type {
                    kiln_partition::PartType::Gpt(g) => g.to_string(),
                    kiln_partition::PartType::Mbr(b) => format!("{b:#04x}"),
                    kiln_partition::PartType::None => "none".to_owned(),
                },
                "name": p.name,
                "fs": p.fs.as_str(),
                "label": p.label,
            })).collect::<Vec<_>>(),
        }),
        None => Value::Null,
    };
    if args.json {
        let out = json!({ "image": args.image, "format": disk.format(), "chain": chain, "partition_table": partitions });
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if let Some(parts) = partitions.get("partitions").and_then(Value::as_array) {
        outln!(
            "partition table: {}",
            partitions["kind"].as_str().unwrap_or("?")
        );
        outln!(
            "  {:>3}  {:>14}  {:>10}  {:<7} {:<18} name",
            "#",
            "start (bytes)",
            "size",
            "fs",
            "label"
        );
        for p in parts {
            outln!(
                "  {:>3}  {:>14}  {:>10}  {:<7} {:<18} {}",
                p["number"].as_u64().unwrap_or(0),
                p["start"].as_u64().unwrap_or(0),
                human_size(p["size"].as_u64().unwrap_or(0)),
                p["fs"].as_str().unwrap_or(""),
                p["label"].as_str().unwrap_or("-"),
                p["name"].as_str().unwrap_or("")
            );
        }
    }
    for (depth, layer) in chain.iter().enumerate() {
        let indent = "  ".repeat(depth);
        let get = |k: &str| layer.get(k).cloned().unwrap_or(Value::Null);
        let path = get("path");
        outln!("{indent}{}", path.as_str().unwrap_or("?"));
        let vs = get("virtual_size").as_u64().unwrap_or(0);
        outln!(
            "{indent}  format:        {}",
            get("format").as_str().unwrap_or("?")
        );
        outln!("{indent}  virtual size:  {} ({vs} bytes)", human_size(vs));
        outln!(
            "{indent}  file size:     {}",
            human_size(get("file_size").as_u64().unwrap_or(0))
        );
        if get("format") == "qcow2" {
            outln!("{indent}  version:       {}", get("version"));
            outln!(
                "{indent}  cluster size:  {}",
                human_size(get("cluster_size").as_u64().unwrap_or(0))
            );
            outln!(
                "{indent}  compression:   {}",
                get("compression_type").as_str().unwrap_or("?")
            );
            if let Some(b) = get("backing_file").as_str() {
                outln!(
                    "{indent}  backing file:  {b} ({})",
                    get("backing_format").as_str().unwrap_or("probed")
                );
            }
            let c = get("clusters");
            outln!(
                "{indent}  clusters:      {} data, {} compressed, {} zero, {} unallocated",
                c["data"],
                c["compressed"],
                c["zero"],
                c["unallocated"]
            );
        }
    }
    Ok(())
}
