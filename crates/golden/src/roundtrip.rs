//! Property tests: every public input and output type — the recipe (valid values only), the
//! manifest, the verify and diff reports, step reports and build outputs — serialises to JSON and
//! to YAML and reads back to an equal value. The recipe reads back through [`Recipe::from_yaml`],
//! the parser `Recipe::load` uses, and keeps its digest and its validity; the manifest through
//! [`Manifest::from_json`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::diff::{Difference, EntryKind};
use crate::inject::{Asset, Injected, InjectedKind, K3sRelease};
use crate::manifest::{
    BaseInfo, BootFileAction, BootFileRecord, MANIFEST_VERSION, Manifest, OutputInfo, ScrubRecord,
};
use crate::pipeline::{BuildOutput, Step, StepReport};
use crate::recipe::*;
use crate::scrub::{Action, CATALOG, Change};
use crate::verify::VerifyReport;

/// Text that YAML must quote or escape to keep: YAML 1.1 booleans and nulls, octal- and
/// sexagesimal-looking numbers, indicators, leading and trailing blanks, line breaks, tabs,
/// quotes, backslashes and non-ASCII — and arbitrary printable text.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ -~]{0,24}",
        2 => "(?s)[a-z \n\t\"'\\\\:#{}\\[\\],&*!|>%@`-]{0,24}",
        1 => "[a-z\u{e9}\u{20ac}\u{1F600} ]{0,8}",
        2 => prop::sample::select(vec![
            "", " ", "yes", "No", "on", "OFF", "y", "n", "true", "null", "~", "0644", "0o17",
            "0x1F", "1e3", ".inf", "-.nan", "12:30", "1:2", "- x", "? k", "a: b", "#c", "!tag",
            "&a", "*a", "|", ">", "'q'", "\"q\"", " lead", "trail ", "line\n", "\nlead",
            "two\n\nblank", "tab\there", "crlf\r\n", "\\", "---", "...", "%YAML",
        ])
        .prop_map(str::to_owned),
    ]
}

fn sha() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}"
}

/// A host path as a recipe would write it: relative, `../`-relative or absolute.
fn host_path() -> impl Strategy<Value = PathBuf> {
    "(/|\\.\\./)?[a-zA-Z0-9_-][a-zA-Z0-9 ._+-]{0,8}(/[a-zA-Z0-9_-][a-zA-Z0-9 ._+-]{0,8}){0,3}"
        .prop_map(PathBuf::from)
}

fn guest_path() -> impl Strategy<Value = String> {
    "(/[a-zA-Z0-9_-][a-zA-Z0-9._+-]{0,8}){1,4}"
}

/// A guest path as bytes: mostly UTF-8 ones, some with any byte but `/` and NUL (names that are
/// not UTF-8, backslashes, control characters).
fn byte_guest_path() -> impl Strategy<Value = kiln_ext4::GuestPathBuf> {
    let name = prop::collection::vec(
        any::<u8>().prop_filter("a name byte", |b| *b != b'/' && *b != 0),
        1..8,
    );
    prop_oneof![
        3 => guest_path().prop_map(kiln_ext4::GuestPathBuf::from),
        1 => prop::collection::vec(name, 1..4).prop_map(|names| {
            let mut p = kiln_ext4::GuestPathBuf::from("/");
            for n in names {
                p.push(n);
            }
            p
        }),
    ]
}

fn conf_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_@-][a-zA-Z0-9._@-]{0,10}"
}

fn mode() -> impl Strategy<Value = Mode> {
    (0u16..=0o7777).prop_map(Mode)
}

fn owner() -> impl Strategy<Value = Owner> {
    prop_oneof![
        Just(Owner::ROOT),
        (any::<u32>(), any::<u32>()).prop_map(|(u, g)| Owner::new(u, g))
    ]
}

fn unit() -> impl Strategy<Value = String> {
    (
        "[a-z0-9_@-][a-z0-9._@-]{0,10}",
        prop::sample::select(vec![
            ".service", ".socket", ".timer", ".target", ".path", ".mount",
        ]),
    )
        .prop_map(|(stem, kind)| format!("{stem}{kind}"))
}

fn file_entry() -> impl Strategy<Value = FileEntry> {
    (
        guest_path(),
        prop_oneof![
            text().prop_map(Ok),
            (host_path(), proptest::option::of(sha())).prop_map(Err)
        ],
        mode(),
        owner(),
    )
        .prop_map(|(path, what, mode, owner)| {
            let f = match what {
                Ok(content) => FileEntry::inline(path, content),
                Err((source, None)) => FileEntry::from_source(path, source),
                Err((source, Some(pin))) => FileEntry::from_source(path, source).with_sha256(pin),
            };
            f.with_mode(mode).with_owner(owner)
        })
}

