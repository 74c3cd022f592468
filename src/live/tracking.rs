//! Which threads the live source tracks: each is announced (`TaskInfo`, its affinity and, in
//! counters mode, its baseline sample) when tracking starts; rescans add and drop threads and
//! processes; exited threads are retired after their last switch-out.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::Context;
use model::{Affinity, Comm, Event, TaskInfo, VmEnded};
use probes::counters::SchedStat;
use probes::targets::{self, TargetSpec, TrackedThread};

use super::rescan_plan::RescanPlan;
use super::target_scan::scan_pid;
use super::{monotonic_ns, LiveSource};
use crate::target::Watch;

impl LiveSource {
    pub(super) fn start_tracking(
        &mut self,
        t: TrackedThread,
        nice: Option<i32>,
    ) -> anyhow::Result<()> {
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
        // In counters mode the baseline sample is also the announcement: run, wait, switches
        // and migrations all count from that one reading. With probes, schedstat is read
        // right after tracking began, so the kernel counters that switches carry are counted
        // from here and run or wait before the first switch event is not lost.
        let baseline = match &mut self.counters {
            Some(c) => c.track(t.pid, t.tid, &mut self.warnings),
            None => None,
        };
        let info = match &baseline {
            Some(s) => {
                let seed = model::Schedstat {
                    run_ns: s.run_ns,
                    wait_ns: s.wait_ns,
                };
                task_info(&t, s.ts, nice, Some(seed))
            }
            None => {
                let seed = SchedStat::read(t.pid, t.tid)
                    .ok()
                    .map(|s| model::Schedstat {
                        run_ns: s.run_ns,
                        wait_ns: s.wait_ns,
                    });
                task_info(&t, monotonic_ns(), nice, seed)
            }
        };
        self.pending.push(info);
        self.pending.extend(baseline.map(Event::CounterSample));
        // Where it may run, for replays under another policy (a thread that cannot be read
        // any more is about to go: its switches alone stand for it then).
        if let Ok(cpus) = vmm::sched::get_affinity(t.tid) {
            self.affinity.started(t.tid, &cpus);
            self.pending.push(Event::Affinity(Affinity {
                ts: monotonic_ns(),
                tid: t.tid,
                cpus,
            }));
        }
        if t.vcpu.is_none() && self.qemu_entry.enabled && probes::qemu::is_qemu(t.pid) {
            self.qemu_entry.mapper.watch(t.pid, t.tid);
            self.qemu_entry.pids.insert(t.pid);
        }
        self.tracked.insert(t.tid, t);
        Ok(())
    }

    pub(super) fn stop_tracking(&mut self, tid: u32) {
        if let Some(p) = &mut self.probes {
            // The thread is gone; a failure to remove it from the filter map costs nothing.
            let _ = p.untrack(tid);
        }
        if let Some(c) = &mut self.counters {
            c.untrack(tid);
        }
        self.tracked.remove(&tid);
        self.affinity.stopped(tid);
        self.qemu_entry.mapper.forget(tid);
    }

    /// Find threads and processes that appeared or vanished since the last scan.
    pub(super) fn rescan(&mut self) -> anyhow::Result<()> {
        self.last_rescan = Instant::now();
        let Watch::Host(spec) = &self.watch else {
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
                            .filter(|&pid| hostfacts::process::process_exists(pid)),
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
        let qemu_entry = &self.qemu_entry;
        let plan = RescanPlan::new(
            &self.tracked,
            now,
            &keep,
            |t| qemu_entry.keeps(t),
            &self.exiting,
        );
        for tid in plan.stop {
            self.stop_tracking(tid);
        }
        // Before new threads are announced: their masks were just read.
        self.poll_affinity();
        for (tid, vcpu) in plan.relabel {
            self.qemu_entry.mapper.forget(tid);
            self.relabel(tid, vcpu);
        }
        for t in plan.start {
            self.start_tracking(t, None)?;
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

    /// Stop tracking the exited threads whose end `batch` shows (see [`super::exiting`]).
    pub(super) fn retire_exited(&mut self, batch: &[Event]) {
        let tracked = &self.tracked;
        let done = self
            .exiting
            .retire(batch, |tid| tracked.contains_key(&tid), Instant::now());
        for tid in done {
            self.stop_tracking(tid);
        }
    }
}

/// The announcement of tracked thread `t`, stamped `ts`.
pub(super) fn task_info(
    t: &TrackedThread,
    ts: u64,
    nice: i32,
    schedstat: Option<model::Schedstat>,
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
    })
}
