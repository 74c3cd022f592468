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
//! start later. Who is tracked is [`tracking::Tracking`]'s to decide, and it asks the kernel
//! only through [`tracking_host::TrackingHost`], so its unit tests need no root.
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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use model::{Event, GuestGap, HostInfo, Source, SourceError};
use probes::loader::{ExitMode, ProbeOptions, Probes, ProgramStats};
use probes::targets::{TargetSpec, TrackedThread};

use crate::cli::ExitsArg;
use crate::target::{Reading, Target, Watch};

mod affinity_poll;
mod closing;
mod counter_source;
mod exiting;
mod kernel_side;
mod preflight;
mod qemu_relabel;
mod rescan_plan;
mod target_scan;
mod task_groups;
mod tracking;
#[cfg(test)]
mod tracking_flow_tests;
mod tracking_host;
mod vmm_feed;

use counter_source::CounterSource;
use kernel_side::KernelSide;
pub use preflight::{require_privileges, stop_on_signals};
use target_scan::{kvm_entry_fires, resolve_initial};
use task_groups::TaskGroups;
use tracking::Tracking;

/// How often targets are rescanned for new or vanished threads.
const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// CLOCK_MONOTONIC now, ns: the clock of every event timestamp (the probes' own, `bpf_ktime_get_ns`).
pub use hostfacts::monotonic_ns;

pub struct LiveSource {
    host: HostInfo,
    stop: Arc<AtomicBool>,
    deadline: Option<Instant>,
    /// What is watched: the bundled VMM, or processes found again on each rescan.
    watch: Watch,
    vmm: Option<vmm::RunningVmm>,
    vmm_summary: Option<vmm::Summary>,
    /// Probes were loaded (they are detached, and `kernel.probes` emptied, when the source
    /// ends).
    bpf: bool,
    /// The probes or the counter sampler, and what tracking reads of the host.
    kernel: KernelSide,
    /// The tracked threads and processes.
    tracking: Tracking,
    /// Each task's group, recorded the first time a switch shows it (`Target::task_groups`).
    task_groups: Option<TaskGroups>,
    /// Kernel events stamped after the closing timestamp, dropped at the final drain.
    dropped_after_close: u64,
    gaps: Vec<GuestGap>,
    last_rescan: Instant,
    start_ns: u64,
    finished: bool,
    /// Lost-event total read just before the probes were detached.
    final_lost: probes::LostByCause,
    /// Guest-gap records the VMM lost so far (already reported as `Lost`).
    gaps_lost: u64,
    warnings: Vec<String>,
    /// How guest exits arrive (`--exits`), and the aggregates read and not yet taken.
    exits: ExitMode,
    exit_aggregates: model::ExitAggregates,
    /// Each program's run-time counters, read just before the probes were detached.
    final_program_stats: Vec<ProgramStats>,
}

