//! The build: ordered, named steps over one context, each reporting what it changed and how long
//! it took.
//!
//! ```text
//!  open-base        sha256 of the base file against the recipe's pin; its format (qcow2, raw, xz)
//!  overlay          an xz base decompressed (streamed, sparse) into a temporary raw file, then a
//!                   copy-on-write qcow2 over the base (in memory for `qcow2` and `raw` output, the
//!                   temp output file for `overlay` output)
//!  find-rootfs      GPT/MBR scan, the `cloudimg-rootfs` ext4, opened read-write at SOURCE_DATE_EPOCH
//!  scrub            the catalog ops the recipe selects
//!  k3s              verify the release against sha256sum-ARCH.txt, write binary / images / install.sh
//!  prerequisites    the recipe's files, dirs, symlinks, modules, sysctls, units, datasource
//!  normalise-times  every changed path and its parents get atime = mtime = ctime = SOURCE_DATE_EPOCH
//!  close            flush libext2fs (bitmaps, group descriptors, superblock)
//!  boot-files       the recipe's files on vfat partitions (found by label), through the overlay
//!  output           flatten (qcow2), export (sparse raw) or close the overlay, into
//!                   `.<name>.<ext>.kiln-tmp`
//!  manifest         hash the output, write the manifest (temp), then rename both into place
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use kiln_blockdev::{AtomicFile, BlockDev, Cancel, CancelRead, MemDev, NewDirs};
use kiln_ext4::{Filesystem, GuestPath, GuestPathBuf};
use kiln_partition::{Partition, Selector};
use kiln_qcow2::{CompressionType, CreateOptions, Disk, FlattenOptions, Image, OpenOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::inject::{self, Injected, K3sRelease, Writer};
use crate::manifest::{
    BaseInfo, BootFileAction, BootFileRecord, MANIFEST_VERSION, Manifest, OutputInfo, ScrubRecord,
};
use crate::recipe::{BootFile, Compression, OutputKind, Recipe};
use crate::scrub::{Action, ScrubInput};
use crate::{Error, base, hex, rootfs};

/// One named step of the build, in the order [`Step::ALL`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Step {
    /// sha256 of the base file against the recipe's pin; the base opened read-only.
    OpenBase,
    /// An xz-compressed base decompressed into a temporary file, and the copy-on-write qcow2 over
    /// the base.
    Overlay,
    /// The partition table scanned and the root filesystem's partition found.
    FindRootfs,
    /// The catalog ops the recipe selects.
    Scrub,
    /// The pinned k3s release verified and written.
    K3s,
    /// The recipe's files, directories, symlinks, modules, sysctls, units and datasource.
    Prerequisites,
    /// Times of every changed path and its parents set to `SOURCE_DATE_EPOCH`.
    NormaliseTimes,
    /// libext2fs flushed (bitmaps, group descriptors, superblock).
    Close,
    /// The recipe's `boot_files` written on vfat partitions found by label (through the same
    /// overlay; nothing is touched when the recipe has none).
    BootFiles,
    /// The image flattened (`qcow2`), exported (`raw`) or the overlay closed, into the temporary
    /// output.
    Output,
    /// The output hashed, the manifest written, both renamed into place.
    Manifest,
}

impl Step {
    /// Every step, in the order the build runs them.
    pub const ALL: [Step; 11] = [
        Step::OpenBase,
        Step::Overlay,
        Step::FindRootfs,
        Step::Scrub,
        Step::K3s,
        Step::Prerequisites,
        Step::NormaliseTimes,
        Step::Close,
        Step::BootFiles,
        Step::Output,
        Step::Manifest,
    ];

    /// The step's name in reports (`open-base`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Step::OpenBase => "open-base",
            Step::Overlay => "overlay",
            Step::FindRootfs => "find-rootfs",
            Step::Scrub => "scrub",
            Step::K3s => "k3s",
            Step::Prerequisites => "prerequisites",
            Step::NormaliseTimes => "normalise-times",
            Step::Close => "close",
            Step::BootFiles => "boot-files",
            Step::Output => "output",
            Step::Manifest => "manifest",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// What a step did. Serialises with the step's [`Step::name`] (`"open-base"`) and reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StepReport {
    /// The step (serialised as its [`Step::name`]).
    pub name: Step,
    /// One line for humans.
    pub summary: String,
    /// Paths (or items) the step changed; guest paths in the escaped form of
    /// [`kiln_ext4::GuestPath`] (a byte that is not UTF-8 as `\xHH`).
    pub changed: Vec<String>,
    /// Wall time of the step (reports only; never written into an output).
    pub millis: u64,
}

