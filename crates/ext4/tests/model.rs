//! Property test: random operation sequences applied through kiln-ext4 and to an in-memory model;
//! then `e2fsck -fn` must be clean and debugfs must read back exactly the model (names, kinds,
//! bytes, mode, owner, mtime, symlink targets).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use kiln_blockdev::FileDev;
use kiln_ext4::{Error, Filesystem, NewDir, NewFile, OpenOptions, Times};
use proptest::prelude::*;

const T: i64 = 1_760_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    File {
        data: Vec<u8>,
        perm: u16,
        uid: u32,
        gid: u32,
        mtime: i64,
    },
    Dir {
        perm: u16,
        uid: u32,
        gid: u32,
        mtime: Option<i64>,
    },
    Link {
        target: String,
    },
}

#[derive(Debug, Clone)]
enum OpK {
    Write {
        path: Vec<u8>,
        len: usize,
        seed: u8,
        perm: u16,
        uid: u32,
        gid: u32,
        mtime: i64,
    },
    Mkdir {
        path: Vec<u8>,
    },
    Symlink {
        path: Vec<u8>,
        target_len: usize,
        seed: u8,
    },
    Remove {
        path: Vec<u8>,
    },
    Truncate {
        path: Vec<u8>,
        len: usize,
    },
    Chmod {
        path: Vec<u8>,
        perm: u16,
    },
    Chown {
        path: Vec<u8>,
        uid: u32,
        gid: u32,
    },
    Utime {
        path: Vec<u8>,
        mtime: i64,
    },
}

fn path_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..4, 1..4)
}

fn size_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..5000,
        2 => 4090usize..4100,
        1 => 0usize..3_000_000,
    ]
}

fn id_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![3 => 0u32..3, 1 => 1000u32..1002, 1 => 65535u32..65540, 1 => 100_000u32..100_002]
}

fn time_strategy() -> impl Strategy<Value = i64> {
    prop_oneof![3 => 0i64..2_000_000_000, 1 => 2_200_000_000i64..5_000_000_000]
}

fn op_strategy() -> impl Strategy<Value = OpK> {
    prop_oneof![
        6 => (path_strategy(), size_strategy(), any::<u8>(), 0u16..0o7777, id_strategy(), id_strategy(), time_strategy())
            .prop_map(|(path, len, seed, perm, uid, gid, mtime)| OpK::Write { path, len, seed, perm, uid, gid, mtime }),
        2 => path_strategy().prop_map(|path| OpK::Mkdir { path }),
        2 => (path_strategy(), prop_oneof![2usize..59, 59usize..61, 61usize..400], any::<u8>())
            .prop_map(|(path, target_len, seed)| OpK::Symlink { path, target_len, seed }),
        3 => path_strategy().prop_map(|path| OpK::Remove { path }),
        2 => (path_strategy(), size_strategy()).prop_map(|(path, len)| OpK::Truncate { path, len }),
        1 => (path_strategy(), 0u16..0o7777).prop_map(|(path, perm)| OpK::Chmod { path, perm }),
        1 => (path_strategy(), id_strategy(), id_strategy()).prop_map(|(path, uid, gid)| OpK::Chown { path, uid, gid }),
        1 => (path_strategy(), time_strategy()).prop_map(|(path, mtime)| OpK::Utime { path, mtime }),
    ]
}

const NAMES: [&str; 4] = ["a", "bb", "c.txt", "d-dir"];

fn guest_path(p: &[u8]) -> String {
    let mut s = String::from("/t");
    for &i in p {
        s.push('/');
        s.push_str(NAMES[usize::from(i)]);
    }
    s
}

/// `len` bytes of file content for `seed` (a fixed xorshift stream).
fn content(len: usize, seed: u8) -> Vec<u8> {
    kiln_fixtures::testing::noise(u32::from(seed) | 0x9E37_0000, len)
}

/// The model: guest path → node (the sandbox root `/t` is a directory that always exists).
struct Model {
    nodes: BTreeMap<String, Node>,
}

impl Model {
    /// Whether every proper ancestor of `p` (below /t) is a directory in the model.
    fn parents_ok(&self, p: &[u8]) -> bool {
        (1..p.len()).all(|n| matches!(self.nodes.get(&guest_path(&p[..n])), Some(Node::Dir { .. })))
    }
    fn parents_free(&self, p: &[u8]) -> bool {
        (1..p.len()).all(|n| {
            matches!(
                self.nodes.get(&guest_path(&p[..n])),
                None | Some(Node::Dir { .. })
            )
        })
    }
    fn mkdirs(&mut self, p: &[u8]) {
        for n in 1..=p.len() {
            self.nodes.entry(guest_path(&p[..n])).or_insert(Node::Dir {
                perm: 0o755,
                uid: 0,
                gid: 0,
                mtime: None,
            });
        }
    }
    fn remove_tree(&mut self, path: &str) {
        let prefix = format!("{path}/");
        self.nodes
            .retain(|k, _| k != path && !k.starts_with(&prefix));
    }
}

