//! One replayed event stream and the model folded from it up to the cursor, in bounded memory:
//! the stream is read a chunk at a time (a trace file's own events chunks, or fixed slices of
//! an in-memory run), and the model is cloned at chunk boundaries as it passes them, so a
//! backward seek restarts from the nearest checkpoint instead of from the first event.
//!
//! The rule that makes a seek land on exactly the state of a straight fold: folding to time
//! `t` folds the longest prefix of the stream whose events are all at or before `t`. That
//! prefix grows with `t` and does not depend on how the cursor got there, and the checkpoint
//! after chunk `k` lies on it exactly when every event of chunks `0..k` is at or before `t`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;

use model::trace_file::{ChunkInfo, TraceError, TraceReader};
use model::{Event, Model, ModelConfig, RETIRE_ENDED_AFTER_NS};

/// Checkpoints kept at most; past that, every other one is dropped and the spacing doubles,
/// so a file of any length costs the same memory and a seek refolds at most
/// `chunks / MAX_CHECKPOINTS` chunks.
pub const MAX_CHECKPOINTS: usize = 64;
/// Events per chunk of an in-memory stream.
const MEMORY_CHUNK: usize = 1 << 16;

/// Where a track's events come from, one chunk at a time.
enum Store {
    Memory(Vec<Event>),
    File {
        reader: Box<TraceReader<BufReader<File>>>,
        index: Vec<ChunkInfo>,
        /// The chunk `buf` holds.
        loaded: Option<usize>,
        buf: Vec<Event>,
    },
}

impl Store {
    /// The events of chunk `i` (empty if a file's chunk turned out unreadable: counted by the
    /// reader, shown with the file's problems).
    fn chunk(&mut self, i: usize) -> Result<&[Event], TraceError> {
        match self {
            Store::Memory(events) => {
                let start = i * MEMORY_CHUNK;
                Ok(&events[start..(start + MEMORY_CHUNK).min(events.len())])
            }
            Store::File {
                reader,
                index,
                loaded,
                buf,
            } => {
                if *loaded != Some(i) {
                    *loaded = None;
                    reader.read_chunk_at(index[i].offset, buf)?;
                    *loaded = Some(i);
                }
                Ok(buf)
            }
        }
    }
}

/// One event stream, the model folded from it and the checkpoints taken on the way.
pub struct Track {
    store: Store,
    /// `prefix_max[i]`: the latest timestamp in chunks `0..=i`.
    prefix_max: Vec<u64>,
    first_ts: u64,
    /// The chunk being folded, and how many of its events are in.
    chunk: usize,
    pos: usize,
    model: Model,
    finished: bool,
    /// The model after chunks `0..k`, by `k`; `k` is a multiple of `every`.
    checkpoints: BTreeMap<usize, Model>,
    every: usize,
    /// The model's reorder window: the model holds that much of the newest events back, so
    /// folding to `t` reads this far past it and the model shows `t`, not `t` - window.
    read_ahead: u64,
}

impl Track {
    /// A stream held in memory (a simulated run, tests).
    pub fn from_events(events: Vec<Event>) -> Self {
        let mut prefix_max = Vec::new();
        let mut max = 0;
        for chunk in events.chunks(MEMORY_CHUNK) {
            max = chunk.iter().map(Event::ts).fold(max, u64::max);
            prefix_max.push(max);
        }
        let first_ts = events.iter().map(Event::ts).min().unwrap_or(0);
        Track::new(Store::Memory(events), prefix_max, first_ts)
    }

    /// A trace file, read through its chunk `index` (from [`TraceReader::scan`]): only one
    /// chunk's events are in memory.
    pub fn from_file(reader: TraceReader<BufReader<File>>, index: Vec<ChunkInfo>) -> Self {
        let mut prefix_max = Vec::with_capacity(index.len());
        let mut max = 0;
        for c in &index {
            max = max.max(c.max_ts);
            prefix_max.push(max);
        }
        let first_ts = index.iter().map(|c| c.min_ts).min().unwrap_or(0);
        let store = Store::File {
            reader: Box::new(reader),
            index,
            loaded: None,
            buf: Vec::new(),
        };
        Track::new(store, prefix_max, first_ts)
    }

