//! The hand-over between the ingest thread (which owns the model) and the HTTP threads
//! (which only read snapshots), and the ingest loop itself.
//!
//! A scrape asks for a fresh snapshot and waits a bounded time for it; the ingest thread
//! takes one between batches when asked. So snapshots cost in proportion to scrapes (fifty
//! concurrent scrapes share one), a scraper never blocks ingestion (it holds no lock the
//! ingest thread needs while it writes), and a stalled ingest thread still leaves scrapes an
//! answer: the last snapshot.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use model::{Model, ModelConfig, Snapshot, SnapshotOptions, Source, SourceError};

#[derive(Debug, Default)]
struct Published {
    snapshot: Arc<Snapshot>,
    generation: u64,
}

/// The latest snapshot and the requests for a newer one.
#[derive(Debug, Default)]
pub struct Board {
    published: Mutex<Published>,
    fresh: Condvar,
    /// Highest generation a scraper has asked for.
    wanted: AtomicU64,
    /// The ingest loop has ended (source exhausted or failed).
    closed: AtomicBool,
}

impl Board {
    pub fn new() -> Self {
        Board::default()
    }

    fn lock(&self) -> MutexGuard<'_, Published> {
        // A panic while holding the lock leaves a whole snapshot behind (it is swapped in
        // one assignment), so a poisoned lock is still safe to read.
        self.published.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last published snapshot.
    pub fn latest(&self) -> Arc<Snapshot> {
        Arc::clone(&self.lock().snapshot)
    }

    /// Generation of the last published snapshot (0: none yet).
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Ingest side: is a scraper waiting for a snapshot newer than the last one?
    pub fn wants_fresh(&self) -> bool {
        self.wanted.load(Ordering::Acquire) > self.generation()
    }

    /// Ingest side: replaces the latest snapshot and wakes the waiting scrapers.
    pub fn publish(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        let old = {
            let mut p = self.lock();
            p.generation += 1;
            std::mem::replace(&mut p.snapshot, snapshot)
        };
        self.fresh.notify_all();
        // The old snapshot is freed outside the lock (unless a scrape still holds it).
        drop(old);
    }

    /// Ingest side: no more snapshots will come; scrapers stop waiting for one.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.fresh.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Scrape side: a snapshot taken after this call, or the latest one if none comes
    /// within `wait`.
    pub fn fresh(&self, wait: Duration) -> Arc<Snapshot> {
        let deadline = Instant::now() + wait;
        let mut p = self.lock();
        let seen = p.generation;
        self.wanted.fetch_max(seen + 1, Ordering::AcqRel);
        while p.generation == seen && !self.is_closed() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            p = self
                .fresh
                .wait_timeout(p, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Arc::clone(&p.snapshot)
    }
}

/// The model tuning for the exporter: the reorder window of whole-run reports (a late event
/// costs nothing here), short histories, since no view draws lanes or vruntime charts and
/// every exported figure is a whole-run counter, and ended threads are retired a minute after
/// they end (their series are gone from scrapes by then; their VM keeps their counters), so
/// memory stays flat as VMs come and go.
pub fn exporter_model_config() -> ModelConfig {
    ModelConfig {
        history_ns: 1_000_000_000,
        max_lane_segments: 1024,
        retire_ended_after_ns: Some(model::RETIRE_ENDED_AFTER_NS),
        ..ModelConfig::report()
    }
}

/// What a snapshot for the exporter holds: whole-run counters and latency bucket counts; no
/// lanes, chart series, percentiles or culprits, which no family reads.
pub fn take_snapshot(model: &Model) -> Snapshot {
    model.snapshot_with(SnapshotOptions::counters())
}

/// How often the ingest loop publishes a snapshot when nobody asks (keeps `/` and a first
/// scrape after a long pause current).
pub const IDLE_PUBLISH: Duration = Duration::from_secs(10);

/// Drives `source` into `model`, publishing a snapshot on `board` whenever a scraper asks (or
/// every [`IDLE_PUBLISH`]), until the source ends or `stop` is set. Returns the source's error,
/// if any; the board is closed either way.
pub fn ingest(
    source: &mut dyn Source,
    model: &mut Model,
    board: &Board,
    stop: &AtomicBool,
    poll_timeout: Duration,
) -> Result<(), SourceError> {
    let mut batch = Vec::with_capacity(8192);
    let mut aggregates = model::ExitAggregates::default();
    let mut last_publish = Instant::now();
    board.publish(take_snapshot(model));
    let result = loop {
        batch.clear();
        let more = match source.poll(&mut batch, poll_timeout) {
            Ok(more) => more,
            Err(e) => break Err(e),
        };
        model.ingest_batch(&batch);
        aggregates.clear();
        source.take_exit_aggregates(&mut aggregates);
        model.fold_aggregates(&aggregates);
        if board.wants_fresh() || last_publish.elapsed() >= IDLE_PUBLISH {
            board.publish(take_snapshot(model));
            last_publish = Instant::now();
        }
        if !more || stop.load(Ordering::Acquire) {
            break Ok(());
        }
    };
    model.finish();
    board.publish(take_snapshot(model));
    board.close();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn a_scrape_gets_a_snapshot_taken_after_it_asked() {
        let board = Arc::new(Board::new());
        let b = Arc::clone(&board);
        let ingest = thread::spawn(move || {
            // The ingest side serves requests as they come, as the loop does between batches.
            let mut served = 0;
            while served < 3 {
                if b.wants_fresh() {
                    let snap = Snapshot {
                        ts: served + 100,
                        ..Snapshot::default()
                    };
                    b.publish(snap);
                    served += 1;
                }
                thread::sleep(Duration::from_millis(1));
            }
        });
        for want in 100..103 {
            assert_eq!(board.fresh(Duration::from_secs(10)).ts, want);
        }
        ingest.join().expect("ingest thread");
    }

    #[test]
    fn with_no_ingest_a_scrape_gets_the_last_snapshot_after_its_wait() {
        let board = Board::new();
        board.publish(Snapshot {
            ts: 7,
            ..Snapshot::default()
        });
        let began = Instant::now();
        assert_eq!(board.fresh(Duration::from_millis(30)).ts, 7);
        assert!(began.elapsed() >= Duration::from_millis(30));
        board.close();
        let began = Instant::now();
        assert_eq!(board.fresh(Duration::from_secs(30)).ts, 7);
        assert!(began.elapsed() < Duration::from_secs(5), "closed: no wait");
    }
}
