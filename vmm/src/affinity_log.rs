//! The affinity changes the VMM's rotation makes, kept for the live source to record: a
//! replay under another policy needs each vCPU's affinity at each instant, which no kernel
//! event of a recording carries.

/// Most changes kept undrained: a VMM run without a reader (the `vmm` command) must not grow
/// without bound. What is left out past it is counted.
const MAX_PENDING: usize = 1 << 16;

#[derive(Default)]
pub(crate) struct AffinityLog {
    pub(crate) pending: Vec<model::Affinity>,
    pub(crate) dropped: u64,
}

impl AffinityLog {
    /// Thread `tid` may run on `cpus` from now (CLOCK_MONOTONIC) on.
    pub(crate) fn record(&mut self, tid: u32, cpus: Vec<u32>) {
        if self.pending.len() < MAX_PENDING {
            self.pending.push(model::Affinity {
                ts: crate::clock::monotonic_ns(),
                tid,
                cpus,
            });
        } else {
            self.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_its_bound_changes_are_counted_not_kept() {
        let mut log = AffinityLog::default();
        for i in 0..MAX_PENDING + 3 {
            log.record(i as u32, vec![0]);
        }
        assert_eq!(log.pending.len(), MAX_PENDING);
        assert_eq!(log.dropped, 3);
        assert!(log.pending.windows(2).all(|w| w[0].ts <= w[1].ts));
    }
}
