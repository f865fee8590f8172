//! Property tests: arbitrary trees (valid or not) never make the writers panic, and whatever
//! they write is deterministic and well-formed at the sector level.

#![allow(clippy::unwrap_used)]

use std::io::Cursor;

use kiln_seedvol::{IsoOptions, Tree, VfatOptions, write_iso, write_vfat};
use proptest::prelude::*;

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-zA-Z0-9._-]{1,14}",
        2 => "[a-z\u{e9}\u{20ac} .;*?<|]{1,8}",
        1 => Just("\u{1F600}".to_owned()),
        1 => Just(String::new()),
        1 => Just("..".to_owned()),
        1 => "[x]{60,70}",
    ]
}

#[derive(Debug, Clone)]
struct Op {
    path: Vec<String>,
    dir: bool,
    len: usize,
    mode: u32,
}

fn op() -> impl Strategy<Value = Op> {
    (
        prop::collection::vec(component(), 1..5),
        any::<bool>(),
        0usize..5000,
        prop_oneof![
            0u32..0o10000,
            Just(0o100_644),
            Just(0o040_755),
            any::<u32>()
        ],
    )
        .prop_map(|(path, dir, len, mode)| Op {
            path,
            dir,
            len,
            mode,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn writers_never_panic_and_are_deterministic(ops in prop::collection::vec(op(), 0..40), epoch in 0u64..6_000_000_000) {
        let mut tree = Tree::new();
        for (i, op) in ops.iter().enumerate() {
            let path = op.path.join("/");
            let _ = if op.dir {
                tree.add_dir(&path, op.mode)
            } else {
                tree.add_file(&path, vec![i as u8; op.len], op.mode)
            };
        }
        let opts = IsoOptions { volume_id: "cidata".into(), epoch };
        let mut a = Vec::new();
        match write_iso(&tree, &opts, &mut a) {
            Ok(n) => {
                prop_assert_eq!(n as usize, a.len());
                prop_assert_eq!(a.len() % 2048, 0);
                let mut b = Vec::new();
                write_iso(&tree, &opts, &mut b).unwrap();
                prop_assert!(a == b);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        let vopts = VfatOptions { volume_label: "CIDATA".into(), epoch };
        let mut v = Cursor::new(Vec::new());
        match write_vfat(&tree, &vopts, &mut v) {
            Ok(()) => {
                let mut w = Cursor::new(Vec::new());
                write_vfat(&tree, &vopts, &mut w).unwrap();
                prop_assert!(v.into_inner() == w.into_inner());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

/// Random valid trees, checked by pycdlib through Rock Ridge, Joliet and plain ISO 9660.
mod oracle {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::process::Command;

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => "[a-z0-9][a-zA-Z0-9._-]{0,20}",
            1 => "[A-Z\u{e9}\u{fc}\u{20ac} ]{1,6}[a-z]",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]

        #[test]
        fn pycdlib_agrees_on_random_trees(
            entries in prop::collection::vec(
                (prop::collection::vec(name(), 1..4), 0usize..3000, prop::sample::select(vec![0o644u32, 0o600, 0o755, 0o444])),
                1..60,
            )
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("expected");
            fs::create_dir(&root).unwrap();
            let mut tree = Tree::new();
            for (i, (comps, len, mode)) in entries.iter().enumerate() {
                let path = comps.join("/");
                let data: Vec<u8> = (0..*len).map(|j| (i * 31 + j) as u8).collect();
                if tree.add_file(&path, data.clone(), *mode).is_err() {
                    continue; // duplicate, or a parent that is a file
                }
                let full = root.join(&path);
                fs::create_dir_all(full.parent().unwrap()).unwrap();
                for parent in Path::new(&path).ancestors().skip(1) {
                    if !parent.as_os_str().is_empty() {
                        fs::set_permissions(root.join(parent), fs::Permissions::from_mode(0o755)).unwrap();
                    }
                }
                fs::write(&full, &data).unwrap();
                fs::set_permissions(&full, fs::Permissions::from_mode(*mode)).unwrap();
            }
            let iso = tmp.path().join("t.iso");
            let opts = IsoOptions { volume_id: "cidata".into(), epoch: 1_700_000_000 };
            write_iso(&tree, &opts, &mut fs::File::create(&iso).unwrap()).unwrap();
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/check_iso.py");
            let out = Command::new("python3")
                .args([script, iso.to_str().unwrap(), root.to_str().unwrap(), "cidata"])
                .output()
                .expect("python3 missing (pycdlib oracle); see .ci/run");
            prop_assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Found by fuzz/seedvol_write: `longfi~1.txt` is the 8.3 alias fatfs gives `longfilename.txt`
/// (created first, as it sorts first), so creating it opened the sibling instead — the two
/// directories were merged (or a file overwritten) without an error. Now refused.
#[test]
fn vfat_refuses_a_name_equal_to_a_siblings_short_alias() {
    let opts = VfatOptions {
        volume_label: "CIDATA".into(),
        epoch: 1_700_000_000,
    };
    for dir in [false, true] {
        let mut tree = Tree::new();
        if dir {
            tree.add_dir("longfilename.txt", 0o755).unwrap();
            tree.add_file("longfilename.txt/a", b"a".to_vec(), 0o644)
                .unwrap();
            tree.add_dir("longfi~1.txt", 0o755).unwrap();
            tree.add_file("longfi~1.txt/b", b"b".to_vec(), 0o644)
                .unwrap();
        } else {
            tree.add_file("longfilename.txt", b"first".to_vec(), 0o644)
                .unwrap();
            tree.add_file("longfi~1.txt", b"second".to_vec(), 0o644)
                .unwrap();
        }
        let err = write_vfat(&tree, &opts, &mut Cursor::new(Vec::new())).unwrap_err();
        assert!(
            matches!(
                &err,
                kiln_seedvol::Error::AliasCollision { path, other }
                    if path == "longfi~1.txt" && other == "longfilename.txt"
            ),
            "{err}"
        );
    }
    // In the other order (the alias-shaped name created first) fatfs picks another alias.
    let mut tree = Tree::new();
    tree.add_file("LONGFI~1.TXT", b"first".to_vec(), 0o644)
        .unwrap();
    tree.add_file("longfilename.txt", b"second".to_vec(), 0o644)
        .unwrap();
    write_vfat(&tree, &opts, &mut Cursor::new(Vec::new())).unwrap();
}
