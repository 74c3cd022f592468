//! The discrete-event engine every policy runs in: it owns time, the demand (bursts and
//! sleeps), the pCPUs' current threads and the event stream; a [`Policy`] owns its run
//! queues and decides who runs where and for how long.
//!
//! Replay is open loop: each sleep lasts as long as it did in the recording, whatever the
//! policy did to the burst before it. The engine emits the same `model::Event`s a live host
//! would (task info, switches carrying the policy's virtual time, wakeups, migrations), so
//! every sink works on a simulated run unchanged.
//!
//! Here: the event loop and the handling of each kind of instant (a pCPU's timer, a wakeup,
//! an affinity change, the policy's periodic work) and the switch itself. Apart:
//! `policy_api.rs` (the [`Policy`] trait and its [`Cx`]), `bursts.rs` (each thread's
//! progress through its demand), `dispatch.rs` (the dispatch delay), `emit.rs` (what the
//! events say), `timer_tree.rs` (the pCPUs' next decision times and the threads' wakeups,
//! each set with the earliest).

mod bursts;
mod dispatch;
mod emit;
mod policy_api;
mod timer_tree;

use model::demand::Demand;
use model::{Comm, Event, ObservationEnd, SchedSwitch, Wakeup};

pub use crate::sim_thread::{cpu_mask, sim_threads, PcpuSet, SimThread, BACKGROUND_TID, MAX_PCPUS};
use crate::tick_phase::TickPhases;
use crate::wake_cost::{DispatchDelay, DispatchSpread};
use bursts::{Run, RunState};
use policy_api::View;
pub use policy_api::{Cx, Policy};
use timer_tree::TimerTree;

/// Counts of one simulated run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Events emitted.
    pub events: u64,
    pub switches: u64,
    pub wakeups: u64,
    pub migrations: u64,
    /// Timer decisions taken (ticks that were looked at).
    pub ticks: u64,
}

/// Runs `policy` over `demand` on `ncpus` pCPUs, handing every event to `sink`; returns the
/// counts and the policy in its final state (tests read it). A woken thread runs the instant
/// its policy gives it a pCPU (no dispatch delay), each burst wants its recorded CPU time.
pub fn run<P: Policy>(
    demand: &Demand,
    ncpus: u32,
    policy: P,
    sink: &mut dyn FnMut(&Event),
) -> (RunStats, P) {
    run_with(demand, ncpus, policy, ReplayRules::default(), sink)
}

/// What the engine does beyond the policy's decisions.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayRules<'a> {
    /// Charged between each wakeup and the switch it causes: a wakeup that finds its pCPU
    /// idle, or preempts the thread running there, has that pCPU pick only this much later
    /// (the woken thread waits in its queue meanwhile, as on a host between the wakeup and
    /// the IPI's or idle exit's reschedule).
    pub delay: DispatchDelay,
    /// The recorded delays behind `delay`'s figures, charged one a wakeup (none: the figure
    /// at every wakeup, see `wake_cost.rs`).
    pub spread: DispatchSpread<'a>,
    /// With these, each sleep the recording ended on its pCPU's tick ends on the tick of the
    /// pCPU the thread slept on (`tick_phase.rs`); other sleeps last as recorded.
    pub tick_wake: Option<&'a TickPhases>,
    /// An open burst wants the CPU for all the time it was runnable (`bursts.rs`).
    pub open_bursts: bool,
}

/// [`run`] under `rules`.
pub fn run_with<P: Policy>(
    demand: &Demand,
    ncpus: u32,
    policy: P,
    rules: ReplayRules,
    sink: &mut dyn FnMut(&Event),
) -> (RunStats, P) {
    let mut e = Engine::new(demand, ncpus, policy, rules.open_bursts);
    e.delay = rules.delay;
    e.spread = rules.spread;
    e.tick_wake = rules.tick_wake;
    e.run(sink);
    (e.stats, e.policy)
}

/// One affinity change to apply: at (simulated ns), thread, new mask.
type AffinityChange = (u64, u32, PcpuSet);

