//! `kiln ls` / `kiln cat` on a zlib-compressed qcow2 of a GPT disk (made by mkfs.ext4 -d, sgdisk and
//! qemu-img convert -c), checked against debugfs on the raw partition.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::Command;

use crate::util::{KILN, kiln};

use kiln_ext4::GuestPath;
use kiln_fixtures::testing::{self, run};
use kiln_fixtures::{self as fixtures, BaseSpec};

/// Returns (qcow2 path, raw root partition path).
fn fixture(dir: &Path) -> (String, String) {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::create_dir_all(src.join("var/many")).unwrap();
    std::fs::write(src.join("etc/hostname"), "golden\n").unwrap();
    std::os::unix::fs::symlink("../etc/hostname", src.join("etc/hn-link")).unwrap();
    for i in 0..500 {
        std::fs::write(src.join(format!("var/many/f{i:03}")), format!("{i}\n")).unwrap();
    }
    let root = dir.join("root.ext4");
    testing::mkfs_ext4(&root, 40 << 20, Some(&src)).unwrap();
    let qcow = testing::gpt_qcow2(dir, "disk.qcow2", &root, 0)
        .unwrap()
        .qcow2;
    (qcow.display().to_string(), root.display().to_string())
}

#[test]
fn ls_and_cat_agree_with_debugfs() {
    let dir = tempfile::tempdir().unwrap();
    let (qcow, root) = fixture(dir.path());
    let out = kiln(&["cat", &format!("{qcow}:/etc/hn-link")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout,
        run(Command::new("debugfs")
            .args(["-R", "cat /etc/hostname"])
            .arg(&root))
        .into_bytes()
    );

    let out = kiln(&["ls", "--json", &format!("{qcow}:/var/many")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    let mut theirs: Vec<String> = run(Command::new("debugfs")
        .args(["-R", "ls -p /var/many"])
        .arg(&root))
    .lines()
    .filter_map(|l| l.split('/').nth(5).map(str::to_owned))
    .filter(|n| !n.is_empty() && n != "." && n != "..")
    .collect();
    theirs.sort();
    assert_eq!(ours.len(), 500);
    assert_eq!(ours, theirs);

    let out = kiln(&["ls", &format!("{qcow}:/etc")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("hn-link -> ../etc/hostname"), "{text}");

    // Bad input exits 2 with a message naming the problem.
    for (args, needle) in [
        (
            vec!["cat".to_owned(), format!("{qcow}:/nope")],
            "no such file",
        ),
        (vec!["ls".to_owned(), format!("{qcow}:/etc/../x")], ".."),
        (
            vec![
                "ls".to_owned(),
                format!("{qcow}:/"),
                "--partition".into(),
                "14".into(),
            ],
            "not an ext2/3/4",
        ),
    ] {
        let out = Command::new(KILN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Run kiln with a stdout pipe whose reader is already gone: the first write fails with EPIPE.
fn kiln_into_closed_pipe(args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(KILN)
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

/// `kiln … | head` stops quietly: exit 0, nothing on stderr, no panic — both for verbs that print
/// lines (`ls`, `scrub --list`) and for `cat`, which streams file data.
#[test]
fn a_closed_stdout_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (qcow, _) = fixture(dir.path());
    let many = format!("{qcow}:/var/many");
    let hostname = format!("{qcow}:/etc/hostname");
    for args in [
        vec!["ls", many.as_str()],
        vec!["cat", hostname.as_str()],
        vec!["scrub", "--list"],
    ] {
        let out = kiln_into_closed_pipe(&args);
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).as_ref()
            ),
            (Some(0), ""),
            "kiln {args:?} into a closed pipe"
        );
    }
}

/// The disk of a VM that stopped uncleanly — a journal to replay, not cleanly unmounted — is
/// listed and read as it is, like debugfs does, with a warning on stderr; the image is unchanged.
#[test]
fn an_unclean_filesystem_is_read_as_it_is_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hostname"), "crashed\n").unwrap();
    let root = dir.path().join("root.ext4");
    testing::mkfs_ext4(&root, 16 << 20, Some(&src)).unwrap();
    for cmd in ["feature needs_recovery", "ssv state 0"] {
        run(Command::new("debugfs").args(["-w", "-R", cmd]).arg(&root));
    }
    let before = std::fs::read(&root).unwrap();
    let out = kiln(&["cat", &format!("{}:/etc/hostname", root.display())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(out.stdout, b"crashed\n");
    assert!(
        stderr.contains("not left clean") && stderr.contains("journal needs recovery"),
        "{stderr}"
    );
    assert!(stderr.contains("not cleanly unmounted"), "{stderr}");
    let out = kiln(&["ls", &format!("{}:/etc", root.display())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hostname"));
    let theirs = run(Command::new("debugfs")
        .args(["-R", "cat /etc/hostname"])
        .arg(&root));
    assert_eq!(theirs, "crashed\n");
    assert!(
        std::fs::read(&root).unwrap() == before,
        "the image was changed"
    );
}

/// `(name, size)` of every entry of `dir` but `.` and `..`, as debugfs lists them (`ls -p`, names
/// as raw bytes; no size for a directory), each name escaped the way kiln shows names.
fn debugfs_entries(part: &Path, dir: &str) -> Vec<(String, Option<u64>)> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("ls -p {dir}"))
        .arg(part)
        .output()
        .unwrap();
    let mut v: Vec<(String, Option<u64>)> = out
        .stdout
        .split(|&b| b == b'\n')
        .filter_map(|l| {
            // `/ino/mode/uid/gid/name/size/`: a name never holds a `/`.
            let f: Vec<&[u8]> = l.split(|&b| b == b'/').collect();
            let size = std::str::from_utf8(f.get(6)?).ok()?.parse().ok();
            Some((GuestPath::new(f.get(5)?).to_string(), size))
        })
        .filter(|(n, _)| n != "." && n != "..")
        .collect();
    v.sort();
    v
}

/// The generated base holds files whose names are not UTF-8 (`/tmp/bad\xffname`,
/// `/var/log/bad\xfe.log`): `kiln ls` lists them in the escaped form (`--json` too), as debugfs
/// lists the same bytes; `kiln cat` and `kiln ls` take such a name as bytes on the command line.
#[test]
fn names_that_are_not_utf8_are_listed_escaped_and_can_be_named() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixtures::make_base(dir.path(), "base.qcow2", &BaseSpec::small()).unwrap();
    let part = fixtures::extract_root_partition(&base.path, dir.path()).unwrap();
    let qcow = base.path.display().to_string();
    for d in ["/tmp", "/var/log"] {
        let out = kiln(["ls", "--json", &format!("{qcow}:{d}")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut ours: Vec<(String, Option<u64>)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_owned(),
                    e["size"].as_u64().filter(|_| e["kind"] != "dir"),
                )
            })
            .collect();
        ours.sort();
        assert_eq!(ours, debugfs_entries(&part, d), "{d}");
    }
    let bad = GuestPath::new(fixtures::NON_UTF8_TMP);
    assert!(
        debugfs_entries(&part, "/tmp")
            .iter()
            .any(|(n, _)| n == r"bad\xffname")
    );

    // `ls -l` style: debugfs's `ls -l` escapes this name the same way.
    let out = kiln(["ls", &format!("{qcow}:/tmp")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.ends_with(r" bad\xffname")), "{text}");
    let theirs = run(Command::new("debugfs")
        .args(["-R", "ls -l /tmp"])
        .arg(&part));
    assert!(theirs.contains(r" bad\xffname"), "{theirs}");

    // Named on the command line as bytes: cat gives what debugfs gives, ls shows the one entry.
    let spec = |p: &[u8]| {
        let mut a = format!("{qcow}:").into_bytes();
        a.extend_from_slice(p);
        OsString::from_vec(a)
    };
    let out = kiln([OsString::from("cat"), spec(bad.as_bytes())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut req = b"cat ".to_vec();
    req.extend_from_slice(bad.as_bytes());
    let want = Command::new("debugfs")
        .arg("-R")
        .arg(OsString::from_vec(req))
        .arg(&part)
        .output()
        .unwrap()
        .stdout;
    assert!(!want.is_empty());
    assert_eq!(out.stdout, want);
    let out = kiln([
        OsString::from("ls"),
        OsString::from("--json"),
        spec(bad.as_bytes()),
    ]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], r"bad\xffname", "{list}");

    // The escaped form is not a name: typed literally it names `bad\xffname` with a backslash,
    // which does not exist, and the error shows that backslash escaped.
    let out = kiln(["cat", &format!(r"{qcow}:/tmp/bad\xffname")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r"/tmp/bad\\xffname") && err.contains("no such file"),
        "{err}"
    );
}
