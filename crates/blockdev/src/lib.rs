//! The bottom layer of kiln: a byte-addressed, synchronous block device.
//!
//! ```text
//!   ext4 / partition / qcow2 layers
//!            │  read_at / write_at / flush / len
//!   ┌────────┴─────────┬──────────────┬──────────────┐
//!   FileDev          MemDev        SliceDev        (qcow2::Image)
//!   (host file)      (tests)       (window: a partition)
//! ```
//!
//! Every method takes `&self`: backends use positional I/O (or interior locking), so one device can be
//! shared by several readers — the flatten writer reads clusters from several threads at once.
//!
//! Reads and writes are *exact*: a range that does not fit inside [`BlockDev::len`] is an
//! [`Error::OutOfBounds`], never a short read.
//!
//! ```
//! use kiln_blockdev::{BlockDev, Error, FileDev, MemDev, SliceDev};
//! // A 4 KiB in-memory disk with a 2 KiB window at byte 1024 (think: a partition).
//! let disk = MemDev::new(4096);
//! let part = SliceDev::new(&disk, 1024, 2048)?;
//! part.write_at(b"hello", 10)?;
//! let mut buf = [0u8; 5];
//! disk.read_at(&mut buf, 1034)?;
//! assert_eq!(&buf, b"hello");
//! // Exact I/O: a read that runs past the window's end fails instead of coming back short.
//! assert!(matches!(part.read_at(&mut buf, 2046), Err(Error::OutOfBounds { .. })));
//!
//! // The same trait over a host file.
//! let dir = tempfile::tempdir()?;
//! let file = FileDev::create_new(dir.path().join("disk.img"))?;
//! file.set_len(4096)?;
//! file.write_at(b"kiln", 512)?;
//! file.flush()?;
//! assert_eq!(std::fs::read(dir.path().join("disk.img"))?[512..516], *b"kiln");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

mod copy;
pub use copy::CopyMethod;

/// What a device was asked to do when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// [`BlockDev::read_at`].
    Read,
    /// [`BlockDev::write_at`], [`FileDev::write_at_grow`], or the rename in [`AtomicFile::commit`].
    Write,
    /// [`BlockDev::flush`].
    Flush,
    /// [`BlockDev::write_zeroes`].
    WriteZeroes,
    /// [`BlockDev::discard`].
    Discard,
    /// Opening or creating a file ([`FileDev`]'s constructors, [`AtomicFile::create`]), or placing
    /// a [`SliceDev`] window on its inner device.
    Open,
    /// [`FileDev::set_len`].
    SetLen,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::WriteZeroes => "write-zeroes",
            Op::Discard => "discard",
            Op::Open => "open",
            Op::SetLen => "set length",
        })
    }
}

/// Who is at fault when a kiln operation fails — what a caller acts on: the CLI's exit code
/// (2 for [`ErrorKind::Input`], 1 otherwise), a provisioner's choice between asking its user to
/// fix something and retrying. Every library error type of kiln has a `kind()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// What was passed in is at fault — a malformed or foreign image, a recipe or spec that fails
    /// validation, an input file that cannot be opened: change the input.
    Input,
    /// The host failed something kiln needed — I/O on an output, no space, permissions, a system
    /// library that does not match: the same input may work elsewhere.
    Host,
    /// kiln broke one of its own invariants: a bug to report.
    Internal,
    /// The caller tripped the run's [`Cancel`] handle; like any failure, the run left nothing
    /// behind (no temporary file, no output under its final name) and its inputs untouched.
    Cancelled,
}

/// A cancel handle: cheap to clone, shared by every clone, tripped from any thread (a UI, a signal
/// handler, a provisioner's timeout) and checked by the long-running work at its safe points. A
/// handle never tripped — [`Cancel::default`] — costs one relaxed atomic load per check.
///
/// ```
/// use kiln_blockdev::{Cancel, ErrorKind};
/// let cancel = Cancel::new();
/// let worker = cancel.clone();
/// assert!(worker.check().is_ok());
/// std::thread::spawn(move || cancel.cancel()).join().unwrap();
/// assert_eq!(worker.check().unwrap_err().kind(), ErrorKind::Cancelled);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A handle that is not tripped.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle over an existing flag (tripped when it holds `true`), e.g. one that
    /// `signal_hook::flag::register` sets from a signal handler.
    pub fn from_flag(flag: Arc<AtomicBool>) -> Self {
        Self(flag)
    }

    /// The flag behind the handle: storing `true` into it trips every clone.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }

    /// Trip the handle: every clone's [`Cancel::check`] fails from now on.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the handle was tripped.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once the handle is tripped: `cancel.check()?` at a safe point.
    pub fn check(&self) -> std::result::Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }
}

