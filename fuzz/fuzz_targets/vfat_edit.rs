//! Edit an arbitrary FAT volume through kiln_vfat (fatfs behind kiln's boot-sector and FAT checks).
//!
//! Input: [`SCRIPT`] bytes choosing the edits, then the volume image, zero-extended to the size
//! its boot sector claims (at most [`MAX_DEVICE`]; so a seed can be a `mkfs.fat` image with its
//! all-zero tail cut off; see `fuzz/seed-corpus.py`). The volume is opened for writing on a memory
//! device; reads, listings, writes (read back), mkdir -p and removals run on a small set of paths;
//! it is closed and, if that worked, reopened read-only and walked.
//!
//! Errors are fine; a panic is a bug, even one kiln_vfat catches (libfuzzer's panic hook aborts
//! first): fatfs trusts the boot sector and the FAT, so whatever makes it panic must be refused
//! by kiln_vfat's checks before open.
#![no_main]

use kiln_blockdev::MemDev;
use kiln_vfat::{OpenOptions, Volume};
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

const SCRIPT: usize = 32;
const MAX_INPUT: usize = 4 << 20;
const MAX_DEVICE: u64 = 64 << 20;

const PATHS: &[&str] = &[
    "/cmdline.txt",
    "/config.txt",
    "/a",
    "/d",
    "/d/f",
    "/d/e/g",
    "/overlays/x.dtbo",
    "/longfilename.txt",
    "/LONGFI~1.TXT",
    "/",
    "/d/../a",
];

fn path(u: &mut Unstructured) -> &'static str {
    u.choose(PATHS).copied().unwrap_or("/a")
}

fn walk(v: &Volume, dir: &str, budget: &mut usize) {
    let Ok(entries) = v.read_dir(dir) else {
        return;
    };
    for e in entries {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let child = if dir == "/" {
            format!("/{}", e.name)
        } else {
            format!("{dir}/{}", e.name)
        };
        if e.is_dir {
            walk(v, &child, budget);
        } else {
            let _ = v.read(&child);
        }
    }
}

fn edit(v: &mut Volume, u: &mut Unstructured) {
    while !u.is_empty() {
        let Ok(op) = u.int_in_range(0..=6) else {
            return;
        };
        let p = path(u);
        match op {
            0 | 1 => {
                let len = u.int_in_range(0..=40_000usize).unwrap_or(0);
                let fill = u.arbitrary::<u8>().unwrap_or(0);
                if v.write(p, &vec![fill; len]).is_ok() {
                    let _ = v.read(p);
                }
            }
            2 => {
                let _ = v.create_dir_all(p);
            }
            3 => {
                let _ = v.remove(p);
            }
            4 => {
                let _ = v.read(p);
            }
            5 => {
                let _ = v.stat(p);
            }
            _ => {
                let _ = v.read_dir(p);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < SCRIPT + 512 || data.len() > MAX_INPUT {
        return;
    }
    let (script, image) = data.split_at(SCRIPT);
    let le16 = |at: usize| u64::from(u16::from_le_bytes([image[at], image[at + 1]]));
    let le32 = |at: usize| {
        u64::from(u32::from_le_bytes([
            image[at],
            image[at + 1],
            image[at + 2],
            image[at + 3],
        ]))
    };
    let total = if le16(19) != 0 { le16(19) } else { le32(32) };
    let claimed = total.saturating_mul(le16(11)).min(MAX_DEVICE);
    let mut bytes = vec![0u8; (image.len() as u64).max(claimed) as usize];
    bytes[..image.len()].copy_from_slice(image);
    let dev = MemDev::from_vec(bytes);
    let Ok(mut v) = Volume::open(&dev, "fuzz", OpenOptions::read_write(1_700_000_000)) else {
        return;
    };
    let mut u = Unstructured::new(script);
    edit(&mut v, &mut u);
    if v.close().is_err() {
        return;
    }
    let Ok(v) = Volume::open(&dev, "fuzz", OpenOptions::read_only()) else {
        return;
    };
    let mut budget = 256;
    walk(&v, "/", &mut budget);
});
