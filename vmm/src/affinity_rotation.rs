//! The affinity rotation of `migrate_every_ms`: every period, each vCPU with more than one
//! CPU to rotate over moves to the next one, and each move is logged for replays.

use std::time::{Duration, Instant};

use crate::{lock, sched, Shared};

/// When the next rotation is due, and how many have been made.
pub(crate) struct AffinityRotation {
    every: Duration,
    next: Instant,
    step: usize,
}

impl AffinityRotation {
    pub(crate) fn new(every: Duration) -> Self {
        AffinityRotation {
            every,
            next: Instant::now() + every,
            step: 0,
        }
    }

    /// Rotates every vCPU once if a period has passed (and the VMM is not stopping).
    pub(crate) fn tick(&mut self, shared: &Shared) {
        if Instant::now() < self.next || shared.stop.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        self.step += 1;
        for (g, slot) in shared.vcpus.iter().enumerate() {
            let cpus = &slot.rotate_over;
            if cpus.len() > 1 {
                // Offsetting by the vCPU's position spreads vCPUs over the CPUs.
                let cpu = cpus[(g + self.step) % cpus.len()];
                // A thread that already ended cannot be moved; nothing to do then.
                if sched::set_affinity(slot.tid(), &[cpu]).is_ok() {
                    lock(&shared.affinity_changes).record(slot.tid(), vec![cpu]);
                }
            }
        }
        self.next += self.every;
    }
}
