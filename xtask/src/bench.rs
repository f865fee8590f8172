//! `cargo xtask bench`: kiln and the reference tools doing the same work, timed side by side in one
//! run (best of N), printed as ratios (> 1.0 means kiln is faster). Nothing here asserts a time.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use kiln_blockdev::BlockDev;
use kiln_fixtures::testing;
use kiln_qcow2::{OpenOptions, begin_overlay};

use crate::util::{Rng, best_of, root, run as sh, s};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

struct Row {
    name: String,
    kiln: f64,
    reference: f64,
    reference_name: String,
    target: f64,
}

pub fn run(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let reps = if quick { 1 } else { 3 };
    let kiln = crate::util::build_kiln()?;
    let dir = root().join("target/bench-work");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;

    let data_mib = if quick { 128 } else { 768 };
    println!("generating a 3.5 GiB-virtual zstd-compressed base with {data_mib} MiB of data…");
    let base = make_base(&dir, data_mib)?;
    let top = dir.join("top.qcow2");
    make_overlay_changing_ten_percent(&base, &top, data_mib)?;

    let mut rows = vec![read_row(&kiln, &dir, &top, reps)?];
    for kind in [
        ("4 KiB random writes ×2000", 2000u64, 4096u64, true),
        ("1 MiB sequential writes ×256", 256, MIB, false),
    ] {
        rows.push(writes_row(&dir, &base, data_mib, reps, kind)?);
    }
    rows.push(flatten_row(&kiln, &dir, &top, reps)?);
    // ext4: 220 MB of new files into a filesystem inside the image.
    rows.push(ext4_row(&dir, reps)?);

    // The whole golden build vs the scripted offline alternative.
    rows.push(golden_row(&kiln, &dir, reps)?);

    // NoCloud seeds for a 1000-node cluster: one kiln run vs cloud-localds once per node.
    rows.push(seeds_row(&kiln, &dir, reps)?);

    // A 100-node cluster directory: overlays + seeds + inventory vs qemu-img + cloud-localds.
    rows.push(cluster_row(&kiln, &dir, &base, reps)?);

    print_table(&rows, reps);
    Ok(())
}

/// Read every guest byte through the chain into a raw file.
fn read_row(kiln: &Path, dir: &Path, top: &Path, reps: usize) -> Result<Row> {
    let out = dir.join("out.raw");
    let q = best_of(reps, || {
        let _ = std::fs::remove_file(&out);
        sh(Command::new("qemu-img").args(["convert", "-O", "raw", s(top), s(&out)])).map(drop)
    })?;
    let k = best_of(reps, || {
        let _ = std::fs::remove_file(&out);
        sh(Command::new(kiln).args(["convert", "-q", "--format", "raw", s(top), s(&out)])).map(drop)
    })?;
    Ok(Row {
        name: "read chain → raw (3.5 GiB virtual)".into(),
        kiln: k,
        reference: q,
        reference_name: "qemu-img convert -O raw".into(),
        target: 1.0,
    })
}

/// One kind of write into a fresh overlay over the compressed base: `count` writes of `len` bytes,
/// at random 4 KiB-aligned offsets or sequentially.
fn writes_row(
    dir: &Path,
    base: &Path,
    data_mib: u64,
    reps: usize,
    (label, count, len, random): (&str, u64, u64, bool),
) -> Result<Row> {
    let offsets: Vec<u64> = {
        let mut rng = Rng(17);
        (0..count)
            .map(|i| {
                if random {
                    rng.below((data_mib * MIB - len) / 4096) * 4096
                } else {
                    i * len
                }
            })
            .collect()
    };
    let ov = dir.join("w.qcow2");
    let script = dir.join("qemu-io.cmds");
    {
        let mut f = File::create(&script)?;
        for &o in &offsets {
            writeln!(f, "write -P 0x5a {o} {len}")?;
        }
    }
    let fresh = |ov: &Path| -> Result<()> {
        let _ = std::fs::remove_file(ov);
        sh(Command::new("qemu-img").args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            s(base),
            "-F",
            "qcow2",
            s(ov),
        ]))
        .map(drop)
    };
    // qemu-io reads commands from stdin; its start-up and open cost is measured separately and
    // subtracted, so the ratio compares the writes themselves.
    let qemu_io = |ov: &Path, cmds: &Path| -> Result<()> {
        let status = Command::new("qemu-io")
            .arg(s(ov))
            .stdin(File::open(cmds)?)
            .stdout(std::process::Stdio::null())
            .status()
            .context("run qemu-io")?;
        anyhow::ensure!(status.success(), "qemu-io failed");
        Ok(())
    };
    let empty = dir.join("empty.cmds");
    std::fs::write(&empty, "")?;
    let mut q = f64::INFINITY;
    let mut startup = f64::INFINITY;
    for _ in 0..reps {
        fresh(&ov)?;
        startup = startup.min(best_of(1, || qemu_io(&ov, &empty))?);
        fresh(&ov)?;
        q = q.min(best_of(1, || qemu_io(&ov, &script))?);
    }
    let q = (q - startup).max(1e-6);
    let mut k = f64::INFINITY;
    for _ in 0..reps {
        let _ = std::fs::remove_file(&ov);
        let buf = vec![0x5au8; len as usize];
        k = k.min(best_of(1, || {
            let p = begin_overlay(&ov, base, None, &OpenOptions::default())?;
            for &o in &offsets {
                p.image().write_at(&buf, o)?;
            }
            p.commit()?;
            Ok(())
        })?);
    }
    Ok(Row {
        name: format!("overlay: {label}"),
        kiln: k,
        reference: q,
        reference_name: "qemu-io write (start-up subtracted)".into(),
        target: 1.0,
    })
}

