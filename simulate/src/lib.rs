//! `kvmscope simulate`: what if another scheduler had run these vCPUs? Recorded demand
//! ([`model::demand::Demand`]: bursts, sleeps, weights, pCPUs, background load) is replayed
//! through one of six policies — Linux CFS, EEVDF, O(1), the 2.4 goodness scheduler, Xen
//! credit and Xen SEDF — each a deterministic state machine with its source's defaults.
//!
//! A simulated run is a source: it yields the same `model::Event`s a live host does, so the
//! model, the report, the recorder, the dashboard and the exporters work on it unchanged.
//!
//! Architecture invariant: this crate knows no kernel, terminal or clock. Policies never see
//! the recording's schedule, only its demand.

pub mod compare;
pub mod engine;
pub mod others_load;
pub mod params;
mod pcpu_set;
pub mod policy;
pub mod sim_thread;
pub mod synthetic;
pub mod tick_phase;
pub mod wake_cost;

use model::demand::Demand;
use model::Event;

pub use engine::RunStats;
pub use params::{ParamError, Params, RecordedDefaults};
pub use tick_phase::TickPhases;
pub use wake_cost::{DispatchDelay, DispatchSpread, WakeCost};

use policy::credit::{Credit, CreditParams};
use policy::fair::{Fair, FairParams, Flavour};
use policy::goodness::{Goodness, GoodnessParams};
use policy::o1::{O1Params, O1};
use policy::sedf::{Sedf, SedfParams};

/// Where the replay's affinities come from: the recording's affinity over time where it has
/// it, else the pCPUs each vCPU was seen on (older recordings, other sources); and the
/// simulated pCPUs it keeps every vCPU off for most of the run (`--pcpus` above the
/// recording's count, with vCPUs pinned to recorded pCPUs), which then run little of them.
pub fn affinity_note(demand: &Demand, ncpus: u32) -> String {
    let vcpus = demand.tracked().count();
    let with = demand.tracked().filter(|t| !t.affinity.is_empty()).count();
    let changes: usize = demand
        .tracked()
        .map(|t| t.affinity.len().saturating_sub(1))
        .sum();
    let mut note = if with == vcpus {
        format!("affinity: as recorded over time for every vCPU ({changes} changes)")
    } else {
        format!(
            "affinity: as recorded over time for {with} of {vcpus} vCPUs ({changes} changes); \
             the pCPUs each was seen on for the rest (the recording has no affinity for them)"
        )
    };
    let off = share_closed(demand, ncpus);
    let mostly_off: Vec<u32> = (0..ncpus).filter(|&c| off[c as usize] > 0.5).collect();
    if let Some(least) = mostly_off
        .iter()
        .map(|&c| off[c as usize])
        .min_by(f64::total_cmp)
    {
        let how_long = match (least * 100.0).floor() {
            p if p >= 100.0 => "the whole run".to_string(),
            p => format!("at least {p:.0}% of the run"),
        };
        note.push_str(&format!(
            "; it keeps every vCPU off simulated pCPU{} {} for {how_long}, so those run \
             little of them",
            if mostly_off.len() == 1 { "" } else { "s" },
            cpu_ranges(&mostly_off)
        ));
    }
    note
}

/// For each simulated pCPU, the share of the demand's span in which no vCPU may use it:
/// each vCPU has the engine's first allowed set until its second recorded affinity, then
/// each recorded one until the next.
fn share_closed(demand: &Demand, ncpus: u32) -> Vec<f64> {
    let span = demand.span_ns().max(1);
    let mut open: Vec<Vec<(u64, u64)>> = vec![Vec::new(); ncpus as usize];
    for (t, sim) in demand
        .threads
        .iter()
        .zip(engine::sim_threads(demand, ncpus))
    {
        if t.background {
            continue;
        }
        let mut stretches = vec![(0, sim.allowed)];
        stretches.extend(t.affinity.iter().skip(1).map(|a| {
            (
                a.at_ns.min(span),
                engine::cpu_mask(&a.cpus, demand.pcpus, ncpus),
            )
        }));
        for (k, (from, set)) in stretches.iter().enumerate() {
            let to = stretches.get(k + 1).map_or(span, |next| next.0);
            let mut cpu = set.first();
            while let Some(c) = cpu {
                open[c as usize].push((*from, to));
                cpu = set.next_from(c + 1);
            }
        }
    }
    open.into_iter()
        .map(|mut stretches| {
            stretches.sort_unstable();
            let (mut covered, mut reach) = (0u64, 0u64);
            for (from, to) in stretches {
                let from = from.max(reach);
                if to > from {
                    covered += to - from;
                    reach = to;
                }
            }
            1.0 - covered as f64 / span as f64
        })
        .collect()
}

