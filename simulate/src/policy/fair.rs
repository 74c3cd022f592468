//! Linux's fair class in its two designs: CFS (2.6.23–6.5: pick the smallest vruntime, slices
//! from `sched_latency`, sleeper credit on wakeup, wakeup granularity) and EEVDF (6.6+: pick
//! the eligible entity with the earliest virtual deadline, lag-based placement,
//! RUN_TO_PARITY). They share `update_curr` accounting, per-pCPU run queues with a
//! monotone `min_vruntime`, tick-driven preemption and the balancing framework (wake
//! placement, new-idle pull, periodic pull past an imbalance of two, periodic balancing by
//! PELT load in `load_balance.rs`, `migration_cost` cache-hot refusal). Group scheduling,
//! buddies and DELAY_DEQUEUE are not modelled. The
//! first is what keeps run-queue waits short of a loaded host's: with autogroups (or
//! libvirt's per-VM cgroups) a woken vCPU preempts another group's task only when its
//! group's entity wins at the root, so its own lag credit does not run it at once, while
//! here every wakee with lag is compared with the running thread directly (see
//! `tests/priv_simulate.rs` for the figures).

use crate::engine::{Cx, Policy};
use crate::params::{check_balance_intervals, ParamError, Params};
use crate::policy::load_balance::{busiest_pair, fits, LoadTrack, CACHE_NICE_TRIES};
use crate::policy::{cpus_after, imbalance, linux_factor, tick_at_or_after, tick_ns, wake_cpu};

const NICE_0: i128 = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Cfs,
    Eevdf,
}

/// Parameters, named as in the kernel (`sysctl_sched_*` without the prefix).
#[derive(Clone, Debug)]
pub struct FairParams {
    pub latency: u64,
    pub min_granularity: u64,
    pub wakeup_granularity: u64,
    pub nr_latency: u64,
    pub base_slice: u64,
    pub tick: u64,
    pub migration_cost: u64,
    pub balance_interval: u64,
    /// Periodic balancing while some pCPU idles (`sd->balance_interval` without busy_factor).
    pub idle_balance_interval: u64,
    /// Periodic balancing also by PELT load (`policy/load_balance.rs`), not only by count.
    pub balance_load: bool,
    pub gentle_fair_sleepers: bool,
    pub start_debit: bool,
    pub place_lag: bool,
    pub run_to_parity: bool,
}

