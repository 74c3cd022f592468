//! The fair policies' balancing: moving queued threads between pCPUs (the new-idle pull;
//! the periodic balance each pCPU runs for itself from its tick, as 6.1's
//! `rebalance_domains` and `load_balance` do, by the rules of `policy/load_balance.rs`; the
//! old rule, one balance of the whole host by count then by load) and the cache-hot test
//! that holds a thread back.

use super::{Fair, Flavour};
use crate::engine::Cx;
use crate::policy::load_balance::{
    busiest_pair, find_imbalance, fits, CpuStats, Imbalance, CACHE_NICE_TRIES,
};
use crate::policy::{cpus_after, imbalance, next_balance_at, tick_at_or_after};

/// One pCPU's balancing state: its domain's `last_balance`, `balance_interval` (ms),
/// `nr_balance_failed`, and its `rq->next_balance`.
#[derive(Clone, Debug)]
pub(super) struct PcpuBalance {
    last: u64,
    interval_ms: u64,
    failed: u32,
    next: u64,
}

impl PcpuBalance {
    /// `sd_init`'s start: `balance_interval` = `min_interval` = the domain's pCPU count (ms).
    pub(super) fn new(ncpus: u32) -> PcpuBalance {
        PcpuBalance {
            last: 0,
            interval_ms: u64::from(ncpus),
            failed: 0,
            next: 0,
        }
    }
}

/// What one periodic balance of a pCPU found.
enum Outcome {
    Balanced,
    Moved,
    Failed,
}

impl Fair {
    /// `get_sd_balance_interval`: the pCPU's interval, times `busy_factor` and a jiffy
    /// short while busy, in whole ticks, at most `max_load_balance_interval` (HZ x pCPUs /
    /// 10 jiffies).
    fn sd_interval(&self, cpu: u32, busy: bool, ncpus: u32) -> u64 {
        let tick = self.p.tick;
        let mut ms = self.lb[cpu as usize].interval_ms;
        if busy {
            ms *= self.p.busy_factor;
        }
        let mut jiffies = (ms * 1_000_000).div_ceil(tick);
        if busy {
            jiffies -= 1;
        }
        let max = (1_000_000_000 / tick * u64::from(ncpus) / 10).max(1);
        jiffies.clamp(1, max) * tick
    }

    /// `cpu` found nothing to run: it balances again an idle interval after its last
    /// balance (the kernel's idle pCPUs are balanced by the nohz kick from a busy tick),
    /// or (the old rule) the host balances within `idle_balance_interval`.
    pub(super) fn went_idle(&mut self, cpu: u32, now: u64) {
        if !self.p.balance_per_pcpu {
            self.next_balance = self.next_balance.min(now + self.p.idle_balance_interval);
            return;
        }
        let ncpus = self.lb.len() as u32;
        let at = (self.lb[cpu as usize].last + self.sd_interval(cpu, false, ncpus)).max(now);
        let lb = &mut self.lb[cpu as usize];
        lb.next = lb.next.min(tick_at_or_after(at, self.p.tick));
        self.next_balance = self.next_balance.min(lb.next);
    }

    /// `rebalance_domains` of every pCPU whose `next_balance` has come, in pCPU order.
    pub(super) fn rebalance_due(&mut self, cx: &mut Cx, now: u64) {
        let n = cx.ncpus;
        let mut stats: Option<Vec<CpuStats>> = None;
        for cpu in 0..n {
            if self.lb[cpu as usize].next > now {
                continue;
            }
            let idle = !cx.is_running(cpu) && self.nr_queued(cpu) == 0;
            let mut busy = !idle;
            let lb = &self.lb[cpu as usize];
            if now >= lb.last + self.sd_interval(cpu, busy, n) {
                let stats = stats.get_or_insert_with(|| self.cpu_stats(cx, now));
                let outcome = self.load_balance(cx, stats, cpu, idle, now);
                let lb = &mut self.lb[cpu as usize];
                match outcome {
                    Outcome::Balanced => {
                        lb.failed = 0;
                        if lb.interval_ms < 2 * u64::from(n) {
                            lb.interval_ms *= 2;
                        }
                    }
                    Outcome::Moved => {
                        lb.failed = 0;
                        lb.interval_ms = u64::from(n);
                        busy = true;
                    }
                    Outcome::Failed => {
                        lb.failed += 1;
                        lb.interval_ms = u64::from(n);
                    }
                }
                lb.last = now;
            }
            let next = self.lb[cpu as usize].last + self.sd_interval(cpu, busy, n);
            self.lb[cpu as usize].next = next.max(now + 1);
        }
        self.next_balance = self.lb.iter().map(|l| l.next).min().unwrap_or(u64::MAX);
    }

