//! The counters source: in counters mode (no BPF) the live session reads each tracked
//! thread's kernel counters every `--sample-every` and turns them into
//! [`Event::CounterSample`]s, which the model folds like any other event.
//!
//! Everything is read through the one set of readers in `probes` ([`SchedStat`],
//! [`ProcSched`], [`ThreadStat`], [`ThreadCounters`]) and `hostfacts` (the allowed CPUs, as
//! tracking reads them); nothing here parses `/proc` or makes a syscall itself.
//! A thread is sampled once right when tracking begins, then on every tick, and once more
//! when the session closes. The baseline sample is also the thread's announcement: its
//! `TaskInfo` carries that sample's instant and schedstat, so run, wait, switches and
//! migrations all count from one reading, and each reading is stamped at the middle of reads
//! held under [`MAX_READ_SPREAD_NS`], so its stamp is the instant its figures are of.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use model::{CounterSample, Event, Unobserved, UnobservedKind};
use probes::counters::{ProcSched, SchedStat, ThreadCounters};
use probes::targets::ThreadStat;

use super::monotonic_ns;

/// One tracked thread's perf counters (`None` where perf could not be opened for it).
struct SampledThread {
    pid: u32,
    perf: Option<ThreadCounters>,
}

pub(super) struct CounterSource {
    every: Duration,
    last: Instant,
    threads: BTreeMap<u32, SampledThread>,
    /// Samples not taken because a thread's `/proc` files could not be read (it was ending),
    /// not yet reported as an [`Unobserved`] event.
    missed: u64,
}

impl CounterSource {
    pub(super) fn new(every: Duration) -> Self {
        CounterSource {
            every: every.max(Duration::from_millis(10)),
            last: Instant::now(),
            threads: BTreeMap::new(),
            missed: 0,
        }
    }

    /// Starts sampling thread `tid` and returns its baseline sample, the instant its figures
    /// count from (`None`, a missed sample the next tick reports, if its `/proc` files could
    /// not be read). A perf
    /// counter that cannot be opened is a warning: schedstat and `/proc` still give the rest.
    pub(super) fn track(
        &mut self,
        pid: u32,
        tid: u32,
        warnings: &mut Vec<String>,
    ) -> Option<CounterSample> {
        let perf = match ThreadCounters::open(tid) {
            Ok(c) => Some(c),
            Err(e) => {
                let w = e.to_string();
                if !warnings.contains(&w) {
                    warnings.push(w);
                }
                None
            }
        };
        let mut thread = SampledThread { pid, perf };
        let baseline = sample(tid, &mut thread);
        if baseline.is_none() {
            self.missed += 1;
        }
        self.threads.insert(tid, thread);
        baseline
    }

    pub(super) fn untrack(&mut self, tid: u32) {
        self.threads.remove(&tid);
    }

    /// Time until the next tick is due.
    pub(super) fn until_due(&self) -> Duration {
        self.every.saturating_sub(self.last.elapsed())
    }

    /// Samples every thread if a tick is due (or `force`), into `out`, followed by one
    /// [`Unobserved`] event for the samples missed since the last (baselines included).
    pub(super) fn tick(&mut self, out: &mut Vec<Event>, force: bool) {
        if !force && self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        for (tid, thread) in &mut self.threads {
            match sample(*tid, thread) {
                Some(s) => out.push(Event::CounterSample(s)),
                None => self.missed += 1,
            }
        }
        if self.missed > 0 {
            out.push(Event::Unobserved(Unobserved {
                ts: monotonic_ns(),
                what: UnobservedKind::CounterSamples,
                count: std::mem::take(&mut self.missed),
            }));
        }
    }
}

/// How long the two reads of one sample (schedstat, then `sched`) may take together. A
/// reader preempted between its stamp and its reads (it shares the host with the vCPUs it
/// watches) would carry figures of a later instant than its stamp; such a reading is taken
/// again.
const MAX_READ_SPREAD_NS: u64 = 200_000;

/// Tries at one reading within [`MAX_READ_SPREAD_NS`]; the last one is kept whatever it took.
const READ_ATTEMPTS: usize = 20;

/// Thread `tid`'s schedstat and `sched` read back to back, stamped at the middle of the reads
/// (see [`MAX_READ_SPREAD_NS`]); `None` if its `/proc` files are gone or unreadable.
fn read_at_one_instant(pid: u32, tid: u32) -> Option<(u64, SchedStat, ProcSched)> {
    let mut attempt = 1;
    loop {
        let before = monotonic_ns();
        let stat = SchedStat::read(pid, tid).ok()?;
        let sched = ProcSched::read(pid, tid).ok()?;
        let spread = monotonic_ns().saturating_sub(before);
        if spread <= MAX_READ_SPREAD_NS || attempt == READ_ATTEMPTS {
            return Some((before + spread / 2, stat, sched));
        }
        attempt += 1;
    }
}

