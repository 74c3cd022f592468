//! The live source: what `trace`, `report`, `record` and the dashboard read when they watch
//! this host rather than a file.
//!
//! It wires three things into one `model::Source`:
//! - the targets (`--demo`, `--pid`, `--all-kvm`, `--qemu`), resolved by `probes::targets` and
//!   rescanned about once a second so threads and VMs that come and go are noticed;
//! - the eBPF probes (`probes::loader`), whose decoded events are passed through;
//! - with `--demo`, the bundled VMM started in-process, whose guest-gap records join the
//!   stream as `Event::GuestGap`.
//!
//! Every tracked thread is announced with an `Event::TaskInfo` before its first other event; a
//! tracked process that disappears yields `Event::VmEnded`. A thread whose vCPU index is learnt
//! later is announced again: QEMU VMs that neither QMP nor thread names map are watched whole
//! where `kvm_entry` fires, and each thread is labelled with the vCPU id of its first
//! `kvm_entry` (`probes::qemu::KvmEntryMapper`). `--qemu` with no name also waits for VMs that
//! start later.
//!
//! In counters mode (`--no-bpf`, or by itself when this process lacks the capabilities to load
//! BPF) no probes are loaded: the stream carries the task and VM events, guest gaps, and a
//! `CounterSample` per tracked thread every `--sample-every` ([`counter_source`]).
//!
//! Stopping (the `stop` flag from Ctrl-C/SIGTERM, or [`LiveSource::stop_after`]) stops the VMM,
//! drains the ring buffer and detaches the probes; dropping the source does the same, so a
//! panic or an early `?` never leaves probes attached or vCPU threads running.
//!
//! Use from a command (`report`, `record`, ...):
//! ```text
//! live::require_privileges(Some("record"), &args.target)?;   // one clear line if not root
//! let stop = live::stop_on_signals()?;                       // Ctrl-C / SIGTERM
//! let mut source = LiveSource::open(&args.target, stop)?;
//! if let Some(d) = args.duration { source.stop_after(Duration::from_secs_f64(d)); }
//! while source.poll(&mut batch, Duration::from_millis(100))? { /* batch → sink */ }
//! source.lost_total(); source.vmm_summary(); source.host();   // for headers and summaries
//! ```
//! The first events are one `TaskInfo` per tracked thread; the last poll (returning `true`)
//! carries the final drain, then a `VmEnded` for each of the bundled VMM's VMs (stopped with the
//! session) or one `ObservationEnd` (other processes run on).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use model::{
    Affinity, Comm, Event, GuestGap, HostInfo, Lost, ObservationEnd, Source, SourceError, TaskInfo,
    VmEnded,
};
use probes::counters::SchedStat;
use probes::loader::{ExitMode, ProbeOptions, Probes, ProgramStats};
use probes::targets::{self, TargetSpec, TrackedThread};

use crate::cli::{ExitsArg, TargetArgs};
use counter_source::CounterSource;

mod counter_source;
mod qemu_relabel;
mod target_scan;

use target_scan::{kvm_entry_fires, resolve_initial, scan_pid, spec_from_args};

use qemu_relabel::QemuEntryMapping;

/// How often targets are rescanned for new or vanished threads.
const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// CLOCK_MONOTONIC now, ns: the clock of every event timestamp (the probes' own, `bpf_ktime_get_ns`).
pub use hostfacts::monotonic_ns;

/// A stop flag set by the first Ctrl-C or SIGTERM; a second one exits at once (status 130),
/// in case stopping itself hangs.
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Order matters: the exit is armed only once the flag below has been set once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .context("cannot install the signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install the signal handler")?;
    }
    Ok(stop)
}

