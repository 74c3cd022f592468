//! A time for each of `n` slots (the engine's pCPUs: when each next needs the engine; its
//! threads: when each sleeping one wakes) and the earliest of them, kept in a tournament
//! tree: each node the earlier of its two children, the lower slot on a tie, so the root is
//! the earliest time and the lowest slot holding it, as a pass in slot order (or a heap of
//! `(time, slot)`) would find. Setting one slot's time costs log2(n) comparisons at most;
//! reading the earliest costs none. On 8 pCPUs the pass over the pCPUs was ~6% of an EEVDF
//! run's CPU time, and grows with `--pcpus` (up to 4096) where this does not; beside the
//! wakeups' binary heap it saves the pop's sift (each thread has at most one wakeup
//! pending, so a slot per thread holds them all).

/// A time and the slot it belongs to.
type Slot = (u64, u32);

pub(super) struct TimerTree {
    /// `tree[1]` is the root; node `i`'s children are `2i` and `2i + 1`; the leaves (one per
    /// slot, then padding that never fires) start at `leaves`.
    tree: Vec<Slot>,
    leaves: usize,
}

/// The earlier of two slots, the left (lower slots) on a tie.
fn earlier(left: Slot, right: Slot) -> Slot {
    if right.0 < left.0 {
        right
    } else {
        left
    }
}

impl TimerTree {
    /// `n` slots, none with a time (`u64::MAX`).
    pub(super) fn new(n: usize) -> TimerTree {
        let leaves = n.next_power_of_two().max(1);
        let mut tree = vec![(u64::MAX, 0); 2 * leaves];
        for (i, slot) in tree[leaves..].iter_mut().enumerate() {
            slot.1 = i as u32;
        }
        for i in (1..leaves).rev() {
            tree[i] = earlier(tree[2 * i], tree[2 * i + 1]);
        }
        TimerTree { tree, leaves }
    }

    /// Slot `slot`'s time is `at` (`u64::MAX`: none).
    pub(super) fn set(&mut self, slot: u32, at: u64) {
        let mut i = self.leaves + slot as usize;
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

    /// Slot `slot`'s time (`u64::MAX`: none).
    pub(super) fn at(&self, slot: u32) -> u64 {
        self.tree[self.leaves + slot as usize].0
    }

    /// The earliest time and its slot (the lowest one on a tie); `u64::MAX` when none has one.
    pub(super) fn earliest(&self) -> (u64, u32) {
        self.tree[1]
    }
}

#[cfg(test)]
mod tests {
    use super::TimerTree;

    /// The pass in slot order the tree stands for.
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
    fn the_earliest_is_the_lowest_slot_of_the_earliest_time_after_every_change() {
        for n in [1usize, 2, 3, 5, 8, 13] {
            let mut tree = TimerTree::new(n);
            let mut times = vec![u64::MAX; n];
            // A small deterministic sequence with many ties and resets to "none".
            let mut x = 12345u64;
            for _ in 0..2000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let slot = (x >> 33) as usize % n;
                let t = match (x >> 20) % 5 {
                    0 => u64::MAX,
                    v => v * 10,
                };
                times[slot] = t;
                tree.set(slot as u32, t);
                let (want_t, want_slot) = by_pass(&times);
                let (got_t, got_slot) = tree.earliest();
                assert_eq!(got_t, want_t, "n={n} {times:?}");
                if want_t != u64::MAX {
                    assert_eq!(got_slot, want_slot, "n={n} {times:?}");
                }
            }
        }
    }
}