/// Progress events for a UI.
#[derive(Debug)]
#[non_exhaustive]
pub enum StepEvent<'a> {
    /// A step begins.
    Start(Step),
    /// A step ended; its report.
    Done(&'a StepReport),
    /// Byte-level progress inside a long step, between its `Start` and `Done`: `done` of `total`
    /// bytes. Sent once per chunk (about a MiB) or batch of clusters, never per byte: by
    /// `open-base` (hashing the base), `overlay` (compressed bytes read; only for an xz base),
    /// `k3s` (the assets written), `output` (guest bytes flattened or exported; not for `overlay`
    /// output) and `manifest` (hashing the output). `done` only grows
    /// within a step and ends at `total`, unless the step fails.
    Bytes {
        /// The step the bytes belong to.
        step: Step,
        /// Bytes processed so far.
        done: u64,
        /// Bytes the step processes in all.
        total: u64,
    },
}

/// A progress callback: owned, and callable from whichever thread runs the build.
pub type Progress = Arc<dyn Fn(StepEvent<'_>) + Send + Sync>;

/// Where and how to build. `Send + Sync + Clone`: a caller can make it on one thread and build on
/// another (`spawn_blocking`, a worker pool), and cancel it from a third.
#[derive(Default, Clone)]
#[non_exhaustive]
pub struct BuildOptions {
    /// Output directory (created if missing). Default: the current directory.
    pub out_dir: PathBuf,
    /// Called at the start and end of each step, and with byte-level progress inside the long ones
    /// ([`StepEvent::Bytes`]).
    pub progress: Option<Progress>,
    /// Trip it (from any thread, a signal handler included) to stop the build: it is checked
    /// before every step, per chunk hashed or injected, per prerequisite, per scrub op, per batch of
    /// output clusters and last before the outputs are renamed into place. A cancelled build
    /// returns [`Error::Cancelled`] and leaves what a failed one leaves: no output, no temporary
    /// file, inputs untouched. Once the renames have begun the build completes.
    pub cancel: Cancel,
}

impl BuildOptions {
    /// Build into `out_dir`, with no progress sink and a cancel handle nobody holds.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        BuildOptions {
            out_dir: out_dir.into(),
            ..Self::default()
        }
    }

    /// Send progress events to `progress`.
    #[must_use]
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Stop the build when `cancel` is tripped.
    #[must_use]
    pub fn with_cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = cancel;
        self
    }
}

impl std::fmt::Debug for BuildOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("out_dir", &self.out_dir)
            .field("cancel", &self.cancel)
            .finish_non_exhaustive()
    }
}

/// The result of a build. Serialises and reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BuildOutput {
    /// The image, renamed into place.
    pub image: PathBuf,
    /// The manifest beside it.
    pub manifest_path: PathBuf,
    /// The manifest's value.
    pub manifest: Manifest,
    /// What each step did, in order.
    pub steps: Vec<StepReport>,
}

/// Load and validate the recipe at `path` ([`Recipe::load`]), then [`build`] it.
pub fn build_file(path: &Path, opts: &BuildOptions) -> Result<BuildOutput, Error> {
    build(&Recipe::load(path)?, opts)
}

/// Validate `recipe` ([`Recipe::validate`]) and build it into `opts.out_dir`. The manifest
/// records the recipe's [`Recipe::digest`], the same for a recipe read from a file and one made
/// in code. A build stopped through [`BuildOptions::cancel`] fails with [`Error::Cancelled`].
pub fn build(recipe: &Recipe, opts: &BuildOptions) -> Result<BuildOutput, Error> {
    build_steps(recipe, opts).map_err(Error::normalise_cancel)
}

