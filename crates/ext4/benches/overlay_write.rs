//! Writing 220 MB of new files into a filesystem: kiln through a qcow2 overlay (partition window of
//! a compressed GPT base) vs `debugfs -w` writing the same host files into a raw copy of the
//! partition. Prints the ratio (> 1.0 = kiln faster). Copying the raw partition for debugfs is
//! not timed; creating and committing the overlay is.
//!
//! `cargo bench -p kiln-ext4 --bench overlay_write`

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_ext4::{Filesystem, NewDir, NewFile, OpenOptions};

const FILES: usize = 22;
const FILE_LEN: usize = 10_000_000;

use kiln_fixtures::testing::{self, run};

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    base: PathBuf,
    raw_part: PathBuf,
    sources: Vec<PathBuf>,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let part = dir.join("root.ext4");
    testing::mkfs_ext4(&part, 600 << 20, None).unwrap();
    run(Command::new("debugfs")
        .args(["-w", "-R", "mkdir /data"])
        .arg(&part));
    let base = testing::gpt_qcow2(&dir, "base.qcow2", &part, 10240)
        .unwrap()
        .qcow2;
    let mut sources = Vec::new();
    for i in 0..FILES {
        let p = dir.join(format!("src-{i:02}.bin"));
        std::fs::write(&p, testing::noise(0x1234_5678 + i as u32, FILE_LEN)).unwrap();
        sources.push(p);
    }
    Setup {
        _dir: tmp,
        dir,
        base,
        raw_part: part,
        sources,
    }
}

fn kiln_once(s: &Setup, n: usize) -> Duration {
    let out = s.dir.join(format!("node-{n}.qcow2"));
    let start = Instant::now();
    let pending =
        kiln_qcow2::begin_overlay(&out, &s.base, None, &kiln_qcow2::OpenOptions::default())
            .unwrap();
    {
        let table = kiln_partition::scan(pending.image(), "node").unwrap();
        let part = table.root().unwrap();
        let win = kiln_partition::window(pending.image(), "node", part).unwrap();
        let mut fs =
            Filesystem::open(&win, "node", OpenOptions::read_write(1_700_000_000)).unwrap();
        fs.create_dir_all("/data", NewDir::default()).unwrap();
        for (i, src) in s.sources.iter().enumerate() {
            let data = std::fs::read(src).unwrap();
            fs.write(format!("/data/f{i:02}.bin"), &data, NewFile::default())
                .unwrap();
        }
        fs.close().unwrap();
    }
    pending.commit().unwrap();
    let t = start.elapsed();
    std::fs::remove_file(&out).unwrap();
    t
}

fn debugfs_once(s: &Setup, n: usize) -> Duration {
    let copy = s.dir.join(format!("copy-{n}.ext4"));
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&s.raw_part)
        .arg(&copy));
    let script = s.dir.join("cmds");
    let cmds: String = s
        .sources
        .iter()
        .enumerate()
        .map(|(i, p)| format!("write {} /data/f{i:02}.bin\n", p.display()))
        .collect();
    std::fs::write(&script, cmds).unwrap();
    let start = Instant::now();
    run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(&copy));
    let t = start.elapsed();
    std::fs::remove_file(&copy).unwrap();
    t
}

fn total(d: &[Duration]) -> Duration {
    d.iter().sum()
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let mut g = c.benchmark_group("write_220MB_new_files");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_millis(1));
    let mut kiln_times = Vec::new();
    let mut debugfs_times = Vec::new();
    g.bench_function("kiln_qcow2_overlay", |b| {
        b.iter_custom(|iters| {
            let ts: Vec<Duration> = (0..iters as usize).map(|n| kiln_once(&s, n)).collect();
            kiln_times.extend(&ts);
            total(&ts)
        })
    });
    g.bench_function("debugfs_w_raw_partition", |b| {
        b.iter_custom(|iters| {
            let ts: Vec<Duration> = (0..iters as usize).map(|n| debugfs_once(&s, n)).collect();
            debugfs_times.extend(&ts);
            total(&ts)
        })
    });
    g.finish();
    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default().as_secs_f64();
    let (k, d) = (best(&kiln_times), best(&debugfs_times));
    println!(
        "write 220 MB: kiln overlay best {k:.3} s, debugfs -w raw best {d:.3} s, ratio {:.2}x (> 1.0 = kiln faster)",
        d / k
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
