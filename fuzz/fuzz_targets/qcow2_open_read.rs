//! Open arbitrary bytes as a qcow2 image (no backing files can be reached: the allowed directory is
//! empty), then map and read every cluster. Any panic is a bug; every crash found becomes a named
//! regression test in crates/qcow2/tests/bad_input.rs.
#![no_main]

use kiln_blockdev::MemDev;
use kiln_qcow2::{Image, OpenOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join("kiln-fuzz-empty");
    let _ = std::fs::create_dir_all(&dir);
    let opts = OpenOptions::default().allow_backing_dir(&dir);
    let Ok(img) = Image::open_storage(
        Box::new(MemDev::from_vec(data.to_vec())),
        dir.join("input.qcow2"),
        &opts,
    ) else {
        return;
    };
    let cs = img.cluster_size();
    let clusters = img.len().div_ceil(cs).min(4096);
    let mut buf = vec![0u8; cs as usize];
    for gc in 0..clusters {
        let _ = img.map_cluster(gc);
        let off = gc * cs;
        let n = (img.len() - off).min(cs) as usize;
        let _ = img.read(&mut buf[..n], off);
    }
    let _ = img.allocation();
});
