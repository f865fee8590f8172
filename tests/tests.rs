//! kiln's command-line tests, in one binary (one link, one process start-up per run), one module
//! per group of verbs; `util` holds what they share.

#![allow(clippy::unwrap_used, clippy::needless_borrows_for_generic_args)]

mod util;

#[path = "cli/build.rs"]
mod build;
#[path = "cli/cluster.rs"]
mod cluster;
#[path = "cli/disk_full.rs"]
mod disk_full;
#[path = "cli/ls_cat.rs"]
mod ls_cat;
#[path = "cli/qcow2.rs"]
mod qcow2;
#[path = "cli/raspi.rs"]
mod raspi;
#[path = "cli/seed.rs"]
mod seed;
#[path = "cli/signals.rs"]
mod signals;
