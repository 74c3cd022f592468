//! Streaming trace writer, in two halves that can run on two threads: a [`ChunkBuilder`]
//! encodes events into chunks (no compression, no I/O) and hands out [`SealedChunk`]s; a
//! [`ChunkWriter`] compresses each into one checksummed frame and writes it. [`TraceWriter`]
//! is both on one thread.

use std::io::{self, Write};

use integer_encoding::VarInt;

use super::codec::ChunkEncoder;
use super::*;
use crate::{Event, Lost};

/// Knobs for [`TraceWriter`]; the defaults suit `record`.
#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    /// zstd level. On the 60 s switch storm of `benches/record_storm.rs` (54 M events), level
    /// 3 wrote 3.80 bytes/event against level 6's 3.52 (8% more) for 0.085 s of encode and
    /// compress CPU per million events against 0.150 (43% less); `record` takes the CPU.
    pub zstd_level: i32,
    /// End a chunk once its encoded (uncompressed) events reach this many bytes (at most
    /// 4 MiB). Larger chunks compress better; a crash loses at most one.
    pub chunk_bytes: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            zstd_level: 3,
            chunk_bytes: 1 << 20,
        }
    }
}

/// One chunk's encoded events, ready to compress and write.
pub struct SealedChunk {
    events: u32,
    /// Its `Lost` events and the sum of their counts (for [`ChunkBuilder::discard`]).
    lost_records: u32,
    lost: u64,
    /// Its bookkeeping records ([`kept_through_discard`]), for [`ChunkBuilder::discard`].
    records: Vec<Event>,
    min_ts: u64,
    max_ts: u64,
    raw: Vec<u8>,
}

impl SealedChunk {
    pub fn events(&self) -> u32 {
        self.events
    }

    /// Encoded (uncompressed) bytes: what the chunk holds in memory until written.
    pub fn raw_bytes(&self) -> usize {
        self.raw.len()
    }
}

/// Encodes events into chunks and keeps what the trailer says of them.
pub struct ChunkBuilder {
    enc: ChunkEncoder,
    chunk_bytes: usize,
    processes: ProcessMap,
    events: u64,
    lost: u64,
    start_ts: Option<u64>,
    end_ts: u64,
    /// The open chunk's `Lost` events and the sum of their counts.
    chunk_lost_records: u32,
    chunk_lost: u64,
    /// The open chunk's bookkeeping records ([`kept_through_discard`]).
    chunk_records: Vec<Event>,
}

/// What [`ChunkBuilder::discard`] did with a chunk.
pub struct Discarded {
    /// The chunk's events that are gone: counted in the `Lost` event that stands for them.
    /// Neither its `Lost` events (their counts move into that one) nor its bookkeeping
    /// records (written again) are among them.
    pub events: u64,
    /// Chunks the records and the `Lost` event filled, to write in this order.
    pub filled: Vec<SealedChunk>,
}

/// Whether `ev` outlives a discarded chunk. Bookkeeping records say which threads and VMs
/// exist, where a thread may run and what the source could not observe: a reader without
/// them would not know the threads of every later event, so a discarded chunk hands them on
/// to the next one, and only its events are lost (and counted).
fn kept_through_discard(ev: &Event) -> bool {
    match ev {
        Event::TaskInfo(_)
        | Event::Affinity(_)
        | Event::TaskGroup(_)
        | Event::VmEnded(_)
        | Event::Unobserved(_)
        | Event::ObservationEnd(_) => true,
        // `Lost` counts move into the discard's own `Lost` event.
        Event::Lost(_)
        | Event::SchedSwitch(_)
        | Event::Wakeup(_)
        | Event::Migrate(_)
        | Event::TaskExit(_)
        | Event::KvmEntry(_)
        | Event::KvmExit(_)
        | Event::UserspaceExit(_)
        | Event::Pio(_)
        | Event::CrossCall(_)
        | Event::GuestGap(_)
        | Event::CounterSample(_) => false,
    }
}

impl ChunkBuilder {
    /// `header`'s processes seed the trailer's (which adds every thread seen later).
    pub fn new(header: &TraceHeader, opts: WriterOptions) -> Self {
        let mut processes = ProcessMap::default();
        for p in &header.processes {
            for t in &p.threads {
                processes.note(&crate::TaskInfo {
                    ts: 0,
                    tid: t.tid,
                    pid: p.pid,
                    comm: crate::Comm::new(&t.comm),
                    vm: p.vm.clone(),
                    vcpu: t.vcpu,
                    nice: 0,
                    schedstat: None,
                    start: None,
                });
            }
        }
        ChunkBuilder {
            enc: ChunkEncoder::default(),
            chunk_bytes: opts.chunk_bytes.min(MAX_CHUNK_BYTES),
            processes,
            events: 0,
            lost: 0,
            start_ts: None,
            end_ts: 0,
            chunk_lost_records: 0,
            chunk_lost: 0,
            chunk_records: Vec::new(),
        }
    }