/// Flatten the overlay (10 % changed) into one zstd-compressed qcow2.
fn flatten_row(kiln: &Path, dir: &Path, top: &Path, reps: usize) -> Result<Row> {
    let flat = dir.join("flat.qcow2");
    let q = best_of(reps, || {
        let _ = std::fs::remove_file(&flat);
        sh(Command::new("qemu-img").args([
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            "compression_type=zstd",
            s(top),
            s(&flat),
        ]))
        .map(drop)
    })?;
    let k = best_of(reps, || {
        let _ = std::fs::remove_file(&flat);
        sh(Command::new(kiln).args(["convert", "-q", "--compress", "zstd", s(top), s(&flat)]))
            .map(drop)
    })?;
    sh(Command::new("qemu-img").args(["compare", s(&flat), s(top)]))?;
    Ok(Row {
        name: "flatten overlay (10 % changed) → zstd qcow2".into(),
        kiln: k,
        reference: q,
        reference_name: "qemu-img convert -c zstd".into(),
        target: 10.0,
    })
}

fn print_table(rows: &[Row], reps: usize) {
    println!();
    println!("| work | kiln | reference | reference tool | ratio (ref/kiln) | target |");
    println!("|---|---:|---:|---|---:|---:|");
    for r in rows {
        let ratio = r.reference / r.kiln;
        let mark = if ratio >= r.target { "met" } else { "MISSED" };
        println!(
            "| {} | {:.3} s | {:.3} s | {} | {:.2}× | ≥ {:.1}× {mark} |",
            r.name, r.kiln, r.reference, r.reference_name, ratio, r.target
        );
    }
    println!(
        "\nbest of {reps} run(s) each, on this machine ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
}

const WORDS: &[u8] =
    b"usr/lib/x86_64-linux-gnu/libc.so.6 etc/systemd/system/multi-user.target.wants ";

/// A raw 3.5 GiB sparse file whose first `data_mib` MiB hold a mix of text-like and random data,
/// compressed by qemu-img into a zstd qcow2 (like a vendor cloud image, but zstd).
fn make_base(dir: &Path, data_mib: u64) -> Result<PathBuf> {
    let raw = dir.join("base.raw");
    {
        let f = File::create(&raw)?;
        f.set_len(3 * GIB + GIB / 2)?;
        let mut rng = Rng(99);
        let mut chunk = vec![0u8; MIB as usize];
        for m in 0..data_mib {
            // Like a distribution's files: every 4 KiB block is about 1/3 noise and 2/3 text, so
            // zstd shrinks it 2–3× (an Ubuntu cloud image's data compresses about 3×).
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = if i % 4096 < 1400 {
                    rng.next() as u8
                } else {
                    WORDS[(i + m as usize * 7) % WORDS.len()]
                };
            }
            std::os::unix::fs::FileExt::write_all_at(&f, &chunk, m * MIB)?;
        }
    }
    let base = dir.join("base.qcow2");
    sh(Command::new("qemu-img").args([
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "compression_type=zstd",
        s(&raw),
        s(&base),
    ]))?;
    std::fs::remove_file(&raw)?;
    Ok(base)
}