struct Engine<'d, P> {
    demand: &'d Demand,
    policy: P,
    view: View,
    runs: Vec<Run>,
    /// When the running thread was last accounted.
    since: Vec<u64>,
    /// When each pCPU next needs the engine (its thread's burst ends, its policy's timer, a
    /// charged wakeup's pick), and the earliest of them.
    next_at: TimerTree,
    /// When each sleeping thread wakes (at most one wakeup is pending per thread), and the
    /// earliest.
    wakes: TimerTree,
    /// Recorded affinity changes after the first, in time order, and the next to apply.
    affinity: Vec<AffinityChange>,
    next_affinity: usize,
    stats: RunStats,
    /// `swapper/N` of each pCPU, made once (not per switch to idle).
    idle_comms: Vec<Comm>,
    /// Offset of simulated time 0 in the recording's clock.
    base: u64,
    end: u64,
    /// Charged between a wakeup and the pick it asks for.
    delay: DispatchDelay,
    spread: DispatchSpread<'d>,
    /// Wakeups charged so far onto an idle pCPU and preempting: which recorded delay is next.
    charged: [u64; 2],
    /// When each pCPU picks for a charged wakeup (`u64::MAX`: none pending), and whether
    /// one of those wakeups preempts (else the pick is only for an idle pCPU).
    dispatch_at: Vec<u64>,
    dispatch_preempts: Vec<bool>,
    /// The recording's tick phases when sleeps end on the tick (see [`ReplayRules`]).
    tick_wake: Option<&'d TickPhases>,
    /// Open bursts want all their runnable time (see [`ReplayRules`]).
    open_bursts: bool,
}

impl<'d, P: Policy> Engine<'d, P> {
    fn new(demand: &'d Demand, ncpus: u32, policy: P, open_bursts: bool) -> Self {
        let threads = sim_threads(demand, ncpus);
        let n = ncpus as usize;
        let mut runs = Vec::with_capacity(threads.len());
        let mut wakes = TimerTree::new(threads.len());
        let mut cpu_of = Vec::with_capacity(threads.len());
        for (i, (t, st)) in demand.threads.iter().zip(&threads).enumerate() {
            let first = t.bursts.first();
            let usable = !st.allowed.is_empty() && first.is_some();
            runs.push(Run {
                state: if usable {
                    RunState::Sleeping
                } else {
                    RunState::Done
                },
                burst: 0,
                remaining: first.map_or(0, |b| bursts::cpu_wanted(b, open_bursts)),
                exec: 0,
                run_delay: 0,
                wait_since: 0,
            });
            if usable {
                wakes.set(i as u32, t.first_wake_ns);
            }
            let home = if st.may_run_on(t.first_cpu) {
                t.first_cpu
            } else {
                st.allowed.first().unwrap_or(ncpus.saturating_sub(1))
            };
            cpu_of.push(home);
        }
        let pcpus = demand.pcpus;
        let mut affinity: Vec<AffinityChange> = demand
            .threads
            .iter()
            .enumerate()
            .flat_map(|(i, t)| {
                t.affinity
                    .iter()
                    .skip(1)
                    .map(move |a| (a.at_ns, i as u32, cpu_mask(&a.cpus, pcpus, ncpus)))
            })
            .collect();
        affinity.sort_by_key(|&(at, t, _)| (at, t));
        Engine {
            demand,
            policy,
            view: View {
                threads,
                curr: vec![None; n],
                cpu_of,
            },
            runs,
            since: vec![0; n],
            next_at: TimerTree::new(n),
            wakes,
            affinity,
            next_affinity: 0,
            stats: RunStats::default(),
            idle_comms: (0..ncpus)
                .map(|c| Comm::new(&format!("swapper/{c}")))
                .collect(),
            base: demand.start,
            end: demand.span_ns(),
            delay: DispatchDelay::default(),
            spread: DispatchSpread::default(),
            charged: [0; 2],
            dispatch_at: vec![u64::MAX; n],
            dispatch_preempts: vec![false; n],
            tick_wake: None,
            open_bursts,
        }
    }

