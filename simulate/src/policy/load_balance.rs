//! Linux's periodic balancing by load (`load_balance` with `migrate_load`), which the fair
//! policies run beside the pull by runnable count that an idle pCPU makes.
//!
//! Why by load: the kernel's balancer compares each pCPU's PELT load (weight x the decayed
//! fraction of time each thread was runnable, sleeping threads' load still counted where
//! they last ran), not how many threads it holds. On the kernel matrix's demo recordings
//! (2 pCPUs: 3 spinning vCPUs, 2 sleepy ones at ~15%, a nice-10 one, and the recorder's own
//! ~40% of a pCPU) the kernel kept both spinning vCPUs of one pCPU beside a sleepy one, and
//! the third beside the other sleepy one and the recorder; by count alone (move only past a
//! difference of two) the model settled on other pairings, and the sleepy vCPUs' waits
//! (which are the other threads on their pCPU) came out 4-16x off.

/// PELT's half-life: `LOAD_AVG_PERIOD` (32) periods of 1024 us.
const HALF_LIFE_NS: f64 = 32.0 * 1024.0 * 1000.0;
/// `imbalance_pct` of the MC sched domain: busiest must carry 17% more than the local pCPU.
pub const IMBALANCE_PCT: f64 = 117.0;
/// `cache_nice_tries` of the MC domain: failed balances after which a cache-hot thread may
/// move.
pub const CACHE_NICE_TRIES: u32 = 1;

/// Each thread's runnable average (0..=1, PELT's `load_avg` / weight): decays with a 32 ms
/// half-life, grows while the thread is queued or running.
#[derive(Clone, Default)]
pub struct LoadTrack {
    avg: Vec<f64>,
    at: Vec<u64>,
    on_rq: Vec<bool>,
}

impl LoadTrack {
    /// Every thread's average starts at 1 (`full`: a new task's in the kernel, which the
    /// replay's threads are) or at 0.
    pub fn new(nthreads: usize, full: bool) -> LoadTrack {
        LoadTrack {
            avg: vec![if full { 1.0 } else { 0.0 }; nthreads],
            at: vec![0; nthreads],
            on_rq: vec![false; nthreads],
        }
    }

    fn decayed(&self, t: u32, now: u64) -> f64 {
        let i = t as usize;
        let dt = now.saturating_sub(self.at[i]);
        if dt == 0 {
            return self.avg[i];
        }
        let keep = (-(dt as f64) / HALF_LIFE_NS).exp2();
        self.avg[i] * keep + if self.on_rq[i] { 1.0 - keep } else { 0.0 }
    }

    /// `t` becomes runnable (`true`) or goes to sleep (`false`) at `now`.
    pub fn set_runnable(&mut self, t: u32, now: u64, runnable: bool) {
        let i = t as usize;
        self.avg[i] = self.decayed(t, now);
        self.at[i] = now;
        self.on_rq[i] = runnable;
    }

    pub fn runnable(&self, t: u32) -> bool {
        self.on_rq[t as usize]
    }

    /// PELT load of `t` at `now` with weight `w`.
    pub fn load(&self, t: u32, now: u64, w: u32) -> f64 {
        self.decayed(t, now) * f64::from(w)
    }
}

/// `find_busiest_group`'s verdict between the most and the least loaded pCPU (`loads`
/// indexed by pCPU): `(busiest, local, imbalance)` when busiest carries more than
/// [`IMBALANCE_PCT`] of local's load; the imbalance is half the difference (two pCPUs of
/// equal capacity meet at the mean).
pub fn busiest_pair(loads: &[f64]) -> Option<(u32, u32, f64)> {
    let busiest =
        (0..loads.len()).max_by(|&a, &b| loads[a].total_cmp(&loads[b]).then(b.cmp(&a)))?;
    let local = (0..loads.len()).min_by(|&a, &b| loads[a].total_cmp(&loads[b]).then(a.cmp(&b)))?;
    let (lb, ll) = (loads[busiest], loads[local]);
    (busiest != local && lb * 100.0 > ll * IMBALANCE_PCT).then_some((
        busiest as u32,
        local as u32,
        (lb - ll) / 2.0,
    ))
}

/// `detach_tasks`' test of one candidate of load `load` against what is left of the
/// imbalance: a thread heavier than the imbalance is skipped, less so after each failed
/// balance (`shr_bound(load, nr_balance_failed)`).
pub fn fits(load: f64, imbalance: f64, failed: u32) -> bool {
    load / f64::from(1u32 << failed.min(31)) <= imbalance
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_runnable_for_one_half_life_reaches_half_load() {
        let mut l = LoadTrack::new(1, false);
        l.set_runnable(0, 0, true);
        let half = l.load(0, HALF_LIFE_NS as u64, 1024);
        assert!((half - 512.0).abs() < 1.0, "{half}");
        l.set_runnable(0, HALF_LIFE_NS as u64, false);
        let quarter = l.load(0, 2 * HALF_LIFE_NS as u64, 1024);
        assert!((quarter - 256.0).abs() < 1.0, "{quarter}");
    }

    #[test]
    fn a_new_thread_starts_at_full_load_and_decays_while_asleep() {
        let mut l = LoadTrack::new(1, true);
        assert_eq!(l.load(0, 0, 1024), 1024.0);
        l.set_runnable(0, 0, false);
        let half = l.load(0, HALF_LIFE_NS as u64, 1024);
        assert!((half - 512.0).abs() < 1.0, "{half}");
    }

    #[test]
    fn balanced_within_the_imbalance_pct() {
        assert_eq!(busiest_pair(&[1100.0, 1000.0]), None);
        assert_eq!(busiest_pair(&[2048.0, 1024.0]), Some((0, 1, 512.0)));
        assert_eq!(busiest_pair(&[0.0, 300.0]), Some((1, 0, 150.0)));
    }

    #[test]
    fn heavy_threads_fit_after_failures() {
        assert!(!fits(1024.0, 557.0, 0));
        assert!(fits(1024.0, 557.0, 1));
        assert!(fits(150.0, 557.0, 0));
    }
}
