//! Streaming trace reader. Recovers what can be recovered: a truncated tail or a damaged chunk
//! is counted in [`ReadStats`], not an error; only a file that is not a usable trace at all
//! (wrong magic, newer version, no header) is a [`TraceError`].

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use integer_encoding::VarInt;

use super::codec::ChunkDecoder;
use super::*;
use crate::Event;

/// Why a file cannot be read as a trace. Messages name the file and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot open {name}: no such file")]
    NotFound { name: String },
    #[error("cannot open {name}: permission denied (run as the user who recorded it, or as root)")]
    PermissionDenied { name: String },
    #[error("cannot read {name}: it is a directory, not a trace file")]
    IsDirectory { name: String },
    #[error("cannot open {name}: {source}")]
    Open { name: String, source: io::Error },
    #[error("cannot read {name}: the file is empty (nothing was recorded into it)")]
    Empty { name: String },
    #[error("cannot read {name}: not a kvmscope trace (wrong magic bytes)")]
    BadMagic { name: String },
    #[error(
        "cannot read {name}: written by a newer kvmscope (trace format version {found}; this \
         one reads up to {supported}); upgrade kvmscope"
    )]
    UnsupportedVersion {
        name: String,
        found: u16,
        supported: u16,
    },
    #[error("cannot read {name}: the file ends before its header is complete ({bytes} bytes)")]
    NoHeader { name: String, bytes: u64 },
    #[error("cannot read {name}: its header is damaged ({why})")]
    BadHeader { name: String, why: String },
    #[error("cannot read {name}: {source}")]
    Read { name: String, source: io::Error },
}

/// What the reader met on its way through the file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadStats {
    pub events: u64,
    /// Events chunks read and decoded.
    pub chunks: u64,
    /// Chunks skipped because a checksum failed or their content did not decode.
    pub corrupt_chunks: u64,
    /// Bytes in those chunks and in unreadable stretches between frames.
    pub corrupt_bytes: u64,
    /// Bytes after the last complete chunk (the recording was cut off there).
    pub truncated_bytes: u64,
    /// Intact chunks of a kind this version does not know (from a newer writer), skipped.
    pub unknown_chunks: u64,
    /// A trailer was found: the recorder stopped cleanly.
    pub finalised: bool,
    /// The reader reached the end of the file (a report limited by `--duration` may not).
    pub reached_end: bool,
}

impl ReadStats {
    /// One line per problem, for reports and stderr. Empty when the file was read cleanly.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.truncated_bytes > 0 {
            p.push(format!(
                "file is truncated: {} bytes after the last complete chunk were lost",
                self.truncated_bytes
            ));
        }
        if self.corrupt_chunks > 0 {
            p.push(format!(
                "skipped {} corrupt chunk(s) ({} bytes)",
                self.corrupt_chunks, self.corrupt_bytes
            ));
        }
        if self.unknown_chunks > 0 {
            p.push(format!(
                "skipped {} chunk(s) of an unknown kind",
                self.unknown_chunks
            ));
        }
        if self.reached_end && !self.finalised {
            p.push("recording was not finalised (no trailer): it was killed or crashed".into());
        }
        p
    }
}

/// Where an events chunk is, for seeking (replay).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// Byte offset of the chunk's frame in the file.
    pub offset: u64,
    pub events: u32,
    pub min_ts: u64,
    pub max_ts: u64,
}

struct Frame {
    kind: u8,
    offset: u64,
    payload: Vec<u8>,
}

/// Reads a trace from any `io::Read`. [`new`](Self::new) reads and checks the preamble and
/// header; then [`next_chunk`](Self::next_chunk) or [`events`](Self::events) yield events.
pub struct TraceReader<R> {
    inner: R,
    name: String,
    header: TraceHeader,
    trailer: Option<Trailer>,
    stats: ReadStats,
    offset: u64,
    done: bool,
    /// Reused across chunks: a zstd context is costly to create, and a fresh buffer per chunk
    /// pays its page faults again.
    chunk_decoder: ChunkDecompressor,
}

/// Decompresses events chunks into one reused buffer.
struct ChunkDecompressor {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    raw: Vec<u8>,
}

/// Opens a trace file by path, with errors that say what is wrong with the path.
pub fn open(path: &Path) -> Result<TraceReader<BufReader<File>>, TraceError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => TraceError::NotFound { name: name.clone() },
        io::ErrorKind::PermissionDenied => TraceError::PermissionDenied { name: name.clone() },
        _ => TraceError::Open {
            name: name.clone(),
            source: e,
        },
    })?;
    // Opening a directory read-only succeeds on Linux; only reading it fails (EISDIR).
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(TraceError::IsDirectory { name });
    }
    TraceReader::new(BufReader::with_capacity(1 << 20, file), name)
}

