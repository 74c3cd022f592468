//! What a wakeup costs before the woken vCPU runs, measured from a recording, so the engine
//! can charge it (its dispatch delay) instead of running a woken thread the instant its
//! policy gives it a pCPU.
//!
//! A host does not switch to a woken thread at the wakeup's timestamp: the waker sets
//! `need_resched`, sends an IPI when the target is another pCPU, an idle target leaves its
//! idle state (HLT under PVM or an emulator, a C-state on metal) and only then switches.
//! Without that cost a sleepy vCPU's run-queue wait comes out as 0 in every replay.
//!
//! Read from the recording's [`Demand`]: its fold, on the model's own transitions, applies
//! the one wakeup rule (`model::demand`'s `wakeup.rs`: a thread going from sleeping to waiting
//! was woken, its next running state is its switch-in, a sleep or its end cancels it) and
//! sorts each wakeup by how it got its pCPU:
//! - **preempt**: at that instant the tracked thread holding the pCPU was switched out still
//!   runnable (a wakeup preemption, or a tick's);
//! - **idle**: the pCPU's holder before the switch-in was the idle task;
//! - anything else (the holder slept, or was an untracked task) waited for the holder and is
//!   not a dispatch cost: the policy models that wait itself.
//!
//! The engine charges a simulated wakeup that finds its pCPU idle the idle kind's delays, and
//! one that preempts the preempt kind's: each such wakeup one recorded delay of its kind,
//! taken in a fixed order that visits their quantiles evenly ([`DispatchSpread`]), so the
//! replay's wake-to-run spread is the recording's and its median is the kind's median (the
//! figure `simulate` prints). One figure for all would cut the spread off: on the 6.12 lab
//! recordings the interactive vCPUs' waits are half such dispatches (36-44 us p25-p75 when
//! they preempt a vCPU, 5% past 100 us) and half a burst of the other (~0.6 ms), and their
//! p50 falls at the top of the short half (104-204 us), which one figure (36-74 us) never
//! reaches. A recording that rarely shows an idle pCPU (an overcommitted one: the kernel
//! records only switches of tracked threads, so idle is seen only when a vCPU's pCPU goes
//! idle) charges idle wakeups the preempt delays too, and says so. A `--param` that names
//! another figure charges that figure at every wakeup of its kind.

use model::demand::{Demand, Wakeups};
use serde::Serialize;

use crate::PolicyKind;

/// Fewest idle wakeups whose median is charged; below it the preempt median stands in.
pub const MIN_IDLE_WAKEUPS: usize = 20;

/// The delays the engine charges between a wakeup and the switch it causes, ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchDelay {
    /// A wakeup that finds its pCPU idle.
    pub idle_ns: u64,
    /// A wakeup that preempts the running thread.
    pub preempt_ns: u64,
}

/// The recorded delays charged one by one (ascending; empty: the [`DispatchDelay`] figure
/// is charged at every wakeup of that kind).
#[derive(Clone, Copy, Debug, Default)]
pub struct DispatchSpread<'a> {
    pub idle: &'a [u64],
    pub preempt: &'a [u64],
}

impl DispatchSpread<'_> {
    /// The delay of the `k`-th charged wakeup of a kind (`preempts`), `figure` where that
    /// kind has no recorded delays: the one at quantile frac(k / golden ratio), a sequence
    /// that spreads any run of consecutive wakeups evenly over the recorded quantiles
    /// (so a few hundred replayed wakeups already have the recorded p50 and tails) and is
    /// the same in every run.
    pub fn nth(&self, preempts: bool, k: u64, figure: u64) -> u64 {
        let ns = if preempts { self.preempt } else { self.idle };
        if ns.is_empty() {
            return figure;
        }
        // 2^64 / golden ratio: k times it, modulo 2^64, is frac(k / phi) in 64-bit fixed point.
        const INV_PHI: u64 = 0x9E37_79B9_7F4A_7C15;
        let q = k.wrapping_mul(INV_PHI);
        ns[((u128::from(q) * ns.len() as u128) >> 64) as usize]
    }
}

/// The recording's wake-to-run latencies by how the woken thread got its pCPU, as its
/// demand holds them: those onto an idle pCPU and those that preempted are charged, those
/// that waited for the holder are not.
#[derive(Clone, Copy, Debug)]
pub struct WakeCost<'a> {
    wakeups: &'a Wakeups,
}

/// The figures of a [`WakeCost`] and what was charged, for `simulate --json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WakeCostSummary {
    pub idle_wakeups: u64,
    pub idle_p50_us: f64,
    pub preempt_wakeups: u64,
    pub preempt_p50_us: f64,
    pub waited_wakeups: u64,
    /// Charged at each simulated wakeup onto an idle pCPU.
    pub charged_idle_us: f64,
    /// Charged at each simulated wakeup that preempts.
    pub charged_preempt_us: f64,
}