fn apply(fs: &mut Filesystem<'_>, m: &mut Model, op: &OpK) {
    match op {
        OpK::Write {
            path,
            len,
            seed,
            perm,
            uid,
            gid,
            mtime,
        } => {
            let gp = guest_path(path);
            if !m.parents_free(path) || matches!(m.nodes.get(&gp), Some(Node::Dir { .. })) {
                return;
            }
            if path.len() > 1 {
                fs.create_dir_all(guest_path(&path[..path.len() - 1]), NewDir::default())
                    .unwrap();
                m.mkdirs(&path[..path.len() - 1]);
            }
            let data = content(*len, *seed);
            let attrs = NewFile {
                perm: *perm,
                uid: *uid,
                gid: *gid,
                mtime: Some(*mtime),
            };
            // Both paths: a known length (blocks preallocated) and a plain reader.
            if seed % 2 == 0 {
                fs.write(&gp, &data, attrs).unwrap();
            } else {
                fs.write_file(&gp, &mut std::io::Cursor::new(&data), attrs)
                    .unwrap();
            }
            m.nodes.insert(
                gp,
                Node::File {
                    data,
                    perm: *perm,
                    uid: *uid,
                    gid: *gid,
                    mtime: *mtime,
                },
            );
        }
        OpK::Mkdir { path } => {
            let gp = guest_path(path);
            if !m.parents_free(path)
                || matches!(
                    m.nodes.get(&gp),
                    Some(Node::File { .. } | Node::Link { .. })
                )
            {
                let r = fs.create_dir_all(&gp, NewDir::default());
                // A file in the way: not a directory; a (dangling) symlink: not found.
                assert!(
                    matches!(r, Err(Error::NotADirectory { .. } | Error::NotFound { .. })),
                    "mkdir -p over a non-dir: {r:?}"
                );
                return;
            }
            fs.create_dir_all(&gp, NewDir::default()).unwrap();
            m.mkdirs(path);
        }
        OpK::Symlink {
            path,
            target_len,
            seed,
        } => {
            let gp = guest_path(path);
            if !m.parents_ok(path) {
                return;
            }
            // Targets start with `Z`, which no sandbox name does: they never resolve (dangling).
            let target: String = std::iter::once('Z')
                .chain(
                    content(*target_len - 1, *seed)
                        .iter()
                        .map(|b| (b'a' + b % 26) as char),
                )
                .collect();
            if m.nodes.contains_key(&gp) {
                assert!(matches!(
                    fs.symlink(&target, &gp, 0, 0),
                    Err(Error::AlreadyExists { .. })
                ));
                return;
            }
            fs.symlink(&target, &gp, 0, 0).unwrap();
            m.nodes.insert(gp, Node::Link { target });
        }
        OpK::Remove { path } => {
            let gp = guest_path(path);
            if !m.parents_ok(path) {
                return;
            }
            match m.nodes.get(&gp) {
                None => assert!(matches!(fs.remove_all(&gp), Err(Error::NotFound { .. }))),
                Some(Node::Dir { .. }) => {
                    assert!(matches!(
                        fs.remove_file(&gp),
                        Err(Error::IsADirectory { .. })
                    ));
                    fs.remove_all(&gp).unwrap();
                    m.remove_tree(&gp);
                }
                Some(_) => {
                    fs.remove_file(&gp).unwrap();
                    m.nodes.remove(&gp);
                }
            }
        }
        OpK::Truncate { path, len } => {
            let gp = guest_path(path);
            if let Some(Node::File { data, mtime, .. }) = m.nodes.get_mut(&gp) {
                fs.truncate(&gp, *len as u64).unwrap();
                data.resize(*len, 0);
                *mtime = T;
            }
        }
        OpK::Chmod { path, perm } => {
            let gp = guest_path(path);
            if let Some(Node::File { perm: p, .. } | Node::Dir { perm: p, .. }) =
                m.nodes.get_mut(&gp)
            {
                fs.set_permissions(&gp, *perm).unwrap();
                *p = *perm;
            }
        }
        OpK::Chown { path, uid, gid } => {
            let gp = guest_path(path);
            if let Some(Node::File { uid: u, gid: g, .. } | Node::Dir { uid: u, gid: g, .. }) =
                m.nodes.get_mut(&gp)
            {
                fs.set_owner(&gp, *uid, *gid, true).unwrap();
                (*u, *g) = (*uid, *gid);
            }
        }
        OpK::Utime { path, mtime } => {
            let gp = guest_path(path);
            let times = Times {
                mtime: Some(*mtime),
                atime: Some(*mtime),
                ctime: None,
            };
            match m.nodes.get_mut(&gp) {
                Some(Node::File { mtime: t, .. }) => {
                    fs.set_times(&gp, times, true).unwrap();
                    *t = *mtime;
                }
                Some(Node::Dir { mtime: t, .. }) => {
                    fs.set_times(&gp, times, true).unwrap();
                    *t = Some(*mtime);
                }
                _ => {}
            }
        }
    }
    // Directory mtimes change with their entries; only check those the test set explicitly and
    // that nothing touched since.
    if let Some(p) = op_path(op) {
        for n in 1..p.len() {
            if let Some(Node::Dir { mtime, .. }) = m.nodes.get_mut(&guest_path(&p[..n])) {
                *mtime = None;
            }
        }
    }
}

