//! Snapshots: the model's state as the plain [`Snapshot`] every view reads, over a window,
//! with or without the pCPU lanes and vruntime series (a whole-run report needs neither).

use std::collections::{BTreeMap, HashMap};

use super::clocks::Cum;
use super::lanes::{Cpu, Seg};
use super::owner::{Owner, OwnerTime};
use super::resume::ResumeTracker;
use super::task::{TState, Task};
use super::{jain, Model};
use crate::{
    LaneOwner, LaneSegment, Occupancy, PcpuSnapshot, PcpuTime, Percentiles, ResumeLatency,
    Snapshot, VcpuLatencyBuckets, VcpuSnapshot, VcpuState, VmSnapshot, VruntimeSeries, WaitCulprit,
    Window,
};

/// What a snapshot covers and carries. Each part costs in proportion to the threads or
/// pCPUs it covers; a sink asks only for what it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// The window of the per-vCPU, per-VM and fairness figures.
    pub window: Window,
    /// Build each pCPU's lane (the segments over the history window).
    pub lanes: bool,
    /// Build each thread's vruntime series.
    pub vruntime_series: bool,
    /// Summarise the distributions: latency percentiles (per-vCPU wait and resume, per-exit
    /// latency, the all-vCPU resume figures), wait culprits and the pCPUs' occupancy
    /// breakdowns. Without it those are left empty (default), and the rest (counters, the
    /// latency bucket counts, shares, lag) costs about half as much at 512 vCPUs.
    pub summaries: bool,
    /// Per-vCPU wait percentiles, also without `summaries` (the dashboard sorts by them).
    pub wait_percentiles: bool,
    /// The all-vCPU resume figures, also without `summaries` (the dashboard's VMCS panel).
    pub resume_all: bool,
    /// Per-vCPU latency bucket counts (the exporter's histograms).
    pub latency_buckets: bool,
}

impl SnapshotOptions {
    /// Everything, over `window`.
    pub fn full(window: Window) -> Self {
        SnapshotOptions {
            window,
            lanes: true,
            vruntime_series: true,
            summaries: true,
            wait_percentiles: true,
            resume_all: true,
            latency_buckets: true,
        }
    }

    /// What the dashboard draws, over `window`: counters, shares and lag of every vCPU with
    /// its wait percentiles, the all-vCPU resume figures, the vruntime series, and the lanes
    /// when `lanes` (a screen shows a few dozen at most). No per-vCPU resume or exit
    /// percentiles, culprits, occupancy breakdowns or bucket counts, which it never shows.
    pub fn dashboard(window: Window, lanes: bool) -> Self {
        SnapshotOptions {
            window,
            lanes,
            vruntime_series: true,
            summaries: false,
            wait_percentiles: true,
            resume_all: true,
            latency_buckets: false,
        }
    }

    /// The whole run's figures without lanes and series: what a report prints.
    pub fn figures() -> Self {
        SnapshotOptions {
            lanes: false,
            vruntime_series: false,
            ..SnapshotOptions::full(Window::WholeRun)
        }
    }

    /// The whole run's counters, shares and latency bucket counts, no summaries: what the
    /// exporter serves at every scrape.
    pub fn counters() -> Self {
        SnapshotOptions {
            summaries: false,
            wait_percentiles: false,
            resume_all: false,
            ..SnapshotOptions::figures()
        }
    }
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions::full(Window::WholeRun)
    }
}

