//! The real [`TrackingHost`]: the probes' `tracked` map (or, in counters mode, the counter
//! sampler), `/proc` through `hostfacts` and `probes::targets`, and the session's cache of
//! QEMU mappings.

use std::collections::BTreeSet;

use model::CounterSample;
use probes::counters::SchedStat;
use probes::loader::Probes;
use probes::qemu::QemuMappings;
use probes::targets::{self, TargetSpec, TrackedThread};

use super::counter_source::CounterSource;
use super::target_scan::scan_pid;
use super::tracking_host::{TargetScan, TrackingHost};

/// What a live session reads its threads through: the probes when loaded, the counter
/// sampler in counters mode.
pub(super) struct KernelSide {
    /// Probes were loaded and not yet detached (the session's end takes them).
    pub(super) probes: Option<Probes>,
    /// Counters mode: the sampler of every tracked thread's kernel counters.
    pub(super) counters: Option<CounterSource>,
    /// The QEMU VMs mapped so far, kept across rescans (QMP is asked once per VM).
    pub(super) qemu_mappings: QemuMappings,
}

impl TrackingHost for KernelSide {
    fn now_ns(&self) -> u64 {
        hostfacts::monotonic_ns()
    }

    fn track(
        &mut self,
        t: &TrackedThread,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<Option<CounterSample>> {
        if let Some(p) = &mut self.probes {
            p.track(t.tid)?;
        }
        Ok(match &mut self.counters {
            Some(c) => c.track(t.pid, t.tid, warnings),
            None => None,
        })
    }

    fn untrack(&mut self, tid: u32) {
        if let Some(p) = &mut self.probes {
            // The thread is gone; a failure to remove it from the filter map costs nothing.
            let _ = p.untrack(tid);
        }
        if let Some(c) = &mut self.counters {
            c.untrack(tid);
        }
    }

    fn nice(&self, pid: u32, tid: u32) -> Option<i32> {
        targets::ThreadStat::read(pid, tid).ok().map(|s| s.nice)
    }

    fn schedstat(&self, pid: u32, tid: u32) -> Option<model::Schedstat> {
        SchedStat::read(pid, tid).ok().map(|s| model::Schedstat {
            run_ns: s.run_ns,
            wait_ns: s.wait_ns,
        })
    }

    fn thread_start(&self, pid: u32, tid: u32) -> Option<model::ThreadStart> {
        let stat = targets::ThreadStat::read(pid, tid).ok()?;
        Some(model::ThreadStart {
            state: model::TaskState::from_letter(stat.state)?,
            cpu: stat.processor,
        })
    }

    fn allowed_cpus(&self, tid: u32) -> Option<Vec<u32>> {
        hostfacts::allowed_cpus(tid).ok()
    }

    fn thread_exists(&self, pid: u32, tid: u32) -> bool {
        hostfacts::process::thread_exists(pid, tid)
    }

    fn scan(
        &mut self,
        spec: &TargetSpec,
        known_pids: &BTreeSet<u32>,
        kvm_entry_ids: bool,
    ) -> TargetScan {
        let mut scan = TargetScan::default();
        match spec {
            TargetSpec::Pids(pids) => {
                for &pid in pids {
                    scan_pid(pid, &mut scan.found, &mut scan.unreadable);
                }
            }
            TargetSpec::AllKvm => {
                let pids: BTreeSet<u32> = targets::kvm_processes()
                    .into_iter()
                    .chain(known_pids.iter().copied())
                    .collect();
                for pid in pids {
                    scan_pid(pid, &mut scan.found, &mut scan.unreadable);
                }
            }
            TargetSpec::Qemu { selector, qmp } => {
                let selector = selector.as_deref().filter(|s| !s.is_empty());
                match self
                    .qemu_mappings
                    .session_threads(selector, qmp.as_deref(), kvm_entry_ids)
                {
                    Ok(found) => {
                        scan.found = found.threads;
                        scan.unmapped = found.unmapped;
                    }
                    Err(_) => scan.unreadable.extend(
                        known_pids
                            .iter()
                            .copied()
                            .filter(|&pid| hostfacts::process::process_exists(pid)),
                    ),
                }
            }
            TargetSpec::Threads(t) => {
                scan.found = t
                    .iter()
                    .filter(|t| targets::ThreadStat::read(t.pid, t.tid).is_ok())
                    .cloned()
                    .collect();
            }
        }
        scan
    }

    fn is_qemu(&self, pid: u32) -> bool {
        probes::qemu::is_qemu(pid)
    }

    fn qemu_cpu_index(&self, pid: u32, vcpu_id: u32) -> u32 {
        probes::qemu::cpu_index_of(pid, vcpu_id)
    }

    fn note_kvm_entry_ids(&mut self, pid: u32, seen: &[(u32, u32)]) -> bool {
        self.qemu_mappings.note_kvm_entry_ids(pid, seen)
    }
}
