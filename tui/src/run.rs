//! The dashboard loop. Two threads, so drawing never holds up the event reader:
//!
//! - the calling thread owns the source and the model: it polls events in batches, folds them
//!   and, once per tick, hands a snapshot to the UI over a channel (sending never blocks);
//! - a UI thread owns the terminal: it waits for keys until the next tick, takes the newest
//!   snapshot and draws it. It never touches the source or the model.
//!
//! The source stays on the calling thread (it need not be `Send`) and is dropped when the
//! loop ends, which is what detaches probes and stops an in-process VMM. The terminal is
//! restored when the UI thread leaves, on Ctrl-C (a key in raw mode), on SIGINT/SIGTERM/SIGHUP
//! and on panic (panic hook).

use std::fs::File;
use std::io::{self, IsTerminal};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use model::{Event, HostInfo, Model, ModelConfig, SnapshotOptions, Source, SourceError, Window};
use ratatui::crossterm::event::{self as term_event, Event as TermEvent};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::app::{Action, App, Mode, ReplayCommand, Update};
use crate::replay::{ReplayFeed, SimulatedRun, Track};
use crate::stderr::StderrRedirect;
use crate::summary_cache::SummaryCache;
use crate::theme::Theme;
use crate::view::Dashboard;

/// Why the dashboard stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("cannot set up the terminal: {0} (is stdout a terminal?)")]
    Terminal(#[source] io::Error),
    #[error("event source failed: {0}")]
    Source(#[source] SourceError),
    #[error("the dashboard thread panicked (see the log file)")]
    Panicked,
    #[error("tick rate must be between 0.5 and 100 Hz, got {0}")]
    TickRate(f64),
}

/// How the loop runs.
pub struct RunOptions {
    /// Redraws per second.
    pub tick_hz: f64,
    /// Stop after this long (live only).
    pub duration: Option<Duration>,
    /// Set by anyone (signals, the caller) to stop; the loop sets it when it ends, so a live
    /// source sharing it stops too.
    pub stop: Arc<AtomicBool>,
    pub theme: Theme,
    /// Where stderr goes while the dashboard owns the screen (a log file); `None` = discard.
    /// Anything a library prints would otherwise tear the picture.
    pub stderr_to: Option<File>,
    /// Show the wall clock in the header.
    pub clock: bool,
    /// Notes from the source to show in the health line.
    pub notes: Vec<String>,
}

impl RunOptions {
    pub fn new(tick_hz: f64) -> Self {
        RunOptions {
            tick_hz,
            duration: None,
            stop: Arc::new(AtomicBool::new(false)),
            theme: Theme::from_env(),
            stderr_to: None,
            clock: true,
            notes: Vec::new(),
        }
    }

    fn tick(&self) -> Result<Duration, TuiError> {
        if !(0.5..=100.0).contains(&self.tick_hz) {
            return Err(TuiError::TickRate(self.tick_hz));
        }
        Ok(Duration::from_secs_f64(1.0 / self.tick_hz))
    }
}

/// The window the dashboard's per-vCPU figures (shares, rates) cover.
pub(crate) const STATS_WINDOW: Window = Window::LastTenSeconds;

/// Beyond this many pCPUs the lanes do not fit one row each on any usual terminal: the
/// dashboard draws the compact heat map, which needs no segments, and the snapshot leaves the
/// lanes out (at 128 busy pCPUs, copying them was most of a snapshot's cost).
pub const MAX_LANE_PCPUS: usize = 32;

/// What the dashboard's snapshot of `model` holds: only what its panels read.
pub(crate) fn dashboard_options(model: &Model) -> SnapshotOptions {
    let lanes = model.pcpus_seen() <= MAX_LANE_PCPUS;
    SnapshotOptions::dashboard(STATS_WINDOW, lanes)
}

/// The snapshot the dashboard draws from `model`, summaries and every vCPU's vruntime series
/// included (what the fixture and the tests draw from).
#[cfg(any(test, feature = "fixture"))]
pub(crate) fn dashboard_snapshot(model: &Model) -> model::Snapshot {
    model.snapshot_with(dashboard_options(model))
}

/// The vCPUs (tids) whose vruntime lines the UI thread drew last, which a live feed reads
/// when it takes a snapshot: the chart draws 16 lines, and at 512 vCPUs copying every vCPU's
/// series made most of a frame's snapshot. Unset until the first draw (and for a feed no UI
/// reads): every vCPU's series. A line the UI scrolls to arrives with the next snapshot.
#[derive(Clone, Default)]
pub struct ChartRows(Arc<Mutex<Option<Vec<u32>>>>);

impl ChartRows {
    /// The UI drew the lines of `tids`.
    pub fn set(&self, tids: Vec<u32>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(tids);
    }

    /// The tids drawn last, if anything was drawn.
    pub fn get(&self) -> Option<Vec<u32>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Reader side of the loop: folds events and answers for snapshots.
pub trait Feed {
    /// Fold what arrives within `budget`. `Ok(false)` once nothing more will come.
    fn pump(&mut self, budget: Duration) -> Result<bool, SourceError>;
    /// A replay transport command (live feeds ignore them).
    fn command(&mut self, _command: ReplayCommand) {}
    /// The picture now.
    fn update(&mut self, ended: bool) -> Update;
    /// The vCPUs the chart draws, from now on (feeds that copy every series ignore it).
    fn follow_chart(&mut self, _rows: ChartRows) {}
}

/// Events straight from a live source into the model.
pub struct LiveFeed {
    source: Box<dyn Source>,
    model: Model,
    /// Backing this batch with transparent huge pages (`MADV_HUGEPAGE` over the 2 MiB pages
    /// inside it, ~5 MB at 1 M events/s) was tried for #15 and paid nothing in a same-run A/B
    /// of `render_cpu` at 512 vCPUs (3 rounds: live fold 11.1-15.9% of a core against
    /// 11.8-12.5%, dashboard 22.3-23.7% against 22.3-22.9%). Huge pages for every allocation
    /// (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`) did take the offline fold from 57-61 to 50-53
    /// ns/event: the gain is in the model's heap (histograms, threads), not in this buffer.
    batch: Vec<Event>,
    /// Exits counted in the kernel, read with each batch.
    aggregates: model::ExitAggregates,
    summaries: SummaryCache,
    chart: Option<ChartRows>,
}

impl LiveFeed {
    pub fn new(source: Box<dyn Source>) -> Self {
        LiveFeed {
            source,
            // Ended threads leave a minute after they end, as in a replay of the same events:
            // `top` on a host whose VMs come and go would otherwise list every vCPU it ever
            // saw, the dead ones first when sorted by wait, and keep them in memory for good.
            model: Model::new(ModelConfig {
                retire_ended_after_ns: Some(model::RETIRE_ENDED_AFTER_NS),
                ..ModelConfig::default()
            }),
            batch: Vec::with_capacity(4096),
            aggregates: model::ExitAggregates::default(),
            summaries: SummaryCache::default(),
            chart: None,
        }
    }
}

impl Feed for LiveFeed {
    fn pump(&mut self, budget: Duration) -> Result<bool, SourceError> {
        self.batch.clear();
        let more = self.source.poll(&mut self.batch, budget)?;
        self.model.ingest_batch(&self.batch);
        self.aggregates.clear();
        self.source.take_exit_aggregates(&mut self.aggregates);
        self.model.fold_aggregates(&self.aggregates);
        if !more {
            self.model.finish();
        }
        Ok(more)
    }

    fn update(&mut self, ended: bool) -> Update {
        let charted = self.chart.as_ref().and_then(ChartRows::get);
        Update {
            snapshot: Arc::new(
                self.summaries
                    .snapshot_charting(&self.model, charted.as_deref()),
            ),
            replay: None,
            ended,
        }
    }

    fn follow_chart(&mut self, rows: ChartRows) {
        self.chart = Some(rows);
    }
}

/// Open the dashboard on a live source until `q`, a signal, `opts.duration` or an error.
pub fn run_live(source: Box<dyn Source>, opts: RunOptions) -> Result<(), TuiError> {
    let app = App::new(Mode::Live, source.host().clone(), source.describe());
    run(app, LiveFeed::new(source), opts)
}

/// Open the dashboard on a recording (a [`Track`], usually read from its file a chunk at a
/// time), with a simulated run of its demand to switch to when one is given.
pub fn run_replay(
    recorded: Track,
    host: HostInfo,
    label: String,
    speed: f64,
    simulated: Option<SimulatedRun>,
    opts: RunOptions,
) -> Result<(), TuiError> {
    let mut app = App::new(Mode::Replay, host, label);
    let mut feed = ReplayFeed::from_track(recorded, speed);
    if let Some(sim) = simulated {
        app.simulated_label = Some(sim.label);
        feed = feed.with_simulated(sim.events);
    }
    run(app, feed, opts)
}

/// The loop itself, for any feed.
pub fn run<F: Feed>(mut app: App, mut feed: F, opts: RunOptions) -> Result<(), TuiError> {
    let tick = opts.tick()?;
    app.notes = opts.notes.clone();
    // The caller (the binary: only it installs signal handlers) has SIGINT, SIGTERM and
    // SIGHUP set this flag, so that they end the loop and the terminal is restored.
    let stop = opts.stop.clone();
    let redirect = StderrRedirect::to(opts.stderr_to.as_ref());
    let (update_tx, update_rx) = mpsc::channel::<Update>();
    let (command_tx, command_rx) = mpsc::channel::<ReplayCommand>();
    let ui_stop = stop.clone();
    let theme = opts.theme;
    let clock = opts.clock;
    let chart = ChartRows::default();
    feed.follow_chart(chart.clone());
    let ui = thread::Builder::new()
        .name("kvmscope-ui".into())
        .spawn(move || {
            ui_thread(
                app,
                Channels {
                    updates: update_rx,
                    commands: command_tx,
                    chart,
                },
                ui_stop,
                tick,
                theme,
                clock,
            )
        })
        .map_err(TuiError::Terminal)?;

    log::info!("dashboard loop started at {:.1} Hz", opts.tick_hz);
    let result = fold_loop(
        &mut feed,
        tick,
        &stop,
        opts.duration,
        || command_rx.try_iter().collect(),
        |update| !ui.is_finished() && update_tx.send(update).is_ok(),
    );
    stop.store(true, Ordering::Relaxed);
    drop(update_tx);
    let ui_result = ui.join();
    drop(redirect);
    match ui_result {
        Err(_) => Err(TuiError::Panicked),
        Ok(Err(e)) => Err(TuiError::Terminal(e)),
        Ok(Ok(())) => result,
    }
}

/// Shortest time between two folds: events then arrive in batches of tens to thousands,
/// instead of one wakeup per event (the ring buffer holds far more than this much).
pub const MIN_FOLD_INTERVAL: Duration = Duration::from_millis(20);

/// The reader side on its own: fold `feed` in batches and `publish` a snapshot every `tick`
/// until `stop`, `duration`, a source error or `publish` returning false. `commands` yields
/// the transport commands that arrived since the last call. [`run`] drives it beside the UI
/// thread; the benchmark drives it alone as its no-drawing baseline.
pub fn fold_loop<F: Feed>(
    feed: &mut F,
    tick: Duration,
    stop: &AtomicBool,
    duration: Option<Duration>,
    mut commands: impl FnMut() -> Vec<ReplayCommand>,
    mut publish: impl FnMut(Update) -> bool,
) -> Result<(), TuiError> {
    let started = Instant::now();
    let mut next_publish = started;
    let mut ended = false;
    while !stop.load(Ordering::Relaxed) {
        for command in commands() {
            feed.command(command);
        }
        let cycle = Instant::now();
        let budget = next_publish
            .saturating_duration_since(cycle)
            .min(Duration::from_millis(50));
        if ended {
            thread::sleep(budget);
        } else if !feed.pump(budget).map_err(TuiError::Source)? {
            log::info!("source ended");
            ended = true;
        }
        let now = Instant::now();
        if now >= next_publish {
            if !publish(feed.update(ended)) {
                break;
            }
            next_publish += tick;
            if next_publish < now {
                next_publish = now + tick;
            }
        }
        if duration.is_some_and(|d| started.elapsed() >= d) {
            log::info!("duration over");
            break;
        }
        let rest = (cycle + MIN_FOLD_INTERVAL)
            .min(next_publish)
            .saturating_duration_since(Instant::now());
        if !rest.is_zero() {
            thread::sleep(rest);
        }
    }
    Ok(())
}

/// What the UI thread shares with the reader: snapshots in, transport commands and the
/// charted vCPUs out.
struct Channels {
    updates: Receiver<Update>,
    commands: Sender<ReplayCommand>,
    chart: ChartRows,
}

fn ui_thread(
    mut app: App,
    Channels {
        updates,
        commands,
        chart,
    }: Channels,
    stop: Arc<AtomicBool>,
    tick: Duration,
    theme: Theme,
    clock: bool,
) -> io::Result<()> {
    // Whatever happens in here, the other thread must stop too.
    struct StopOnExit(Arc<AtomicBool>);
    impl Drop for StopOnExit {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_on_exit = StopOnExit(stop.clone());
    // Installs a panic hook that restores the terminal before the message is printed.
    let tty = Tty::open()?;
    let mut terminal = match crate::screen::open() {
        Ok(t) => t,
        Err(e) => {
            // Raw mode may already be on when entering the alternate screen failed.
            ratatui::restore();
            return Err(e);
        }
    };
    crate::stderr::hook_panics();
    let result = (|| -> io::Result<()> {
        let mut next_tick = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            loop {
                match updates.try_recv() {
                    Ok(update) => app.update(update),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Ok(()),
                }
            }
            if clock {
                app.clock = Some(wall_clock());
            }
            terminal.draw(|f| f.render_widget(&Dashboard { app: &app, theme }, f.area()))?;
            chart.set(
                app.rows_from_table(crate::view::CHART_LINES)
                    .iter()
                    .map(|v| v.tid)
                    .collect(),
            );
            next_tick += tick;
            let now = Instant::now();
            if next_tick < now {
                next_tick = now + tick;
            }
            // Keys are handled as they come; the picture is redrawn right after a key so the
            // dashboard feels immediate, otherwise only on the tick.
            let mut redraw = false;
            while !redraw && !stop.load(Ordering::Relaxed) {
                let wait = next_tick.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    break;
                }
                // Wait on the terminal ourselves first: crossterm's reader spins forever on a
                // terminal that hung up (window closed, ssh dropped), so it is only called
                // while the terminal is known to be there.
                if tty.wait(wait.min(Duration::from_millis(100))) == TtyState::HungUp {
                    log::info!("terminal hung up");
                    return Ok(());
                }
                // Everything crossterm has now, including events it buffered earlier.
                while term_event::poll(Duration::ZERO)? {
                    match term_event::read()? {
                        TermEvent::Key(key) => {
                            match app.handle_key(key) {
                                Action::Quit => return Ok(()),
                                Action::Replay(c) => {
                                    let _ = commands.send(c);
                                }
                                Action::None => {}
                            }
                            redraw = true;
                        }
                        TermEvent::Resize(..) => redraw = true,
                        _ => {}
                    }
                }
            }
            if redraw {
                next_tick = Instant::now();
            }
        }
        Ok(())
    })();
    ratatui::restore();
    result
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TtyState {
    /// Input may be waiting (or the wait timed out).
    Ready,
    HungUp,
}

/// The terminal crossterm reads keys from: stdin if it is a terminal, else /dev/tty (the
/// same choice crossterm makes).
struct Tty {
    /// /dev/tty when stdin is not a terminal.
    dev_tty: Option<std::fs::File>,
}

impl Tty {
    fn open() -> io::Result<Tty> {
        if std::io::stdin().is_terminal() {
            return Ok(Tty { dev_tty: None });
        }
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/tty")?;
        Ok(Tty {
            dev_tty: Some(file),
        })
    }

    /// Wait up to `timeout` for input; report a hang-up.
    fn wait(&self, timeout: Duration) -> TtyState {
        let stdin = io::stdin();
        let fd = match &self.dev_tty {
            Some(f) => f.as_fd(),
            None => stdin.as_fd(),
        };
        let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
        // Past Timespec's range (never in practice): wait without a bound, as for a key.
        let timeout = Timespec::try_from(timeout).ok();
        let n = poll(&mut fds, timeout.as_ref()).unwrap_or(0);
        let hang_up = PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL;
        if n > 0 && fds[0].revents().intersects(hang_up) {
            TtyState::HungUp
        } else {
            TtyState::Ready
        }
    }
}

/// Local time as HH:MM:SS. libc: the local time zone (TZ, /etc/localtime) is the C
/// library's to read; rustix and std have none.
fn wall_clock() -> String {
    // SAFETY: time(NULL) has no preconditions.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: an all-zero `tm` is a valid value for localtime_r to overwrite.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the thread-safe variant.
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return String::new();
    }
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::synth;

    #[test]
    fn fold_loop_publishes_on_the_tick_and_stops_at_the_source_end() {
        let mut feed = LiveFeed::new(Box::new(synth::SynthSource::new(synth::demo_stream(1.0))));
        let stop = AtomicBool::new(false);
        let mut updates = vec![];
        fold_loop(
            &mut feed,
            Duration::from_millis(10),
            &stop,
            Some(Duration::from_millis(300)),
            Vec::new,
            |u| {
                updates.push(u);
                true
            },
        )
        .unwrap();
        assert!(
            updates.len() >= 5,
            "about 30 ticks in 300 ms, got {}",
            updates.len()
        );
        let last = updates.last().unwrap();
        assert!(
            last.ended,
            "a 1 s synthetic stream is read long before 300 ms are over"
        );
        assert!(!last.snapshot.vcpus.is_empty());
    }

    #[test]
    fn a_live_session_with_vm_churn_keeps_only_the_threads_of_the_last_minute() {
        // 30 generations of 10 s: 120 vCPU threads over 300 s, on reused tids.
        let mut churn = synth::Churn::new(10_000_000_000);
        churn.exit_every_ns = 50_000_000;
        churn.slice_ns = 20_000_000;
        let mut events = Vec::new();
        for _ in 0..30 {
            events.extend(churn.next_generation());
        }
        let mut feed = LiveFeed::new(Box::new(synth::SynthSource::new(events)));
        let mut most = 0;
        while feed.pump(Duration::ZERO).unwrap() {
            most = most.max(feed.model.thread_slots());
        }
        // Alive: 4 threads; ended in the last 60 s: 6 generations of 4 more, give or take one.
        assert!(
            (4..=4 * 8).contains(&most),
            "thread slots {most} of the 120 threads announced: ended threads should retire"
        );
        let rows = feed.update(true).snapshot.vcpus.len();
        assert!(rows <= 4 * 8, "{rows} rows in the vCPU table");
    }

    #[test]
    fn bad_tick_rates_are_refused() {
        assert!(matches!(
            RunOptions::new(0.0).tick(),
            Err(TuiError::TickRate(_))
        ));
        assert!(matches!(
            RunOptions::new(f64::NAN).tick(),
            Err(TuiError::TickRate(_))
        ));
        assert!(RunOptions::new(10.0).tick().is_ok());
    }
}
