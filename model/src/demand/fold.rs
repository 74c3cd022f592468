//! The demand fold: the model's transitions, thread by thread and pCPU by pCPU, into
//! [`Demand`] (the rules are in the module's documentation).

use std::collections::BTreeMap;

use fixedbitset::FixedBitSet;

use super::wakeup::{Holders, OpenWakeup, Placement, Wakeups};
use super::{AffinitySpan, Burst, Demand, GroupRecords, OpenBurst, ThreadDemand, Woke};
use crate::latency::Latency;
use crate::VcpuState;
use crate::MAX_CPUS;
use crate::{nice_to_weight, Comm, PcpuHolder, Percentiles, SchedGroup, Snapshot, Transition};

/// Where a thread is, as its transitions said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No state yet.
    Unknown,
    Running,
    Waiting,
    Sleeping,
    Exited,
}

struct Thread {
    demand: ThreadDemand,
    /// Its task-group record, the newest since it was announced (`None`: none yet).
    group: Option<Option<SchedGroup>>,
    phase: Phase,
    /// Start of the current running stint (its wall time stands in for a missing task clock).
    stint_from: u64,
    /// The current stint is not yet counted (no switch-out ended it).
    stint_open: bool,
    /// Its first runnable state.
    first_runnable: Option<u64>,
    /// Start of the current sleep.
    slept_from: u64,
    /// When the current burst became runnable (what an open burst wanted runs from).
    runnable_from: u64,
    /// Its wakeup waiting for a switch-in (the rule is in `wakeup.rs`).
    wakeup: OpenWakeup,
    /// CPU time of the current burst so far.
    run_acc: u64,
    cpus: FixedBitSet,
    wake_hist: Latency,
}

impl Thread {
    fn note_cpu(&mut self, cpu: u32) {
        let i = cpu as usize;
        if i >= self.cpus.len() {
            self.cpus.grow(i + 1);
        }
        self.cpus.insert(i);
        if self.demand.first_cpu == u32::MAX {
            self.demand.first_cpu = cpu;
        }
    }

    /// The thread is in `state` from `ts`, on or queued for `pcpu`.
    fn enter(&mut self, ts: u64, state: VcpuState, pcpu: Option<u32>) {
        let next = if state.is_running() {
            Phase::Running
        } else {
            match state {
                VcpuState::Waiting => Phase::Waiting,
                VcpuState::Sleeping => Phase::Sleeping,
                _ => return,
            }
        };
        if self.phase == Phase::Exited {
            return;
        }
        if next != Phase::Sleeping && self.first_runnable.is_none() {
            self.first_runnable = Some(ts);
        }
        if matches!(self.phase, Phase::Sleeping | Phase::Unknown) && next != Phase::Sleeping {
            self.runnable_from = ts;
        }
        if self.phase == Phase::Running && next != Phase::Running {
            self.count_stint(ts);
        }
        match (self.phase, next) {
            (Phase::Sleeping, Phase::Waiting) => self.close_sleep(ts, pcpu),
            (Phase::Sleeping, Phase::Running) => {
                // Switched in with no wakeup seen: the sleep ends here.
                self.close_sleep(ts, pcpu);
                self.start_stint(ts);
            }
            (Phase::Waiting | Phase::Unknown, Phase::Running) => self.start_stint(ts),
            (Phase::Running, Phase::Sleeping) => {
                // It switched out by itself: the burst ends.
                self.end_burst(None);
                self.slept_from = ts;
            }
            (Phase::Unknown, Phase::Sleeping) => self.slept_from = ts,
            // Preempted (the stint was counted at its switch-out), moved to another run
            // queue while waiting (the wait goes on), a running substate, or a first state.
            _ => {}
        }
        self.phase = next;
    }

    fn start_stint(&mut self, ts: u64) {
        self.stint_from = ts;
        self.stint_open = true;
    }

    /// A stint no switch-out counted ends at `ts`: its wall time joins the burst.
    fn count_stint(&mut self, ts: u64) {
        if std::mem::take(&mut self.stint_open) {
            let ran = ts.saturating_sub(self.stint_from);
            self.run_acc = self.run_acc.saturating_add(ran);
        }
    }

