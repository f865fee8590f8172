//! Copy-on-write through kiln_qcow2, checked against a byte model (crosvm's qcow_fuzzer is the
//! model: the first bytes choose the image, the rest a sequence of operations).
//!
//! The image is either created fresh in memory (cluster size, virtual size and an optional qcow2
//! or raw backing file chosen by the input; every guest byte is known) or the input carries a
//! whole qcow2 file that is opened for writing (only the bytes written are known). Operations:
//! write (input bytes, a fill byte or zeros — whole zero clusters take the zero-cluster path),
//! read back, flush, close and reopen, flatten into memory and read the flattened copy.
//!
//! Every error must be an `Err`; a panic is a bug. After a successful write every written byte
//! must read back — through the open image, after close + reopen and in the flattened copy — and
//! for a fresh image every other byte must still read as the backing file (or zeros). Operations
//! on a fresh image inside its bounds must succeed.
#![no_main]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_blockdev::{BlockDev, MemDev};
use kiln_qcow2::{
    CompressionType, CreateOptions, Disk, FlattenOptions, Image, OpenOptions, flatten,
    open_new_backing,
};
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

/// Largest fresh guest (and backing file); a fuzzed image larger than this is not flattened or
/// read whole.
const MAX_FRESH: u64 = 256 << 10;
const MAX_WHOLE: u64 = 1 << 20;
const MAX_OPS: usize = 48;
const PAGE: u64 = 512;

struct Page {
    data: [u8; PAGE as usize],
    known: [bool; PAGE as usize],
}

/// What the guest should read: written bytes, and for a fresh image everything else too.
struct Model {
    size: u64,
    pages: HashMap<u64, Box<Page>>,
    /// Fresh image: the backing file's bytes (zero-extended); `None` for a fuzzed image, whose
    /// unwritten bytes are unknown.
    base: Option<Vec<u8>>,
}

impl Model {
    fn write(&mut self, off: u64, data: &[u8]) {
        let mut done = 0usize;
        while done < data.len() {
            let pos = off + done as u64;
            let at = (pos % PAGE) as usize;
            let n = (PAGE as usize - at).min(data.len() - done);
            let page = self.pages.entry(pos / PAGE).or_insert_with(|| {
                Box::new(Page {
                    data: [0; PAGE as usize],
                    known: [false; PAGE as usize],
                })
            });
            page.data[at..at + n].copy_from_slice(&data[done..done + n]);
            page.known[at..at + n].fill(true);
            done += n;
        }
    }

    fn base_byte(&self, pos: u64) -> Option<u8> {
        self.base
            .as_ref()
            .map(|b| b.get(pos as usize).copied().unwrap_or(0))
    }

    fn check(&self, what: &str, got: &[u8], off: u64) {
        let mut done = 0usize;
        while done < got.len() {
            let pos = off + done as u64;
            let at = (pos % PAGE) as usize;
            let n = (PAGE as usize - at).min(got.len() - done);
            let page = self.pages.get(&(pos / PAGE));
            for i in 0..n {
                let want = match page {
                    Some(p) if p.known[at + i] => Some(p.data[at + i]),
                    _ => self.base_byte(pos + i as u64),
                };
                if let Some(want) = want {
                    let g = got[done + i];
                    assert_eq!(
                        g,
                        want,
                        "{what}: guest byte {:#x} reads {g:#04x}, expected {want:#04x}",
                        pos + i as u64
                    );
                }
            }
            done += n;
        }
    }

