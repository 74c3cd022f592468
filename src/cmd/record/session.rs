//! One live recording session: a target observed into a trace file, until `--duration`,
//! Ctrl-C or SIGTERM. `record` runs it into the user's file; `simulate` on a live target runs
//! it into a temporary one and replays that, so its demand holds exactly what a recording
//! holds (task groups, host facts, process map).
//!
//! Crash safety comes from the format (complete chunks survive anything); the session's part
//! is to end a chunk every two seconds, so a kill loses at most about two seconds, and to
//! finalise the file (last chunk + trailer) on Ctrl-C, SIGTERM or the end of the duration.
//!
//! This thread reads the source and encodes its events into chunks; [`super::hand_off`]'s
//! writer thread compresses and writes them, so reading never waits on zstd or the disk.

use std::collections::VecDeque;
use std::fs::File;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use model::trace_file::{
    ChunkBuilder, ChunkWriter, ProcessMap, SealedChunk, TraceHeader, WriterOptions, FORMAT_VERSION,
};
use model::{Event, Source};

use super::hand_off::{HandOff, WriterThread, QUEUE_CHUNKS};
use crate::cli::ExitsArg;
use crate::file_source::create_output;
use crate::live::{self, LiveSource};
use crate::target::Target;

/// How often the open chunk is written out: the most a crash can lose. Each chunk restarts
/// the coder's memory (comm table, per-tid predictions) and zstd's window; at demo rates 2 s
/// chunks are about 3% smaller than 1 s ones.
const CHUNK_EVERY: Duration = Duration::from_secs(2);
/// How long to wait for the first events, whose `TaskInfo`s fill the header's vCPU map.
const FIRST_EVENTS_WAIT: Duration = Duration::from_secs(2);

/// What a finished session wrote and lost: `record --json`'s figures (with its `output`).
#[derive(serde::Serialize)]
pub struct LiveRecording {
    pub events: u64,
    pub lost: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// The kernel's part of `lost`, by where the records were going. `lost` is its total
    /// plus `vmm_gaps_lost` plus `writer.discarded_events`.
    pub lost_by_cause: probes::LostByCause,
    /// Guest gap records the bundled VMM (`--demo`) had no room for.
    pub vmm_gaps_lost: u64,
    /// Tasks seen running that had exited before their task group could be read (their
    /// task-group records say so).
    pub task_groups_unread: u64,
    pub writer: WriterFigures,
    /// The in-process VMM's summary (`--demo`): its own exit counters per vCPU.
    pub vmm: Option<vmm::Summary>,
    /// What was watched (`live: bundled VMM (--demo)`, `live: pid 42`, ...).
    #[serde(skip)]
    pub target: String,
    /// Chunks the writer had no room for.
    #[serde(skip)]
    discarded_chunks: u64,
}

/// How the writer thread kept up: `record --json`'s `writer`.
#[derive(serde::Serialize)]
pub struct WriterFigures {
    /// Chunks the hand-off holds.
    queue_chunks: usize,
    /// Most chunks handed over and not yet written at once: the queue's and the one being
    /// written, so at most `queue_chunks + 1`.
    peak_unwritten_chunks: usize,
    /// Events discarded because the hand-off was full (part of `lost`; the discarded chunks'
    /// own `Lost` records and bookkeeping records are not among them: the records are written
    /// again, the losses counted once).
    discarded_events: u64,
}

impl LiveRecording {
    /// Says on stderr what was lost and why, and what could not be read: nothing a session
    /// drops goes unsaid, whichever command ran it.
    pub fn warn_losses(&self) {
        if self.lost > 0 {
            eprintln!(
                "lost: {}, guest gap records the bundled VMM had no room for {}, discarded by a \
                 writer that fell behind {}",
                self.lost_by_cause, self.vmm_gaps_lost, self.writer.discarded_events
            );
        }
        if self.task_groups_unread > 0 {
            eprintln!(
                "{} tasks had exited before their task group could be read (a replay gives \
                 their load a group of its own)",
                self.task_groups_unread
            );
        }
        if self.writer.discarded_events > 0 {
            crate::cmd::warn(&format!(
                "the writer fell {QUEUE_CHUNKS} chunks behind: {} events in {} chunks were \
                 discarded (counted as lost, so {} of the lost are kvmscope's own)",
                self.writer.discarded_events, self.discarded_chunks, self.writer.discarded_events
            ));
        }
    }
}