    /// A switch-out ends a stint: its CPU time joins the burst.
    fn switched_out(&mut self, ts: u64, task_clock_ns: Option<u64>) {
        if self.phase == Phase::Running && self.stint_open {
            match task_clock_ns {
                Some(ran) => {
                    self.run_acc = self.run_acc.saturating_add(ran);
                    self.stint_open = false;
                }
                None => self.count_stint(ts),
            }
        }
    }

    /// The thread ended (or the observation did, `at_recording_end`): a runnable thread's
    /// burst ends here, open, a running one's last stint by its wall time.
    fn end(&mut self, ts: u64, at_recording_end: bool) {
        self.wakeup.cancel();
        let open = OpenBurst {
            runnable_ns: ts.saturating_sub(self.runnable_from),
            at_recording_end,
        };
        match self.phase {
            Phase::Running => {
                self.count_stint(ts);
                self.end_burst(Some(open));
            }
            Phase::Waiting => self.end_burst(Some(open)),
            Phase::Sleeping => {
                // Asleep at the end: the sleep lasts to it, woken by nothing (so a vCPU that
                // halted for good is not taken for one that never slept).
                let slept = ts.saturating_sub(self.slept_from);
                if let Some(last) = self
                    .demand
                    .bursts
                    .last_mut()
                    .filter(|b| b.sleep_ns.is_none())
                {
                    last.sleep_ns = Some(slept);
                }
            }
            Phase::Unknown | Phase::Exited => {}
        }
        self.phase = Phase::Exited;
    }

    /// The burst ends: by a sleep (`open` is `None`), or cut while runnable.
    fn end_burst(&mut self, open: Option<OpenBurst>) {
        self.demand.bursts.push(Burst {
            run_ns: std::mem::take(&mut self.run_acc),
            sleep_ns: None,
            woke: None,
            open,
        });
    }

    /// The sleep ends at `ts`, woken onto `pcpu`'s queue (the time is absolute until
    /// [`DemandFold::finish`] makes it relative to the demand's start).
    fn close_sleep(&mut self, ts: u64, pcpu: Option<u32>) {
        let slept = ts.saturating_sub(self.slept_from);
        if let Some(last) = self.demand.bursts.last_mut() {
            last.sleep_ns = Some(slept);
            last.woke = pcpu.map(|cpu| Woke { at_ns: ts, cpu });
        }
    }
}

/// Untracked tasks' stretches on one pCPU, each with the task that began it (the recording
/// sees other tasks only as the other side of a tracked thread's switch, so a stretch is
/// the task a tracked thread switched to, whoever else ran before the next tracked one).
#[derive(Default)]
struct Background {
    /// The open stretch: since when, and its task.
    since: Option<(u64, u32)>,
    /// The untracked task that left at the switch closing the open stretch, and whether it
    /// stayed runnable.
    left: Option<(u32, bool)>,
    stretches: Vec<Stretch>,
}

#[derive(Clone, Copy)]
struct Stretch {
    from: u64,
    to: u64,
    tid: u32,
    /// The untracked task the stretch ended with, preempted (still runnable).
    ended_preempted: Option<u32>,
}

impl Background {
    /// The untracked stretch open on this pCPU (if any) ends at `ts`.
    fn close(&mut self, ts: u64) {
        let left = self.left.take();
        let Some((from, tid)) = self.since.take() else {
            return;
        };
        if ts > from {
            self.stretches.push(Stretch {
                from,
                to: ts,
                tid,
                ended_preempted: left.filter(|l| l.1).map(|l| l.0),
            });
        }
    }
}

/// Which stand-in of its pCPU a stretch joins: without task-group records one per pCPU (every
/// stretch `Unrecorded`), with them one per group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum StandIn {
    Group(SchedGroup),
    /// The task had exited before its group could be read.
    Unread,
    /// No record names the task.
    Unrecorded,
}

