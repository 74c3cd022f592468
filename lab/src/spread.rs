//! The kernel against itself (issue #16): one scenario recorded round after round on one
//! kernel, each round replayed by `kvmscope simulate`. How far apart the kernel's own rounds
//! put each vCPU's run-queue wait p50, and where the replays fall against that: the yardstick
//! for "as close as the open-loop replay allows" (`simulate/VALIDATION.md`).

use crate::{LabError, Result};

/// The goal: a replayed wait p50 within this factor of the recorded one.
pub const GOAL_FACTOR: f64 = 2.0;

/// How many times the larger of two waits is the smaller: 1 when equal, infinite when only
/// one is zero. The one measure of how far two wait figures are apart, in the kernel
/// matrix, `tests/priv_simulate.rs` and here.
pub fn wait_factor(a: f64, b: f64) -> f64 {
    let (lo, hi) = (a.min(b), a.max(b));
    if hi == lo {
        1.0
    } else if lo <= 0.0 {
        f64::INFINITY
    } else {
        hi / lo
    }
}

/// How far `x` lies outside `[lo, hi]`, as a [`wait_factor`] to the nearer end; 1 inside.
pub fn outside(x: f64, (lo, hi): (f64, f64)) -> f64 {
    if x < lo {
        wait_factor(x, lo)
    } else if x > hi {
        wait_factor(x, hi)
    } else {
        1.0
    }
}

/// One round: per vCPU, in [`Spread::labels`]' order, the wait p50 the kernel recorded and
/// the one its replay gave.
#[derive(Clone, Debug, PartialEq)]
pub struct Round {
    pub recorded: Vec<f64>,
    pub replayed: Vec<f64>,
}

/// The rounds of one scenario on one kernel.
#[derive(Clone, Debug)]
pub struct Spread {
    pub labels: Vec<String>,
    pub rounds: Vec<Round>,
}

impl Spread {
    /// Refuses no rounds, and a round without one recorded and one replayed wait per label.
    pub fn new(labels: Vec<String>, rounds: Vec<Round>) -> Result<Spread> {
        if labels.is_empty() || rounds.is_empty() {
            return Err(LabError::Results(format!(
                "{} rounds of {} vCPUs: nothing to compare",
                rounds.len(),
                labels.len()
            )));
        }
        if let Some(i) = rounds
            .iter()
            .position(|r| r.recorded.len() != labels.len() || r.replayed.len() != labels.len())
        {
            return Err(LabError::Results(format!(
                "round {}: {} recorded and {} replayed waits for {} vCPUs",
                i + 1,
                rounds[i].recorded.len(),
                rounds[i].replayed.len(),
                labels.len()
            )));
        }
        Ok(Spread { labels, rounds })
    }

    /// The lowest and highest wait p50 the kernel recorded for vCPU `v` over the rounds.
    pub fn kernel_range(&self, v: usize) -> (f64, f64) {
        range(self.rounds.iter().map(|r| r.recorded[v]))
    }

    /// The same over the replays.
    pub fn replay_range(&self, v: usize) -> (f64, f64) {
        range(self.rounds.iter().map(|r| r.replayed[v]))
    }

    /// The farthest any replay puts vCPU `v` outside the kernel's range ([`outside`]).
    pub fn replay_outside_kernel(&self, v: usize) -> f64 {
        let kernel = self.kernel_range(v);
        self.rounds
            .iter()
            .map(|r| outside(r.replayed[v], kernel))
            .fold(1.0, f64::max)
    }

    /// The worst vCPU's factor between two of the kernel's rounds.
    pub fn kernel_pair_factor(&self, a: usize, b: usize) -> f64 {
        worst(&self.rounds[a].recorded, &self.rounds[b].recorded)
    }

    /// The worst vCPU's factor between round `i`'s replay and its recording.
    pub fn replay_factor(&self, i: usize) -> f64 {
        worst(&self.rounds[i].recorded, &self.rounds[i].replayed)
    }

