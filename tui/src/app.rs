//! Dashboard state and key handling, kept apart from drawing so both are testable on their
//! own: keys change an [`App`], views only read it.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use model::{HostInfo, Snapshot, VcpuSnapshot};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::replay_keys::{self, ReplayKey};

/// Time windows `+`/`-` step through, seconds: no wider than the lane and vruntime history
/// the dashboard's model keeps (`ModelConfig::history_ns`, 12 s), or the older part of the
/// lanes and the chart would be drawn empty however long the session has run.
pub const ZOOM_STEPS: [f64; 4] = [1.0, 2.0, 5.0, 10.0];
const DEFAULT_ZOOM: usize = 3;
/// How far the arrow keys seek in a replay, ns.
pub const SEEK_STEP_NS: i64 = 5_000_000_000;
/// Rows PgUp / PgDn scroll the vCPU table by (it shows 11 at 120x40).
pub const PAGE_ROWS: usize = 10;

/// vCPU table order, cycled with `s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// VM, then vCPU index.
    Vcpu,
    /// CPU share, largest first.
    Share,
    /// Run-queue wait p99, worst first.
    WaitP99,
    /// Lag behind the run queue's minimum vruntime, largest first.
    Lag,
    Migrations,
    Exits,
}

impl SortKey {
    const ALL: [SortKey; 6] = [
        SortKey::Vcpu,
        SortKey::Share,
        SortKey::WaitP99,
        SortKey::Lag,
        SortKey::Migrations,
        SortKey::Exits,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Vcpu => "vcpu",
            SortKey::Share => "share",
            SortKey::WaitP99 => "wait p99",
            SortKey::Lag => "lag",
            SortKey::Migrations => "mig/s",
            SortKey::Exits => "exits/s",
        }
    }

    fn step(self, by: isize) -> SortKey {
        let i = Self::ALL.iter().position(|&k| k == self).unwrap_or(0) as isize;
        let n = Self::ALL.len() as isize;
        Self::ALL[(i + by).rem_euclid(n) as usize]
    }
}

/// How the vruntime chart places its lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VruntimeMode {
    /// Each line's own progress over the window, run-queue jumps cut: slopes side by side.
    PerLine,
    /// Raw vruntime minus the smallest in the window: spreads and convergence.
    Common,
}

/// Where the dashboard's events come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Live,
    Replay,
}

/// Replay transport as the reader reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReplayStatus {
    pub playing: bool,
    pub speed: f64,
    /// Position from the recording's first event, ns.
    pub position_ns: u64,
    pub length_ns: u64,
    /// The snapshot is of the simulated run, not the recording.
    pub simulated: bool,
}

/// What the UI asks of a replay reader.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReplayCommand {
    Play(bool),
    Speed(f64),
    /// Relative seek, ns (negative = back).
    SeekBy(i64),
    /// Absolute seek from the first event, ns.
    SeekTo(u64),
    /// Show the simulated run (true) or the recording.
    ShowSimulated(bool),
}

/// What a key press asks of the loop beyond changing the [`App`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    None,
    Quit,
    Replay(ReplayCommand),
}

/// What the reader hands the UI on each tick.
#[derive(Clone, Debug)]
pub struct Update {
    pub snapshot: Arc<Snapshot>,
    pub replay: Option<ReplayStatus>,
    /// The source has no more events (file end, duration over).
    pub ended: bool,
}