impl<'a> WakeCost<'a> {
    /// The wakeups `demand`'s fold sorted.
    pub fn of(demand: &'a Demand) -> Self {
        WakeCost {
            wakeups: &demand.wakeups,
        }
    }

    /// The delays to charge (see the module's note). No wakeups of either kind: nothing.
    pub fn dispatch_delay(&self) -> DispatchDelay {
        let w = self.wakeups;
        let preempt_ns = median(&w.preempted);
        DispatchDelay {
            idle_ns: if w.idle.len() >= MIN_IDLE_WAKEUPS {
                median(&w.idle)
            } else {
                preempt_ns
            },
            preempt_ns,
        }
    }

    /// The recorded delays behind `charged`: each kind's, where `charged`'s figure is their
    /// median (the recording's own, as [`WakeCost::dispatch_delay`] gives it), else none
    /// (a `--param`'s figure is charged as it is).
    pub fn spread(&self, charged: DispatchDelay) -> DispatchSpread<'a> {
        let w = self.wakeups;
        let idle: &'a [u64] = if w.idle.len() >= MIN_IDLE_WAKEUPS {
            &w.idle
        } else {
            &w.preempted
        };
        let own = |ns: &'a [u64], figure: u64| -> &'a [u64] {
            if !ns.is_empty() && median(ns) == figure {
                ns
            } else {
                &[]
            }
        };
        DispatchSpread {
            idle: own(idle, charged.idle_ns),
            preempt: own(&w.preempted, charged.preempt_ns),
        }
    }

    pub fn summary(&self, charged: DispatchDelay) -> WakeCostSummary {
        let w = self.wakeups;
        WakeCostSummary {
            idle_wakeups: w.idle.len() as u64,
            idle_p50_us: round_us(median(&w.idle)),
            preempt_wakeups: w.preempted.len() as u64,
            preempt_p50_us: round_us(median(&w.preempted)),
            waited_wakeups: w.waited.len() as u64,
            charged_idle_us: round_us(charged.idle_ns),
            charged_preempt_us: round_us(charged.preempt_ns),
        }
    }
}

/// What `simulate` says of the dispatch delay: how much each policy is charged and from
/// which recorded wakeups (`--param dispatch_idle=`/`dispatch_preempt=` override it).
pub fn dispatch_note(cost: &WakeCost, charged: &[(PolicyKind, DispatchDelay)]) -> String {
    let w = cost.wakeups;
    // A median of no wakeups is no figure: say there were none rather than "0 us over 0".
    let p50_over = |ns: &[u64], none: &str, some: &str| {
        if ns.is_empty() {
            none.to_string()
        } else {
            format!("{} us over {} {some}", round_us(median(ns)), ns.len())
        }
    };
    let mut s = format!(
        "dispatch delay charged at each simulated wakeup that gets a pCPU at once (recorded \
         wake-to-run p50: {}, {}",
        p50_over(
            &w.idle,
            "no wakeups onto an idle pCPU",
            "wakeups onto an idle pCPU"
        ),
        p50_over(&w.preempted, "none that preempted", "that preempted"),
    );
    if w.idle.len() < MIN_IDLE_WAKEUPS {
        s.push_str(&format!(
            "; fewer than {MIN_IDLE_WAKEUPS} idle ones: the preempt figure stands for them"
        ));
    }
    s.push(')');
    let mut groups: Vec<(DispatchDelay, Vec<&str>)> = Vec::new();
    for &(kind, d) in charged {
        match groups.iter_mut().find(|g| g.0 == d) {
            Some(g) => g.1.push(kind.name()),
            None => groups.push((d, vec![kind.name()])),
        }
    }
    let mut any_spread = false;
    for (d, kinds) in &groups {
        let who = if groups.len() == 1 {
            String::new()
        } else {
            format!("{}: ", kinds.join(", "))
        };
        let spread = cost.spread(*d);
        any_spread |= !spread.idle.is_empty() || !spread.preempt.is_empty();
        let as_recorded = |ns: &[u64]| if ns.is_empty() { "" } else { " (p50)" };
        s.push_str(&format!(
            ": {who}{} us onto an idle pCPU{}, {} us when it preempts{}",
            round_us(d.idle_ns),
            as_recorded(spread.idle),
            round_us(d.preempt_ns),
            as_recorded(spread.preempt)
        ));
    }
    if any_spread {
        s.push_str("; a p50 is of the recorded delays, charged one a wakeup with their spread");
    }
    s
}