/// Refuse early, in one line, when the eBPF probes cannot be loaded by this user.
/// `command` names the subcommand in the message (`trace`, `report`, ...).
/// Without the capabilities counters mode starts instead (see [`counters_mode`]).
pub fn require_privileges(command: Option<&str>, target: &TargetArgs) -> anyhow::Result<()> {
    let _ = command;
    if counters_mode(target) {
        return Ok(());
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "no BTF at /sys/kernel/btf/vmlinux: this kernel was built without \
             CONFIG_DEBUG_INFO_BTF, which the probes need (try --no-bpf for counters only)"
        );
    }
    Ok(())
}

/// Whether this session reads counters instead of loading BPF: asked for (`--no-bpf`), or
/// this process lacks the capabilities to load it (CAP_BPF with CAP_PERFMON, or
/// CAP_SYS_ADMIN), whatever its uid.
pub fn counters_mode(target: &TargetArgs) -> bool {
    target.no_bpf || !probes::host::may_load_bpf()
}

/// How targets are found again on each rescan.
enum Targets {
    /// The in-process VMM: its vCPU threads are known and live as long as the source.
    Demo,
    Spec(TargetSpec),
}

pub struct LiveSource {
    host: HostInfo,
    stop: Arc<AtomicBool>,
    deadline: Option<Instant>,
    targets: Targets,
    vmm: Option<vmm::RunningVmm>,
    vmm_summary: Option<vmm::Summary>,
    /// Probes were loaded (they are detached, and `probes` emptied, when the source ends).
    bpf: bool,
    probes: Option<Probes>,
    /// Tracked threads by tid.
    tracked: BTreeMap<u32, TrackedThread>,
    /// Tracked processes (pid → VM name) not yet reported ended.
    processes: BTreeMap<u32, String>,
    /// Counters mode: the sampler of every tracked thread's kernel counters.
    counters: Option<CounterSource>,
    /// Kernel events stamped after the closing timestamp, dropped at the final drain.
    dropped_after_close: u64,
    /// Events produced by the source itself (TaskInfo, VmEnded), emitted on the next poll.
    pending: Vec<Event>,
    gaps: Vec<GuestGap>,
    last_rescan: Instant,
    start_ns: u64,
    finished: bool,
    /// Lost-event total read just before the probes were detached.
    final_lost: u64,
    /// Guest-gap records the VMM lost so far (already reported as `Lost`).
    gaps_lost: u64,
    /// Tracked threads whose exit was seen, still tracked until their last switch-out (or a
    /// deadline): it comes after `sched_process_exit`, once the exit has released the
    /// thread's memory and files, and must carry the thread's sched entity.
    exiting: Vec<(u32, Instant)>,
    warnings: Vec<String>,
    /// QEMU VMs that QMP and thread names cannot map: all their threads are watched and
    /// labelled with the vCPU id their `kvm_entry` events carry (see [`QemuEntryMapping`]).
    qemu_entry: QemuEntryMapping,
    /// How guest exits arrive (`--exits`), and the aggregates read and not yet taken.
    exits: ExitMode,
    exit_aggregates: Vec<model::ExitAggregate>,
    /// Each program's run-time counters, read just before the probes were detached.
    final_program_stats: Vec<ProgramStats>,
}

