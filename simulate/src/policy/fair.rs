//! Linux's fair class in its two designs: CFS (2.6.23–6.5: pick the smallest vruntime, slices
//! from `sched_latency`, sleeper credit on wakeup, wakeup granularity) and EEVDF (6.6+: pick
//! the eligible entity with the earliest virtual deadline, lag-based placement,
//! RUN_TO_PARITY). They share `update_curr` accounting, per-pCPU run queues with a
//! monotone `min_vruntime`, tick-driven preemption and the balancing framework (wake
//! placement, new-idle pull, periodic pull onto an idle pCPU past an imbalance of two, periodic balancing by
//! PELT load in `load_balance.rs`, `migration_cost` cache-hot refusal). With
//! `--param groups=true` they schedule task groups (`fair/groups.rs`: each process's
//! tracked threads in one, the background in another, picks and wakeup preemption at the group level
//! first); without, every thread shares its pCPU's one queue (the flat model, the
//! default: it reproduces a host where no other session is busy, see
//! `tests/priv_simulate.rs`). Buddies and DELAY_DEQUEUE are not modelled. Parameters and
//! their defaults: `fair/params.rs`.

mod groups;
mod params;

pub use params::FairParams;

use crate::engine::{Cx, Policy};
use crate::policy::load_balance::{busiest_pair, fits, LoadTrack, CACHE_NICE_TRIES};
use crate::policy::{cpus_after, imbalance, tick_at_or_after, wake_cpu};
use crate::sim_thread::SimThread;
use groups::Groups;

const NICE_0: i128 = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Cfs,
    Eevdf,
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

/// `cfs_rq->avg_vruntime` and `avg_load`: sum of (v - v0) * weight and of weight over the
/// queue and the running thread, relative to `v0` (the queue's `min_vruntime`).
#[derive(Clone, Copy)]
struct LagSums {
    v0: i64,
    sum: i128,
    load: i128,
}

impl LagSums {
    /// V, the load-weighted mean (floor division, as `div_euclid`).
    fn avg(&self) -> i64 {
        if self.load == 0 {
            return self.v0;
        }
        // The 64-bit division while both fit (nearly always), the 128-bit one (a library
        // call, high in an EEVDF profile) beyond; the quotient is the same.
        match (i64::try_from(self.sum), i64::try_from(self.load)) {
            (Ok(s), Ok(l)) => self.v0 + s.div_euclid(l),
            _ => self.v0 + self.sum.div_euclid(self.load) as i64,
        }
    }

    /// `vruntime_eligible`: lag >= 0, i.e. v <= V without the division.
    fn eligible(&self, v: i64) -> bool {
        self.sum >= i128::from(v - self.v0) * self.load
    }
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
    /// `sd->nr_balance_failed`: periodic balances by load in a row that moved nothing.
    balance_failed: u32,
}