    /// Read the whole guest (or, for a large fuzzed image, every written page) and check it.
    fn check_all(&self, what: &str, img: &Image) -> kiln_qcow2::Result<()> {
        if img.len() <= MAX_WHOLE {
            let mut buf = vec![0u8; 64 << 10];
            let mut off = 0;
            while off < img.len() {
                let n = (img.len() - off).min(buf.len() as u64) as usize;
                img.read(&mut buf[..n], off)?;
                self.check(what, &buf[..n], off);
                off += n as u64;
            }
        } else {
            let mut buf = [0u8; PAGE as usize];
            for &p in self.pages.keys() {
                let off = p * PAGE;
                let n = (img.len() - off).min(PAGE) as usize;
                img.read(&mut buf[..n], off)?;
                self.check(what, &buf[..n], off);
            }
        }
        Ok(())
    }
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-fuzz-qcow2-write-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn rw_opts(dir: &Path) -> OpenOptions {
    OpenOptions::read_write().allow_backing_dir(dir)
}

/// Bytes of a fresh qcow2 image with a few writes, or of a raw file; returns (file bytes, guest
/// bytes).
fn make_base(u: &mut Unstructured, qcow2: bool) -> Option<(Vec<u8>, Vec<u8>)> {
    let size = u64::from(u.int_in_range(0u32..=(MAX_FRESH / PAGE) as u32).ok()?) * PAGE;
    let mut guest = vec![0u8; size as usize];
    let writes = u.int_in_range(0..=4).ok()?;
    let mut chunks = Vec::new();
    for _ in 0..writes {
        if size == 0 {
            break;
        }
        let off = u.int_in_range(0..=size - 1).ok()?;
        let len = u.int_in_range(1..=(size - off).min(8192)).ok()? as usize;
        let fill: u8 = u.arbitrary().ok()?;
        chunks.push((off, vec![fill; len]));
    }
    for (off, data) in &chunks {
        guest[*off as usize..*off as usize + data.len()].copy_from_slice(data);
    }
    if !qcow2 {
        return Some((guest.clone(), guest));
    }
    let cluster_bits = u.int_in_range(9..=16).ok()?;
    let store = Arc::new(MemDev::new(0));
    let img = Image::create(
        Box::new(store.clone()),
        "base.qcow2",
        CreateOptions {
            size,
            cluster_bits,
            compression: CompressionType::Zlib,
            backing: None,
        },
    )
    .expect("creating a valid base image");
    for (off, data) in &chunks {
        img.write(data, *off)
            .expect("writing the base image in bounds");
    }
    img.close().expect("closing the base image");
    Some((store.to_vec(), guest))
}

fn compression(u: &mut Unstructured) -> Option<CompressionType> {
    match u.int_in_range(0..=2).unwrap_or(0) {
        0 => None,
        1 => Some(CompressionType::Zlib),
        _ => Some(CompressionType::Zstd),
    }
}

/// The image under test: fresh (strict) or fuzzed (lenient).
struct Target {
    img: Option<Image>,
    store: Arc<MemDev>,
    name: PathBuf,
    dir: PathBuf,
    model: Model,
    fresh: bool,
}

impl Target {
    fn img(&self) -> &Image {
        self.img
            .as_ref()
            .expect("the image is open between operations")
    }

    fn write(&mut self, u: &mut Unstructured) -> Option<()> {
        let img = self.img.as_ref().expect("open");
        let size = img.len();
        let cs = img.cluster_size();
        let aligned: bool = u.arbitrary().ok()?;
        let (off, len) = if aligned {
            let clusters = size.div_ceil(cs).max(1);
            let c = u.int_in_range(0..=clusters).ok()?;
            let n = u.int_in_range(1..=3u64).ok()?;
            (c * cs, n * cs)
        } else {
            let off = u.int_in_range(0..=size + 64).ok()?;
            (off, u.int_in_range(1..=(3 * cs).min(64 << 10)).ok()?)
        };
        let data = match u.int_in_range(0..=2).ok()? {
            0 => vec![0u8; len as usize],
            1 => vec![u.arbitrary::<u8>().ok()?; len as usize],
            _ => {
                let src = u.bytes(u.len().min(len as usize)).ok()?;
                if src.is_empty() {
                    vec![0xa5; len as usize]
                } else {
                    src.iter().cycle().take(len as usize).copied().collect()
                }
            }
        };
        // In-bounds ranges that end at the guest end (aligned writes may start past it).
        let in_bounds = off.checked_add(len).is_some_and(|end| end <= size);
        let res = img.write(&data, off);
        match res {
            Ok(()) => {
                assert!(
                    in_bounds,
                    "write of {len} at {off:#x} past {size:#x} succeeded"
                );
                self.model.write(off, &data);
                let mut back = vec![0u8; data.len()];
                img.read(&mut back, off)
                    .expect("reading back what was just written");
                assert!(
                    back == data,
                    "read-back of the write at {off:#x} ({len} bytes)"
                );
            }
            Err(e) => {
                assert!(
                    !(self.fresh && in_bounds),
                    "in-bounds write of {len} at {off:#x} to a fresh image failed: {e}"
                );
                // A failed write may have left the image half-written: forget what it covers.
                if !self.fresh {
                    self.forget(off, len);
                }
            }
        }
        Some(())
    }

    fn forget(&mut self, off: u64, len: u64) {
        let end = off.saturating_add(len).min(self.model.size);
        let mut p = off / PAGE;
        while p * PAGE < end {
            self.model.pages.remove(&p);
            p += 1;
        }
    }

    fn read(&mut self, u: &mut Unstructured) -> Option<()> {
        let img = self.img();
        let size = img.len();
        let off = u.int_in_range(0..=size + 64).ok()?;
        let len = u
            .int_in_range(0..=(3 * img.cluster_size()).min(64 << 10))
            .ok()?;
        let mut buf = vec![0u8; len as usize];
        let in_bounds = off.checked_add(len).is_some_and(|end| end <= size);
        match img.read(&mut buf, off) {
            Ok(()) => {
                assert!(
                    in_bounds,
                    "read of {len} at {off:#x} past {size:#x} succeeded"
                );
                self.model.check("read", &buf, off);
            }
            Err(e) => assert!(
                !(self.fresh && in_bounds),
                "in-bounds read of {len} at {off:#x} from a fresh image failed: {e}"
            ),
        }
        Some(())
    }