impl LiveSource {
    /// Resolve the targets, load and attach the probes (unless `--no-bpf`), start the bundled
    /// VMM for `--demo`, and start tracking. Runs until `stop` is set (or [`Self::stop_after`]).
    pub fn open(target: &TargetArgs, stop: Arc<AtomicBool>) -> anyhow::Result<LiveSource> {
        require_privileges(None, target)?;
        let no_bpf = counters_mode(target);
        if no_bpf && !target.no_bpf {
            eprintln!(
                "kvmscope: cannot load BPF without CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): \
                 counters mode, sampled every {:?} (as with --no-bpf)",
                target.sample_every
            );
        }
        let host = probes::host::host_info();

        // Resolve external targets before loading anything: a wrong pid is the most common
        // mistake and deserves an instant, clear answer.
        let spec = spec_from_args(target);
        // Unmappable QEMU VMs can be mapped from kvm_entry events only if probes see them.
        let kvm_entry_ids = !no_bpf && kvm_entry_fires();
        let mut qemu_mappings = probes::qemu::QemuMappings::default();
        let (initial, unmapped) = match &spec {
            Some(spec) => resolve_initial(spec, kvm_entry_ids, &mut qemu_mappings)?,
            None => (Vec::new(), Vec::new()),
        };
        let scenario = match (&target.scenario, target.demo) {
            (Some(path), true) => Some(vmm::Scenario::from_toml_file(path)?),
            (None, true) => Some(vmm::Scenario::default_demo()),
            (_, false) => None,
        };

        // Probes before the VMM, so its vCPU threads are tracked before their guests run.
        let probes = if no_bpf {
            None
        } else {
            let options = ProbeOptions {
                ring_bytes: target.ring_bytes,
                exits: exit_mode(target),
                ..Default::default()
            };
            Some(Probes::load(options).context("cannot load the eBPF probes")?)
        };
        let warnings = probes
            .as_ref()
            .map(|p| p.warnings().to_vec())
            .unwrap_or_default();
        // Relative times start once the probes are attached (loading can take seconds).
        let start_ns = monotonic_ns();

        let mut source = LiveSource {
            host,
            stop,
            deadline: None,
            targets: match spec {
                Some(spec) => Targets::Spec(spec),
                None => Targets::Demo,
            },
            vmm: None,
            vmm_summary: None,
            bpf: probes.is_some(),
            probes,
            tracked: BTreeMap::new(),
            processes: BTreeMap::new(),
            counters: no_bpf.then(|| CounterSource::new(target.sample_every)),
            dropped_after_close: 0,
            pending: Vec::new(),
            gaps: Vec::new(),
            last_rescan: Instant::now(),
            start_ns,
            finished: false,
            final_lost: 0,
            gaps_lost: 0,
            exiting: Vec::new(),
            warnings,
            qemu_entry: QemuEntryMapping::new(kvm_entry_ids, qemu_mappings),
            exits: exit_mode(target),
            exit_aggregates: Vec::new(),
            final_program_stats: Vec::new(),
        };

        if let Some(scenario) = scenario {
            let pid = std::process::id();
            let mut track_error = None;
            // Track each vCPU thread once it exists but before its guest runs: its very first
            // exits and switches are in the stream.
            let running = vmm::start_with(&scenario, |vcpus| {
                for v in vcpus {
                    let thread = TrackedThread {
                        pid,
                        tid: v.tid,
                        comm: v.thread.clone(),
                        vm: v.vm_name.clone(),
                        vcpu: Some(v.vcpu),
                    };
                    if let Err(e) = source.start_tracking(thread, Some(v.nice)) {
                        track_error.get_or_insert(e);
                    }
                }
            })
            .context("cannot start the bundled VMM")?;
            source.host.tsc_hz = Some(running.tsc_hz());
            source.vmm = Some(running);
            if let Some(e) = track_error {
                // Dropping the source stops the VMM and detaches the probes.
                return Err(e);
            }
        } else {
            source.warn_unmapped(&unmapped, true);
            for t in initial {
                source.start_tracking(t, None)?;
            }
        }
        Ok(source)
    }

    /// Stop by itself once `d` has passed since now.
    pub fn stop_after(&mut self, d: Duration) {
        self.deadline = Some(Instant::now() + d);
    }