fn op_path(op: &OpK) -> Option<&[u8]> {
    match op {
        OpK::Write { path, .. }
        | OpK::Mkdir { path }
        | OpK::Symlink { path, .. }
        | OpK::Remove { path }
        | OpK::Truncate { path, .. }
        | OpK::Chmod { path, .. }
        | OpK::Chown { path, .. }
        | OpK::Utime { path, .. } => Some(path),
    }
}

/// Check the image with e2fsck and compare everything under /t with the model through debugfs.
fn verify(img: &std::path::Path, m: &Model) {
    fsck_clean(img);
    let dir = tempfile::tempdir().unwrap();
    let mut cmds = Vec::new();
    let mut dirs = vec!["/t".to_owned()];
    let host_of = |k: usize| dir.path().join(format!("f{k}"));
    for (k, (p, n)) in m.nodes.iter().enumerate() {
        cmds.push(format!("stat {p}"));
        match n {
            Node::File { .. } | Node::Link { .. } => {
                cmds.push(format!("dump {p} {}", host_of(k).display()));
            }
            Node::Dir { .. } => dirs.push(p.clone()),
        }
    }
    for d in &dirs {
        cmds.push(format!("ls {d}"));
    }
    let out = debugfs(img, &cmds);
    let mut i = 0;
    for (k, (p, n)) in m.nodes.iter().enumerate() {
        let st = parse_stat(&out[i]).unwrap_or_else(|| panic!("debugfs stat {p}: {}", out[i]));
        i += 1;
        match n {
            Node::File {
                data,
                perm,
                uid,
                gid,
                mtime,
            } => {
                assert_eq!(st.kind, "regular", "{p}");
                assert_eq!(
                    (st.mode, st.uid, st.gid, st.mtime, st.size),
                    (u32::from(*perm), *uid, *gid, *mtime, data.len() as u64),
                    "{p}"
                );
                let dumped = std::fs::read(host_of(k)).unwrap_or_else(|e| panic!("{p}: {e}"));
                assert!(
                    dumped == *data,
                    "{p}: content differs ({} vs {} bytes)",
                    dumped.len(),
                    data.len()
                );
                i += 1;
            }
            Node::Link { target } => {
                assert_eq!(st.kind, "symlink", "{p}");
                assert_eq!(st.size, target.len() as u64, "{p}");
                if let Some(fast) = &st.fast_link {
                    assert_eq!(fast, target, "{p}");
                }
                let dumped = std::fs::read(host_of(k)).unwrap_or_default();
                if st.fast_link.is_none() {
                    assert_eq!(
                        String::from_utf8_lossy(&dumped[..target.len().min(dumped.len())]),
                        *target,
                        "{p}"
                    );
                }
                i += 1;
            }
            Node::Dir {
                perm,
                uid,
                gid,
                mtime,
            } => {
                assert_eq!(st.kind, "directory", "{p}");
                assert_eq!(
                    (st.mode, st.uid, st.gid),
                    (u32::from(*perm), *uid, *gid),
                    "{p}"
                );
                if let Some(t) = mtime {
                    assert_eq!(st.mtime, *t, "{p}");
                }
            }
        }
    }
    // Directory listings: exactly the model's children.
    for (k, d) in dirs.iter().enumerate() {
        let listing = &out[i + k];
        // `ls` prints "<ino>  (<rec_len>) <name>": take the token after each "(n)".
        let mut names: Vec<String> = Vec::new();
        let toks: Vec<&str> = listing.split_whitespace().collect();
        for w in toks.windows(2) {
            if w[0].starts_with('(') && w[0].ends_with(')') {
                names.push(w[1].to_owned());
            }
        }
        names.retain(|n| n != "." && n != "..");
        names.sort();
        let mut want: Vec<String> = m
            .nodes
            .keys()
            .filter_map(|p| p.strip_prefix(&format!("{d}/")))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_owned)
            .collect();
        want.sort();
        assert_eq!(names, want, "listing of {d}");
    }
}