    /// Adds one event; returns the chunk it filled, if it filled one.
    pub fn push(&mut self, ev: &Event) -> Option<SealedChunk> {
        let ts = ev.ts();
        self.start_ts = Some(self.start_ts.map_or(ts, |s| s.min(ts)));
        self.end_ts = self.end_ts.max(ts);
        self.events += 1;
        match ev {
            Event::Lost(l) => {
                self.lost = self.lost.saturating_add(l.count);
                self.chunk_lost = self.chunk_lost.saturating_add(l.count);
                self.chunk_lost_records += 1;
            }
            Event::TaskInfo(t) => self.processes.note(t),
            _ => {}
        }
        if kept_through_discard(ev) {
            self.chunk_records.push(ev.clone());
        }
        self.enc.push(ev);
        (self.enc.len() >= self.chunk_bytes)
            .then(|| self.seal())
            .flatten()
    }

    /// Ends the open chunk; `None` if it holds no events.
    pub fn seal(&mut self) -> Option<SealedChunk> {
        if self.enc.events() == 0 {
            return None;
        }
        let events = self.enc.events();
        let (min_ts, max_ts) = self.enc.ts_range();
        Some(SealedChunk {
            events,
            lost_records: std::mem::take(&mut self.chunk_lost_records),
            lost: std::mem::take(&mut self.chunk_lost),
            records: std::mem::take(&mut self.chunk_records),
            min_ts,
            max_ts,
            raw: self.enc.take(),
        })
    }

    /// A chunk that will never be written (its writer could not keep up): its bookkeeping
    /// records ([`kept_through_discard`]) go into the open chunk again, and one `Lost` event
    /// (no CPU) stands for the rest: its count is the chunk's other events plus what its own
    /// `Lost` events counted, so the file's `Lost` events still add up to the trailer's `lost`.
    /// The records keep their times: a reader never saw the discarded chunk's events, so they
    /// still come after everything it did see, never late.
    pub fn discard(&mut self, chunk: SealedChunk) -> Discarded {
        self.events -= u64::from(chunk.events);
        self.lost -= chunk.lost;
        let events = u64::from(chunk.events - chunk.lost_records) - chunk.records.len() as u64;
        let mut filled = Vec::new();
        for record in &chunk.records {
            filled.extend(self.push(record));
        }
        filled.extend(self.push(&Event::Lost(Lost {
            ts: chunk.max_ts,
            cpu: u32::MAX,
            count: events + chunk.lost,
        })));
        Discarded { events, filled }
    }

