//! `write_seed`: complete-or-nothing output, mode 0600, replacement of an older seed.

use std::os::unix::fs::PermissionsExt;

use kiln_nocloud::{ClusterSpec, SeedFormat, Token, render_all, write_seed};

fn seeds() -> Vec<kiln_nocloud::NodeSeed> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../recipes/clusters/libvirt-3node.yaml");
    let spec = ClusterSpec::load(&p).expect("load");
    render_all(&spec, &Token::new("t0k3n")).expect("render")
}

#[test]
fn seeds_are_0600_replace_old_ones_and_leave_no_temporaries() {
    let d = tempfile::tempdir().expect("tempdir");
    let s = &seeds()[0];
    for fmt in [SeedFormat::Iso, SeedFormat::Vfat, SeedFormat::Dir] {
        let p = d.path().join(fmt.file_name(&s.node));
        let first = write_seed(s, fmt, 0, &p).expect("write");
        let again = write_seed(s, fmt, 0, &p).expect("rewrite");
        assert_eq!(first, again, "{fmt:?}: same input, same digest");
        let later = write_seed(s, fmt, 86_400, &p).expect("other epoch");
        if fmt != SeedFormat::Dir {
            assert_ne!(first, later, "{fmt:?}: the epoch is recorded");
        }
        let m = std::fs::metadata(&p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(
            m,
            if fmt == SeedFormat::Dir { 0o700 } else { 0o600 },
            "{fmt:?}"
        );
    }
    let names: Vec<String> = std::fs::read_dir(d.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("kiln-tmp")), "{names:?}");
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn a_failed_write_names_the_path_and_leaves_nothing() {
    let d = tempfile::tempdir().expect("tempdir");
    let s = &seeds()[0];
    let p = d.path().join("missing-dir").join("x-seed.iso");
    let e = write_seed(s, SeedFormat::Iso, 0, &p).expect_err("no parent");
    assert!(e.to_string().contains("x-seed.iso"), "{e}");
    assert!(!e.to_string().contains("t0k3n"));
    assert_eq!(std::fs::read_dir(d.path()).expect("ls").count(), 0);
}