impl FairParams {
    pub fn new(flavour: Flavour, p: &Params, ncpus: u32) -> Result<FairParams, ParamError> {
        let f = linux_factor(ncpus);
        let name = match flavour {
            Flavour::Cfs => "cfs",
            Flavour::Eevdf => "eevdf",
        };
        let fp = match flavour {
            Flavour::Cfs => FairParams {
                latency: p.ns(name, "latency", 6_000_000 * f)?,
                min_granularity: p.ns(name, "min_granularity", 750_000 * f)?,
                wakeup_granularity: p.ns(name, "wakeup_granularity", 1_000_000 * f)?,
                nr_latency: p.u64(name, "nr_latency", 8)?.max(1),
                base_slice: 0,
                tick: tick_ns(name, p, 250)?,
                migration_cost: p.ns(name, "migration_cost", 500_000)?,
                balance_interval: p.ns(name, "balance_interval", 16_000_000 * u64::from(ncpus))?,
                idle_balance_interval: p.ns(
                    name,
                    "idle_balance_interval",
                    1_000_000 * u64::from(ncpus),
                )?,
                balance_load: p.bool(name, "balance_load", true)?,
                gentle_fair_sleepers: p.bool(name, "gentle_fair_sleepers", true)?,
                start_debit: p.bool(name, "start_debit", true)?,
                place_lag: false,
                run_to_parity: false,
            },
            Flavour::Eevdf => FairParams {
                latency: 0,
                min_granularity: 0,
                wakeup_granularity: 0,
                nr_latency: 8,
                // 0.70 ms x factor since v6.15 (commit 2ae891b82695); this host runs 6.18.
                base_slice: p.ns(name, "base_slice", 700_000 * f)?,
                tick: tick_ns(name, p, 250)?,
                migration_cost: p.ns(name, "migration_cost", 500_000)?,
                balance_interval: p.ns(name, "balance_interval", 16_000_000 * u64::from(ncpus))?,
                idle_balance_interval: p.ns(
                    name,
                    "idle_balance_interval",
                    1_000_000 * u64::from(ncpus),
                )?,
                balance_load: p.bool(name, "balance_load", true)?,
                gentle_fair_sleepers: false,
                start_debit: false,
                place_lag: p.bool(name, "place_lag", true)?,
                run_to_parity: p.bool(name, "run_to_parity", true)?,
            },
        };
        check_balance_intervals(fp.balance_interval, fp.idle_balance_interval)?;
        Ok(fp)
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
    ents: Vec<Ent>,
    rqs: Vec<Rq>,
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
    pub fn new(flavour: Flavour, p: FairParams, nthreads: usize, ncpus: u32) -> Fair {
        let next_balance = p.balance_interval;
        Fair {
            flavour,
            p,
            ents: vec![Ent::default(); nthreads],
            rqs: (0..ncpus).map(|_| Rq::default()).collect(),
            seq: 0,
            next_balance,
            load: LoadTrack::new(nthreads),
            balance_failed: 0,
        }
    }

    fn w(cx: &Cx, t: u32) -> u32 {
        cx.threads[t as usize].weight
    }

    fn update_curr(&mut self, cx: &Cx, cpu: u32, now: u64) {
        let rq = &mut self.rqs[cpu as usize];
        let Some(t) = rq.curr else { return };
        let d = now.saturating_sub(rq.exec_start);
        rq.exec_start = now;
        let w = cx.threads[t as usize].weight;
        let e = &mut self.ents[t as usize];
        e.sum_exec += d;
        e.v += delta_fair(d, w);
        if self.flavour == Flavour::Eevdf && e.v >= e.deadline {
            e.deadline = e.v + delta_fair(self.p.base_slice, w);
        }
        self.update_min(cpu);
    }

    fn update_min(&mut self, cpu: u32) {
        let rq = &self.rqs[cpu as usize];
        let curr = rq.curr.map(|t| self.ents[t as usize].v);
        let left = rq.queue.iter().map(|&t| self.ents[t as usize].v).min();
        let m = match (curr, left) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return,
        };
        let rq = &mut self.rqs[cpu as usize];
        rq.min_v = rq.min_v.max(m);
    }

    /// EEVDF's V: the load-weighted mean vruntime of the queue and the running thread.
    fn avg_v(&self, cx: &Cx, cpu: u32) -> i64 {
        self.lag_sums(cx, cpu).avg()
    }

    /// `avg_vruntime`'s sums over the queue and the running thread, taken once per decision
    /// (each eligibility test is then one multiplication, not another pass over the queue).
    fn lag_sums(&self, cx: &Cx, cpu: u32) -> LagSums {
        let rq = &self.rqs[cpu as usize];
        let v0 = rq.min_v;
        let (mut sum, mut load) = (0i128, 0i128);
        for t in rq.queue.iter().copied().chain(rq.curr) {
            let w = i128::from(Self::w(cx, t));
            sum += i128::from(self.ents[t as usize].v - v0) * w;
            load += w;
        }
        LagSums { v0, sum, load }
    }

    fn sched_slice(&self, cx: &Cx, cpu: u32, t: u32) -> u64 {
        let rq = &self.rqs[cpu as usize];
        let nr = (rq.queue.len() + usize::from(rq.curr.is_some())) as u64;
        let period = if nr <= self.p.nr_latency {
            self.p.latency
        } else {
            nr * self.p.min_granularity
        };
        let load = rq.load.max(1);
        let s = (i128::from(period) * i128::from(Self::w(cx, t)) / load) as u64;
        s.max(self.p.min_granularity)
    }