/// Everything the views read besides the snapshot itself.
#[derive(Clone, Debug)]
pub struct App {
    pub mode: Mode,
    pub host: HostInfo,
    /// "live", "replay: FILE", ...
    pub source_label: String,
    /// The snapshot on screen (held while paused in live mode). Set it with [`App::update`],
    /// which also refreshes `shared_vm_names`.
    pub snapshot: Arc<Snapshot>,
    /// VM names that more than one process uses in `snapshot` (labelled `name@pid`), found
    /// once per snapshot: labels are asked for per row, and at 512 vCPUs a scan per label
    /// was most of a frame.
    shared_vm_names: HashSet<String>,
    pub replay: Option<ReplayStatus>,
    pub ended: bool,
    /// Live: the display is frozen while events keep being folded. Replay: playback stopped.
    pub paused: bool,
    pub show_help: bool,
    pub zoom: usize,
    pub sort: SortKey,
    /// Show only this VM's vCPUs (table, chart, exits); `None` = all.
    pub vm_filter: Option<String>,
    pub vruntime_mode: VruntimeMode,
    /// First vCPU table row shown (the table clamps it to what fits).
    pub table_scroll: usize,
    /// Rows the vCPU table showed at its last draw (0 before one), which the table writes:
    /// scrolling stops where the last row is at the bottom, so that ↑ moves the table at
    /// once after ↓ or PgDn went past the end.
    pub table_rows_shown: Cell<usize>,
    /// Replay: play/pause asked for but not yet confirmed by the reader.
    asked_playing: Option<bool>,
    /// Wall-clock time for the header (`None` in tests to keep snapshots stable).
    pub clock: Option<String>,
    /// Notes from the source itself (a tracepoint missing, a damaged file), shown beside the
    /// model's.
    pub notes: Vec<String>,
    /// Replay with `--simulate`: how the simulated run is named (`m` switches to it).
    pub simulated_label: Option<String>,
    /// Replay: a switch of run asked for but not yet confirmed by the reader.
    asked_simulated: Option<bool>,
    pub quit: bool,
}

impl App {
    pub fn new(mode: Mode, host: HostInfo, source_label: String) -> Self {
        App {
            mode,
            host,
            source_label,
            snapshot: Arc::new(Snapshot::default()),
            shared_vm_names: HashSet::new(),
            replay: None,
            ended: false,
            paused: false,
            show_help: false,
            zoom: DEFAULT_ZOOM,
            sort: SortKey::Vcpu,
            vm_filter: None,
            vruntime_mode: VruntimeMode::PerLine,
            table_scroll: 0,
            table_rows_shown: Cell::new(0),
            asked_playing: None,
            clock: None,
            notes: Vec::new(),
            simulated_label: None,
            asked_simulated: None,
            quit: false,
        }
    }

    /// The time window the lanes and the chart show, seconds.
    pub fn window_s(&self) -> f64 {
        ZOOM_STEPS[self.zoom.min(ZOOM_STEPS.len() - 1)]
    }

    /// Take what the reader sent. A paused live view keeps its picture; a replay is paused
    /// at the reader, so its updates always show (seeks while paused must be visible).
    pub fn update(&mut self, update: Update) {
        self.ended = update.ended;
        if let Some(mut r) = update.replay {
            // Until the reader has seen a play/pause key, keep showing what was asked for
            // rather than flickering back for a tick.
            match self.asked_playing {
                Some(asked) if asked != r.playing => r.playing = asked,
                _ => self.asked_playing = None,
            }
            self.paused = !r.playing;
            if self.asked_simulated == Some(r.simulated) {
                self.asked_simulated = None;
            }
            self.replay = Some(r);
        }
        if self.mode == Mode::Replay || !self.paused {
            self.snapshot = update.snapshot;
            self.shared_vm_names = shared_vm_names(&self.snapshot);
        }
    }

    /// How a VM is called on screen: its name, or `name@pid` when several processes (say,
    /// two VMMs both calling their first VM `vm0`) share the name.
    pub fn vm_label(&self, name: &str, pid: u32) -> String {
        if self.shared_vm_names.contains(name) {
            format!("{name}@{pid}")
        } else {
            name.to_string()
        }
    }

    /// VM labels in the order the snapshot lists the VMs, then any only seen on vCPUs.
    pub fn vm_names(&self) -> Vec<String> {
        let mut names: Vec<String> = vec![];
        let mut seen: HashSet<String> = HashSet::new();
        let labels = self
            .snapshot
            .vms
            .iter()
            .map(|v| self.vm_label(&v.name, v.pid));
        for label in labels.chain(
            self.snapshot
                .vcpus
                .iter()
                .map(|v| self.vm_label(&v.vm, v.pid)),
        ) {
            if seen.insert(label.clone()) {
                names.push(label);
            }
        }
        names
    }