/// One stand-in's stretches on `cpu` as bursts, each followed by the gap to the next (which
/// ends, as its `woke`, where the next stretch began: `start` is the demand's): its first
/// stretch's start and the bursts. A stretch that `ended_runnable` (its group's task was
/// preempted, not asleep) does not end its burst: the group wanted the pCPU through the gap,
/// as a preemption splits a tracked thread's burst without ending it.
fn stand_in_bursts(
    stretches: &[Stretch],
    cpu: u32,
    start: u64,
    ended_runnable: impl Fn(&Stretch) -> bool,
) -> (u64, Vec<Burst>) {
    let mut bursts: Vec<Burst> = Vec::with_capacity(stretches.len());
    let mut last_end = 0;
    let mut goes_on = false;
    for s in stretches {
        match bursts.last_mut() {
            Some(last) if goes_on => last.run_ns += s.to - s.from,
            last => {
                if let Some(last) = last {
                    last.sleep_ns = Some(s.from.saturating_sub(last_end));
                    // Untracked tasks' wakeups are not recorded: the sleep ended, at the
                    // latest, when the stretch began.
                    last.woke = Some(Woke {
                        at_ns: s.from.saturating_sub(start),
                        cpu,
                    });
                }
                bursts.push(Burst {
                    run_ns: s.to - s.from,
                    sleep_ns: None,
                    woke: None,
                    open: None,
                });
            }
        }
        goes_on = ended_runnable(s);
        last_end = s.to;
    }
    (stretches.first().map_or(0, |s| s.from), bursts)
}

/// Folds the model's transitions into [`Demand`]: [`DemandFold::fold`] each batch the model
/// hands out, then [`DemandFold::finish`] with the model's final snapshot.
#[derive(Default)]
pub struct DemandFold {
    /// By thread slot.
    threads: Vec<Option<Thread>>,
    cpus: Vec<Background>,
    min_pcpus: u32,
    /// Who held each pCPU, to place each closed wakeup.
    holders: Holders,
    wakeups: Wakeups,
    /// Each tid's task-group records in time order: a reused tid has one for each task
    /// (see [`GroupRecordsOf`]).
    groups: BTreeMap<u32, GroupRecordsOf>,
    /// The newest thread slot of each tracked tid, which a task-group record of the tid is for.
    slot_of_tid: BTreeMap<u32, u32>,
}

/// One tid's task-group records, each with the time it was read (the switch that showed its
/// task). A record covers the tid from its time until the next one: a reused tid's new task
/// is read again when a switch first shows it, so its stretches take its own record.
#[derive(Default)]
struct GroupRecordsOf(Vec<(u64, Option<SchedGroup>)>);

impl GroupRecordsOf {
    fn add(&mut self, ts: u64, group: &Option<SchedGroup>) {
        let at = self.0.partition_point(|(t, _)| *t <= ts);
        self.0.insert(at, (ts, group.clone()));
    }

    /// The record that covers `ts`: the newest at or before it, else (a stretch that began
    /// before its task was read) the first.
    fn at(&self, ts: u64) -> &Option<SchedGroup> {
        let covering = self.0.partition_point(|(t, _)| *t <= ts);
        &self.0[covering.saturating_sub(1)].1
    }

    /// The newest record: what a tracked thread announced after all of them takes.
    fn newest(&self) -> &Option<SchedGroup> {
        &self.0[self.0.len() - 1].1
    }
}

impl DemandFold {
    /// The host's CPU count, so idle pCPUs that never show up in events still count.
    pub fn with_pcpus(mut self, n: u32) -> Self {
        self.min_pcpus = n.min(MAX_CPUS);
        self
    }

    /// Folds a batch of the model's transitions, in the order it gave them.
    pub fn fold(&mut self, transitions: &[Transition]) {
        for t in transitions {
            self.apply(t);
        }
    }

    fn thread(&mut self, slot: u32) -> Option<&mut Thread> {
        self.threads.get_mut(slot as usize)?.as_mut()
    }

