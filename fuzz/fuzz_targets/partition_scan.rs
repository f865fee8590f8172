//! Fuzz kiln-partition's discovery (GPT via gptman, MBR via mbrman, filesystem probes) with
//! arbitrary disk bytes: it must return Ok or an error, never panic, hang or allocate wildly.
//!
//! The input is the disk itself; small inputs are padded with zeros to 64 KiB so the GPT header,
//! entry array and a backup header at the end all fit.

#![no_main]

use kiln_blockdev::{BlockDev, MemDev};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut disk = data.to_vec();
    if disk.len() < 64 * 1024 {
        disk.resize(64 * 1024, 0);
    }
    let dev = MemDev::from_vec(disk);
    if let Ok(table) = kiln_partition::scan(&dev, "fuzz") {
        let _ = table.root();
        for p in &table.partitions {
            if let Ok(w) = kiln_partition::window(&dev, "fuzz", p) {
                let _ = kiln_partition::probe(&w, "fuzz");
                let _ = w.len();
            }
        }
    }
});