    /// Close and reopen for writing. `false`: the image could not be closed (fuzzed image only).
    fn reopen(&mut self) -> bool {
        let img = self.img.take().expect("open");
        if let Err(e) = img.close() {
            assert!(!self.fresh, "closing a fresh image failed: {e}");
            return false;
        }
        let img = Image::open_storage(
            Box::new(self.store.clone()),
            self.name.clone(),
            &rw_opts(&self.dir),
        )
        .unwrap_or_else(|e| panic!("reopening an image kiln closed failed: {e}"));
        self.model
            .check_all("after reopen", &img)
            .expect("reading an image kiln closed");
        self.img = Some(img);
        true
    }

    fn flatten(&mut self, u: &mut Unstructured) -> Option<()> {
        if self.img().len() > MAX_WHOLE {
            return Some(());
        }
        let opts = FlattenOptions {
            compression: compression(u),
            cluster_bits: if u.arbitrary().ok()? {
                Some(u.int_in_range(9..=16).ok()?)
            } else {
                None
            },
            passthrough: u.arbitrary().ok()?,
            ..FlattenOptions::default()
        };
        let disk = Disk::Qcow2(self.img.take().expect("open"));
        let out = MemDev::new(0);
        let name = self.dir.join("flat.qcow2");
        let res = flatten(&disk, &out, &name, &opts, &|_, _| {});
        let Disk::Qcow2(img) = disk else {
            unreachable!()
        };
        self.img = Some(img);
        match res {
            Ok(_) => {
                let flat = Image::open_storage(
                    Box::new(MemDev::from_vec(out.to_vec())),
                    name,
                    &OpenOptions::read_only().allow_backing_dir(&self.dir),
                )
                .unwrap_or_else(|e| panic!("opening a flattened image failed: {e}"));
                assert!(flat.backing().is_none(), "a flattened image has no backing");
                assert_eq!(flat.len(), self.img().len(), "flattened guest size");
                self.model
                    .check_all("flattened", &flat)
                    .expect("reading a flattened image");
            }
            Err(e) => assert!(!self.fresh, "flattening a fresh image failed: {e}"),
        }
        Some(())
    }
}

fn setup(u: &mut Unstructured, dir: &Path) -> Option<Target> {
    let name = dir.join("top.qcow2");
    if u.ratio(1, 4).ok()? {
        // A whole qcow2 file from the input, opened for writing.
        let len = u.int_in_range(0..=u.len()).ok()?;
        let bytes = u.bytes(len).ok()?.to_vec();
        let store = Arc::new(MemDev::from_vec(bytes));
        let img = Image::open_storage(Box::new(store.clone()), name.clone(), &rw_opts(dir)).ok()?;
        let size = img.len();
        return Some(Target {
            img: Some(img),
            store,
            name,
            dir: dir.to_owned(),
            model: Model {
                size,
                pages: HashMap::new(),
                base: None,
            },
            fresh: false,
        });
    }
    let size = u64::from(u.int_in_range(0u32..=(MAX_FRESH / PAGE) as u32).ok()?) * PAGE;
    let cluster_bits = u.int_in_range(9..=16).ok()?;
    let header_compression = if u.arbitrary().ok()? {
        CompressionType::Zstd
    } else {
        CompressionType::Zlib
    };
    let (backing, base) = match u.int_in_range(0..=2).ok()? {
        0 => (None, Vec::new()),
        kind => {
            let qcow2 = kind == 1;
            let (file, guest) = make_base(u, qcow2)?;
            let path = dir.join(if qcow2 { "base.qcow2" } else { "base.raw" });
            std::fs::write(&path, file).expect("writing the backing file");
            let nb = open_new_backing(&name, &path, &OpenOptions::read_only())
                .unwrap_or_else(|e| panic!("opening a backing file kiln made failed: {e}"));
            (Some(nb), guest)
        }
    };
    let store = Arc::new(MemDev::new(0));
    let img = Image::create(
        Box::new(store.clone()),
        name.clone(),
        CreateOptions {
            size,
            cluster_bits,
            compression: header_compression,
            backing,
        },
    )
    .unwrap_or_else(|e| panic!("creating a valid image failed: {e}"));
    Some(Target {
        img: Some(img),
        store,
        name,
        dir: dir.to_owned(),
        model: Model {
            size,
            pages: HashMap::new(),
            base: Some(base),
        },
        fresh: true,
    })
}

fn run(data: &[u8]) -> Option<()> {
    let dir = scratch_dir();
    let mut u = Unstructured::new(data);
    let mut t = setup(&mut u, &dir)?;
    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        match u.int_in_range(0..=9).ok()? {
            0..=4 => t.write(&mut u)?,
            5..=6 => t.read(&mut u)?,
            7 => {
                if let Err(e) = t.img().flush() {
                    assert!(!t.fresh, "flushing a fresh image failed: {e}");
                }
            }
            8 => {
                if !t.reopen() {
                    return Some(());
                }
            }
            _ => t.flatten(&mut u)?,
        }
    }
    if t.fresh {
        t.model
            .check_all("final", t.img())
            .expect("reading a fresh image");
    }
    t.reopen();
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
