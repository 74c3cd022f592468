//! The fair policies' wakeup placement: where an entity's virtual time starts on the queue
//! it joins (CFS's sleeper credit and `START_DEBIT`, EEVDF's lag), the lag it keeps when it
//! leaves, and whether its wakeup preempts the running entity (`check_preempt_wakeup`).

use super::{delta_fair, scale_lag, Fair, Flavour};
use crate::engine::Cx;

impl Fair {
    /// Puts entity `e` on queue `r` at its wakeup (or first) placement; `from`: the queue
    /// it left (CFS re-bases its vruntime from there).
    pub(super) fn place(&mut self, cx: &Cx, r: usize, e: u32, from: usize) {
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

    pub(super) fn store_lag(&mut self, cx: &Cx, r: usize, e: u32) {
        if self.flavour != Flavour::Eevdf {
            return;
        }
        let w = self.w(cx, e);
        let v = self.avg_v(cx, r);
        let limit = delta_fair(self.p.base_slice + self.p.tick, w);
        let ent = &mut self.ents[e as usize];
        ent.vlag = (v - ent.v).clamp(-limit, limit);
    }

    pub(super) fn remove(&mut self, cx: &Cx, r: usize, e: u32) {
        let w = i128::from(self.w(cx, e));
        let rq = &mut self.rqs[r];
        if let Some(i) = rq.queue.iter().position(|&u| u == e) {
            rq.queue.swap_remove(i);
            rq.load -= w;
        }
    }

    /// Whether waking `wakee` into queue `r` preempts `curr` there (`check_preempt_wakeup`
    /// at the level `find_matching_se` found).
    pub(super) fn wakeup_preempts(&self, cx: &Cx, r: usize, curr: u32, wakee: u32) -> bool {
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
}
