//! How the reader sleeps between drains: an edge-triggered epoll set over the ring buffers.
//!
//! A ring buffer's fd polls readable whenever any record waits, so a level-triggered wait
//! returns at once in a busy stream and the reader spins, one drain per handful of records.
//! Edge-triggered, the wait ends only when the BPF side wakes the reader (`events` once per
//! `wakeup_bytes`, a switch ring once `wake_records` wait: `ebpf/kvmscope.bpf.c`) or when the
//! timeout passes, so the reader drains in batches whose size the kernel side chooses.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// An epoll instance watching ring-buffer fds for wakeups, edge-triggered.
pub(crate) struct ReaderWait {
    epoll: OwnedFd,
}

impl ReaderWait {
    pub(crate) fn new(fds: &[RawFd]) -> io::Result<ReaderWait> {
        // SAFETY: epoll_create1 has no pointer arguments; a non-negative result is a new fd
        // that nothing else owns.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just returned by epoll_create1 and is owned here only.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        for &fd in fds {
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLET) as u32,
                u64: fd as u64,
            };
            // SAFETY: `ev` is a valid epoll_event for the duration of the call; both fds are
            // open (the caller keeps the rings, which own `fd`, alive as long as this).
            if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(ReaderWait { epoll })
    }

    /// Waits until a ring has been woken since the last call, or `timeout` passes (zero:
    /// only consumes a pending wakeup). `Ok(true)` when woken; a signal counts as a timeout.
    pub(crate) fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `events` is writable for the 4 entries passed as its length.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                ms,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(err);
        }
        Ok(n > 0)
    }
}
