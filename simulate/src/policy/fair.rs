//! Linux's fair class in its two designs: CFS (2.6.23–6.5: pick the smallest vruntime, slices
//! from `sched_latency`, sleeper credit on wakeup, wakeup granularity) and EEVDF (6.6+: pick
//! the eligible entity with the earliest virtual deadline, lag-based placement,
//! RUN_TO_PARITY). They share `update_curr` accounting, per-pCPU run queues with a
//! monotone `min_vruntime`, tick-driven preemption and the balancing framework. This file
//! holds the state and the engine's entry points; by job: `fair/pick.rs` (the pick and the
//! slice), `fair/wakeup.rs` (wakeup placement and wakeup preemption), `fair/balance.rs`
//! (new-idle pull, periodic pull onto an idle pCPU, periodic balancing by PELT load with
//! `load_balance.rs`, `migration_cost` cache-hot refusal). They schedule task groups
//! (`fair/groups.rs`: by default the autogroups and cgroups the recording names, each with
//! its weight; with `--param groups=true` each process's tracked threads in one, the
//! background in another; picks and wakeup preemption at the group level first); without
//! (`groups=false`, or a recording without task-group records), every thread shares its
//! pCPU's one queue (the flat model: it reproduces a host where no other session is busy,
//! see `tests/priv_simulate.rs`). A wakeup's `update_curr` reschedules an EEVDF entity past
//! its deadline, as the kernel's enqueue does. Buddies and DELAY_DEQUEUE are not modelled.
//! Parameters and their defaults: `fair/params.rs`.

mod balance;
mod groups;
mod params;
mod pick;
mod wakeup;

pub use params::FairParams;

use crate::engine::{Cx, Policy};
use crate::policy::load_balance::LoadTrack;
use crate::policy::{tick_at_or_after, wake_cpu};
use crate::sim_thread::SimThread;
use groups::Groups;

const NICE_0: i128 = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Cfs,
    Eevdf,
}

impl Flavour {
    /// Its policy's name, as `--policy` and a `--param` prefix give it.
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Cfs => crate::PolicyKind::Cfs,
            Flavour::Eevdf => crate::PolicyKind::Eevdf,
        }
        .name()
    }
}

#[derive(Clone, Copy, Default)]
struct Ent {
    v: i64,
    deadline: i64,
    vlag: i64,
    sum_exec: u64,
    prev_sum_exec: u64,
    /// When it last stopped running (cache-hot window).
    last_ran: u64,
    placed: bool,
    seq: u64,
}

#[derive(Default)]
struct Rq {
    /// Runnable threads not running.
    queue: Vec<u32>,
    /// Weights of the queued threads and the running one.
    load: i128,
    curr: Option<u32>,
    exec_start: u64,
    min_v: i64,
    /// RUN_TO_PARITY: the thread picked last and the virtual time it is protected up to.
    protect: Option<(u32, i64)>,
}
pub struct Fair {
    flavour: Flavour,
    p: FairParams,
    /// Threads first, then (with groups) each group's entity on each pCPU.
    ents: Vec<Ent>,
    /// Each entity's weight (threads' are fixed for a run; group entities' follow their
    /// share), beside `ents` so the hottest loops index one vector.
    weight: Vec<u32>,
    /// One queue per pCPU (the root), then (with groups) one per group and pCPU.
    rqs: Vec<Rq>,
    nthreads: usize,
    ncpus: u32,
    groups: Groups,
    seq: u64,
    next_balance: u64,
    load: LoadTrack,
    /// `sd->nr_balance_failed`: periodic balances by load in a row that moved nothing
    /// (the old rule's, one for the host).
    balance_failed: u32,
    /// Each pCPU's balancing state (`balance_per_pcpu`).
    lb: Vec<balance::PcpuBalance>,
    /// By pCPU, where its ticks fall (ns after each multiple of the tick, in demand time):
    /// the recorded pCPU's phase when the replay wakes sleepers on it, else none (0).
    tick_offset: Vec<u64>,
}

pub(super) fn delta_fair(d: u64, w: u32) -> i64 {
    // The 64-bit division while `d * 1024` fits (208 days), the 128-bit one (a library call,
    // the top cost of an EEVDF run in `perf`) beyond.
    match d.checked_mul(NICE_0 as u64) {
        Some(x) if x <= i64::MAX as u64 => (x / u64::from(w.max(1))) as i64,
        _ => (i128::from(d) * NICE_0 / i128::from(w.max(1))) as i64,
    }
}

/// Wall time in which a thread of weight `w` gains `dv` of virtual time.
fn wall_for(dv: i64, w: u32) -> u64 {
    if dv <= 0 {
        0
    } else {
        // 64-bit while `dv * w` fits; the quotient is the 128-bit one's.
        match dv.checked_mul(i64::from(w)) {
            Some(x) => (x / NICE_0 as i64 + 1) as u64,
            None => (i128::from(dv) * i128::from(w) / NICE_0 + 1) as u64,
        }
    }
}

