//! `--locked` / `--update-lock` of `kiln build` and `kiln cluster`: check the outputs against a
//! committed lock of their digests (exit 1 and a file-level explanation when they differ), or
//! write that lock. See `kiln_golden::lock` for the format.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::Args;
use kiln_blockdev::AtomicFile;
use kiln_golden::lock::Lock;

use crate::exit::{CmdResult, Failure, OrExit};

#[derive(Debug, Args)]
pub struct LockArgs {
    /// Fail (exit 1) unless every output's sha256 equals the lock's, and then say what differs
    /// file by file (the lock records the image's files and the seeds' documents).
    #[arg(long, conflicts_with = "update_lock")]
    locked: bool,
    /// Write the lock from this run's outputs (the explicit way to accept new bytes).
    #[arg(long)]
    update_lock: bool,
    /// The lock file [default: the recipe or spec with `.lock` in place of its extension].
    #[arg(long, value_name = "FILE")]
    lock: Option<PathBuf>,
}

impl LockArgs {
    /// Whether this run checks or writes a lock at all.
    pub fn wanted(&self) -> bool {
        self.locked || self.update_lock
    }

    fn path(&self, input: &Path) -> PathBuf {
        self.lock
            .clone()
            .unwrap_or_else(|| input.with_extension("lock"))
    }

    /// Before the build: with `--locked`, the lock must exist and parse (bad input: exit 2).
    pub fn preload(&self, input: &Path) -> Result<Option<Lock>, Failure> {
        if !self.locked {
            return Ok(None);
        }
        Lock::load(&self.path(input)).or_exit().map(Some)
    }

    /// After `kiln VERB INPUT`: check `expected` against the outputs, or write the lock (its
    /// comment says what made it and what `parts` lists). `actual(parts)` computes the outputs'
    /// record, with their parts only when `parts` (they cost a read of every file in the image).
    pub fn finish(
        &self,
        (verb, input): (&str, &Path),
        parts: &str,
        expected: Option<Lock>,
        actual: impl Fn(bool) -> anyhow::Result<Lock>,
        json: bool,
    ) -> CmdResult {
        let path = self.path(input);
        let name = kiln_golden::lock::file_name(input);
        let made_by = format!(
            "outputs of `kiln {verb} {name}`; rewrite with `kiln {verb} {name} … --update-lock`"
        );
        let comment = [made_by.as_str(), parts];
        if self.update_lock {
            let lock = actual(true)?;
            let file = AtomicFile::create(&path, 0o644)
                .with_context(|| format!("writing the lock {}", path.display()))?;
            file.dev()
                .write_at_grow(lock.to_text(&comment).as_bytes(), 0)
                .with_context(|| format!("writing the lock {}", path.display()))?;
            file.commit()
                .with_context(|| format!("writing the lock {}", path.display()))?;
            if !json {
                eprintln!("wrote {} ({} outputs)", path.display(), lock.outputs.len());
            }
            return Ok(());
        }
        let Some(expected) = expected else {
            return Ok(());
        };
        if expected.check(&actual(false)?).is_empty() {
            if !json {
                eprintln!("every output matches {}", path.display());
            }
            return Ok(());
        }
        let mismatches = expected.check(&actual(true)?);
        let text: Vec<String> = mismatches.iter().map(|m| format!("  {m}")).collect();
        Err(Failure::from(anyhow!(
            "the outputs differ from the lock {}:\n{}\n(the outputs are left in place for \
             `kiln diff`; if the change is intended, accept it with --update-lock)",
            path.display(),
            text.join("\n")
        )))
    }
}
