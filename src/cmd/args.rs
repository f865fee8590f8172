//! Argument parsers shared by several verbs.

pub use kiln_common::units::{human_size, parse_size};