    fn run(&mut self, sink: &mut dyn FnMut(&Event)) {
        self.announce(sink);
        let mut resched = PcpuSet::empty(self.view.curr.len() as u32);
        let mut touched = resched.clone();
        loop {
            let (cpu_t, cpu) = self.next_at.earliest();
            let (wake_t, woken) = self.wakes.earliest();
            let global_t = self.policy.global_timer();
            let affinity_t = self
                .affinity
                .get(self.next_affinity)
                .map_or(u64::MAX, |a| a.0);
            let now = cpu_t.min(wake_t).min(global_t).min(affinity_t);
            if now >= self.end || now == u64::MAX {
                break;
            }
            // Policy-wide work (accounting periods) first: a pick at the same instant
            // sees the period's new priorities, not the last one's.
            if global_t == now {
                let mut cx = self.view.cx(&mut resched, &mut touched);
                // Accounting reads the running threads' CPU time up to now.
                self.policy.global(&mut cx, now);
            } else if affinity_t == now {
                // Each change is applied once: its mask moves out.
                let (_, t, ref mut mask) = self.affinity[self.next_affinity];
                let mask = std::mem::take(mask);
                self.next_affinity += 1;
                self.on_affinity(sink, t, mask, now, &mut resched, &mut touched);
            } else if cpu_t == now {
                self.on_cpu_event(sink, cpu, now, &mut resched, &mut touched);
            } else {
                self.wakes.set(woken, u64::MAX);
                self.on_wake(sink, woken, now, &mut resched, &mut touched);
                if self.delay != DispatchDelay::default() {
                    self.defer_dispatch(now, &mut resched, &mut touched);
                }
            }
            while let Some(c) = resched.pop_first() {
                self.schedule(sink, c, now, true, &mut resched, &mut touched);
            }
            while let Some(c) = touched.pop_first() {
                self.rearm(c, now);
            }
        }
        let end = self.base + self.end;
        self.emit(sink, Event::ObservationEnd(ObservationEnd { ts: end }));
    }

    fn rearm(&mut self, cpu: u32, now: u64) {
        let c = cpu as usize;
        let Some(t) = self.view.curr[c] else {
            self.next_at.set(cpu, self.dispatch_at[c]);
            return;
        };
        let done = now
            + self.runs[t as usize]
                .remaining
                .saturating_sub(now - self.since[c]);
        // timer() only reads: nothing it could ask for is kept.
        let (mut resched, mut touched) = (PcpuSet::default(), PcpuSet::default());
        let cx = self.view.cx(&mut resched, &mut touched);
        let timer = match self.policy.timer(&cx, cpu, now) {
            // A decision already due while a preempting charged wakeup's switch is on its
            // way is that switch (`on_cpu_event`): wait for it rather than ask again each ns.
            t if t <= now && self.dispatch_preempts[c] => self.dispatch_at[c],
            t => t.max(now + 1),
        };
        self.next_at
            .set(cpu, done.min(timer).min(self.dispatch_at[c]));
    }

    fn on_cpu_event(
        &mut self,
        sink: &mut dyn FnMut(&Event),
        cpu: u32,
        now: u64,
        resched: &mut PcpuSet,
        touched: &mut PcpuSet,
    ) {
        touched.insert(cpu);
        let c = cpu as usize;
        if self.dispatch_due(cpu, now, resched) {
            return;
        }
        if self.account(cpu, now) {
            // The burst is over: the thread sleeps by itself.
            self.schedule(sink, cpu, now, false, resched, touched);
            return;
        }
        self.stats.ticks += 1;
        let mut cx = self.view.cx(resched, touched);
        if self.policy.tick(&mut cx, cpu, now) {
            if self.dispatch_at[c] == u64::MAX {
                resched.insert(cpu);
            } else {
                // A charged wakeup's switch is already on its way: the tick's preemption
                // is that same switch, and comes no sooner.
                self.dispatch_preempts[c] = true;
            }
        }
    }

    fn on_wake(
        &mut self,
        sink: &mut dyn FnMut(&Event),
        t: u32,
        now: u64,
        resched: &mut PcpuSet,
        touched: &mut PcpuSet,
    ) {
        let i = t as usize;
        if self.runs[i].state != RunState::Sleeping {
            return;
        }
        self.runs[i].state = RunState::Runnable;
        self.runs[i].wait_since = now;
        let mut cx = self.view.cx(resched, touched);
        let target = self.policy.wake(&mut cx, t, now);
        touched.insert(target);
        let tid = self.view.threads[i].tid;
        let ts = self.base + now;
        let from = self.view.cpu_of[i];
        self.move_to(sink, t, target, from, ts);
        self.stats.wakeups += 1;
        if !self.view.threads[i].background {
            self.emit(
                sink,
                Event::Wakeup(Wakeup {
                    ts,
                    cpu: target,
                    tid,
                    pid: self.demand.threads[i].pid,
                    target_cpu: target,
                    waker_tid: 0,
                }),
            );
        }
    }

