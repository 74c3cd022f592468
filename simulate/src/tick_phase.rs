//! Sleeps that ended on a tick: on a host whose timers fire only on the tick (no
//! high-resolution timers, as the kernel lab's emulated kernels), a sleeper is woken by its
//! pCPU's tick, whatever the length it asked for. Replayed as recorded (open loop), such a
//! sleep would end at whatever phase its burst happened to end in the replay, so two
//! sleepers that woke together on one tick (and one waited for the other's burst) drift
//! apart. This module finds each pCPU's tick phase in the recording, tells which recorded
//! wakeups came on it, and ends those sleeps on the tick of the pCPU the replayed thread
//! slept on.
//!
//! - **Phase**: each pCPU's wakeups (the recorded wakeup's time, modulo the recording
//!   host's tick) are binned in [`BINS`] bins; its phase is the first bin with wakeups of
//!   the densest [`WINDOW_BINS`]-bin window (a sixteenth of a tick: 250 us at HZ=250). A
//!   pCPU with fewer than [`MIN_WAKEUPS`] wakeups has none.
//! - **Tick-driven wakeup**: one within that window after its pCPU's phase; its offset in
//!   the window (the tick handler's latency, and the order of two sleepers woken on one
//!   tick) is kept in the replay.
//! - **Tick-driven recording**: at least [`TICK_DRIVEN_SHARE`] of its wakeups are, and more
//!   of them than of its sleeps last their thread's most common length (within one bin: a
//!   timer that fires when asked wakes its sleeper after the length it asked for, give or
//!   take its wakeup latency). The lab's emulated kernels: 70-94% on the tick and 20-26% of
//!   one length (6.12), 59-83% and 10-37% (6.1, whose pCPUs also wake at a second phase);
//!   this host (6.18, high-resolution timers): 32-44% on a "tick" (the demo's sleepers have
//!   a period of their own) and 98-99% of one length. Only a tick-driven recording ends its
//!   sleeps on the tick by default (`--param sleep_on_tick` overrides it).
//! - **Replayed end**: the recorded sleep's timer expired within the tick before its
//!   wakeup, so the sleep asked for at least `recorded length - offset - tick`; the replay
//!   ends it on the first tick of the pCPU it slept on (plus its offset) after that much
//!   sleep. Replayed where it was recorded, that is the recorded wakeup itself. Other
//!   sleeps last as recorded.

use std::cmp::Reverse;

use model::demand::{Burst, Demand, Woke};

/// Bins of a tick in which wakeups are counted.
pub const BINS: u64 = 64;
/// Bins of the window after a tick in which a wakeup counts as the tick's.
pub const WINDOW_BINS: u64 = 4;
/// Fewest wakeups on a pCPU for its phase to be read.
pub const MIN_WAKEUPS: usize = 20;
/// Share of a recording's wakeups on their pCPU's tick from which sleeps end on the tick
/// by default, in percent: four times what chance puts in a window of a sixteenth of a
/// tick.
pub const TICK_DRIVEN_SHARE: u64 = 25;

/// Each pCPU's tick phase in a recording, and how many of its wakeups came on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TickPhases {
    tick_ns: u64,
    /// The recording's clock at the demand's start (phases are of that clock).
    base: u64,
    /// By pCPU: the start of its tick window, ns modulo the tick.
    phase: Vec<Option<u64>>,
    /// Recorded wakeups, those within the window after their pCPU's phase, and the sleeps
    /// that lasted their thread's most common length.
    wakeups: u64,
    on_tick: u64,
    one_length: u64,
    /// Background stand-ins' sleeps end on the tick too ([`TickPhases::stand_in_sleep_end`];
    /// on where sleeps end on the tick, `--param stand_in_on_tick=false` turns it off).
    pub stand_ins_on_tick: bool,
}