    /// Each pCPU's runnable threads and PELT sums at `now`; a sleeping thread's load (PELT's
    /// blocked load) stays with the pCPU it last ran on.
    fn cpu_stats(&self, cx: &Cx, now: u64) -> Vec<CpuStats> {
        let mut stats = vec![CpuStats::default(); cx.ncpus as usize];
        for t in 0..cx.threads.len() as u32 {
            let s = &mut stats[cx.cpu_of[t as usize] as usize];
            s.load += self.load.load(t, now, self.w(cx, t));
            s.runnable += self.load.runnable_avg(t, now);
            s.util += self.load.util_avg(t, now);
        }
        for cpu in 0..cx.ncpus {
            stats[cpu as usize].nr = (self.nr_queued(cpu) + usize::from(cx.is_running(cpu))) as u32;
        }
        stats
    }

    /// `load_balance` of pCPU `this` (`idle`: it runs nothing): what `find_imbalance` asks
    /// for, pulled from the busiest pCPU's queue onto `this`, least recently queued first,
    /// a cache-hot thread only after [`CACHE_NICE_TRIES`] failures; a thread heavier than
    /// what is left of a load imbalance waits for more failures (`fits`). After
    /// `cache_nice_tries + 2` failures to move by count onto an idle pCPU, the active
    /// balance takes one regardless of cache heat. `stats` follows the moves.
    fn load_balance(
        &mut self,
        cx: &mut Cx,
        stats: &mut [CpuStats],
        this: u32,
        idle: bool,
        now: u64,
    ) -> Outcome {
        let found = find_imbalance(stats, this, idle, self.p.balance_count_busy);
        if self.p.balance_trace {
            let failed = self.lb[this as usize].failed;
            let types: Vec<_> = stats.iter().map(|s| s.group_type()).collect();
            let verdict = match found {
                None => "balanced".to_string(),
                Some((src, Imbalance::Load(l))) => format!("pull load {l:.0} from pcpu{src}"),
                Some((src, Imbalance::Tasks(n))) => format!("pull {n} threads from pcpu{src}"),
            };
            eprintln!(
                "balance {} pcpu{this} ({}, failed {failed}): {}; types {types:?}: {verdict}",
                self.trace_when(now),
                if idle { "idle" } else { "busy" },
                self.trace_pcpus(cx, now)
            );
        }
        let Some((src, imbalance)) = found else {
            return Outcome::Balanced;
        };
        if !self.p.balance_load && matches!(imbalance, Imbalance::Load(_)) {
            return Outcome::Balanced;
        }
        let failed = self.lb[this as usize].failed;
        let mut candidates: Vec<u32> = self
            .queued(src)
            .filter(|&t| cx.threads[t as usize].may_run_on(this))
            .collect();
        candidates.sort_by_key(|&t| self.ents[t as usize].seq);
        let (mut load_left, mut tasks_left) = match imbalance {
            Imbalance::Load(l) => (l, u32::MAX),
            Imbalance::Tasks(n) => (f64::INFINITY, n),
        };
        let active =
            matches!(imbalance, Imbalance::Tasks(_)) && idle && failed > CACHE_NICE_TRIES + 2;
        let mut moved = false;
        for t in candidates {
            if !active && self.hot(t, now) && failed <= CACHE_NICE_TRIES {
                continue;
            }
            let load = self.load.load(t, now, self.w(cx, t));
            if matches!(imbalance, Imbalance::Load(_)) && !fits(load, load_left, failed) {
                continue;
            }
            self.trace_move(cx, t, load, src, this, now);
            self.move_queued(cx, t, src, this, now);
            let (runnable, util) = (self.load.runnable_avg(t, now), self.load.util_avg(t, now));
            for (cpu, sign) in [(src, -1.0), (this, 1.0)] {
                let s = &mut stats[cpu as usize];
                s.load += sign * load;
                s.runnable += sign * runnable;
                s.util += sign * util;
            }
            stats[src as usize].nr -= 1;
            stats[this as usize].nr += 1;
            moved = true;
            load_left -= load;
            tasks_left -= 1;
            if load_left <= 0.0 || tasks_left == 0 || active {
                break;
            }
        }
        if moved {
            Outcome::Moved
        } else {
            Outcome::Failed
        }
    }

    /// New-idle balance: `cpu`'s queue is empty, so it pulls from the pCPU with the most
    /// waiting.
    pub(super) fn newidle_pull(&mut self, cx: &mut Cx, cpu: u32, now: u64) {
        // The pCPU with the most waiting (the lowest on a tie) that has a movable thread. A
        // queue's movable thread is searched for only when the queue would beat the best
        // found so far (a queue without waiting threads never does), so a queue that cannot
        // win costs no pass over its threads.
        let mut pull: Option<(usize, u32, u32)> = None;
        for c in cpus_after(cpu, cx.ncpus) {
            let nr = self.nr_queued(c);
            let beats = |&(best_nr, best_c, _): &(usize, u32, u32)| {
                (nr, std::cmp::Reverse(c)) > (best_nr, std::cmp::Reverse(best_c))
            };
            if nr == 0 || !pull.as_ref().is_none_or(beats) {
                continue;
            }
            if let Some(t) = self.movable(cx, c, cpu, now) {
                pull = Some((nr, c, t));
            }
        }
        if let Some((_, src, t)) = pull {
            self.update_curr(cx, src, now);
            self.migrate(cx, t, src, cpu, now);
            cx.touch(src);
        }
    }

