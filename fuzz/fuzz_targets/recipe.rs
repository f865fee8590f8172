//! Parse arbitrary bytes as a golden-image recipe (`kiln_golden::Recipe::from_yaml`, the parser
//! `Recipe::load` uses on a file's bytes), then validate it and list its scrub ops. It must return
//! Ok or an error, never panic, hang or allocate wildly. Nothing touches the filesystem.
//!
//! `fuzz/corpus/` is not committed: seed it from the committed recipe before a run, e.g.
//!
//! ```sh
//! mkdir -p corpus/recipe && cp ../recipes/*.yaml corpus/recipe/
//! RUSTC_BOOTSTRAP=1 cargo fuzz run recipe corpus/recipe -- -max_total_time=180
//! ```
#![no_main]

use std::path::Path;

use kiln_golden::Recipe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(recipe) = Recipe::from_yaml(data, Path::new("fuzz.yaml")) else {
        return;
    };
    if recipe.validate().is_ok() {
        let _ = recipe.scrub_ops();
    }
});
