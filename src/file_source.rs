//! A trace file as a [`model::Source`]: `report FILE`, `replay` and `export` read recordings
//! through this, so every sink works the same on a recording as live. (Random access by chunk
//! is in `model::trace_file::TraceReader::{scan, read_chunk_at}`, which replay uses.)

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use model::trace_file::{self, ReadStats, TraceHeader, TraceReader, Trailer};
use model::{Event, HostInfo, Source, SourceError};

/// Events from a trace file, one chunk per [`poll`](Source::poll).
pub struct FileSource {
    path: PathBuf,
    reader: TraceReader<BufReader<File>>,
}

impl FileSource {
    /// Opens `path` and reads its header. Errors say what is wrong with the file.
    pub fn open(path: &Path) -> anyhow::Result<FileSource> {
        let reader = trace_file::open(path)?;
        Ok(FileSource {
            path: path.to_path_buf(),
            reader,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recording's header: host, tracked processes, command line.
    pub fn header(&self) -> &TraceHeader {
        self.reader.header()
    }

    /// The trailer, once reading reached it (None while reading, or if the recorder was
    /// killed before it could finalise the file).
    pub fn trailer(&self) -> Option<&Trailer> {
        self.reader.trailer()
    }

    /// Events read so far, chunks skipped as corrupt, bytes lost to truncation.
    pub fn stats(&self) -> &ReadStats {
        self.reader.stats()
    }

    /// The reader itself, for random access by chunk (replay).
    pub fn into_reader(self) -> TraceReader<BufReader<File>> {
        self.reader
    }

    /// Problems met so far, one line each (truncation, corrupt chunks, no trailer).
    pub fn problems(&self) -> Vec<String> {
        self.reader.stats().problems()
    }

    /// Prints each problem met so far as a warning naming the file (in text and JSON mode
    /// alike: a report of a cut file is still a report, but not of the whole recording).
    pub fn warn_problems(&self) {
        for p in self.problems() {
            crate::cmd::warn(&format!("{}: {p}", self.path.display()));
        }
    }

    /// Once read through: an error when the file held no event (cut before its first chunk
    /// was complete), so that `report` and `export` say so instead of printing an empty
    /// result, as `replay` and `simulate` refuse the same file. Print `problems` first: they
    /// say why.
    pub fn require_events(&self, to: &str) -> anyhow::Result<()> {
        if self.stats().events == 0 {
            anyhow::bail!("{} holds no events to {to}", self.path.display());
        }
        Ok(())
    }
}

/// The error for a recording whose events announce no tracked thread (only other tasks'
/// switches): there is no vCPU to `to` (replay, report), and a view of it would be empty.
pub fn no_tracked_thread(path: &Path, to: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{} announces no tracked thread: no vCPU to {to} (record a target with vCPU threads, \
         e.g. `kvmscope record --demo`)",
        path.display()
    )
}

impl Source for FileSource {
    fn poll(&mut self, out: &mut Vec<Event>, _timeout: Duration) -> Result<bool, SourceError> {
        // A file never waits: one chunk per call keeps batches bounded for the model.
        Ok(self.reader.next_chunk(out)?)
    }

    fn host(&self) -> &HostInfo {
        &self.reader.header().host
    }

    fn describe(&self) -> String {
        format!("replay: {}", self.path.display())
    }
}

/// Creates an output file (trace, export), refusing to replace an existing one unless
/// `force`: a recording is often the only copy of what happened.
pub fn create_output(path: &Path, force: bool) -> anyhow::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    opts.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
            "{} already exists; pass --force to overwrite it or choose another -o",
            path.display()
        ),
        _ => anyhow::Error::new(e).context(format!("cannot create {}", path.display())),
    })
}