impl<R: Read> TraceReader<R> {
    /// Reads the preamble and header. `name` is what errors call the input (usually its path).
    pub fn new(mut inner: R, name: impl Into<String>) -> Result<Self, TraceError> {
        let name = name.into();
        let mut pre = [0u8; PREAMBLE_LEN];
        let n = read_full(&mut inner, &mut pre).map_err(|e| read_error(&name, e))?;
        if n == 0 {
            return Err(TraceError::Empty { name });
        }
        let m = n.min(MAGIC.len());
        if pre[..m] != MAGIC[..m] {
            return Err(TraceError::BadMagic { name });
        }
        if n < PREAMBLE_LEN {
            return Err(TraceError::NoHeader {
                name,
                bytes: n as u64,
            });
        }
        let version = u16::from_le_bytes([pre[8], pre[9]]);
        if version == 0 || version > FORMAT_VERSION {
            return Err(TraceError::UnsupportedVersion {
                name,
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let mut r = TraceReader {
            inner,
            name,
            header: TraceHeader::default(),
            trailer: None,
            stats: ReadStats::default(),
            offset: PREAMBLE_LEN as u64,
            done: false,
            chunk_decoder: ChunkDecompressor {
                zstd: None,
                raw: Vec::new(),
            },
        };
        let frame = r.next_frame()?;
        let bad = |r: &Self, why: &str| TraceError::BadHeader {
            name: r.name.clone(),
            why: why.into(),
        };
        let frame = match frame {
            None if r.stats.corrupt_chunks == 0 => {
                return Err(TraceError::NoHeader {
                    name: r.name.clone(),
                    bytes: r.offset + r.stats.truncated_bytes,
                })
            }
            None => return Err(bad(&r, "no intact chunk found")),
            Some(f) if f.kind != CHUNK_HEADER || r.stats.corrupt_chunks > 0 => {
                return Err(bad(&r, "checksum mismatch in the first chunk"))
            }
            Some(f) => f,
        };
        let json = zstd::bulk::decompress(&frame.payload, MAX_JSON)
            .map_err(|e| bad(&r, &format!("header does not decompress: {e}")))?;
        r.header = serde_json::from_slice(&json)
            .map_err(|e| bad(&r, &format!("header is not valid: {e}")))?;
        Ok(r)
    }

    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// The trailer, once the reader has reached it (None for an unfinalised file).
    pub fn trailer(&self) -> Option<&Trailer> {
        self.trailer.as_ref()
    }

    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends the next chunk's events to `out`. Returns `Ok(false)` at the end of the file.
    /// Damaged and truncated chunks are skipped and counted in [`stats`](Self::stats); only
    /// an I/O error from the underlying reader is an error.
    pub fn next_chunk(&mut self, out: &mut Vec<Event>) -> Result<bool, TraceError> {
        while let Some(frame) = self.next_frame()? {
            match frame.kind {
                CHUNK_EVENTS => match self.chunk_decoder.decode(&frame.payload, out) {
                    Ok(n) => {
                        self.stats.chunks += 1;
                        self.stats.events += n as u64;
                        return Ok(true);
                    }
                    Err(_) => {
                        self.stats.corrupt_chunks += 1;
                        self.stats.corrupt_bytes += (FRAME_HEADER_LEN + frame.payload.len()) as u64;
                    }
                },
                CHUNK_TRAILER => self.note_trailer(&frame.payload),
                // A second header carries nothing new; unknown kinds come from newer writers.
                CHUNK_HEADER => {}
                _ => self.stats.unknown_chunks += 1,
            }
        }
        Ok(false)
    }

    /// All remaining events, one by one.
    pub fn events(self) -> Events<R> {
        Events {
            reader: self,
            chunk: Vec::new().into_iter(),
        }
    }

    fn note_trailer(&mut self, payload: &[u8]) {
        match zstd::bulk::decompress(payload, MAX_JSON)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
        {
            Some(t) => {
                self.trailer = Some(t);
                self.stats.finalised = true;
            }
            None => {
                self.stats.corrupt_chunks += 1;
                self.stats.corrupt_bytes += (FRAME_HEADER_LEN + payload.len()) as u64;
            }
        }
    }

    /// The next frame whose checksums match; damage is counted and skipped.
    fn next_frame(&mut self) -> Result<Option<Frame>, TraceError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let mut hdr = [0u8; FRAME_HEADER_LEN];
            let n = self.read_full(&mut hdr)?;
            if n < FRAME_HEADER_LEN {
                self.stats.truncated_bytes += n as u64;
                self.done = true;
                self.stats.reached_end = true;
                return Ok(None);
            }
            // Resynchronise after damage: slide one byte at a time to the next valid header.
            let mut skipped = 0u64;
            while !header_valid(&hdr) {
                hdr.copy_within(1.., 0);
                if self.read_full(&mut hdr[FRAME_HEADER_LEN - 1..])? == 0 {
                    self.stats.corrupt_chunks += 1;
                    self.stats.corrupt_bytes += skipped + FRAME_HEADER_LEN as u64;
                    self.done = true;
                    self.stats.reached_end = true;
                    return Ok(None);
                }
                skipped += 1;
            }
            if skipped > 0 {
                self.stats.corrupt_chunks += 1;
                self.stats.corrupt_bytes += skipped;
            }
            let offset = self.offset - FRAME_HEADER_LEN as u64;
            let kind = hdr[4];
            let len = u32::from_le_bytes([hdr[5], hdr[6], hdr[7], hdr[8]]);
            let pcrc = u32::from_le_bytes([hdr[13], hdr[14], hdr[15], hdr[16]]);
            // Read through `take` rather than allocating `len` up front: a short file must not
            // cost a 64 MiB allocation.
            let mut payload = Vec::new();
            let got = (&mut self.inner)
                .take(len as u64)
                .read_to_end(&mut payload)
                .map_err(|e| read_error(&self.name, e))?;
            self.offset += got as u64;
            if got < len as usize {
                self.stats.truncated_bytes += (FRAME_HEADER_LEN + got) as u64;
                self.done = true;
                self.stats.reached_end = true;
                return Ok(None);
            }
            if !checksum_ok(&payload, pcrc) {
                self.stats.corrupt_chunks += 1;
                self.stats.corrupt_bytes += (FRAME_HEADER_LEN + payload.len()) as u64;
                continue;
            }
            return Ok(Some(Frame {
                kind,
                offset,
                payload,
            }));
        }
    }

    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, TraceError> {
        let n = read_full(&mut self.inner, buf).map_err(|e| read_error(&self.name, e))?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> TraceReader<R> {
    /// Where every intact events chunk after the current position is, without decompressing
    /// them; the read position and stats are left as they were. For seeking in replay.
    pub fn index(&mut self) -> Result<Vec<ChunkInfo>, TraceError> {
        let (stats, trailer) = (self.stats.clone(), self.trailer.clone());
        let index = self.scan()?;
        self.stats = stats;
        self.trailer = trailer;
        Ok(index)
    }

    /// Like [`index`](Self::index), but the stats keep what the walk met (truncation, damaged
    /// frames, the trailer), as a full read would: how replay learns a file's problems without
    /// decoding it. The read position is left as it was.
    pub fn scan(&mut self) -> Result<Vec<ChunkInfo>, TraceError> {
        let (offset, done) = (self.offset, self.done);
        let mut index = Vec::new();
        while let Some(frame) = self.next_frame()? {
            match frame.kind {
                CHUNK_EVENTS => match events_prefix(&frame.payload) {
                    Ok((count, min_ts, max_ts, _, _)) => index.push(ChunkInfo {
                        offset: frame.offset,
                        events: count,
                        min_ts,
                        max_ts,
                    }),
                    Err(()) => {
                        self.stats.corrupt_chunks += 1;
                        self.stats.corrupt_bytes += (FRAME_HEADER_LEN + frame.payload.len()) as u64;
                    }
                },
                CHUNK_TRAILER => self.note_trailer(&frame.payload),
                _ => {}
            }
        }
        self.seek_to(offset)?;
        self.done = done;
        Ok(index)
    }

    /// Decodes the one events chunk whose frame starts at `offset` (a [`ChunkInfo::offset`])
    /// into `out`, replacing what it held. `Ok(false)`, with `out` empty, if that chunk can
    /// no longer be read or decoded (counted in [`stats`](Self::stats)), so a chunk's events
    /// are never mistaken for the next one's.
    pub fn read_chunk_at(&mut self, offset: u64, out: &mut Vec<Event>) -> Result<bool, TraceError> {
        out.clear();
        self.seek_to(offset)?;
        let frame = match self.next_frame()? {
            Some(f) if f.offset == offset && f.kind == CHUNK_EVENTS => f,
            _ => return Ok(false),
        };
        match self.chunk_decoder.decode(&frame.payload, out) {
            Ok(_) => Ok(true),
            Err(_) => {
                self.stats.corrupt_chunks += 1;
                self.stats.corrupt_bytes += (FRAME_HEADER_LEN + frame.payload.len()) as u64;
                Ok(false)
            }
        }
    }

    /// Continue reading at `offset`, a [`ChunkInfo::offset`] from [`index`](Self::index).
    pub fn seek_to(&mut self, offset: u64) -> Result<(), TraceError> {
        self.inner
            .seek(SeekFrom::Start(offset))
            .map_err(|e| read_error(&self.name, e))?;
        self.offset = offset;
        self.done = false;
        Ok(())
    }
}

/// Iterator over a trace's events; see [`TraceReader::events`].
pub struct Events<R> {
    reader: TraceReader<R>,
    chunk: std::vec::IntoIter<Event>,
}

impl<R: Read> Events<R> {
    /// The reader, for its stats and trailer once iteration has finished.
    pub fn reader(&self) -> &TraceReader<R> {
        &self.reader
    }
}

impl<R: Read> Iterator for Events<R> {
    type Item = Result<Event, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(ev) = self.chunk.next() {
                return Some(Ok(ev));
            }
            let mut buf = Vec::new();
            match self.reader.next_chunk(&mut buf) {
                Ok(true) => self.chunk = buf.into_iter(),
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

fn header_valid(hdr: &[u8; FRAME_HEADER_LEN]) -> bool {
    hdr[..4] == SYNC
        && u32::from_le_bytes([hdr[5], hdr[6], hdr[7], hdr[8]]) <= MAX_PAYLOAD
        && checksum_ok(
            &hdr[..9],
            u32::from_le_bytes([hdr[9], hdr[10], hdr[11], hdr[12]]),
        )
}

/// CRC32 check. Fuzz builds (`--cfg fuzzing`, set by cargo-fuzz) accept any checksum so the
/// fuzzer reaches the decompressor and decoder behind it instead of stalling on CRCs.
fn checksum_ok(bytes: &[u8], expected: u32) -> bool {
    cfg!(fuzzing) || crc32fast::hash(bytes) == expected
}

type Prefix<'a> = (u32, u64, u64, u64, &'a [u8]);

fn events_prefix(payload: &[u8]) -> Result<Prefix<'_>, ()> {
    let mut pos = 0;
    let mut vals = [0u64; 4];
    for v in &mut vals {
        let (x, n) = u64::decode_var(&payload[pos..]).ok_or(())?;
        *v = x;
        pos += n;
    }
    let count = u32::try_from(vals[0]).map_err(|_| ())?;
    Ok((count, vals[1], vals[2], vals[3], &payload[pos..]))
}

impl ChunkDecompressor {
    /// Decompresses and decodes one events chunk, all or nothing.
    fn decode(&mut self, payload: &[u8], out: &mut Vec<Event>) -> Result<usize, ()> {
        let (count, _, _, raw_len, compressed) = events_prefix(payload)?;
        // Every event takes at least two bytes: a count beyond that is a lie, and checking it
        // first bounds what a crafted chunk can make us allocate.
        if raw_len > MAX_RAW || count as u64 > raw_len / 2 {
            return Err(());
        }
        let zstd = match &mut self.zstd {
            Some(z) => z,
            None => self
                .zstd
                .insert(zstd::bulk::Decompressor::new().map_err(|_| ())?),
        };
        self.raw.clear();
        self.raw.reserve(raw_len as usize);
        let n = zstd
            .decompress_to_buffer(compressed, &mut self.raw)
            .map_err(|_| ())?;
        if n as u64 != raw_len {
            return Err(());
        }
        let start = out.len();
        out.reserve(count as usize);
        let mut dec = ChunkDecoder::new(&self.raw).map_err(|_| ())?;
        let decoded = loop {
            // A chunk holding more events than it says is as corrupt as one holding fewer.
            let room = out.len() - start < count as usize;
            match dec.decode_into(out) {
                Ok(true) if room => {}
                Ok(false) if out.len() - start == count as usize => break Ok(count as usize),
                _ => break Err(()),
            }
        };
        if decoded.is_err() {
            out.truncate(start);
        }
        decoded
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn read_error(name: &str, e: io::Error) -> TraceError {
    if e.kind() == io::ErrorKind::IsADirectory {
        return TraceError::IsDirectory { name: name.into() };
    }
    TraceError::Read {
        name: name.into(),
        source: e,
    }
}
