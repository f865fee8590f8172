//! Property test: random sequences of unaligned writes (data, zeros, across clusters, past the
//! base's end) into an overlay over a compressed base agree with an in-memory model, survive a
//! close/reopen, and leave an image `qemu-img check` finds clean and `qemu-img convert` reads back
//! identically.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::*;
use kiln_blockdev::BlockDev;
use kiln_qcow2::{Disk, OpenOptions, begin_overlay};
use proptest::prelude::*;

const BASE_LEN: usize = 512 * 1024 + 3 * 512;

/// One zlib-compressed base with 4 KiB clusters, made once by qemu-img.
fn base() -> &'static (tempfile::TempDir, PathBuf, Vec<u8>) {
    static BASE: OnceLock<(tempfile::TempDir, PathBuf, Vec<u8>)> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = pattern(BASE_LEN, 77);
        let base = qemu_compressed(dir.path(), "base.qcow2", &data, "cluster_size=4096");
        (dir, base, data)
    })
}

#[derive(Debug, Clone)]
enum Op {
    Write { off: u64, len: usize, seed: u8 },
    Zero { off: u64, len: usize },
    Reopen,
}

fn op(size: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..size, 1usize..20_000, any::<u8>()).prop_map(move |(o, l, seed)| Op::Write { off: o.min(size - 1), len: l, seed }),
        2 => (0..size, 1usize..20_000).prop_map(|(o, l)| Op::Zero { off: o, len: l }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn overlay_matches_model(extra_sectors in 0u64..200, ops in prop::collection::vec(op(BASE_LEN as u64 + 200 * 512), 1..60)) {
        let (_keep, base, data) = base();
        let dir = tempfile::tempdir().unwrap();
        let size = BASE_LEN as u64 + extra_sectors * 512;
        let mut model = data.clone();
        model.resize(size as usize, 0);
        let path = dir.path().join("ov.qcow2");
        let opts = OpenOptions::default().allow_backing_dir(base.parent().unwrap());
        let pending = begin_overlay(&path, base, Some(size), &opts).unwrap();
        pending.commit().unwrap();
        let mut disk = Disk::open(&path, &OpenOptions { write: true, ..opts.clone() }).unwrap();
        for op in ops {
            match op {
                Op::Write { off, len, seed } => {
                    let off = off.min(size - 1);
                    let len = len.min((size - off) as usize);
                    let buf: Vec<u8> = (0..len).map(|i| seed.wrapping_add(i as u8)).collect();
                    disk.write_at(&buf, off).unwrap();
                    model[off as usize..off as usize + len].copy_from_slice(&buf);
                }
                Op::Zero { off, len } => {
                    let off = off.min(size - 1);
                    let len = len.min((size - off) as usize);
                    disk.write_zeroes(off, len as u64).unwrap();
                    model[off as usize..off as usize + len].fill(0);
                }
                Op::Reopen => {
                    disk.close().unwrap();
                    disk = Disk::open(&path, &OpenOptions { write: true, ..opts.clone() }).unwrap();
                }
            }
        }
        let mut got = vec![0u8; size as usize];
        disk.read_at(&mut got, 0).unwrap();
        assert_same(&got, &model, "kiln read-back before close");
        disk.close().unwrap();
        assert_qemu_checks_and_reads(&path, dir.path(), &model, "qemu-img read-back");
    }
}