/// `2-3, 6` for [2, 3, 6] (ascending).
fn cpu_ranges(cpus: &[u32]) -> String {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &c in cpus {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == c => *end = c,
            _ => runs.push((c, c)),
        }
    }
    runs.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which tick the Linux policies use: a given `--param hz` (or `POLICY.hz`), else the
/// recording host's HZ where its header has it, else each policy's source default; and
/// whether the replay's sleeps end on the recording's ticks (`ticks`, see `tick_phase.rs`).
pub fn tick_note(
    recorded_hz: Option<u32>,
    params: &Params,
    ticks: &TickPhases,
) -> Result<String, ParamError> {
    let given: Vec<String> = params
        .given()
        .filter(|(k, _)| *k == "hz" || k.ends_with(".hz"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let otherwise = match recorded_hz {
        Some(hz) => format!("HZ={hz}, the recording host's"),
        None => "the recording does not say its host's HZ (made before kvmscope stored it, or \
                 neither the kernel's configuration nor /proc/timer_list was readable): each \
                 policy's default (cfs and eevdf 250, o1 1000, on 100)"
            .to_string(),
    };
    let rate = match (given.is_empty(), recorded_hz) {
        (true, Some(_)) => format!("tick: {otherwise} (`--param hz=N` overrides)"),
        (true, None) => format!("tick: {otherwise}"),
        (false, _) => format!("tick: --param {}; otherwise {otherwise}", given.join(", ")),
    };
    let on = params.bool("", "sleep_on_tick", ticks.tick_driven())?;
    let mut note = format!("{rate}; {}", ticks.describe(on));
    // `build` reads it per policy: a policy's own setting is not the note's.
    let own: Vec<String> = params
        .given()
        .filter(|(k, _)| k.ends_with(".sleep_on_tick"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !own.is_empty() {
        note.push_str(&format!(" (except --param {})", own.join(", ")));
    }
    Ok(note)
}

/// The recording's tick phases, read against its host's tick (HZ=250, the Linux policies'
/// default, when its header does not say).
pub fn tick_phases(demand: &Demand, params: &Params) -> TickPhases {
    let hz = params.recorded().hz.unwrap_or(250).max(1);
    TickPhases::of(demand, 1_000_000_000 / hz)
}

/// What open-loop replay cannot capture; every output says it.
pub const OPEN_LOOP_NOTE: &str = "open loop: each recorded sleep lasts as long as it did, \
whatever the policy did before it, so a vCPU that waits for another vCPU (IPIs, locks, \
lock-holder preemption), guest reactions to steal time, halt polling and cache or migration \
costs are not captured";

/// The six policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    Cfs,
    Eevdf,
    O1,
    On,
    Credit,
    Sedf,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 6] = [
        PolicyKind::Cfs,
        PolicyKind::Eevdf,
        PolicyKind::O1,
        PolicyKind::On,
        PolicyKind::Credit,
        PolicyKind::Sedf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Cfs => "cfs",
            PolicyKind::Eevdf => "eevdf",
            PolicyKind::O1 => "o1",
            PolicyKind::On => "on",
            PolicyKind::Credit => "credit",
            PolicyKind::Sedf => "sedf",
        }
    }

    /// What the model stands for, for headers.
    pub fn describe(self) -> &'static str {
        match self {
            PolicyKind::Cfs => "Linux CFS (2.6.23-6.5)",
            PolicyKind::Eevdf => "Linux EEVDF (6.6+)",
            PolicyKind::O1 => "Linux O(1) (2.6.12)",
            PolicyKind::On => "Linux 2.4 goodness, O(N)",
            PolicyKind::Credit => "Xen credit1",
            PolicyKind::Sedf => "Xen SEDF",
        }
    }

    pub fn parse(s: &str) -> Result<PolicyKind, SimError> {
        PolicyKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| SimError::UnknownPolicy(s.to_string()))
    }

    /// `cfs,credit` or `all`.
    pub fn parse_list(s: &str) -> Result<Vec<PolicyKind>, SimError> {
        if s.trim() == "all" {
            return Ok(PolicyKind::ALL.to_vec());
        }
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let k = PolicyKind::parse(part)
                .map_err(|_| SimError::UnknownPolicyInList(part.to_string()))?;
            if !out.contains(&k) {
                out.push(k);
            }
        }
        if out.is_empty() {
            return Err(SimError::UnknownPolicyInList(s.to_string()));
        }
        Ok(out)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// One policy (`replay --simulate`), where `all` is not one.
    #[error("unknown policy {0:?} (known: cfs, eevdf, o1, on, credit, sedf)")]
    UnknownPolicy(String),
    /// A policy in a list (`simulate --policy`), which also takes `all`.
    #[error("unknown policy {0:?} (known: cfs, eevdf, o1, on, credit, sedf, or all)")]
    UnknownPolicyInList(String),
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("--pcpus {0}: the simulation needs 1..={max} pCPUs", max = engine::MAX_PCPUS)]
    Pcpus(i64),
    #[error("the recording has no tracked threads with scheduling events: nothing to simulate (record a target with vCPU threads, e.g. `kvmscope record --demo`)")]
    NoThreads,
}

