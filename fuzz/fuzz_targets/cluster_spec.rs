//! Parse arbitrary text as a kiln cluster spec (`kiln_nocloud::ClusterSpec::from_yaml`); when it
//! parses, validate it, and when it validates, render every node's seed documents in memory
//! (`render_all`, no `write_seed`, nothing written); what parses must write back (`to_yaml`) to text
//! that reads as an equal value. It must return Ok or an error at each step,
//! never panic, hang or allocate wildly.
//!
//! `fuzz/corpus/` is not committed: seed it from the committed specs before a run, e.g.
//!
//! ```sh
//! mkdir -p corpus/cluster_spec && cp ../recipes/clusters/*.yaml corpus/cluster_spec/
//! RUSTC_BOOTSTRAP=1 cargo fuzz run cluster_spec corpus/cluster_spec -- -max_total_time=180
//! ```
//!
//! Validation only reads the filesystem (the token file's path, relative to the current directory
//! since `from_yaml` has no spec directory); nothing is created.
#![no_main]

use std::path::Path;

use kiln_nocloud::{ClusterSpec, Token, render_all};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = ClusterSpec::from_yaml(text, Path::new("fuzz.yaml")) else {
        return;
    };
    // Whatever reads, writes back to text that reads as an equal value.
    let yaml = spec.to_yaml().expect("a spec that parsed serialises");
    let back = ClusterSpec::from_yaml(&yaml, Path::new("fuzz.yaml")).expect("written spec reads");
    assert_eq!(back, spec, "{yaml}");
    let _ = spec.token_path();
    for n in &spec.nodes {
        let _ = spec.disk_size_of(n);
    }
    if spec.validate().is_err() {
        return;
    }
    let token = Token::new("fuzz");
    if let Ok(seeds) = render_all(&spec, &token) {
        for s in &seeds {
            let _ = s.files();
        }
    }
});