    /// vCPUs after the VM filter, in the chosen order.
    pub fn visible_vcpus(&self) -> Vec<&VcpuSnapshot> {
        let mut rows: Vec<&VcpuSnapshot> = self
            .snapshot
            .vcpus
            .iter()
            .filter(|v| {
                self.vm_filter
                    .as_ref()
                    .is_none_or(|f| &self.vm_label(&v.vm, v.pid) == f)
            })
            .collect();
        let by_name = |a: &&VcpuSnapshot, b: &&VcpuSnapshot| a.listing_key().cmp(&b.listing_key());
        rows.sort_by(|a, b| {
            let key = match self.sort {
                SortKey::Vcpu => std::cmp::Ordering::Equal,
                SortKey::Share => b.cpu_share.total_cmp(&a.cpu_share),
                SortKey::WaitP99 => b.wait.p99.cmp(&a.wait.p99),
                SortKey::Lag => b.lag.cmp(&a.lag),
                SortKey::Migrations => b.migrations_per_second.total_cmp(&a.migrations_per_second),
                SortKey::Exits => b.exits_per_second.total_cmp(&a.exits_per_second),
            };
            key.then_with(|| by_name(a, b))
        });
        rows
    }

    /// At most `max` of [`App::visible_vcpus`], from the table's first row on: what the
    /// per-vCPU panels beside the table (vruntime lines, exits) show, so that with hundreds
    /// of vCPUs they follow the table's scrolling instead of drawing every vCPU.
    pub fn rows_from_table(&self, max: usize) -> Vec<&VcpuSnapshot> {
        let rows = self.visible_vcpus();
        let first = self.table_scroll.min(rows.len().saturating_sub(max));
        rows.into_iter().skip(first).take(max).collect()
    }