    /// Puts `t` on `cpu`'s queue at its wakeup (or first) placement.
    fn place(&mut self, cx: &Cx, cpu: u32, t: u32, from: u32) {
        let w = Self::w(cx, t);
        let initial = !self.ents[t as usize].placed;
        match self.flavour {
            Flavour::Cfs => {
                let rq_min = self.rqs[cpu as usize].min_v;
                let e = &mut self.ents[t as usize];
                if initial {
                    let vslice = delta_fair(self.p.latency, w);
                    e.v = rq_min + if self.p.start_debit { vslice } else { 0 };
                } else {
                    if from != cpu {
                        // vruntime is relative to the queue it leaves and re-based on the new one.
                        e.v = e.v - self.rqs[from as usize].min_v + rq_min;
                    }
                    let mut thresh = self.p.latency as i64;
                    if self.p.gentle_fair_sleepers {
                        thresh /= 2;
                    }
                    e.v = e.v.max(rq_min - thresh);
                }
            }
            Flavour::Eevdf => {
                let v = self.avg_v(cx, cpu);
                let rq = &self.rqs[cpu as usize];
                let load = rq.load;
                let busy = !rq.queue.is_empty() || rq.curr.is_some();
                let e = &mut self.ents[t as usize];
                let mut lag = 0i64;
                if self.p.place_lag && busy && !initial && load > 0 {
                    lag = scale_lag(e.vlag, load + i128::from(w), load);
                }
                e.v = v - lag;
                let vslice = delta_fair(self.p.base_slice, w);
                e.deadline = e.v + if initial { vslice / 2 } else { vslice };
            }
        }
        let e = &mut self.ents[t as usize];
        e.placed = true;
        self.seq += 1;
        e.seq = self.seq;
        let rq = &mut self.rqs[cpu as usize];
        rq.queue.push(t);
        rq.load += i128::from(w);
    }

    fn store_lag(&mut self, cx: &Cx, cpu: u32, t: u32) {
        if self.flavour != Flavour::Eevdf {
            return;
        }
        let w = Self::w(cx, t);
        let v = self.avg_v(cx, cpu);
        let limit = delta_fair(self.p.base_slice + self.p.tick, w);
        let e = &mut self.ents[t as usize];
        e.vlag = (v - e.v).clamp(-limit, limit);
    }

    fn remove(&mut self, cx: &Cx, cpu: u32, t: u32) {
        let rq = &mut self.rqs[cpu as usize];
        if let Some(i) = rq.queue.iter().position(|&u| u == t) {
            rq.queue.swap_remove(i);
            rq.load -= i128::from(Self::w(cx, t));
        }
    }

    /// The queued thread `pick` would take, without taking it.
    fn best(&self, cx: &Cx, cpu: u32) -> Option<u32> {
        let rq = &self.rqs[cpu as usize];
        let key = |t: u32| {
            let e = &self.ents[t as usize];
            (e.v, e.seq)
        };
        match self.flavour {
            Flavour::Cfs => rq.queue.iter().copied().min_by_key(|&t| key(t)),
            Flavour::Eevdf => {
                let sums = self.lag_sums(cx, cpu);
                let eligible = |t: u32| sums.eligible(self.ents[t as usize].v);
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
                    .filter(|&t| eligible(t))
                    .min_by_key(|&t| (self.ents[t as usize].deadline, self.ents[t as usize].seq))
                    .or_else(|| rq.queue.iter().copied().min_by_key(|&t| key(t)))
            }
        }
    }

    fn hot(&self, t: u32, now: u64) -> bool {
        now.saturating_sub(self.ents[t as usize].last_ran) < self.p.migration_cost
    }

    /// Moves a queued thread from `src` to `dst` (balancing).
    fn migrate(&mut self, cx: &Cx, t: u32, src: u32, dst: u32) {
        self.store_lag(cx, src, t);
        let rel_deadline = self.ents[t as usize].deadline - self.ents[t as usize].v;
        self.remove(cx, src, t);
        self.place(cx, dst, t, src);
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
        self.migrate(cx, t, src, dst);
        cx.queue_moved(src, dst);
    }