/// Whether the replay gives each open burst (one no sleep ended: a vCPU runnable to the
/// recording's end or to its exit) all the time it was runnable, not only the CPU time it
/// got: `--param open_bursts=true`, for every policy and for the fair shares alike.
pub fn open_bursts(params: &Params) -> Result<bool, ParamError> {
    params.bool("", "open_bursts", false)
}

/// A policy built and ready to run, with the dispatch delay the engine charges.
pub struct Built {
    policy: BuiltPolicy,
    delay: DispatchDelay,
    /// The recording's tick phases when sleeps end on them (`--param sleep_on_tick`, by
    /// default when the recording's wakeups came on the tick).
    tick_wake: Option<TickPhases>,
    /// [`open_bursts`].
    open_bursts: bool,
}

impl Built {
    /// What the engine charges between a wakeup and the switch it causes.
    pub fn dispatch_delay(&self) -> DispatchDelay {
        self.delay
    }
}

/// One enum so the engine is monomorphised per policy (the fair policies' state, the
/// largest, boxed).
enum BuiltPolicy {
    Fair(Box<Fair>),
    O1(O1),
    On(Goodness),
    Credit(Credit),
    Sedf(Sedf),
}

/// VM name of every group index the engine assigns (see `engine::sim_threads`).
fn group_names(demand: &Demand, threads: &[engine::SimThread]) -> Vec<String> {
    let n = threads.iter().map(|t| t.group + 1).max().unwrap_or(0) as usize;
    let mut names = vec![String::new(); n];
    for (t, d) in threads.iter().zip(&demand.threads) {
        names[t.group as usize] = d.vm.clone();
    }
    names
}

/// Checks the run's inputs: at least one tracked thread, a pCPU count in range.
pub fn check_inputs(demand: &Demand, ncpus: u32) -> Result<(), SimError> {
    if ncpus == 0 || ncpus > engine::MAX_PCPUS {
        return Err(SimError::Pcpus(ncpus.into()));
    }
    if demand.tracked().all(|t| t.bursts.is_empty()) {
        return Err(SimError::NoThreads);
    }
    Ok(())
}

