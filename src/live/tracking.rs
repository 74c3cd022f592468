//! Which threads the live source tracks: each is announced (`TaskInfo`, its affinity and, in
//! counters mode, its baseline sample) when tracking starts; rescans add and drop threads and
//! processes; exited threads are retired after their last switch-out. Everything it asks of
//! the kernel goes through [`TrackingHost`], so unit tests drive the whole flow.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::Context;
use model::{Affinity, Comm, Event, TaskInfo, Unobserved, UnobservedKind, VmEnded};
use probes::targets::{TargetSpec, TrackedThread};

use super::affinity_poll::AffinityPoll;
use super::exiting::ExitingThreads;
use super::qemu_relabel::QemuEntryMapping;
use super::rescan_plan::RescanPlan;
use super::tracking_host::TrackingHost;

/// The tracked threads and processes, and the events their changes make.
pub(super) struct Tracking {
    /// Tracked threads by tid.
    tracked: BTreeMap<u32, TrackedThread>,
    /// Tracked processes (pid → VM name) not yet reported ended.
    processes: BTreeMap<u32, String>,
    /// Tracked threads whose exit was seen, still tracked until their last switch-out.
    exiting: ExitingThreads,
    /// The allowed CPUs last reported per thread, to find a host process's changes.
    affinity: AffinityPoll,
    /// QEMU VMs that QMP and thread names cannot map: all their threads are watched and
    /// labelled with the vCPU id their `kvm_entry` events carry (see [`QemuEntryMapping`]).
    pub(super) qemu_entry: QemuEntryMapping,
    /// Threads a rescan found and could not track, tid → pid (each warned about and counted
    /// once, as an [`Unobserved`] thread, while it is failing); every rescan tries them again.
    /// A thread leaves once tracked or gone, so a later failure (or its reused tid) is said.
    track_failed: BTreeMap<u32, u32>,
    /// Events tracking made (announcements, affinity changes, VM ends), for the next poll.
    pending: Vec<Event>,
}

impl Tracking {
    /// `kvm_entry_ids`: unmapped QEMU VMs are watched whole and mapped from `kvm_entry`;
    /// `probes_loaded`: said in the warning when they cannot be.
    pub(super) fn new(
        kvm_entry_ids: bool,
        probes_loaded: bool,
        initial_unmapped: &[probes::qemu::QemuVm],
        warnings: &mut Vec<String>,
    ) -> Tracking {
        let mut tracking = Tracking {
            tracked: BTreeMap::new(),
            processes: BTreeMap::new(),
            exiting: ExitingThreads::default(),
            affinity: AffinityPoll::default(),
            qemu_entry: QemuEntryMapping::new(kvm_entry_ids, probes_loaded),
            track_failed: BTreeMap::new(),
            pending: Vec::new(),
        };
        tracking.warn_unmapped(initial_unmapped, true, warnings);
        tracking
    }

    /// Moves the events tracking made since the last call to `out`.
    pub(super) fn take_events(&mut self, out: &mut Vec<Event>) {
        out.append(&mut self.pending);
    }

    pub(super) fn is_tracked(&self, tid: u32) -> bool {
        self.tracked.contains_key(&tid)
    }

    /// The tracked processes (pid → VM name) not reported ended, which the session's end
    /// reports; none are left.
    pub(super) fn take_processes(&mut self) -> BTreeMap<u32, String> {
        std::mem::take(&mut self.processes)
    }

    /// Starts tracking `t` and announces it; `nice` when the caller knows it (the bundled
    /// VMM set it). An error when the host cannot track it: nothing is announced then.
    pub(super) fn start(
        &mut self,
        host: &mut impl TrackingHost,
        t: TrackedThread,
        nice: Option<i32>,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        if self.tracked.contains_key(&t.tid) {
            return Ok(());
        }
        let nice = nice.or_else(|| host.nice(t.pid, t.tid)).unwrap_or(0);
        // In counters mode the baseline sample is also the announcement: run, wait, switches
        // and migrations all count from that one reading. With probes, schedstat is read
        // right after tracking began, so the kernel counters that switches carry are counted
        // from here and run or wait before the first switch event is not lost.
        let baseline = host
            .track(&t, warnings)
            .with_context(|| format!("cannot track thread {} ({})", t.tid, t.comm))?;
        self.processes.entry(t.pid).or_insert_with(|| t.vm.clone());
        let info = match &baseline {
            Some(s) => {
                let seed = model::Schedstat {
                    run_ns: s.run_ns,
                    wait_ns: s.wait_ns,
                };
                // Its samples place it: no state of its own (see `TaskInfo::start`).
                task_info(&t, s.ts, nice, Some(seed), None)
            }
            None => {
                let seed = host.schedstat(t.pid, t.tid);
                // Stamped before the state is read, so a wakeup or switch the probes see
                // after that read comes after the announcement, never before it.
                let ts = host.now_ns();
                let start = host.thread_start(t.pid, t.tid);
                task_info(&t, ts, nice, seed, start)
            }
        };
        self.pending.push(info);
        self.pending.extend(baseline.map(Event::CounterSample));
        // Where it may run, for replays under another policy (a thread that cannot be read
        // any more is about to go: its switches alone stand for it then).
        if let Some(cpus) = host.allowed_cpus(t.tid) {
            self.affinity.started(t.tid, &cpus);
            self.pending.push(Event::Affinity(Affinity {
                ts: host.now_ns(),
                tid: t.tid,
                cpus,
            }));
        }
        if t.vcpu.is_none() && self.qemu_entry.enabled && host.is_qemu(t.pid) {
            self.qemu_entry.mapper.watch(t.pid, t.tid);
            self.qemu_entry.pids.insert(t.pid);
        }
        self.tracked.insert(t.tid, t);
        Ok(())
    }