impl TickPhases {
    /// Reads the phases of `demand`'s wakeups against a tick of `tick_ns`.
    pub fn of(demand: &Demand, tick_ns: u64) -> TickPhases {
        let tick_ns = tick_ns.max(BINS);
        let base = demand.start;
        let woke = || {
            demand
                .tracked()
                .flat_map(|t| t.bursts.iter().filter_map(|b| b.woke))
        };
        let mut bins: Vec<Vec<usize>> = Vec::new();
        for w in woke() {
            let cpu = w.cpu as usize;
            if bins.len() <= cpu {
                bins.resize_with(cpu + 1, || vec![0; BINS as usize]);
            }
            let at = (base + w.at_ns) % tick_ns;
            bins[cpu][(at * BINS / tick_ns) as usize] += 1;
        }
        let phase = bins
            .iter()
            .map(|b| {
                if b.iter().sum::<usize>() < MIN_WAKEUPS {
                    return None;
                }
                let in_window = |start: usize| -> usize {
                    (0..WINDOW_BINS as usize)
                        .map(|k| b[(start + k) % b.len()])
                        .sum()
                };
                let densest = (0..b.len()).max_by_key(|&s| (in_window(s), Reverse(s)))?;
                // The window starts at its first bin that has wakeups: the tick comes just
                // before its earliest wakeups, not up to a window before them.
                let first = (0..b.len())
                    .map(|k| (densest + k) % b.len())
                    .find(|&i| b[i] > 0)?;
                Some(first as u64 * tick_ns / BINS)
            })
            .collect();
        let mut phases = TickPhases {
            tick_ns,
            base,
            phase,
            wakeups: 0,
            on_tick: 0,
            stand_ins_on_tick: false,
            one_length: demand
                .tracked()
                .map(|t| most_common_length(&t.bursts, tick_ns / BINS))
                .sum(),
        };
        for w in woke() {
            phases.wakeups += 1;
            phases.on_tick += u64::from(phases.offset(w).is_some());
        }
        phases
    }

    /// Whether the recording's sleepers were woken by the tick (see the module's note).
    pub fn tick_driven(&self) -> bool {
        self.wakeups > 0
            && self.on_tick * 100 >= self.wakeups * TICK_DRIVEN_SHARE
            && self.on_tick > self.one_length
    }

    fn window_ns(&self) -> u64 {
        self.tick_ns * WINDOW_BINS / BINS
    }

    /// `w`'s offset after its pCPU's tick, when it came within the window after it.
    fn offset(&self, w: Woke) -> Option<u64> {
        let phase = (*self.phase.get(w.cpu as usize)?)?;
        let off = (self.base + w.at_ns + self.tick_ns - phase) % self.tick_ns;
        (off < self.window_ns()).then_some(off)
    }

    /// When a sleep of `sleep_ns` recorded as ending at `woke`, begun at `now` (ns since the
    /// demand's start) on `cpu`, ends in the replay: on `cpu`'s tick when the recorded one
    /// ended on its pCPU's tick (`None`: it did not; it lasts as recorded).
    pub fn sleep_end(&self, now: u64, sleep_ns: u64, woke: Woke, cpu: u32) -> Option<u64> {
        let off = self.offset(woke)?;
        let tick = self.tick_ns;
        let phase = self
            .phase
            .get(cpu as usize)
            .copied()
            .flatten()
            .or(self.phase[woke.cpu as usize])?;
        // The timer expired after this much sleep at the earliest (see the module's note);
        // the replay's wakeup is the first tick (plus the offset) after it.
        let asked = now + sleep_ns.saturating_sub(off + tick);
        Some(self.first_after(asked, phase + off).max(now + 1))
    }

    /// The first time after `asked` (ns since the demand's start) that falls `grid` ns after
    /// a multiple of the tick on the recording's clock.
    fn first_after(&self, asked: u64, grid: u64) -> u64 {
        let tick = self.tick_ns;
        let at = self.base + asked;
        let after = (grid % tick + tick - at % tick) % tick;
        at + if after == 0 { tick } else { after } - self.base
    }