/// `name` is a tick rule that holds only where sleeps end on the tick; without them it is
/// off, and saying so (`=false`, as a script does for every recording) is accepted, while
/// `=true` would be read and do nothing, so it is refused in one line.
fn off_without_sleep_on_tick(params: &Params, policy: &str, name: &str) -> Result<(), ParamError> {
    if params.bool(policy, name, false)? {
        return Err(ParamError::Invalid(format!(
            "--param {name}=true needs --param sleep_on_tick=true"
        )));
    }
    Ok(())
}

/// Builds `kind` for `demand` on `ncpus` pCPUs from `params` (unknown names are checked by
/// the caller with [`Params::check_all_used`] once every selected policy is built).
pub fn build(
    kind: PolicyKind,
    demand: &Demand,
    ncpus: u32,
    params: &Params,
) -> Result<Built, SimError> {
    check_inputs(demand, ncpus)?;
    let threads = engine::sim_threads(demand, ncpus);
    let vm_names = group_names(demand, &threads);
    let n = threads.len();
    let recorded = params.recorded().dispatch;
    let delay = DispatchDelay {
        idle_ns: params.ns(kind.name(), "dispatch_idle", recorded.idle_ns)?,
        preempt_ns: params.ns(kind.name(), "dispatch_preempt", recorded.preempt_ns)?,
    };
    // The recording host's timers, whichever policy replays its demand: its ticks.
    let mut ticks = tick_phases(demand, params);
    let sleep_on_tick = params.bool(kind.name(), "sleep_on_tick", ticks.tick_driven())?;
    if sleep_on_tick {
        ticks.stand_ins_on_tick = params.bool(kind.name(), "stand_in_on_tick", true)?;
    } else {
        off_without_sleep_on_tick(params, kind.name(), "stand_in_on_tick")?;
    }
    let tick_wake = sleep_on_tick.then_some(ticks);
    // Where sleeps end on the tick, the fair policies check slices on the tick that wakes
    // the sleepers (`Fair::with_tick_offsets`; `--param tick_phase=false`: on a grid of
    // their own), as the stand-ins wake on it (`stand_in_on_tick`).
    let fair = |flavour: Flavour| -> Result<BuiltPolicy, ParamError> {
        let p = FairParams::new(flavour, params, ncpus)?;
        let offsets = match &tick_wake {
            Some(t) if params.bool(kind.name(), "tick_phase", true)? => {
                t.tick_offsets(ncpus, p.tick)
            }
            Some(_) => Vec::new(),
            None => {
                off_without_sleep_on_tick(params, kind.name(), "tick_phase")?;
                Vec::new()
            }
        };
        Ok(BuiltPolicy::Fair(Box::new(
            Fair::new(flavour, p, &threads, ncpus).with_tick_offsets(offsets),
        )))
    };
    let policy = match kind {
        PolicyKind::Cfs => fair(Flavour::Cfs)?,
        PolicyKind::Eevdf => fair(Flavour::Eevdf)?,
        PolicyKind::O1 => BuiltPolicy::O1(O1::new(O1Params::new(params)?, n, ncpus)),
        PolicyKind::On => BuiltPolicy::On(Goodness::new(GoodnessParams::new(params)?, &threads)),
        PolicyKind::Credit => BuiltPolicy::Credit(Credit::new(
            CreditParams::new(params)?,
            &threads,
            &vm_names,
            ncpus,
        )),
        PolicyKind::Sedf => BuiltPolicy::Sedf(Sedf::new(
            SedfParams::new(params)?,
            &threads,
            &vm_names,
            ncpus,
        )?),
    };
    params.check_vms(&vm_names)?;
    Ok(Built {
        policy,
        delay,
        tick_wake,
        open_bursts: open_bursts(params)?,
    })
}

/// Runs a built policy over `demand`, handing every event to `sink`.
pub fn run(built: Built, demand: &Demand, ncpus: u32, sink: &mut dyn FnMut(&Event)) -> RunStats {
    let rules = engine::ReplayRules {
        delay: built.delay,
        spread: WakeCost::of(demand).spread(built.delay),
        tick_wake: built.tick_wake.as_ref(),
        open_bursts: built.open_bursts,
    };
    match built.policy {
        BuiltPolicy::Fair(p) => engine::run_with(demand, ncpus, *p, rules, sink).0,
        BuiltPolicy::O1(p) => engine::run_with(demand, ncpus, p, rules, sink).0,
        BuiltPolicy::On(p) => engine::run_with(demand, ncpus, p, rules, sink).0,
        BuiltPolicy::Credit(p) => engine::run_with(demand, ncpus, p, rules, sink).0,
        BuiltPolicy::Sedf(p) => engine::run_with(demand, ncpus, p, rules, sink).0,
    }
}