/// The error of work stopped by a tripped [`Cancel`]; its kind is [`ErrorKind::Cancelled`]. Inside
/// a [`std::io::Read`] or [`std::io::Write`] it travels as an [`std::io::Error`]
/// ([`Cancelled::into_io`], recognised by [`Cancelled::is_in`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

impl Cancelled {
    /// Always [`ErrorKind::Cancelled`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Cancelled
    }

    /// The cancellation as an I/O error, for a reader or writer to return (its I/O kind is `Other`,
    /// never `Interrupted`, so that no retry loop swallows it).
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }

    /// Whether `e` is (or directly wraps) a cancellation.
    pub fn is_in(e: &std::io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<Cancelled>())
    }
}

/// A reader over `inner` that checks a [`Cancel`] before every read — once tripped, the read fails
/// with [`Cancelled`] as an I/O error ([`Cancelled::into_io`]) — and tells `progress` the bytes read
/// so far after every read: one check and one report per chunk the consumer asks for.
pub struct CancelRead<'a, R> {
    inner: R,
    cancel: &'a Cancel,
    done: u64,
    progress: Box<dyn FnMut(u64) + 'a>,
}

impl<'a, R: std::io::Read> CancelRead<'a, R> {
    /// Watch `inner` with `cancel`; `progress(bytes read so far)` after every read.
    pub fn new(inner: R, cancel: &'a Cancel, progress: impl FnMut(u64) + 'a) -> Self {
        Self {
            inner,
            cancel,
            done: 0,
            progress: Box::new(progress),
        }
    }

    /// The bytes read so far.
    pub fn done(&self) -> u64 {
        self.done
    }
}

impl<R: std::io::Read> std::io::Read for CancelRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.cancel.check().map_err(Cancelled::into_io)?;
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.progress)(self.done);
        Ok(n)
    }
}

impl<R> fmt::Debug for CancelRead<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelRead")
            .field("cancel", self.cancel)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Open `path` with `opts`, refusing anything but a regular file. The open itself is
/// non-blocking, so naming a FIFO cannot hang it (the flag does nothing on a regular file).
fn regular(opts: &mut std::fs::OpenOptions, path: &Path) -> Result<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = opts
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    let ft = file
        .metadata()
        .map_err(|e| open_error(path, e))?
        .file_type();
    let what = if ft.is_file() {
        return Ok(file);
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    };
    Err(Error::NotRegularFile {
        path: path.to_owned(),
        what,
    })
}