    /// Periodic balancing by load: the queued threads of the most loaded pCPU that fit in
    /// half the difference move to the least loaded one (oldest queued first), as
    /// `detach_tasks` does; a cache-hot one only after [`CACHE_NICE_TRIES`] failures.
    fn balance_by_load(&mut self, cx: &mut Cx, now: u64) {
        let mut loads = vec![0.0f64; cx.ncpus as usize];
        for (cpu, rq) in self.rqs.iter().enumerate() {
            for t in rq.queue.iter().copied().chain(rq.curr) {
                loads[cpu] += self.load.load(t, now, Self::w(cx, t));
            }
        }
        for t in 0..cx.threads.len() as u32 {
            if !self.load.runnable(t) {
                loads[cx.cpu_of[t as usize] as usize] += self.load.load(t, now, Self::w(cx, t));
            }
        }
        let Some((src, dst, mut left)) = busiest_pair(&loads) else {
            self.balance_failed = 0;
            return;
        };
        let mut candidates: Vec<u32> = self.rqs[src as usize]
            .queue
            .iter()
            .copied()
            .filter(|&t| cx.threads[t as usize].may_run_on(dst))
            .collect();
        candidates.sort_by_key(|&t| self.ents[t as usize].seq);
        let mut moved = false;
        for t in candidates {
            if self.hot(t, now) && self.balance_failed <= CACHE_NICE_TRIES {
                continue;
            }
            let load = self.load.load(t, now, Self::w(cx, t));
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
        self.rqs[src as usize]
            .queue
            .iter()
            .copied()
            .filter(|&t| cx.threads[t as usize].may_run_on(dst) && !self.hot(t, now))
            .min_by_key(|&t| self.ents[t as usize].seq)
    }
}

impl Policy for Fair {
    fn wake(&mut self, cx: &mut Cx, t: u32, now: u64) -> u32 {
        self.load.set_runnable(t, now, true);
        let cpu = wake_cpu(cx, t, |c| self.rqs[c as usize].queue.len());
        let from = cx.cpu_of[t as usize];
        self.update_curr(cx, cpu, now);
        self.place(cx, cpu, t, from);
        cx.touch(cpu);
        let rq = &self.rqs[cpu as usize];
        let Some(curr) = rq.curr else {
            cx.resched(cpu);
            return cpu;
        };
        let preempt = match self.flavour {
            Flavour::Cfs => {
                let vdiff = self.ents[curr as usize].v - self.ents[t as usize].v;
                vdiff > delta_fair(self.p.wakeup_granularity, Self::w(cx, t))
            }
            Flavour::Eevdf => {
                let sums = self.lag_sums(cx, cpu);
                let eligible = |u: u32| sums.eligible(self.ents[u as usize].v);
                let ce = &self.ents[curr as usize];
                let protected = self.p.run_to_parity
                    && rq
                        .protect
                        .is_some_and(|(p, vprot)| p == curr && ce.v < vprot)
                    && eligible(curr);
                if protected {
                    false
                } else {
                    // pick_eevdf over the queue and curr would take the wakee.
                    let curr_ok = eligible(curr);
                    let best = rq
                        .queue
                        .iter()
                        .copied()
                        .chain(curr_ok.then_some(curr))
                        .filter(|&u| u == curr || eligible(u))
                        .min_by_key(|&u| {
                            (self.ents[u as usize].deadline, self.ents[u as usize].seq)
                        });
                    best == Some(t)
                }
            }
        };
        if preempt {
            cx.resched(cpu);
        }
        cpu
    }

    fn reaffine(&mut self, cx: &mut Cx, t: u32, now: u64) -> Option<u32> {
        let src = (0..cx.ncpus).find(|&c| self.rqs[c as usize].queue.contains(&t))?;
        if cx.threads[t as usize].may_run_on(src) {
            return None;
        }
        let dst = wake_cpu(cx, t, |c| self.rqs[c as usize].queue.len());
        self.move_queued(cx, t, src, dst, now);
        Some(dst)
    }

