//! Values kiln's crates share, written once: lower-case hex and sha256 digests of files and readers
//! ([`digest`]), byte sizes and durations as recipes, specs and the command line write them
//! ([`units`]), and the list of validation problems a recipe or a spec can have ([`Problems`]).
//!
//! ```
//! use kiln_common::{digest, units};
//!
//! assert_eq!(units::parse_size("1.5G"), Ok(3 << 29));
//! assert_eq!(units::parse_duration("1h30m"), Ok(5400));
//! assert_eq!(digest::hex(&[0xde, 0xad]), "dead");
//! ```

#![deny(missing_docs)]

pub mod digest;
mod problems;
pub mod units;

pub use problems::{Problem, Problems};