/// A block-device error: which operation, where, and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A layer above the raw bytes could not serve the request: returned by devices that are
    /// themselves a disk image format (a qcow2 image used as a [`BlockDev`]) when reading or
    /// writing their own metadata fails or the metadata is corrupt. [`Error::kind`] is the
    /// layer's `kind`, whatever it is.
    #[error("{op} of {len} bytes at offset {offset}")]
    Backend {
        /// The device operation that was being served.
        op: Op,
        /// Byte offset of the request on the device the caller used.
        offset: u64,
        /// Length of the request in bytes.
        len: u64,
        /// The layer's own classification of `source`.
        kind: ErrorKind,
        /// The layer's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The host's file call failed: opening or creating a file (missing file, no permission,
    /// file already exists for [`FileDev::create_new`]), a positional read or write (I/O error,
    /// no space), `fsync`, resizing, or the rename in [`AtomicFile::commit`]. [`Error::kind`] is
    /// [`ErrorKind::Input`] when `op` is [`Op::Open`], [`ErrorKind::Host`] otherwise.
    #[error("{}", describe_io(*.op, .path, *.offset, *.len))]
    Io {
        /// What was being done.
        op: Op,
        /// The host file involved (for a commit, the final name).
        path: PathBuf,
        /// Byte offset of the transfer; for [`Op::SetLen`], the requested new length in bytes;
        /// 0 for opening and flushing.
        offset: u64,
        /// Length of the transfer in bytes; 0 when there is none.
        len: u64,
        /// The host's error.
        #[source]
        source: std::io::Error,
    },
    /// A request whose byte range `offset..offset + len` does not lie inside the device (or
    /// overflows `u64`), from any [`BlockDev`] method, [`check_range`], or a [`SliceDev`]
    /// window that does not fit its inner device. Nothing is transferred. [`Error::kind`] is
    /// [`ErrorKind::Input`]: in kiln such requests come from offsets read out of an image.
    #[error("{op} of {len} bytes at offset {offset} is past the end of a {size}-byte device")]
    OutOfBounds {
        /// The refused operation.
        op: Op,
        /// First byte of the request.
        offset: u64,
        /// Length of the request in bytes.
        len: u64,
        /// Size of the device in bytes (`u64::MAX` when the end itself overflowed).
        size: u64,
    },
    /// A write or resize of a [`FileDev`] opened with [`FileDev::open_read_only`] (directly,
    /// through a window over it, or through the default [`BlockDev::write_zeroes`], which
    /// reports [`Op::Write`]). Nothing is changed. [`Error::kind`] is
    /// [`ErrorKind::Internal`]: kiln opens read-only only what it never means to write.
    #[error("{op} refused: the device is read-only")]
    ReadOnly {
        /// The refused operation.
        op: Op,
    },
    /// A named file that is not a regular file (a FIFO, a device, a directory, a socket): kiln
    /// opens only regular files as images, so that nothing blocks or reads a stream. Returned by
    /// [`FileDev::open_read_only`] and [`FileDev::open_read_write`]; [`Error::kind`] is
    /// [`ErrorKind::Input`].
    #[error("{}: is a {what}, not a regular file; kiln opens only regular files as disk images", path.display())]
    NotRegularFile {
        /// The path that was opened.
        path: PathBuf,
        /// What it is instead: `"directory"`, `"FIFO"`, `"block device"`, `"character device"`,
        /// `"socket"` or `"special file"`.
        what: &'static str,
    },
    /// Another run is writing the same output right now: its temporary file (`.<name>.kiln-tmp`)
    /// is locked. Returned by [`AtomicFile::create`], so two runs into one directory never write
    /// into each other's files; [`Error::kind`] is [`ErrorKind::Host`] (it works once the other run
    /// has finished).
    #[error(
        "{}: another kiln run is writing this output right now (its temporary file {} is locked); wait for it to finish, or write somewhere else",
        dest.display(),
        tmp.display()
    )]
    Busy {
        /// The output both runs write.
        dest: PathBuf,
        /// Its temporary file, locked by the other run.
        tmp: PathBuf,
    },
}

impl Error {
    /// Who is at fault: a file that cannot be opened or a request past the end of the device is
    /// the input's fault, other host I/O failures the host's, a write to a read-only device kiln's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Backend { kind, .. } => *kind,
            Error::Io { source, .. } if Cancelled::is_in(source) => ErrorKind::Cancelled,
            Error::Io { op: Op::Open, .. }
            | Error::OutOfBounds { .. }
            | Error::NotRegularFile { .. } => ErrorKind::Input,
            Error::Io { .. } | Error::Busy { .. } => ErrorKind::Host,
            Error::ReadOnly { .. } => ErrorKind::Internal,
        }
    }
}

impl Error {
    /// When this error is a write, zero-fill, resize or flush that the host refused for lack of
    /// room — the filesystem is full (`ENOSPC`), a quota is reached (`EDQUOT`) or the file would
    /// pass the process's file-size limit (`EFBIG`) — what the output needed: the file, the bytes
    /// it needed at least (the end of the refused request) and the bytes free on its filesystem.
    ///
    /// ```
    /// use kiln_blockdev::{Error, Op};
    /// let e = Error::Io {
    ///     op: Op::Write,
    ///     path: "/tmp/.out.qcow2.kiln-tmp".into(),
    ///     offset: 1 << 20,
    ///     len: 4096,
    ///     source: std::io::Error::from(std::io::ErrorKind::StorageFull),
    /// };
    /// assert_eq!(e.no_room().unwrap().needed, (1 << 20) + 4096);
    /// ```
    pub fn no_room(&self) -> Option<NoRoom> {
        let Error::Io {
            op,
            path,
            offset,
            len,
            source,
        } = self
        else {
            return None;
        };
        let full = matches!(
            source.kind(),
            std::io::ErrorKind::StorageFull
                | std::io::ErrorKind::QuotaExceeded
                | std::io::ErrorKind::FileTooLarge
        );
        if !full || matches!(op, Op::Open | Op::Read) {
            return None;
        }
        let needed = if *op == Op::SetLen {
            *offset
        } else {
            offset.saturating_add(*len)
        };
        Some(NoRoom {
            path: path.clone(),
            needed,
            free: path.parent().and_then(free_bytes),
        })
    }
}