    fn apply(&mut self, tr: &Transition) {
        match tr {
            Transition::Thread {
                ts,
                thread,
                tid,
                pid,
                vm,
                vcpu,
                comm,
                nice,
            } => {
                if let Some(t) = self.thread(*thread) {
                    // Announced again: the model's latest identity.
                    t.demand.vm.clone_from(vm);
                    t.demand.vcpu = *vcpu;
                    t.demand.comm = *comm;
                    t.demand.nice = *nice;
                    return;
                }
                let slot = *thread as usize;
                if self.threads.len() <= slot {
                    self.threads.resize_with(slot + 1, || None);
                }
                self.slot_of_tid.insert(*tid, *thread);
                self.threads[slot] = Some(Thread {
                    group: None,
                    demand: ThreadDemand {
                        tid: *tid,
                        pid: *pid,
                        comm: *comm,
                        vm: vm.clone(),
                        vcpu: *vcpu,
                        nice: *nice,
                        weight: nice_to_weight(*nice),
                        allowed: Vec::new(),
                        affinity: Vec::new(),
                        first_cpu: u32::MAX,
                        first_wake_ns: 0,
                        bursts: Vec::new(),
                        background: false,
                        group: None,
                        group_unread: false,
                        wake_to_run: Percentiles::default(),
                    },
                    phase: Phase::Unknown,
                    stint_from: *ts,
                    stint_open: false,
                    first_runnable: None,
                    slept_from: *ts,
                    runnable_from: *ts,
                    wakeup: OpenWakeup::default(),
                    run_acc: 0,
                    cpus: FixedBitSet::new(),
                    wake_hist: Latency::default(),
                });
            }
            Transition::State {
                ts,
                thread,
                state,
                pcpu,
            } => {
                let Some(t) = self
                    .threads
                    .get_mut(*thread as usize)
                    .and_then(Option::as_mut)
                else {
                    return;
                };
                if let Some(cpu) = pcpu {
                    t.note_cpu(*cpu);
                }
                t.enter(*ts, *state, *pcpu);
                if let Some(ns) = t.wakeup.state(*ts, *state) {
                    t.wake_hist.record(ns);
                    // (A running state always names its pCPU.)
                    let placement =
                        pcpu.map_or(Placement::Waited, |cpu| self.holders.placement(*ts, cpu));
                    self.wakeups.record(placement, ns);
                }
            }
            Transition::SwitchOut {
                ts,
                thread,
                pcpu,
                preempted,
                task_clock_ns,
            } => {
                self.holders.switched_out(*ts, *pcpu, *preempted);
                if let Some(t) = self.thread(*thread) {
                    t.note_cpu(*pcpu);
                    t.switched_out(*ts, *task_clock_ns);
                }
            }
            Transition::Exited { ts, thread } => {
                if let Some(t) = self.thread(*thread) {
                    t.end(*ts, false);
                }
            }
            Transition::Weight { thread, weight, .. } => {
                if let Some(t) = self.thread(*thread) {
                    t.demand.weight = (*weight).max(1);
                }
            }
            Transition::Affinity { ts, thread, cpus } => {
                if let Some(t) = self.thread(*thread) {
                    t.demand.affinity.push(AffinitySpan {
                        at_ns: *ts,
                        cpus: cpus.clone(),
                    });
                }
            }
            Transition::Pcpu { ts, cpu, holder } => {
                if *cpu >= MAX_CPUS {
                    return;
                }
                self.holders.held(*cpu, holder);
                let i = *cpu as usize;
                if self.cpus.len() <= i {
                    self.cpus.resize_with(i + 1, Background::default);
                }
                let bg = &mut self.cpus[i];
                // Whatever ran here until now: an untracked stretch ends.
                bg.close(*ts);
                if let PcpuHolder::Other { tid, .. } = holder {
                    bg.since = Some((*ts, *tid));
                }
            }
            Transition::OtherSwitchOut {
                cpu,
                tid,
                preempted,
                ..
            } => {
                if let Some(bg) = self.cpus.get_mut(*cpu as usize) {
                    bg.left = Some((*tid, *preempted));
                }
            }
            Transition::TaskGroup { ts, tid, group } => {
                self.groups.entry(*tid).or_default().add(*ts, group);
                // A tracked thread's own record comes after its announcement: the newest
                // since then is its task's.
                if let Some(&slot) = self.slot_of_tid.get(tid) {
                    if let Some(t) = self.thread(slot).filter(|t| t.phase != Phase::Exited) {
                        t.group = Some(group.clone());
                    }
                }
            }
            Transition::Vruntime { .. }
            | Transition::Resume { .. }
            | Transition::GuestGap { .. }
            | Transition::Exit { .. }
            | Transition::Entry { .. }
            | Transition::Vmclear { .. } => {}
        }
    }