fn run_ops(dev: &dyn kiln_blockdev::BlockDev, ops: &[OpK]) -> Model {
    let mut m = Model {
        nodes: BTreeMap::new(),
    };
    let mut fs = Filesystem::open(dev, "model.ext4", OpenOptions::read_write(T)).unwrap();
    fs.create_dir_all("/t", NewDir::default()).unwrap();
    for op in ops {
        apply(&mut fs, &mut m, op);
    }
    // Read back through kiln too.
    for (p, n) in &m.nodes {
        if let Node::File { data, .. } = n {
            assert!(fs.read(p).unwrap() == *data, "kiln read-back of {p}");
        }
    }
    fs.close().unwrap();
    let files = m
        .nodes
        .values()
        .filter(|n| matches!(n, Node::File { .. }))
        .count();
    let bytes: usize = m
        .nodes
        .values()
        .map(|n| {
            if let Node::File { data, .. } = n {
                data.len()
            } else {
                0
            }
        })
        .sum();
    eprintln!(
        "{} ops -> {} nodes ({files} files, {bytes} bytes)",
        ops.len(),
        m.nodes.len()
    );
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, max_shrink_iters: 40, ..ProptestConfig::default() })]

    /// Raw filesystem image.
    #[test]
    fn random_ops_match_the_model(ops in prop::collection::vec(op_strategy(), 60..90)) {
        let dir = tempfile::tempdir().unwrap();
        let img = rootfs(dir.path(), 256, 300);
        let dev = FileDev::open_read_write(&img).unwrap();
        let m = run_ops(&dev, &ops);
        drop(dev);
        verify(&img, &m);
    }

    /// The same through a qcow2 overlay on a compressed GPT base: qemu-img check clean too.
    #[test]
    fn random_ops_through_a_qcow2_overlay_match_the_model(ops in prop::collection::vec(op_strategy(), 60..90)) {
        let dir = tempfile::tempdir().unwrap();
        let root = rootfs(dir.path(), 128, 300);
        let (base, start, len) = gpt_qcow2(dir.path(), &root);
        let overlay_path = dir.path().join("node.qcow2");
        let pending = kiln_qcow2::begin_overlay(&overlay_path, &base, None, &kiln_qcow2::OpenOptions::default()).unwrap();
        let m = {
            let table = kiln_partition::scan(pending.image(), "node.qcow2").unwrap();
            let part = table.root().unwrap();
            prop_assert_eq!((part.start, part.number), (start, 1));
            let win = kiln_partition::window(pending.image(), "node.qcow2", part).unwrap();
            run_ops(&win, &ops)
        };
        pending.commit().unwrap();
        qemu_img_check(&overlay_path);
        let part = dir.path().join("part.ext4");
        extract_partition(&overlay_path, start, len, &part);
        verify(&part, &m);
    }
}

#[test]
fn a_file_over_100_mb_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let img = rootfs(dir.path(), 400, 10);
    let len = 110usize << 20;
    let data = content(len, 42);
    let start = std::time::Instant::now();
    {
        let dev = FileDev::open_read_write(&img).unwrap();
        let mut fs = Filesystem::open(&dev, "big.ext4", OpenOptions::read_write(T)).unwrap();
        fs.write("/big.bin", &data, NewFile::default()).unwrap();
        fs.close().unwrap();
    }
    let took = start.elapsed();
    eprintln!(
        "wrote {} MiB in {:.2?} ({:.0} MiB/s)",
        len >> 20,
        took,
        (len >> 20) as f64 / took.as_secs_f64()
    );
    fsck_clean(&img);
    let host = dir.path().join("big.out");
    let out = debugfs(
        &img,
        &[
            "stat /big.bin".into(),
            format!("dump /big.bin {}", host.display()),
        ],
    );
    let st = parse_stat(&out[0]).unwrap();
    assert_eq!(st.size, len as u64);
    assert_ne!(st.flags & 0x80000, 0, "extents");
    assert!(std::fs::read(&host).unwrap() == data, "content differs");
}
