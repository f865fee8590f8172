//! How the CLI ends: exit 0 on success, 2 when the input (arguments, files, images, specs) is at
//! fault, 128 + the signal when a signal cancelled the run (130 for SIGINT, 143 for SIGTERM), 1 for
//! everything else (I/O on outputs, internal errors). This is the one place that maps a library
//! error's [`ErrorKind`] to an exit code: verbs end library calls with `.or_exit()?`.

use std::fmt;
use std::process::ExitCode;

use kiln_blockdev::ErrorKind;

/// A failed command and the exit code it maps to.
pub struct Failure {
    code: u8,
    error: anyhow::Error,
    /// The library stopped because its cancel handle was tripped ([`ErrorKind::Cancelled`]).
    cancelled: bool,
}

impl Failure {
    /// Bad input: the user can fix it by changing what they pass in. Exit code 2.
    pub fn input(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 2,
            error: error.into(),
            cancelled: false,
        }
    }

    /// Print `kiln: error: …` with the whole cause chain and return the exit code. A write to a
    /// stdout whose reader has gone (`kiln cat … | head`) ends quietly with exit 0. A cancelled run
    /// prints one line and exits 128 + `signal` (the signal that tripped the cancel handle; 130,
    /// as for SIGINT, when none is known).
    pub fn report(self, signal: Option<i32>) -> ExitCode {
        if self.cancelled {
            let sig = signal.unwrap_or(signal_hook::consts::SIGINT);
            eprintln!(
                "kiln: cancelled ({}); no output was written",
                crate::signals::name(sig)
            );
            return ExitCode::from(u8::try_from(128 + sig).unwrap_or(self.code));
        }
        let broken_pipe = self.error.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            return ExitCode::SUCCESS;
        }
        eprintln!("kiln: error: {:#}", self.error);
        // The device error may sit in the chain itself or inside an `io::Error` that carries it.
        if let Some(room) = self.error.chain().find_map(|c| {
            c.downcast_ref::<kiln_blockdev::Error>()
                .or_else(|| {
                    c.downcast_ref::<std::io::Error>()
                        .and_then(std::io::Error::get_ref)
                        .and_then(|e| e.downcast_ref::<kiln_blockdev::Error>())
                })
                .and_then(kiln_blockdev::Error::no_room)
        }) {
            eprintln!("kiln: {}", no_room_hint(&room));
        }
        ExitCode::from(self.code)
    }
}

/// The second line of an error whose output did not fit: what it needed, what was free, what to
/// do. Nothing was left behind (the temporary file is removed on failure).
fn no_room_hint(room: &kiln_blockdev::NoRoom) -> String {
    let dir = room
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let free = match room.free {
        Some(f) => format!(
            "{f} bytes ({}) are free there",
            kiln_common::units::human_size(f)
        ),
        None => "its free space is unknown".to_owned(),
    };
    format!(
        "no room for the output in {}: it needed at least {} bytes ({}) and {free}, or a file-size \
         limit (ulimit -f) or quota stopped it; nothing was left behind. Free space there or write \
         the output elsewhere.",
        dir.display(),
        room.needed,
        kiln_common::units::human_size(room.needed)
    )
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit {}: {:#}", self.code, self.error)
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Self {
            code: 1,
            error: error.into(),
            cancelled: false,
        }
    }
}

pub type CmdResult = Result<(), Failure>;

/// `result.input_err()?` marks a library error as the user's input being at fault (exit 2).
pub trait InputErr<T> {
    fn input_err(self) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> InputErr<T> for Result<T, E> {
    fn input_err(self) -> Result<T, Failure> {
        self.map_err(Failure::input)
    }
}

/// A library error that knows who is at fault (every kiln crate's `Error::kind`).
pub trait Classify {
    fn kind(&self) -> ErrorKind;
}

macro_rules! classify {
    ($($t:ty),* $(,)?) => {
        $(impl Classify for $t {
            fn kind(&self) -> ErrorKind {
                <$t>::kind(self)
            }
        })*
    };
}

classify!(
    kiln_blockdev::Error,
    kiln_qcow2::Error,
    kiln_partition::Error,
    kiln_ext4::Error,
    kiln_nocloud::Error,
    kiln_golden::Error,
    kiln_cluster::Error,
);

impl Failure {
    /// The exit code of a library error: 2 when the input is at fault, 130 (refined by
    /// [`Failure::report`] from the signal) when the run was cancelled, 1 otherwise.
    pub fn of<E: Classify + Into<anyhow::Error>>(error: E) -> Self {
        let kind = error.kind();
        let code = match kind {
            ErrorKind::Input => 2,
            ErrorKind::Cancelled => 130,
            _ => 1,
        };
        Self {
            code,
            error: error.into(),
            cancelled: kind == ErrorKind::Cancelled,
        }
    }
}

/// `library_call().or_exit()?`: the error's exit code from its [`ErrorKind`].
pub trait OrExit<T> {
    fn or_exit(self) -> Result<T, Failure>;
}

impl<T, E: Classify + Into<anyhow::Error>> OrExit<T> for Result<T, E> {
    fn or_exit(self) -> Result<T, Failure> {
        self.map_err(Failure::of)
    }
}