    /// Of every pair of the kernel's rounds, how many have every vCPU within `factor` of
    /// each other: (k, n).
    pub fn kernel_pairs_within(&self, factor: f64) -> (usize, usize) {
        let n = self.rounds.len();
        let pairs: Vec<(usize, usize)> = (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .collect();
        let k = pairs
            .iter()
            .filter(|&&(a, b)| self.kernel_pair_factor(a, b) <= factor)
            .count();
        (k, pairs.len())
    }

    /// Of the rounds, how many replays have every vCPU within `factor` of their recording:
    /// (k, n).
    pub fn replays_within(&self, factor: f64) -> (usize, usize) {
        let k = (0..self.rounds.len())
            .filter(|&i| self.replay_factor(i) <= factor)
            .count();
        (k, self.rounds.len())
    }
}

fn range(waits: impl Iterator<Item = f64>) -> (f64, f64) {
    waits.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), w| {
        (lo.min(w), hi.max(w))
    })
}

fn worst(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| wait_factor(x, y))
        .fold(1.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(recorded: [f64; 2], replayed: [f64; 2]) -> Round {
        Round {
            recorded: recorded.to_vec(),
            replayed: replayed.to_vec(),
        }
    }

    fn spread() -> Spread {
        // vCPU a: the kernel 100-300, the replays 50-250; vCPU b: the kernel 1000-1200, the
        // replays 1000-3000.
        Spread::new(
            vec!["a".into(), "b".into()],
            vec![
                round([100.0, 1000.0], [50.0, 1000.0]),
                round([300.0, 1100.0], [250.0, 1100.0]),
                round([150.0, 1200.0], [150.0, 3000.0]),
            ],
        )
        .unwrap()
    }

    #[test]
    fn factors_and_ranges() {
        assert_eq!(wait_factor(50.0, 100.0), 2.0);
        assert_eq!(wait_factor(100.0, 50.0), 2.0);
        assert_eq!(wait_factor(0.0, 0.0), 1.0);
        assert_eq!(wait_factor(0.0, 5.0), f64::INFINITY);
        assert_eq!(outside(50.0, (100.0, 300.0)), 2.0);
        assert_eq!(outside(150.0, (100.0, 300.0)), 1.0);
        assert_eq!(outside(900.0, (100.0, 300.0)), 3.0);
        let s = spread();
        assert_eq!(s.kernel_range(0), (100.0, 300.0));
        assert_eq!(s.replay_range(0), (50.0, 250.0));
        assert_eq!(s.kernel_range(1), (1000.0, 1200.0));
        assert_eq!(s.replay_outside_kernel(0), 2.0);
        assert_eq!(s.replay_outside_kernel(1), 2.5);
    }

    #[test]
    fn pairs_and_replays_within_the_goal() {
        let s = spread();
        // Rounds 1-2: a x3 apart; 1-3: x1.5 and x1.2; 2-3: x2 and x1.09 (2 counts as within).
        assert_eq!(s.kernel_pair_factor(0, 1), 3.0);
        assert_eq!(s.kernel_pairs_within(GOAL_FACTOR), (2, 3));
        // Replays: round 1 x2 (a), round 2 x1.2, round 3 x2.5 (b).
        assert_eq!(s.replay_factor(2), 2.5);
        assert_eq!(s.replays_within(GOAL_FACTOR), (2, 3));
    }

    #[test]
    fn ragged_or_empty_rounds_are_refused() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let short = Round {
            recorded: vec![1.0],
            replayed: vec![1.0, 2.0],
        };
        let e = Spread::new(labels.clone(), vec![round([1.0, 1.0], [1.0, 1.0]), short])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("round 2: 1 recorded and 2 replayed waits for 2 vCPUs"),
            "{e}"
        );
        assert!(Spread::new(labels, Vec::new()).is_err());
    }
}
