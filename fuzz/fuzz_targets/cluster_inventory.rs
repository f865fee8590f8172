//! Read arbitrary bytes back as a cluster directory's `inventory.json` the way kiln-cluster does:
//! `Inventory::recorded_golden_sha256` (what `plan` reads from an existing inventory) and a typed
//! `serde_json::from_slice::<Inventory>`. A typed inventory must survive `to_bytes` and parse back
//! equal. Any panic is a bug.
//!
//! `fuzz/corpus/` is not committed: seed it before a run with inventories `kiln cluster` wrote,
//! e.g. after `cargo xtask build-image`:
//!
//! ```sh
//! mkdir -p corpus/cluster_inventory && cp ../out/*/inventory.json corpus/cluster_inventory/
//! RUSTC_BOOTSTRAP=1 cargo fuzz run cluster_inventory corpus/cluster_inventory -- -max_total_time=180
//! ```
#![no_main]

use kiln_cluster::Inventory;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Inventory::recorded_golden_sha256(data);
    let Ok(inv) = serde_json::from_slice::<Inventory>(data) else {
        return;
    };
    let bytes = inv.to_bytes().expect("a parsed inventory serializes");
    let back: Inventory = serde_json::from_slice(&bytes).expect("a written inventory parses");
    assert_eq!(back, inv, "inventory round trip");
    assert_eq!(
        Inventory::recorded_golden_sha256(&bytes).as_deref(),
        Some(inv.golden.sha256.as_str())
    );
});
