//! The NoCloud seed-volume writers (kiln_seedvol): a random tree — names from a pool of awkward ones
//! (case twins, 8.3 look-alikes, trailing dots, Joliet-forbidden characters, long and non-ASCII
//! names) or arbitrary strings, nested directories, file contents, modes — written as ISO 9660
//! and as vfat.
//!
//! Invalid names, modes and labels must be `Err`, never a panic. Each writer must be deterministic
//! (two runs, same bytes). What they wrote is read back: the ISO by walking its primary tree with
//! the Rock Ridge names and modes (a small reader below), the vfat image by mounting it with
//! `fatfs`; both must hold exactly the tree that was accepted.
#![no_main]

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use kiln_seedvol::{IsoOptions, Tree, VfatOptions, write_iso, write_vfat};
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

const POOL: &[&str] = &[
    "a",
    "A",
    "b",
    "meta-data",
    "user-data",
    "network-config",
    "dir",
    "x.txt",
    "X.TXT",
    "longfilename.txt",
    "LONGFI~1.TXT",
    "longfi~1.txt",
    "1aaaaaaaaa",
    "1aaaaa~1",
    "1AAAAA~1",
    "é",
    "É",
    "日本語",
    "a b",
    "a.b.c",
    "trailing.",
    "sp ",
    " lead",
    ".hidden",
    "*",
    "a:b",
    "back\\slash",
    "ctl\u{1}",
    "quote\"",
    "",
    ".",
    "..",
    "😀",
    "ß",
    "ﬀ",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File { data: Vec<u8>, perm: u32 },
    Dir { perm: u32, implicit: bool },
}

/// What the tree should hold, keyed by path components.
type Model = BTreeMap<Vec<String>, Entry>;

fn name(u: &mut Unstructured) -> Option<String> {
    Some(match u.int_in_range(0..=POOL.len() + 2).ok()? {
        i if i < POOL.len() => POOL[i].to_owned(),
        i if i == POOL.len() => u.arbitrary::<&str>().ok()?.to_owned(),
        i if i == POOL.len() + 1 => {
            let c = *u.choose(&['n', 'é', 'N', '.', ' ']).ok()?;
            let n = u.int_in_range(1..=300).ok()?;
            std::iter::repeat_n(c, n).collect()
        }
        _ => {
            // name~N.ext look-alikes of a long name's generated 8.3 name
            let stem = *u.choose(&["abcdefghij", "ABCDEF", "abcdef"]).ok()?;
            let n = u.int_in_range(1..=9).ok()?;
            let ext = *u.choose(&["", ".txt", ".TXT", ".longext"]).ok()?;
            format!("{}~{n}{ext}", &stem[..6])
        }
    })
}

fn mode(u: &mut Unstructured, file: bool) -> Option<u32> {
    Some(match u.int_in_range(0..=3).ok()? {
        0 => {
            if file {
                0o644
            } else {
                0o755
            }
        }
        1 => u.int_in_range(0..=0o7777).ok()?,
        2 => (if file { 0o100_000 } else { 0o040_000 }) | u.int_in_range(0..=0o7777).ok()?,
        _ => u.arbitrary().ok()?,
    })
}

fn data(u: &mut Unstructured) -> Option<Vec<u8>> {
    let len = u.int_in_range(0..=u.len().min(4096)).ok()?;
    let src = u.bytes(len).ok()?.to_vec();
    if !src.is_empty() && u.ratio(1, 8).ok()? {
        // A multi-sector / multi-cluster file.
        let n = u.int_in_range(2049..=70_000).ok()?;
        return Some(src.iter().cycle().take(n).copied().collect());
    }
    Some(src)
}