    /// What the trailer says, with `chunks` written.
    pub fn trailer(&self, chunks: u64) -> Trailer {
        Trailer {
            events: self.events,
            lost: self.lost,
            start_ts: self.start_ts.unwrap_or(0),
            end_ts: self.end_ts,
            chunks,
            processes: self.processes.processes(),
        }
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn lost(&self) -> u64 {
        self.lost
    }
}

/// Compresses sealed chunks and writes them as frames, after the preamble and header.
pub struct ChunkWriter<W: Write> {
    out: W,
    compressor: zstd::bulk::Compressor<'static>,
    bytes: u64,
    chunks: u64,
}

impl<W: Write> ChunkWriter<W> {
    /// Writes the preamble and the header chunk.
    pub fn new(mut out: W, header: &TraceHeader, zstd_level: i32) -> io::Result<Self> {
        let mut preamble = [0u8; PREAMBLE_LEN];
        preamble[..8].copy_from_slice(&MAGIC);
        preamble[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.write_all(&preamble)?;
        let mut header = header.clone();
        header.format_version = FORMAT_VERSION;
        let json = serde_json::to_vec(&header).map_err(io::Error::other)?;
        let mut w = ChunkWriter {
            out,
            compressor: zstd::bulk::Compressor::new(zstd_level)?,
            bytes: PREAMBLE_LEN as u64,
            chunks: 0,
        };
        // Compressed like everything else: on a short recording the JSON is a noticeable
        // share of the file.
        let json = w.compressor.compress(&json)?;
        w.write_frame(CHUNK_HEADER, &json)?;
        w.out.flush()?;
        Ok(w)
    }

    /// Compresses and writes `chunk` and flushes, so it survives a crash.
    pub fn write_chunk(&mut self, chunk: &SealedChunk) -> io::Result<()> {
        let compressed = self.compressor.compress(&chunk.raw)?;
        let mut payload = Vec::with_capacity(compressed.len() + 40);
        for v in [
            u64::from(chunk.events),
            chunk.min_ts,
            chunk.max_ts,
            chunk.raw.len() as u64,
        ] {
            let mut tmp = [0u8; 10];
            let n = v.encode_var(&mut tmp);
            payload.extend_from_slice(&tmp[..n]);
        }
        payload.extend_from_slice(&compressed);
        self.write_frame(CHUNK_EVENTS, &payload)?;
        self.chunks += 1;
        self.out.flush()
    }

    /// Writes `trailer` (its `chunks` set to the chunks written here) and flushes. Returns
    /// the inner writer and the trailer.
    pub fn finish(mut self, mut trailer: Trailer) -> io::Result<(W, Trailer)> {
        trailer.chunks = self.chunks;
        let json = serde_json::to_vec(&trailer).map_err(io::Error::other)?;
        let json = self.compressor.compress(&json)?;
        self.write_frame(CHUNK_TRAILER, &json)?;
        self.out.flush()?;
        Ok((self.out, trailer))
    }

    /// Bytes written to the output so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    fn write_frame(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l <= MAX_PAYLOAD)
            .ok_or_else(|| io::Error::other("trace chunk larger than the format allows"))?;
        let mut hdr = [0u8; FRAME_HEADER_LEN];
        hdr[..4].copy_from_slice(&SYNC);
        hdr[4] = kind;
        hdr[5..9].copy_from_slice(&len.to_le_bytes());
        let hcrc = crc32fast::hash(&hdr[..9]);
        hdr[9..13].copy_from_slice(&hcrc.to_le_bytes());
        hdr[13..17].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        // One write per frame where the writer is unbuffered: a crash then leaves at most
        // this frame partial.
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
        frame.extend_from_slice(&hdr);
        frame.extend_from_slice(payload);
        self.out.write_all(&frame)?;
        self.bytes += frame.len() as u64;
        Ok(())
    }
}

/// Writes a trace to any `io::Write` on the caller's thread. Call [`finish`](Self::finish) to
/// append the trailer; dropping the writer without it leaves a valid but unfinalised file
/// (minus the open chunk).
pub struct TraceWriter<W: Write> {
    builder: ChunkBuilder,
    out: ChunkWriter<W>,
}

impl<W: Write> TraceWriter<W> {
    /// Writes the preamble and the header chunk.
    pub fn new(out: W, header: &TraceHeader) -> io::Result<Self> {
        Self::with_options(out, header, WriterOptions::default())
    }

    pub fn with_options(out: W, header: &TraceHeader, opts: WriterOptions) -> io::Result<Self> {
        Ok(TraceWriter {
            builder: ChunkBuilder::new(header, opts),
            out: ChunkWriter::new(out, header, opts.zstd_level)?,
        })
    }

    /// Adds one event; writes a chunk when the current one is full.
    pub fn write(&mut self, ev: &Event) -> io::Result<()> {
        match self.builder.push(ev) {
            Some(chunk) => self.out.write_chunk(&chunk),
            None => Ok(()),
        }
    }

    /// Compresses and writes the open chunk (if any) and flushes, so everything written so
    /// far survives a crash.
    pub fn end_chunk(&mut self) -> io::Result<()> {
        match self.builder.seal() {
            Some(chunk) => self.out.write_chunk(&chunk),
            None => Ok(()),
        }
    }

    /// Ends the last chunk, writes the trailer and flushes. Returns the inner writer and what
    /// the trailer says.
    pub fn finish(mut self) -> io::Result<(W, Trailer)> {
        self.end_chunk()?;
        let trailer = self.trailer();
        self.out.finish(trailer)
    }

    /// What the trailer would say now.
    pub fn trailer(&self) -> Trailer {
        self.builder.trailer(self.out.chunks())
    }

    /// Bytes written to the output so far (excludes the open chunk).
    pub fn bytes_written(&self) -> u64 {
        self.out.bytes_written()
    }

    pub fn events(&self) -> u64 {
        self.builder.events()
    }

    pub fn lost(&self) -> u64 {
        self.builder.lost()
    }

    pub fn get_ref(&self) -> &W {
        self.out.get_ref()
    }
}