    fn stop(&mut self, host: &mut impl TrackingHost, tid: u32) {
        host.untrack(tid);
        self.tracked.remove(&tid);
        self.affinity.stopped(tid);
        self.qemu_entry.mapper.forget(tid);
    }

    /// Finds threads and processes that appeared or vanished since the last scan of `spec`,
    /// and the tracked threads' affinity changes. Returns whether a tracked thread's tid was
    /// found reused by a new thread, which this rescan stopped and started.
    pub(super) fn rescan(
        &mut self,
        host: &mut impl TrackingHost,
        spec: &TargetSpec,
        warnings: &mut Vec<String>,
    ) -> bool {
        let known_pids: BTreeSet<u32> = self.processes.keys().copied().collect();
        let scan = host.scan(spec, &known_pids, self.qemu_entry.enabled);
        self.warn_unmapped(&scan.unmapped, false, warnings);
        let qemu_entry = &self.qemu_entry;
        let plan = RescanPlan::new(
            &self.tracked,
            scan.found,
            &scan.unreadable,
            |t| qemu_entry.keeps(t) && host.thread_exists(t.pid, t.tid),
            &self.exiting,
        );
        let reused = plan
            .stop
            .iter()
            .any(|tid| plan.start.iter().any(|t| t.tid == *tid));
        for tid in plan.stop {
            self.stop(host, tid);
        }
        // Before new threads are announced: their masks were just read.
        let now = host.now_ns();
        self.affinity
            .changes(now, |tid| host.allowed_cpus(tid), &mut self.pending);
        for (tid, vcpu) in plan.relabel {
            self.qemu_entry.mapper.forget(tid);
            self.relabel(host, tid, vcpu);
        }
        self.track_failed
            .retain(|&tid, &mut pid| host.thread_exists(pid, tid));
        for t in plan.start {
            let (tid, pid) = (t.tid, t.pid);
            // The session goes on without it: said once, and tried again on the next rescan
            // (a thread that appears later must not end a session of many).
            match self.start(host, t, None, warnings) {
                Ok(()) => {
                    self.track_failed.remove(&tid);
                }
                Err(e) if self.track_failed.insert(tid, pid) != Some(pid) => {
                    warnings.push(format!(
                        "{e:#}: its events are left out (tried again on each rescan)"
                    ));
                    self.pending.push(Event::Unobserved(Unobserved {
                        ts: host.now_ns(),
                        what: UnobservedKind::Threads,
                        count: 1,
                    }));
                }
                Err(_) => {}
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
                    ts: host.now_ns(),
                    pid,
                    vm,
                }));
            }
        }
        reused
    }

    /// Stops tracking the exited threads whose end `batch` shows, seen at `now` (see
    /// [`super::exiting`]).
    pub(super) fn retire_exited(
        &mut self,
        host: &mut impl TrackingHost,
        batch: &[Event],
        now: Instant,
    ) {
        let tracked = &self.tracked;
        let done = self
            .exiting
            .retire(batch, |tid| tracked.contains_key(&tid), now);
        for tid in done {
            self.stop(host, tid);
        }
    }

    /// Gives tracked thread `tid` its vCPU index and announces it again (the model and the
    /// sinks update the thread). False if `tid` is not tracked.
    pub(super) fn relabel(&mut self, host: &mut impl TrackingHost, tid: u32, vcpu: u32) -> bool {
        let Some(t) = self.tracked.get_mut(&tid) else {
            return false;
        };
        t.vcpu = Some(vcpu);
        let nice = host.nice(t.pid, t.tid).unwrap_or(0);
        // Already tracked: the model counts from the first TaskInfo's figures.
        let info = task_info(t, host.now_ns(), nice, None, None);
        self.pending.push(info);
        true
    }
}

/// The announcement of tracked thread `t`, stamped `ts`.
fn task_info(
    t: &TrackedThread,
    ts: u64,
    nice: i32,
    schedstat: Option<model::Schedstat>,
    start: Option<model::ThreadStart>,
) -> Event {
    Event::TaskInfo(TaskInfo {
        ts,
        tid: t.tid,
        pid: t.pid,
        comm: Comm::new(&t.comm),
        vm: t.vm.clone(),
        vcpu: t.vcpu,
        nice,
        schedstat,
        start,
    })
}
