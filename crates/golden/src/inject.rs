//! Writing into the image: the pinned k3s release (verified against its `sha256sum-ARCH.txt`) and
//! the recipe's prerequisites. Nothing is ever executed: `install.sh` is only stored, for the
//! first-boot runcmd that the node seeds carry.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use kiln_blockdev::{Cancel, CancelRead};
use kiln_ext4::{FileKind, Filesystem, NewDir, NewFile};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::recipe::{
    Arch, DebEntry, DirEntry, FileEntry, K3s, Prerequisite, Recipe, SystemdEnable,
};
use crate::{Error, hex};

/// Where the k3s binary goes.
pub const K3S_BINARY: &str = "/usr/local/bin/k3s";
/// Where the air-gap images go (k3s imports every tarball in this directory at start).
pub const K3S_IMAGES_DIR: &str = "/var/lib/rancher/k3s/agent/images";

/// What kind of path was injected (`"dir"`, `"file"`, `"symlink"` in the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum InjectedKind {
    /// `dir`: a directory (given, or a missing parent kiln created).
    Dir,
    /// `file`: a regular file.
    File,
    /// `symlink`: a symbolic link.
    Symlink,
}

/// One path written into the image (an item of the manifest's `injected`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Injected {
    /// Absolute guest path.
    pub path: String,
    /// What was written there.
    pub kind: InjectedKind,
    /// A file's content sha256 (lower-case hex); absent for directories and symlinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A file's size in bytes; absent for directories and symlinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Octal permission bits (`"0755"`); symlinks have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// A symlink's target, as stored; absent for files and directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `k3s` or `prerequisites[N]`.
    pub from: String,
}

/// A k3s release asset that passed verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Asset {
    /// File name in the assets directory.
    pub name: String,
    /// Where it was read from on the host. Not serialised (empty in a manifest, and when read
    /// back).
    #[serde(skip)]
    pub host_path: PathBuf,
    /// Its pin (lower-case hex sha256), from the sums file or the recipe.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Where it goes in the image.
    pub dest: String,
}

/// The verified k3s release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct K3sRelease {
    /// The recipe's `k3s.version`.
    pub version: String,
    /// Every asset written, in the order written.
    pub assets: Vec<Asset>,
}

