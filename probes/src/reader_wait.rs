//! How the reader sleeps between drains: an edge-triggered epoll set over the ring buffers.
//!
//! A ring buffer's fd polls readable whenever any record waits, so a level-triggered wait
//! returns at once in a busy stream and the reader spins, one drain per handful of records.
//! Edge-triggered, the wait ends only when the BPF side wakes the reader (`events` once per
//! `wakeup_bytes`, a switch ring once `wake_records` wait: `ebpf/kvmscope.bpf.c`) or when the
//! timeout passes, so the reader drains in batches whose size the kernel side chooses.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{epoll, Timespec};
use rustix::io::Errno;

/// An epoll instance watching ring-buffer fds for wakeups, edge-triggered.
pub(crate) struct ReaderWait {
    epoll: OwnedFd,
}

impl ReaderWait {
    /// The caller keeps the rings behind `fds` alive as long as this.
    pub(crate) fn new(fds: &[BorrowedFd<'_>]) -> io::Result<ReaderWait> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        for &fd in fds {
            epoll::add(
                &epoll,
                fd,
                epoll::EventData::new_u64(0),
                epoll::EventFlags::IN | epoll::EventFlags::ET,
            )?;
        }
        Ok(ReaderWait { epoll })
    }

    /// Waits until a ring has been woken since the last call, or `timeout` passes (zero:
    /// only consumes a pending wakeup). `Ok(true)` when woken; a signal counts as a timeout.
    pub(crate) fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut events = [MaybeUninit::<epoll::Event>::uninit(); 4];
        // Past Timespec's range (never in practice): wait without a bound.
        let timeout = Timespec::try_from(timeout).ok();
        match epoll::wait(&self.epoll, &mut events, timeout.as_ref()) {
            Ok((woken, _)) => Ok(!woken.is_empty()),
            Err(Errno::INTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