    fn new(store: Store, prefix_max: Vec<u64>, first_ts: u64) -> Self {
        // The report's reorder window, not the live dashboard's: a replay is not waiting on a
        // kernel, and with the same window it folds the file as `report`, `export` and
        // `simulate` do (with the live 2 ms, 212 events of a 20 s demo recording came late
        // against report's 152, and were folded in another order).
        // A replayed thread leaves the model a minute after it ended, as live and in the
        // exporter: a recording of VMs coming and going for hours then holds the threads alive
        // at once (and the last minute's ended ones), not every thread ever seen. The views
        // key vCPUs by tid, never by slot, so reused slots do not confuse them; the ended
        // VM's totals stay in its row.
        let config = ModelConfig {
            retire_ended_after_ns: Some(RETIRE_ENDED_AFTER_NS),
            ..ModelConfig::report()
        };
        let read_ahead = config.reorder_window_ns;
        let model = Model::new(config);
        Track {
            store,
            prefix_max,
            first_ts,
            chunk: 0,
            pos: 0,
            checkpoints: BTreeMap::from([(0, model.clone())]),
            model,
            finished: false,
            every: 1,
            read_ahead,
        }
    }

    pub fn first_ts(&self) -> u64 {
        self.first_ts
    }

    pub fn last_ts(&self) -> u64 {
        self.prefix_max.last().copied().unwrap_or(0)
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Every event has been folded.
    pub fn done(&self) -> bool {
        self.chunk == self.prefix_max.len()
    }

    /// Checkpoints held now (at most [`MAX_CHECKPOINTS`]).
    pub fn checkpoints(&self) -> usize {
        self.checkpoints.len()
    }

    /// Decoded events held in memory for a file (one chunk's), whatever the file's length.
    pub fn events_held(&self) -> usize {
        match &self.store {
            Store::Memory(events) => events.len(),
            Store::File { buf, .. } => buf.len(),
        }
    }

    /// Fold forward until the model shows `ts`: the stream's events up to `ts` plus the
    /// model's reorder window (inclusive).
    pub fn fold_to(&mut self, ts: u64) -> Result<(), TraceError> {
        self.read_through(ts.saturating_add(self.read_ahead))
    }

    fn read_through(&mut self, ts: u64) -> Result<(), TraceError> {
        while self.chunk < self.prefix_max.len() {
            let events = self.store.chunk(self.chunk)?;
            let take = events[self.pos..]
                .iter()
                .take_while(|e| e.ts() <= ts)
                .count();
            let whole = self.pos + take == events.len();
            self.model.ingest_batch(&events[self.pos..self.pos + take]);
            self.pos += take;
            if !whole {
                return Ok(());
            }
            self.chunk += 1;
            self.pos = 0;
            self.checkpoint();
        }
        if !self.finished {
            self.model.finish();
            self.finished = true;
        }
        Ok(())
    }

    /// Back to `ts`: restart from the last checkpoint on the way to it, then fold forward.
    pub fn seek_back(&mut self, ts: u64) -> Result<(), TraceError> {
        let ts = ts.saturating_add(self.read_ahead);
        // Chunks wholly at or before `ts`: a checkpoint after them is on the straight path.
        let whole = self.prefix_max.partition_point(|&m| m <= ts);
        let (&k, model) = self
            .checkpoints
            .range(..=whole)
            .next_back()
            .expect("the checkpoint at 0 is never dropped");
        self.model = model.clone();
        self.chunk = k;
        self.pos = 0;
        self.finished = false;
        self.read_through(ts)
    }

    fn checkpoint(&mut self) {
        let k = self.chunk;
        if k % self.every != 0 || self.checkpoints.contains_key(&k) {
            return;
        }
        self.checkpoints.insert(k, self.model.clone());
        if self.checkpoints.len() > MAX_CHECKPOINTS {
            self.every *= 2;
            let every = self.every;
            self.checkpoints.retain(|k, _| k % every == 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use model::trace_file::{TraceHeader, TraceWriter};

    use super::*;

    const S: u64 = 1_000_000_000;

    /// `seconds` of the demo stream written with a chunk every 100 ms of event time.
    fn recording(name: &str, seconds: f64) -> (PathBuf, Vec<Event>) {
        let events = model::synth::demo_stream(seconds);
        let path = std::env::temp_dir().join(format!(
            "kvmscope-replay-track-{}-{name}.kvms",
            std::process::id()
        ));
        let file = File::create(&path).unwrap();
        let mut w = TraceWriter::new(file, &TraceHeader::default()).unwrap();
        let mut chunk_start = events[0].ts();
        for e in &events {
            if e.ts() >= chunk_start + S / 10 {
                w.end_chunk().unwrap();
                chunk_start = e.ts();
            }
            w.write(e).unwrap();
        }
        w.finish().unwrap();
        (path, events)
    }

    fn file_track(path: &std::path::Path) -> Track {
        let mut reader = model::trace_file::open(path).unwrap();
        let index = reader.scan().unwrap();
        Track::from_file(reader, index)
    }

    fn straight(path: &std::path::Path, ts: u64) -> model::Snapshot {
        let mut t = file_track(path);
        t.fold_to(ts).unwrap();
        t.model().snapshot()
    }

    #[test]
    fn a_file_track_holds_one_chunk_and_bounded_checkpoints_whatever_its_length() {
        let mut held = Vec::new();
        for (name, seconds) in [("short", 8.0), ("long", 32.0)] {
            let (path, events) = recording(name, seconds);
            let mut t = file_track(&path);
            let mut most_held = 0;
            let mut ts = t.first_ts();
            while !t.done() {
                ts += S / 20;
                t.fold_to(ts).unwrap();
                most_held = most_held.max(t.events_held());
                assert!(t.checkpoints() <= MAX_CHECKPOINTS);
            }
            assert_eq!(
                t.model().events(),
                events.len() as u64,
                "every event folded"
            );
            // 80 and 320 chunks of 100 ms: the long file has thinned its checkpoints.
            assert!(t.checkpoints() > MAX_CHECKPOINTS / 2, "{}", t.checkpoints());
            held.push((most_held, events.len()));
            std::fs::remove_file(&path).unwrap();
        }
        let (short, long) = (held[0], held[1]);
        assert!(long.1 > 3 * short.1);
        // One 100 ms chunk of the same scenario either way (give or take a chunk's events).
        assert!(
            long.0 < short.0 * 3 / 2 && long.0 * 20 < long.1,
            "events held: {short:?} vs {long:?}"
        );
    }

    #[test]
    fn a_replay_of_vm_churn_keeps_only_the_threads_of_the_last_minute() {
        // 100 generations of 10 s: 400 vCPU threads over 1,000 s, on reused tids.
        let mut churn = model::synth::Churn::new(10 * S);
        churn.exit_every_ns = 50_000_000;
        churn.slice_ns = 20_000_000;
        let mut events = Vec::new();
        for _ in 0..100 {
            events.extend(churn.next_generation());
        }
        let mut t = Track::from_events(events);
        let mut most = 0;
        for step in 1..=35 {
            t.fold_to((t.first_ts() + step * 30 * S).min(t.last_ts()))
                .unwrap();
            most = most.max(t.model().thread_slots());
        }
        assert!(t.done());
        // Alive: 4 threads; ended in the last 60 s: 6 generations of 4 more, give or take one.
        assert!(
            (4..=4 * 8).contains(&most),
            "thread slots {most}, not 400: ended threads retire"
        );
        let s = t.model().snapshot();
        assert!(s.vcpus.len() <= 4 * 8, "{} rows", s.vcpus.len());
        assert!(
            s.health.retired_threads >= 300,
            "{:?}",
            s.health.retired_threads
        );
    }

    #[test]
    fn a_replay_folds_a_recording_as_report_does() {
        // One switch stamped 10 ms before the events ahead of it in the file, as a vCPU of a
        // host that is itself a VM stalls between reserving a record and stamping it.
        let mut events = model::synth::demo_stream(3.0);
        let late = events
            .iter()
            .position(|e| matches!(e, Event::SchedSwitch(_)) && e.ts() > S)
            .unwrap();
        let to = events.partition_point(|e| e.ts() <= events[late].ts() + S / 100);
        let moved = events.remove(late);
        events.insert(to - 1, moved);
        let mut report = Model::new(ModelConfig::report());
        report.ingest_batch(&events);
        report.finish();
        let mut t = Track::from_events(events);
        // The view at a cursor shows the cursor, not the cursor minus the reorder window.
        let cursor = t.first_ts() + 2 * S;
        t.fold_to(cursor).unwrap();
        let shown = t.model().snapshot().ts;
        assert!(
            cursor - shown < S / 200,
            "{} ms behind",
            (cursor - shown) / 1_000_000
        );
        t.fold_to(t.last_ts()).unwrap();
        assert!(t.done());
        let (replayed, reported) = (t.model().snapshot(), report.snapshot());
        assert_eq!(replayed.health, reported.health);
        assert_eq!(replayed, reported);
    }

    #[test]
    fn seeking_back_from_a_checkpoint_gives_a_straight_folds_snapshot() {
        let (path, _) = recording("seek", 12.0);
        let mut t = file_track(&path);
        let first = t.first_ts();
        t.fold_to(t.last_ts()).unwrap();
        assert!(t.done());
        // Chunk boundaries, mid-chunk, the start, the end; out of order.
        for off in [7 * S + 123_456, S / 10, 0, 11 * S, 3 * S + S / 2, 12 * S] {
            let ts = first + off;
            t.seek_back(ts).unwrap();
            assert_eq!(
                t.model().snapshot(),
                straight(&path, ts),
                "seek back to +{off} ns"
            );
            t.fold_to(t.last_ts()).unwrap();
        }
        std::fs::remove_file(&path).unwrap();
    }
}
