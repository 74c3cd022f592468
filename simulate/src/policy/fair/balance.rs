//! The fair policies' balancing: moving queued threads between pCPUs (the new-idle pull,
//! the periodic pull by count onto an idle pCPU, the periodic balance by PELT load of
//! `policy/load_balance.rs`) and the cache-hot test that holds a thread back.

use super::{Fair, Flavour};
use crate::engine::Cx;
use crate::policy::load_balance::{busiest_pair, fits, CACHE_NICE_TRIES};
use crate::policy::{cpus_after, imbalance, next_balance_at};

impl Fair {
    /// New-idle balance: `cpu`'s queue is empty, so it pulls from the pCPU with the most
    /// waiting.
    pub(super) fn newidle_pull(&mut self, cx: &mut Cx, cpu: u32, now: u64) {
        // Each candidate's movable thread found once (a queue without waiting threads has
        // none, so it is skipped before the search).
        let pull = cpus_after(cpu, cx.ncpus)
            .filter(|&c| self.nr_queued(c) > 0)
            .filter_map(|c| Some((c, self.movable(cx, c, cpu, now)?)))
            .max_by_key(|&(c, _)| (self.nr_queued(c), std::cmp::Reverse(c)));
        if let Some((src, t)) = pull {
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
    pub(super) fn movable(&self, cx: &Cx, src: u32, dst: u32, now: u64) -> Option<u32> {
        self.queued(src)
            .filter(|&t| cx.threads[t as usize].may_run_on(dst) && !self.hot(t, now))
            .min_by_key(|&t| self.ents[t as usize].seq)
    }
}
