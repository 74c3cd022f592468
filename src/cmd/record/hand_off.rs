//! The recorder's writer thread and the bounded hand-off to it: sealed chunks are compressed
//! and written there, so the thread that reads the rings never waits on zstd or the disk.
//!
//! The hand-off holds at most [`QUEUE_CHUNKS`] chunks. Were the writer to fall that far
//! behind (a stalled disk), the reading thread discards the chunk it cannot hand over rather
//! than stop reading (which would lose more in the kernel, uncounted by time); the chunk's
//! events become one `Lost` event in the file, and `record` says how many.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use model::trace_file::{ChunkWriter, SealedChunk};

/// Chunks the hand-off holds: each at most about 1 MiB encoded (`WriterOptions::chunk_bytes`),
/// so at most about 64 MiB. At a million events a second a chunk fills about every 100 ms
/// (~10 encoded bytes an event), so this is seconds of slack for a writer that zstd level 3
/// keeps well ahead.
pub(super) const QUEUE_CHUNKS: usize = 64;

/// What happened to a chunk handed over.
pub(super) enum HandOff {
    Queued,
    /// The queue was full: the chunk is given back, to be discarded and counted.
    Full(SealedChunk),
}

/// The writer thread and its queue.
pub(super) struct WriterThread {
    queue: Option<SyncSender<SealedChunk>>,
    thread: Option<JoinHandle<io::Result<ChunkWriter<File>>>>,
    queued: Arc<AtomicUsize>,
    bytes_written: Arc<AtomicU64>,
    peak_queued: usize,
}

impl WriterThread {
    pub(super) fn start(mut writer: ChunkWriter<File>) -> io::Result<Self> {
        let (queue, chunks) = sync_channel::<SealedChunk>(QUEUE_CHUNKS);
        let queued = Arc::new(AtomicUsize::new(0));
        let bytes_written = Arc::new(AtomicU64::new(writer.bytes_written()));
        let thread = std::thread::Builder::new()
            .name("kvmscope-writer".into())
            .spawn({
                let (queued, bytes_written) = (Arc::clone(&queued), Arc::clone(&bytes_written));
                move || {
                    for chunk in chunks {
                        writer.write_chunk(&chunk)?;
                        queued.fetch_sub(1, Ordering::Relaxed);
                        bytes_written.store(writer.bytes_written(), Ordering::Relaxed);
                    }
                    Ok(writer)
                }
            })?;
        Ok(WriterThread {
            queue: Some(queue),
            thread: Some(thread),
            queued,
            bytes_written,
            peak_queued: 0,
        })
    }

    /// Queues `chunk` without waiting. An error is the writer's (it stopped on a write error).
    pub(super) fn hand_off(&mut self, chunk: SealedChunk) -> io::Result<HandOff> {
        let queue = self.queue.as_ref().expect("queue open until finish");
        // Counted before the send: the writer may take it off at once.
        let now = self.queued.fetch_add(1, Ordering::Relaxed) + 1;
        match queue.try_send(chunk) {
            Ok(()) => {
                self.peak_queued = self.peak_queued.max(now);
                Ok(HandOff::Queued)
            }
            Err(TrySendError::Full(chunk)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                Ok(HandOff::Full(chunk))
            }
            Err(TrySendError::Disconnected(_)) => Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("the writer thread stopped without an error"))),
        }
    }

    /// Hands over the last chunk (waiting for room: nothing is read any more), lets the
    /// writer drain the queue and returns it.
    pub(super) fn finish(mut self, last: Option<SealedChunk>) -> io::Result<ChunkWriter<File>> {
        if let Some(chunk) = last {
            let queue = self.queue.as_ref().expect("queue open until finish");
            self.queued.fetch_add(1, Ordering::Relaxed);
            if queue.send(chunk).is_err() {
                return self.join();
            }
        }
        self.join()
    }

    fn join(&mut self) -> io::Result<ChunkWriter<File>> {
        self.queue = None;
        let thread = self.thread.take().expect("joined once");
        thread
            .join()
            .map_err(|_| io::Error::other("the writer thread panicked"))?
    }

    /// Bytes in the file so far.
    pub(super) fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    /// Most chunks waiting at once, of [`QUEUE_CHUNKS`].
    pub(super) fn peak_queued(&self) -> usize {
        self.peak_queued
    }
}