    /// Closes every open burst at the end of the run: `snap` is the model's snapshot after
    /// [`Model::finish`] (its span, lost and late events).
    pub fn finish(mut self, snap: &Snapshot) -> Demand {
        let (start, end) = (snap.start, snap.ts);
        let mut threads: Vec<ThreadDemand> = Vec::with_capacity(self.threads.len());
        for mut t in self.threads.into_iter().flatten() {
            t.end(end, true);
            if t.cpus.is_clear() {
                // Never scheduled while observed: nothing to replay.
                continue;
            }
            t.demand.allowed = t.cpus.ones().map(|c| c as u32).collect();
            t.demand.first_wake_ns = t.first_runnable.map_or(0, |f| f.saturating_sub(start));
            for span in &mut t.demand.affinity {
                span.at_ns = span.at_ns.saturating_sub(start);
            }
            for woke in t.demand.bursts.iter_mut().filter_map(|b| b.woke.as_mut()) {
                woke.at_ns = woke.at_ns.saturating_sub(start);
            }
            t.demand.wake_to_run = t.wake_hist.percentiles();
            // No record since its announcement (a recording that read each tid once): its
            // tid's newest before.
            t.demand.group = match t.group {
                Some(group) => group,
                None => self
                    .groups
                    .get(&t.demand.tid)
                    .and_then(|g| g.newest().clone()),
            };
            // A thread seen only sleeping has a burst-less demand; keep it (it is a vCPU).
            threads.push(t.demand);
        }
        threads.sort_by_key(|t| t.tid);
        let seen_cpus = self.cpus.len() as u32;
        let pcpus = seen_cpus.max(self.min_pcpus).max(
            threads
                .iter()
                .flat_map(|t| t.allowed.last().copied())
                .max()
                .map_or(0, |c| c + 1),
        );
        for (cpu, mut bg) in self.cpus.into_iter().enumerate() {
            bg.close(end);
            let cpu = cpu as u32;
            // The group of the task `tid` at `ts`, by the record that covers that time.
            let stand_in = |tid: u32, ts: u64| match self.groups.get(&tid).map(|g| g.at(ts)) {
                None => StandIn::Unrecorded,
                Some(None) => StandIn::Unread,
                Some(Some(g)) => StandIn::Group(g.clone()),
            };
            let mut by_group: BTreeMap<StandIn, Vec<Stretch>> = BTreeMap::new();
            for s in bg.stretches {
                by_group.entry(stand_in(s.tid, s.from)).or_default().push(s);
            }
            for (key, stretches) in by_group {
                // Only with group records: a stretch is one group's only then, and a
                // recording without them keeps the demand it always had.
                let ended_runnable = |s: &Stretch| {
                    key != StandIn::Unrecorded
                        && s.ended_preempted.is_some_and(|t| stand_in(t, s.to) == key)
                };
                let (first, bursts) = stand_in_bursts(&stretches, cpu, start, ended_runnable);
                let group_unread = key == StandIn::Unread;
                threads.push(ThreadDemand {
                    tid: 0,
                    pid: 0,
                    comm: Comm::new(&format!("background/{cpu}")),
                    vm: String::new(),
                    vcpu: None,
                    nice: 0,
                    weight: nice_to_weight(0),
                    allowed: vec![cpu],
                    affinity: Vec::new(),
                    first_cpu: cpu,
                    first_wake_ns: first.saturating_sub(start),
                    bursts,
                    background: true,
                    group: match key {
                        StandIn::Group(g) => Some(g),
                        StandIn::Unread | StandIn::Unrecorded => None,
                    },
                    group_unread,
                    wake_to_run: Percentiles::default(),
                });
            }
        }
        let records = || self.groups.values().flat_map(|g| &g.0);
        let group_records = GroupRecords {
            read: records().filter(|(_, g)| g.is_some()).count() as u64,
            unread: records().filter(|(_, g)| g.is_none()).count() as u64,
        };
        self.wakeups.sort();
        Demand {
            start,
            end,
            pcpus,
            threads,
            wakeups: self.wakeups,
            lost_events: snap.health.lost_events,
            out_of_order: snap.health.out_of_order,
            group_records,
        }
    }
}
