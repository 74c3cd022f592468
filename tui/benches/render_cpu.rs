//! CPU cost of the dashboard itself with 16 vCPUs at 10 Hz (not a timed test: it reports).
//!
//! A synthetic 16-vCPU host (the model's scheduler simulator: 4 VMs of 4 vCPUs on 2 pCPUs,
//! spinning, exiting and sleepy vCPUs, an untracked kworker) is generated up front, then
//! replayed at real-time pace through a `model::Source`, twice:
//!
//! 1. baseline: the reader loop alone (fold events into the model, take a snapshot 10 times a
//!    second, with the vruntime series of the 16 vCPUs the chart would draw), no drawing;
//! 2. dashboard: the real `tui::run` loop (reader thread + UI thread drawing every tick with
//!    crossterm) into a pseudo-terminal of 120x40, whose output a drain thread discards.
//!
//! CPU is process CPU time over the run minus the drain thread's own, as % of one core; the
//! baseline's is split into the paced source, the fold and the snapshots, by thread CPU time
//! (`hostfacts::thread_cpu_ns`: unlike getrusage's, it counts a running thread's time since
//! its last tick, without which those short intervals read as nothing). Beside them, offline:
//! the stream's event mix, the model's fold of it in one batch, in the live loop's batches,
//! event by event, and in the live loop's batches with the caches flushed between them (the
//! live fold's cold start after each pause, repeatably), and one snapshot of it three ways. Run:
//! `cargo bench -p tui --bench render_cpu` (KVMSCOPE_BENCH_SECONDS, default 10;
//! KVMSCOPE_BENCH_VCPUS and KVMSCOPE_BENCH_PCPUS, default 16 and 2, for the scale goal of
//! issue #15: 512 vCPUs on 128 pCPUs; KVMSCOPE_BENCH_RATE, events/s, makes the host busier
//! (`synth::busy_big_host_config`) until its stream has about that rate: 1000000 for the goal).
//!
//! The stream is what `top` receives with its default `--exits aggregate`: the simulator's
//! events without the port I/O exits, which the kernel counts instead and the source hands
//! over as aggregates (one per vCPU, port and direction at each poll). The dashboard also
//! runs, in the same run, on the whole stream (port I/O exits as events, what `top` received
//! before): the same host's, and one at the same rate, for comparison.
//!
//! `KVMSCOPE_BENCH_FOLD_ONLY=N` prints only the event mix and the offline folds of what `top`
//! receives, N times (for profiling the fold, and for same-run A/Bs of it on a loaded host:
//! take each figure's best).

// The binary's allocator, so that the dashboard is measured as `kvmscope top` runs it.
#[path = "../../src/allocator.rs"]
mod allocator;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use model::synth::{self, SimConfig};
use model::{Event, ExitAggregates, HostInfo, Pio, PortIoAggregate, Source, SourceError};
use tui::run::{Feed, LiveFeed};

/// A size from the environment, else its default.
fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn vcpus() -> u32 {
    env_u32("KVMSCOPE_BENCH_VCPUS", 16)
}

fn pcpus() -> u32 {
    env_u32("KVMSCOPE_BENCH_PCPUS", 2)
}
const TICK_HZ: f64 = 10.0;

/// Serves pre-generated events as if they were happening now.
struct PacedSource {
    events: Vec<Event>,
    next: usize,
    /// Port I/O exits the kernel counted instead of sending (time order), and how many of
    /// them are due and counted into `aggregated`.
    port_io: Vec<Pio>,
    next_port_io: usize,
    aggregated: ExitAggregates,
    first_ts: u64,
    started: Instant,
    host: HostInfo,
    /// Thread CPU spent in `poll` (copying events out, sleeping excluded), ns.
    poll_cpu_ns: Arc<AtomicU64>,
}

/// What `top` receives of `events` with `--exits aggregate`: every event but the port I/O
/// exits, and those apart (the kernel counts them).
fn as_top_receives(events: Vec<Event>) -> (Vec<Event>, Vec<Pio>) {
    let mut port_io = Vec::new();
    let streamed = events
        .into_iter()
        .filter(|e| match e {
            Event::Pio(p) => {
                port_io.push(*p);
                false
            }
            _ => true,
        })
        .collect();
    (streamed, port_io)
}

