//! YAML-1.1 traps: strings that a YAML 1.1 reader (cloud-init, netplan) would turn into booleans,
//! numbers, timestamps or null must come out quoted, and read back as the same strings.

use std::collections::BTreeMap;

use kiln_nocloud::docs::{CloudConfig, Command, ConfigValue, WriteFile};

const TRAPS: &[&str] = &[
    "on",
    "off",
    "On",
    "OFF",
    "yes",
    "no",
    "Yes",
    "NO",
    "y",
    "n",
    "true",
    "false",
    "True",
    "~",
    "null",
    "Null",
    "NULL",
    "",
    "12:30",
    "1:20:30",
    "0777",
    "0600",
    "0x1F",
    "0o17",
    "1e3",
    "1_000",
    ".inf",
    "-.Inf",
    ".nan",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "192.168.1.1",
    "- item",
    "key: value",
    "#comment",
    "@at",
    "`tick",
    "*alias",
    "&anchor",
    "!tag",
    "%directive",
    "[flow",
    "{flow",
    "'single",
    "\"double",
];

/// Is `line`'s value (after `prefix`) a quoted scalar?
fn quoted(v: &str) -> bool {
    (v.starts_with('"') && v.ends_with('"') && v.len() >= 2)
        || (v.starts_with('\'') && v.ends_with('\'') && v.len() >= 2)
}

/// Asserts that `text` holds `prefix` followed by `value` in double or single quotes.
fn assert_quoted(text: &str, prefix: &str, value: &str) {
    assert!(
        text.contains(&format!("{prefix}\"{value}\""))
            || text.contains(&format!("{prefix}'{value}'")),
        "{text}"
    );
}

#[test]
fn traps_are_quoted_in_maps_and_lists() {
    let mut m: BTreeMap<String, ConfigValue> = BTreeMap::new();
    for (i, t) in TRAPS.iter().enumerate() {
        m.insert(format!("k{i:02}"), ConfigValue::Str((*t).to_owned()));
    }
    let text = kiln_nocloud::yaml::to_string(&m, "traps").expect("serialize");
    for (i, t) in TRAPS.iter().enumerate() {
        let key = format!("k{i:02}: ");
        let line = text
            .lines()
            .find(|l| l.starts_with(&key))
            .unwrap_or_else(|| panic!("no line for {t:?} in\n{text}"));
        let v = &line[key.len()..];
        let safe_plain = *t == "192.168.1.1" && v == *t; // not a 1.1 number
        assert!(quoted(v) || safe_plain, "{t:?} came out unquoted as {v:?}");
    }
    // Must-quote set of the issue, checked explicitly.
    for t in ["on", "no", "yes", "12:30", "0777", "~", "null"] {
        let i = TRAPS.iter().position(|x| x == &t).expect("listed");
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("k{i:02}: ")))
            .expect("line");
        assert!(quoted(&line[5..]), "{t:?} not quoted: {line}");
    }
    // And it reads back as the same strings.
    let back: BTreeMap<String, String> = serde_saphyr_roundtrip(&text);
    for (i, t) in TRAPS.iter().enumerate() {
        assert_eq!(back[&format!("k{i:02}")], *t);
    }
}

#[test]
fn typed_values_stay_typed() {
    let m: BTreeMap<String, ConfigValue> = BTreeMap::from([
        ("a".to_owned(), ConfigValue::Bool(true)),
        ("b".to_owned(), ConfigValue::Str("true".into())),
        ("c".to_owned(), ConfigValue::Int(12)),
        ("d".to_owned(), ConfigValue::Str("12".into())),
    ]);
    let text = kiln_nocloud::yaml::to_string(&m, "typed").expect("serialize");
    for (line, present) in [
        ("a: true\n", true),
        ("c: 12\n", true),
        ("b: true\n", false),
        ("d: 12\n", false),
    ] {
        assert_eq!(text.contains(line), present, "{line:?} in {text}");
    }
}

#[test]
fn user_data_has_header_and_quoted_permissions() {
    let cc = CloudConfig {
        hostname: Some("on".into()),
        write_files: vec![WriteFile {
            path: "/x".into(),
            content: "no\n".into(),
            owner: Some("root:root".into()),
            permissions: Some("0777".into()),
            encoding: None,
            defer: None,
        }],
        runcmd: vec![
            Command::Argv(vec!["echo".into(), "yes".into()]),
            Command::Shell("12:30".into()),
        ],
        ..Default::default()
    };
    let text = String::from_utf8(cc.to_bytes().expect("bytes")).expect("utf8");
    assert!(text.starts_with("#cloud-config\n"), "{text}");
    assert_quoted(&text, "hostname: ", "on");
    assert_quoted(&text, "permissions: ", "0777");
    assert_quoted(&text, "- ", "yes");
    assert_quoted(&text, "- ", "12:30");
    assert!(text.ends_with('\n') && !text.ends_with("\n\n"));
}

fn serde_saphyr_roundtrip(text: &str) -> BTreeMap<String, String> {
    serde_saphyr::from_str(text).expect("parse back")
}
