//! Conventions checked as tests (rust-analyzer's `tidy`): the crate layering, where `unsafe` may
//! appear and how it is justified, and which dependencies library crates may not have. Run with
//! the rest of the suite (`cargo nextest run -p xtask`).

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};

    use crate::util::root;

    /// The library crates by layer: a crate may depend only on crates of a lower layer. A new crate
    /// must be placed here (and in ARCHITECTURE.md's crate graph).
    const LAYERS: &[&[&str]] = &[
        &["kiln-blockdev", "kiln-common"],
        &[
            "kiln-qcow2",
            "kiln-partition",
            "kiln-ext4",
            "kiln-seedvol",
            "kiln-vfat",
        ],
        &["kiln-nocloud"],
        &["kiln-golden", "kiln-cluster"],
    ];

    /// Dependencies that belong to the command line, never to a library crate.
    const CLI_ONLY: &[&str] = &["clap", "anyhow", "indicatif"];

    fn layer(name: &str) -> Option<usize> {
        LAYERS.iter().position(|l| l.contains(&name))
    }

    /// (package name, `[dependencies]` names) of every crate under crates/.
    fn library_crates() -> Vec<(String, Vec<String>, PathBuf)> {
        let mut out = Vec::new();
        let mut dirs: Vec<PathBuf> = fs::read_dir(root().join("crates"))
            .expect("crates/")
            .map(|e| e.expect("crates/ entry").path())
            .collect();
        dirs.sort();
        for dir in dirs {
            let text = fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
            let mut name = String::new();
            let mut deps = Vec::new();
            let mut section = "";
            for line in text.lines() {
                let line = line.trim();
                if line.starts_with('[') {
                    section = match line {
                        "[dependencies]" => "deps",
                        "[package]" => "package",
                        _ => "",
                    };
                    continue;
                }
                if section == "package"
                    && let Some(v) = line.strip_prefix("name = ")
                {
                    name = v.trim_matches('"').to_owned();
                }
                if section == "deps"
                    && let Some((key, _)) = line.split_once(['=', '.'])
                    && !key.trim().is_empty()
                {
                    deps.push(key.trim().to_owned());
                }
            }
            out.push((name, deps, dir));
        }
        out
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn no_crate_depends_on_a_crate_above_it() {
        let crates = library_crates();
        assert!(crates.len() >= 9, "{crates:?}");
        for (name, deps, _) in &crates {
            let own = layer(name).unwrap_or_else(|| panic!("{name} is in no layer of tidy.rs"));
            for d in deps.iter().filter(|d| d.starts_with("kiln-")) {
                let theirs = layer(d).unwrap_or_else(|| panic!("{d} is in no layer"));
                assert!(
                    theirs < own,
                    "{name} (layer {own}) depends on {d} (layer {theirs})"
                );
            }
        }
    }

    #[test]
    fn no_library_crate_depends_on_cli_crates() {
        for (name, deps, _) in library_crates() {
            for d in &deps {
                assert!(!CLI_ONLY.contains(&d.as_str()), "{name} depends on {d}");
            }
        }
    }

    #[test]
    fn unsafe_only_in_ext4_and_always_justified() {
        let mut files = Vec::new();
        for dir in [
            "crates",
            "src",
            "xtask/src",
            "fixtures/src",
            "tests",
            "examples",
        ] {
            let d = root().join(dir);
            if d.is_dir() {
                rust_files(&d, &mut files);
            }
        }
        let ext4 = root().join("crates/ext4");
        let mut blocks = 0;
        for f in files {
            let text = fs::read_to_string(&f).expect("read");
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                let is_unsafe = ["unsafe {", "unsafe fn", "unsafe impl", "unsafe extern"]
                    .iter()
                    .any(|t| code.contains(t));
                if !is_unsafe || f.ends_with("xtask/src/tidy.rs") {
                    continue;
                }
                assert!(
                    f.starts_with(&ext4),
                    "{}:{}: unsafe outside kiln-ext4",
                    f.display(),
                    i + 1
                );
                if code.contains("unsafe {") {
                    blocks += 1;
                    let above = &lines[i.saturating_sub(8)..=i];
                    assert!(
                        above.iter().any(|l| l.contains("// SAFETY:")),
                        "{}:{}: unsafe block without a // SAFETY: comment above it",
                        f.display(),
                        i + 1
                    );
                }
            }
        }
        assert!(
            blocks > 0,
            "no unsafe block found at all: the scan is broken"
        );
    }

    /// README's "Use kiln from Rust" shows the example provisioner's program verbatim, and the
    /// dependency lines it shows are the example's own: what a reader copies is what CI runs.
    #[test]
    fn readme_library_section_is_the_example() {
        let readme = fs::read_to_string(root().join("README.md")).expect("README.md");
        let section = readme
            .split("## Use kiln from Rust")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("README has a \"Use kiln from Rust\" section");
        let block = |fence: &str| -> String {
            let start = section
                .find(fence)
                .unwrap_or_else(|| panic!("no {fence} block in the section"));
            let body = &section[start + fence.len()..];
            body[..body.find("```\n").expect("closing fence")].to_owned()
        };
        let example = root().join("examples/provisioner");
        let program = fs::read_to_string(example.join("src/main.rs")).expect("main.rs");
        assert_eq!(
            block("```rust\n"),
            program,
            "README's program differs from the example's"
        );
        let manifest = fs::read_to_string(example.join("Cargo.toml")).expect("Cargo.toml");
        for line in block("```toml\n")
            .lines()
            .filter(|l| l.starts_with("kiln-"))
        {
            let (dep, path) = line
                .split_once('#')
                .map_or(line, |(d, _)| d)
                .split_once("../kiln/")
                .expect("a path dependency into a kiln checkout");
            let own = format!("{dep}../../{path}");
            assert!(
                manifest.contains(own.trim_end()),
                "{own:?} is not in the example's Cargo.toml"
            );
        }
    }
}
