//! Edit an arbitrary ext4 image through kiln_ext4 (libext2fs behind kiln's checks).
//!
//! Input: [`SCRIPT`] bytes choosing the edits, then the filesystem image, zero-extended to
//! [`MIN_IMAGE`] (so a seed can be an `mkfs.ext4` image with its all-zero tail cut off; see
//! `fuzz/seed-corpus.sh`). The image is opened for writing on a memory device; then writes
//! (read back), mkdir -p, symlink, chmod, chown, truncate, remove, remove -r and listings run on a
//! small set of paths; the filesystem is closed and, if that worked, reopened read-only and walked.
//!
//! Errors are fine; a crash is a bug — in kiln's Rust or, if the stack ends in libext2fs, a
//! libext2fs weakness on corrupt input that kiln's pre-open checks should refuse where they can.
//! Read-back is not asserted: on a corrupt image libext2fs may place data over metadata.
#![no_main]

use kiln_blockdev::MemDev;
use kiln_ext4::{FileKind, Filesystem, GuestPath, NewDir, NewFile, OpenOptions};
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

const SCRIPT: usize = 64;
const MIN_IMAGE: usize = 256 << 10;
const MAX_IMAGE: usize = 8 << 20;

const PATHS: &[&str] = &[
    "/f",
    "/d",
    "/d/f",
    "/d/e/g",
    "/lost+found",
    "/lost+found/x",
    "/",
    "/d/../f",
    "/link",
    "/link/f",
    "/big",
];

fn path(u: &mut Unstructured) -> &'static str {
    u.choose(PATHS).copied().unwrap_or("/f")
}

fn walk(fs: &Filesystem, dir: &GuestPath, budget: &mut usize) {
    let Ok(entries) = fs.read_dir(dir) else {
        return;
    };
    for e in entries {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        if e.name == b"." || e.name == b".." {
            continue;
        }
        // Names are bytes (a corrupt image holds any): the path is built from them exactly.
        let child = dir.join(&e.name);
        match fs.lstat(&child).map(|m| m.kind) {
            Ok(FileKind::Dir) => walk(fs, &child, budget),
            Ok(FileKind::File) => {
                let _ = fs.read(&child);
            }
            Ok(FileKind::Symlink) => {
                let _ = fs.read_link(&child);
            }
            _ => {}
        }
    }
}

fn edit(fs: &mut Filesystem, u: &mut Unstructured) {
    while !u.is_empty() {
        let Ok(op) = u.int_in_range(0..=9) else {
            return;
        };
        let p = path(u);
        match op {
            0 | 1 => {
                let len = u.int_in_range(0..=20_000usize).unwrap_or(0);
                let fill = u.arbitrary::<u8>().unwrap_or(0);
                let data = vec![fill; len];
                let perm = u.arbitrary::<u16>().unwrap_or(0o644);
                if fs
                    .write(
                        p,
                        &data,
                        NewFile {
                            perm,
                            ..NewFile::default()
                        },
                    )
                    .is_ok()
                {
                    let _ = fs.read(p);
                }
            }
            2 => {
                let _ = fs.create_dir_all(p, NewDir::default());
            }
            3 => {
                let target = path(u);
                let _ = fs.symlink(target, p, 0, 0);
            }
            4 => {
                let _ = fs.set_permissions(p, u.arbitrary().unwrap_or(0o600));
            }
            5 => {
                let _ = fs.set_owner(p, 1000, 1000, u.arbitrary().unwrap_or(false));
            }
            6 => {
                let _ = fs.truncate(p, u.int_in_range(0..=70_000u64).unwrap_or(0));
            }
            7 => {
                let _ = fs.remove_file(p);
            }
            8 => {
                let _ = fs.remove_all(p);
            }
            _ => {
                let _ = fs.stat(p);
                let _ = fs.read_dir(p);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < SCRIPT || data.len() > MAX_IMAGE {
        return;
    }
    let (script, image) = data.split_at(SCRIPT);
    let mut image = image.to_vec();
    if image.len() < MIN_IMAGE {
        image.resize(MIN_IMAGE, 0);
    }
    let dev = MemDev::from_vec(image);
    let Ok(mut fs) = Filesystem::open(&dev, "fuzz", OpenOptions::read_write(1_700_000_000)) else {
        return;
    };
    let mut u = Unstructured::new(script);
    edit(&mut fs, &mut u);
    if fs.close().is_err() {
        return;
    }
    let Ok(fs) = Filesystem::open(&dev, "fuzz", OpenOptions::read_only()) else {
        return;
    };
    let mut budget = 256;
    walk(&fs, GuestPath::root(), &mut budget);
    let _ = fs.close();
});
