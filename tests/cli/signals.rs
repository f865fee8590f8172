//! SIGINT and SIGTERM sent to `kiln build` and `kiln cluster` at many moments of a run: each run
//! either exits 130 / 143 having written nothing (no output, no temporary file, no directory it
//! made) or, when the signal came after the last point where it is checked, completes with exactly
//! the outputs of an undisturbed run. The inputs are never changed. Every other run gets the signal
//! twice. A signal that arrives before `main` has installed its handlers (the first few
//! milliseconds of the process) ends it by the signal's default action — nothing has been written
//! then either; the test counts those runs apart.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_fixtures::testing::{BuildEnv, sha256};
use kiln_fixtures::{self as fixtures, BaseSpec};

use crate::util::{KILN, assert_success};

/// Signal moments per signal: delays spread evenly from 0 to a little past the measured run.
const MOMENTS: u32 = 16;

/// `kill -SIG pid`.
fn kill(sig: &str, pid: u32) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

/// How long `kill` takes to deliver a signal (the median of a few `kill -0`), taken off each delay
/// so that the moments spread over the run rather than over the launch of `kill`.
fn kill_latency() -> Duration {
    let mut t: Vec<Duration> = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            kill("0", std::process::id());
            t0.elapsed()
        })
        .collect();
    t.sort();
    t[2]
}

/// Every file under `dir` (relative path → sha256), directories not listed.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, sha256(&p));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Every entry (files and directories) under `dir`, relative.
fn entries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// What the sweep saw, for the summary line.
#[derive(Debug, Default)]
struct Tally {
    cancelled: u32,
    completed: u32,
    /// Ended by the signal's default action: it came before `main` installed its handlers.
    killed_before_handlers: u32,
}

/// Runs `command(out)` once undisturbed (its duration and outputs are the reference), then, for
/// SIGINT and SIGTERM, [`MOMENTS`] times with the signal sent after a growing delay. `out` is
/// always `RUNS/<run>/<leaf>` below `root`, never existing before the run, so that outputs which
/// name their own directory relative to the inputs are the same in every run.
fn sweep(
    what: &str,
    root: &Path,
    leaf: &str,
    inputs: &[PathBuf],
    command: impl Fn(&Path) -> Command,
) -> Tally {
    let hash_inputs = || -> Vec<String> { inputs.iter().map(|p| sha256(p)).collect() };
    let before = hash_inputs();
    let input_entries: Vec<(PathBuf, Vec<String>)> = inputs
        .iter()
        .map(|p| {
            let d = p.parent().unwrap().to_owned();
            let e = entries(&d);
            (d, e)
        })
        .collect();

    let reference = root.join("runs/reference").join(leaf);
    let t0 = Instant::now();
    let o = command(&reference).output().unwrap();
    let took = t0.elapsed();
    assert_success(&o);
    let want = tree(&reference);
    assert!(!want.is_empty());

    let mut tally = Tally::default();
    let span = took.mul_f64(1.2);
    let latency = kill_latency();
    for (sig, num, code) in [("INT", 2, 130), ("TERM", 15, 143)] {
        for i in 0..MOMENTS {
            let delay = span.mul_f64(f64::from(i) / f64::from(MOMENTS - 1));
            let run = root.join(format!("runs/{sig}-{i}"));
            let out = run.join(leaf);
            let child = command(&out)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(delay.saturating_sub(latency));
            kill(sig, child.id());
            if i % 2 == 1 {
                // A second signal while the first is being handled changes nothing.
                kill(sig, child.id());
            }
            let o = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&o.stderr);
            let at = format!("{what}: SIG{sig} after {delay:?} (run {took:?})");
            if o.status.success() {
                // The signal came after the last check: a complete, correct run.
                assert_eq!(tree(&out), want, "{at}: completed with other outputs");
                tally.completed += 1;
            } else {
                match (o.status.code(), o.status.signal()) {
                    (Some(c), _) if c == code => {
                        assert!(
                            stderr.contains(&format!("kiln: cancelled (SIG{sig})")),
                            "{at}: {stderr}"
                        );
                        tally.cancelled += 1;
                    }
                    (None, Some(s)) if s == num => tally.killed_before_handlers += 1,
                    _ => panic!("{at}: exit {:?}: {stderr}", o.status),
                }
                // Nothing at all: no output, no temporary file, no directory made for them.
                assert_eq!(entries(&run), Vec::<String>::new(), "{at}: left behind");
            }
            assert_eq!(hash_inputs(), before, "{at}: an input changed");
            for (dir, e) in &input_entries {
                assert_eq!(&entries(dir), e, "{at}: {} changed", dir.display());
            }
            std::fs::remove_dir_all(&run).ok();
        }
    }
    eprintln!("{what}: reference run {took:?}, kill latency {latency:?}; {tally:?}");
    assert!(
        tally.cancelled > 0,
        "{what}: no run was cancelled: {tally:?}"
    );
    tally
}

#[test]
fn signals_during_build_leave_nothing_and_exit_130_or_143() {
    // A larger air-gap tarball, so that the k3s step spans several chunks.
    let env = BuildEnv::new("v1.34.3+k3s1", 8 << 20);
    let recipe = env.root.join("in/recipe.yaml");
    std::fs::write(
        &recipe,
        fixtures::recipe_yaml("node", &env.base, &env.assets, ""),
    )
    .unwrap();
    let mut inputs = vec![recipe.clone(), env.base.path.clone()];
    let mut assets: Vec<PathBuf> = std::fs::read_dir(&env.assets.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assets.sort();
    inputs.extend(assets);
    sweep("build", &env.root, "out", &inputs, |out| {
        let mut c = Command::new(KILN);
        c.arg("build").arg(&recipe).arg("-o").arg(out).arg("-q");
        c
    });
}

#[test]
fn signals_during_cluster_leave_nothing_and_exit_130_or_143() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let golden = fixtures::make_base(&root.join("golden"), "golden.qcow2", &BaseSpec::small())
        .expect("make the golden image")
        .path;
    let spec = root.join("in/cluster.yaml");
    std::fs::create_dir(root.join("in")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/clusters/libvirt-3node.yaml"),
        &spec,
    )
    .unwrap();
    let command = |out: &Path| {
        let mut c = Command::new(KILN);
        c.arg("cluster")
            .arg(&spec)
            .arg("--golden")
            .arg(&golden)
            .arg("-o")
            .arg(out)
            .env("SOURCE_DATE_EPOCH", "1700000000");
        c
    };
    // The token file is made by the first run; from then on it is an input like the others.
    assert_success(&command(&root.join("runs/first/cluster")).output().unwrap());
    std::fs::remove_dir_all(root.join("runs")).unwrap();
    let token = root.join("in/secrets/lab-token");
    assert!(token.is_file());
    sweep(
        "cluster",
        root,
        "cluster",
        &[spec.clone(), golden.clone(), token],
        command,
    );
}
