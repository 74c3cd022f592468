//! Keeps stray stderr output off the dashboard: while the dashboard owns the screen, fd 2
//! points at the log file (or /dev/null), and it is pointed back before a panic message is
//! printed, so a crash still explains itself on the restored terminal.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

use rustix::stdio::dup2_stderr;

/// The original stderr while redirected, else -1: the panic hook has no guard to borrow it
/// from, only this number.
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);

/// Guard: stderr is redirected until it is dropped.
pub struct StderrRedirect {
    saved: OwnedFd,
}

impl StderrRedirect {
    /// Point fd 2 at `target`, or at /dev/null if `None`. Best effort: on failure stderr
    /// simply stays where it was.
    pub fn to(target: Option<&File>) -> Option<StderrRedirect> {
        let devnull;
        let file = match target {
            Some(f) => f,
            None => {
                devnull = File::options().write(true).open("/dev/null").ok()?;
                &devnull
            }
        };
        let saved = rustix::io::dup(std::io::stderr()).ok()?;
        // On failure `saved` is closed as it drops.
        dup2_stderr(file).ok()?;
        SAVED_STDERR.store(saved.as_raw_fd(), Ordering::SeqCst);
        Some(StderrRedirect { saved })
    }
}

impl Drop for StderrRedirect {
    fn drop(&mut self) {
        SAVED_STDERR.store(-1, Ordering::SeqCst);
        let _ = dup2_stderr(&self.saved);
    }
}

/// Point stderr back at the terminal (if redirected) before the panic hooks installed so far
/// run, so the message is visible after the terminal is restored. Installed once.
pub fn hook_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let saved = SAVED_STDERR.load(Ordering::SeqCst);
            if saved >= 0 {
                // SAFETY: `saved` is an open fd owned by the live redirect guard (its drop
                // clears SAVED_STDERR first); dup2 does not close it.
                let _ = dup2_stderr(unsafe { BorrowedFd::borrow_raw(saved) });
            }
            previous(info);
        }));
    });
}
