//! The build: ordered, named steps over one context, each reporting what it changed and how long
//! it took.
//!
//! ```text
//!  open-base        sha256 of the base file against the recipe's pin
//!  overlay          a copy-on-write qcow2 over the base (in memory for `qcow2` output, the temp
//!                   output file for `overlay` output)
//!  find-rootfs      GPT/MBR scan, the `cloudimg-rootfs` ext4, opened read-write at SOURCE_DATE_EPOCH
//!  scrub            the catalog ops the recipe selects
//!  k3s              verify the release against sha256sum-ARCH.txt, write binary / images / install.sh
//!  prerequisites    the recipe's files, dirs, symlinks, modules, sysctls, units, datasource
//!  normalise-times  every changed path and its parents get atime = mtime = ctime = SOURCE_DATE_EPOCH
//!  close            flush libext2fs (bitmaps, group descriptors, superblock)
//!  output           flatten (qcow2) or close the overlay, into `.<name>.kiln-tmp`
//!  manifest         hash the output, write the manifest (temp), then rename both into place
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_blockdev::{AtomicFile, BlockDev, MemDev};
use kiln_ext4::Filesystem;
use kiln_qcow2::{CompressionType, CreateOptions, Disk, FlattenOptions, Image, OpenOptions};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::inject::{self, Injected, K3sRelease, Writer};
use crate::manifest::{BaseInfo, MANIFEST_VERSION, Manifest, OutputInfo, ScrubRecord};
use crate::recipe::{Compression, OutputKind, Recipe};
use crate::scrub::ScrubInput;
use crate::{Error, hex};

/// The step names, in order.
pub const STEPS: &[&str] = &[
    "open-base",
    "overlay",
    "find-rootfs",
    "scrub",
    "k3s",
    "prerequisites",
    "normalise-times",
    "close",
    "output",
    "manifest",
];

/// What a step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    pub name: &'static str,
    /// One line for humans.
    pub summary: String,
    /// Paths (or items) the step changed.
    pub changed: Vec<String>,
    /// Wall time of the step (reports only; never written into an output).
    pub millis: u64,
}

/// Progress events for a UI.
#[derive(Debug)]
pub enum StepEvent<'a> {
    Start(&'static str),
    Done(&'a StepReport),
}

/// Where and how to build.
#[derive(Default)]
pub struct BuildOptions<'a> {
    /// Output directory (created if missing). Default: the current directory.
    pub out_dir: PathBuf,
    /// Called at the start and end of each step.
    pub progress: Option<&'a dyn Fn(StepEvent<'_>)>,
}

impl std::fmt::Debug for BuildOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("out_dir", &self.out_dir)
            .finish_non_exhaustive()
    }
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub image: PathBuf,
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
    pub steps: Vec<StepReport>,
}

struct Steps<'a> {
    done: Vec<StepReport>,
    progress: Option<&'a dyn Fn(StepEvent<'_>)>,
}

impl Steps<'_> {
    /// Run one named step; `f` returns its value, a summary and the changed items.
    fn run<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> Result<(T, String, Vec<String>), Error>,
    ) -> Result<T, Error> {
        if let Some(p) = self.progress {
            p(StepEvent::Start(name));
        }
        let t0 = Instant::now();
        let (v, summary, changed) = f()?;
        let report = StepReport {
            name,
            summary,
            changed,
            millis: t0.elapsed().as_millis() as u64,
        };
        if let Some(p) = self.progress {
            p(StepEvent::Done(&report));
        }
        self.done.push(report);
        Ok(v)
    }
}

/// Load, validate and build the recipe at `path`.
pub fn build_file(path: &Path, opts: &BuildOptions<'_>) -> Result<BuildOutput, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::ReadInput {
        what: "recipe",
        path: path.to_owned(),
        source,
    })?;
    let recipe = Recipe::load(path)?;
    build(&recipe, &hex(&Sha256::digest(&bytes)), opts)
}