    /// CLOCK_MONOTONIC ns when the source opened: the origin of relative timestamps.
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }

    /// Whether events come from the eBPF probes (false with `--no-bpf`).
    pub fn has_probes(&self) -> bool {
        self.bpf
    }

    /// Problems that did not stop the source (a tracepoint missing on this kernel, ...).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// How guest exits reach the model (`--exits`): "stream", "aggregate" or "both".
    pub fn exit_mode(&self) -> &'static str {
        match self.exits {
            ExitMode::Stream => "stream",
            ExitMode::Aggregate => "aggregate",
            ExitMode::Both => "both",
        }
    }

    /// Run-time counters of every attached program (non-zero with
    /// `kernel.bpf_stats_enabled=1`); final once the source has finished.
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        match &self.probes {
            Some(p) => p.program_stats(),
            None => self.final_program_stats.clone(),
        }
    }

    /// Lost kernel events so far, as counted in BPF.
    pub fn lost_total(&self) -> u64 {
        self.probes
            .as_ref()
            .map_or(self.final_lost, |p| p.lost_total())
    }

    /// Kernel events the final drain found stamped after the closing timestamp and left out
    /// (also in [`Self::warnings`]).
    pub fn dropped_after_close(&self) -> u64 {
        self.dropped_after_close
    }

    /// The in-process VMM's summary, once it has been stopped.
    pub fn vmm_summary(&self) -> Option<&vmm::Summary> {
        self.vmm_summary.as_ref()
    }

    fn start_tracking(&mut self, t: TrackedThread, nice: Option<i32>) -> anyhow::Result<()> {
        if self.tracked.contains_key(&t.tid) {
            return Ok(());
        }
        let nice = nice
            .or_else(|| targets::ThreadStat::read(t.pid, t.tid).ok().map(|s| s.nice))
            .unwrap_or(0);
        if let Some(p) = &mut self.probes {
            p.track(t.tid)
                .with_context(|| format!("cannot track thread {} ({})", t.tid, t.comm))?;
        }
        self.processes.entry(t.pid).or_insert_with(|| t.vm.clone());
        // Read right after tracking began, so the kernel counters that switches carry are
        // counted from here and run or wait before the first switch event is not lost.
        let schedstat = SchedStat::read(t.pid, t.tid)
            .ok()
            .map(|s| model::Schedstat {
                run_ns: s.run_ns,
                wait_ns: s.wait_ns,
            });
        self.pending.push(task_info(&t, nice, schedstat));
        // Where it may run, for replays under another policy (a thread that cannot be read
        // any more is about to go: its switches alone stand for it then).
        if let Ok(cpus) = vmm::sched::get_affinity(t.tid) {
            self.pending.push(Event::Affinity(Affinity {
                ts: monotonic_ns(),
                tid: t.tid,
                cpus,
            }));
        }
        if let Some(c) = &mut self.counters {
            // The baseline sample, right after the announcement.
            c.track(t.pid, t.tid, &mut self.pending, &mut self.warnings);
        }
        if t.vcpu.is_none() && self.qemu_entry.enabled && probes::qemu::is_qemu(t.pid) {
            self.qemu_entry.mapper.watch(t.pid, t.tid);
            self.qemu_entry.pids.insert(t.pid);
        }
        self.tracked.insert(t.tid, t);
        Ok(())
    }

    fn stop_tracking(&mut self, tid: u32) {
        if let Some(p) = &mut self.probes {
            // The thread is gone; a failure to remove it from the filter map costs nothing.
            let _ = p.untrack(tid);
        }
        if let Some(c) = &mut self.counters {
            c.untrack(tid);
        }
        self.tracked.remove(&tid);
        self.qemu_entry.mapper.forget(tid);
    }

    /// Find threads and processes that appeared or vanished since the last scan.
    fn rescan(&mut self) -> anyhow::Result<()> {
        self.last_rescan = Instant::now();
        let Targets::Spec(spec) = &self.targets else {
            return Ok(());
        };
        let known_pids: BTreeSet<u32> = self.processes.keys().copied().collect();
        let mut now: Vec<TrackedThread> = Vec::new();
        // Processes that still exist but could not be read this time keep their threads.
        let mut keep: BTreeSet<u32> = BTreeSet::new();
        let mut unmapped = Vec::new();
        match spec {
            TargetSpec::Pids(pids) => {
                for &pid in pids {
                    scan_pid(pid, &mut now, &mut keep);
                }
            }
            TargetSpec::AllKvm => {
                let pids: BTreeSet<u32> = targets::kvm_processes()
                    .into_iter()
                    .chain(known_pids.iter().copied())
                    .collect();
                for pid in pids {
                    scan_pid(pid, &mut now, &mut keep);
                }
            }
            TargetSpec::Qemu { selector, qmp } => {
                let selector = selector.as_deref().filter(|s| !s.is_empty());
                let entry_ids = self.qemu_entry.enabled;
                let found =
                    self.qemu_entry
                        .mappings
                        .session_threads(selector, qmp.as_deref(), entry_ids);
                match found {
                    Ok(found) => {
                        now = found.threads;
                        unmapped = found.unmapped;
                    }
                    Err(_) => keep.extend(
                        known_pids
                            .iter()
                            .copied()
                            .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()),
                    ),
                }
            }
            TargetSpec::Threads(t) => {
                now = t
                    .iter()
                    .filter(|t| targets::ThreadStat::read(t.pid, t.tid).is_ok())
                    .cloned()
                    .collect();
            }
        }

        self.warn_unmapped(&unmapped, false);
        let now_tids: BTreeSet<u32> = now.iter().map(|t| t.tid).collect();
        let gone: Vec<u32> = self
            .tracked
            .values()
            .filter(|t| {
                !now_tids.contains(&t.tid) && !keep.contains(&t.pid) && !self.qemu_entry.keeps(t)
            })
            // Exited threads leave /proc before their last switch: `retire_exited` ends them.
            .filter(|t| !self.exiting.iter().any(|(x, _)| *x == t.tid))
            .map(|t| t.tid)
            .collect();
        for tid in gone {
            self.stop_tracking(tid);
        }
        for t in now {
            match (self.tracked.get(&t.tid).map(|known| known.vcpu), t.vcpu) {
                // Watched unlabelled so far, mapped now (QMP answered at last, or the
                // kvm_entry mapping completed): announce its index.
                (Some(None), Some(vcpu)) => {
                    self.qemu_entry.mapper.forget(t.tid);
                    self.relabel(t.tid, vcpu);
                }
                _ => self.start_tracking(t, None)?,
            }
        }
        let live_pids: BTreeSet<u32> = self.tracked.values().map(|t| t.pid).collect();
        let ended: Vec<u32> = self
            .processes
            .keys()
            .copied()
            .filter(|pid| !live_pids.contains(pid))
            .collect();
        for pid in ended {
            if let Some(vm) = self.processes.remove(&pid) {
                self.pending.push(Event::VmEnded(VmEnded {
                    ts: monotonic_ns(),
                    pid,
                    vm,
                }));
            }
        }
        Ok(())
    }

    /// An exited thread's tid can be reused by an unrelated thread: stop filtering on it
    /// soon rather than at the next rescan, but only after its last switch-out (state
    /// TASK_DEAD), or a second after its exit if that switch is never seen.
    fn retire_exited(&mut self, batch: &[Event]) {
        const GRACE: Duration = Duration::from_secs(1);
        let now = Instant::now();
        let mut done: Vec<u32> = Vec::new();
        for e in batch {
            match e {
                Event::TaskExit(x)
                    if self.tracked.contains_key(&x.tid)
                        && !self.exiting.iter().any(|(t, _)| *t == x.tid) =>
                {
                    self.exiting.push((x.tid, now + GRACE));
                }
                Event::SchedSwitch(s)
                    if s.prev_task_state().is_dead()
                        && self.exiting.iter().any(|(t, _)| *t == s.prev_tid) =>
                {
                    done.push(s.prev_tid);
                }
                _ => {}
            }
        }
        done.extend(
            self.exiting
                .iter()
                .filter(|(_, deadline)| *deadline <= now)
                .map(|(t, _)| *t),
        );
        if done.is_empty() {
            return;
        }
        self.exiting.retain(|(t, _)| !done.contains(t));
        for tid in done {
            self.stop_tracking(tid);
        }
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Move the VMM's new guest gaps into `out`; fail on a guest crash.
    fn drain_vmm(&mut self, out: &mut Vec<Event>) -> anyhow::Result<()> {
        let Some(vmm) = self.vmm.take() else {
            return Ok(());
        };
        vmm.drain_gaps(&mut self.gaps);
        out.extend(self.gaps.drain(..).map(Event::GuestGap));
        self.drain_affinity_changes(&vmm, out);
        self.note_gaps_lost(&vmm, out);
        if let Some(failure) = vmm.failure() {
            // Stop the other vCPUs now (the VMM already has); the summary is of no use.
            self.finished = true;
            drop(vmm);
            return Err(anyhow::Error::new(failure).context("the bundled VMM failed"));
        }
        self.vmm = Some(vmm);
        Ok(())
    }

    /// Guest-gap records the VMM could not keep (ring overruns) become `Lost` events, so a
    /// gap count is never silently short.
    /// The bundled VMM's affinity rotation, as `Affinity` events of the threads tracked.
    fn drain_affinity_changes(&mut self, vmm: &vmm::RunningVmm, out: &mut Vec<Event>) {
        let mut changes = Vec::new();
        vmm.drain_affinity_changes(&mut changes);
        out.extend(
            changes
                .into_iter()
                .filter(|a| self.tracked.contains_key(&a.tid))
                .map(Event::Affinity),
        );
        let dropped = vmm.affinity_changes_dropped();
        if dropped > 0 && !self.warnings.iter().any(|w| w.contains("affinity changes")) {
            self.warnings.push(format!(
                "at least {dropped} affinity changes of the bundled VMM were left out (drained too \
                 late): a replay of this recording places those vCPUs by older affinities"
            ));
        }
    }

    fn note_gaps_lost(&mut self, vmm: &vmm::RunningVmm, out: &mut Vec<Event>) {
        let total = vmm.gaps_lost();
        if total > self.gaps_lost {
            out.push(Event::Lost(Lost {
                ts: monotonic_ns(),
                cpu: u32::MAX,
                count: total - self.gaps_lost,
            }));
            self.gaps_lost = total;
        }
    }

    /// Stop the VMM, drain what is left, detach the probes and report the end of every VM.
    fn finish(&mut self, out: &mut Vec<Event>) -> anyhow::Result<()> {
        self.finished = true;
        out.append(&mut self.pending);
        // In counters mode observation ends with the closing sample, taken while the threads
        // still run (their /proc files go with them): the figures cover up to it exactly.
        let counters_close = self.counters.as_mut().map(|c| {
            c.tick(out, true);
            monotonic_ns()
        });
        let mut vmm_error = None;
        let bundled = self.vmm.is_some();
        if let Some(vmm) = self.vmm.take() {
            // Stop the guests first, so every exit they make is still seen by the probes.
            vmm.drain_gaps(&mut self.gaps);
            self.drain_affinity_changes(&vmm, out);
            self.note_gaps_lost(&vmm, out);
            match vmm.stop() {
                Ok(summary) => self.vmm_summary = Some(summary),
                Err(e) => vmm_error = Some(e),
            }
        }
        // Gaps that ended after a counters-mode close are after the observation: left out.
        let (gaps, late_gaps): (Vec<GuestGap>, Vec<GuestGap>) = self
            .gaps
            .drain(..)
            .partition(|g| counters_close.is_none_or(|c| g.end <= c));
        out.extend(gaps.into_iter().map(Event::GuestGap));
        self.dropped_after_close = late_gaps.len() as u64;
        if self.dropped_after_close > 0 {
            self.warnings.push(format!(
                "{} events stamped after the session's closing timestamp were left out \
                 (the final drain runs after it)",
                self.dropped_after_close
            ));
        }
        // Observation ends here: the model counts every tracked thread up to the closing
        // event's timestamp, which must be the newest so that it never arrives late.
        let stopped = monotonic_ns();
        let before = out.len();
        if let Some(p) = &mut self.probes {
            // The ring may still hold the last events (the VMM's final switches and exits).
            // One read is not enough: it stops at a record another CPU has reserved and not
            // yet committed, leaving the records behind it unread (sid under TCG: a vCPU's
            // last 3 exits missing from trace, 5742 against the VMM's 5745). Read until a read
            // finds nothing, within a bound (other processes' events keep coming with
            // --all-kvm).
            let began = Instant::now();
            loop {
                let before_read = out.len();
                p.poll(out, Duration::from_millis(20))
                    .context("cannot read the probes' ring buffer")?;
                if out.len() == before_read || began.elapsed() >= FINAL_DRAIN_MAX {
                    break;
                }
            }
            // Each read is in time order; the reads together are put back in order too.
            out[before..].sort_by_key(Event::ts);
        }
        let ts = counters_close.unwrap_or_else(|| closing_ts(stopped, &out[before..]));
        // Detach now, not at drop: the summary's lost count must be final.
        if let Some(mut p) = self.probes.take() {
            self.final_lost = p.lost_total();
            p.take_exit_aggregates(&mut self.exit_aggregates);
            self.final_program_stats = p.program_stats();
            // Warnings raised while running (undecodable records, ...) belong in the summary.
            for w in p.warnings() {
                if !self.warnings.contains(w) {
                    self.warnings.push(w.clone());
                }
            }
            if p.undecodable() > 0 {
                self.warnings
                    .push(format!("{} records could not be decoded", p.undecodable()));
            }
            drop(p);
        }
        // The bundled VMM's guests were stopped above: they ended. Processes of others run
        // on; only our observation of them ends.
        let processes = std::mem::take(&mut self.processes);
        if bundled {
            for (pid, vm) in processes {
                out.push(Event::VmEnded(VmEnded { ts, pid, vm }));
            }
        } else {
            out.push(Event::ObservationEnd(ObservationEnd { ts }));
        }
        match vmm_error {
            Some(e) => Err(anyhow::Error::new(e).context("the bundled VMM failed")),
            None => Ok(()),
        }
    }
}