/// Write ~10 % of the base's data as new content into an overlay (with kiln; checked by qemu-img).
fn make_overlay_changing_ten_percent(base: &Path, top: &Path, data_mib: u64) -> Result<()> {
    let p = begin_overlay(top, base, None, &OpenOptions::default())?;
    let mut rng = Rng(5);
    let buf: Vec<u8> = (0..MIB).map(|i| (i * 31 % 253) as u8).collect();
    for _ in 0..data_mib / 10 {
        let o = rng.below(data_mib) * MIB;
        p.image().write_at(&buf, o)?;
    }
    p.commit()?;
    sh(Command::new("qemu-img").args(["check", s(top)]))?;
    Ok(())
}

/// 1000 nodes: `kiln seed --format iso` for all of them in one run, against `cloud-localds` (Ubuntu's
/// cloud-image-utils, genisoimage underneath) run once per node over the very same documents.
/// A spec of `nodes` nodes (3 servers, the rest agents) in `dir/cluster.yaml`, and its documents
/// rendered by kiln into `dir/docs/<node>-seed/` (the reference tools' input). Returns both paths.
fn big_spec(kiln: &Path, dir: &Path, nodes: usize) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let spec = dir.join("cluster.yaml");
    let mut yaml = String::from(
        "cluster:\n  name: big\n  k3s:\n    version: v1.34.3+k3s1\n    token_file: token\n  network:\n    match: mac\n    interface: ens3\n    ipv4: { cidr: 10.20.0.0/16, gateway: 10.20.0.1 }\n    dns: [10.20.0.1]\n  user: ubuntu\n  ssh_authorized_keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchKeyBenchKeyBenchKeyBenchKeyBenchKey00 bench\"]\n  disk_size: 40G\nnodes:\n",
    );
    for i in 0..nodes {
        let role = if i < 3 { "server" } else { "agent" };
        yaml.push_str(&format!(
            "  - {{ name: node-{i:04}, role: {role}, ipv4: 10.20.{}.{}, mac: \"52:54:00:00:{:02x}:{:02x}\" }}\n",
            i / 200 + 1,
            i % 200 + 10,
            i / 256,
            i % 256
        ));
    }
    std::fs::write(&spec, yaml)?;
    let docs = dir.join("docs");
    sh(Command::new(kiln).args(["seed", s(&spec), "-o", s(&docs), "--format", "dir"]))?;
    Ok((spec, docs))
}

/// `cloud-localds` for one node's documents from [`big_spec`].
fn cloud_localds(docs: &Path, node: &str, out: &Path) -> Result<()> {
    let d = docs.join(format!("{node}-seed"));
    sh(Command::new("cloud-localds").args([
        "-N",
        s(&d.join("network-config")),
        s(out),
        s(&d.join("user-data")),
        s(&d.join("meta-data")),
    ]))
    .map(drop)
}

fn seeds_row(kiln: &Path, dir: &Path, reps: usize) -> Result<Row> {
    const NODES: usize = 1000;
    let spec_dir = dir.join("seeds");
    let (spec, docs) = big_spec(kiln, &spec_dir, NODES)?;
    let iso = spec_dir.join("iso");
    let k = best_of(reps, || {
        let _ = std::fs::remove_dir_all(&iso);
        sh(Command::new(kiln)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["seed", s(&spec), "-o", s(&iso), "--format", "iso"]))
        .map(drop)
    })?;
    let localds = spec_dir.join("localds");
    let q = best_of(1, || {
        let _ = std::fs::remove_dir_all(&localds);
        std::fs::create_dir_all(&localds)?;
        for i in 0..NODES {
            let name = format!("node-{i:04}");
            cloud_localds(&docs, &name, &localds.join(format!("{name}-seed.iso")))?;
        }
        Ok(())
    })?;
    Ok(Row {
        name: format!("{NODES} NoCloud seed ISOs"),
        kiln: k,
        reference: q,
        reference_name: "cloud-localds per node".into(),
        target: 50.0,
    })
}