/// sha256 and size of a host file.
pub fn sha256_file(path: &Path, what: &'static str) -> Result<(String, u64), Error> {
    kiln_common::digest::sha256_file(path).map_err(|source| Error::ReadInput {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Parse standard `sha256sum` output: `<64 hex><space><space or *><name>` per line.
pub fn parse_sums(text: &str, path: &Path) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |reason| Error::SumsFile {
            path: path.to_owned(),
            line: i + 1,
            reason,
        };
        if line.trim().is_empty() {
            continue;
        }
        if line.len() < 66 || !line.is_char_boundary(64) {
            return Err(bad("not a sha256sum line (<64 hex digits>  <file name>)"));
        }
        let (sum, rest) = line.split_at(64);
        if !crate::recipe::is_sha256(&sum.to_ascii_lowercase()) {
            return Err(bad("the checksum is not 64 hex digits"));
        }
        let name = rest
            .strip_prefix("  ")
            .or_else(|| rest.strip_prefix(" *"))
            .ok_or_else(|| bad("expected two spaces (or \" *\") after the checksum"))?;
        if name.is_empty() {
            return Err(bad("no file name after the checksum"));
        }
        if out
            .insert(name.to_owned(), sum.to_ascii_lowercase())
            .is_some()
        {
            return Err(bad("the file is listed twice"));
        }
    }
    Ok(out)
}

impl K3sRelease {
    /// The release as the manifest records it: names, pins, sizes and destinations, without the
    /// host paths the assets were read from (so the manifest, and its value read back, are the same
    /// wherever the build ran).
    pub fn for_manifest(&self) -> K3sRelease {
        K3sRelease {
            version: self.version.clone(),
            assets: self
                .assets
                .iter()
                .map(|a| Asset {
                    host_path: PathBuf::new(),
                    ..a.clone()
                })
                .collect(),
        }
    }
}

/// Check the release assets in `k.assets` against `sha256sum-ARCH.txt` (and `install.sh` against
/// the recipe's pin when the sums file does not list it). With `hash_now`, every asset is read and
/// hashed here; without, only presence and pins are checked and [`inject_k3s`] checks each hash
/// while writing (one read instead of two; a mismatch still fails the build before any output is
/// renamed into place).
pub fn verify_k3s(recipe: &Recipe, k: &K3s, hash_now: bool) -> Result<K3sRelease, Error> {
    let arch = recipe.arch.as_str();
    let dir = recipe.resolve(&k.assets);
    let sums_path = dir.join(format!("sha256sum-{arch}.txt"));
    if !sums_path.is_file() {
        return Err(Error::AssetMissing { path: sums_path });
    }
    let text = std::fs::read_to_string(&sums_path).map_err(|source| Error::ReadInput {
        what: "k3s checksum file",
        path: sums_path.clone(),
        source,
    })?;
    let sums = parse_sums(&text, &sums_path)?;
    let binary = match recipe.arch {
        Arch::Amd64 => "k3s".to_owned(),
        Arch::Arm64 => "k3s-arm64".to_owned(),
    };
    let images = format!("k3s-airgap-images-{arch}.tar.zst");
    let mut wanted: Vec<(String, String)> = vec![(binary, K3S_BINARY.to_owned())];
    if k.airgap_images {
        wanted.push((images.clone(), format!("{K3S_IMAGES_DIR}/{images}")));
    }
    wanted.push((
        "install.sh".to_owned(),
        kiln_nocloud::K3S_INSTALL_SCRIPT.to_owned(),
    ));
    let mut assets = Vec::new();
    for (name, dest) in wanted {
        let host_path = dir.join(&name);
        if !host_path.is_file() {
            return Err(Error::AssetMissing { path: host_path });
        }
        let expected = match (sums.get(&name), name.as_str()) {
            (Some(s), _) => s.clone(),
            (None, "install.sh") => match &k.install_sh_sha256 {
                Some(s) => s.clone(),
                None => {
                    return Err(Error::AssetNotPinned {
                        name,
                        sums: sums_path,
                        hint: " and the recipe sets no k3s.install_sh_sha256",
                    });
                }
            },
            (None, _) => {
                return Err(Error::AssetNotPinned {
                    name,
                    sums: sums_path,
                    hint: "",
                });
            }
        };
        let size = if hash_now {
            let (actual, size) = sha256_file(&host_path, "k3s asset")?;
            if actual != expected {
                return Err(Error::ChecksumMismatch {
                    op: "verifying k3s asset",
                    path: host_path,
                    expected,
                    actual,
                });
            }
            size
        } else {
            std::fs::metadata(&host_path)
                .map_err(|source| Error::ReadInput {
                    what: "k3s asset",
                    path: host_path.clone(),
                    source,
                })?
                .len()
        };
        assets.push(Asset {
            name,
            host_path,
            sha256: expected,
            size,
            dest,
        });
    }
    Ok(K3sRelease {
        version: k.version.clone(),
        assets,
    })
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.hash.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
}

/// Collects what a step wrote, creating missing parent directories (recorded too).
pub struct Writer<'a, 'd> {
    /// The root filesystem written to.
    pub fs: &'a mut Filesystem<'d>,
    /// Every path written is appended here.
    pub out: &'a mut Vec<Injected>,
}

impl std::fmt::Debug for Writer<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

impl Writer<'_, '_> {
    fn exists(&self, path: &str) -> Result<Option<kiln_ext4::Metadata>, Error> {
        match self.fs.lstat(path) {
            Ok(m) => Ok(Some(m)),
            Err(kiln_ext4::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(Error::Inject {
                path: path.to_owned(),
                source: Box::new(source),
            }),
        }
    }

    /// `mkdir -p` with root-owned 0755 directories; every directory created is recorded.
    pub fn mkdir_p(&mut self, path: &str, from: &str) -> Result<(), Error> {
        if path == "/" || self.fs.stat(path).is_ok_and(|m| m.kind == FileKind::Dir) {
            return Ok(());
        }
        self.mkdir_p(parent(path), from)?;
        if self.exists(path)?.is_none() {
            self.fs
                .create_dir_all(path, NewDir::default())
                .map_err(|source| Error::Inject {
                    path: path.to_owned(),
                    source: Box::new(source),
                })?;
            self.out.push(Injected {
                path: path.to_owned(),
                kind: InjectedKind::Dir,
                sha256: None,
                size: None,
                mode: Some("0755".into()),
                uid: 0,
                gid: 0,
                target: None,
                from: from.to_owned(),
            });
        }
        Ok(())
    }

    /// Write a file from a reader; returns its sha256 and size as written.
    pub fn file(
        &mut self,
        path: &str,
        src: &mut dyn Read,
        attrs: NewFile,
        from: &str,
    ) -> Result<(String, u64), Error> {
        self.mkdir_p(parent(path), from)?;
        let mut h = Hashing {
            inner: src,
            hash: Sha256::new(),
            n: 0,
        };
        self.fs
            .write_file(path, &mut h, attrs)
            .map_err(|source| Error::Inject {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        // write_file keeps an existing file's inode; make mode/owner exactly what was asked.
        self.fs
            .set_permissions(path, attrs.perm)
            .and_then(|()| self.fs.set_owner(path, attrs.uid, attrs.gid, false))
            .map_err(|source| Error::Inject {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        let sha = hex(&h.hash.finalize());
        self.out.push(Injected {
            path: path.to_owned(),
            kind: InjectedKind::File,
            sha256: Some(sha.clone()),
            size: Some(h.n),
            mode: Some(format!("{:04o}", attrs.perm)),
            uid: attrs.uid,
            gid: attrs.gid,
            target: None,
            from: from.to_owned(),
        });
        Ok((sha, h.n))
    }

    /// A symlink, replacing whatever non-directory is at `path`.
    pub fn symlink(
        &mut self,
        target: &str,
        path: &str,
        uid: u32,
        gid: u32,
        from: &str,
    ) -> Result<(), Error> {
        self.mkdir_p(parent(path), from)?;
        let e = |source| Error::Inject {
            path: path.to_owned(),
            source: Box::new(source),
        };
        if let Some(m) = self.exists(path)? {
            if m.kind == FileKind::Dir {
                return Err(Error::Inject {
                    path: path.to_owned(),
                    source: Box::new(kiln_ext4::Error::IsADirectory {
                        op: kiln_ext4::Op::Symlink,
                        path: path.to_owned(),
                    }),
                });
            }
            self.fs.remove_file(path).map_err(e)?;
        }
        self.fs.symlink(target, path, uid, gid).map_err(e)?;
        self.out.push(Injected {
            path: path.to_owned(),
            kind: InjectedKind::Symlink,
            sha256: None,
            size: None,
            mode: None,
            uid,
            gid,
            target: Some(target.to_owned()),
            from: from.to_owned(),
        });
        Ok(())
    }
}

/// Write the verified release into the image. Each file is hashed as it is written and must match
/// its pin (an asset that differs, or changed since [`verify_k3s`], is an error). Copied in chunks
/// (about a MiB): before each, `cancel` is checked (a tripped handle fails the copy with an error
/// whose kind is [`kiln_blockdev::ErrorKind::Cancelled`]); after each, `progress(done, total)` is
/// told the bytes of all the assets written so far.
pub fn inject_k3s(
    w: &mut Writer<'_, '_>,
    rel: &K3sRelease,
    cancel: &Cancel,
    progress: &dyn Fn(u64, u64),
) -> Result<(), Error> {
    let total: u64 = rel.assets.iter().map(|a| a.size).sum();
    let mut before = 0u64;
    for a in &rel.assets {
        cancel.check()?;
        let f = std::fs::File::open(&a.host_path).map_err(|source| Error::ReadInput {
            what: "k3s asset",
            path: a.host_path.clone(),
            source,
        })?;
        let start = before;
        let mut f = CancelRead::new(f, cancel, move |n| progress((start + n).min(total), total));
        let perm = if a.dest.starts_with(K3S_IMAGES_DIR) {
            0o644
        } else {
            0o755
        };
        let (sha, size) = w.file(
            &a.dest,
            &mut f,
            NewFile {
                perm,
                ..NewFile::default()
            },
            "k3s",
        )?;
        if sha != a.sha256 || size != a.size {
            return Err(Error::ChecksumMismatch {
                op: "verifying k3s asset",
                path: a.host_path.clone(),
                expected: a.sha256.clone(),
                actual: sha,
            });
        }
        before += size;
    }
    Ok(())
}

/// Where `datasource_list` goes.
pub const DATASOURCE_CFG: &str = "/etc/cloud/cloud.cfg.d/90-kiln-datasource.cfg";

/// Where `.deb` prerequisites are staged.
pub const DEB_DIR: &str = "/var/lib/kiln/debs";
/// The first-boot oneshot that installs them.
pub const DEB_UNIT: &str = "kiln-install-debs.service";

const DEB_UNIT_TEXT: &str = "\
[Unit]
Description=Install the .deb packages kiln staged in the golden image (offline, first boot)
After=local-fs.target
Before=cloud-final.service k3s.service k3s-agent.service
ConditionPathExistsGlob=/var/lib/kiln/debs/*.deb

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'dpkg -i /var/lib/kiln/debs/*.deb && rm -f /var/lib/kiln/debs/*.deb'

[Install]
WantedBy=multi-user.target
";

/// Apply the recipe's prerequisites in order, checking `cancel` before each.
pub fn apply_prerequisites(
    w: &mut Writer<'_, '_>,
    recipe: &Recipe,
    cancel: &Cancel,
) -> Result<(), Error> {
    let mut debs = None;
    for (i, p) in recipe.prerequisites.iter().enumerate() {
        cancel.check()?;
        let from = format!("prerequisites[{i}]");
        let conf = NewFile {
            perm: 0o644,
            ..NewFile::default()
        };
        match p {
            Prerequisite::File(f) => prereq_file(w, recipe, f, i, &from)?,
            Prerequisite::Directory(d) => prereq_dir(w, d, &from)?,
            Prerequisite::Symlink(s) => {
                w.symlink(&s.target, &s.path, s.owner.uid, s.owner.gid, &from)?;
            }
            Prerequisite::ModulesLoad(m) => {
                let text: String = m.modules.iter().map(|x| format!("{x}\n")).collect();
                let path = format!("/etc/modules-load.d/{}.conf", m.name);
                w.file(&path, &mut text.as_bytes(), conf, &from)?;
            }
            Prerequisite::Sysctl(s) => {
                let text: String = s
                    .settings
                    .iter()
                    .map(|(k, v)| format!("{k} = {v}\n"))
                    .collect();
                let path = format!("/etc/sysctl.d/{}.conf", s.name);
                w.file(&path, &mut text.as_bytes(), conf, &from)?;
            }
            Prerequisite::SystemdEnable(u) => prereq_enable(w, u, i, &from)?,
            Prerequisite::CloudInitDatasource(d) => {
                let text = format!("datasource_list: [{}]\n", d.list.join(", "));
                w.file(DATASOURCE_CFG, &mut text.as_bytes(), conf, &from)?;
            }
            Prerequisite::Deb(d) => {
                prereq_deb(w, recipe, d, i, &from)?;
                debs.get_or_insert(from);
            }
        }
    }
    if let Some(from) = debs {
        let unit = format!("/etc/systemd/system/{DEB_UNIT}");
        w.file(
            &unit,
            &mut DEB_UNIT_TEXT.as_bytes(),
            NewFile::default(),
            &from,
        )?;
        w.symlink(
            &unit,
            &format!("/etc/systemd/system/multi-user.target.wants/{DEB_UNIT}"),
            0,
            0,
            &from,
        )?;
    }
    Ok(())
}

/// A file prerequisite: inline content, or a host source checked against its pin before and
/// while it is copied.
fn prereq_file(
    w: &mut Writer<'_, '_>,
    recipe: &Recipe,
    f: &FileEntry,
    i: usize,
    from: &str,
) -> Result<(), Error> {
    let attrs = NewFile {
        perm: f.mode.0,
        uid: f.owner.uid,
        gid: f.owner.gid,
        mtime: None,
    };
    let src = match (&f.content, &f.source) {
        (Some(c), _) => {
            w.file(&f.path, &mut c.as_bytes(), attrs, from)?;
            return Ok(());
        }
        (None, Some(src)) => src,
        (None, None) => return unreachable_prereq(i, &f.path),
    };
    let host = recipe.resolve(src);
    let check = |op: &'static str, actual: String| match &f.sha256 {
        Some(pin) if &actual != pin => Err(Error::ChecksumMismatch {
            op,
            path: host.clone(),
            expected: pin.clone(),
            actual,
        }),
        _ => Ok(()),
    };
    if f.sha256.is_some() {
        check(
            "verifying prerequisite source",
            sha256_file(&host, "prerequisite source")?.0,
        )?;
    }
    let mut file = std::fs::File::open(&host).map_err(|source| Error::ReadInput {
        what: "prerequisite source",
        path: host.clone(),
        source,
    })?;
    let (sha, _) = w.file(&f.path, &mut file, attrs, from)?;
    check("injecting prerequisite source (changed while reading)", sha)
}

/// A directory prerequisite, recorded with the attributes asked for (replacing a mkdir record).
fn prereq_dir(w: &mut Writer<'_, '_>, d: &DirEntry, from: &str) -> Result<(), Error> {
    w.mkdir_p(&d.path, from)?;
    let e = |source| Error::Inject {
        path: d.path.clone(),
        source: Box::new(source),
    };
    w.fs.set_permissions(&d.path, d.mode.0).map_err(e)?;
    w.fs.set_owner(&d.path, d.owner.uid, d.owner.gid, false)
        .map_err(e)?;
    w.out.retain(|x| x.path != d.path);
    w.out.push(Injected {
        path: d.path.clone(),
        kind: InjectedKind::Dir,
        sha256: None,
        size: None,
        mode: Some(d.mode.to_string()),
        uid: d.owner.uid,
        gid: d.owner.gid,
        target: None,
        from: from.to_owned(),
    });
    Ok(())
}

/// `systemctl enable` offline: the wants/ link to the first unit directory holding the unit.
fn prereq_enable(
    w: &mut Writer<'_, '_>,
    u: &SystemdEnable,
    i: usize,
    from: &str,
) -> Result<(), Error> {
    let candidates = [
        format!("/etc/systemd/system/{}", u.unit),
        format!("/usr/lib/systemd/system/{}", u.unit),
        format!("/lib/systemd/system/{}", u.unit),
    ];
    let Some(unit_path) = candidates
        .iter()
        .find(|c| w.fs.stat(c).is_ok_and(|m| m.kind == FileKind::File))
    else {
        return Err(Error::Prereq {
            index: i,
            path: u.unit.clone(),
            message: format!(
                "unit {} is in none of /etc/systemd/system, /usr/lib/systemd/system, /lib/systemd/system (add it with a file prerequisite first)",
                u.unit
            ),
        });
    };
    let link = format!("/etc/systemd/system/{}.wants/{}", u.wanted_by, u.unit);
    w.symlink(unit_path, &link, 0, 0, from)
}

/// A pinned `.deb`, staged under [`DEB_DIR`] for the first-boot unit.
fn prereq_deb(
    w: &mut Writer<'_, '_>,
    recipe: &Recipe,
    d: &DebEntry,
    i: usize,
    from: &str,
) -> Result<(), Error> {
    let host = recipe.resolve(&d.source);
    let bytes = std::fs::read(&host).map_err(|source| Error::ReadInput {
        what: ".deb prerequisite",
        path: host.clone(),
        source,
    })?;
    let actual = hex(&Sha256::digest(&bytes));
    if actual != d.sha256 {
        return Err(Error::ChecksumMismatch {
            op: "verifying .deb prerequisite",
            path: host,
            expected: d.sha256.clone(),
            actual,
        });
    }
    if !(bytes.starts_with(b"!<arch>\n") && bytes.get(8..21) == Some(b"debian-binary")) {
        return Err(Error::Prereq {
            index: i,
            path: host.display().to_string(),
            message: "not a Debian package (no ar archive with debian-binary first)".into(),
        });
    }
    let name = host
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let conf = NewFile {
        perm: 0o644,
        ..NewFile::default()
    };
    w.file(
        &format!("{DEB_DIR}/{name}"),
        &mut bytes.as_slice(),
        conf,
        from,
    )?;
    Ok(())
}

fn unreachable_prereq(index: usize, path: &str) -> Result<(), Error> {
    Err(Error::Prereq {
        index,
        path: path.to_owned(),
        message: "needs content or source".into(),
    })
}