/// Apply one add to the tree and, when it is accepted, to the model.
fn add(u: &mut Unstructured, tree: &mut Tree, model: &mut Model) -> Option<()> {
    let depth = u.int_in_range(1..=10).ok()?;
    let mut comps = Vec::new();
    for _ in 0..depth.min(if u.ratio(1, 4).ok()? { 10 } else { 3 }) {
        comps.push(name(u)?);
    }
    let mut path = comps.join("/");
    if u.ratio(1, 10).ok()? {
        path.insert(0, '/');
    }
    let is_file: bool = u.arbitrary().ok()?;
    let perm_mode = mode(u, is_file)?;
    let res = if is_file {
        let data = data(u)?;
        tree.add_file(&path, data.clone(), perm_mode)
            .map(|()| Entry::File {
                data,
                perm: perm_mode & 0o7777,
            })
    } else {
        tree.add_dir(&path, perm_mode).map(|()| Entry::Dir {
            perm: perm_mode & 0o7777,
            implicit: false,
        })
    };
    let Ok(entry) = res else {
        return Some(());
    };
    let comps: Vec<String> = path
        .strip_prefix('/')
        .unwrap_or(&path)
        .split('/')
        .map(str::to_owned)
        .collect();
    for i in 1..comps.len() {
        let parent = model.entry(comps[..i].to_vec()).or_insert(Entry::Dir {
            perm: 0o755,
            implicit: true,
        });
        assert!(
            matches!(parent, Entry::Dir { .. }),
            "{path:?} was added under the file {:?}",
            comps[..i].join("/")
        );
    }
    match model.get(&comps) {
        None => {}
        Some(Entry::Dir { implicit: true, .. }) if matches!(entry, Entry::Dir { .. }) => {}
        Some(old) => panic!("{path:?} was added over {old:?}"),
    }
    model.insert(comps, entry);
    Some(())
}

fn le32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize
}

const SECTOR: usize = 2048;

/// Rock Ridge name and mode of a directory record's system use area (following CE).
fn rock_ridge<'a>(iso: &'a [u8], mut su: &'a [u8]) -> (Vec<u8>, u32) {
    let mut name = Vec::new();
    let mut mode = None;
    let mut hops = 0;
    loop {
        let mut next = None;
        while su.len() >= 4 {
            let len = su[2] as usize;
            assert!(len >= 4 && len <= su.len(), "SUSP entry length {len}");
            let e = &su[..len];
            match &e[..2] {
                b"NM" => name.extend_from_slice(&e[5..]),
                b"PX" => mode = Some(le32(e, 4) as u32),
                b"CE" => next = Some((le32(e, 4), le32(e, 12), le32(e, 20))),
                b"ST" => break,
                _ => {}
            }
            su = &su[len..];
        }
        let Some((block, off, len)) = next else { break };
        hops += 1;
        assert!(hops < 64, "CE chain too long");
        let start = block * SECTOR + off;
        su = &iso[start..start + len];
    }
    (name, mode.expect("every record has a PX entry"))
}

/// Walk the primary tree: path → (mode, file data).
fn walk_iso(
    iso: &[u8],
    lba: usize,
    len: usize,
    prefix: &[String],
    out: &mut BTreeMap<Vec<String>, (u32, Option<Vec<u8>>)>,
) {
    let dir = &iso[lba * SECTOR..lba * SECTOR + len];
    let mut pos = 0;
    let mut seen = 0;
    while pos < dir.len() {
        let rl = dir[pos] as usize;
        if rl == 0 {
            pos = (pos / SECTOR + 1) * SECTOR;
            continue;
        }
        let r = &dir[pos..pos + rl];
        pos += rl;
        seen += 1;
        let nl = r[32] as usize;
        let ident = &r[33..33 + nl];
        if ident == [0] || ident == [1] {
            continue;
        }
        let su_start = 33 + nl + usize::from(nl % 2 == 0);
        let (name, mode) = rock_ridge(iso, &r[su_start..]);
        let name = String::from_utf8(name).expect("Rock Ridge names are the UTF-8 names given");
        let mut path = prefix.to_vec();
        path.push(name);
        let extent = le32(r, 2);
        let size = le32(r, 10);
        if r[25] & 2 != 0 {
            assert_eq!(mode & 0o170_000, 0o040_000, "directory mode");
            out.insert(path.clone(), (mode, None));
            walk_iso(iso, extent, size, &path, out);
        } else {
            assert_eq!(mode & 0o170_000, 0o100_000, "file mode");
            let data = iso[extent * SECTOR..extent * SECTOR + size].to_vec();
            assert!(out.insert(path, (mode, Some(data))).is_none(), "duplicate");
        }
    }
    assert!(seen >= 2, "a directory has . and ..");
}