/// `vlag * num / den` (place_entity's lag inflation), truncating toward zero, in 64 bits
/// while they fit.
fn scale_lag(vlag: i64, num: i128, den: i128) -> i64 {
    match (i64::try_from(num), i64::try_from(den)) {
        (Ok(n), Ok(d)) => match vlag.checked_mul(n) {
            Some(x) => x / d,
            None => (i128::from(vlag) * num / den) as i64,
        },
        _ => (i128::from(vlag) * num / den) as i64,
    }
}

impl Fair {
    pub fn new(flavour: Flavour, p: FairParams, threads: &[SimThread], ncpus: u32) -> Fair {
        let next_balance = if p.balance_per_pcpu {
            0
        } else {
            p.balance_interval
        };
        let pelt_new_full = p.pelt_new_full;
        let nthreads = threads.len();
        let groups = Groups::new(&p, threads, ncpus);
        let nrqs = ncpus as usize * (1 + groups.count());
        Fair {
            flavour,
            p,
            ents: vec![Ent::default(); nthreads + groups.entities()],
            weight: threads
                .iter()
                .map(|t| t.weight)
                .chain(std::iter::repeat_n(NICE_0 as u32, groups.entities()))
                .collect(),
            rqs: (0..nrqs).map(|_| Rq::default()).collect(),
            nthreads,
            ncpus,
            groups,
            seq: 0,
            next_balance,
            load: LoadTrack::new(nthreads, pelt_new_full),
            balance_failed: 0,
            lb: vec![balance::PcpuBalance::new(ncpus); ncpus as usize],
            tick_offset: Vec::new(),
        }
    }

    /// Ticks each pCPU at its offset (`tick_offset`). The kernel checks a running task's
    /// slice (`scheduler_tick` -> `task_tick_fair` -> `check_preempt_tick` in 6.1,
    /// `update_deadline` in 6.6+) in the same tick interrupt whose timers wake the
    /// tick-driven sleepers (`run_local_timers`), so where the replay wakes those on each
    /// pCPU's recorded phase, its slice checks come on that phase too (after that tick's
    /// wakeups, `TickPhases::tick_offsets`), not on a grid of their own a phase apart. On
    /// by default where sleeps end on the tick (`--param tick_phase=false`: the grid from
    /// time 0). On the 6.1 lab recordings a grid 0.4-2.75 ms off the recorded phase ended
    /// the lowprio vCPU's runs early at that grid's ticks (1.kvms: 2.28 ms a switch-in,
    /// kernel 3.39).
    pub fn with_tick_offsets(mut self, offsets: Vec<u64>) -> Fair {
        self.tick_offset = offsets;
        self
    }

    /// `cpu`'s first tick at or after `t`.
    fn tick_at_or_after(&self, cpu: u32, t: u64) -> u64 {
        let tick = self.p.tick.max(1);
        match self.tick_offset.get(cpu as usize).map(|&o| o % tick) {
            Some(o) if o > 0 => tick_at_or_after(t + tick - o, tick) - tick + o,
            _ => tick_at_or_after(t, tick),
        }
    }

    /// Weight of entity `e` (a thread's, or a group entity's share).
    #[inline(always)]
    fn w(&self, _cx: &Cx, e: u32) -> u32 {
        self.weight[e as usize]
    }

    /// `update_curr` at every level of `cpu`'s running hierarchy; true when EEVDF's
    /// `update_deadline` gave a running entity a new slice (it had used its request).
    fn update_curr(&mut self, cx: &Cx, cpu: u32, now: u64) -> bool {
        let mut r = cpu as usize;
        let mut renewed = false;
        loop {
            let rq = &mut self.rqs[r];
            let Some(e) = rq.curr else { return renewed };
            let d = now.saturating_sub(rq.exec_start);
            rq.exec_start = now;
            let w = self.w(cx, e);
            let ent = &mut self.ents[e as usize];
            ent.sum_exec += d;
            ent.v += delta_fair(d, w);
            if self.flavour == Flavour::Eevdf && ent.v >= ent.deadline {
                ent.deadline = ent.v + delta_fair(self.p.base_slice, w);
                renewed = true;
            }
            self.update_min(r);
            match self.group_rq(e) {
                Some(g) => r = g,
                None => return renewed,
            }
        }
    }

    #[inline]
    fn update_min(&mut self, r: usize) {
        let rq = &self.rqs[r];
        let curr = rq.curr.map(|t| self.ents[t as usize].v);
        let left = rq.queue.iter().map(|&t| self.ents[t as usize].v).min();
        let m = match (curr, left) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return,
        };
        let rq = &mut self.rqs[r];
        rq.min_v = rq.min_v.max(m);
    }
}

