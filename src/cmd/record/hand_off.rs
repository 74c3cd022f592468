//! The recorder's writer thread and the bounded hand-off to it: sealed chunks are compressed
//! and written there, so the thread that reads the rings never waits on zstd or the disk.
//!
//! The hand-off holds at most [`QUEUE_CHUNKS`] chunks. Were the writer to fall that far
//! behind (a stalled disk), the reading thread discards the chunk it cannot hand over rather
//! than stop reading (which would lose more in the kernel, uncounted by time); the chunk's
//! events become one `Lost` event in the file, and `record` says how many.

use std::io::{self, Write};
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
pub(super) struct WriterThread<W: Write> {
    queue: Option<SyncSender<SealedChunk>>,
    thread: Option<JoinHandle<io::Result<ChunkWriter<W>>>>,
    /// Chunks handed over and not yet written: the queue's and the one being written.
    unwritten: Arc<AtomicUsize>,
    bytes_written: Arc<AtomicU64>,
    peak_unwritten: usize,
}

impl<W: Write + Send + 'static> WriterThread<W> {
    pub(super) fn start(mut writer: ChunkWriter<W>) -> io::Result<Self> {
        let (queue, chunks) = sync_channel::<SealedChunk>(QUEUE_CHUNKS);
        let unwritten = Arc::new(AtomicUsize::new(0));
        let bytes_written = Arc::new(AtomicU64::new(writer.bytes_written()));
        let thread = std::thread::Builder::new()
            .name("kvmscope-writer".into())
            .spawn({
                let (unwritten, bytes_written) =
                    (Arc::clone(&unwritten), Arc::clone(&bytes_written));
                move || {
                    for chunk in chunks {
                        writer.write_chunk(&chunk)?;
                        unwritten.fetch_sub(1, Ordering::Relaxed);
                        bytes_written.store(writer.bytes_written(), Ordering::Relaxed);
                    }
                    Ok(writer)
                }
            })?;
        Ok(WriterThread {
            queue: Some(queue),
            thread: Some(thread),
            unwritten,
            bytes_written,
            peak_unwritten: 0,
        })
    }

    /// Queues `chunk` without waiting. An error is the writer's (it stopped on a write error).
    pub(super) fn hand_off(&mut self, chunk: SealedChunk) -> io::Result<HandOff> {
        let queue = self.queue.as_ref().expect("queue open until finish");
        // Counted before the send: the writer may take it off at once.
        let now = self.unwritten.fetch_add(1, Ordering::Relaxed) + 1;
        match queue.try_send(chunk) {
            Ok(()) => {
                self.peak_unwritten = self.peak_unwritten.max(now);
                Ok(HandOff::Queued)
            }
            Err(TrySendError::Full(chunk)) => {
                self.unwritten.fetch_sub(1, Ordering::Relaxed);
                Ok(HandOff::Full(chunk))
            }
            Err(TrySendError::Disconnected(_)) => Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("the writer thread stopped without an error"))),
        }
    }

    /// Hands over the last chunk (waiting for room: nothing is read any more), lets the
    /// writer drain the queue and returns it, with the peak of unwritten chunks that last one
    /// counts in (a recording short enough to be one chunk had one unwritten, not none).
    pub(super) fn finish(mut self, last: Option<SealedChunk>) -> io::Result<Drained<W>> {
        if let Some(chunk) = last {
            let queue = self.queue.as_ref().expect("queue open until finish");
            let now = self.unwritten.fetch_add(1, Ordering::Relaxed) + 1;
            self.peak_unwritten = self.peak_unwritten.max(now);
            if queue.send(chunk).is_err() {
                return self.drained();
            }
        }
        self.drained()
    }

    fn drained(&mut self) -> io::Result<Drained<W>> {
        Ok(Drained {
            writer: self.join()?,
            peak_unwritten: self.peak_unwritten,
        })
    }

    fn join(&mut self) -> io::Result<ChunkWriter<W>> {
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
}

/// The writer, every chunk written, after [`WriterThread::finish`].
pub(super) struct Drained<W: Write> {
    pub(super) writer: ChunkWriter<W>,
    /// Most chunks handed over and not yet written at once: the queue's (at most
    /// [`QUEUE_CHUNKS`]) and the one the writer was on, so at most `QUEUE_CHUNKS + 1`, and at
    /// least 1 once a chunk was handed over. Each holds its encoded events in memory until
    /// written.
    pub(super) peak_unwritten: usize,
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use model::trace_file::{ChunkBuilder, TraceHeader, WriterOptions};
    use model::{Event, ObservationEnd};

    use super::*;

    /// A sink whose writes wait while the test holds `gate`, and that says when one waits.
    #[derive(Clone, Default)]
    struct GatedSink {
        gate: Arc<Mutex<()>>,
        waiting: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Write for GatedSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.gate.try_lock().is_err() {
                self.waiting.store(true, Ordering::Release);
                drop(self.gate.lock());
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn unwritten_chunks_are_the_full_queue_and_the_one_being_written() {
        let sink = GatedSink::default();
        let header = TraceHeader::default();
        let writer = ChunkWriter::new(sink.clone(), &header, 1).unwrap();
        let held = sink.gate.lock().unwrap();
        let mut thread = WriterThread::start(writer).unwrap();
        let mut builder = ChunkBuilder::new(&header, WriterOptions::default());
        let mut chunk = |ts| {
            builder.push(&Event::ObservationEnd(ObservationEnd { ts }));
            builder.seal().unwrap()
        };
        assert!(matches!(
            thread.hand_off(chunk(0)).unwrap(),
            HandOff::Queued
        ));
        // The writer takes the first chunk off the queue and waits at the gate with it.
        while !sink.waiting.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        for ts in 1..=QUEUE_CHUNKS as u64 {
            assert!(matches!(
                thread.hand_off(chunk(ts)).unwrap(),
                HandOff::Queued
            ));
        }
        assert!(matches!(
            thread.hand_off(chunk(99)).unwrap(),
            HandOff::Full(_)
        ));
        drop(held);
        let drained = thread.finish(None).unwrap();
        assert_eq!(drained.peak_unwritten, QUEUE_CHUNKS + 1);
        assert_eq!(drained.writer.chunks(), QUEUE_CHUNKS as u64 + 1);
    }

    /// A recording that is one chunk, the last one `finish` hands over, had one unwritten.
    #[test]
    fn the_last_chunk_counts_in_the_peak() {
        let header = TraceHeader::default();
        let writer = ChunkWriter::new(Vec::new(), &header, 1).unwrap();
        let thread = WriterThread::start(writer).unwrap();
        let mut builder = ChunkBuilder::new(&header, WriterOptions::default());
        builder.push(&Event::ObservationEnd(ObservationEnd { ts: 1 }));
        let drained = thread.finish(builder.seal()).unwrap();
        assert_eq!(drained.peak_unwritten, 1);
        assert_eq!(drained.writer.chunks(), 1);
        let nothing = WriterThread::start(ChunkWriter::new(Vec::new(), &header, 1).unwrap())
            .unwrap()
            .finish(None)
            .unwrap();
        assert_eq!(nothing.peak_unwritten, 0);
    }
}
