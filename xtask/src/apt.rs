//! What this machine's apt knows: its Debian mirror and the suite a package came from.
//!
//! Nothing here names a mirror: the mirror is read from the machine's own apt sources (deb822
//! `*.sources` files and one-line `sources.list` files), so the repository never carries a package
//! registry's host name.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::run;

/// One `deb` source: its URI, suites and (deb822) `Signed-By`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub uri: String,
    pub suites: Vec<String>,
    pub signed_by: Option<String>,
}

/// Every `deb` source of the machine: `/etc/apt/sources.list`, then `/etc/apt/sources.list.d/*`
/// in name order (files apt ignores — `*.disabled…`, `*.save` — are skipped as apt skips them).
pub fn sources() -> Vec<Source> {
    let mut out = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        out.extend(parse_one_line(&t));
    }
    let mut files: Vec<_> = std::fs::read_dir("/etc/apt/sources.list.d")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let Ok(t) = std::fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => out.extend(parse_deb822(&t)),
            Some("list") => out.extend(parse_one_line(&t)),
            _ => {}
        }
    }
    out
}

/// `deb [options] URI SUITE COMPONENT…` lines.
pub fn parse_one_line(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let mut rest = rest.trim_start();
        let mut signed_by = None;
        if let Some(r) = rest.strip_prefix('[') {
            let Some((opts, after)) = r.split_once(']') else {
                continue;
            };
            signed_by = opts
                .split_whitespace()
                .find_map(|o| o.strip_prefix("signed-by="))
                .map(str::to_owned);
            rest = after.trim_start();
        }
        let mut words = rest.split_whitespace();
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push(Source {
                uri: uri.to_owned(),
                suites: vec![suite.to_owned()],
                signed_by,
            });
        }
    }
    out
}

/// deb822 stanzas (`Types:`, `URIs:`, `Suites:`, `Signed-By:`, `Enabled:`).
pub fn parse_deb822(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut types = Vec::new();
        let mut uris = Vec::new();
        let mut suites = Vec::new();
        let mut signed_by = None;
        let mut enabled = true;
        for line in stanza.lines() {
            if line.starts_with('#') || line.starts_with(' ') || line.starts_with('\t') {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let words = || v.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
            match k.trim().to_ascii_lowercase().as_str() {
                "types" => types = words(),
                "uris" => uris = words(),
                "suites" => suites = words(),
                "signed-by" => signed_by = Some(v.trim().to_owned()).filter(|s| !s.is_empty()),
                "enabled" => enabled = !v.trim().eq_ignore_ascii_case("no"),
                _ => {}
            }
        }
        if !enabled || !types.iter().any(|t| t == "deb") {
            continue;
        }
        for uri in uris {
            out.push(Source {
                uri,
                suites: suites.clone(),
                signed_by: signed_by.clone(),
            });
        }
    }
    out
}

/// `KEY=value` of `/etc/os-release` (quotes removed).
pub fn os_release(key: &str) -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(key)?
            .strip_prefix('=')
            .map(|v| v.trim_matches('"').to_owned())
    })
}

/// The Debian archive mirror this machine's apt uses: `$KILN_E2E_MIRROR` if set, else the first
/// `deb` source whose suites include a Debian release (a suite without `-security`) and whose path
/// is a Debian archive (`…/debian`).
pub fn debian_mirror() -> Result<String> {
    if let Ok(m) = std::env::var("KILN_E2E_MIRROR")
        && !m.is_empty()
    {
        return Ok(m);
    }
    pick_debian_mirror(&sources()).context(
        "no Debian archive among this machine's apt sources (/etc/apt/sources.list{,.d}); \
         set KILN_E2E_MIRROR to a Debian mirror URI",
    )
}

pub fn pick_debian_mirror(sources: &[Source]) -> Option<String> {
    sources
        .iter()
        .find(|s| {
            s.uri.trim_end_matches('/').ends_with("/debian")
                && s.suites.iter().any(|x| !x.contains("security"))
        })
        .map(|s| s.uri.trim_end_matches('/').to_owned())
}

/// The installed version of a Debian package, if it is installed.
pub fn installed_version(pkg: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Abbrev}|${Version}", pkg])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (status, version) = text.split_once('|')?;
    (out.status.success() && status.starts_with("ii")).then(|| version.trim().to_owned())
}

/// The suites that `apt-cache policy PKG` lists for the version `version` (`bookworm-backports`,
/// …; `/var/lib/dpkg/status` is not a suite and is left out).
pub fn policy_suites(pkg: &str, version: &str) -> Result<Vec<String>> {
    let text = run(Command::new("apt-cache").args(["policy", pkg]))?;
    Ok(parse_policy_suites(&text, version))
}

pub fn parse_policy_suites(policy: &str, version: &str) -> Vec<String> {
    let mut suites = Vec::new();
    let mut in_version = false;
    for line in policy.lines() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        let words: Vec<&str> = t.split_whitespace().collect();
        if indent >= 8 {
            // A source of the version above: "500 http://… suite/component arch Packages".
            if in_version
                && words.get(1).is_some_and(|u| u.contains("://"))
                && let Some(suite) = words.get(2).and_then(|w| w.split('/').next())
            {
                suites.push(suite.to_owned());
            }
        } else if indent >= 1 && !t.ends_with(':') {
            // A version line: "*** 1:10.0.2+ds-2 100" or "1:7.2+dfsg-7 500".
            let v = words.iter().find(|w| **w != "***").copied().unwrap_or("");
            in_version = v == version;
        } else {
            in_version = false;
        }
    }
    suites
}