    /// Apply one key press.
    pub fn handle_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c') if ctrl => self.quit_action(),
            KeyCode::Char('q') => self.quit_action(),
            KeyCode::Esc if self.show_help => {
                self.show_help = false;
                Action::None
            }
            KeyCode::Esc => self.quit_action(),
            KeyCode::Char('?') | KeyCode::Char('h') => {
                self.show_help = !self.show_help;
                Action::None
            }
            KeyCode::Char(' ') | KeyCode::Char('p') => {
                self.paused = !self.paused;
                if self.mode == Mode::Replay {
                    if let Some(r) = self.replay.as_mut() {
                        r.playing = !self.paused;
                    }
                    self.asked_playing = Some(!self.paused);
                    Action::Replay(ReplayCommand::Play(!self.paused))
                } else {
                    Action::None
                }
            }
            KeyCode::Char('+') | KeyCode::Char('=') => {
                self.zoom = self.zoom.saturating_sub(1);
                Action::None
            }
            KeyCode::Char('-') | KeyCode::Char('_') => {
                self.zoom = (self.zoom + 1).min(ZOOM_STEPS.len() - 1);
                Action::None
            }
            KeyCode::Tab => {
                self.step_vm(1);
                Action::None
            }
            KeyCode::BackTab => {
                self.step_vm(-1);
                Action::None
            }
            KeyCode::Char('s') => {
                self.sort = self.sort.step(1);
                Action::None
            }
            KeyCode::Char('S') => {
                self.sort = self.sort.step(-1);
                Action::None
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.scroll_table(-1);
                Action::None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.scroll_table(1);
                Action::None
            }
            // 512 vCPUs are 500 presses of ↓ otherwise.
            KeyCode::PageUp => {
                self.scroll_table(-(PAGE_ROWS as isize));
                Action::None
            }
            KeyCode::PageDown => {
                self.scroll_table(PAGE_ROWS as isize);
                Action::None
            }
            KeyCode::Char('v') => {
                self.vruntime_mode = match self.vruntime_mode {
                    VruntimeMode::PerLine => VruntimeMode::Common,
                    VruntimeMode::Common => VruntimeMode::PerLine,
                };
                Action::None
            }
            _ if self.mode == Mode::Replay => self.replay_key(key.code),
            _ => Action::None,
        }
    }

    /// Moves the table's first row by `rows`, no further than where its last row shows at
    /// the bottom (before the table was drawn, than where the last row is the first shown).
    fn scroll_table(&mut self, rows: isize) {
        let shown = self.table_rows_shown.get().max(1);
        let last = self.visible_vcpus().len().saturating_sub(shown);
        // Past-the-end values (a filter or a resize since) are clamped by the table; bring
        // them back first.
        self.table_scroll = self
            .table_scroll
            .min(last)
            .saturating_add_signed(rows)
            .min(last);
    }

    fn quit_action(&mut self) -> Action {
        self.quit = true;
        Action::Quit
    }

    fn replay_key(&mut self, code: KeyCode) -> Action {
        let speed = self.replay.map_or(1.0, |r| r.speed);
        let Some(key) = replay_keys::lookup(code) else {
            return Action::None;
        };
        let command = match key {
            ReplayKey::SeekForward => ReplayCommand::SeekBy(SEEK_STEP_NS),
            ReplayKey::SeekBack => ReplayCommand::SeekBy(-SEEK_STEP_NS),
            ReplayKey::Start => ReplayCommand::SeekTo(0),
            ReplayKey::End => ReplayCommand::SeekTo(u64::MAX),
            ReplayKey::Faster => ReplayCommand::Speed((speed * 2.0).min(64.0)),
            ReplayKey::Slower => ReplayCommand::Speed((speed / 2.0).max(1.0 / 64.0)),
            ReplayKey::SwitchRun if self.simulated_label.is_some() => {
                let showing = self
                    .asked_simulated
                    .unwrap_or_else(|| self.showing_simulated());
                self.asked_simulated = Some(!showing);
                ReplayCommand::ShowSimulated(!showing)
            }
            ReplayKey::SwitchRun => return Action::None,
        };
        if let (ReplayCommand::Speed(s), Some(r)) = (command, self.replay.as_mut()) {
            r.speed = s;
        }
        Action::Replay(command)
    }

    /// The snapshot on screen is of the simulated run.
    pub fn showing_simulated(&self) -> bool {
        self.replay.is_some_and(|r| r.simulated)
    }

    /// The scheduler the snapshot on screen ran under: the host's, or the simulated policy.
    pub fn scheduler_label(&self) -> &str {
        match &self.simulated_label {
            Some(label) if self.showing_simulated() => label,
            _ => &self.host.scheduler,
        }
    }

    /// `tab` cycles all → first VM → ... → last VM → all.
    fn step_vm(&mut self, by: isize) {
        let names = self.vm_names();
        if names.is_empty() {
            self.vm_filter = None;
            return;
        }
        // Position 0 is "all", 1.. are the VMs.
        let current = match &self.vm_filter {
            None => 0,
            Some(f) => names.iter().position(|n| n == f).map_or(0, |i| i + 1),
        };
        let n = names.len() as isize + 1;
        let next = (current as isize + by).rem_euclid(n) as usize;
        self.vm_filter = if next == 0 {
            None
        } else {
            Some(names[next - 1].clone())
        };
        self.table_scroll = 0;
    }
}

/// Names that VMs (or vCPU rows) of more than one process carry.
fn shared_vm_names(s: &Snapshot) -> HashSet<String> {
    let mut first_pid: HashMap<&str, u32> = HashMap::new();
    let mut shared = HashSet::new();
    let names = s.vms.iter().map(|v| (v.name.as_str(), v.pid));
    for (name, pid) in names.chain(s.vcpus.iter().map(|v| (v.vm.as_str(), v.pid))) {
        if *first_pid.entry(name).or_insert(pid) != pid {
            shared.insert(name.to_string());
        }
    }
    shared
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