fn prerequisite() -> impl Strategy<Value = Prerequisite> {
    prop_oneof![
        file_entry().prop_map(Prerequisite::from),
        (guest_path(), mode(), owner())
            .prop_map(|(p, m, o)| DirEntry::new(p).with_mode(m).with_owner(o).into()),
        (guest_path(), "[^\0]{1,20}", owner())
            .prop_map(|(p, t, o)| SymlinkEntry::new(p, t).with_owner(o).into()),
        (
            conf_name(),
            prop::collection::vec("[a-zA-Z0-9_-]{1,12}", 1..4)
        )
            .prop_map(|(n, m)| ModulesLoad::new(n, m).into()),
        (
            conf_name(),
            prop::collection::btree_map("[a-z0-9._/*-]{1,16}", "[^\n]{0,12}", 1..4)
        )
            .prop_map(|(n, s)| Sysctl::new(n, s).into()),
        (unit(), proptest::option::of(unit())).prop_map(|(u, w)| {
            let e = SystemdEnable::new(u);
            match w {
                Some(w) => e.with_wanted_by(w).into(),
                None => e.into(),
            }
        }),
        prop::collection::vec("[a-zA-Z0-9]{1,10}", 1..4).prop_map(|l| Datasource::new(l).into()),
        (
            "(\\.\\./|/)?([a-z0-9_-]{1,6}/){0,2}",
            "[a-z0-9][a-z0-9.+~_-]{0,12}",
            sha()
        )
            .prop_map(|(dir, stem, pin)| DebEntry::new(format!("{dir}{stem}.deb"), pin).into()),
    ]
}

/// A valid `boot_files` entry: one of content, flags or lines.
fn boot_file() -> impl Strategy<Value = BootFile> {
    let label = "[A-Za-z0-9_-]{1,11}";
    let flag = "[a-z_.]{1,8}(=[a-z0-9,.:]{1,8})?";
    prop_oneof![
        (label, guest_path(), text()).prop_map(|(l, p, c)| BootFile::content(l, p, c)),
        (label, guest_path(), prop::collection::vec(flag, 1..4))
            .prop_map(|(l, p, f)| BootFile::cmdline_add(l, p, f)),
        (
            label,
            guest_path(),
            prop::collection::vec("[a-z_=0-9 ]{0,8}[a-z]", 1..4)
        )
            .prop_map(|(l, p, x)| BootFile::lines(l, p, x)),
    ]
}

fn recipe() -> impl Strategy<Value = Recipe> {
    let scrub = prop::collection::vec(0u8..3, CATALOG.len()).prop_map(|choice| {
        let mut s = ScrubSelection::default();
        for (op, c) in CATALOG.iter().zip(choice) {
            s = match c {
                1 => s.with_enabled(op.name),
                2 => s.with_disabled(op.name),
                _ => s,
            };
        }
        s
    });
    let k3s = (
        "v[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}(-rc[0-9])?\\+k3s[0-9]",
        host_path(),
        proptest::option::of(sha()),
        any::<bool>(),
    )
        .prop_map(|(v, assets, pin, airgap)| {
            let k = K3s::new(v, assets).with_airgap_images(airgap);
            match pin {
                Some(p) => k.with_install_sh_sha256(p),
                None => k,
            }
        });
    (
        (
            "[a-zA-Z0-9_+-][a-zA-Z0-9._+-]{0,20}",
            host_path(),
            sha(),
            prop::sample::select(vec![Arch::Amd64, Arch::Arm64]),
            0i64..=15_032_385_535,
        ),
        prop::sample::select(vec![
            OutputKind::Qcow2,
            OutputKind::Overlay,
            OutputKind::Raw,
        ]),
        prop::sample::select(vec![
            Compression::Zstd,
            Compression::Zlib,
            Compression::None,
        ]),
        prop::sample::select(vec![MachineIdMode::Uninitialized, MachineIdMode::Empty]),
        scrub,
        proptest::option::of(k3s),
        (
            prop::collection::vec(prerequisite(), 0..6),
            prop::collection::vec(boot_file(), 0..3),
        ),
    )
        .prop_map(
            |((name, path, pin, arch, sde), kind, comp, mid, scrub, k3s, (prereqs, boots))| {
                let mut r = Recipe::new(name, Base::new(path, pin), arch, sde)
                    .with_output(Output::new(kind, comp))
                    .with_machine_id(mid)
                    .with_scrub(scrub);
                r.k3s = k3s;
                for p in prereqs {
                    r = r.with_prerequisite(p);
                }
                for b in boots {
                    r = r.with_boot_file(b);
                }
                r
            },
        )
}

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(vec![
        Action::Removed,
        Action::Truncated,
        Action::Reset,
        Action::Linked,
    ])
}