fn check_iso(iso: &[u8], model: &Model) {
    assert_eq!(iso.len() % SECTOR, 0);
    let pvd = &iso[16 * SECTOR..17 * SECTOR];
    assert_eq!(&pvd[..6], b"\x01CD001");
    assert_eq!(le32(pvd, 80) * SECTOR, iso.len(), "volume space size");
    assert_eq!(&iso[17 * SECTOR..17 * SECTOR + 6], b"\x02CD001");
    assert_eq!(&iso[18 * SECTOR..18 * SECTOR + 6], b"\xffCD001");
    let root = &pvd[156..156 + 34];
    let mut got = BTreeMap::new();
    walk_iso(iso, le32(root, 2), le32(root, 10), &[], &mut got);
    let want: BTreeMap<Vec<String>, (u32, Option<Vec<u8>>)> = model
        .iter()
        .map(|(p, e)| {
            let v = match e {
                Entry::File { data, perm } => (0o100_000 | perm, Some(data.clone())),
                Entry::Dir { perm, .. } => (0o040_000 | perm, None),
            };
            (p.clone(), v)
        })
        .collect();
    assert!(got == want, "the ISO holds another tree than was written");
}

fn walk_fat<T: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<'_, T>,
    prefix: &[String],
    out: &mut BTreeMap<Vec<String>, Option<Vec<u8>>>,
) {
    for e in dir.iter() {
        let e = e.expect("listing a vfat directory");
        let name = e.file_name();
        if name == "." || name == ".." {
            continue;
        }
        let mut path = prefix.to_vec();
        path.push(name);
        if e.is_dir() {
            out.insert(path.clone(), None);
            walk_fat(&e.to_dir(), &path, out);
        } else {
            let mut data = Vec::new();
            e.to_file()
                .read_to_end(&mut data)
                .expect("reading a vfat file");
            assert!(out.insert(path, Some(data)).is_none(), "duplicate");
        }
    }
}

fn check_vfat(img: Vec<u8>, model: &Model) {
    let fs = fatfs::FileSystem::new(Cursor::new(img), fatfs::FsOptions::new())
        .expect("mounting the vfat image");
    let mut got = BTreeMap::new();
    walk_fat(&fs.root_dir(), &[], &mut got);
    let want: BTreeMap<Vec<String>, Option<Vec<u8>>> = model
        .iter()
        .map(|(p, e)| {
            let v = match e {
                Entry::File { data, .. } => Some(data.clone()),
                Entry::Dir { .. } => None,
            };
            (p.clone(), v)
        })
        .collect();
    if got != want {
        let gk: Vec<_> = got.keys().collect();
        let wk: Vec<_> = want.keys().collect();
        panic!("the vfat image holds another tree than was written:\n got {gk:?}\nwant {wk:?}");
    }
}

fn label(u: &mut Unstructured, good: &[&str]) -> Option<String> {
    Some(if u.ratio(1, 4).ok()? {
        u.arbitrary::<&str>().ok()?.to_owned()
    } else {
        (*u.choose(good).ok()?).to_owned()
    })
}

fn run(input: &[u8]) -> Option<()> {
    let mut u = Unstructured::new(input);
    let mut tree = Tree::new();
    let mut model = Model::new();
    let n = u.int_in_range(0..=24).ok()?;
    for _ in 0..n {
        add(&mut u, &mut tree, &mut model)?;
    }
    assert_eq!(tree.len(), model.len(), "tree entries");
    let epoch = if u.ratio(1, 4).ok()? {
        u.arbitrary().ok()?
    } else {
        1_700_000_000
    };
    let iso_opts = IsoOptions {
        volume_id: label(&mut u, &["cidata", "CIDATA", "a", "sixteen-chars-16"])?,
        epoch,
    };
    let mut iso = Vec::new();
    if let Ok(n) = write_iso(&tree, &iso_opts, &mut iso) {
        assert_eq!(n as usize, iso.len(), "write_iso's byte count");
        let mut again = Vec::new();
        write_iso(&tree, &iso_opts, &mut again).expect("the same ISO a second time");
        assert!(iso == again, "write_iso is not deterministic");
        check_iso(&iso, &model);
    }
    let fat_opts = VfatOptions {
        volume_label: label(&mut u, &["CIDATA", "A", "ELEVEN CHRS"])?,
        epoch,
    };
    let mut fat = Cursor::new(Vec::new());
    if write_vfat(&tree, &fat_opts, &mut fat).is_ok() {
        let mut again = Cursor::new(Vec::new());
        write_vfat(&tree, &fat_opts, &mut again).expect("the same vfat image a second time");
        assert!(
            fat.get_ref() == again.get_ref(),
            "write_vfat is not deterministic"
        );
        check_vfat(fat.into_inner(), &model);
    }
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