/// Where to install `qemu-system-x86` from so that it matches the machine's `qemu-utils`
/// (they break each other across versions): the suite apt lists for that version, or, for a
/// backports build (`~bpoNN`) that no configured source offers any more, `<codename>-backports`,
/// which then has to be added (see [`ensure_suite`]).
pub fn suite_of_installed(pkg: &str) -> Result<Option<(String, String)>> {
    let Some(version) = installed_version(pkg) else {
        return Ok(None);
    };
    let suites = policy_suites(pkg, &version)?;
    if let Some(s) = suites.into_iter().next() {
        return Ok(Some((s, version)));
    }
    if version.contains("~bpo") {
        let codename = os_release("VERSION_CODENAME")
            .filter(|c| !c.is_empty())
            .context("reading VERSION_CODENAME from /etc/os-release")?;
        return Ok(Some((format!("{codename}-backports"), version)));
    }
    Ok(None)
}

/// The list file kiln adds for a suite the machine's sources lack.
pub const KILN_LIST: &str = "/etc/apt/sources.list.d/kiln-extra-suites.sources";

/// Make `suite` available to apt: if no source offers it, write [`KILN_LIST`] with the mirror
/// and key of the machine's Debian source (never editing the machine's own files). Returns whether
/// the apt lists must be updated.
pub fn ensure_suite(suite: &str) -> Result<bool> {
    let all = sources();
    if all.iter().any(|s| s.suites.iter().any(|x| x == suite)) {
        return Ok(false);
    }
    let base = all
        .iter()
        .find(|s| {
            s.uri.trim_end_matches('/').ends_with("/debian")
                && s.suites.iter().any(|x| !x.contains("security"))
        })
        .with_context(|| {
            format!("no Debian source in /etc/apt to take the mirror for {suite} from")
        })?;
    let mut text = format!(
        "# Added by kiln's `cargo xtask test`: {suite}, for packages that must match ones\n\
         # already installed from it. Remove this file to undo.\n\
         Types: deb\nURIs: {}\nSuites: {suite}\nComponents: main\n",
        base.uri
    );
    if let Some(k) = &base.signed_by {
        text.push_str(&format!("Signed-By: {k}\n"));
    }
    let existing = std::fs::read_to_string(KILN_LIST).unwrap_or_default();
    let text = if existing.is_empty() {
        text
    } else {
        format!("{existing}\n{text}")
    };
    write_root_file(Path::new(KILN_LIST), &text)?;
    println!("apt: added {suite} ({}) in {KILN_LIST}", base.uri);
    Ok(true)
}

fn write_root_file(path: &Path, text: &str) -> Result<()> {
    if crate::setup::is_root() {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    } else {
        let mut child = Command::new("sudo")
            .args(["tee", &path.to_string_lossy()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("running sudo tee")?;
        use std::io::Write;
        child
            .stdin
            .take()
            .context("sudo tee's stdin")?
            .write_all(text.as_bytes())?;
        if !child.wait()?.success() {
            bail!("sudo tee {} failed", path.display());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_and_one_line_sources() {
        let d = parse_deb822(
            "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /k.gpg\n\n\
             Types: deb\nURIs: http://m.example/debian-security\nSuites: bookworm-security\n\n\
             Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n\
             Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n",
        );
        assert_eq!(d.len(), 2);
        assert_eq!(
            pick_debian_mirror(&d).as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(d[0].signed_by.as_deref(), Some("/k.gpg"));
        let l = parse_one_line(
            "# c\ndeb-src http://x.example/debian trixie main\ndeb [arch=amd64 signed-by=/a.gpg] http://y.example/debian/ trixie main\n",
        );
        assert_eq!(l.len(), 1);
        assert_eq!(
            pick_debian_mirror(&l).as_deref(),
            Some("http://y.example/debian")
        );
        assert_eq!(l[0].signed_by.as_deref(), Some("/a.gpg"));
        let security_only =
            parse_one_line("deb http://z.example/debian-security trixie-security main\n");
        assert_eq!(pick_debian_mirror(&security_only), None);
    }

    #[test]
    fn policy_suites_of_a_version() {
        let p = "qemu-utils:\n  Installed: 1:10.0.2+ds-2~bpo12+1\n  Candidate: 1:10.0.2+ds-2~bpo12+1\n  Version table:\n \
                 *** 1:10.0.2+ds-2~bpo12+1 100\n        100 http://m.example/debian bookworm-backports/main amd64 Packages\n        100 /var/lib/dpkg/status\n     \
                 1:7.2+dfsg-7 500\n        500 http://m.example/debian bookworm/main amd64 Packages\n";
        assert_eq!(
            parse_policy_suites(p, "1:10.0.2+ds-2~bpo12+1"),
            ["bookworm-backports"]
        );
        assert_eq!(parse_policy_suites(p, "1:7.2+dfsg-7"), ["bookworm"]);
        let only_status = "qemu-utils:\n  Version table:\n *** 1:10.0.2~bpo12+1 100\n        100 /var/lib/dpkg/status\n     1:7.2 500\n        500 http://m.example/debian bookworm/main amd64 Packages\n";
        assert!(parse_policy_suites(only_status, "1:10.0.2~bpo12+1").is_empty());
    }
}
