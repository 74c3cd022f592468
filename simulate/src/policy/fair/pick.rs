//! The fair policies' pick: which queued entity runs next (CFS: the smallest vruntime;
//! EEVDF: the eligible one with the earliest virtual deadline, RUN_TO_PARITY), and when the
//! running one has used its slice (`check_preempt_tick`, `update_deadline`).

use super::{delta_fair, wall_for, Fair, Flavour};
use crate::engine::Cx;

/// `cfs_rq->avg_vruntime` and `avg_load`: sum of (v - v0) * weight and of weight over the
/// queue and the running thread, relative to `v0` (the queue's `min_vruntime`).
#[derive(Clone, Copy)]
pub(super) struct LagSums {
    v0: i64,
    sum: i128,
    load: i128,
}

impl LagSums {
    /// V, the load-weighted mean (floor division, as `div_euclid`).
    pub(super) fn avg(&self) -> i64 {
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
    pub(super) fn eligible(&self, v: i64) -> bool {
        self.sum >= i128::from(v - self.v0) * self.load
    }
}

impl Fair {
    /// EEVDF's V: the load-weighted mean vruntime of queue `r` and its running entity.
    #[inline]
    pub(super) fn avg_v(&self, cx: &Cx, r: usize) -> i64 {
        self.lag_sums(cx, r).avg()
    }

    /// `avg_vruntime`'s sums over the queue and the running entity, taken once per decision
    /// (each eligibility test is then one multiplication, not another pass over the queue).
    #[inline]
    pub(super) fn lag_sums(&self, cx: &Cx, r: usize) -> LagSums {
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

    pub(super) fn sched_slice(&self, cx: &Cx, r: usize, e: u32) -> u64 {
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
    pub(super) fn slice_end(&self, cx: &Cx, r: usize, e: u32, now: u64) -> u64 {
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
    pub(super) fn slice_over(&self, cx: &Cx, r: usize, e: u32, before: i64) -> bool {
        if self.rqs[r].queue.is_empty() {
            return false;
        }
        match self.flavour {
            Flavour::Cfs => self.slice_used(cx, r, e),
            Flavour::Eevdf => self.ents[e as usize].deadline != before,
        }
    }

    /// CFS's `check_preempt_tick` for running entity `e` of queue `r`.
    pub(super) fn slice_used(&self, cx: &Cx, r: usize, e: u32) -> bool {
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

    /// The queued entity `pick` would take from queue `r`, without taking it.
    pub(super) fn best(&self, cx: &Cx, r: usize) -> Option<u32> {
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

    /// Takes `e` from queue `r` to run it.
    pub(super) fn set_curr(&mut self, r: usize, e: u32, now: u64) {
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
}