/// `kiln cluster` for 100 nodes against a golden image (every node's overlay and seed ISO, and the
/// inventory with the golden's sha256) vs the scripted equivalent: `sha256sum` of the golden once,
/// then per node `qemu-img create -b` and `cloud-localds` (from the same documents kiln renders).
fn cluster_row(kiln: &Path, dir: &Path, golden: &Path, reps: usize) -> Result<Row> {
    const NODES: usize = 100;
    let spec_dir = dir.join("cluster");
    let (spec, docs) = big_spec(kiln, &spec_dir, NODES)?;
    let out = spec_dir.join("out");
    let k = best_of(reps, || {
        let _ = std::fs::remove_dir_all(&out);
        sh(Command::new(kiln)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .arg("cluster")
            .arg(&spec)
            .arg("--golden")
            .arg(golden)
            .arg("-o")
            .arg(&out))
        .map(drop)
    })?;
    let scripted = spec_dir.join("scripted");
    let q = best_of(reps, || {
        let _ = std::fs::remove_dir_all(&scripted);
        std::fs::create_dir_all(&scripted)?;
        sh(Command::new("sha256sum").arg(golden))?;
        for i in 0..NODES {
            let name = format!("node-{i:04}");
            sh(Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                .arg(golden)
                .arg(scripted.join(format!("{name}.qcow2")))
                .arg("40G"))?;
            cloud_localds(&docs, &name, &scripted.join(format!("{name}-seed.iso")))?;
        }
        Ok(())
    })?;
    Ok(Row {
        name: format!("{NODES}-node cluster dir (overlays + seeds + inventory)"),
        kiln: k,
        reference: q,
        reference_name: "sha256sum + qemu-img create + cloud-localds per node".into(),
        target: 5.0,
    })
}

/// 22 × 10 MB of new files into the root filesystem of a compressed GPT image: kiln through a qcow2
/// overlay (creating and committing the overlay is timed) vs `debugfs -w` writing the same host files
/// into a raw copy of the partition (making the copy is not timed).
fn ext4_row(dir: &Path, reps: usize) -> Result<Row> {
    use kiln_ext4::{Filesystem, NewDir, NewFile};
    const FILES: usize = 22;
    const LEN: usize = 10_000_000;
    let work = dir.join("ext4");
    std::fs::create_dir_all(&work)?;
    let part = work.join("root.ext4");
    testing::mkfs_ext4(&part, 600 * MIB, None)?;
    let base = testing::gpt_qcow2(&work, "base.qcow2", &part, 10240)?.qcow2;
    let mut sources = Vec::new();
    for i in 0..FILES {
        let p = work.join(format!("src-{i:02}.bin"));
        std::fs::write(&p, testing::noise(0x1234_5678 + i as u32, LEN))?;
        sources.push(p);
    }
    let script = work.join("debugfs.cmds");
    let mut cmds = String::from("mkdir /data\n");
    for (i, p) in sources.iter().enumerate() {
        cmds.push_str(&format!("write {} /data/f{i:02}.bin\n", p.display()));
    }
    std::fs::write(&script, cmds)?;

    let mut d = f64::INFINITY;
    for _ in 0..reps {
        let copy = work.join("copy.ext4");
        sh(Command::new("cp")
            .arg("--sparse=always")
            .arg(&part)
            .arg(&copy))?;
        d = d.min(best_of(1, || {
            sh(Command::new("debugfs")
                .arg("-w")
                .arg("-f")
                .arg(&script)
                .arg(&copy))
            .map(drop)
        })?);
        std::fs::remove_file(&copy)?;
    }
    let out = work.join("node.qcow2");
    let k = best_of(reps, || {
        let _ = std::fs::remove_file(&out);
        let pending = begin_overlay(&out, &base, None, &OpenOptions::default())?;
        {
            let table = kiln_partition::scan(pending.image(), "node")?;
            let root = table.root()?;
            let win = kiln_partition::window(pending.image(), "node", root)?;
            let mut fs = Filesystem::open(
                &win,
                "node",
                kiln_ext4::OpenOptions::read_write(1_700_000_000),
            )?;
            fs.create_dir_all("/data", NewDir::default())?;
            for (i, src) in sources.iter().enumerate() {
                let data = std::fs::read(src)?;
                fs.write(format!("/data/f{i:02}.bin"), &data, NewFile::default())?;
            }
            fs.close()?;
        }
        pending.commit()?;
        Ok(())
    })?;
    Ok(Row {
        name: "ext4: write 220 MB of new files".into(),
        kiln: k,
        reference: d,
        reference_name: "debugfs -w on a raw partition copy".into(),
        target: 1.0,
    })
}