    fn put_prev(&mut self, cx: &mut Cx, cpu: u32, t: u32, now: u64, runnable: bool) {
        self.update_curr(cx, cpu, now);
        self.ents[t as usize].last_ran = now;
        if !runnable {
            self.store_lag(cx, cpu, t);
            self.load.set_runnable(t, now, false);
        }
        let w = i128::from(Self::w(cx, t));
        let rq = &mut self.rqs[cpu as usize];
        rq.curr = None;
        if runnable {
            rq.queue.push(t);
        } else {
            rq.load -= w;
        }
    }

    fn pick(&mut self, cx: &mut Cx, cpu: u32, now: u64) -> Option<u32> {
        if self.rqs[cpu as usize].queue.is_empty() {
            // New-idle balance: pull from the pCPU with the most waiting.
            let n = cx.ncpus;
            // Each candidate's movable thread found once (a queue without waiting threads
            // has none, so it is skipped before the search).
            let pull = cpus_after(cpu, n)
                .filter(|&c| !self.rqs[c as usize].queue.is_empty())
                .filter_map(|c| Some((c, self.movable(cx, c, cpu, now)?)))
                .max_by_key(|&(c, _)| (self.rqs[c as usize].queue.len(), std::cmp::Reverse(c)));
            if let Some((src, t)) = pull {
                self.update_curr(cx, src, now);
                self.migrate(cx, t, src, cpu);
                cx.touch(src);
            }
        }
        let Some(t) = self.best(cx, cpu) else {
            // Idle: balance again soon (hot threads cool down).
            self.next_balance = self.next_balance.min(now + self.p.idle_balance_interval);
            return None;
        };
        let rq = &mut self.rqs[cpu as usize];
        if let Some(i) = rq.queue.iter().position(|&u| u == t) {
            rq.queue.swap_remove(i);
        }
        rq.curr = Some(t);
        rq.exec_start = now;
        let e = &mut self.ents[t as usize];
        e.prev_sum_exec = e.sum_exec;
        if self.flavour == Flavour::Eevdf && rq.protect.is_none_or(|(p, _)| p != t) {
            rq.protect = Some((t, e.deadline));
        }
        if self.flavour == Flavour::Eevdf && rq.protect.is_some_and(|(p, v)| p == t && v < e.v) {
            rq.protect = Some((t, e.deadline));
        }
        Some(t)
    }

    fn timer(&self, cx: &Cx, cpu: u32, now: u64) -> u64 {
        let rq = &self.rqs[cpu as usize];
        let Some(t) = rq.curr else { return u64::MAX };
        if rq.queue.is_empty() {
            return u64::MAX;
        }
        let w = Self::w(cx, t);
        let e = &self.ents[t as usize];
        let d = now.saturating_sub(rq.exec_start);
        let v_now = e.v + delta_fair(d, w);
        let at = match self.flavour {
            Flavour::Cfs => {
                let ran = e.sum_exec + d - e.prev_sum_exec;
                let slice = self.sched_slice(cx, cpu, t);
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
            Flavour::Eevdf => now + wall_for(e.deadline - v_now, w),
        };
        tick_at_or_after(at, self.p.tick)
    }

    fn tick(&mut self, cx: &mut Cx, cpu: u32, now: u64) -> bool {
        let Some(t) = self.rqs[cpu as usize].curr else {
            return false;
        };
        let before = self.ents[t as usize].deadline;
        self.update_curr(cx, cpu, now);
        let rq = &self.rqs[cpu as usize];
        if rq.queue.is_empty() {
            return false;
        }
        match self.flavour {
            Flavour::Cfs => {
                let e = &self.ents[t as usize];
                let ran = e.sum_exec - e.prev_sum_exec;
                let slice = self.sched_slice(cx, cpu, t);
                if ran > slice {
                    return true;
                }
                let left = rq.queue.iter().map(|&u| self.ents[u as usize].v).min();
                ran >= self.p.min_granularity && left.is_some_and(|l| e.v - l > slice as i64)
            }
            // update_deadline: a new slice was handed out, so reschedule.
            Flavour::Eevdf => self.ents[t as usize].deadline != before,
        }
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
        if let Some((src, dst)) = imbalance(cx, |c| self.rqs[c as usize].queue.len()) {
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