/// What an output that did not fit needed: see [`Error::no_room`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NoRoom {
    /// The file being written (for kiln's outputs, the temporary name beside the final one).
    pub path: PathBuf,
    /// Bytes the file needed at least: where the refused request ended.
    pub needed: u64,
    /// Bytes free for unprivileged users on the file's filesystem (`statvfs`), when it answers.
    pub free: Option<u64>,
}

/// Bytes free for unprivileged users on the filesystem holding `dir` (`statvfs`: available
/// blocks × fragment size), asked of `dir` or, when a failed run has removed it, of its nearest
/// ancestor that exists; `None` when none answers.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let st = dir
        .ancestors()
        .filter(|d| !d.as_os_str().is_empty())
        .find_map(|d| rustix::fs::statvfs(d).ok())?;
    st.f_bavail.checked_mul(st.f_frsize)
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn describe_io(op: Op, path: &Path, offset: u64, len: u64) -> String {
    match op {
        Op::Open => format!("cannot open {}", path.display()),
        Op::Flush => format!("cannot flush {}", path.display()),
        Op::SetLen => format!("cannot resize {} to {offset} bytes", path.display()),
        _ => format!(
            "{op} of {len} bytes at offset {offset} of {}",
            path.display()
        ),
    }
}

/// A byte-addressed device with positional, exact I/O.
pub trait BlockDev: Send + Sync {
    /// The device size in bytes.
    fn len(&self) -> u64;

    /// Fill `buf` from `offset`. The whole range must lie inside the device.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// Write all of `buf` at `offset`. The whole range must lie inside the device.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;

    /// Make everything written so far durable in the backend.
    fn flush(&self) -> Result<()>;

    /// Whether writes are refused.
    fn is_read_only(&self) -> bool {
        false
    }

    /// True when the device is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Make `len` bytes at `offset` read back as zeros.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        check_range(Op::WriteZeroes, offset, len, self.len())?;
        const CHUNK: usize = 64 * 1024;
        let zeros = [0u8; CHUNK];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            self.write_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Tell the device that `len` bytes at `offset` are no longer needed. Their content afterwards is
    /// unspecified; the default keeps them as they are.
    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        check_range(Op::Discard, offset, len, self.len())
    }
}

/// Reject a range that does not fit inside a device of `size` bytes.
pub fn check_range(op: Op, offset: u64, len: u64, size: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfBounds {
            op,
            offset,
            len,
            size,
        }),
    }
}

/// `BlockDev` for a pointer to a device: every method, defaulted ones included, forwarded to the
/// device pointed at.
macro_rules! forward_block_dev {
    ($($ptr:ty),*) => {$(
        impl<T: BlockDev + ?Sized> BlockDev for $ptr {
            fn len(&self) -> u64 {
                (**self).len()
            }
            fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
                (**self).read_at(buf, offset)
            }
            fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
                (**self).write_at(buf, offset)
            }
            fn flush(&self) -> Result<()> {
                (**self).flush()
            }
            fn is_read_only(&self) -> bool {
                (**self).is_read_only()
            }
            fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
                (**self).write_zeroes(offset, len)
            }
            fn discard(&self, offset: u64, len: u64) -> Result<()> {
                (**self).discard(offset, len)
            }
        }
    )*};
}

forward_block_dev!(&T, Box<T>, Arc<T>);

/// A host file. Its length is read at open and tracked for writes made through this handle;
/// [`FileDev::set_len`] grows or shrinks it. A file opened with [`FileDev::open_read_only`] refuses
/// every write, so an input is never modified.
#[derive(Debug)]
pub struct FileDev {
    file: File,
    path: PathBuf,
    len: RwLock<u64>,
    read_only: bool,
}

