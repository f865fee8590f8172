//! The one place YAML is produced: serde-saphyr with its YAML-1.1-safe quoting (the default
//! `yaml_12: false` quotes `on`, `no`, `yes`, `~`, `null`, `0777`, `12:30`, … when they are strings),
//! because cloud-init and netplan read YAML 1.1.

use serde::Serialize;

use crate::Error;

fn options() -> serde_saphyr::SerializerOptions {
    serde_saphyr::ser_options! {
        indent_step: 2,
        yaml_12: false,
        // Multi-line strings (scripts, embedded files) become literal `|` blocks; long single
        // lines (ssh keys, certificates) are never folded.
        folded_wrap_chars: 1 << 20,
    }
}

/// Serialize `value` to YAML text (no header).
pub fn to_string<T: Serialize>(value: &T, what: &'static str) -> Result<String, Error> {
    serde_saphyr::to_string_with_options(value, options()).map_err(|e| Error::Serialize {
        document: what,
        message: e.to_string(),
    })
}

/// Serialize `value` as a whole document, optionally preceded by a header line such as
/// `#cloud-config`. The result always ends with exactly one newline.
pub fn document<T: Serialize>(
    value: &T,
    what: &'static str,
    header: Option<&str>,
) -> Result<Vec<u8>, Error> {
    let body = to_string(value, what)?;
    let mut out = String::with_capacity(body.len() + 16);
    if let Some(h) = header {
        out.push_str(h);
        out.push('\n');
    }
    out.push_str(body.trim_end_matches('\n'));
    out.push('\n');
    Ok(out.into_bytes())
}
