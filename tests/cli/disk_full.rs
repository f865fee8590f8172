//! Outputs that do not fit. A file-size limit (`ulimit -f`: the process's `RLIMIT_FSIZE`, with
//! `SIGXFSZ` ignored as a shell leaves it, so writes past it fail with `EFBIG` — no root and no small
//! filesystem needed) stops each writing verb part-way. Each must exit 1 with an error that names
//! the output, says what it needed at least and what is free there, leave nothing behind, and
//! leave its inputs as they were.

use std::path::Path;
use std::process::{Command, Output};

use kiln_fixtures::testing::{BuildEnv, sha256};

use crate::util::{KILN, assert_success, kiln};

/// `kiln ARGS` under a file-size limit of `blocks` (the shell's `ulimit -f` unit).
fn limited(blocks: u64, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" \"$@\""
        ))
        .arg(KILN)
        .args(args)
        .output()
        .expect("sh")
}

/// Exit 1, the output directory named with what was needed and free, nothing left in `out_dir`.
fn assert_no_room(out: &Output, out_dir: &Path, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    let hint = format!(
        "kiln: no room for the output in {}: it needed at least ",
        out_dir.display()
    );
    let line = err
        .lines()
        .find(|l| l.starts_with(&hint))
        .unwrap_or_else(|| panic!("{what}: no {hint:?} line in {err}"));
    assert!(
        line.contains(" are free there") && line.contains("nothing was left behind"),
        "{what}: {line}"
    );
    // The bytes it needed are past the limit that stopped it.
    let needed: u64 = line[hint.len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{what}: {line}"));
    assert!(needed > 0, "{what}: {line}");
    let left: Vec<_> = std::fs::read_dir(out_dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "{what} left {left:?} in {}",
        out_dir.display()
    );
}

const SPEC: &str = "cluster:
  name: full
  k3s: { version: v1.34.3+k3s1, token_file: token }
  network:
    match: mac
    interface: lan0
    ipv4: { cidr: 10.0.2.0/24, gateway: 10.0.2.2 }
    dns: [10.0.2.3]
nodes:
  - { name: s1, role: server, ipv4: 10.0.2.11, mac: \"52:54:00:00:00:11\" }
  - { name: a1, role: agent, ipv4: 10.0.2.12, mac: \"52:54:00:00:00:12\" }
";

#[test]
fn outputs_that_do_not_fit_say_so_and_leave_nothing() {
    let env = BuildEnv::new("v1.34.3+k3s1", 64 << 10);
    let base = env.base.path.clone();
    let base_sum = sha256(&base);
    let recipe = env.root.join("recipe.yaml");
    std::fs::write(
        &recipe,
        kiln_fixtures::recipe_yaml("node", &env.base, &env.assets, ""),
    )
    .unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_owned();

    // build: the golden image does not fit in 1 MiB.
    let out = env.root.join("build");
    let r = limited(2048, &["build", &s(&recipe), "-o", &s(&out), "-q"]);
    assert_no_room(&r, &out, "build");
    assert_eq!(sha256(&base), base_sum, "build changed its base");

    // convert: neither does the flattened base.
    let out = env.root.join("convert");
    std::fs::create_dir_all(&out).unwrap();
    let dest = out.join("flat.qcow2");
    let r = limited(
        2048,
        &["convert", &s(&base), &s(&dest), "--compress", "none"],
    );
    assert_no_room(&r, &out, "convert");
    assert_eq!(sha256(&base), base_sum, "convert changed its input");

    // seed and cluster: a seed ISO does not fit in 16 KiB.
    let spec = env.root.join("spec.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    let out = env.root.join("seed");
    let r = limited(32, &["seed", &s(&spec), "-o", &s(&out)]);
    assert_no_room(&r, &out, "seed");

    let golden_dir = env.root.join("golden");
    assert_success(&kiln(&["build", &s(&recipe), "-o", &s(&golden_dir), "-q"]));
    let golden = golden_dir.join("node.qcow2");
    let golden_sum = sha256(&golden);
    let out = env.root.join("cluster");
    let (spec, golden, out_s) = (s(&spec), s(&golden), s(&out));
    let args = ["cluster", &spec, "--golden", &golden, "-o", &out_s];
    assert_no_room(&limited(32, &args), &out, "cluster");
    assert_eq!(
        sha256(Path::new(&golden)),
        golden_sum,
        "cluster changed its golden"
    );
    // Without the limit the same command succeeds.
    assert_success(&kiln(&args));
}