impl FileDev {
    /// Open an existing file for reading only.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = regular(File::options().read(true), path)?;
        Self::from_file(file, path, true)
    }

    /// Open an existing file for reading and writing.
    pub fn open_read_write(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = regular(File::options().read(true).write(true), path)?;
        Self::from_file(file, path, false)
    }

    /// Create a new file (it must not exist) for reading and writing, mode 0644 less the umask.
    pub fn create_new(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| open_error(path, e))?;
        Self::from_file(file, path, false)
    }

    /// Wrap an already open file. `path` is used in error messages only.
    pub fn from_file(file: File, path: impl Into<PathBuf>, read_only: bool) -> Result<Self> {
        let path = path.into();
        let len = file
            .metadata()
            .map_err(|e| Error::Io {
                op: Op::Open,
                path: path.clone(),
                offset: 0,
                len: 0,
                source: e,
            })?
            .len();
        Ok(Self {
            file,
            path,
            len: RwLock::new(len),
            read_only,
        })
    }

    /// The host path this device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resize the file (zero-filled when it grows).
    pub fn set_len(&self, new_len: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly { op: Op::SetLen });
        }
        let mut len = self.len.write().unwrap_or_else(|p| p.into_inner());
        self.file
            .set_len(new_len)
            .map_err(|e| self.io(Op::SetLen, new_len, 0, e))?;
        *len = new_len;
        Ok(())
    }

    /// Write at any offset, growing the file when the write ends past its current end.
    pub fn write_at_grow(&self, buf: &[u8], offset: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly { op: Op::Write });
        }
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or(Error::OutOfBounds {
                op: Op::Write,
                offset,
                len: buf.len() as u64,
                size: u64::MAX,
            })?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.io(Op::Write, offset, buf.len() as u64, e))?;
        let mut len = self.len.write().unwrap_or_else(|p| p.into_inner());
        if end > *len {
            *len = end;
        }
        Ok(())
    }

    /// Give up the device and return the host file.
    pub fn into_file(self) -> File {
        self.file
    }

    fn io(&self, op: Op, offset: u64, len: u64, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: self.path.clone(),
            offset,
            len,
            source,
        }
    }
}

fn open_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        op: Op::Open,
        path: path.to_owned(),
        offset: 0,
        len: 0,
        source,
    }
}

impl BlockDev for FileDev {
    fn len(&self) -> u64 {
        *self.len.read().unwrap_or_else(|p| p.into_inner())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(Op::Read, offset, buf.len() as u64, self.len())?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| self.io(Op::Read, offset, buf.len() as u64, e))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly { op: Op::Write });
        }
        check_range(Op::Write, offset, buf.len() as u64, self.len())?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.io(Op::Write, offset, buf.len() as u64, e))
    }

    fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|e| self.io(Op::Flush, 0, 0, e))
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }
}

/// An in-memory device, for tests and for small scratch images.
#[derive(Debug, Default)]
pub struct MemDev {
    data: RwLock<Vec<u8>>,
}

impl MemDev {
    /// A zero-filled device of `len` bytes.
    pub fn new(len: usize) -> Self {
        Self {
            data: RwLock::new(vec![0; len]),
        }
    }

    /// A device holding `data`.
    pub fn from_vec(data: Vec<u8>) -> Self {
        Self {
            data: RwLock::new(data),
        }
    }