fn build_steps(recipe: &Recipe, opts: &BuildOptions) -> Result<BuildOutput, Error> {
    recipe.validate()?;
    let recipe_sha256 = recipe.digest();
    let cx = Context::new(recipe, &recipe_sha256, opts);
    let mut run = Runner {
        done: Vec::new(),
        progress: cx.progress,
        cancel: cx.cancel,
    };
    // open-base verifies the pin before anything is created.
    let mut base = run.step(Step::OpenBase, || open_base(&cx))?;
    // Directories made here are removed again if the build fails or is cancelled.
    let new_dirs = NewDirs::create_all(&cx.out_dir).map_err(|source| Error::Output {
        op: "creating output directory",
        path: cx.out_dir.clone(),
        source,
    })?;
    let out_file = AtomicFile::create(&cx.image_path, 0o644)
        .map_err(out_err("creating output", &cx.image_path))?;
    let (image, backing_name) = run.step(Step::Overlay, || overlay(&cx, &mut base, &out_file))?;
    let part = run.step(Step::FindRootfs, || find_rootfs(&cx, &image))?;
    let mut edits = Edits {
        root_partition: part.number,
        ..Edits::default()
    };
    let rw = kiln_ext4::OpenOptions::read_write(recipe.source_date_epoch);
    rootfs::with_fs(&image, &cx.base_path, &part, rw, |mut fs| {
        run.step(Step::Scrub, || scrub(&cx, &mut fs, &mut edits))?;
        run.step(Step::K3s, || k3s(&cx, &mut fs, &mut edits))?;
        run.step(Step::Prerequisites, || {
            prerequisites(&cx, &mut fs, &mut edits)
        })?;
        run.step(Step::NormaliseTimes, || {
            normalise_times(&cx, &mut fs, &edits)
        })?;
        run.step(Step::Close, || close(&cx, fs))
    })?;
    run.step(Step::BootFiles, || boot_files(&cx, &image, &mut edits))?;
    let size = run.step(Step::Output, || {
        output(&cx, image, &backing_name, &out_file)
    })?;
    let output = Written {
        file: out_file,
        size,
        backing_name,
    };
    let manifest = run.step(Step::Manifest, || manifest(&cx, &base, edits, output))?;
    new_dirs.keep();
    Ok(BuildOutput {
        image: cx.image_path,
        manifest_path: cx.manifest_path,
        manifest,
        steps: run.done,
    })
}

/// The progress callback as the steps see it.
type ProgressFn<'a> = &'a (dyn Fn(StepEvent<'_>) + Send + Sync);

/// What every step reads: the recipe, the paths derived from it, the cancel handle and the
/// progress callback.
struct Context<'r> {
    recipe: &'r Recipe,
    recipe_sha256: &'r str,
    out_dir: PathBuf,
    image_path: PathBuf,
    manifest_path: PathBuf,
    base_path: PathBuf,
    cancel: &'r Cancel,
    progress: Option<ProgressFn<'r>>,
}

impl<'r> Context<'r> {
    fn new(recipe: &'r Recipe, recipe_sha256: &'r str, opts: &'r BuildOptions) -> Self {
        let out_dir = if opts.out_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            opts.out_dir.clone()
        };
        Context {
            recipe,
            recipe_sha256,
            cancel: &opts.cancel,
            progress: opts.progress.as_deref(),
            image_path: out_dir.join(format!(
                "{}.{}",
                recipe.name,
                recipe.output.kind.extension()
            )),
            manifest_path: out_dir.join(format!("{}.manifest.json", recipe.name)),
            base_path: recipe.resolve(&recipe.base.path),
            out_dir,
        }
    }

    /// Tell the progress callback that `step` has processed `done` of `total` bytes.
    fn bytes(&self, step: Step, done: u64, total: u64) {
        if let Some(p) = self.progress {
            p(StepEvent::Bytes { step, done, total });
        }
    }

    /// sha256 and size of the input file at `path` (a regular file only), read in chunks: the
    /// cancel handle checked and `step`'s byte progress reported at each.
    fn hash_input(
        &self,
        step: Step,
        path: &Path,
        what: &'static str,
    ) -> Result<(String, u64), Error> {
        let read_err = |source| Error::ReadInput {
            what,
            path: path.to_owned(),
            source,
        };
        let (file, total) = kiln_common::digest::open_regular(path).map_err(read_err)?;
        let mut r = CancelRead::new(file, self.cancel, |done| {
            self.bytes(step, done.min(total), total)
        });
        kiln_common::digest::sha256_reader(&mut r).map_err(|e| {
            if kiln_blockdev::Cancelled::is_in(&e) {
                Error::Cancelled
            } else {
                read_err(e)
            }
        })
    }
}