impl Model {
    /// Everything over the whole run.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_with(SnapshotOptions::default())
    }

    /// Per-vCPU, per-VM and fairness figures over `window` (pCPU occupancy always carries all
    /// three windows). Latency percentiles and culprits always cover the whole run.
    pub fn snapshot_window(&self, window: Window) -> Snapshot {
        self.snapshot_with(SnapshotOptions::full(window))
    }

    /// A snapshot as `opts` asks.
    pub fn snapshot_with(&self, opts: SnapshotOptions) -> Snapshot {
        let now = self.now;
        let start = self.start.unwrap_or(0);
        let figures = self.window_figures(opts.window);
        let entitled = self.entitled_shares(&figures);
        let rq_min = self.run_queue_min_vruntime();
        let mut all = ResumeTracker::default();
        // Slots in use: every slot unless threads are retired (`retire_ended_after_ns`).
        let slots: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| !self.tasks[i].vacant)
            .collect();
        let vcpus: Vec<VcpuSnapshot> = slots
            .iter()
            .map(|&i| {
                if opts.summaries || opts.resume_all {
                    all.merge(&self.tasks[i].resume);
                }
                self.vcpu_view(i, figures[i], entitled[i], &rq_min, opts)
            })
            .collect();
        let (vms, fairness) = self.vm_views(&slots, &vcpus);
        let pcpus = self
            .cpus
            .iter()
            .enumerate()
            .filter(|(_, c)| c.seen)
            .map(|(i, c)| self.pcpu_view(i as u32, c, opts))
            .collect();
        let vruntime = if opts.vruntime_series {
            self.vruntime_series()
        } else {
            Vec::new()
        };
        let span = now.saturating_sub(start);
        Snapshot {
            start,
            ts: now,
            window: opts.window,
            events_per_second: if span > 0 {
                self.events as f64 / (span as f64 / 1e9)
            } else {
                0.0
            },
            vcpus,
            pcpus,
            vms,
            vruntime,
            wait_culprits: if opts.summaries {
                self.wait_culprits()
            } else {
                Vec::new()
            },
            resume: if opts.summaries || opts.resume_all {
                all.view()
            } else {
                ResumeLatency::default()
            },
            fairness,
            health: self.health_view(),
        }
    }

    /// Per task: counters over the window and its elapsed time in it.
    fn window_figures(&self, window: Window) -> Vec<(Cum, u64)> {
        let now = self.now;
        let win_ns = match window {
            Window::LastSecond => Some(1_000_000_000u64),
            Window::LastTenSeconds => Some(10_000_000_000u64),
            Window::WholeRun => None,
        };
        self.tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                // A sampled thread's figures stand as of its last sample.
                let end = self.sampled_end(i).unwrap_or_else(|| t.end_or(now));
                let total = t.cum_at(end);
                match win_ns {
                    None => (total, end.saturating_sub(t.first_seen)),
                    Some(w) => {
                        let from = now.saturating_sub(w);
                        // The newest checkpoint at or before the window start.
                        let cps = &t.clock.checkpoints;
                        let newer = cps.partition_point(|(ts, _)| *ts <= from);
                        match newer.checked_sub(1).and_then(|k| cps.get(k)) {
                            Some((ts, c)) if *ts >= t.first_seen => {
                                (total.minus(c), end.saturating_sub(*ts))
                            }
                            _ => (total, end.saturating_sub(t.first_seen)),
                        }
                    }
                }
            })
            .collect()
    }

    /// Per pCPU, the smallest vruntime among the runnable threads whose switches there
    /// carried one (what lag is measured from): a thread that moved since its last switch has
    /// its old queue's vruntime, on another scale. One pass over the threads, not one per
    /// thread. Keyed by the thread's pCPU as recorded, which odd input can put anywhere in
    /// `u32`.
    fn run_queue_min_vruntime(&self) -> HashMap<u32, u64> {
        let mut min: HashMap<u32, u64> = HashMap::new();
        for o in &self.tasks {
            if o.vacant || !o.is_runnable() || !o.clock.se_seen || o.clock.vruntime_cpu != o.cpu {
                continue;
            }
            min.entry(o.cpu)
                .and_modify(|m| *m = (*m).min(o.clock.vruntime))
                .or_insert(o.clock.vruntime);
        }
        min
    }

    fn vcpu_view(
        &self,
        i: usize,
        (c, elapsed): (Cum, u64),
        entitled: f64,
        rq_min: &HashMap<u32, u64>,
        opts: SnapshotOptions,
    ) -> VcpuSnapshot {
        let summaries = opts.summaries;
        let t = &self.tasks[i];
        let now = self.now;
        let secs = elapsed as f64 / 1e9;
        let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let migrations = if self.health.saw_migrate || t.sampled.is_some() {
            c.migrate_events
        } else {
            c.pcpu_changes
        };
        let lag = if self.sampled_only(i) {
            self.sampled_lag(i)
        } else if (t.is_runnable() || t.state == TState::Sleeping)
            && t.clock.se_seen
            && t.clock.vruntime_cpu == t.cpu
        {
            // Against its queue's minimum, once a switch there has told its own vruntime (a
            // thread asleep since tracking began has none yet; one moved to another pCPU
            // since its last switch has its old queue's, which read +8.21s against its new
            // queue on a live demo: 0 until it switches there).
            let min = rq_min.get(&t.cpu).copied();
            min.map_or(0, |m| {
                (t.clock.vruntime as i128 - m as i128).clamp(i64::MIN as i128, i64::MAX as i128)
                    as i64
            })
        } else {
            0
        };
        let state = match t.state {
            TState::Unknown | TState::Exited => VcpuState::Unknown,
            TState::Waiting => VcpuState::Waiting,
            TState::Sleeping => VcpuState::Sleeping,
            TState::Running => t.sub,
        };
        VcpuSnapshot {
            vm: self.vm_name(t.vm),
            pid: t.pid,
            vcpu: t.vcpu,
            tid: t.tid,
            comm: t.comm.to_string(),
            state: Some(state),
            pcpu: (t.state != TState::Unknown || t.sampled.is_some()).then_some(t.cpu),
            vruntime: t.clock.vruntime,
            vruntime_seen: t.clock.se_seen,
            lag,
            weight: t.weight,
            nice: t.nice,
            run_ns: c.run,
            task_clock_ns: c.task_clock,
            run_delay_ns: t.clock.run_delay_seen.then_some(c.run_delay),
            wait_ns: c.wait,
            sleep_ns: c.sleep,
            cpu_share: if elapsed > 0 {
                c.run as f64 / elapsed as f64
            } else {
                0.0
            },
            entitled_share: entitled,
            switches: c.voluntary.saturating_add(c.involuntary),
            voluntary_switches: c.voluntary,
            involuntary_switches: c.involuntary,
            migrations,
            pcpu_changes: c.pcpu_changes,
            migrations_per_second: per_s(migrations),
            exits_per_second: per_s(c.exits),
            wait: if summaries || opts.wait_percentiles {
                t.clock.wait_hist.percentiles()
            } else {
                Percentiles::default()
            },
            resume: if summaries {
                t.resume.view()
            } else {
                ResumeLatency::default()
            },
            exits: t
                .exits
                .stats(t.end_or(now).saturating_sub(t.first_seen), summaries),
            guest_gaps: c.gaps,
            guest_gap_ns: c.gap_ns,
            elapsed_ns: elapsed,
            ended: t.state == TState::Exited || t.exiting,
            sampled_at: self.sampled_end(i),
            latency_buckets: if opts.latency_buckets {
                VcpuLatencyBuckets {
                    wait: t.clock.wait_hist.buckets(),
                    resume_same_pcpu: t.resume.same.buckets(),
                    resume_migrated: t.resume.migrated.buckets(),
                }
            } else {
                VcpuLatencyBuckets::default()
            },
        }
    }

    /// Per VM, and Jain's index over the VMs' share-to-entitlement ratios. `vcpus[k]` is the
    /// thread in slot `slots[k]`; the VM's retired threads add their counters.
    fn vm_views(&self, slots: &[usize], vcpus: &[VcpuSnapshot]) -> (Vec<VmSnapshot>, f64) {
        let mut vms = Vec::with_capacity(self.vms.len());
        let mut vm_ratios = Vec::new();
        for (vi, v) in self.vms.iter().enumerate() {
            if v.vacant {
                continue;
            }
            let members: Vec<usize> = (0..slots.len())
                .filter(|&k| self.tasks[slots[k]].vm as usize == vi)
                .collect();
            let vcpu_members: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&k| vcpus[k].vcpu.is_some())
                .collect();
            let r = &v.retired;
            let vcpu_count = (vcpu_members.len() as u64).saturating_add(r.vcpu_threads);
            let (set, retired_run, retired_wait) = if vcpu_count == 0 {
                (&members, r.run_ns, r.wait_ns)
            } else {
                (&vcpu_members, r.vcpu_run_ns, r.vcpu_wait_ns)
            };
            let run_ns = set
                .iter()
                .fold(retired_run, |a, &k| a.saturating_add(vcpus[k].run_ns));
            let wait_ns = set
                .iter()
                .fold(retired_wait, |a, &k| a.saturating_add(vcpus[k].wait_ns));
            let cpu_share: f64 = set.iter().map(|&k| vcpus[k].cpu_share).sum();
            let entitled_share: f64 = set.iter().map(|&k| vcpus[k].entitled_share).sum();
            let ratios: Vec<f64> = set
                .iter()
                .filter(|&&k| vcpus[k].entitled_share > 0.0)
                .map(|&k| vcpus[k].cpu_share / vcpus[k].entitled_share)
                .collect();
            if entitled_share > 0.0 {
                vm_ratios.push(cpu_share / entitled_share);
            }
            let mut exits: BTreeMap<&str, u64> = BTreeMap::new();
            let own = members.iter().filter(|&&k| vcpus[k].pid == v.pid);
            for x in own.flat_map(|&k| &vcpus[k].exits) {
                let n = exits.entry(x.reason.as_str()).or_default();
                *n = n.saturating_add(x.count);
            }
            for (reason, count) in &r.exits {
                let n = exits.entry(reason.as_str()).or_default();
                *n = n.saturating_add(*count);
            }
            vms.push(VmSnapshot {
                name: v.name.clone(),
                pid: v.pid,
                vcpus: u32::try_from(vcpu_count).unwrap_or(u32::MAX),
                run_ns,
                wait_ns,
                cpu_share,
                entitled_share,
                fairness: jain(&ratios),
                ended: v.ended,
                exits: exits.into_iter().map(|(r, n)| (r.to_string(), n)).collect(),
            });
        }
        (vms, jain(&vm_ratios))
    }

    fn pcpu_view(&self, cpu: u32, c: &Cpu, opts: SnapshotOptions) -> PcpuSnapshot {
        let now = self.now;
        let mut run = c.time.clone();
        run.add(c.owner, now.saturating_sub(c.since), &self.tasks);
        let time = PcpuTime {
            idle_ns: run.idle,
            vcpu_ns: run.vcpus(),
            other_ns: run.others(),
        };
        let occ_window = |w: u64| {
            if !opts.summaries {
                return Occupancy::default();
            }
            let from = now.saturating_sub(w);
            let mut time = OwnerTime::default();
            for s in c.lane.iter().rev() {
                if s.end <= from {
                    break;
                }
                let d = s.end.saturating_sub(s.start.max(from));
                time.add(s.owner, d, &self.tasks);
            }
            let d = now.saturating_sub(c.since.max(from));
            time.add(c.owner, d, &self.tasks);
            self.occupancy(&time)
        };
        let mut lane = Vec::new();
        if opts.lanes {
            lane.reserve(c.lane.len() + 1);
            lane.extend(c.lane.iter().map(|s| self.lane_segment(s)));
            if now > c.since {
                lane.push(self.lane_segment(&Seg {
                    start: c.since,
                    end: now,
                    owner: c.owner,
                    waiting: c.waiting.len() as u32,
                }));
            }
        }
        PcpuSnapshot {
            cpu,
            current_tid: match c.owner {
                Owner::Task(slot) => self.tasks.get(slot as usize).map(|t| t.tid),
                Owner::Idle | Owner::Other(_) | Owner::Ended(_) | Owner::EndedVm => None,
            },
            waiting: c.waiting.len() as u32,
            occupancy_1s: occ_window(1_000_000_000),
            occupancy_10s: occ_window(10_000_000_000),
            occupancy_run: if opts.summaries {
                self.occupancy(&run)
            } else {
                Occupancy::default()
            },
            time,
            lane,
        }
    }

    /// Wait culprits, largest first, at most 8 per waiting thread.
    fn wait_culprits(&self) -> Vec<WaitCulprit> {
        let mut wait_culprits = Vec::new();
        for t in &self.tasks {
            let mut cs = t.culprits.clone();
            cs.sort_by_key(|c| std::cmp::Reverse(c.1));
            for (owner, ns) in cs.into_iter().take(8) {
                wait_culprits.push(WaitCulprit {
                    tid: t.tid,
                    culprit: self.owner_label(owner),
                    ns,
                });
            }
        }
        wait_culprits
    }

    fn vruntime_series(&self) -> Vec<VruntimeSeries> {
        self.tasks
            .iter()
            .filter_map(|t| self.vruntime_series_of_task(t))
            .collect()
    }

    /// The vruntime series of the threads `tids` names (each tid's current thread), in
    /// thread order, as a snapshot with `vruntime_series` has them. A sink that draws a few of
    /// hundreds of threads asks for those only: at 512 vCPUs, copying every series made most
    /// of the dashboard's frame.
    pub fn vruntime_series_of(&self, tids: &[u32]) -> Vec<VruntimeSeries> {
        let mut slots: Vec<usize> = tids.iter().filter_map(|&tid| self.slot(tid)).collect();
        slots.sort_unstable();
        slots.dedup();
        slots
            .into_iter()
            .filter_map(|n| self.vruntime_series_of_task(&self.tasks[n]))
            .collect()
    }

    fn vruntime_series_of_task(&self, t: &Task) -> Option<VruntimeSeries> {
        (!t.clock.series.is_empty()).then(|| VruntimeSeries {
            tid: t.tid,
            label: t.label(&self.vms),
            points: t.clock.series.iter().copied().collect(),
        })
    }

    fn occupancy(&self, time: &OwnerTime) -> Occupancy {
        let total = time.total();
        if total == 0 {
            return Occupancy::default();
        }
        let f = |x: u64| x as f64 / total as f64;
        let mut vms: Vec<(String, f64)> = time
            .vm_ns
            .iter()
            .enumerate()
            .filter(|(_, &ns)| ns > 0)
            .map(|(i, &ns)| {
                (
                    self.vms
                        .get(i)
                        .map_or_else(|| "?".into(), |v| v.name.clone()),
                    f(ns),
                )
            })
            .collect();
        if time.ended_vms > 0 {
            vms.push(("(ended VMs)".to_string(), f(time.ended_vms)));
        }
        vms.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut others: Vec<(String, f64)> = time
            .comm_ns
            .iter()
            .enumerate()
            .filter(|(_, &ns)| ns > 0)
            .map(|(i, &ns)| {
                (
                    self.comms
                        .get(i)
                        .map_or_else(|| "?".into(), |c| c.to_string()),
                    f(ns),
                )
            })
            .collect();
        others.sort_by(|a, b| b.1.total_cmp(&a.1));
        Occupancy {
            idle: f(time.idle),
            vms,
            others,
        }
    }

    fn lane_segment(&self, s: &Seg) -> LaneSegment {
        let owner = match s.owner {
            Owner::Idle => LaneOwner::Idle,
            Owner::Other(_) | Owner::Ended(_) | Owner::EndedVm => LaneOwner::Other {
                comm: self.owner_label(s.owner),
            },
            Owner::Task(slot) => match self.tasks.get(slot as usize) {
                Some(t) => LaneOwner::Vcpu {
                    vm: self.vm_name(t.vm),
                    vcpu: t.vcpu,
                    tid: t.tid,
                },
                None => LaneOwner::Idle,
            },
        };
        LaneSegment {
            start: s.start,
            end: s.end,
            owner,
            waiting: s.waiting,
        }
    }
}
