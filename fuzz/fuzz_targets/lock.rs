//! Parse arbitrary bytes as a lock file (`kiln_golden::lock::Lock::parse`, what `--locked` reads);
//! a parsed lock must print back to text that parses to the same value, and checking it against
//! itself must find nothing. Never a panic, a hang or a wild allocation.
//!
//! ```sh
//! mkdir -p corpus/lock && cp ../recipes/*.lock ../recipes/clusters/*.lock corpus/lock/
//! RUSTC_BOOTSTRAP=1 cargo fuzz run lock corpus/lock -- -max_total_time=180
//! ```
#![no_main]

use std::path::Path;

use kiln_golden::lock::Lock;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(lock) = Lock::parse(text, Path::new("fuzz.lock")) else {
        return;
    };
    let again = Lock::parse(&lock.to_text(&[]), Path::new("again.lock"))
        .expect("a parsed lock prints to a lock that parses");
    assert_eq!(again, lock, "lock text does not round-trip");
    assert!(lock.check(&lock).is_empty());
});