/// The base image as the later steps need it.
struct Base {
    sha256: String,
    format: base::Format,
    /// Known after the overlay step for an xz base.
    virtual_size: u64,
    cluster_bits: u32,
    /// An xz base's decompressed bytes (the overlay's backing file), removed when the build ends.
    decompressed: Option<AtomicFile>,
}

/// What the filesystem steps changed, for the manifest.
#[derive(Default)]
struct Edits {
    root_partition: u32,
    scrub: Vec<ScrubRecord>,
    injected: Vec<Injected>,
    k3s: Option<K3sRelease>,
    boot_files: Vec<BootFileRecord>,
}

/// The temporary output after the output step.
struct Written {
    file: AtomicFile,
    size: u64,
    backing_name: String,
}

/// A step's value, its one-line summary and the items it changed.
type StepResult<T> = Result<(T, String, Vec<String>), Error>;

/// Runs steps in order, timing them and telling the progress callback; checks the cancel handle
/// before each.
struct Runner<'a> {
    done: Vec<StepReport>,
    progress: Option<ProgressFn<'a>>,
    cancel: &'a Cancel,
}

impl Runner<'_> {
    fn step<T>(&mut self, step: Step, f: impl FnOnce() -> StepResult<T>) -> Result<T, Error> {
        self.cancel.check()?;
        if let Some(p) = self.progress {
            p(StepEvent::Start(step));
        }
        let t0 = Instant::now();
        let (v, summary, changed) = f()?;
        let report = StepReport {
            name: step,
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

fn open_base(cx: &Context<'_>) -> StepResult<Base> {
    let path = &cx.base_path;
    let (sha, _) = cx.hash_input(Step::OpenBase, path, "base image")?;
    if sha != cx.recipe.base.sha256 {
        return Err(Error::ChecksumMismatch {
            op: "verifying base image",
            path: path.clone(),
            expected: cx.recipe.base.sha256.clone(),
            actual: sha,
        });
    }
    let format = base::Format::sniff(path)?;
    if format == base::Format::Xz {
        if cx.recipe.output.kind == OutputKind::Overlay {
            let mut p = kiln_common::Problems::new("the recipe");
            p.push(
                "output.kind",
                "output.kind: an overlay needs its base as a file to back it, and an xz base is \
                 decompressed only for the build: use `qcow2` or `raw` (or decompress the base first)",
            );
            return Err(Error::Invalid(p));
        }
        let summary = format!(
            "{} ({}) matches its sha256 pin",
            path.display(),
            format.describe()
        );
        let base = Base {
            sha256: sha,
            format,
            virtual_size: 0,
            cluster_bits: 16,
            decompressed: None,
        };
        return Ok((base, summary, Vec::new()));
    }
    let disk =
        Disk::open(path, &OpenOptions::read_only()).map_err(qerr("open base image", path))?;
    let summary = format!(
        "{} ({}, {} bytes virtual) matches its sha256 pin",
        path.display(),
        disk.format(),
        disk.len()
    );
    let base = Base {
        sha256: sha,
        format,
        virtual_size: disk.len(),
        cluster_bits: match &disk {
            Disk::Qcow2(i) => i.header().cluster_bits,
            Disk::Raw(_) => 16,
        },
        decompressed: None,
    };
    Ok((base, summary, Vec::new()))
}

fn overlay(
    cx: &Context<'_>,
    base: &mut Base,
    out_file: &AtomicFile,
) -> StepResult<(Image, String)> {
    let image_path = &cx.image_path;
    let mut decompressed_note = String::new();
    if base.format == base::Format::Xz {
        // Beside the output, under the temporary-name rule; removed when `base` is dropped.
        let dest = cx.out_dir.join(format!("{}.base.img", cx.recipe.name));
        let tmp = AtomicFile::create(&dest, 0o600)
            .map_err(out_err("creating the decompressed base", &dest))?;
        let size = base::decompress_xz(
            &cx.base_path,
            tmp.dev(),
            tmp.temp_path(),
            cx.cancel,
            &|done, total| cx.bytes(Step::Overlay, done, total),
        )?;
        base.virtual_size = size;
        base.decompressed = Some(tmp);
        decompressed_note = format!(", over the base decompressed ({size} bytes, sparse)");
    }
    let base_path = match &base.decompressed {
        Some(tmp) => tmp.temp_path(),
        None => &cx.base_path,
    };
    let nb = kiln_qcow2::open_new_backing(image_path, base_path, &OpenOptions::read_only())
        .map_err(qerr("open base image", base_path))?;
    let backing_name = nb.name.clone();
    let (storage, where_): (Box<dyn kiln_qcow2::Storage>, _) = match cx.recipe.output.kind {
        OutputKind::Overlay => (Box::new(out_file.shared()), "the output file"),
        OutputKind::Qcow2 | OutputKind::Raw => (Box::new(MemDev::new(0)), "memory"),
    };
    let image = Image::create(
        storage,
        image_path.clone(),
        CreateOptions {
            size: base.virtual_size,
            cluster_bits: base.cluster_bits,
            // The overlay's own clusters are never compressed (copy-on-write writes are raw);
            // compression applies to the flattened output.
            compression: CompressionType::Zlib,
            backing: Some(nb),
        },
    )
    .map_err(qerr("creating overlay", image_path))?;
    let summary = format!("copy-on-write overlay in {where_}{decompressed_note}");
    Ok(((image, backing_name), summary, Vec::new()))
}

fn find_rootfs(cx: &Context<'_>, image: &Image) -> StepResult<Partition> {
    let part = rootfs::find(image, &cx.base_path, Selector::Root)?;
    let summary = format!(
        "partition {} ({}, label {:?})",
        part.number,
        part.fs,
        part.label.as_deref().unwrap_or("")
    );
    Ok((part, summary, Vec::new()))
}

fn scrub(cx: &Context<'_>, fs: &mut Filesystem<'_>, edits: &mut Edits) -> StepResult<()> {
    let input = ScrubInput {
        machine_id: cx.recipe.machine_id,
    };
    let mut all = Vec::new();
    let ops = cx.recipe.scrub_ops();
    for op in &ops {
        cx.cancel.check()?;
        let changed = op.run(fs, &input)?;
        all.extend(changed.iter().map(|c| c.path.clone()));
        edits.scrub.push(ScrubRecord {
            op: op.name.to_owned(),
            changed,
        });
    }
    all.sort();
    let summary = format!("{} ops, {} paths changed", ops.len(), all.len());
    Ok(((), summary, all.iter().map(ToString::to_string).collect()))
}

fn k3s(cx: &Context<'_>, fs: &mut Filesystem<'_>, edits: &mut Edits) -> StepResult<()> {
    let recipe = cx.recipe;
    let Some(k) = &recipe.k3s else {
        return Ok(((), "no k3s in the recipe".into(), Vec::new()));
    };
    let rel = inject::verify_k3s(recipe, k, false)?;
    let before = edits.injected.len();
    let mut w = Writer {
        fs,
        out: &mut edits.injected,
    };
    inject::inject_k3s(&mut w, &rel, cx.cancel, &|done, total| {
        cx.bytes(Step::K3s, done, total)
    })?;
    let changed: Vec<String> = edits.injected[before..]
        .iter()
        .map(|i| i.path.clone())
        .collect();
    let assets: Vec<&str> = rel.assets.iter().map(|a| a.name.as_str()).collect();
    let summary = format!(
        "{} {} verified against sha256sum-{}.txt, {} paths written",
        k.version,
        assets.join(", "),
        recipe.arch.as_str(),
        changed.len()
    );
    edits.k3s = Some(rel);
    Ok(((), summary, changed))
}

fn prerequisites(cx: &Context<'_>, fs: &mut Filesystem<'_>, edits: &mut Edits) -> StepResult<()> {
    let before = edits.injected.len();
    let mut w = Writer {
        fs,
        out: &mut edits.injected,
    };
    inject::apply_prerequisites(&mut w, cx.recipe, cx.cancel)?;
    let changed: Vec<String> = edits.injected[before..]
        .iter()
        .map(|i| i.path.clone())
        .collect();
    let summary = format!(
        "{} prerequisites, {} paths written",
        cx.recipe.prerequisites.len(),
        changed.len()
    );
    Ok(((), summary, changed))
}

/// Every injected path, the parents of every changed path, and their ancestors.
fn touched_paths(edits: &Edits) -> BTreeSet<GuestPathBuf> {
    let mut set = BTreeSet::new();
    let mut add_with_parents = |p: &GuestPath, include_self: bool| {
        if include_self {
            set.insert(p.to_owned());
        }
        let mut cur = p;
        while let Some(parent) = cur.parent() {
            set.insert(parent.to_owned());
            cur = parent;
        }
    };
    for i in &edits.injected {
        add_with_parents(GuestPath::new(&i.path), true);
    }
    for c in edits.scrub.iter().flat_map(|r| &r.changed) {
        add_with_parents(&c.path, c.action != Action::Removed);
    }
    set
}

fn normalise_times(cx: &Context<'_>, fs: &mut Filesystem<'_>, edits: &Edits) -> StepResult<()> {
    let sde = cx.recipe.source_date_epoch;
    let set = touched_paths(edits);
    let times = kiln_ext4::Times {
        atime: Some(sde),
        mtime: Some(sde),
        ctime: Some(sde),
    };
    let inject_err = |p: &GuestPathBuf| {
        let path = p.to_string();
        move |source| Error::Inject {
            path,
            source: Box::new(source),
        }
    };
    let mut changed = Vec::new();
    for p in &set {
        match fs.lstat(p) {
            Ok(m) if m.atime == sde && m.mtime == sde && m.ctime == sde => {}
            Ok(_) => {
                fs.set_times(p, times, false).map_err(inject_err(p))?;
                changed.push(p.to_string());
            }
            Err(kiln_ext4::Error::NotFound { .. }) => {}
            Err(source) => return Err(inject_err(p)(source)),
        }
    }
    let summary = format!(
        "{} paths checked, {} set to SOURCE_DATE_EPOCH {sde}",
        set.len(),
        changed.len()
    );
    Ok(((), summary, changed))
}

fn close(cx: &Context<'_>, fs: Filesystem<'_>) -> StepResult<()> {
    fs.close().map_err(|source| Error::Ext4 {
        op: "closing the root filesystem",
        image: cx.image_path.clone(),
        source: Box::new(source),
    })?;
    Ok(((), "root filesystem flushed".into(), Vec::new()))
}

/// Applies the recipe's `boot_files`: per partition (by label, ascending partition number), one
/// read-write open of its vfat filesystem through a window of the overlay, the entries in recipe
/// order, one close.
fn boot_files(cx: &Context<'_>, image: &Image, edits: &mut Edits) -> StepResult<()> {
    let files = &cx.recipe.boot_files;
    if files.is_empty() {
        return Ok(((), "no boot files in the recipe".into(), Vec::new()));
    }
    let image_path = &cx.image_path;
    let perr = |source| Error::Partition {
        image: image_path.clone(),
        source: Box::new(source),
    };
    let table = kiln_partition::scan(image, "image").map_err(perr)?;
    let found = || {
        table
            .partitions
            .iter()
            .map(|p| {
                format!(
                    "{}={}({})",
                    p.number,
                    p.fs,
                    p.label.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Entries by the partition they name, partitions in table order.
    let mut by_part: Vec<(&Partition, Vec<usize>)> = Vec::new();
    for (index, f) in files.iter().enumerate() {
        let matching: Vec<&Partition> = table
            .partitions
            .iter()
            .filter(|p| {
                p.fs == kiln_partition::FsType::Vfat
                    && p.label
                        .as_deref()
                        .is_some_and(|l| l.eq_ignore_ascii_case(&f.partition))
            })
            .collect();
        let part = match matching.as_slice() {
            [one] => *one,
            none_or_many => {
                return Err(Error::BootPartition {
                    index,
                    label: f.partition.clone(),
                    reason: if none_or_many.is_empty() {
                        "no"
                    } else {
                        "more than one"
                    },
                    image: image_path.clone(),
                    found: found(),
                });
            }
        };
        match by_part.iter_mut().find(|(p, _)| p.number == part.number) {
            Some((_, v)) => v.push(index),
            None => by_part.push((part, vec![index])),
        }
    }
    by_part.sort_by_key(|(p, _)| p.number);
    let mut changed = Vec::new();
    for (part, indices) in by_part {
        let name = format!(
            "{} ({})",
            part.number,
            part.label.as_deref().unwrap_or_default()
        );
        let verr = |op: &'static str| {
            let (name, image) = (name.clone(), image_path.clone());
            move |source| Error::Vfat {
                op,
                partition: name,
                image,
                source: Box::new(source),
            }
        };
        let window = kiln_partition::window(image, "image", part).map_err(perr)?;
        let opts = kiln_vfat::OpenOptions::read_write(cx.recipe.source_date_epoch);
        let mut vol = kiln_vfat::Volume::open(&window, &format!("partition {name}"), opts)
            .map_err(verr("opening"))?;
        for index in indices {
            cx.cancel.check()?;
            let f = &files[index];
            let data = boot_file_bytes(&vol, index, f).map_err(|e| match e {
                Ok(e) => verr("reading a file on")(e),
                Err(e) => e,
            })?;
            let written = vol
                .write(&f.path, &data)
                .map_err(verr("writing a file on"))?;
            if written != kiln_vfat::Written::Unchanged {
                changed.push(format!("{name}:{}", f.path));
            }
            edits.boot_files.push(BootFileRecord {
                partition: f.partition.clone(),
                number: part.number,
                path: f.path.clone(),
                action: match written {
                    kiln_vfat::Written::Created => BootFileAction::Created,
                    kiln_vfat::Written::Replaced => BootFileAction::Replaced,
                    kiln_vfat::Written::Unchanged => BootFileAction::Unchanged,
                },
                sha256: hex(&Sha256::digest(&data)),
                size: data.len() as u64,
                from: format!("boot_files[{index}]"),
            });
        }
        vol.close().map_err(verr("closing"))?;
    }
    edits.boot_files.sort_by_key(|r| {
        r.from
            .trim_start_matches("boot_files[")
            .trim_end_matches(']')
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    let summary = format!("{} boot files, {} changed", files.len(), changed.len());
    Ok(((), summary, changed))
}

/// What the entry `f` makes of its file: the content, or the file's text with the flags or lines
/// added. A vfat error is `Ok(error)`; an entry that cannot apply is `Err(error)`.
fn boot_file_bytes(
    vol: &kiln_vfat::Volume<'_>,
    index: usize,
    f: &BootFile,
) -> Result<Vec<u8>, Result<kiln_vfat::Error, Error>> {
    if let Some(c) = &f.content {
        return Ok(c.clone().into_bytes());
    }
    let bad = |message: String| {
        Err(Err(Error::BootFile {
            index,
            path: f.path.clone(),
            message,
        }))
    };
    let old = match vol.read(&f.path) {
        Ok(b) => b,
        Err(kiln_vfat::Error::NotFound { .. }) if f.cmdline_add.is_empty() => Vec::new(),
        Err(kiln_vfat::Error::NotFound { .. }) => {
            return bad("cmdline_add needs an existing kernel command line file".into());
        }
        Err(e) => return Err(Ok(e)),
    };
    let Ok(text) = String::from_utf8(old) else {
        return bad("the file is not UTF-8 text".into());
    };
    let new = if f.cmdline_add.is_empty() {
        kiln_vfat::config_lines(&text, &f.lines)
    } else {
        kiln_vfat::cmdline_add(&text, &f.cmdline_add)
    };
    Ok(new.into_bytes())
}

fn output(
    cx: &Context<'_>,
    image: Image,
    backing_name: &str,
    out_file: &AtomicFile,
) -> StepResult<u64> {
    let image_path = &cx.image_path;
    let summary = match cx.recipe.output.kind {
        OutputKind::Overlay => {
            image.close().map_err(qerr("closing overlay", image_path))?;
            format!("overlay backed by {backing_name}")
        }
        OutputKind::Qcow2 => {
            let opts = FlattenOptions {
                compression: match cx.recipe.output.compression {
                    Compression::Zstd => Some(CompressionType::Zstd),
                    Compression::Zlib => Some(CompressionType::Zlib),
                    Compression::None => None,
                },
                cluster_bits: None,
                passthrough: true,
                cancel: cx.cancel.clone(),
            };
            let disk = Disk::Qcow2(image);
            let progress = |done, total| cx.bytes(Step::Output, done, total);
            let st = kiln_qcow2::flatten(&disk, out_file.dev(), image_path, &opts, &progress)
                .map_err(qerr("flattening into", image_path))?;
            format!(
                "flattened: {} clusters passed through, {} compressed, {} raw, {} zero",
                st.passthrough, st.compressed, st.raw, st.zero
            )
        }
        OutputKind::Raw => {
            let disk = Disk::Qcow2(image);
            let progress = |done, total| cx.bytes(Step::Output, done, total);
            kiln_qcow2::export_raw_into(&disk, out_file.dev(), image_path, cx.cancel, &progress)
                .map_err(qerr("exporting raw into", image_path))?;
            format!("raw, {} bytes, sparse", disk.len())
        }
    };
    out_file
        .dev()
        .flush()
        .map_err(out_err("flushing", image_path))?;
    Ok((out_file.dev().len(), summary, Vec::new()))
}

fn manifest(cx: &Context<'_>, base: &Base, mut edits: Edits, out: Written) -> StepResult<Manifest> {
    let (recipe, image_path, manifest_path) = (cx.recipe, &cx.image_path, &cx.manifest_path);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut off = 0;
    while off < out.size {
        cx.cancel.check()?;
        let n = (out.size - off).min(buf.len() as u64) as usize;
        out.file
            .dev()
            .read_at(&mut buf[..n], off)
            .map_err(out_err("hashing", image_path))?;
        h.update(&buf[..n]);
        off += n as u64;
        cx.bytes(Step::Manifest, off, out.size);
    }
    edits.injected.sort();
    let manifest = Manifest {
        kiln_manifest: MANIFEST_VERSION,
        name: recipe.name.clone(),
        recipe_sha256: cx.recipe_sha256.to_owned(),
        arch: recipe.arch,
        source_date_epoch: recipe.source_date_epoch,
        machine_id: recipe.machine_id,
        base: BaseInfo {
            file: cx
                .base_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256: base.sha256.clone(),
            virtual_size: base.virtual_size,
            root_partition: edits.root_partition,
        },
        k3s: edits.k3s.as_ref().map(K3sRelease::for_manifest),
        scrub: edits.scrub,
        injected: edits.injected,
        boot_files: edits.boot_files,
        output: OutputInfo {
            file: format!("{}.{}", recipe.name, recipe.output.kind.extension()),
            kind: recipe.output.kind,
            compression: recipe.output.compression,
            backing: (recipe.output.kind == OutputKind::Overlay).then_some(out.backing_name),
            sha256: hex(&h.finalize()),
            size: out.size,
            virtual_size: base.virtual_size,
        },
    };
    let mf = AtomicFile::create(manifest_path, 0o644)
        .map_err(out_err("creating manifest", manifest_path))?;
    mf.dev()
        .write_at_grow(&manifest.to_json(), 0)
        .map_err(out_err("writing manifest", manifest_path))?;
    // Both complete: the last chance to stop; then rename the image, then the manifest.
    cx.cancel.check()?;
    out.file
        .commit()
        .map_err(out_err("renaming output into place", image_path))?;
    mf.commit()
        .map_err(out_err("renaming manifest into place", manifest_path))?;
    let summary = format!("{} sha256 {}", image_path.display(), manifest.output.sha256);
    let changed = vec![
        image_path.display().to_string(),
        manifest_path.display().to_string(),
    ];
    Ok((manifest, summary, changed))
}

/// A provisioner builds on worker threads: the options must cross threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<BuildOptions>();
    send_sync::<BuildOutput>();
};