/// Reads one thread's counters now; `None` if its `/proc` files are gone or unreadable.
fn sample(tid: u32, thread: &mut SampledThread) -> Option<CounterSample> {
    let pid = thread.pid;
    let (ts, stat, sched) = read_at_one_instant(pid, tid)?;
    let task_clock_ns = thread
        .perf
        .as_mut()
        .and_then(|p| p.read().ok())
        .map(|r| r.task_clock_ns);
    let cpu = ThreadStat::read(pid, tid).ok().map_or(0, |s| s.processor);
    Some(CounterSample {
        ts,
        cpu,
        tid,
        pid,
        run_ns: stat.run_ns,
        wait_ns: stat.wait_ns,
        timeslices: stat.timeslices,
        task_clock_ns,
        voluntary_switches: sched.nr_voluntary_switches,
        involuntary_switches: sched.nr_involuntary_switches,
        migrations: sched.nr_migrations,
        vruntime: sched.vruntime,
        weight: sched.weight(),
        allowed_cpus: allowed_cpus(tid),
    })
}

/// How many CPUs thread `tid`'s affinity mask allows (0 if it cannot be read: it is going).
fn allowed_cpus(tid: u32) -> u32 {
    hostfacts::allowed_cpus(tid).map_or(0, |cpus| cpus.len() as u32)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// What `tick` said was not observed: (kind, count) per `Unobserved` event.
    fn unobserved(events: &[Event]) -> Vec<(UnobservedKind, u64)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Unobserved(u) => Some((u.what, u.count)),
                _ => None,
            })
            .collect()
    }

    fn sampled_tids(events: &[Event]) -> Vec<u32> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::CounterSample(s) => Some(s.tid),
                _ => None,
            })
            .collect()
    }

    /// Real threads of this process (counters mode needs no privilege for its own threads):
    /// one that stays (the test's) and one that ends between two ticks.
    #[test]
    fn a_thread_gone_between_samples_is_a_missed_sample_each_tick_folded_into_health() {
        let pid = std::process::id();
        let stays = hostfacts::gettid();
        let (tid_tx, tid_rx) = mpsc::channel();
        let (end_tx, end_rx) = mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            tid_tx.send(hostfacts::gettid()).unwrap();
            let _ = end_rx.recv();
        });
        let goes = tid_rx.recv().unwrap();

        // An hour between ticks: only forced ticks sample.
        let mut source = CounterSource::new(Duration::from_secs(3600));
        let mut warnings = Vec::new();
        let mut events = Vec::new();
        for tid in [stays, goes] {
            let baseline = source.track(pid, tid, &mut warnings);
            events.extend(baseline.map(Event::CounterSample));
        }
        let mut out = Vec::new();
        source.tick(&mut out, true);
        assert_eq!(sampled_tids(&out), [stays, goes]);
        assert_eq!(unobserved(&out), []);
        events.append(&mut out);

        end_tx.send(()).unwrap();
        worker.join().unwrap();
        // The join returns as the thread clears its tid, a moment before its /proc files go.
        let ended = Instant::now();
        while hostfacts::process::thread_exists(pid, goes) {
            assert!(
                ended.elapsed() < Duration::from_secs(10),
                "thread {goes} still listed"
            );
            std::thread::yield_now();
        }
        // Two ticks before a rescan would stop sampling it: each misses it once and says so.
        for _ in 0..2 {
            source.tick(&mut out, true);
            assert_eq!(sampled_tids(&out), [stays]);
            assert_eq!(unobserved(&out), [(UnobservedKind::CounterSamples, 1)]);
            events.append(&mut out);
        }
        // Stopped: nothing more is missed.
        source.untrack(goes);
        source.tick(&mut out, true);
        assert_eq!(unobserved(&out), []);
        events.append(&mut out);

        // The model counts them in its health, where report, the dashboard and the summaries
        // read them.
        let mut model = model::Model::new(model::ModelConfig::default());
        events.sort_by_key(Event::ts);
        model.ingest_batch(&events);
        model.finish();
        let health = model.snapshot().health;
        assert_eq!(health.missed_counter_samples, 2);
        assert!(
            health
                .notes
                .iter()
                .any(|n| n.starts_with("2 counter samples not taken")),
            "{:?}",
            health.notes
        );
    }
}
