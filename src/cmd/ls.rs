//! `kiln ls IMAGE:/path [--json]`: list a directory (or show one entry) inside an image, without
//! mounting it. Guest symlinks are resolved inside the guest. Names and symlink targets are
//! printed (and put in the JSON) in the escaped form of [`kiln_ext4::GuestPath`]: a name that is
//! not UTF-8 shows its bytes as `\xHH`, a backslash as `\\`.

use std::io::Write;

use clap::Args;
use kiln_ext4::{FileKind, Filesystem, GuestPath, Metadata};
use serde_json::{Value, json};

use super::guest::{FsArgs, GuestSpec, spec_parser, with_fs};
use crate::exit::{CmdResult, Failure, OrExit};

#[derive(Debug, Args)]
pub struct LsArgs {
    /// IMAGE:/path (qcow2 or raw image; the path defaults to `/`).
    #[arg(value_parser = spec_parser(), value_name = "IMAGE:/PATH")]
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

fn row(fs: &Filesystem<'_>, path: &GuestPath, name: String) -> Result<Row, Failure> {
    let meta = fs.lstat(path).or_exit()?;
    let target = if meta.kind == FileKind::Symlink {
        Some(GuestPath::new(&fs.read_link(path).or_exit()?).to_string())
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
            let name = path
                .file_name()
                .map_or_else(|| path.to_string(), |n| GuestPath::new(n).to_string());
            return Ok(vec![row(fs, &path, name)?]);
        }
        let mut rows = Vec::new();
        for e in fs.read_dir(&path).or_exit()? {
            rows.push(row(fs, &path.join(&e.name), e.name_escaped())?);
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
