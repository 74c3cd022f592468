//! Streaming trace writer: events are encoded into a chunk buffer and written as one
//! checksummed, compressed frame whenever the chunk is full or the caller ends it.

use std::io::{self, Write};

use integer_encoding::VarInt;

use super::codec::ChunkEncoder;
use super::*;
use crate::Event;

/// Knobs for [`TraceWriter`]; the defaults suit `record`.
#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    /// zstd level. 6 gains about 4% over zstd's default 3 on demo recordings for about
    /// 0.1 µs more CPU per event; 19 gains another 4% at ten times the CPU.
    pub zstd_level: i32,
    /// End a chunk once its encoded (uncompressed) events reach this many bytes (at most
    /// 4 MiB). Larger chunks compress better; a crash loses at most one.
    pub chunk_bytes: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            zstd_level: 6,
            chunk_bytes: 1 << 20,
        }
    }
}

/// Writes a trace to any `io::Write`. Call [`finish`](Self::finish) to append the trailer;
/// dropping the writer without it leaves a valid but unfinalised file (minus the open chunk).
pub struct TraceWriter<W: Write> {
    out: W,
    opts: WriterOptions,
    enc: ChunkEncoder,
    compressor: zstd::bulk::Compressor<'static>,
    processes: ProcessMap,
    bytes: u64,
    events: u64,
    lost: u64,
    start_ts: Option<u64>,
    end_ts: u64,
    chunks: u64,
}

impl<W: Write> TraceWriter<W> {
    /// Writes the preamble and the header chunk.
    pub fn new(out: W, header: &TraceHeader) -> io::Result<Self> {
        Self::with_options(out, header, WriterOptions::default())
    }

    pub fn with_options(mut out: W, header: &TraceHeader, opts: WriterOptions) -> io::Result<Self> {
        let mut preamble = [0u8; PREAMBLE_LEN];
        preamble[..8].copy_from_slice(&MAGIC);
        preamble[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.write_all(&preamble)?;
        let mut header = header.clone();
        header.format_version = FORMAT_VERSION;
        let json = serde_json::to_vec(&header).map_err(io::Error::other)?;
        // Compressed like everything else: on a short recording the JSON is a noticeable
        // share of the file.
        let json = zstd::bulk::compress(&json, opts.zstd_level)?;
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
                });
            }
        }
        let mut w = TraceWriter {
            out,
            opts,
            enc: ChunkEncoder::default(),
            compressor: zstd::bulk::Compressor::new(opts.zstd_level)?,
            processes,
            bytes: PREAMBLE_LEN as u64,
            events: 0,
            lost: 0,
            start_ts: None,
            end_ts: 0,
            chunks: 0,
        };
        w.write_frame(CHUNK_HEADER, &json)?;
        w.out.flush()?;
        Ok(w)
    }

    /// Adds one event; writes a chunk when the current one is full.
    pub fn write(&mut self, ev: &Event) -> io::Result<()> {
        let ts = ev.ts();
        self.start_ts = Some(self.start_ts.map_or(ts, |s| s.min(ts)));
        self.end_ts = self.end_ts.max(ts);
        self.events += 1;
        match ev {
            Event::Lost(l) => self.lost = self.lost.saturating_add(l.count),
            Event::TaskInfo(t) => self.processes.note(t),
            _ => {}
        }
        self.enc.push(ev);
        if self.enc.len() >= self.opts.chunk_bytes.min(MAX_CHUNK_BYTES) {
            self.end_chunk()?;
        }
        Ok(())
    }

    /// Compresses and writes the open chunk (if any) and flushes, so everything written so
    /// far survives a crash. `record` calls this on a timer to bound what a crash can lose.
    pub fn end_chunk(&mut self) -> io::Result<()> {
        if self.enc.events() == 0 {
            return Ok(());
        }
        let count = self.enc.events();
        let (min_ts, max_ts) = self.enc.ts_range();
        let raw = self.enc.take();
        let compressed = self.compressor.compress(&raw)?;
        let mut payload = Vec::with_capacity(compressed.len() + 40);
        for v in [count as u64, min_ts, max_ts, raw.len() as u64] {
            let mut tmp = [0u8; 10];
            let n = v.encode_var(&mut tmp);
            payload.extend_from_slice(&tmp[..n]);
        }
        payload.extend_from_slice(&compressed);
        self.write_frame(CHUNK_EVENTS, &payload)?;
        self.chunks += 1;
        self.out.flush()
    }

    /// Ends the last chunk, writes the trailer and flushes. Returns the inner writer and what
    /// the trailer says.
    pub fn finish(mut self) -> io::Result<(W, Trailer)> {
        self.end_chunk()?;
        let trailer = self.trailer();
        let json = serde_json::to_vec(&trailer).map_err(io::Error::other)?;
        let json = self.compressor.compress(&json)?;
        self.write_frame(CHUNK_TRAILER, &json)?;
        self.out.flush()?;
        Ok((self.out, trailer))
    }

    /// What the trailer would say now.
    pub fn trailer(&self) -> Trailer {
        Trailer {
            events: self.events,
            lost: self.lost,
            start_ts: self.start_ts.unwrap_or(0),
            end_ts: self.end_ts,
            chunks: self.chunks,
            processes: self.processes.processes(),
        }
    }

    /// Bytes written to the output so far (excludes the open chunk).
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn lost(&self) -> u64 {
        self.lost
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