fn qerr(op: &'static str, image: &Path) -> impl FnOnce(kiln_qcow2::Error) -> Error {
    let image = image.to_owned();
    move |source| Error::Qcow2 {
        op,
        image,
        source: Box::new(source),
    }
}

fn out_err(op: &'static str, path: &Path) -> impl FnOnce(kiln_blockdev::Error) -> Error {
    let path = path.to_owned();
    move |e| Error::Output {
        op,
        path,
        source: std::io::Error::other(e),
    }
}

/// Build a validated recipe. `recipe_sha256` is the hash of the recipe file, recorded in the
/// manifest.
pub fn build(
    recipe: &Recipe,
    recipe_sha256: &str,
    opts: &BuildOptions<'_>,
) -> Result<BuildOutput, Error> {
    recipe.validate()?;
    let mut steps = Steps {
        done: Vec::new(),
        progress: opts.progress,
    };
    let sde = recipe.source_date_epoch;
    let out_dir = if opts.out_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        opts.out_dir.clone()
    };
    let image_path = out_dir.join(format!("{}.qcow2", recipe.name));
    let manifest_path = out_dir.join(format!("{}.manifest.json", recipe.name));
    let base_path = recipe.resolve(&recipe.base.path);

    // open-base: verify the pin before anything is created.
    let (base_sha, base) = steps.run("open-base", || {
        let (sha, _) = inject::sha256_file(&base_path, "base image")?;
        if sha != recipe.base.sha256 {
            return Err(Error::ChecksumMismatch {
                op: "verifying base image",
                path: base_path.clone(),
                expected: recipe.base.sha256.clone(),
                actual: sha,
            });
        }
        let disk = Disk::open(&base_path, &OpenOptions::read_only())
            .map_err(qerr("open base image", &base_path))?;
        let summary = format!(
            "{} ({}, {} bytes virtual) matches its sha256 pin",
            base_path.display(),
            disk.format(),
            disk.len()
        );
        Ok(((sha, disk), summary, Vec::new()))
    })?;
    let cluster_bits = match &base {
        Disk::Qcow2(i) => i.header().cluster_bits,
        Disk::Raw(_) => 16,
    };
    let virtual_size = base.len();
    drop(base);

    std::fs::create_dir_all(&out_dir).map_err(|source| Error::Output {
        op: "creating output directory",
        path: out_dir.clone(),
        source,
    })?;
    let out_file =
        AtomicFile::create(&image_path, 0o644).map_err(out_err("creating output", &image_path))?;

    // overlay
    let (image, backing_name) = steps.run("overlay", || {
        let nb = kiln_qcow2::open_new_backing(&image_path, &base_path, &OpenOptions::read_only())
            .map_err(qerr("open base image", &base_path))?;
        let backing_name = nb.name.clone();
        let storage: Box<dyn kiln_qcow2::Storage> = match recipe.output.kind {
            OutputKind::Overlay => Box::new(out_file.shared()),
            OutputKind::Qcow2 => Box::new(MemDev::new(0)),
        };
        let image = Image::create(
            storage,
            image_path.clone(),
            CreateOptions {
                size: virtual_size,
                cluster_bits,
                // The overlay's own clusters are never compressed (copy-on-write writes are raw);
                // compression applies to the flattened output.
                compression: CompressionType::Zlib,
                backing: Some(nb),
            },
        )
        .map_err(qerr("creating overlay", &image_path))?;
        let where_ = match recipe.output.kind {
            OutputKind::Overlay => "the output file",
            OutputKind::Qcow2 => "memory",
        };
        Ok((
            (image, backing_name),
            format!("copy-on-write overlay in {where_}"),
            Vec::new(),
        ))
    })?;

    let mut scrub_records = Vec::new();
    let mut injected: Vec<Injected> = Vec::new();
    let mut k3s_release = None;
    let root_partition;
    {
        let part = steps.run("find-rootfs", || {
            let perr = |source| Error::Partition {
                image: base_path.clone(),
                source: Box::new(source),
            };
            let table = kiln_partition::scan(&image, "base").map_err(perr)?;
            let part = table.root().map_err(perr)?.clone();
            let summary = format!(
                "partition {} ({}, label {:?})",
                part.number,
                part.fs,
                part.label.as_deref().unwrap_or("")
            );
            Ok((part, summary, Vec::new()))
        })?;
        let win =
            kiln_partition::window(&image, "base", &part).map_err(|source| Error::Partition {
                image: base_path.clone(),
                source: Box::new(source),
            })?;
        let mut fs = Filesystem::open(
            &win,
            &format!("partition {}", part.number),
            kiln_ext4::OpenOptions::read_write(sde),
        )
        .map_err(|source| Error::Ext4 {
            op: "opening the root filesystem",
            image: base_path.clone(),
            source: Box::new(source),
        })?;
        let part_no = part.number;
        root_partition = part_no;

        steps.run("scrub", || {
            let input = ScrubInput {
                machine_id: recipe.machine_id,
            };
            let mut all = Vec::new();
            let ops = recipe.scrub_ops();
            for op in &ops {
                let changed = op.run(&mut fs, &input)?;
                all.extend(changed.iter().map(|c| c.path.clone()));
                scrub_records.push(ScrubRecord {
                    op: op.name.to_owned(),
                    changed,
                });
            }
            all.sort();
            let summary = format!("{} ops, {} paths changed", ops.len(), all.len());
            Ok(((), summary, all))
        })?;

        steps.run("k3s", || {
            let Some(k) = &recipe.k3s else {
                return Ok(((), "no k3s in the recipe".into(), Vec::new()));
            };
            let rel = inject::verify_k3s(recipe, k, false)?;
            let before = injected.len();
            inject::inject_k3s(
                &mut Writer {
                    fs: &mut fs,
                    out: &mut injected,
                },
                &rel,
            )?;
            let changed: Vec<String> = injected[before..].iter().map(|i| i.path.clone()).collect();
            let summary = format!(
                "{} {} verified against sha256sum-{}.txt, {} paths written",
                k.version,
                rel.assets
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                recipe.arch.as_str(),
                changed.len()
            );
            k3s_release = Some(rel);
            Ok(((), summary, changed))
        })?;

        steps.run("prerequisites", || {
            let before = injected.len();
            inject::apply_prerequisites(
                &mut Writer {
                    fs: &mut fs,
                    out: &mut injected,
                },
                recipe,
            )?;
            let changed: Vec<String> = injected[before..].iter().map(|i| i.path.clone()).collect();
            let summary = format!(
                "{} prerequisites, {} paths written",
                recipe.prerequisites.len(),
                changed.len()
            );
            Ok(((), summary, changed))
        })?;

        steps.run("normalise-times", || {
            // Every injected path, the parents of every changed path, and their ancestors.
            let mut set = BTreeSet::new();
            let mut add_with_parents = |p: &str, include_self: bool| {
                if include_self {
                    set.insert(p.to_owned());
                }
                let mut cur = p;
                while let Some(i) = cur.rfind('/') {
                    cur = if i == 0 { "/" } else { &cur[..i] };
                    set.insert(cur.to_owned());
                    if cur == "/" {
                        break;
                    }
                }
            };
            for i in &injected {
                add_with_parents(&i.path, true);
            }
            for r in &scrub_records {
                for c in &r.changed {
                    let gone = c.action == crate::scrub::Action::Removed;
                    add_with_parents(&c.path, !gone);
                }
            }
            let times = kiln_ext4::Times {
                atime: Some(sde),
                mtime: Some(sde),
                ctime: Some(sde),
            };
            let mut changed = Vec::new();
            for p in &set {
                match fs.lstat(p) {
                    Ok(m) if m.atime == sde && m.mtime == sde && m.ctime == sde => {}
                    Ok(_) => {
                        fs.set_times(p, times, false)
                            .map_err(|source| Error::Inject {
                                path: p.clone(),
                                source: Box::new(source),
                            })?;
                        changed.push(p.clone());
                    }
                    Err(kiln_ext4::Error::NotFound { .. }) => {}
                    Err(source) => {
                        return Err(Error::Inject {
                            path: p.clone(),
                            source: Box::new(source),
                        });
                    }
                }
            }
            let summary = format!(
                "{} paths checked, {} set to SOURCE_DATE_EPOCH {sde}",
                set.len(),
                changed.len()
            );
            Ok(((), summary, changed))
        })?;

        steps.run("close", || {
            fs.close().map_err(|source| Error::Ext4 {
                op: "closing the root filesystem",
                image: image_path.clone(),
                source: Box::new(source),
            })?;
            Ok(((), "root filesystem flushed".into(), Vec::new()))
        })?;
    }

    let out_size = steps.run("output", || {
        let summary = match recipe.output.kind {
            OutputKind::Overlay => {
                image
                    .close()
                    .map_err(qerr("closing overlay", &image_path))?;
                format!("overlay backed by {backing_name}")
            }
            OutputKind::Qcow2 => {
                let disk = Disk::Qcow2(image);
                let st = kiln_qcow2::flatten(
                    &disk,
                    out_file.dev(),
                    &image_path,
                    &FlattenOptions {
                        compression: match recipe.output.compression {
                            Compression::Zstd => Some(CompressionType::Zstd),
                            Compression::Zlib => Some(CompressionType::Zlib),
                            Compression::None => None,
                        },
                        cluster_bits: None,
                        passthrough: true,
                    },
                    &|_, _| {},
                )
                .map_err(qerr("flattening into", &image_path))?;
                format!(
                    "flattened: {} clusters passed through, {} compressed, {} raw, {} zero",
                    st.passthrough, st.compressed, st.raw, st.zero
                )
            }
        };
        out_file
            .dev()
            .flush()
            .map_err(out_err("flushing", &image_path))?;
        Ok((out_file.dev().len(), summary, Vec::new()))
    })?;

    let manifest = steps.run("manifest", || {
        let dev = out_file.dev();
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 4 << 20];
        let mut off = 0;
        while off < out_size {
            let n = (out_size - off).min(buf.len() as u64) as usize;
            dev.read_at(&mut buf[..n], off)
                .map_err(out_err("hashing", &image_path))?;
            h.update(&buf[..n]);
            off += n as u64;
        }
        injected.sort();
        let manifest = Manifest {
            kiln_manifest: MANIFEST_VERSION,
            name: recipe.name.clone(),
            recipe_sha256: recipe_sha256.to_owned(),
            arch: recipe.arch,
            source_date_epoch: sde,
            machine_id: recipe.machine_id,
            base: BaseInfo {
                file: base_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                sha256: base_sha.clone(),
                virtual_size,
                root_partition,
            },
            k3s: k3s_release.as_ref().map(K3sRelease::for_manifest),
            scrub: std::mem::take(&mut scrub_records),
            injected: std::mem::take(&mut injected),
            output: OutputInfo {
                file: format!("{}.qcow2", recipe.name),
                kind: recipe.output.kind,
                compression: recipe.output.compression,
                backing: (recipe.output.kind == OutputKind::Overlay).then(|| backing_name.clone()),
                sha256: hex(&h.finalize()),
                size: out_size,
                virtual_size,
            },
        };
        let mf = AtomicFile::create(&manifest_path, 0o644)
            .map_err(out_err("creating manifest", &manifest_path))?;
        mf.dev()
            .write_at_grow(&manifest.to_json(), 0)
            .map_err(out_err("writing manifest", &manifest_path))?;
        // Both complete: rename the image, then the manifest.
        out_file
            .commit()
            .map_err(out_err("renaming output into place", &image_path))?;
        mf.commit()
            .map_err(out_err("renaming manifest into place", &manifest_path))?;
        let summary = format!("{} sha256 {}", image_path.display(), manifest.output.sha256);
        Ok((
            manifest,
            summary,
            vec![
                image_path.display().to_string(),
                manifest_path.display().to_string(),
            ],
        ))
    })?;

    Ok(BuildOutput {
        image: image_path,
        manifest_path,
        manifest,
        steps: steps.done,
    })
}
