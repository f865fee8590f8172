//! Options every verb that opens an image shares.

use std::path::PathBuf;

use clap::Args;
use kiln_qcow2::OpenOptions;

#[derive(Debug, Args)]
pub struct OpenArgs {
    /// Directory that backing files named inside images may resolve to (default: each top image's own
    /// directory). Backing files elsewhere are refused.
    #[arg(long, value_name = "DIR")]
    pub allow_backing_dir: Option<PathBuf>,
}

impl OpenArgs {
    pub fn options(&self) -> OpenOptions {
        OpenOptions {
            allowed_backing_dir: self.allow_backing_dir.clone(),
            ..OpenOptions::default()
        }
    }
}