/// `kiln build` of the committed recipe from the 3.5 GiB fixture (~200 MiB injected) vs the same edits
/// scripted offline: `qemu-img convert` to raw, `dd` the root partition out, `debugfs -w` (remove the
/// scrubbed files, write every injected file, directory and symlink as kiln's manifest lists them),
/// `dd` it back, `qemu-img convert -c` (zstd). debugfs cannot remove directories recursively, so the
/// script removes only the scrubbed *files*: slightly less work than kiln does.
fn golden_row(kiln: &Path, dir: &Path, reps: usize) -> Result<Row> {
    crate::fixtures::ensure(false)?;
    let recipe = root().join("recipes/k3s-node-ubuntu-24.04.yaml");
    let base = crate::fixtures::dir().join(crate::fixtures::BASE_NAME);
    let work = dir.join("golden");
    let out = work.join("kiln");
    let k = best_of(reps, || {
        let _ = std::fs::remove_dir_all(&out);
        sh(Command::new(kiln).args(["build", "-q", s(&recipe), "-o", s(&out)])).map(drop)
    })?;
    let golden = out.join("k3s-node-ubuntu-24.04.qcow2");
    let manifest = std::fs::read_to_string(out.join("k3s-node-ubuntu-24.04.manifest.json"))?;

    // The edits, as a debugfs script (prepared untimed; file contents taken from kiln's image).
    let files = work.join("files");
    std::fs::create_dir_all(&files)?;
    let mut script = String::new();
    for (path, action) in json_pairs(&manifest, "\"path\": \"", "\"action\": \"") {
        if action == "removed" && !path.ends_with('/') {
            script.push_str(&format!("rm {path}\n"));
        }
    }
    for (n, (path, kind)) in json_pairs(&manifest, "\"path\": \"", "\"kind\": \"")
        .into_iter()
        .enumerate()
    {
        match kind.as_str() {
            "dir" => script.push_str(&format!("mkdir {path}\n")),
            "symlink" => {
                let target = sh(Command::new(kiln).args([
                    "ls",
                    "--json",
                    &format!("{}:{path}", s(&golden)),
                ]))?;
                let t = json_pairs(&target, "\"target\": \"", "\"target\": \"")
                    .first()
                    .map(|p| p.0.clone())
                    .unwrap_or_default();
                script.push_str(&format!("symlink {path} {t}\n"));
            }
            "file" => {
                let host = files.join(format!("f{n}"));
                let data = Command::new(kiln)
                    .args(["cat", &format!("{}:{path}", s(&golden))])
                    .output()?
                    .stdout;
                std::fs::write(&host, data)?;
                script.push_str(&format!("rm {path}\nwrite {} {path}\n", s(&host)));
            }
            _ => {}
        }
    }
    let script_path = work.join("edits.debugfs");
    std::fs::write(&script_path, script)?;

    let raw = work.join("disk.raw");
    let part = work.join("root.ext4");
    let scripted_out = work.join("scripted.qcow2");
    let q = best_of(reps, || {
        for p in [&raw, &part, &scripted_out] {
            let _ = std::fs::remove_file(p);
        }
        sh(Command::new("qemu-img").args(["convert", "-O", "raw", s(&base), s(&raw)]))?;
        let dev = kiln_blockdev::FileDev::open_read_only(&raw)?;
        let table = kiln_partition::scan(&dev, "disk.raw")?;
        let root_part = table.root()?.clone();
        drop(dev);
        let (skip, count) = (root_part.start / MIB, root_part.len / MIB);
        sh(Command::new("dd")
            .args(["bs=1M", "status=none", "conv=sparse"])
            .arg(format!("if={}", s(&raw)))
            .arg(format!("of={}", s(&part)))
            .arg(format!("skip={skip}"))
            .arg(format!("count={count}")))?;
        sh(Command::new("debugfs").args(["-w", "-f", s(&script_path), s(&part)]))?;
        sh(Command::new("dd")
            .args(["bs=1M", "status=none", "conv=notrunc,sparse"])
            .arg(format!("if={}", s(&part)))
            .arg(format!("of={}", s(&raw)))
            .arg(format!("seek={skip}")))?;
        sh(Command::new("qemu-img").args([
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            "compression_type=zstd",
            s(&raw),
            s(&scripted_out),
        ]))?;
        Ok(())
    })?;
    Ok(Row {
        name: "golden build: 3.5 GiB base, ~200 MiB injected".into(),
        kiln: k,
        reference: q,
        reference_name: "qemu-img convert + debugfs -w + qemu-img convert -c".into(),
        target: 1.0,
    })
}

/// Pairs of string values that follow `a` and then `b` within the same JSON object, in order (a
/// small scanner for kiln's own pretty-printed manifest; xtask keeps its dependencies few).
fn json_pairs(json: &str, a: &str, b: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for obj in json.split('{') {
        let get = |key: &str| {
            obj.find(key).map(|i| {
                obj[i + key.len()..]
                    .split('"')
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
        };
        if let (Some(x), Some(y)) = (get(a), get(b)) {
            out.push((x, y));
        }
    }
    out
}
