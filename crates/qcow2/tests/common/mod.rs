//! Helpers for the oracle tests: deterministic data, and qemu-img / qemu-io as the reference.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run a tool and fail the test with its output if it does not succeed. A missing tool is a test
/// failure: CI installs every oracle.
pub fn run(cmd: &str, args: &[&str]) -> String {
    kiln_fixtures::testing::run(Command::new(cmd).args(args))
}

/// Like `run`, returning (success, stdout + stderr).
pub fn try_run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {cmd} (the oracle must be installed; see .ci/run): {e}")
    });
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[allow(unused_imports)]
pub use kiln_fixtures::testing::Rng;

/// Guest content with a mix of compressible text, incompressible noise and zero runs.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut v = vec![0u8; len];
    let mut i = 0;
    while i < len {
        let run = (rng.below(48 * 1024) as usize + 1).min(len - i);
        match rng.below(3) {
            0 => {} // zeros
            1 => {
                for (k, b) in v[i..i + run].iter_mut().enumerate() {
                    *b = b"kiln golden image cluster "[(k + i) % 26];
                }
            }
            _ => {
                for b in &mut v[i..i + run] {
                    *b = rng.next() as u8;
                }
            }
        }
        i += run;
    }
    v
}

/// qemu-img's view of every guest byte.
pub fn qemu_raw(img: &Path, dir: &Path) -> Vec<u8> {
    let out: PathBuf = dir.join(format!(
        "{}.oracle.raw",
        img.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    ));
    run("qemu-img", &["convert", "-U", "-O", "raw", s(img), s(&out)]);
    let data = std::fs::read(&out).expect("read oracle output");
    let _ = std::fs::remove_file(&out);
    data
}

pub fn qemu_check(img: &Path) {
    let (ok, out) = try_run("qemu-img", &["check", "-U", s(img)]);
    assert!(
        ok && out.contains("No errors were found"),
        "qemu-img check {}:\n{out}",
        img.display()
    );
    assert!(
        !out.contains("leaked"),
        "qemu-img check {} reports leaks:\n{out}",
        img.display()
    );
}

pub fn qemu_compare(a: &Path, b: &Path) {
    let (ok, out) = try_run("qemu-img", &["compare", "-U", s(a), s(b)]);
    assert!(
        ok,
        "qemu-img compare {} {}:\n{out}",
        a.display(),
        b.display()
    );
}

#[allow(unused_imports)]
pub use kiln_fixtures::testing::sha256;

/// Compare two byte images, reporting the first difference instead of dumping them.
#[track_caller]
/// `qemu-img check` finds `img` clean, and qemu-img reads `want` from it (`what` names the case).
pub fn assert_qemu_checks_and_reads(img: &Path, dir: &Path, want: &[u8], what: &str) {
    qemu_check(img);
    assert_same(&qemu_raw(img, dir), want, what);
}

pub fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let end = (i + 16).min(got.len());
        panic!(
            "{what}: first difference at byte {i}: got {:02x?}, want {:02x?}",
            &got[i..end],
            &want[i..end]
        );
    }
}

/// Write `data` as a raw file and let `qemu-img convert -c` turn it into a compressed qcow2 named
/// `name` in `dir`; `opts` are extra `-o` options (`""` for qemu's defaults).
/// `base.qcow2` in `dir`: [`qemu_compressed`] of `len` bytes of [`pattern`] `seed`.
pub fn compressed_base(dir: &Path, len: usize, seed: u64, opts: &str) -> PathBuf {
    qemu_compressed(dir, "base.qcow2", &pattern(len, seed), opts)
}

pub fn qemu_compressed(dir: &Path, name: &str, data: &[u8], opts: &str) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    std::fs::write(&raw, data).expect("write raw source");
    let out = dir.join(name);
    let mut args = vec!["convert", "-c", "-f", "raw", "-O", "qcow2"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([s(&raw), s(&out)]);
    run("qemu-img", &args);
    out
}