    /// When a background stand-in's sleep of `sleep_ns`, recorded as ending where its next
    /// stretch began (`woke`), begun at `now` on its pCPU, ends in the replay: on that pCPU's
    /// tick. The untracked tasks' wakeups are not recorded; on a tick-driven host their
    /// timers fire on the tick too, and in the 6.1 lab recordings 38-44% of the stand-ins'
    /// stretches began within the window after their pCPU's tick and 50-54% right after a
    /// tracked thread woken on that tick ran (queued behind it), 8% elsewhere. So the replay
    /// wakes the stand-in on the last tick at or before the recorded start (sleeping at least
    /// as long as it did up to that tick), and its run-queue place comes from the policy
    /// (`place_entity`), as the woken task's did, not at whatever time its previous stretch
    /// happened to end in the replay. `None`: its pCPU has no phase, or the rule is off.
    ///
    /// On by default where sleeps end on the tick (`--param stand_in_on_tick=false` turns it
    /// off). A stand-in woken mid-tick preempts whatever runs, as any woken task preempts a
    /// light current (`check_preempt_wakeup`: the low-weight current's vruntime has run far
    /// ahead); the kernel's untracked tasks were woken on the tick and rarely cut the nice-10
    /// lowprio vCPU's runs (its runs in the 6.1 and 6.12 lab recordings end on a tick), where
    /// stand-ins woken at whatever time their gap ended in the replay did (a fifth of its
    /// runs under 1 ms). With the slice checks after the tick's wakeups
    /// ([`TickPhases::tick_offsets`]) it takes lowprio's wait p50 from x1.12-x1.91 short of
    /// the kernel's to x0.99-x1.75 (`cfs`, 13 recordings of 6.1) and x0.99-x2.29 to
    /// x0.91-x1.65 (`eevdf`, 13 of 6.12).
    pub fn stand_in_sleep_end(&self, now: u64, sleep_ns: u64, woke: Woke) -> Option<u64> {
        if !self.stand_ins_on_tick {
            return None;
        }
        let phase = (*self.phase.get(woke.cpu as usize)?)?;
        let tick = self.tick_ns;
        let off = (self.base + woke.at_ns + tick - phase) % tick;
        // The last tick at or before the recorded start came `off` before it: the replay's
        // wakeup is the first tick of the pCPU after `sleep_ns - off - tick` of sleep.
        let asked = now + sleep_ns.saturating_sub(off + tick);
        Some(self.first_after(asked, phase).max(now + 1))
    }

    /// By pCPU, where its slice checks fall in demand time (ns after each multiple of
    /// `tick_ns`): the end of the window after its recorded phase in which the replay wakes
    /// that tick's sleepers, 0 where it has no phase. The kernel sets `need_resched` in the
    /// tick (`scheduler_tick` -> `task_tick_fair`) and wakes the tick's sleepers in the same
    /// interrupt (`run_local_timers`, the timer softirq at `irq_exit`), but switches only on
    /// the way out of it, so the task the tick's slice check makes way for is picked with
    /// every sleeper of that tick queued. The replay wakes those sleepers at their recorded
    /// offsets after the tick (the handler's latency, up to the window); a slice check on
    /// the tick itself would pick before them, and the first of them would preempt the
    /// entity just picked: on 6.12's recordings `eevdf` picked the lowprio vCPU on the tick
    /// and an interactive vCPU woken 0.1 ms later took the pCPU from it (a fifth of its runs
    /// under 0.2 ms, the kernel's none). Empty when `tick_ns` is not the recording's tick
    /// (`--param hz=` set another).
    pub fn tick_offsets(&self, ncpus: u32, tick_ns: u64) -> Vec<u64> {
        if tick_ns != self.tick_ns {
            return Vec::new();
        }
        let tick = self.tick_ns;
        (0..ncpus as usize)
            .map(|cpu| {
                self.phase.get(cpu).copied().flatten().map_or(0, |p| {
                    (p + self.window_ns() + tick - self.base % tick) % tick
                })
            })
            .collect()
    }