    /// A copy of the whole content.
    pub fn to_vec(&self) -> Vec<u8> {
        self.data.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Resize (zero-filled when it grows).
    pub fn resize(&self, len: usize) {
        self.data
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .resize(len, 0);
    }
}

impl BlockDev for MemDev {
    fn len(&self) -> u64 {
        self.data.read().unwrap_or_else(|p| p.into_inner()).len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let data = self.data.read().unwrap_or_else(|p| p.into_inner());
        check_range(Op::Read, offset, buf.len() as u64, data.len() as u64)?;
        let start = offset as usize;
        buf.copy_from_slice(&data[start..start + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
        check_range(Op::Write, offset, buf.len() as u64, data.len() as u64)?;
        let start = offset as usize;
        data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// A window `[start, start + len)` of another device, e.g. one partition of a disk.
#[derive(Debug)]
pub struct SliceDev<D> {
    inner: D,
    start: u64,
    len: u64,
}

impl<D: BlockDev> SliceDev<D> {
    /// A window over `inner`; the window must lie inside it.
    pub fn new(inner: D, start: u64, len: u64) -> Result<Self> {
        check_range(Op::Open, start, len, inner.len())?;
        Ok(Self { inner, start, len })
    }

    /// Where the window starts on the inner device.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The device this is a window of.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Give up the window and return the inner device.
    pub fn into_inner(self) -> D {
        self.inner
    }
}

impl<D: BlockDev> BlockDev for SliceDev<D> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(Op::Read, offset, buf.len() as u64, self.len)?;
        self.inner.read_at(buf, self.start + offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_range(Op::Write, offset, buf.len() as u64, self.len)?;
        self.inner.write_at(buf, self.start + offset)
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn is_read_only(&self) -> bool {
        self.inner.is_read_only()
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        check_range(Op::WriteZeroes, offset, len, self.len)?;
        self.inner.write_zeroes(self.start + offset, len)
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        check_range(Op::Discard, offset, len, self.len)?;
        self.inner.discard(self.start + offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_out_of_bounds_is_an_error_not_a_short_read() {
        let d = MemDev::new(16);
        let mut buf = [0u8; 8];
        let err = d.read_at(&mut buf, 12).unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutOfBounds {
                    op: Op::Read,
                    offset: 12,
                    len: 8,
                    size: 16
                }
            ),
            "{err}"
        );
        assert!(
            d.write_at(&buf, u64::MAX - 2).is_err(),
            "overflowing range must be refused"
        );
    }

    #[test]
    fn slice_translates_and_bounds() {
        let d = MemDev::new(100);
        let s = SliceDev::new(&d, 10, 20).unwrap();
        s.write_at(&[7; 20], 0).unwrap();
        assert!(s.write_at(&[7; 1], 20).is_err());
        let all = d.to_vec();
        assert!(all[..10].iter().all(|&b| b == 0));
        assert!(all[10..30].iter().all(|&b| b == 7));
        assert!(all[30..].iter().all(|&b| b == 0));
        s.write_zeroes(5, 10).unwrap();
        assert_eq!(
            &d.to_vec()[10..30],
            &[7, 7, 7, 7, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 7, 7, 7, 7]
        );
        assert!(SliceDev::new(&d, 90, 11).is_err());
    }

    #[test]
    fn read_only_file_refuses_writes_and_keeps_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abcdef").unwrap();
        let f = FileDev::open_read_only(&p).unwrap();
        assert!(matches!(f.write_at(b"x", 0), Err(Error::ReadOnly { .. })));
        assert!(matches!(f.set_len(1), Err(Error::ReadOnly { .. })));
        let mut b = [0u8; 3];
        f.read_at(&mut b, 3).unwrap();
        assert_eq!(&b, b"def");
        assert_eq!(std::fs::read(&p).unwrap(), b"abcdef");
    }

    #[test]
    fn file_grow_and_error_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g");
        let f = FileDev::create_new(&p).unwrap();
        assert_eq!(f.len(), 0);
        f.write_at_grow(b"xyz", 4096).unwrap();
        assert_eq!(f.len(), 4099);
        let mut b = [1u8; 4];
        f.read_at(&mut b, 4095).unwrap();
        assert_eq!(&b, b"\0xyz");
        let err = FileDev::open_read_only(dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing") && err.contains("open"), "{err}");
    }
}

/// The one temporary name kiln writes an output under before renaming it into place:
/// `.<name>.kiln-tmp` in the same directory (hidden, and replaced by the next run if a killed run
/// left it).
pub fn temp_name(name: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(".kiln-tmp");
    tmp
}

/// An output file written under a temporary name in the same directory and renamed into place by
/// [`AtomicFile::commit`]. Dropped without commit, the temporary file is removed, so a failed or
/// interrupted writer never leaves a half-written file under the final name.
#[derive(Debug)]
pub struct AtomicFile {
    dev: Option<Arc<FileDev>>,
    tmp: PathBuf,
    dest: PathBuf,
}

impl AtomicFile {
    /// Create `.<name>.kiln-tmp` beside `dest` (replacing a stale one left by a killed run) with the
    /// given permission bits, and lock it for as long as this value lives: a second run writing
    /// the same output at the same time gets [`Error::Busy`] instead of writing into this one's
    /// file (the lock is `flock(2)`, released by the kernel even when a run is killed).
    pub fn create(dest: impl AsRef<Path>, mode: u32) -> Result<Self> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let dest = dest.as_ref().to_owned();
        let name = dest.file_name().ok_or_else(|| Error::Io {
            op: Op::Open,
            path: dest.clone(),
            offset: 0,
            len: 0,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "output path has no file name",
            ),
        })?;
        let tmp = dest.with_file_name(temp_name(name));
        // A run that fails unlinks its file while still holding the lock: whoever locks a file must
        // check that the name still leads to it, or it would write into an unlinked file.
        for _ in 0..8 {
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(mode)
                // A symlink or FIFO planted under the temporary name is neither followed nor
                // waited on.
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&tmp)
                .map_err(|e| open_error(&tmp, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::Busy { dest, tmp });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(open_error(&tmp, e)),
            }
            let held = file.metadata().map_err(|e| open_error(&tmp, e))?;
            if !held.is_file() {
                return Err(open_error(
                    &tmp,
                    std::io::Error::other("the temporary name is taken by something not a file"),
                ));
            }
            match std::fs::symlink_metadata(&tmp) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {}
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(open_error(&tmp, e)),
            }
            // A stale file of a killed run: its content and mode are replaced.
            file.set_len(0).map_err(|e| open_error(&tmp, e))?;
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(|e| open_error(&tmp, e))?;
            let dev = FileDev::from_file(file, &tmp, false)?;
            return Ok(Self {
                dev: Some(Arc::new(dev)),
                tmp,
                dest,
            });
        }
        Err(Error::Busy { dest, tmp })
    }