/// Builds and runs `kind`, collecting the events.
pub fn simulate(
    kind: PolicyKind,
    demand: &Demand,
    ncpus: u32,
    params: &Params,
) -> Result<(Vec<Event>, RunStats), SimError> {
    let built = build(kind, demand, ncpus, params)?;
    params.check_all_used(&[kind.name()])?;
    let mut events = Vec::new();
    let stats = run(built, demand, ncpus, &mut |e| events.push(e.clone()));
    Ok((events, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parameter a policy reads only under another setting is not called unknown when that
    /// setting is missing: the error says what it needs; with it, it is read.
    #[test]
    fn background_shares_without_groups_says_it_needs_them() {
        use crate::synthetic::{demand, Spec};
        let d = demand(&[Spec::hog(0, 0, 10_000_000)], 1, 10_000_000);
        for kind in [PolicyKind::Cfs, PolicyKind::Eevdf] {
            for given in ["background_shares=2048", "cfs.background_shares=2048"] {
                let p = Params::parse(&[given]).unwrap();
                let Err(e) = simulate(kind, &d, 1, &p) else {
                    panic!("{kind:?} took {given} without groups");
                };
                let name = given.split_once('=').unwrap().0;
                let want = if kind == PolicyKind::Eevdf && name.starts_with("cfs.") {
                    "--param cfs.background_shares is not a parameter of eevdf"
                } else {
                    "needs --param groups=true"
                };
                assert!(e.to_string().contains(want), "{kind:?} {given}: {e}");
            }
            let p = Params::parse(&["groups=true", "background_shares=2048"]).unwrap();
            assert!(simulate(kind, &d, 1, &p).is_ok(), "{kind:?}");
        }
    }

    #[test]
    fn all_is_offered_only_where_it_is_taken() {
        // `simulate --policy` takes a list or `all`; `replay --simulate` takes one policy.
        let list = PolicyKind::parse_list("cfs,nosuch")
            .unwrap_err()
            .to_string();
        assert!(
            list.contains("\"nosuch\"") && list.contains("or all"),
            "{list}"
        );
        assert_eq!(
            PolicyKind::parse_list("all").unwrap(),
            PolicyKind::ALL.to_vec()
        );
        let one = PolicyKind::parse("all").unwrap_err().to_string();
        assert!(one.contains("\"all\"") && !one.contains("or all"), "{one}");
    }

    #[test]
    fn the_tick_note_says_a_given_hz() {
        let none = Params::parse::<&str>(&[]).unwrap();
        let ticks = TickPhases::of(&Demand::default(), 4_000_000);
        let note = tick_note(Some(250), &none, &ticks).unwrap();
        assert!(note.contains("HZ=250, the recording host's"), "{note}");
        let given = Params::parse(&["hz=1000"]).unwrap();
        let note = tick_note(Some(250), &given, &ticks).unwrap();
        assert!(
            note.starts_with("tick: --param hz=1000; otherwise HZ=250"),
            "{note}"
        );
        let given = Params::parse(&["cfs.sleep_on_tick=true"]).unwrap();
        let note = tick_note(Some(250), &given, &ticks).unwrap();
        assert!(
            note.ends_with("sleeps last as recorded (`--param sleep_on_tick=true` ends those on the tick) (except --param cfs.sleep_on_tick=true)"),
            "a policy's own setting is named: {note}"
        );
        let note = tick_note(None, &Params::parse(&["cfs.hz=100"]).unwrap(), &ticks).unwrap();
        assert!(
            note.contains("cfs.hz=100") && note.contains("default"),
            "{note}"
        );
    }
}