/// Observes `target` into a trace file at `output` for `duration` (or until Ctrl-C or
/// SIGTERM), for `command` (`record`, `simulate`), which errors name. The file is created only once
/// the source is up, so a source that fails to start neither leaves an empty file nor
/// truncates one given with `force`.
pub fn record_live(
    mut target: Target,
    duration: Option<Duration>,
    output: &Path,
    force: bool,
    command: &str,
) -> anyhow::Result<LiveRecording> {
    target.task_groups = true;
    // A recording holds events only: aggregated exits would be missing from it.
    if target.exits.is_some_and(|e| e != ExitsArg::Stream) {
        bail!("{command} streams every exit into its recording: --exits aggregate/both is for report, top and the exporter");
    }
    live::require_privileges(&target)?;
    let stop = live::stop_on_signals()?;
    let mut source = LiveSource::open(target, Arc::clone(&stop))?;
    let file = create_output(output, force)?;
    if let Some(d) = duration {
        source.stop_after(d);
    }
    for w in source.warnings() {
        crate::cmd::warn(w);
    }
    let started = Instant::now();

    // The header is written once the first events are in, so it can name the vCPU threads.
    let mut pending = Vec::new();
    let mut exhausted = false;
    while pending.is_empty()
        && started.elapsed() < FIRST_EVENTS_WAIT
        && !stop.load(Ordering::Relaxed)
    {
        if !source
            .poll(&mut pending, Duration::from_millis(100))
            .map_err(anyhow::Error::from_boxed)?
        {
            exhausted = true;
            break;
        }
    }
    let mut processes = ProcessMap::default();
    for e in &pending {
        if let Event::TaskInfo(t) = e {
            processes.note(t);
        }
    }
    let header = TraceHeader {
        format_version: FORMAT_VERSION,
        host: source.host().clone(),
        processes: processes.processes(),
        command_line: std::env::args().collect(),
        recorder: format!("kvmscope {}", env!("CARGO_PKG_VERSION")),
        started_unix_secs: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs()),
    };
    let out = output.display().to_string();
    let write_err = |e: std::io::Error| {
        anyhow::Error::new(e).context(format!(
            "cannot write {out} (disk full?); the chunks written so far are readable"
        ))
    };
    let opts = WriterOptions::default();
    let mut builder = ChunkBuilder::new(&header, opts);
    let chunk_writer = ChunkWriter::new(file, &header, opts.zstd_level).map_err(write_err)?;
    let mut writer = WriterThread::start(chunk_writer).map_err(write_err)?;
    let (mut discarded_chunks, mut discarded_events) = (0u64, 0u64);
    // Hands a sealed chunk to the writer thread; one it has no room for is discarded,
    // counted in the file as a `Lost` event.
    let mut hand_off = |writer: &mut WriterThread<File>,
                        builder: &mut ChunkBuilder,
                        chunk: SealedChunk|
     -> anyhow::Result<()> {
        let mut next = VecDeque::from([chunk]);
        while let Some(chunk) = next.pop_front() {
            if let HandOff::Full(chunk) = writer.hand_off(chunk).map_err(write_err)? {
                let d = builder.discard(chunk);
                discarded_chunks += 1;
                discarded_events += d.events;
                next.extend(d.filled);
            }
        }
        Ok(())
    };
    for e in pending.drain(..) {
        if let Some(chunk) = builder.push(&e) {
            hand_off(&mut writer, &mut builder, chunk)?;
        }
    }

    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} recording {elapsed} {msg}")
                .expect("static progress template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });

    let mut batch = Vec::new();
    let mut last_chunk = Instant::now();
    let mut last_progress = Instant::now();
    let mut more = !exhausted;
    while more {
        batch.clear();
        // Keep polling after `stop` until the source says it is done: it drains what the
        // kernel already delivered, so a clean stop loses nothing.
        more = source
            .poll(&mut batch, Duration::from_millis(100))
            .map_err(anyhow::Error::from_boxed)
            .context("reading live events")?;
        for e in &batch {
            if let Some(chunk) = builder.push(e) {
                hand_off(&mut writer, &mut builder, chunk)?;
            }
        }
        if last_chunk.elapsed() >= CHUNK_EVERY {
            if let Some(chunk) = builder.seal() {
                hand_off(&mut writer, &mut builder, chunk)?;
            }
            last_chunk = Instant::now();
        }
        if let Some(bar) = &bar {
            if last_progress.elapsed() >= Duration::from_millis(200) {
                bar.set_message(format!(
                    "{} events, {} written, {} lost",
                    builder.events(),
                    HumanBytes(writer.bytes_written()),
                    builder.lost()
                ));
                last_progress = Instant::now();
            }
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let drained = writer.finish(builder.seal()).map_err(write_err)?;
    let (chunk_writer, peak_unwritten) = (drained.writer, drained.peak_unwritten);
    let trailer = builder.trailer(chunk_writer.chunks());
    let (file, trailer) = chunk_writer.finish(trailer).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    // The session is over and its file complete: from here a Ctrl-C or SIGTERM ends the
    // process at once (the handler's second-signal exit), not a flag nobody reads any more,
    // so `simulate` can be stopped while it replays what was observed.
    stop.store(true, Ordering::Relaxed);
    Ok(LiveRecording {
        events: trailer.events,
        lost: trailer.lost,
        bytes: file.metadata().map(|m| m.len()).unwrap_or(0),
        seconds: trailer.end_ts.saturating_sub(trailer.start_ts) as f64 / 1e9,
        lost_by_cause: source.lost_by_cause(),
        vmm_gaps_lost: source.vmm_gaps_lost(),
        task_groups_unread: source.task_groups_unread(),
        writer: WriterFigures {
            queue_chunks: QUEUE_CHUNKS,
            peak_unwritten_chunks: peak_unwritten,
            discarded_events,
        },
        vmm: source.vmm_summary().cloned(),
        target: source.describe(),
        discarded_chunks,
    })
}