/// The median of ascending `v` (the lower middle value); 0 when empty.
fn median(v: &[u64]) -> u64 {
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

/// ns as µs to one decimal: stable text and JSON.
fn round_us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1_000;

    #[test]
    fn the_recorded_delays_are_charged_with_their_spread_and_a_param_as_it_is() {
        let preempted: Vec<u64> = (1..=100).map(|i| i * US).collect();
        let d = demand(vec![], preempted, vec![]);
        let cost = WakeCost::of(&d);
        let charged = cost.dispatch_delay();
        assert_eq!(charged.preempt_ns, 50 * US);
        let spread = cost.spread(charged);
        // Too few idle wakeups: the preempt delays stand for them, as their median does.
        assert_eq!(spread.idle.len(), 100);
        let mut got: Vec<u64> = (0..400).map(|k| spread.nth(true, k, 0)).collect();
        got.sort_unstable();
        // Every recorded quantile visited evenly: each delay 3 to 5 times in 400.
        let mut counts = std::collections::BTreeMap::new();
        for g in &got {
            *counts.entry(*g).or_insert(0u32) += 1;
        }
        assert_eq!(counts.len(), 100, "{counts:?}");
        assert!(counts.values().all(|&c| (3..=5).contains(&c)), "{counts:?}");
        // Their median is the recorded one, give or take one recorded step.
        assert!(got[199].abs_diff(50 * US) <= US, "{}", got[199]);
        // The same sequence in every run.
        assert_eq!(spread.nth(true, 7, 0), spread.nth(true, 7, 0));
        // Another figure (a `--param`) is charged as it is.
        let fixed = DispatchDelay {
            idle_ns: 50 * US,
            preempt_ns: 30 * US,
        };
        let spread = cost.spread(fixed);
        assert!(spread.preempt.is_empty());
        assert_eq!(spread.nth(true, 3, fixed.preempt_ns), 30 * US);
        assert_eq!(spread.idle.len(), 100);
        // No recorded wakeups: the figure.
        let none = Demand::default();
        let spread = WakeCost::of(&none).spread(fixed);
        assert_eq!(spread.nth(false, 5, fixed.idle_ns), 50 * US);
    }

    /// A demand whose fold placed these wakeups (the placing is `model::demand`'s, tested
    /// there).
    fn demand(idle: Vec<u64>, preempted: Vec<u64>, waited: Vec<u64>) -> Demand {
        Demand {
            wakeups: Wakeups {
                preempted,
                idle,
                waited,
            },
            ..Demand::default()
        }
    }

    #[test]
    fn too_few_idle_wakeups_are_charged_the_preempt_median() {
        let d = demand(vec![30 * US, 50 * US], vec![20 * US], vec![2_000 * US]);
        let cost = WakeCost::of(&d);
        let charged = cost.dispatch_delay();
        assert_eq!(charged.preempt_ns, 20 * US);
        assert_eq!(charged.idle_ns, 20 * US);
        let summary = cost.summary(charged);
        assert_eq!(
            (
                summary.idle_wakeups,
                summary.preempt_wakeups,
                summary.waited_wakeups
            ),
            (2, 1, 1)
        );
        assert_eq!(summary.idle_p50_us, 30.0);
        let note = dispatch_note(
            &cost,
            &[(PolicyKind::Cfs, charged), (PolicyKind::Eevdf, charged)],
        );
        assert!(
            note.contains("20 us onto an idle pCPU (p50), 20 us when it preempts (p50)"),
            "{note}"
        );
        assert!(note.contains("fewer than 20 idle ones"), "{note}");
        assert!(
            note.contains("30 us over 2 wakeups onto an idle pCPU, 20 us over 1 that preempted"),
            "{note}"
        );
    }

    #[test]
    fn no_wakeups_of_a_kind_is_said_as_none() {
        let d = demand(vec![], vec![7 * US], vec![]);
        let cost = WakeCost::of(&d);
        let note = dispatch_note(&cost, &[(PolicyKind::Cfs, cost.dispatch_delay())]);
        assert!(
            note.contains("no wakeups onto an idle pCPU, 7 us over 1 that preempted"),
            "{note}"
        );
        assert!(!note.contains("over 0"), "{note}");
    }

    #[test]
    fn enough_idle_wakeups_charge_their_own_median() {
        let d = demand(
            (1..=MIN_IDLE_WAKEUPS as u64).map(|i| i * US).collect(),
            vec![7 * US],
            vec![],
        );
        let charged = WakeCost::of(&d).dispatch_delay();
        assert_eq!(charged.idle_ns, 10 * US);
        assert_eq!(charged.preempt_ns, 7 * US);
        assert_eq!(
            WakeCost::of(&Demand::default()).dispatch_delay(),
            DispatchDelay::default()
        );
    }
}
