//! SIGINT and SIGTERM. Handlers are installed first thing in `main`, but until a verb takes them
//! over with [`Signals::cancel`] they run the signal's default action (the process ends at once,
//! as without handlers). The verbs that write outputs (`build`, `cluster`, `convert` to qcow2) take
//! them over before anything is written: from then on a signal trips the library's [`Cancel`] handle instead, the
//! library stops at its next check and removes what it staged, and `main` exits 128 + the signal
//! (130 for SIGINT, 143 for SIGTERM). A second signal only trips the handle again, so it cannot
//! interrupt the clean-up either.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kiln_blockdev::Cancel;
use signal_hook::consts::{SIGINT, SIGTERM};

/// The process's SIGINT / SIGTERM routing.
#[derive(Debug)]
pub struct Signals {
    cancel: Cancel,
    /// The last signal received (0: none).
    which: Arc<AtomicUsize>,
    /// While true, a signal runs its default action.
    default: Arc<AtomicBool>,
}

impl Signals {
    /// Installs the handlers, in default mode.
    pub fn install() -> io::Result<Self> {
        let s = Signals {
            cancel: Cancel::new(),
            which: Arc::new(AtomicUsize::new(0)),
            default: Arc::new(AtomicBool::new(true)),
        };
        for sig in [SIGINT, SIGTERM] {
            // The default action first: a signal arriving between these calls still ends the
            // process rather than being swallowed.
            signal_hook::flag::register_conditional_default(sig, Arc::clone(&s.default))?;
            signal_hook::flag::register_usize(sig, Arc::clone(&s.which), sig as usize)?;
            signal_hook::flag::register(sig, s.cancel.flag())?;
        }
        Ok(s)
    }

    /// From now on SIGINT and SIGTERM trip the returned handle instead of ending the process.
    pub fn cancel(&self) -> Cancel {
        self.default.store(false, Ordering::SeqCst);
        self.cancel.clone()
    }

    /// The signal that tripped the handle, if one did.
    pub fn received(&self) -> Option<i32> {
        match self.which.load(Ordering::SeqCst) {
            0 => None,
            n => i32::try_from(n).ok(),
        }
    }
}

/// `SIGINT`, `SIGTERM`, … for a signal number.
pub fn name(sig: i32) -> String {
    signal_hook::low_level::signal_name(sig).map_or_else(|| format!("signal {sig}"), str::to_owned)
}