fn injected() -> impl Strategy<Value = Injected> {
    (
        guest_path(),
        prop::sample::select(vec![
            InjectedKind::Dir,
            InjectedKind::File,
            InjectedKind::Symlink,
        ]),
        proptest::option::of(sha()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(mode().prop_map(|m| m.to_string())),
        (any::<u32>(), any::<u32>()),
        proptest::option::of(text()),
        prop_oneof![
            Just("k3s".to_owned()),
            (0usize..99).prop_map(|i| format!("prerequisites[{i}]"))
        ],
    )
        .prop_map(
            |(path, kind, sha256, size, mode, (uid, gid), target, from)| Injected {
                path,
                kind,
                sha256,
                size,
                mode,
                uid,
                gid,
                target,
                from,
            },
        )
}

fn boot_file_record() -> impl Strategy<Value = BootFileRecord> {
    (
        text(),
        any::<u32>(),
        text(),
        prop::sample::select(vec![
            BootFileAction::Created,
            BootFileAction::Replaced,
            BootFileAction::Unchanged,
        ]),
        sha(),
        any::<u64>(),
        (0usize..99).prop_map(|i| format!("boot_files[{i}]")),
    )
        .prop_map(
            |(partition, number, path, action, sha256, size, from)| BootFileRecord {
                partition,
                number,
                path,
                action,
                sha256,
                size,
                from,
            },
        )
}

fn manifest() -> impl Strategy<Value = Manifest> {
    let asset = ("[a-z0-9._-]{1,20}", sha(), any::<u64>(), guest_path()).prop_map(
        |(name, sha256, size, dest)| Asset {
            name,
            host_path: PathBuf::new(),
            sha256,
            size,
            dest,
        },
    );
    let k3s = (
        "v1\\.[0-9]{2}\\.[0-9]\\+k3s1",
        prop::collection::vec(asset, 0..4),
    )
        .prop_map(|(version, assets)| K3sRelease { version, assets });
    let scrub = prop::collection::vec(
        (
            "[a-z-]{1,16}",
            prop::collection::vec(
                (byte_guest_path(), action()).prop_map(|(path, action)| Change { path, action }),
                0..4,
            ),
        )
            .prop_map(|(op, changed)| ScrubRecord { op, changed }),
        0..5,
    );
    let output = (
        "[a-z0-9._-]{1,20}",
        prop::sample::select(vec![
            OutputKind::Qcow2,
            OutputKind::Overlay,
            OutputKind::Raw,
        ]),
        prop::sample::select(vec![
            Compression::Zstd,
            Compression::Zlib,
            Compression::None,
        ]),
        proptest::option::of(text()),
        sha(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(file, kind, compression, backing, sha256, size, virtual_size)| OutputInfo {
                file,
                kind,
                compression,
                backing,
                sha256,
                size,
                virtual_size,
            },
        );
    let base = (text(), sha(), any::<u64>(), any::<u32>()).prop_map(
        |(file, sha256, virtual_size, root_partition)| BaseInfo {
            file,
            sha256,
            virtual_size,
            root_partition,
        },
    );
    (
        (
            text(),
            sha(),
            prop::sample::select(vec![Arch::Amd64, Arch::Arm64]),
        ),
        any::<i64>(),
        prop::sample::select(vec![MachineIdMode::Uninitialized, MachineIdMode::Empty]),
        base,
        proptest::option::of(k3s),
        scrub,
        (
            prop::collection::vec(injected(), 0..6),
            prop::collection::vec(boot_file_record(), 0..3),
        ),
        output,
    )
        .prop_map(
            |(
                (name, recipe_sha256, arch),
                sde,
                machine_id,
                base,
                k3s,
                scrub,
                (injected, boot_files),
                output,
            )| {
                Manifest {
                    kiln_manifest: MANIFEST_VERSION,
                    name,
                    recipe_sha256,
                    arch,
                    source_date_epoch: sde,
                    machine_id,
                    base,
                    k3s,
                    scrub,
                    injected,
                    boot_files,
                    output,
                }
            },
        )
}

fn entry_kind() -> impl Strategy<Value = EntryKind> {
    prop::sample::select(vec![
        EntryKind::File,
        EntryKind::Dir,
        EntryKind::Symlink,
        EntryKind::Char,
        EntryKind::Block,
        EntryKind::Fifo,
        EntryKind::Socket,
        EntryKind::Unknown,
    ])
}

fn difference() -> impl Strategy<Value = Difference> {
    prop_oneof![
        (byte_guest_path(), entry_kind()).prop_map(|(path, kind)| Difference::Added { path, kind }),
        (byte_guest_path(), entry_kind())
            .prop_map(|(path, kind)| Difference::Removed { path, kind }),
        (byte_guest_path(), any::<u64>(), any::<u64>()).prop_map(|(path, size_a, size_b)| {
            Difference::Content {
                path,
                size_a,
                size_b,
            }
        }),
        (byte_guest_path(), prop::collection::vec(text(), 0..3))
            .prop_map(|(path, fields)| Difference::Metadata { path, fields }),
    ]
}

fn verify_report() -> impl Strategy<Value = VerifyReport> {
    (
        sha(),
        any::<usize>(),
        any::<usize>(),
        prop::collection::vec(text(), 0..4),
    )
        .prop_map(
            |(image_sha256, injected, scrubbed, problems)| VerifyReport {
                image_sha256,
                injected,
                scrubbed,
                problems,
            },
        )
}

fn step_report() -> impl Strategy<Value = StepReport> {
    (
        prop::sample::select(Step::ALL.to_vec()),
        text(),
        prop::collection::vec(text(), 0..4),
        any::<u64>(),
    )
        .prop_map(|(name, summary, changed, millis)| StepReport {
            name,
            summary,
            changed,
            millis,
        })
}

fn build_output() -> impl Strategy<Value = BuildOutput> {
    (
        host_path(),
        host_path(),
        manifest(),
        prop::collection::vec(step_report(), 0..4),
    )
        .prop_map(|(image, manifest_path, manifest, steps)| BuildOutput {
            image,
            manifest_path,
            manifest,
            steps,
        })
}

fn json<T: Serialize + DeserializeOwned>(x: &T) -> T {
    let bytes = serde_json::to_vec(x).expect("serialise to JSON");
    serde_json::from_slice(&bytes).expect("read the JSON back")
}

fn yaml<T: Serialize + DeserializeOwned>(x: &T) -> T {
    let text = serde_saphyr::to_string(x).expect("serialise to YAML");
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("read back {text:?}: {e}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn recipes_round_trip_and_keep_their_digest(r in recipe()) {
        r.validate().unwrap();
        let text = serde_saphyr::to_string(&r).unwrap();
        let back = Recipe::from_yaml(text.as_bytes(), Path::new("r.yaml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        prop_assert_eq!(&back, &r, "{}", text);
        prop_assert_eq!(&json(&r), &r);
        prop_assert_eq!(back.digest(), r.digest());
        back.validate().unwrap();
        // The directory paths resolve against is not part of the value's digest.
        prop_assert_eq!(r.clone().with_base_dir("/elsewhere").digest(), r.digest());
    }

    #[test]
    fn manifests_round_trip(m in manifest()) {
        let bytes = m.to_json();
        prop_assert_eq!(&Manifest::from_json(&bytes, Path::new("m.json")).unwrap(), &m);
        prop_assert_eq!(&yaml(&m), &m);
    }

    #[test]
    fn reports_round_trip(
        v in verify_report(),
        d in prop::collection::vec(difference(), 0..6),
        b in build_output(),
    ) {
        prop_assert_eq!(&json(&v), &v);
        prop_assert_eq!(&yaml(&v), &v);
        prop_assert_eq!(&json(&d), &d);
        prop_assert_eq!(&yaml(&d), &d);
        prop_assert_eq!(&json(&b), &b);
        prop_assert_eq!(&yaml(&b), &b);
    }

    #[test]
    fn modes_and_owners_print_and_parse(m in mode(), o in owner()) {
        prop_assert_eq!(m.to_string().parse::<Mode>().unwrap(), m);
        prop_assert_eq!(o.to_string().parse::<Owner>().unwrap(), o);
        prop_assert_eq!(json(&(m, o)), (m, o));
        let doc = BTreeMap::from([("mode".to_owned(), m)]);
        prop_assert_eq!(yaml(&doc), doc);
        let doc = BTreeMap::from([("owner".to_owned(), o)]);
        prop_assert_eq!(yaml(&doc), doc);
    }
}