/// `--exits`, stream when not given (each command sets its own default before opening).
fn exit_mode(target: &TargetArgs) -> ExitMode {
    match target.exits {
        None | Some(ExitsArg::Stream) => ExitMode::Stream,
        Some(ExitsArg::Aggregate) => ExitMode::Aggregate,
        Some(ExitsArg::Both) => ExitMode::Both,
    }
}

/// How long the final drain may keep reading a ring that is still being written.
const FINAL_DRAIN_MAX: Duration = Duration::from_secs(1);

/// The closing event's timestamp: when the source stopped, or the newest event of the final
/// drain if that is later. Every drained event is kept: those stamped after the stop used to
/// be dropped, uncounted: the final `Lost` records (stamped when read), and any event whose
/// CPU's clock ran ahead of the stopping thread's (the likely cause of `report`'s IOIO count
/// one short of the VMM's per vCPU, seen once on sid under multi-threaded TCG).
fn closing_ts(stopped: u64, final_drain: &[Event]) -> u64 {
    final_drain.iter().map(Event::ts).fold(stopped, u64::max)
}

/// The announcement of tracked thread `t`, stamped now.
fn task_info(t: &TrackedThread, nice: i32, schedstat: Option<model::Schedstat>) -> Event {
    Event::TaskInfo(TaskInfo {
        ts: monotonic_ns(),
        tid: t.tid,
        pid: t.pid,
        comm: Comm::new(&t.comm),
        vm: t.vm.clone(),
        vcpu: t.vcpu,
        nice,
        schedstat,
    })
}