    /// What the replay does with sleeps, for the `note: tick:` line: how many recorded
    /// wakeups came on their pCPU's tick, at which phases, and whether sleeps end on it.
    pub fn describe(&self, on: bool) -> String {
        let window_us = self.window_ns() / 1_000;
        let share = percent(self.on_tick, self.wakeups);
        let phases: Vec<String> = self
            .phase
            .iter()
            .enumerate()
            .filter_map(|(cpu, p)| p.map(|p| format!("cpu{cpu} +{:.2} ms", p as f64 / 1e6)))
            .collect();
        let seen = format!(
            "{share}% of the recorded wakeups came within {window_us} us after their pCPU's tick ({}), {}% of its sleeps lasted their thread's most common length",
            if phases.is_empty() {
                "no pCPU woke enough threads to read its phase".to_string()
            } else {
                phases.join(", ")
            },
            percent(self.one_length, self.wakeups)
        );
        match (on, self.tick_driven()) {
            (true, true) => format!(
                "{seen}: those sleeps end on the tick of the pCPU they slept on, as on a host \
                 without high-resolution timers (`--param sleep_on_tick=false`: as recorded)"
            ),
            (true, false) => format!("{seen}: those sleeps end on the tick (--param sleep_on_tick=true)"),
            (false, true) => format!("{seen}: sleeps last as recorded (--param sleep_on_tick=false)"),
            (false, false) => format!(
                "{seen}: sleeps last as recorded (`--param sleep_on_tick=true` ends those on the tick)"
            ),
        }
    }
}

/// `part` of `whole` in whole percent (0 of nothing).
fn percent(part: u64, whole: u64) -> u64 {
    (part * 100).checked_div(whole).unwrap_or(0)
}