impl PacedSource {
    /// `events` as they are, each one streamed.
    fn new(events: Vec<Event>) -> Self {
        Self::with_port_io(events, Vec::new())
    }

    /// `events` streamed and `port_io` aggregated (see [`as_top_receives`]).
    fn with_port_io(events: Vec<Event>, port_io: Vec<Pio>) -> Self {
        let first_ts = events.first().map_or(0, Event::ts);
        PacedSource {
            events,
            next: 0,
            port_io,
            next_port_io: 0,
            aggregated: ExitAggregates::default(),
            first_ts,
            started: Instant::now(),
            host: tui::fixture::host(),
            poll_cpu_ns: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Source for PacedSource {
    fn poll(&mut self, out: &mut Vec<Event>, timeout: Duration) -> Result<bool, SourceError> {
        let cpu0 = hostfacts::thread_cpu_ns();
        let more = self.poll_paced(out, timeout);
        self.poll_cpu_ns
            .fetch_add(hostfacts::thread_cpu_ns() - cpu0, Ordering::Relaxed);
        more
    }

    fn host(&self) -> &HostInfo {
        &self.host
    }

    fn describe(&self) -> String {
        "bench".into()
    }

    fn take_exit_aggregates(&mut self, out: &mut ExitAggregates) {
        out.append(&mut self.aggregated);
    }
}

impl PacedSource {
    fn poll_paced(&mut self, out: &mut Vec<Event>, timeout: Duration) -> Result<bool, SourceError> {
        let deadline = Instant::now() + timeout;
        loop {
            let due = self.first_ts + self.started.elapsed().as_nanos() as u64;
            let end = self.next + self.events[self.next..].partition_point(|e| e.ts() <= due);
            self.aggregate_port_io(due);
            if end > self.next {
                out.extend_from_slice(&self.events[self.next..end]);
                self.next = end;
                return Ok(true);
            }
            if self.next == self.events.len() {
                return Ok(false);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(true);
            }
            let wait = Duration::from_nanos(self.events[self.next].ts().saturating_sub(due));
            std::thread::sleep(wait.min(deadline - now).max(Duration::from_micros(200)));
        }
    }
}

impl PacedSource {
    /// Counts the port I/O exits due by `due` into aggregates, as the kernel's map is read at
    /// each poll: one per vCPU, port and direction that grew.
    fn aggregate_port_io(&mut self, due: u64) {
        let end =
            self.next_port_io + self.port_io[self.next_port_io..].partition_point(|p| p.ts <= due);
        for p in &self.port_io[self.next_port_io..end] {
            let key = |a: &PortIoAggregate| (a.tid, a.port, a.rw) == (p.tid, p.port, p.rw);
            match self.aggregated.port_io.iter_mut().find(|a| key(a)) {
                Some(a) => a.count += 1,
                None => self.aggregated.port_io.push(PortIoAggregate {
                    tid: p.tid,
                    port: p.port,
                    rw: p.rw,
                    count: 1,
                }),
            }
        }
        self.next_port_io = end;
    }
}

/// A feed that counts this thread's CPU in `pump` (source + fold) and `update` (snapshots).
struct TimedFeed {
    feed: LiveFeed,
    pump_ns: u64,
    update_ns: u64,
}

impl Feed for TimedFeed {
    fn pump(&mut self, budget: Duration) -> Result<bool, SourceError> {
        let t = hostfacts::thread_cpu_ns();
        let more = self.feed.pump(budget);
        self.pump_ns += hostfacts::thread_cpu_ns() - t;
        more
    }

    fn update(&mut self, ended: bool) -> tui::app::Update {
        let t = hostfacts::thread_cpu_ns();
        let update = self.feed.update(ended);
        self.update_ns += hostfacts::thread_cpu_ns() - t;
        update
    }
}

/// Where the baseline's CPU went, each as % of one core (snapshots: taking and dropping them).
struct Breakdown {
    total: f64,
    source: f64,
    fold: f64,
    snapshots: f64,
}

/// The big host, made busier until its stream has about `KVMSCOPE_BENCH_RATE` events/s
/// when that is set (two short calibration runs; the rate reached is reported, not assumed):
/// of the events `top` receives (`port_io_streamed` false) or of every event.
fn scenario(port_io_streamed: bool) -> SimConfig {
    let Ok(target) = std::env::var("KVMSCOPE_BENCH_RATE") else {
        return synth::big_host_config(vcpus(), pcpus());
    };
    let target: f64 = target
        .parse()
        .expect("KVMSCOPE_BENCH_RATE: events per second, a number");
    let calibrate = 0.5;
    let rate = |busier: f64| {
        let events = synth::stream(
            synth::busy_big_host_config(vcpus(), pcpus(), busier),
            calibrate,
        );
        let port_io = events.iter().filter(|e| matches!(e, Event::Pio(_))).count();
        let received = if port_io_streamed {
            events.len()
        } else {
            events.len() - port_io
        };
        received as f64 / calibrate
    };
    let mut busier = 1.0;
    for _ in 0..2 {
        busier = (busier * target / rate(busier).max(1.0)).max(1.0);
    }
    eprintln!("  busier by {busier:.2} for about {target:.0} events/s");
    synth::busy_big_host_config(vcpus(), pcpus(), busier)
}

/// Baseline: the same reader loop as the dashboard's, publishing to nobody (no drawing).
fn fold_only(events: Vec<Event>, port_io: Vec<Pio>, seconds: f64) -> (Breakdown, u64) {
    // As the dashboard's UI thread would after its first draw: the chart's 16 lines.
    let chart = tui::run::ChartRows::default();
    chart.set(
        events
            .iter()
            .filter_map(|e| match e {
                Event::TaskInfo(t) => Some(t.tid),
                _ => None,
            })
            .take(tui::view::CHART_LINES)
            .collect(),
    );
    let source = PacedSource::with_port_io(events, port_io);
    let poll_cpu_ns = source.poll_cpu_ns.clone();
    let mut live = LiveFeed::new(Box::new(source));
    live.follow_chart(chart);
    let mut feed = TimedFeed {
        feed: live,
        pump_ns: 0,
        update_ns: 0,
    };
    let tick = Duration::from_secs_f64(1.0 / TICK_HZ);
    let stop = AtomicBool::new(false);
    let cpu0 = hostfacts::thread_cpu_ns();
    let start = Instant::now();
    let mut snapshots = 0u64;
    let mut vcpus_seen = 0;
    let mut drop_ns = 0;
    tui::run::fold_loop(
        &mut feed,
        tick,
        &stop,
        Some(Duration::from_secs_f64(seconds)),
        Vec::new,
        |u| {
            vcpus_seen = u.snapshot.vcpus.len();
            snapshots += 1;
            // The dashboard's UI thread drops each snapshot it drew; here this thread does.
            let t = hostfacts::thread_cpu_ns();
            drop(u);
            drop_ns += hostfacts::thread_cpu_ns() - t;
            true
        },
    )
    .expect("synthetic source");
    // Thread CPU, not wall time: on a loaded host the wall clock also counts other work.
    let cpu = hostfacts::thread_cpu_ns() - cpu0;
    let wall = start.elapsed().as_nanos() as f64;
    assert_eq!(
        vcpus_seen,
        vcpus() as usize,
        "the model should see all vCPUs"
    );
    let pct = |ns: u64| ns as f64 / wall * 100.0;
    let source_ns = poll_cpu_ns.load(Ordering::Relaxed);
    let breakdown = Breakdown {
        total: pct(cpu),
        source: pct(source_ns),
        fold: pct(feed.pump_ns.saturating_sub(source_ns)),
        snapshots: pct(feed.update_ns + drop_ns),
    };
    let t = hostfacts::thread_cpu_ns();
    for _ in 0..20 {
        std::hint::black_box(feed.update(false));
    }
    eprintln!(
        "  one frame's snapshot (summaries as of the last refresh): {:.2} ms CPU",
        (hostfacts::thread_cpu_ns() - t) as f64 / 1e6 / 20.0
    );
    (breakdown, snapshots)
}

/// What the stream is made of, and the model's fold of it four ways, each by this thread's
/// CPU, best of two: the whole stream in one `ingest_batch`; in the batches the live loop
/// hands it (what arrives between two folds, `MIN_FOLD_INTERVAL` of event time); event by
/// event through `ingest`; and in the live loop's batches with the caches flushed between
/// them, as cold as live but repeatable.
fn fold_costs(events: &[Event]) {
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for e in events {
        match kinds.iter_mut().find(|(k, _)| *k == e.kind()) {
            Some((_, n)) => *n += 1,
            None => kinds.push((e.kind(), 1)),
        }
    }
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    let mix: Vec<String> = kinds
        .iter()
        .take(6)
        .map(|(k, n)| format!("{k} {:.1}%", *n as f64 / events.len() as f64 * 100.0))
        .collect();
    eprintln!("  events: {}", mix.join(", "));
    let span_ns = events
        .last()
        .map_or(0, Event::ts)
        .saturating_sub(events.first().map_or(0, Event::ts))
        .max(1);
    let rate = events.len() as f64 / (span_ns as f64 / 1e9);
    let live_batch = ((rate * tui::run::MIN_FOLD_INTERVAL.as_secs_f64()) as usize).max(1);
    let fold = |how: &dyn Fn(&mut model::Model)| {
        (0..2)
            .map(|_| {
                let mut model = model::Model::new(model::ModelConfig::default());
                let t = hostfacts::thread_cpu_ns();
                how(&mut model);
                model.finish();
                let ns = hostfacts::thread_cpu_ns() - t;
                std::hint::black_box(&model);
                ns
            })
            .min()
            .unwrap_or(0) as f64
    };
    let whole = fold(&|m| m.ingest_batch(events));
    let batched = fold(&|m| events.chunks(live_batch).for_each(|c| m.ingest_batch(c)));
    let one_by_one = fold(&|m| events.iter().for_each(|e| m.ingest(e)));
    // Live, the model's working set leaves the caches while the loop sleeps between folds
    // (other processes run): here a 64 MiB buffer is written between batches, outside the
    // time counted, so that each batch starts as cold as live (and as repeatably).
    let mut evict = vec![0u8; 64 << 20];
    let cold = (0..2)
        .map(|round| {
            let mut model = model::Model::new(model::ModelConfig::default());
            let mut ns = 0;
            for chunk in events.chunks(live_batch) {
                for line in evict.chunks_mut(64) {
                    line[0] = line[0].wrapping_add(round as u8 + 1);
                }
                let t = hostfacts::thread_cpu_ns();
                model.ingest_batch(chunk);
                ns += hostfacts::thread_cpu_ns() - t;
            }
            std::hint::black_box(&model);
            ns
        })
        .min()
        .unwrap_or(0) as f64;
    std::hint::black_box(&evict);
    let report = |what: &str, ns: f64| {
        eprintln!(
            "  fold {what}: {:.1} ns/event, {:.2}% of one core at the stream's {:.0} events/s",
            ns / events.len() as f64,
            ns / span_ns as f64 * 100.0,
            rate
        )
    };
    report("in one batch", whole);
    report(
        &format!("in the live loop's batches of {live_batch}"),
        batched,
    );
    report("event by event (ingest)", one_by_one);
    report(
        &format!("in batches of {live_batch}, caches flushed between them"),
        cold,
    );
}

/// One snapshot of the whole stream folded, each kind side by side: everything (what the
/// dashboard took before it asked only for what it draws), the dashboard's once-a-second
/// refresh, and a frame between refreshes.
fn snapshot_costs(events: &[Event]) {
    let mut model = model::Model::new(model::ModelConfig::default());
    model.ingest_batch(events);
    let lanes = model.pcpus_seen() <= tui::run::MAX_LANE_PCPUS;
    let window = model::Window::LastTenSeconds;
    let dashboard = model::SnapshotOptions::dashboard(window, lanes);
    let between = model::SnapshotOptions {
        wait_percentiles: false,
        resume_all: false,
        ..dashboard
    };
    let cost = |opts: model::SnapshotOptions| {
        let t = hostfacts::thread_cpu_ns();
        for _ in 0..5 {
            std::hint::black_box(model.snapshot_with(opts));
        }
        (hostfacts::thread_cpu_ns() - t) as f64 / 1e6 / 5.0
    };
    let full = cost(model::SnapshotOptions::full(window));
    let refresh = cost(dashboard);
    let frame = cost(between);
    // A frame as the live dashboard takes it: the vruntime series of the 16 charted vCPUs.
    let charted: Vec<u32> = model
        .snapshot_with(model::SnapshotOptions::counters())
        .vcpus
        .iter()
        .take(tui::view::CHART_LINES)
        .map(|v| v.tid)
        .collect();
    let t = hostfacts::thread_cpu_ns();
    for _ in 0..5 {
        let mut s = model.snapshot_with(model::SnapshotOptions {
            vruntime_series: false,
            ..between
        });
        s.vruntime = model.vruntime_series_of(&charted);
        std::hint::black_box(s);
    }
    let charted_frame = (hostfacts::thread_cpu_ns() - t) as f64 / 1e6 / 5.0;
    eprintln!(
        "  snapshot of {} s folded, ms CPU: everything {full:.2} (baseline), dashboard refresh \
         {refresh:.2} ({:.1}x less), between refreshes {frame:.2} ({:.1}x less), between \
         refreshes with {} series {charted_frame:.2} ({:.1}x less)",
        events
            .last()
            .map_or(0, |e| e.ts())
            .saturating_sub(events[0].ts())
            / 1_000_000_000,
        full / refresh.max(1e-9),
        full / frame.max(1e-9),
        charted.len(),
        full / charted_frame.max(1e-9)
    );
}

/// Make a 120x40 pseudo-terminal our controlling terminal, stdin and stdout. Returns the
/// master side. libc: openpty sizes and opens both ends in one call (rustix has no
/// openpty), and the rest (setsid, TIOCSCTTY, dup2 onto 0 and 1, poll, read) works on the
/// raw fds it returns.
fn pty_as_terminal() -> i32 {
    let mut master = -1;
    let mut slave = -1;
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: out-pointers are valid; name and termios may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: setsid/ioctl/dup2 act on our own process and the fds just opened. setsid fails
    // harmlessly if we already lead a session.
    unsafe {
        libc::setsid();
        libc::ioctl(slave, libc::TIOCSCTTY, 0);
        libc::dup2(slave, 0);
        libc::dup2(slave, 1);
    }
    master
}

/// The real dashboard loop on `source` for `seconds`, drawing into the pty `master` (our
/// stdout): its CPU as % of one core (the process's, less the thread draining the pty) and the
/// terminal output in bytes/s.
fn dashboard(source: PacedSource, master: i32, seconds: f64) -> (f64, f64) {
    let drained = Arc::new(AtomicU64::new(0));
    let stop_drain = Arc::new(AtomicBool::new(false));
    let drain = {
        let drained = drained.clone();
        let stop = stop_drain.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd: master,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut pfd, 1, 50) } > 0 {
                    // SAFETY: buf is valid for its length.
                    let n = unsafe { libc::read(master, buf.as_mut_ptr().cast(), buf.len()) };
                    if n > 0 {
                        drained.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
            hostfacts::thread_cpu_ns()
        })
    };
    let mut opts = tui::RunOptions::new(TICK_HZ);
    opts.duration = Some(Duration::from_secs_f64(seconds));
    opts.theme = tui::Theme::coloured();
    let app = tui::App::new(tui::Mode::Live, source.host().clone(), "bench".into());
    let cpu0 = hostfacts::process_cpu_ns();
    let start = Instant::now();
    tui::run::run(app, LiveFeed::new(Box::new(source)), opts).expect("dashboard loop");
    let wall = start.elapsed();
    let cpu = hostfacts::process_cpu_ns() - cpu0;
    stop_drain.store(true, Ordering::Relaxed);
    let drain_cpu = drain.join().expect("drain thread");
    let pct = (cpu.saturating_sub(drain_cpu)) as f64 / wall.as_nanos() as f64 * 100.0;
    let bytes = drained.load(Ordering::Relaxed) as f64 / wall.as_secs_f64();
    (pct, bytes)
}

fn main() {
    let seconds: f64 = std::env::var("KVMSCOPE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    eprintln!("generating {seconds} s x 2 of a {}-vCPU host ...", vcpus());
    let host = scenario(false);
    let (events, port_io) = as_top_receives(synth::stream(host.clone(), seconds + 1.0));
    let rate = events.len() as f64 / (seconds + 1.0);
    if let Some(rounds) = std::env::var("KVMSCOPE_BENCH_FOLD_ONLY")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        for _ in 0..rounds {
            fold_costs(&events);
        }
        return;
    }

    let (baseline, snapshots) = fold_only(events.clone(), port_io.clone(), seconds);
    let baseline_pct = baseline.total;
    fold_costs(&events);
    snapshot_costs(&events);

    // Dashboard: the real loop into a pty, on what `top` receives; then, for comparison, on
    // the same host's whole stream (its port I/O exits as events: what `top` received before)
    // and on a whole stream at the rate of the first. Each stream is made when it is needed:
    // at 1 M events/s one is some 3 GiB.
    let saved_stdout = unsafe { libc::dup(1) }; // SAFETY: dup of an open fd.
    let master = pty_as_terminal();
    let source = PacedSource::with_port_io(events, port_io);
    let (dashboard_pct, bytes) = dashboard(source, master, seconds);
    let same_host = synth::stream(host, seconds + 1.0);
    let same_host_rate = same_host.len() as f64 / (seconds + 1.0);
    let (same_host_pct, _) = dashboard(PacedSource::new(same_host), master, seconds);
    let whole = synth::stream(scenario(true), seconds + 1.0);
    let whole_rate = whole.len() as f64 / (seconds + 1.0);
    let (whole_pct, _) = dashboard(PacedSource::new(whole), master, seconds);
    // SAFETY: restores the stdout saved above.
    unsafe { libc::dup2(saved_stdout, 1) };

    println!(
        "render_cpu: {} vCPUs on {} pCPUs, {rate:.0} events/s (what top receives: port I/O \
         exits aggregated), {TICK_HZ} Hz, {seconds} s, 120x40",
        vcpus(),
        pcpus()
    );
    println!(
        "  baseline (fold + {snapshots} snapshots, no drawing): {baseline_pct:.2}% of one core"
    );
    println!(
        "    of which: paced source {:.2}%, fold {:.2}%, snapshots {:.2}%, loop and rest {:.2}%",
        baseline.source,
        baseline.fold,
        baseline.snapshots,
        baseline.total - baseline.source - baseline.fold - baseline.snapshots
    );
    println!(
        "  dashboard without the paced source: {:.2}% of one core",
        dashboard_pct - baseline.source
    );
    println!(
        "  dashboard (fold + snapshots + draw into a pty):      {dashboard_pct:.2}% of one core"
    );
    println!(
        "  drawing alone (difference):                          {:.2}% of one core",
        dashboard_pct - baseline_pct
    );
    println!("  terminal output: {:.1} KiB/s", bytes / 1024.0);
    println!(
        "  dashboard on the same host's whole stream (port I/O exits as events, \
         {same_host_rate:.0} events/s): {same_host_pct:.2}% of one core"
    );
    println!(
        "  dashboard on a whole stream at the same rate ({whole_rate:.0} events/s):      \
         {whole_pct:.2}% of one core"
    );
    println!(
        "  goal: dashboard <= 5% of one core -> {}",
        if dashboard_pct <= 5.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