impl LiveSource {
    fn poll_events(&mut self, out: &mut Vec<Event>, timeout: Duration) -> anyhow::Result<bool> {
        if self.finished {
            return Ok(false);
        }
        if self.stop_requested() {
            self.finish(out)?;
            return Ok(true);
        }
        out.append(&mut self.pending);
        if self.last_rescan.elapsed() >= RESCAN_EVERY {
            self.rescan()?;
            out.append(&mut self.pending);
        }
        self.drain_vmm(out)?;
        // Wake up in time for the next rescan, the deadline and the stop flag.
        let mut wait = timeout.min(RESCAN_EVERY.saturating_sub(self.last_rescan.elapsed()));
        if let Some(d) = self.deadline {
            wait = wait.min(d.saturating_duration_since(Instant::now()));
        }
        wait = wait.min(Duration::from_millis(100));
        match &mut self.probes {
            Some(p) => {
                let before = out.len();
                p.poll(out, wait)
                    .context("cannot read the probes' ring buffer")?;
                p.take_exit_aggregates(&mut self.exit_aggregates);
                self.qemu_entry.mapper.observe(&out[before..]);
                if self.qemu_entry.mapper.has_news() {
                    self.relabel_from_kvm_entry(out);
                }
                self.retire_exited(&out[before..]);
            }
            None => {
                if let Some(c) = &self.counters {
                    wait = wait.min(c.until_due());
                }
                std::thread::sleep(wait);
                if let Some(c) = &mut self.counters {
                    c.tick(out, false);
                }
            }
        }
        Ok(true)
    }
}