    /// `t` may run on `mask` from `now` on. A running thread that may no longer use its pCPU
    /// is switched out there (and moved by [`Engine::schedule`]); a queued one is moved by
    /// the policy; a sleeping one is placed by its next wakeup.
    fn on_affinity(
        &mut self,
        sink: &mut dyn FnMut(&Event),
        t: u32,
        mask: PcpuSet,
        now: u64,
        resched: &mut PcpuSet,
        touched: &mut PcpuSet,
    ) {
        let i = t as usize;
        self.view.threads[i].allowed = mask;
        match self.runs[i].state {
            RunState::Running => {
                let cpu = self.view.cpu_of[i];
                if !self.view.threads[i].may_run_on(cpu) {
                    resched.insert(cpu);
                }
            }
            RunState::Runnable => {
                let mut cx = self.view.cx(resched, touched);
                if let Some(dst) = self.policy.reaffine(&mut cx, t, now) {
                    let from = self.view.cpu_of[i];
                    self.move_to(sink, t, dst, from, self.base + now);
                }
            }
            RunState::Sleeping | RunState::Done => {}
        }
    }

    /// Takes the running thread off `cpu` (still runnable, or asleep when `runnable` is
    /// false) and runs the policy's pick there.
    fn schedule(
        &mut self,
        sink: &mut dyn FnMut(&Event),
        cpu: u32,
        now: u64,
        runnable: bool,
        resched: &mut PcpuSet,
        touched: &mut PcpuSet,
    ) {
        let c = cpu as usize;
        touched.insert(cpu);
        // Any pick here is the one a charged wakeup was waiting for (the kernel's
        // need_resched is cleared by whichever schedule() comes first).
        self.dispatch_at[c] = u64::MAX;
        self.dispatch_preempts[c] = false;
        if runnable && self.account(cpu, now) {
            return self.schedule(sink, cpu, now, false, resched, touched);
        }
        let prev = self.view.curr[c];
        let mut cx = self.view.cx(resched, touched);
        let mut evicted = None;
        if let Some(p) = prev {
            self.policy.put_prev(&mut cx, cpu, p, now, runnable);
            if runnable && !cx.threads[p as usize].may_run_on(cpu) {
                // Its affinity no longer has this pCPU: off the queue it was just put on.
                evicted = self.policy.reaffine(&mut cx, p, now);
            }
        }
        let next = self.policy.pick(&mut cx, cpu, now);
        if next == prev && runnable {
            // Kept the CPU: no switch.
            return;
        }
        let ts = self.base + now;
        if let Some(p) = prev {
            let i = p as usize;
            if runnable {
                self.runs[i].state = RunState::Runnable;
                self.runs[i].wait_since = now;
            } else {
                self.end_burst(p, now);
            }
        }
        if let Some(n) = next {
            let i = n as usize;
            self.move_to(sink, n, cpu, cpu, ts);
            let r = &mut self.runs[i];
            r.run_delay += now - r.wait_since;
            r.state = RunState::Running;
        }
        self.view.curr[c] = next;
        self.since[c] = now;
        if prev == next {
            // The same thread slept and woke within one instant: no switch to report.
            return;
        }
        let (prev_tid, prev_pid, prev_comm) = self.comm(prev, cpu);
        let (next_tid, next_pid, next_comm) = self.comm(next, cpu);
        let ev = Event::SchedSwitch(SchedSwitch {
            ts,
            cpu,
            prev_tid,
            prev_pid,
            prev_comm,
            prev_state: u64::from(prev.is_some() && !runnable),
            next_tid,
            next_pid,
            next_comm,
            prev_se: prev.and_then(|p| self.entity(p)),
            next_se: next.and_then(|n| self.entity(n)),
        });
        self.stats.switches += 1;
        self.emit(sink, ev);
        if let (Some(p), Some(dst)) = (prev, evicted) {
            self.move_to(sink, p, dst, cpu, ts);
        }
    }
}
