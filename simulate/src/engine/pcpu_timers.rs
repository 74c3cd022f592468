//! Each pCPU's next decision time and the earliest of them, without a pass over every pCPU
//! at each engine step: a tournament tree (each node the earlier of its two children, the
//! lower pCPU on a tie, so the root is the earliest time and the lowest pCPU holding it, as
//! a pass in pCPU order would find). Setting one pCPU's time costs log2(pCPUs) comparisons
//! at most; reading the earliest costs none. On 8 pCPUs the pass was ~6% of an EEVDF run's
//! CPU time, and it grows with `--pcpus` (up to 4096) where this does not.

/// A time and the pCPU it belongs to.
type Slot = (u64, u32);

pub(super) struct PcpuTimers {
    /// `tree[1]` is the root; node `i`'s children are `2i` and `2i + 1`; the leaves (one per
    /// pCPU, then padding that never fires) start at `leaves`.
    tree: Vec<Slot>,
    leaves: usize,
}

/// The earlier of two slots, the left (lower pCPUs) on a tie.
fn earlier(left: Slot, right: Slot) -> Slot {
    if right.0 < left.0 {
        right
    } else {
        left
    }
}

impl PcpuTimers {
    /// `n` pCPUs, none with a time (`u64::MAX`).
    pub(super) fn new(n: usize) -> PcpuTimers {
        let leaves = n.next_power_of_two().max(1);
        let mut tree = vec![(u64::MAX, 0); 2 * leaves];
        for (i, slot) in tree[leaves..].iter_mut().enumerate() {
            slot.1 = i as u32;
        }
        for i in (1..leaves).rev() {
            tree[i] = earlier(tree[2 * i], tree[2 * i + 1]);
        }
        PcpuTimers { tree, leaves }
    }

    /// `cpu`'s next decision is at `at` (`u64::MAX`: none).
    pub(super) fn set(&mut self, cpu: u32, at: u64) {
        let mut i = self.leaves + cpu as usize;
        if self.tree[i].0 == at {
            return;
        }
        self.tree[i].0 = at;
        while i > 1 {
            i /= 2;
            let best = earlier(self.tree[2 * i], self.tree[2 * i + 1]);
            if self.tree[i] == best {
                // The nodes above depend only on this one: unchanged too.
                break;
            }
            self.tree[i] = best;
        }
    }

    /// The earliest time and its pCPU (the lowest one on a tie); `u64::MAX` when none has one.
    pub(super) fn earliest(&self) -> (u64, u32) {
        self.tree[1]
    }
}

#[cfg(test)]
mod tests {
    use super::PcpuTimers;

    /// The pass in pCPU order the tree stands for.
    fn by_pass(times: &[u64]) -> (u64, u32) {
        times.iter().enumerate().fold(
            (u64::MAX, 0),
            |best, (c, &t)| {
                if t < best.0 {
                    (t, c as u32)
                } else {
                    best
                }
            },
        )
    }

    #[test]
    fn the_earliest_is_the_lowest_pcpu_of_the_earliest_time_after_every_change() {
        for n in [1usize, 2, 3, 5, 8, 13] {
            let mut tree = PcpuTimers::new(n);
            let mut times = vec![u64::MAX; n];
            // A small deterministic sequence with many ties and resets to "none".
            let mut x = 12345u64;
            for _ in 0..2000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let cpu = (x >> 33) as usize % n;
                let t = match (x >> 20) % 5 {
                    0 => u64::MAX,
                    v => v * 10,
                };
                times[cpu] = t;
                tree.set(cpu as u32, t);
                let (want_t, want_cpu) = by_pass(&times);
                let (got_t, got_cpu) = tree.earliest();
                assert_eq!(got_t, want_t, "n={n} {times:?}");
                if want_t != u64::MAX {
                    assert_eq!(got_cpu, want_cpu, "n={n} {times:?}");
                }
            }
        }
    }
}
