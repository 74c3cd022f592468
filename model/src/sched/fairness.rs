//! Fairness: the share of the pCPUs each thread's weight entitles it to (weighted max-min
//! over the pCPUs it shares with others), Jain's index, and the kernel's weight table.

use super::clocks::Cum;
use super::cpu_set::CpuSet;
use super::Model;

impl Model {
    /// Weighted max-min fair share per thread (see the module docs).
    pub(super) fn entitled_shares(&self, figures: &[(Cum, u64)]) -> Vec<f64> {
        let n = self.tasks.len();
        let mut out = vec![0.0; n];
        // Group threads whose used pCPU sets overlap (transitively).
        let mut group: Vec<usize> = (0..n).collect();
        fn find(g: &mut [usize], mut i: usize) -> usize {
            while g[i] != i {
                g[i] = g[g[i]];
                i = g[i];
            }
            i
        }
        for i in 0..n {
            for j in (i + 1)..n {
                if self.tasks[i].cpus_used.intersects(&self.tasks[j].cpus_used) {
                    let (a, b) = (find(&mut group, i), find(&mut group, j));
                    if a != b {
                        group[a] = b;
                    }
                }
            }
        }
        let mut roots: Vec<usize> = (0..n).map(|i| find(&mut group, i)).collect();
        let members_of = |r: usize, roots: &[usize]| -> Vec<usize> {
            (0..n)
                .filter(|&i| roots[i] == r && !self.tasks[i].cpus_used.is_empty())
                .collect()
        };
        let mut done = vec![false; n];
        for r in 0..n {
            if done[r] {
                continue;
            }
            let members = members_of(roots[r], &roots);
            for &m in &members {
                done[m] = true;
            }
            done[r] = true;
            if members.is_empty() {
                continue;
            }
            let mut mask = CpuSet::default();
            for &m in &members {
                mask.union_with(&self.tasks[m].cpus_used);
            }
            let cpus: f64 = mask.iter().map(|b| self.tracked_capacity(b)).sum();
            let demand: Vec<f64> = members
                .iter()
                .map(|&m| {
                    let (c, el) = figures[m];
                    if el == 0 {
                        0.0
                    } else {
                        (c.run.saturating_add(c.wait) as f64 / el as f64).min(1.0)
                    }
                })
                .collect();
            // Water-filling: share capacity by weight, cap at demand, redistribute the rest.
            let mut open: Vec<usize> = (0..members.len()).collect();
            let mut capacity = cpus;
            let mut alloc = vec![0.0f64; members.len()];
            while !open.is_empty() && capacity > 1e-12 {
                let wsum: f64 = open
                    .iter()
                    .map(|&k| self.tasks[members[k]].weight.max(1) as f64)
                    .sum();
                let mut capped = Vec::new();
                for &k in &open {
                    let fair = capacity * self.tasks[members[k]].weight.max(1) as f64 / wsum;
                    if fair >= demand[k] {
                        capped.push(k);
                    }
                }
                if capped.is_empty() {
                    for &k in &open {
                        alloc[k] = capacity * self.tasks[members[k]].weight.max(1) as f64 / wsum;
                    }
                    break;
                }
                for &k in &capped {
                    alloc[k] = demand[k];
                    capacity -= demand[k];
                }
                open.retain(|k| !capped.contains(k));
            }
            for (k, &m) in members.iter().enumerate() {
                out[m] = alloc[k];
            }
        }
        roots.clear();
        out
    }
}

/// Jain's fairness index: (Σx)² / (n·Σx²); 1 when all equal, 1/n when one takes everything.
pub fn jain(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    if xs.is_empty() || sq <= 0.0 {
        1.0
    } else {
        (sum * sum) / (n * sq)
    }
}

/// The kernel's `sched_prio_to_weight` table (nice -20..=19), textbook scale (nice 0 = 1024).
pub const NICE_TO_WEIGHT: [u32; 40] = [
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916, 9548, 7620, 6100, 4904,
    3906, 3121, 2501, 1991, 1586, 1277, 1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87,
    70, 56, 45, 36, 29, 23, 18, 15,
];

/// Scheduler weight of a nice value (clamped to -20..=19).
pub fn nice_to_weight(nice: i32) -> u32 {
    NICE_TO_WEIGHT[(nice.clamp(-20, 19) + 20) as usize]
}