/// How many of the recorded sleeps in `bursts` (those with a wakeup) lasted within `width`
/// of each other at the densest: the sleeps of the thread's most common length.
fn most_common_length(bursts: &[Burst], width: u64) -> u64 {
    let mut lengths: Vec<u64> = bursts
        .iter()
        .filter(|b| b.woke.is_some())
        .filter_map(|b| b.sleep_ns)
        .collect();
    lengths.sort_unstable();
    let mut best = 0;
    let mut from = 0;
    for (to, &len) in lengths.iter().enumerate() {
        while len - lengths[from] >= width {
            from += 1;
        }
        best = best.max(to + 1 - from);
    }
    best as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{demand, Spec};

    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;
    const TICK: u64 = 4 * MS;

    /// A thread woken by pCPU 0's tick 50 us after it, one by pCPU 1's 2.8 ms after the
    /// demand's tick (in 6.1's lab recordings the two pCPUs' ticks are that far apart).
    fn two_phases() -> Demand {
        let span = 400 * MS;
        demand(
            &[
                Spec::on_tick(0, &[400 * US, 900 * US], TICK, 50 * US, 0, span),
                Spec::on_tick(1, &[300 * US, 700 * US], TICK, 2_800 * US, 1, span),
            ],
            2,
            span,
        )
    }

    #[test]
    fn each_pcpu_has_its_own_phase_and_its_wakeups_come_on_it() {
        let ticks = TickPhases::of(&two_phases(), TICK);
        assert_eq!(ticks.phase, vec![Some(0), Some(2_750 * US)]);
        assert_eq!((ticks.on_tick, ticks.wakeups), (200, 200));
        assert!(ticks.tick_driven());
        let note = ticks.describe(true);
        assert!(
            note.starts_with("100% of the recorded wakeups came within 250 us after their pCPU's tick (cpu0 +0.00 ms, cpu1 +2.75 ms), 50% of its sleeps lasted"),
            "{note}"
        );
    }

    #[test]
    fn a_tick_driven_sleep_ends_on_the_tick_of_the_pcpu_it_slept_on() {
        let d = two_phases();
        let ticks = TickPhases::of(&d, TICK);
        let t = &d.threads[0];
        // Its second sleep: recorded from 4.45 ms (the tick's 50 us, then 400 us of run)
        // to 8.05 ms.
        let (b, began) = (t.bursts[1], 4 * MS + 50 * US + 400 * US);
        let (sleep, woke) = (b.sleep_ns.unwrap(), b.woke.unwrap());
        assert_eq!(woke.at_ns, 8 * MS + 50 * US);
        // Replayed where and when it was recorded: the recorded wakeup.
        assert_eq!(ticks.sleep_end(began, sleep, woke, 0), Some(woke.at_ns));
        // Begun 1 ms later (its burst waited): the same tick still, not 1 ms later.
        assert_eq!(
            ticks.sleep_end(began + MS, sleep, woke, 0),
            Some(woke.at_ns)
        );
        // Begun after that tick's window of a chance: the next tick's offset.
        assert_eq!(
            ticks.sleep_end(began + 4 * MS, sleep, woke, 0),
            Some(woke.at_ns + TICK)
        );
        // Slept on pCPU 1: on its tick (2.75 ms after pCPU 0's), with the same offset.
        assert_eq!(
            ticks.sleep_end(began, sleep, woke, 1),
            Some(4 * MS + 2_750 * US + 50 * US)
        );
    }

    /// A stand-in's stretch recorded 1.2 ms after pCPU 1's tick (queued behind a thread
    /// woken on it): with the rule on, its replayed sleep ends on that tick (also when its
    /// previous stretch ended 2 ms later in the replay), or on the next one when it ended a
    /// tick later; off, as recorded.
    #[test]
    fn a_stand_ins_sleep_ends_on_the_last_tick_before_its_recorded_stretch() {
        let mut ticks = TickPhases::of(&two_phases(), TICK);
        let tick1 = 8 * MS + 2_750 * US;
        let woke = Woke {
            at_ns: tick1 + 1_200 * US,
            cpu: 1,
        };
        let (began, sleep) = (5 * MS, woke.at_ns - 5 * MS);
        assert_eq!(ticks.stand_in_sleep_end(began, sleep, woke), None);
        ticks.stand_ins_on_tick = true;
        assert_eq!(ticks.stand_in_sleep_end(began, sleep, woke), Some(tick1));
        assert_eq!(
            ticks.stand_in_sleep_end(began + 2 * MS, sleep, woke),
            Some(tick1)
        );
        assert_eq!(
            ticks.stand_in_sleep_end(began + TICK, sleep, woke),
            Some(tick1 + TICK)
        );
        // A pCPU with no phase: as recorded.
        let woke = Woke { cpu: 7, ..woke };
        assert_eq!(ticks.stand_in_sleep_end(began, sleep, woke), None);
    }

    #[test]
    fn each_pcpus_ticks_fall_on_its_phase_in_demand_time() {
        let ticks = TickPhases::of(&two_phases(), TICK);
        // The end of each phase's wakeup window; a pCPU without a phase ticks on 0.
        let window = TICK * WINDOW_BINS / BINS;
        assert_eq!(
            ticks.tick_offsets(3, TICK),
            vec![window, 2_750 * US + window, 0]
        );
        // Another tick than the recording's: no phases to keep.
        assert!(ticks.tick_offsets(3, TICK / 4).is_empty());
    }

    #[test]
    fn a_wakeup_off_its_pcpus_tick_lasts_as_recorded() {
        let d = two_phases();
        let ticks = TickPhases::of(&d, TICK);
        let woke = Woke {
            at_ns: 8 * MS + MS,
            cpu: 0,
        };
        assert_eq!(ticks.sleep_end(5 * MS, 4 * MS, woke, 0), None);
        // A pCPU with too few wakeups has no phase: nothing of it is on a tick.
        let woke = Woke {
            at_ns: 8 * MS,
            cpu: 7,
        };
        assert_eq!(ticks.sleep_end(5 * MS, 3 * MS, woke, 0), None);
    }

    /// A sleeper whose every sleep lasts the length it asked for (a host with
    /// high-resolution timers), woken at one phase because its cycle is exactly a tick
    /// long: its wakeups are as much of one length as of one phase, so the recording is
    /// not taken as tick-driven.
    #[test]
    fn sleeps_of_one_length_are_not_tick_driven_whatever_their_phase() {
        let (run, sleep) = (1_940 * US, 2_060 * US);
        let bursts = (1..100u64)
            .map(|k| Burst {
                run_ns: run,
                sleep_ns: Some(sleep),
                woke: Some(Woke {
                    at_ns: k * TICK,
                    cpu: 0,
                }),
                open: None,
            })
            .collect();
        let spec = Spec {
            vm: 0,
            nice: 0,
            allowed: Vec::new(),
            affinity: Vec::new(),
            bursts,
        };
        let ticks = TickPhases::of(&demand(&[spec], 1, 400 * MS), TICK);
        assert_eq!((ticks.on_tick, ticks.one_length), (99, 99));
        assert!(!ticks.tick_driven());
        assert!(
            ticks.describe(false).ends_with(
                "sleeps last as recorded (`--param sleep_on_tick=true` ends those on the tick)"
            ),
            "{}",
            ticks.describe(false)
        );
    }
}