    /// The temporary file being written.
    pub fn dev(&self) -> &FileDev {
        self.dev.as_ref().expect("AtomicFile used after commit")
    }

    /// A shared handle to the temporary file, for writers that want to own their storage. Every
    /// clone must be dropped or idle by the time of [`AtomicFile::commit`].
    pub fn shared(&self) -> Arc<FileDev> {
        self.dev.clone().expect("AtomicFile used after commit")
    }

    /// The path the file gets when committed.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The temporary file's path (`.<name>.kiln-tmp` beside [`AtomicFile::dest`]), e.g. to open
    /// it once more read-only while this value keeps it alive.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Rename the file to its final name. Like a compiler's outputs, the data is not forced to
    /// stable storage first (call [`BlockDev::flush`] on [`AtomicFile::dev`] for that): the rename
    /// guarantees that the final name only ever holds a complete file.
    #[must_use = "an uncommitted output is deleted"]
    pub fn commit(mut self) -> Result<PathBuf> {
        let dev = self.dev.take().expect("AtomicFile committed twice");
        // Renamed while still locked: no other run can take the file over in between.
        let renamed = std::fs::rename(&self.tmp, &self.dest).map_err(|e| Error::Io {
            op: Op::Write,
            path: self.dest.clone(),
            offset: 0,
            len: 0,
            source: e,
        });
        drop(dev);
        renamed?;
        Ok(std::mem::take(&mut self.dest))
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(dev) = self.dev.take() {
            // Not committed: the partial output must not survive. Nothing useful can be done if the
            // removal fails; the name is reused (and replaced) by the next run. Removed while still
            // locked, then unlocked by closing.
            let _ = std::fs::remove_file(&self.tmp);
            drop(dev);
        }
    }
}

/// The directories a run created for its outputs: removed again, innermost first and only while
/// empty, when dropped without [`NewDirs::keep`] — so a failed or cancelled run leaves no
/// directory it made, like it leaves no file ([`AtomicFile`]).
#[derive(Debug)]
pub struct NewDirs {
    /// Created directories, outermost first.
    made: Vec<PathBuf>,
}