fn delta_fair(d: u64, w: u32) -> i64 {
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
        let next_balance = p.balance_interval;
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
        }
    }

    /// Weight of entity `e` (a thread's, or a group entity's share).
    #[inline(always)]
    fn w(&self, _cx: &Cx, e: u32) -> u32 {
        self.weight[e as usize]
    }

    /// `update_curr` at every level of `cpu`'s running hierarchy.
    fn update_curr(&mut self, cx: &Cx, cpu: u32, now: u64) {
        let mut r = cpu as usize;
        loop {
            let rq = &mut self.rqs[r];
            let Some(e) = rq.curr else { return };
            let d = now.saturating_sub(rq.exec_start);
            rq.exec_start = now;
            let w = self.w(cx, e);
            let ent = &mut self.ents[e as usize];
            ent.sum_exec += d;
            ent.v += delta_fair(d, w);
            if self.flavour == Flavour::Eevdf && ent.v >= ent.deadline {
                ent.deadline = ent.v + delta_fair(self.p.base_slice, w);
            }
            self.update_min(r);
            match self.group_rq(e) {
                Some(g) => r = g,
                None => return,
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

    /// EEVDF's V: the load-weighted mean vruntime of queue `r` and its running entity.
    #[inline]
    fn avg_v(&self, cx: &Cx, r: usize) -> i64 {
        self.lag_sums(cx, r).avg()
    }

    /// `avg_vruntime`'s sums over the queue and the running entity, taken once per decision
    /// (each eligibility test is then one multiplication, not another pass over the queue).
    #[inline]
    fn lag_sums(&self, cx: &Cx, r: usize) -> LagSums {
        let rq = &self.rqs[r];
        let v0 = rq.min_v;
        let (mut sum, mut load) = (0i128, 0i128);
        for e in rq.queue.iter().copied().chain(rq.curr) {
            let w = i128::from(self.w(cx, e));
            sum += i128::from(self.ents[e as usize].v - v0) * w;
            load += w;
        }
        LagSums { v0, sum, load }
    }

    fn sched_slice(&self, cx: &Cx, r: usize, e: u32) -> u64 {
        let rq = &self.rqs[r];
        let nr = (rq.queue.len() + usize::from(rq.curr.is_some())) as u64;
        let period = if nr <= self.p.nr_latency {
            self.p.latency
        } else {
            nr * self.p.min_granularity
        };
        let load = rq.load.max(1);
        let s = (i128::from(period) * i128::from(self.w(cx, e)) / load) as u64;
        s.max(self.p.min_granularity)
    }

    /// When running entity `e` of queue `r` has used its slice (CFS: `check_preempt_tick`'s
    /// two tests; EEVDF: its deadline), from `now`.
    #[inline]
    fn slice_end(&self, cx: &Cx, r: usize, e: u32, now: u64) -> u64 {
        let rq = &self.rqs[r];
        let w = self.w(cx, e);
        let ent = &self.ents[e as usize];
        let d = now.saturating_sub(rq.exec_start);
        let v_now = ent.v + delta_fair(d, w);
        match self.flavour {
            Flavour::Cfs => {
                let ran = ent.sum_exec + d - ent.prev_sum_exec;
                let slice = self.sched_slice(cx, r, e);
                let t1 = now + slice.saturating_sub(ran) + 1;
                let left = rq
                    .queue
                    .iter()
                    .map(|&u| self.ents[u as usize].v)
                    .min()
                    .unwrap_or(v_now);
                let t2 = now + wall_for(left + slice as i64 - v_now, w);
                let tmin = now + self.p.min_granularity.saturating_sub(ran);
                t1.min(t2.max(tmin))
            }
            Flavour::Eevdf => now + wall_for(ent.deadline - v_now, w),
        }
    }

    /// At a tick, whether running entity `e` of queue `r` is to give way: CFS's
    /// `check_preempt_tick`; EEVDF's `update_deadline` handed out a new slice (its deadline
    /// was `before`). Never while nothing else waits there.
    fn slice_over(&self, cx: &Cx, r: usize, e: u32, before: i64) -> bool {
        if self.rqs[r].queue.is_empty() {
            return false;
        }
        match self.flavour {
            Flavour::Cfs => self.slice_used(cx, r, e),
            Flavour::Eevdf => self.ents[e as usize].deadline != before,
        }
    }

    /// CFS's `check_preempt_tick` for running entity `e` of queue `r`.
    fn slice_used(&self, cx: &Cx, r: usize, e: u32) -> bool {
        let ent = &self.ents[e as usize];
        let ran = ent.sum_exec - ent.prev_sum_exec;
        let slice = self.sched_slice(cx, r, e);
        if ran > slice {
            return true;
        }
        let left = self.rqs[r]
            .queue
            .iter()
            .map(|&u| self.ents[u as usize].v)
            .min();
        ran >= self.p.min_granularity && left.is_some_and(|l| ent.v - l > slice as i64)
    }

    /// Puts entity `e` on queue `r` at its wakeup (or first) placement; `from`: the queue
    /// it left (CFS re-bases its vruntime from there).
    fn place(&mut self, cx: &Cx, r: usize, e: u32, from: usize) {
        let w = self.w(cx, e);
        let initial = !self.ents[e as usize].placed;
        match self.flavour {
            Flavour::Cfs => {
                let rq_min = self.rqs[r].min_v;
                let from_min = self.rqs[from].min_v;
                let ent = &mut self.ents[e as usize];
                if initial {
                    let vslice = delta_fair(self.p.latency, w);
                    ent.v = rq_min + if self.p.start_debit { vslice } else { 0 };
                } else {
                    if from != r {
                        // vruntime is relative to the queue it leaves and re-based on the new one.
                        ent.v = ent.v - from_min + rq_min;
                    }
                    let mut thresh = self.p.latency as i64;
                    if self.p.gentle_fair_sleepers {
                        thresh /= 2;
                    }
                    ent.v = ent.v.max(rq_min - thresh);
                }
            }
            Flavour::Eevdf => {
                let v = self.avg_v(cx, r);
                let rq = &self.rqs[r];
                let load = rq.load;
                let busy = !rq.queue.is_empty() || rq.curr.is_some();
                let ent = &mut self.ents[e as usize];
                let mut lag = 0i64;
                if self.p.place_lag && busy && !initial && load > 0 {
                    lag = scale_lag(ent.vlag, load + i128::from(w), load);
                }
                ent.v = v - lag;
                let vslice = delta_fair(self.p.base_slice, w);
                ent.deadline = ent.v + if initial { vslice / 2 } else { vslice };
            }
        }
        let ent = &mut self.ents[e as usize];
        ent.placed = true;
        self.seq += 1;
        ent.seq = self.seq;
        let rq = &mut self.rqs[r];
        rq.queue.push(e);
        rq.load += i128::from(w);
    }

    fn store_lag(&mut self, cx: &Cx, r: usize, e: u32) {
        if self.flavour != Flavour::Eevdf {
            return;
        }
        let w = self.w(cx, e);
        let v = self.avg_v(cx, r);
        let limit = delta_fair(self.p.base_slice + self.p.tick, w);
        let ent = &mut self.ents[e as usize];
        ent.vlag = (v - ent.v).clamp(-limit, limit);
    }

    fn remove(&mut self, cx: &Cx, r: usize, e: u32) {
        let w = i128::from(self.w(cx, e));
        let rq = &mut self.rqs[r];
        if let Some(i) = rq.queue.iter().position(|&u| u == e) {
            rq.queue.swap_remove(i);
            rq.load -= w;
        }
    }

    /// The queued entity `pick` would take from queue `r`, without taking it.
    fn best(&self, cx: &Cx, r: usize) -> Option<u32> {
        let rq = &self.rqs[r];
        let key = |e: u32| {
            let ent = &self.ents[e as usize];
            (ent.v, ent.seq)
        };
        match self.flavour {
            Flavour::Cfs => rq.queue.iter().copied().min_by_key(|&e| key(e)),
            Flavour::Eevdf => {
                let sums = self.lag_sums(cx, r);
                let eligible = |e: u32| sums.eligible(self.ents[e as usize].v);
                if let Some((p, vprot)) = rq.protect {
                    if self.p.run_to_parity
                        && rq.queue.contains(&p)
                        && self.ents[p as usize].v < vprot
                        && eligible(p)
                    {
                        return Some(p);
                    }
                }
                rq.queue
                    .iter()
                    .copied()
                    .filter(|&e| eligible(e))
                    .min_by_key(|&e| (self.ents[e as usize].deadline, self.ents[e as usize].seq))
                    .or_else(|| rq.queue.iter().copied().min_by_key(|&e| key(e)))
            }
        }
    }

    /// Whether waking `wakee` into queue `r` preempts `curr` there (`check_preempt_wakeup`
    /// at the level `find_matching_se` found).
    fn wakeup_preempts(&self, cx: &Cx, r: usize, curr: u32, wakee: u32) -> bool {
        let rq = &self.rqs[r];
        match self.flavour {
            Flavour::Cfs => {
                let vdiff = self.ents[curr as usize].v - self.ents[wakee as usize].v;
                vdiff > delta_fair(self.p.wakeup_granularity, self.w(cx, wakee))
            }
            Flavour::Eevdf => {
                let sums = self.lag_sums(cx, r);
                let eligible = |u: u32| sums.eligible(self.ents[u as usize].v);
                let ce = &self.ents[curr as usize];
                let protected = self.p.run_to_parity
                    && rq
                        .protect
                        .is_some_and(|(p, vprot)| p == curr && ce.v < vprot)
                    && eligible(curr);
                if protected {
                    return false;
                }
                // pick_eevdf over the queue and curr would take the wakee.
                let curr_ok = eligible(curr);
                let best = rq
                    .queue
                    .iter()
                    .copied()
                    .chain(curr_ok.then_some(curr))
                    .filter(|&u| u == curr || eligible(u))
                    .min_by_key(|&u| (self.ents[u as usize].deadline, self.ents[u as usize].seq));
                best == Some(wakee)
            }
        }
    }

    /// Takes `e` from queue `r` to run it.
    fn set_curr(&mut self, r: usize, e: u32, now: u64) {
        let rq = &mut self.rqs[r];
        if let Some(i) = rq.queue.iter().position(|&u| u == e) {
            rq.queue.swap_remove(i);
        }
        rq.curr = Some(e);
        rq.exec_start = now;
        let ent = &mut self.ents[e as usize];
        ent.prev_sum_exec = ent.sum_exec;
        if self.flavour == Flavour::Eevdf && rq.protect.is_none_or(|(p, _)| p != e) {
            rq.protect = Some((e, ent.deadline));
        }
        if self.flavour == Flavour::Eevdf && rq.protect.is_some_and(|(p, v)| p == e && v < ent.v) {
            rq.protect = Some((e, ent.deadline));
        }
    }

    fn hot(&self, t: u32, now: u64) -> bool {
        now.saturating_sub(self.ents[t as usize].last_ran) < self.p.migration_cost
    }

    /// Moves a queued thread from `src` to `dst` (balancing).
    fn migrate(&mut self, cx: &Cx, t: u32, src: u32, dst: u32, now: u64) {
        let rel_deadline = self.ents[t as usize].deadline - self.ents[t as usize].v;
        self.dequeue_queued(cx, t, src, now);
        self.enqueue(cx, t, dst, src, now);
        if self.flavour == Flavour::Eevdf {
            // PLACE_REL_DEADLINE: the relative deadline survives the move.
            let e = &mut self.ents[t as usize];
            e.deadline = e.v + rel_deadline;
        }
    }

    /// Moves queued `t` from `src` to `dst` at `now` (periodic balancing, an affinity
    /// change): both queues accounted first; an idle `dst` runs its pick.
    fn move_queued(&mut self, cx: &mut Cx, t: u32, src: u32, dst: u32, now: u64) {
        self.update_curr(cx, src, now);
        self.update_curr(cx, dst, now);
        self.migrate(cx, t, src, dst, now);
        cx.queue_moved(src, dst);
    }

    /// Periodic balancing by load: the queued threads of the most loaded pCPU that fit in
    /// half the difference move to the least loaded one (oldest queued first), as
    /// `detach_tasks` does; a cache-hot one only after [`CACHE_NICE_TRIES`] failures.
    fn balance_by_load(&mut self, cx: &mut Cx, now: u64) {
        let mut loads = vec![0.0f64; cx.ncpus as usize];
        for cpu in 0..cx.ncpus {
            for t in self.queued(cpu).chain(self.running(cpu)) {
                loads[cpu as usize] += self.load.load(t, now, self.w(cx, t));
            }
        }
        for t in 0..cx.threads.len() as u32 {
            if !self.load.runnable(t) {
                loads[cx.cpu_of[t as usize] as usize] += self.load.load(t, now, self.w(cx, t));
            }
        }
        let Some((src, dst, mut left)) = busiest_pair(&loads) else {
            self.balance_failed = 0;
            return;
        };
        let mut candidates: Vec<u32> = self
            .queued(src)
            .filter(|&t| cx.threads[t as usize].may_run_on(dst))
            .collect();
        candidates.sort_by_key(|&t| self.ents[t as usize].seq);
        let mut moved = false;
        for t in candidates {
            if self.hot(t, now) && self.balance_failed <= CACHE_NICE_TRIES {
                continue;
            }
            let load = self.load.load(t, now, self.w(cx, t));
            if !fits(load, left, self.balance_failed) {
                continue;
            }
            self.move_queued(cx, t, src, dst, now);
            moved = true;
            left -= load;
            if left <= 0.0 {
                break;
            }
        }
        self.balance_failed = if moved { 0 } else { self.balance_failed + 1 };
    }

    /// A queued thread of `src` that may move to `dst` now.
    fn movable(&self, cx: &Cx, src: u32, dst: u32, now: u64) -> Option<u32> {
        self.queued(src)
            .filter(|&t| cx.threads[t as usize].may_run_on(dst) && !self.hot(t, now))
            .min_by_key(|&t| self.ents[t as usize].seq)
    }
}

impl Policy for Fair {
    fn wake(&mut self, cx: &mut Cx, t: u32, now: u64) -> u32 {
        self.load.set_runnable(t, now, true);
        let cpu = wake_cpu(cx, t, |c| self.nr_queued(c));
        let from = cx.cpu_of[t as usize];
        self.update_curr(cx, cpu, now);
        self.enqueue(cx, t, cpu, from, now);
        cx.touch(cpu);
        let Some(curr) = self.rqs[cpu as usize].curr else {
            cx.resched(cpu);
            return cpu;
        };
        let (r, curr, wakee) = self.matching_entities(cpu, curr, t);
        if self.wakeup_preempts(cx, r, curr, wakee) {
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
        if !runnable {
            self.load.set_runnable(t, now, false);
        }
        self.put_prev_entity(cx, self.home(t, cpu), t, runnable);
        self.put_prev_group(cx, cpu, t, runnable, now);
    }

    fn pick(&mut self, cx: &mut Cx, cpu: u32, now: u64) -> Option<u32> {
        if self.rqs[cpu as usize].queue.is_empty() {
            // New-idle balance: pull from the pCPU with the most waiting.
            let n = cx.ncpus;
            // Each candidate's movable thread found once (a queue without waiting threads
            // has none, so it is skipped before the search).
            let pull = cpus_after(cpu, n)
                .filter(|&c| self.nr_queued(c) > 0)
                .filter_map(|c| Some((c, self.movable(cx, c, cpu, now)?)))
                .max_by_key(|&(c, _)| (self.nr_queued(c), std::cmp::Reverse(c)));
            if let Some((src, t)) = pull {
                self.update_curr(cx, src, now);
                self.migrate(cx, t, src, cpu, now);
                cx.touch(src);
            }
        }
        let mut r = cpu as usize;
        loop {
            let Some(e) = self.best(cx, r) else {
                // Idle: balance again soon (hot threads cool down).
                self.next_balance = self.next_balance.min(now + self.p.idle_balance_interval);
                return None;
            };
            self.set_curr(r, e, now);
            match self.group_rq(e) {
                Some(g) => r = g,
                None => return Some(e),
            }
        }
    }

    fn timer(&self, cx: &Cx, cpu: u32, now: u64) -> u64 {
        if self.groups.count() == 0 {
            let rq = &self.rqs[cpu as usize];
            return match rq.curr {
                Some(t) if !rq.queue.is_empty() => {
                    tick_at_or_after(self.slice_end(cx, cpu as usize, t, now), self.p.tick)
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
        tick_at_or_after(at, self.p.tick)
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
        let any_idle = (0..cx.ncpus).any(|c| !cx.is_running(c));
        self.next_balance = now
            + if any_idle {
                self.p.idle_balance_interval
            } else {
                self.p.balance_interval
            };
        if let Some((src, dst)) = imbalance(cx, |c| self.nr_queued(c), !self.p.balance_count_busy) {
            if let Some(t) = self.movable(cx, src, dst, now) {
                self.move_queued(cx, t, src, dst, now);
                return;
            }
        }
        if self.p.balance_load {
            self.balance_by_load(cx, now);
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
