//! The kvmscope trace file: what `record` writes and `report`/`replay`/`export` read.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! preamble   "KVMSCOPE" (8 bytes) | format version u16 | reserved u16 (0)
//! chunk*     "KVCK" | kind u8 | len u32 | crc32(sync..len) u32 | crc32(payload) u32 | payload
//! ```
//!
//! The first chunk is the header (kind 1, zstd(JSON [`TraceHeader`])); then events chunks (kind 2,
//! see [`codec`](self) for the event encoding), each `varint count | varint min_ts |
//! varint max_ts | varint raw_len | zstd(raw events)`, independently decodable; a clean stop
//! appends a trailer (kind 3, zstd(JSON [`Trailer`])).
//!
//! Why this shape: a recorder killed at any instant leaves complete chunks followed by at most
//! one partial one, which the reader reports as truncated bytes. The frame header has its own
//! checksum, so a damaged length is detected and the reader scans forward to the next valid
//! frame instead of giving up; a damaged payload is skipped by its (checked) length.
//!
//! Architecture invariant: pure. Readers and writers take any `io::Read`/`io::Write`; the only
//! place that opens a path is [`open`], which exists to turn OS errors into clear messages.

mod codec;
mod reader;
mod writer;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{HostInfo, TaskInfo};

pub use reader::{open, ChunkInfo, Events, ReadStats, TraceError, TraceReader};
pub use writer::{ChunkBuilder, ChunkWriter, Discarded, SealedChunk, TraceWriter, WriterOptions};

/// First bytes of every trace file.
pub const MAGIC: [u8; 8] = *b"KVMSCOPE";
/// The format version this code writes, and the newest it reads (it reads every older one).
///
/// A reader meets an event kind or flag it does not know only as a chunk that does not
/// decode, which it skips whole as corrupt, losing the chunk's other events with it. So every
/// new kind or flag bumps the version, and a reader refuses a newer file in one line rather
/// than drop chunks of it. Version 2 changes no encoding: it marks files whose chunks may hold
/// what version 1 gained without a bump (counter samples, affinity and unobserved records,
/// a task-info schedstat, a switch's `run_delay`), which the readers of before each addition
/// skip chunk by chunk; version 1 files still read. Version 3 adds a task-info's state at
/// tracking start (`TaskInfo::start`); files of versions 1 and 2 read without it. Version 4
/// adds task-group records (`Event::TaskGroup`: the autogroup or cgroup of each task the
/// source saw run); older files have none.
pub const FORMAT_VERSION: u16 = 4;

pub(crate) const PREAMBLE_LEN: usize = 12;
pub(crate) const SYNC: [u8; 4] = *b"KVCK";
pub(crate) const FRAME_HEADER_LEN: usize = 17;
/// Largest chunk payload a reader accepts; a bigger length is corruption.
pub(crate) const MAX_PAYLOAD: u32 = 64 << 20;
/// Largest decompressed events chunk a reader accepts (bounds memory on crafted input).
pub(crate) const MAX_RAW: u64 = 8 << 20;
/// Largest decompressed header or trailer a reader accepts.
pub(crate) const MAX_JSON: usize = 1 << 20;
/// Largest events chunk a writer makes: half of [`MAX_RAW`], as one event may overshoot.
pub(crate) const MAX_CHUNK_BYTES: usize = 4 << 20;

pub(crate) const CHUNK_HEADER: u8 = 1;
pub(crate) const CHUNK_EVENTS: u8 = 2;
pub(crate) const CHUNK_TRAILER: u8 = 3;

/// What a recording says about itself, stored in the first chunk.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct TraceHeader {
    pub format_version: u16,
    /// Host name, kernel release, CPU count, clock source and TSC rate.
    pub host: HostInfo,
    /// Processes tracked when recording began, with their vCPU ↔ thread map.
    pub processes: Vec<TrackedProcess>,
    /// The command line that made the recording.
    pub command_line: Vec<String>,
    /// `kvmscope <version>` of the writer.
    pub recorder: String,
    /// Wall-clock start, seconds since the Unix epoch (event timestamps are CLOCK_MONOTONIC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_unix_secs: Option<u64>,
}

/// A tracked VMM process.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TrackedProcess {
    pub pid: u32,
    pub vm: String,
    pub threads: Vec<TrackedThread>,
}

/// One thread of a tracked process: a vCPU when `vcpu` is set.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TrackedThread {
    pub tid: u32,
    pub comm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu: Option<u32>,
}

/// Written last on a clean stop (end of duration, Ctrl-C, SIGTERM).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Trailer {
    pub events: u64,
    /// Sum of `Lost` event counts: kernel events that never reached the recorder.
    pub lost: u64,
    pub start_ts: u64,
    pub end_ts: u64,
    pub chunks: u64,
    /// Every process seen during the recording (the header only has those known at start).
    pub processes: Vec<TrackedProcess>,
}

/// Entry points for the fuzz targets (`fuzz/`), not a stable API: they reach the event decoder
/// without the checksums in front of it, which random input rarely gets past.
#[doc(hidden)]
pub mod fuzzing {
    use crate::Event;

    /// Decodes one uncompressed events chunk; `None` if it is malformed.
    pub fn decode_raw_chunk(raw: &[u8]) -> Option<Vec<Event>> {
        let mut dec = super::codec::ChunkDecoder::new(raw).ok()?;
        let mut out = Vec::new();
        while let Some(e) = dec.next_event().ok()? {
            out.push(e);
        }
        Some(out)
    }

    /// Encodes events as one uncompressed chunk, for round-trip checks.
    pub fn encode_raw_chunk(events: &[Event]) -> Vec<u8> {
        let mut enc = super::codec::ChunkEncoder::default();
        for e in events {
            enc.push(e);
        }
        enc.take()
    }
}

/// Builds the vCPU ↔ thread map from the `TaskInfo` events a source emits. Grouped by
/// (pid, VM name): the bundled VMM runs several VMs in one process.
#[derive(Clone, Debug, Default)]
pub struct ProcessMap {
    by_vm: BTreeMap<(u32, String), TrackedProcess>,
}

impl ProcessMap {
    pub fn note(&mut self, info: &TaskInfo) {
        // A tid seen again under another VM (tid reuse) belongs to the new one only.
        for (key, p) in self.by_vm.iter_mut() {
            if key.0 != info.pid || key.1 != info.vm {
                p.threads.retain(|t| t.tid != info.tid);
            }
        }
        self.by_vm.retain(|_, p| !p.threads.is_empty());
        let p = self
            .by_vm
            .entry((info.pid, info.vm.clone()))
            .or_insert_with(|| TrackedProcess {
                pid: info.pid,
                vm: info.vm.clone(),
                threads: Vec::new(),
            });
        let thread = TrackedThread {
            tid: info.tid,
            comm: info.comm.to_string(),
            vcpu: info.vcpu,
        };
        match p.threads.iter_mut().find(|t| t.tid == info.tid) {
            Some(t) => *t = thread,
            None => p.threads.push(thread),
        }
    }

    pub fn processes(&self) -> Vec<TrackedProcess> {
        self.by_vm
            .values()
            .map(|p| {
                let mut p = p.clone();
                p.threads.sort_by_key(|t| (t.vcpu.is_none(), t.vcpu, t.tid));
                p
            })
            .collect()
    }
}