    /// The periodic balance: the pull by count onto an idle pCPU, else the balance by load.
    pub(super) fn periodic_balance(&mut self, cx: &mut Cx, now: u64) {
        self.next_balance = next_balance_at(
            cx,
            now,
            self.p.idle_balance_interval,
            self.p.balance_interval,
        );
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

    pub(super) fn hot(&self, t: u32, now: u64) -> bool {
        now.saturating_sub(self.ents[t as usize].last_ran) < self.p.migration_cost
    }

    /// Moves a queued thread from `src` to `dst` (balancing).
    pub(super) fn migrate(&mut self, cx: &Cx, t: u32, src: u32, dst: u32, now: u64) {
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
    pub(super) fn move_queued(&mut self, cx: &mut Cx, t: u32, src: u32, dst: u32, now: u64) {
        self.update_curr(cx, src, now);
        self.update_curr(cx, dst, now);
        self.migrate(cx, t, src, dst, now);
        cx.queue_moved(src, dst);
    }

    /// Periodic balancing by load: the queued threads of the most loaded pCPU that fit in
    /// half the difference move to the least loaded one (oldest queued first), as
    /// `detach_tasks` does; a cache-hot one only after [`CACHE_NICE_TRIES`] failures.
    pub(super) fn balance_by_load(&mut self, cx: &mut Cx, now: u64) {
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
        if self.p.balance_trace {
            eprintln!(
                "balance {} (failed {}): {}",
                self.trace_when(now),
                self.balance_failed,
                self.trace_pcpus(cx, now)
            );
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
            self.trace_move(cx, t, load, src, dst, now);
            self.move_queued(cx, t, src, dst, now);
            moved = true;
            left -= load;
            if left <= 0.0 {
                break;
            }
        }
        self.balance_failed = if moved { 0 } else { self.balance_failed + 1 };
    }

    /// `--param balance_trace`: each pCPU's PELT load (sleeping threads' where they last
    /// ran, as the balancer counts it), the background stand-ins' part of it, the thread
    /// running there and the queued ones with their loads (threads by tid; a background
    /// stand-in as `bg`).
    fn trace_pcpus(&self, cx: &Cx, now: u64) -> String {
        let name = |t: u32| {
            let th = &cx.threads[t as usize];
            if th.background {
                "bg".to_string()
            } else {
                th.tid.to_string()
            }
        };
        (0..cx.ncpus)
            .map(|cpu| {
                let (mut load, mut background) = (0.0, 0.0);
                for t in (0..cx.threads.len() as u32).filter(|&t| cx.cpu_of[t as usize] == cpu) {
                    let l = self.load.load(t, now, self.w(cx, t));
                    load += l;
                    if cx.threads[t as usize].background {
                        background += l;
                    }
                }
                let queued: Vec<String> = self
                    .queued(cpu)
                    .map(|t| format!("{}:{:.0}", name(t), self.load.load(t, now, self.w(cx, t))))
                    .collect();
                format!(
                    "pcpu{cpu} load {load:.0} (background {background:.0}) runs {} queued [{}]",
                    self.running(cpu).map_or("-".to_string(), name),
                    queued.join(" ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// `--param balance_trace`: one thread moved by a periodic balance.
    fn trace_move(&self, cx: &Cx, t: u32, load: f64, src: u32, dst: u32, now: u64) {
        if self.p.balance_trace {
            eprintln!(
                "balance {} move {} (load {load:.0}) pcpu{src} -> pcpu{dst}",
                self.trace_when(now),
                cx.threads[t as usize].tid
            );
        }
    }

    /// A trace line's policy and time (seconds into the replay): `--policy cfs,eevdf` prints
    /// both runs' balances, one after the other.
    fn trace_when(&self, now: u64) -> String {
        format!("{} {:.3}s", self.flavour.name(), now as f64 / 1e9)
    }

    /// A queued thread of `src` that may move to `dst` now.
    pub(super) fn movable(&self, cx: &Cx, src: u32, dst: u32, now: u64) -> Option<u32> {
        self.queued(src)
            .filter(|&t| cx.threads[t as usize].may_run_on(dst) && !self.hot(t, now))
            .min_by_key(|&t| self.ents[t as usize].seq)
    }
}