impl LiveSource {
    /// Resolve the targets, load and attach the probes (unless `--no-bpf`), start the bundled
    /// VMM for `--demo`, and start tracking. Runs until `stop` is set (or [`Self::stop_after`]).
    pub fn open(target: Target, stop: Arc<AtomicBool>) -> anyhow::Result<LiveSource> {
        let exits = exit_mode(&target);
        require_privileges(&target)?;
        let no_bpf = target.counters_mode();
        if target.reading == Reading::CountersWithoutCapabilities {
            eprintln!(
                "kvmscope: cannot load BPF without CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): \
                 counters mode, sampled every {:?} (as with --no-bpf)",
                target.sample_every
            );
        }
        let host = probes::host::host_info();

        // Resolve external targets before loading anything: a wrong pid is the most common
        // mistake and deserves an instant, clear answer.
        // Unmappable QEMU VMs can be mapped from kvm_entry events only if probes see them.
        let kvm_entry_ids = !no_bpf && kvm_entry_fires();
        let mut qemu_mappings = probes::qemu::QemuMappings::default();
        let (initial, unmapped, scenario) = match &target.watch {
            Watch::Host(spec) => {
                let (initial, unmapped) =
                    resolve_initial(spec, target.wait_for_vms, kvm_entry_ids, &mut qemu_mappings)?;
                (initial, unmapped, None)
            }
            Watch::Demo(scenario) => (Vec::new(), Vec::new(), Some(scenario.clone())),
        };

        // Probes before the VMM, so its vCPU threads are tracked before their guests run.
        let probes = if no_bpf {
            None
        } else {
            let options = ProbeOptions {
                ring_bytes: target.ring_bytes,
                exits,
                ..Default::default()
            };
            Some(Probes::load(options).context("cannot load the eBPF probes")?)
        };
        let mut warnings = probes
            .as_ref()
            .map(|p| p.warnings().to_vec())
            .unwrap_or_default();
        let tracking = Tracking::new(kvm_entry_ids, probes.is_some(), &unmapped, &mut warnings);
        // Relative times start once the probes are attached (loading can take seconds).
        let start_ns = monotonic_ns();

        let mut source = LiveSource {
            host,
            stop,
            deadline: None,
            watch: target.watch,
            vmm: None,
            vmm_summary: None,
            bpf: probes.is_some(),
            kernel: KernelSide {
                probes,
                counters: no_bpf.then(|| CounterSource::new(target.sample_every)),
                qemu_mappings,
            },
            tracking,
            task_groups: target.task_groups.then(TaskGroups::default),
            dropped_after_close: 0,
            gaps: Vec::new(),
            last_rescan: Instant::now(),
            start_ns,
            finished: false,
            final_lost: probes::LostByCause::default(),
            gaps_lost: 0,
            warnings,
            exits,
            exit_aggregates: model::ExitAggregates::default(),
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
                    let started = source.tracking.start(
                        &mut source.kernel,
                        thread,
                        Some(v.nice),
                        &mut source.warnings,
                    );
                    if let Err(e) = started {
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
            for t in initial {
                source
                    .tracking
                    .start(&mut source.kernel, t, None, &mut source.warnings)?;
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
        match &self.kernel.probes {
            Some(p) => p.program_stats(),
            None => self.final_program_stats.clone(),
        }
    }

    /// Lost kernel events so far, as counted in BPF.
    pub fn lost_total(&self) -> u64 {
        self.lost_by_cause().total()
    }

    /// [`Self::lost_total`] by where the records were going (which ring was full).
    pub fn lost_by_cause(&self) -> probes::LostByCause {
        self.kernel
            .probes
            .as_ref()
            .map_or(self.final_lost, |p| p.lost_by_cause())
    }

    /// Tasks seen running that had exited before their group could be read (each has a
    /// task-group record that says so).
    pub fn task_groups_unread(&self) -> u64 {
        self.task_groups.as_ref().map_or(0, TaskGroups::unread)
    }

    /// Guest gap records the bundled VMM had no room for (each also an `Event::Lost`).
    pub fn vmm_gaps_lost(&self) -> u64 {
        self.gaps_lost
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
    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn poll_events(&mut self, out: &mut Vec<Event>, timeout: Duration) -> anyhow::Result<bool> {
        if self.finished {
            return Ok(false);
        }
        if self.stop_requested() {
            self.finish(out)?;
            return Ok(true);
        }
        // Everything this poll adds: the task-group records see the announcements too.
        let polled_from = out.len();
        self.tracking.take_events(out);
        if self.last_rescan.elapsed() >= RESCAN_EVERY {
            self.last_rescan = Instant::now();
            if let Watch::Host(spec) = &self.watch {
                let reused = self
                    .tracking
                    .rescan(&mut self.kernel, spec, &mut self.warnings);
                // The model folds exit aggregates after a batch's events, to the thread that
                // holds their tid then: the old thread's last counts (read as the new one
                // was tracked) go with this batch, the new thread's announcement with the
                // next.
                if reused {
                    if let Some(p) = &mut self.kernel.probes {
                        p.take_exit_aggregates(&mut self.exit_aggregates);
                    }
                    return Ok(true);
                }
            }
            self.tracking.take_events(out);
        }
        self.drain_vmm(out)?;
        // Wake up in time for the next rescan, the deadline and the stop flag.
        let mut wait = timeout.min(RESCAN_EVERY.saturating_sub(self.last_rescan.elapsed()));
        if let Some(d) = self.deadline {
            wait = wait.min(d.saturating_duration_since(Instant::now()));
        }
        wait = wait.min(Duration::from_millis(100));
        match &mut self.kernel.probes {
            Some(p) => {
                let before = out.len();
                p.poll(out, wait)
                    .context("cannot read the probes' ring buffer")?;
                p.take_exit_aggregates(&mut self.exit_aggregates);
                if let Some(groups) = &mut self.task_groups {
                    groups.note(out, polled_from, hostfacts::task_group::task_group);
                }
                // Relabelled threads are announced after the batch that mapped them.
                let mut relabelled = Vec::new();
                let batch = &out[before..];
                self.tracking
                    .relabel_from_kvm_entry(&mut self.kernel, batch, &mut relabelled);
                self.tracking
                    .retire_exited(&mut self.kernel, batch, Instant::now());
                out.append(&mut relabelled);
            }
            None => {
                if let Some(c) = &self.kernel.counters {
                    wait = wait.min(c.until_due());
                }
                std::thread::sleep(wait);
                if let Some(c) = &mut self.kernel.counters {
                    c.tick(out, false);
                }
            }
        }
        Ok(true)
    }
}

/// `--exits`, stream when not given (each command sets its own default before opening).
fn exit_mode(target: &Target) -> ExitMode {
    match target.exits {
        None | Some(ExitsArg::Stream) => ExitMode::Stream,
        Some(ExitsArg::Aggregate) => ExitMode::Aggregate,
        Some(ExitsArg::Both) => ExitMode::Both,
    }
}

impl Source for LiveSource {
    fn poll(&mut self, out: &mut Vec<Event>, timeout: Duration) -> Result<bool, SourceError> {
        // The whole context chain goes along as sources: callers print it as one line.
        self.poll_events(out, timeout).map_err(SourceError::from)
    }

    fn host(&self) -> &HostInfo {
        &self.host
    }

    fn take_exit_aggregates(&mut self, out: &mut model::ExitAggregates) {
        out.append(&mut self.exit_aggregates);
    }

    fn describe(&self) -> String {
        match &self.watch {
            Watch::Demo(_) => "live: bundled VMM (--demo)".to_string(),
            Watch::Host(TargetSpec::Pids(p)) => format!(
                "live: pid {}",
                p.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            ),
            Watch::Host(TargetSpec::AllKvm) => "live: all KVM processes".to_string(),
            Watch::Host(TargetSpec::Qemu { selector, .. }) => match selector {
                Some(s) => format!("live: QEMU {s}"),
                None => "live: all QEMU VMs".to_string(),
            },
            Watch::Host(TargetSpec::Threads(_)) => "live: threads".to_string(),
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
        self.kernel.probes.take();
    }
}
