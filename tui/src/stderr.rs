//! Keeps stray stderr output off the dashboard: while the dashboard owns the screen, fd 2
//! points at the log file (or /dev/null), and it is pointed back before a panic message is
//! printed, so a crash still explains itself on the restored terminal.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

/// The original stderr while redirected, else -1.
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);

/// Guard: stderr is redirected until it is dropped.
pub struct StderrRedirect {
    saved: i32,
}

impl StderrRedirect {
    /// Point fd 2 at `target`, or at /dev/null if `None`. Best effort: on failure stderr
    /// simply stays where it was.
    pub fn to(target: Option<&File>) -> Option<StderrRedirect> {
        let devnull;
        let fd = match target {
            Some(f) => f.as_raw_fd(),
            None => {
                devnull = File::options().write(true).open("/dev/null").ok()?;
                devnull.as_raw_fd()
            }
        };
        // SAFETY: dup on fd 2 has no memory effects; a failure returns -1, checked below.
        let saved = unsafe { libc::dup(2) };
        if saved < 0 {
            return None;
        }
        // SAFETY: both fds are open (fd is borrowed from a live File); dup2 replaces fd 2
        // atomically.
        if unsafe { libc::dup2(fd, 2) } < 0 {
            // SAFETY: `saved` is ours and not used after this.
            unsafe { libc::close(saved) };
            return None;
        }
        SAVED_STDERR.store(saved, Ordering::SeqCst);
        Some(StderrRedirect { saved })
    }
}

impl Drop for StderrRedirect {
    fn drop(&mut self) {
        SAVED_STDERR.store(-1, Ordering::SeqCst);
        // SAFETY: `saved` is the fd dup'ed in `to`, still open and owned by this guard.
        unsafe {
            libc::dup2(self.saved, 2);
            libc::close(self.saved);
        }
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
                // SAFETY: `saved` is an open fd owned by the live redirect guard; dup2 does
                // not close it, so the guard's drop stays valid.
                unsafe { libc::dup2(saved, 2) };
            }
            previous(info);
        }));
    });
}
