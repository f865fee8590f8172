//! `kiln ls IMAGE:/path [--json]`: list a directory (or show one entry) inside an image, without
//! mounting it. Guest symlinks are resolved inside the guest.

use std::io::Write;

use clap::Args;
use kiln_ext4::{FileKind, Filesystem, Metadata};
use serde_json::{Value, json};

use super::guest::{FsArgs, GuestSpec, parse_spec, with_fs};
use crate::exit::{CmdResult, Failure, OrExit};

#[derive(Debug, Args)]
pub struct LsArgs {
    /// IMAGE:/path (qcow2 or raw image; the path defaults to `/`).
    #[arg(value_parser = parse_spec, value_name = "IMAGE:/PATH")]
    target: GuestSpec,
    /// Print JSON instead of `ls -l`-style lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    fs: FsArgs,
}

struct Row {
    name: String,
    meta: Metadata,
    target: Option<String>,
}

fn row(fs: &Filesystem<'_>, path: &str, name: String) -> Result<Row, Failure> {
    let meta = fs.lstat(path).or_exit()?;
    let target = if meta.kind == FileKind::Symlink {
        Some(String::from_utf8_lossy(&fs.read_link(path).or_exit()?).into_owned())
    } else {
        None
    };
    Ok(Row { name, meta, target })
}

fn mode_string(m: &Metadata) -> String {
    let t = match m.kind {
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::CharDevice => 'c',
        FileKind::BlockDevice => 'b',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
        FileKind::File | FileKind::Unknown => '-',
    };
    let mut s = String::from(t);
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if m.perm & (0o400 >> i) != 0 { c } else { '-' });
    }
    s
}

pub fn run(args: LsArgs) -> CmdResult {
    let path = args.target.path.clone();
    let rows = with_fs(&args.target, &args.fs, |fs| {
        let meta = fs.stat(&path).or_exit()?;
        if meta.kind != FileKind::Dir {
            let name = path.rsplit('/').next().unwrap_or(&path).to_owned();
            return Ok(vec![row(fs, &path, name)?]);
        }
        let mut rows = Vec::new();
        for e in fs.read_dir(&path).or_exit()? {
            let name = e.name_lossy().into_owned();
            let child = format!("{}/{}", path.trim_end_matches('/'), name);
            rows.push(row(fs, &child, name)?);
        }
        Ok(rows)
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let list: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "kind": r.meta.kind.as_str(),
                    "mode": format!("{:04o}", r.meta.perm),
                    "uid": r.meta.uid,
                    "gid": r.meta.gid,
                    "size": r.meta.size,
                    "mtime": r.meta.mtime,
                    "ino": r.meta.ino,
                    "target": r.target,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
    } else {
        for r in &rows {
            let link = r
                .target
                .as_ref()
                .map(|t| format!(" -> {t}"))
                .unwrap_or_default();
            writeln!(
                out,
                "{} {:>5} {:>5} {:>10} {:>11} {}{}",
                mode_string(&r.meta),
                r.meta.uid,
                r.meta.gid,
                r.meta.size,
                r.meta.mtime,
                r.name,
                link
            )?;
        }
    }
    Ok(())
}