impl NewDirs {
    /// `mkdir -p dir`, remembering which of its directories did not exist.
    pub fn create_all(dir: &Path) -> std::io::Result<Self> {
        let mut missing = Vec::new();
        let mut cur = Some(dir);
        while let Some(d) = cur.filter(|d| !d.as_os_str().is_empty()) {
            match std::fs::symlink_metadata(d) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(d.to_owned()),
                Err(e) => return Err(e),
            }
            cur = d.parent();
        }
        missing.reverse();
        let mut made = Self { made: Vec::new() };
        for d in missing {
            match std::fs::create_dir(&d) {
                Ok(()) => made.made.push(d),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(made)
    }

    /// The run succeeded: keep the directories.
    pub fn keep(mut self) {
        self.made.clear();
    }
}

impl Drop for NewDirs {
    fn drop(&mut self) {
        for d in self.made.iter().rev() {
            // Fails (and is meant to) when something else put a file there meanwhile.
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[cfg(test)]
mod atomic_tests {
    use super::*;

    /// Two writers of one output at once: the second is refused (Busy, kind Host) and never
    /// touches the first one's file; once the first has committed or failed, the name is free.
    #[test]
    fn a_second_writer_of_the_same_output_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.qcow2");
        let first = AtomicFile::create(&dest, 0o644).unwrap();
        first.dev().set_len(5).unwrap();
        first.dev().write_at(b"first", 0).unwrap();
        let e = AtomicFile::create(&dest, 0o644).expect_err("busy");
        assert!(matches!(e, Error::Busy { .. }), "{e}");
        assert_eq!(e.kind(), ErrorKind::Host);
        assert!(e.to_string().contains("another kiln run"), "{e}");
        assert_eq!(first.commit().unwrap(), dest);
        assert_eq!(std::fs::read(&dest).unwrap(), b"first");
        // Committed: a new run takes the name.
        let second = AtomicFile::create(&dest, 0o600).unwrap();
        second.dev().set_len(6).unwrap();
        second.dev().write_at(b"second", 0).unwrap();
        drop(second);
        assert_eq!(std::fs::read(&dest).unwrap(), b"first");
        // A stale temporary file of a killed run (not locked) is taken over and emptied.
        let tmp = dest.with_file_name(temp_name(dest.file_name().unwrap()));
        std::fs::write(&tmp, b"stale bytes of a killed run").unwrap();
        let third = AtomicFile::create(&dest, 0o600).unwrap();
        assert_eq!(third.dev().len(), 0);
        third.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.qcow2"]);
    }

    /// A symlink planted under the temporary name is not followed (its target is untouched).
    #[test]
    fn a_symlink_at_the_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let dest = dir.path().join("out.iso");
        let tmp = dest.with_file_name(temp_name(dest.file_name().unwrap()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        assert!(AtomicFile::create(&dest, 0o644).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    }

    #[test]
    fn new_dirs_are_removed_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        drop(NewDirs::create_all(&deep).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        std::fs::create_dir(dir.path().join("a")).unwrap();
        let dirs = NewDirs::create_all(&deep).unwrap();
        std::fs::write(dir.path().join("a/b/other"), b"x").unwrap();
        drop(dirs);
        assert!(!deep.exists() && dir.path().join("a/b/other").exists());
        NewDirs::create_all(&deep).unwrap().keep();
        assert!(deep.is_dir());
        NewDirs::create_all(&deep).unwrap();
        assert!(deep.is_dir());
    }

    #[test]
    fn cancel_is_shared_by_clones_and_stops_a_reader() {
        use std::io::Read;
        let cancel = Cancel::new();
        let seen = std::cell::Cell::new(0);
        let data = [7u8; 100];
        let mut r = CancelRead::new(&data[..], &cancel, |n| seen.set(n));
        let mut buf = [0u8; 40];
        assert_eq!(r.read(&mut buf).unwrap(), 40);
        assert_eq!(seen.get(), 40);
        let other = cancel.clone();
        std::thread::spawn(move || other.cancel()).join().unwrap();
        assert!(cancel.is_cancelled());
        let err = r.read(&mut buf).unwrap_err();
        assert!(Cancelled::is_in(&err), "{err}");
        assert_ne!(err.kind(), std::io::ErrorKind::Interrupted);
        assert_eq!(r.done(), 40);
        assert_eq!(cancel.check(), Err(Cancelled));
        assert_eq!(Cancelled.kind(), ErrorKind::Cancelled);
        let from_flag = Cancel::from_flag(cancel.flag());
        assert!(from_flag.is_cancelled());
        assert!(!Cancel::default().is_cancelled());
    }

    #[test]
    fn uncommitted_output_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.img");
        {
            let f = AtomicFile::create(&dest, 0o600).unwrap();
            f.dev().write_at_grow(b"partial", 0).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let f = AtomicFile::create(&dest, 0o600).unwrap();
        f.dev().write_at_grow(b"whole", 0).unwrap();
        assert!(!dest.exists());
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"whole");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