impl Source for LiveSource {
    fn poll(&mut self, out: &mut Vec<Event>, timeout: Duration) -> Result<bool, SourceError> {
        // Keep the whole context chain in the message: callers print the error as one line.
        self.poll_events(out, timeout)
            .map_err(|e| SourceError::from(format!("{e:#}")))
    }

    fn host(&self) -> &HostInfo {
        &self.host
    }

    fn take_exit_aggregates(&mut self, out: &mut Vec<model::ExitAggregate>) {
        out.append(&mut self.exit_aggregates);
    }

    fn describe(&self) -> String {
        match &self.targets {
            Targets::Demo => "live: bundled VMM (--demo)".to_string(),
            Targets::Spec(TargetSpec::Pids(p)) => format!(
                "live: pid {}",
                p.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            ),
            Targets::Spec(TargetSpec::AllKvm) => "live: all KVM processes".to_string(),
            Targets::Spec(TargetSpec::Qemu { selector, .. }) => match selector {
                Some(s) => format!("live: QEMU {s}"),
                None => "live: all QEMU VMs".to_string(),
            },
            Targets::Spec(TargetSpec::Threads(_)) => "live: threads".to_string(),
        }
    }
}

impl Drop for LiveSource {
    fn drop(&mut self) {
        // Runs on early returns and panics too: never leave vCPU threads running or probes
        // attached. Probes detach when dropped (their links close with their fds).
        if let Some(vmm) = self.vmm.take() {
            // `stop` joins the vCPU threads with the VMM's own timeout.
            let _ = vmm.stop();
        }
        self.probes.take();
    }
}

#[cfg(test)]
mod closing_tests {
    use super::*;

    #[test]
    fn the_closing_event_is_the_newest_and_nothing_drained_is_dropped() {
        let lost = |ts| {
            Event::Lost(Lost {
                ts,
                cpu: 0,
                count: 1,
            })
        };
        assert_eq!(closing_ts(100, &[]), 100);
        assert_eq!(closing_ts(100, &[lost(40), lost(90)]), 100);
        // Stamped after the stop (read later, or another CPU's clock ahead): kept, and the
        // closing event moves after it so that it never arrives late.
        assert_eq!(closing_ts(100, &[lost(40), lost(130), lost(120)]), 130);
    }
}