impl Policy for Fair {
    fn wake(&mut self, cx: &mut Cx, t: u32, now: u64) -> u32 {
        self.load.set_runnable(t, now, true);
        let cpu = wake_cpu(cx, t, |c| self.nr_queued(c));
        let from = cx.cpu_of[t as usize];
        // The enqueue's `update_curr`: a running entity that has used its request gets a new
        // deadline and, with another task on the pCPU, is rescheduled there and then
        // (`update_deadline`'s `resched_curr` in 6.6, `update_curr`'s in 6.12), whatever the
        // pick then takes; the tick is not waited for.
        let used_its_slice = self.update_curr(cx, cpu, now) && self.nr_queued(cpu) > 0;
        self.enqueue(cx, t, cpu, from, now);
        cx.touch(cpu);
        let Some(curr) = self.rqs[cpu as usize].curr else {
            cx.resched(cpu);
            return cpu;
        };
        let (r, curr, wakee) = self.matching_entities(cpu, curr, t);
        if used_its_slice || self.wakeup_preempts(cx, r, curr, wakee) {
            cx.resched(cpu);
        }
        cpu
    }

    fn reaffine(&mut self, cx: &mut Cx, t: u32, now: u64) -> Option<u32> {
        let src = (0..cx.ncpus).find(|&c| self.rqs[self.home(t, c)].queue.contains(&t))?;
        if cx.threads[t as usize].may_run_on(src) {
            return None;
        }
        let dst = wake_cpu(cx, t, |c| self.nr_queued(c));
        self.move_queued(cx, t, src, dst, now);
        Some(dst)
    }

    fn put_prev(&mut self, cx: &mut Cx, cpu: u32, t: u32, now: u64, runnable: bool) {
        self.update_curr(cx, cpu, now);
        self.ents[t as usize].last_ran = now;
        if self.p.balance_per_pcpu {
            self.load.set_running(t, now, false);
        }
        if !runnable {
            self.load.set_runnable(t, now, false);
        }
        self.put_prev_entity(cx, self.home(t, cpu), t, runnable);
        self.put_prev_group(cx, cpu, t, runnable, now);
    }

    fn pick(&mut self, cx: &mut Cx, cpu: u32, now: u64) -> Option<u32> {
        if self.rqs[cpu as usize].queue.is_empty() {
            self.newidle_pull(cx, cpu, now);
        }
        let mut r = cpu as usize;
        loop {
            let Some(e) = self.best(cx, r) else {
                // Idle: balance again soon (hot threads cool down).
                self.went_idle(cpu, now);
                return None;
            };
            self.set_curr(r, e, now);
            match self.group_rq(e) {
                Some(g) => r = g,
                None => {
                    if self.p.balance_per_pcpu {
                        self.load.set_running(e, now, true);
                    }
                    return Some(e);
                }
            }
        }
    }

    fn timer(&self, cx: &Cx, cpu: u32, now: u64) -> u64 {
        if self.groups.count() == 0 {
            let rq = &self.rqs[cpu as usize];
            return match rq.curr {
                Some(t) if !rq.queue.is_empty() => {
                    self.tick_at_or_after(cpu, self.slice_end(cx, cpu as usize, t, now))
                }
                _ => u64::MAX,
            };
        }
        let mut at = u64::MAX;
        let mut r = cpu as usize;
        while let Some(e) = self.rqs[r].curr {
            if !self.rqs[r].queue.is_empty() {
                at = at.min(self.slice_end(cx, r, e, now));
            }
            let Some(g) = self.group_rq(e) else { break };
            r = g;
        }
        if at == u64::MAX {
            return at;
        }
        self.tick_at_or_after(cpu, at)
    }

    fn tick(&mut self, cx: &mut Cx, cpu: u32, now: u64) -> bool {
        if self.groups.count() == 0 {
            let Some(t) = self.rqs[cpu as usize].curr else {
                return false;
            };
            let before = self.ents[t as usize].deadline;
            self.update_curr(cx, cpu, now);
            return self.slice_over(cx, cpu as usize, t, before);
        }
        // Each level's running entity and its deadline before accounting (root, group).
        let root = self.rqs[cpu as usize].curr;
        let Some(ge) = root else { return false };
        let gr = self
            .group_rq(ge)
            .expect("with groups the root holds group entities");
        let Some(t) = self.rqs[gr].curr else {
            return false;
        };
        let (ge_before, t_before) = (
            self.ents[ge as usize].deadline,
            self.ents[t as usize].deadline,
        );
        self.update_curr(cx, cpu, now);
        let resched =
            self.slice_over(cx, cpu as usize, ge, ge_before) | self.slice_over(cx, gr, t, t_before);
        self.tick_shares(cx, cpu, now);
        resched
    }

    fn global_timer(&self) -> u64 {
        self.next_balance
    }

    fn global(&mut self, cx: &mut Cx, now: u64) {
        if self.p.balance_per_pcpu {
            self.rebalance_due(cx, now);
        } else {
            self.periodic_balance(cx, now);
        }
    }

    fn vtime(&self, t: u32) -> Option<u64> {
        Some(self.ents[t as usize].v.max(0) as u64)
    }

    fn deadline(&self, t: u32) -> Option<u64> {
        (self.flavour == Flavour::Eevdf).then(|| self.ents[t as usize].deadline.max(0) as u64)
    }

    fn slice(&self, _t: u32) -> Option<u64> {
        (self.flavour == Flavour::Eevdf).then_some(self.p.base_slice)
    }
}
