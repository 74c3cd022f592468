//! Textbook properties of each policy, over random demand where the property is general
//! (expected values from /work/shared/SCHEDULERS.md section 8), plus the engine's own
//! contract: the demand folded back out of a simulated run is the demand put in, with or
//! without a dispatch delay.

use model::demand::{fold_events, Burst};
use model::{Event, Model, ModelConfig};
use proptest::prelude::*;
use simulate::engine;
use simulate::policy::goodness::{Goodness, GoodnessParams};
use simulate::policy::o1::{O1Params, O1};
use simulate::synthetic::{demand, Spec};
use simulate::{build, run, Params, PolicyKind};

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

fn events_of(
    kind: PolicyKind,
    d: &model::demand::Demand,
    pcpus: u32,
    params: &[&str],
) -> Vec<Event> {
    let p = Params::parse(params).unwrap();
    let built = build(kind, d, pcpus, &p).unwrap();
    p.check_all_used(&[kind.name()]).unwrap();
    let mut evs = Vec::new();
    run(built, d, pcpus, &mut |e| evs.push(e.clone()));
    evs
}

/// CPU share of each tracked thread (by tid order of the demand) over the span.
fn shares(evs: &[Event], d: &model::demand::Demand) -> Vec<f64> {
    let mut m = Model::new(ModelConfig::report());
    m.ingest_batch(evs);
    m.finish();
    let snap = m.snapshot();
    d.tracked()
        .map(|t| {
            snap.vcpus
                .iter()
                .find(|v| v.tid == t.tid)
                .map_or(0.0, |v| v.run_ns as f64 / d.span_ns() as f64)
        })
        .collect()
}

/// Per tid: (start, end) of every stretch on a CPU, in simulated time.
fn run_intervals(evs: &[Event], base: u64, tid: u32) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut on: Option<u64> = None;
    for e in evs {
        if let Event::SchedSwitch(s) = e {
            if s.prev_tid == tid {
                if let Some(a) = on.take() {
                    out.push((a - base, s.ts - base));
                }
            }
            if s.next_tid == tid {
                on = Some(s.ts);
            }
        }
        if let Event::ObservationEnd(o) = e {
            if let Some(a) = on.take() {
                out.push((a - base, o.ts - base));
            }
        }
    }
    out
}

fn cpu_in(iv: &[(u64, u64)], from: u64, to: u64) -> u64 {
    iv.iter()
        .map(|&(a, b)| b.min(to).saturating_sub(a.max(from)))
        .sum()
}

/// Time during which some pCPU idled while a runnable thread that may run there waited
/// (all threads here may run anywhere).
fn idle_while_waiting(evs: &[Event], pcpus: u32) -> u64 {
    use std::collections::BTreeSet;
    let mut running = vec![0u32; pcpus as usize];
    let mut waiting: BTreeSet<u32> = BTreeSet::new();
    let (mut last, mut bad) = (None::<u64>, 0u64);
    for e in evs {
        let ts = e.ts();
        if let Some(l) = last {
            if !waiting.is_empty() && running.contains(&0) {
                bad += ts - l;
            }
        }
        last = Some(ts);
        match e {
            Event::Wakeup(w) => {
                waiting.insert(w.tid);
            }
            Event::SchedSwitch(s) => {
                if s.prev_tid != 0 && s.prev_state == 0 {
                    waiting.insert(s.prev_tid);
                }
                waiting.remove(&s.next_tid);
                running[s.cpu as usize] = s.next_tid;
            }
            _ => {}
        }
    }
    bad
}

fn hogs(nices: &[i32], span: u64) -> Vec<Spec> {
    nices
        .iter()
        .enumerate()
        .map(|(i, &n)| Spec::hog(i as u32, n, span).on(&[0]))
        .collect()
}

fn expected_by_weight(nices: &[i32]) -> Vec<f64> {
    let w: Vec<f64> = nices
        .iter()
        .map(|&n| f64::from(model::nice_to_weight(n)))
        .collect();
    let sum: f64 = w.iter().sum();
    w.iter().map(|x| x / sum).collect()
}

/// `k` always-runnable tracked threads beside an always-runnable background on one pCPU.
fn hogs_beside_background(k: usize, span: u64) -> model::demand::Demand {
    let specs: Vec<Spec> = (0..k).map(|_| Spec::hog(0, 0, span).on(&[0])).collect();
    let mut d = demand(&specs, 1, span);
    let mut bg = d.threads[0].clone();
    bg.tid = 0;
    bg.vm = String::new();
    bg.vcpu = None;
    bg.background = true;
    d.threads.push(bg);
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// With groups the tracked threads share their group's half of the pCPU, however many
    /// they are; without, each thread (the background too) gets an equal part.
    #[test]
    fn with_groups_the_background_group_gets_half_a_pcpu_beside_any_number_of_threads(
        k in 1usize..=4
    ) {
        let span = 10 * S;
        let d = hogs_beside_background(k, span);
        for kind in [PolicyKind::Cfs, PolicyKind::Eevdf] {
            for (params, want) in [
                (&["groups=true"][..], 0.5 / k as f64),
                (&[][..], 1.0 / (k + 1) as f64),
            ] {
                let got = shares(&events_of(kind, &d, 1, params), &d);
                for g in &got {
                    prop_assert!((g - want).abs() <= 0.01, "{kind:?} {params:?} k={k}: {got:?} vs {want}");
                }
            }
        }
    }
}

/// `hogs_beside_background`'s threads in recorded task groups: the tracked ones in
/// `/autogroup-1`, the background split into stand-ins of `/autogroup-2` (weight 1024),
/// `/autogroup-3` (weight 2048) and the root task group, each always runnable.
fn hogs_beside_recorded_groups(k: usize, span: u64) -> model::demand::Demand {
    let group = |name: &str, weight| {
        Some(model::SchedGroup {
            name: name.into(),
            weight,
        })
    };
    let mut d = hogs_beside_background(k, span);
    for t in &mut d.threads {
        t.group = group("/autogroup-1", 1024);
    }
    let bg = d.threads.pop().unwrap();
    for g in [
        group("/autogroup-2", 1024),
        group("/autogroup-3", 2048),
        group("", 1024),
    ] {
        d.threads.push(model::demand::ThreadDemand {
            group: g,
            ..bg.clone()
        });
    }
    d.group_records.read = k as u64 + 3;
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// With the recording's groups (`groups=auto`, the default) each group's entity weighs
    /// its group's weight, and the root group's stand-in its own: the tracked threads share
    /// 1024 / (1024 + 1024 + 2048 + 1024) of the pCPU however many they are. A recording
    /// without group records replays flat under `auto`, exactly as with `groups=false`.
    #[test]
    fn with_recorded_groups_each_group_weighs_its_weight_and_the_root_its_tasks(
        k in 1usize..=3
    ) {
        let span = 10 * S;
        let d = hogs_beside_recorded_groups(k, span);
        let flat = hogs_beside_background(k, span);
        for kind in [PolicyKind::Cfs, PolicyKind::Eevdf] {
            let got = shares(&events_of(kind, &d, 1, &[]), &d);
            let want = 0.2 / k as f64;
            for g in &got {
                prop_assert!((g - want).abs() <= 0.01, "{kind:?} k={k}: {got:?} vs {want}");
            }
            prop_assert!(
                events_of(kind, &flat, 1, &[]) == events_of(kind, &flat, 1, &["groups=false"])
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn cfs_and_eevdf_shares_follow_weight_within_one_point(
        nices in prop::collection::vec(-5i32..=10, 2..=4)
    ) {
        let span = 10 * S;
        let d = demand(&hogs(&nices, span), 1, span);
        let want = expected_by_weight(&nices);
        // The hogs of one process share its group: with groups too, shares follow weight.
        let mut one_process = d.clone();
        for t in &mut one_process.threads {
            t.pid = 100;
        }
        // Each hog its own process (VMM session): with groups each session gets an equal
        // part whatever its nice, as autogroups do.
        let equal = vec![1.0 / nices.len() as f64; nices.len()];
        for kind in [PolicyKind::Cfs, PolicyKind::Eevdf] {
            let cases = [
                (&d, &[][..], &want),
                (&one_process, &["groups=true"][..], &want),
                (&d, &["groups=true"][..], &equal),
            ];
            for (d, params, want) in cases {
                let got = shares(&events_of(kind, d, 1, params), d);
                for (g, w) in got.iter().zip(want) {
                    prop_assert!((g - w).abs() <= 0.01, "{kind:?} {params:?} nices {nices:?}: {got:?} vs {want:?}");
                }
            }
        }
    }

    #[test]
    fn work_conserving_policies_leave_no_pcpu_idle_while_a_thread_waits(
        seed in 0u64..1000, pcpus in 1u32..=4, n in 2usize..=7
    ) {
        let span = 2 * S;
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
        let specs: Vec<Spec> = (0..n)
            .map(|i| {
                let run = 100_000 + next() % (5 * MS);
                let sleep = 100_000 + next() % (5 * MS);
                Spec::periodic(i as u32 % 3, (next() % 11) as i32 - 5, run, sleep, span)
            })
            .collect();
        let d = demand(&specs, pcpus, span);
        // Cache-hot refusals (migration_cost, cache_hot_time) are where the kernels choose
        // not to conserve work; with them off, placement and balancing must.
        let cases: [(PolicyKind, &[&str]); 7] = [
            (PolicyKind::Cfs, &["migration_cost=0"]),
            (PolicyKind::Eevdf, &["migration_cost=0"]),
            (PolicyKind::Cfs, &["migration_cost=0", "groups=true"]),
            (PolicyKind::Eevdf, &["migration_cost=0", "groups=true"]),
            (PolicyKind::O1, &["cache_hot_time=0"]),
            (PolicyKind::On, &[]),
            (PolicyKind::Credit, &[]),
        ];
        for (kind, params) in cases {
            let evs = events_of(kind, &d, pcpus, params);
            let bad = idle_while_waiting(&evs, pcpus);
            prop_assert!(bad * 50 <= span, "{kind:?}: a pCPU idled {bad} ns of {span} while a thread waited");
        }
    }

    #[test]
    fn sedf_gives_every_slice_in_every_period_at_utilisation_up_to_one(
        p0 in 5u64..=50, p1 in 5u64..=50, u0 in 5u64..=60, u1 in 5u64..=35
    ) {
        let span = S;
        let d = demand(&hogs(&[0, 0], span), 1, span);
        let (period0, period1) = (p0 * MS, p1 * MS);
        let (slice0, slice1) = (period0 * u0 / 100, period1 * u1 / 100);
        let args = [
            format!("sedf.period.vm0={period0}"), format!("sedf.slice.vm0={slice0}"),
            format!("sedf.period.vm1={period1}"), format!("sedf.slice.vm1={slice1}"),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let evs = events_of(PolicyKind::Sedf, &d, 1, &args);
        for (k, (period, slice)) in [(period0, slice0), (period1, slice1)].into_iter().enumerate() {
            let iv = run_intervals(&evs, d.start, 1000 + k as u32);
            let mut a = 0;
            while a + period <= span {
                let got = cpu_in(&iv, a, a + period);
                prop_assert!(got >= slice, "vm{k} got {got} of slice {slice} in period at {a}");
                a += period;
            }
        }
    }
}

#[test]
fn credit_never_exceeds_a_cap_even_on_an_idle_pcpu() {
    let span = 3 * S;
    let d = demand(&[Spec::hog(0, 0, span).on(&[0])], 1, span);
    for cap in [10u64, 30, 50, 75] {
        let arg = format!("credit.cap.vm0={cap}");
        let got = shares(&events_of(PolicyKind::Credit, &d, 1, &[&arg]), &d)[0];
        // Overshoot allowed: at most one 30 ms period over the run.
        let limit = cap as f64 / 100.0 + 0.030 / 3.0;
        assert!(got <= limit, "cap {cap}: share {got}");
        assert!(
            got >= cap as f64 / 100.0 - 0.03,
            "cap {cap}: share {got} far below it"
        );
    }
}

/// Mean wake-to-run latency of the first tracked thread.
fn sleeper_wait(evs: &[Event]) -> f64 {
    let (_, served) = fold_events(evs, 0);
    let mean = served.tracked().next().unwrap().wake_to_run.mean;
    mean
}

#[test]
fn credit_boost_lowers_a_sleepy_vcpus_wait_beside_hogs() {
    let span = 3 * S;
    let specs = [
        Spec::periodic(0, 0, 500_000, 9_500_000, span).on(&[0]),
        Spec::hog(1, 0, span).on(&[0]),
        Spec::hog(2, 0, span).on(&[0]),
    ];
    let d = demand(&specs, 1, span);
    let with = sleeper_wait(&events_of(PolicyKind::Credit, &d, 1, &[]));
    let without = sleeper_wait(&events_of(
        PolicyKind::Credit,
        &d,
        1,
        &["credit.boost=false"],
    ));
    assert!(
        with * 4.0 < without,
        "boost: {with} ns, no boost: {without} ns"
    );
}

#[test]
fn o1_gives_a_sleepy_thread_a_better_priority_than_a_hog_of_the_same_nice() {
    let span = 5 * S;
    let specs = [
        Spec::periodic(0, 0, MS, 9 * MS, span).on(&[0]),
        Spec::hog(1, 0, span).on(&[0]),
    ];
    let d = demand(&specs, 1, span);
    let p = O1::new(O1Params::new(&Params::default()).unwrap(), 2, 1);
    let (_, p) = engine::run(&d, 1, p, &mut |_| {});
    assert!(
        p.prio(0) < p.prio(1),
        "sleepy {} vs hog {}",
        p.prio(0),
        p.prio(1)
    );
    // The textbook end points: bonus +5 (115) for the sleeper, 125 for the hog.
    assert_eq!(p.prio(0), 115);
    assert_eq!(p.prio(1), 125);
}

#[test]
fn goodness_recalculates_only_when_every_runnable_counter_is_zero() {
    let span = 5 * S;
    let specs = [
        Spec::hog(0, 0, span).on(&[0]),
        Spec::hog(1, 19, span).on(&[0]),
        Spec::periodic(2, 0, 2 * MS, 30 * MS, span).on(&[0]),
    ];
    let d = demand(&specs, 1, span);
    let threads = engine::sim_threads(&d, 1);
    let p = Goodness::new(GoodnessParams::new(&Params::default()).unwrap(), &threads);
    let mut evs = Vec::new();
    let (_, p) = engine::run(&d, 1, p, &mut |e| evs.push(e.clone()));
    assert!(p.recalculations > 10, "{}", p.recalculations);
    assert_eq!(p.max_runnable_counter_at_recalc, 0);
    // Hogs alone share by NICE_TO_TICKS: nice 0 vs 19 at HZ=100 is 6:1.
    let d2 = demand(&hogs(&[0, 19], span), 1, span);
    let s = shares(&events_of(PolicyKind::On, &d2, 1, &[]), &d2);
    assert!(
        (s[0] - 6.0 / 7.0).abs() < 0.01 && (s[1] - 1.0 / 7.0).abs() < 0.01,
        "{s:?}"
    );
}

#[test]
fn the_demand_of_a_simulated_run_is_the_demand_put_in() {
    let span = 2 * S;
    let specs = [
        Spec::periodic(0, 0, 3 * MS, 2 * MS, span),
        Spec::periodic(0, 5, 700_000, 300_000, span),
        Spec::hog(1, 0, span),
        Spec::periodic(1, -3, 50_000, 950_000, span),
    ];
    let d = demand(&specs, 2, span);
    // With and without a dispatch delay: it delays runs, never changes what is run.
    let charged = ["dispatch_idle=40us", "dispatch_preempt=15us"];
    for (kind, params) in PolicyKind::ALL
        .into_iter()
        .flat_map(|k| [(k, &[][..]), (k, &charged[..])])
    {
        let evs = events_of(kind, &d, 2, params);
        let (_, back) = fold_events(&evs, 0);
        for (inp, out) in d.tracked().zip(back.tracked()) {
            assert_eq!(inp.tid, out.tid);
            // All but the burst the end of the run cut short come back exactly.
            let done = out.bursts.len().saturating_sub(1);
            assert!(
                done > 0 || inp.bursts.len() == 1,
                "{kind:?} tid {}: no burst done",
                inp.tid
            );
            let want: Vec<Burst> = inp.bursts[..done].to_vec();
            let got: Vec<u64> = out.bursts[..done].iter().map(|b| b.run_ns).collect();
            let want_run: Vec<u64> = want.iter().map(|b| b.run_ns).collect();
            assert_eq!(got, want_run, "{kind:?} tid {}", inp.tid);
            // Sleeps: as recorded (open loop).
            for (g, w) in out.bursts[..done.saturating_sub(1)].iter().zip(&want) {
                assert_eq!(g.sleep_ns, w.sleep_ns, "{kind:?} tid {}", inp.tid);
            }
        }
    }
}

/// Xen weights of nices as the credit policy maps them (the kernel's weight ratio, default
/// weight 256 at nice 0), as shares.
fn expected_by_xen_weight(nices: &[i32]) -> Vec<f64> {
    let w: Vec<f64> = nices
        .iter()
        .map(|&n| (256 * i64::from(model::nice_to_weight(n)) / 1024).max(1) as f64)
        .collect();
    let sum: f64 = w.iter().sum();
    w.iter().map(|x| x / sum).collect()
}

#[test]
fn credit_shares_follow_weight_nice_minus_one_against_four() {
    let nices = [-1, 4];
    let span = 3 * S;
    let d = demand(&hogs(&nices, span), 1, span);
    let want = expected_by_xen_weight(&nices);
    let got = shares(&events_of(PolicyKind::Credit, &d, 1, &[]), &d);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 0.02, "{got:?} vs {want:?}");
    }
}

/// Each tracked thread's CPU share over simulated time `from..to`.
fn shares_between(evs: &[Event], d: &model::demand::Demand, from: u64, to: u64) -> Vec<f64> {
    d.tracked()
        .map(|t| cpu_in(&run_intervals(evs, d.start, t.tid), from, to) as f64 / (to - from) as f64)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// The property: always-runnable vCPUs on one pCPU get shares proportional to
    /// their Xen weight, within 2 points over 3 s. Two vCPUs, any nices from -5 to 10 (a
    /// sweep of 150 pairs stayed within 1.0 point over seconds 1-4 and 2.0 over 0-3). Three
    /// to five are the next test.
    #[test]
    fn credit_shares_follow_weight_within_two_points_over_three_seconds(
        nices in prop::collection::vec(-5i32..=10, 2)
    ) {
        let span = 3 * S;
        let d = demand(&hogs(&nices, span), 1, span);
        let want = expected_by_xen_weight(&nices);
        let got = shares_between(&events_of(PolicyKind::Credit, &d, 1, &[]), &d, 0, span);
        for (g, w) in got.iter().zip(&want) {
            prop_assert!((g - w).abs() <= 0.02, "nices {nices:?}: {got:?} vs {want:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// A credit cap is never exceeded, whatever else shares the pCPU: a capped hog beside
    /// 0 to 2 uncapped hogs of random nices gets at most its cap plus one 30 ms accounting
    /// period over the run (the fixed test above covers the idle pCPU).
    #[test]
    fn credit_never_exceeds_a_cap_beside_other_load(
        cap in 5u64..=95, others in prop::collection::vec(-5i32..=10, 0..=2)
    ) {
        let span = 3 * S;
        let mut specs = vec![Spec::hog(0, 0, span).on(&[0])];
        specs.extend(others.iter().enumerate().map(|(i, &n)| Spec::hog(i as u32 + 1, n, span).on(&[0])));
        let d = demand(&specs, 1, span);
        let arg = format!("credit.cap.vm0={cap}");
        let got = shares(&events_of(PolicyKind::Credit, &d, 1, &[&arg]), &d)[0];
        let limit = cap as f64 / 100.0 + 0.030 / 3.0;
        prop_assert!(got <= limit, "cap {cap} beside nices {others:?}: share {got}");
    }

    /// O(1): a vCPU that sleeps at least as long as it runs ends with a better (lower)
    /// dynamic priority than a CPU-bound one of the same nice, for any nice and duty cycle.
    #[test]
    fn o1_sleepy_beats_a_hog_of_the_same_nice_for_any_nice_and_duty(
        nice in -10i32..=10, run_us in 200u64..=5000, sleep_factor in 1u64..=10
    ) {
        let span = 5 * S;
        let run = run_us * 1000;
        let specs = [
            Spec::periodic(0, nice, run, run * sleep_factor, span).on(&[0]),
            Spec::hog(1, nice, span).on(&[0]),
        ];
        let d = demand(&specs, 1, span);
        let p = O1::new(O1Params::new(&Params::default()).unwrap(), 2, 1);
        let (_, p) = engine::run(&d, 1, p, &mut |_| {});
        prop_assert!(p.prio(0) < p.prio(1), "nice {nice}: sleepy {} vs hog {}", p.prio(0), p.prio(1));
    }

    /// 2.4 goodness: over random demand on one or two pCPUs, every recalculation finds
    /// every runnable counter at 0.
    #[test]
    fn goodness_recalculates_only_when_every_runnable_counter_is_zero_for_any_demand(
        seed in 0u64..1000, pcpus in 1u32..=2, n in 2usize..=5
    ) {
        let span = 2 * S;
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
        let specs: Vec<Spec> = (0..n)
            .map(|i| {
                let nice = (next() % 30) as i32 - 10;
                if next() % 3 == 0 {
                    Spec::hog(i as u32, nice, span)
                } else {
                    Spec::periodic(i as u32, nice, 100_000 + next() % (20 * MS), 100_000 + next() % (20 * MS), span)
                }
            })
            .collect();
        let d = demand(&specs, pcpus, span);
        let threads = engine::sim_threads(&d, pcpus);
        let p = Goodness::new(GoodnessParams::new(&Params::default()).unwrap(), &threads);
        let (_, p) = engine::run(&d, pcpus, p, &mut |_| {});
        prop_assert_eq!(p.max_runnable_counter_at_recalc, 0, "{} recalculations", p.recalculations);
    }

    /// Credit's BOOST: a sleepy vCPU beside 2 or 3 hogs on its pCPU waits less (mean
    /// wake-to-run) with BOOST than without, for any duty cycle. Not by a fixed factor.
    /// Beside one hog the property does not hold for every duty cycle, so one hog is left to
    /// the fixed test above: an UNDER wakee preempts an OVER hog without BOOST too, and
    /// with BOOST it still waits out the hog's 1 ms rate limit; and over a 100-2000 us x
    /// 2-30 ms grid (1,131 duty cycles, 3 s each) BOOST made the wait longer in 17, all with
    /// sleeps of 28-29 ms, just under the 30 ms accounting period (e.g. 1,450 us runs every
    /// 29 ms: 1.28 ms mean with BOOST, 0.73 ms without). Whether credit.c phase-locks the
    /// same way there is not checked.
    #[test]
    fn credit_boost_lowers_a_sleepy_vcpus_wait_for_any_duty_and_load(
        run_us in 100u64..=2000, sleep_ms in 2u64..=30, hogs_n in 2usize..=3
    ) {
        let span = 3 * S;
        let mut specs = vec![Spec::periodic(0, 0, run_us * 1000, sleep_ms * MS, span).on(&[0])];
        specs.extend((0..hogs_n).map(|i| Spec::hog(i as u32 + 1, 0, span).on(&[0])));
        let d = demand(&specs, 1, span);
        let with = sleeper_wait(&events_of(PolicyKind::Credit, &d, 1, &[]));
        let without = sleeper_wait(&events_of(PolicyKind::Credit, &d, 1, &["credit.boost=false"]));
        prop_assert!(with < without, "boost: {with} ns, no boost: {without} ns");
    }
}

/// Xen weights `w` (one single-vCPU domain each, `--param weight.vmN=`), as shares.
fn shares_of_weights(w: &[u32]) -> Vec<f64> {
    let sum: f64 = w.iter().map(|&x| f64::from(x)).sum();
    w.iter().map(|&x| f64::from(x) / sum).collect()
}

/// Random Xen weights (1..=65535, `csched_dom_cntl`'s range) for 3 to 5 units on one pCPU
/// in the range where credit1 itself is proportional: no unit's share above 0.7/(n-1).
///
/// Beyond 1/(n-1) credit.c is not proportional, by its own rule, and the model follows it:
/// `csched_acct` takes a unit whose credit exceeds one tslice's worth (300) off the active
/// list and halves its credit ("Upper bound on credits means UNIT stops earning"). A unit
/// of share f earns 300f per 30 ms period but, round-robined in whole 30 ms slices with the
/// others of its priority, runs about once per n-1 periods; past f = 1/(n-1) it earns more
/// than a slice between turns, and the excess is cut. An independent reading of credit.c
/// (a 100-line script of `csched_acct`, `csched_tick`, `burn_credits`, `__runq_insert`,
/// `csched_runq_sort` and whole tslices; SCHEDULERS.md) gave, for nices [0, 3, 6, 9, -3]
/// (weights 256/131/68/34/497), the nice -3 unit 37.8% against 50.4% over 30 s with the
/// model's timer order, 43.9-45.5% with other timer phases, and 49.7% with that one rule
/// removed; the model gives 36.7%. Over 3 s with weights drawn as here the script's worst
/// error was 1.7 points (200 draws) under 0.8/(n-1), 2.1 under 1/(n-1), and up to 15 points
/// without the bound. The model, whose shares over 3 s move in whole 30 ms slices (1
/// point each), reached 2.0 points at 0.74/(n-1) (weights [53976, 53863, 63335]: 35% for
/// 37.0%), so the test keeps to 0.7/(n-1), clear of the edge.
fn credit_weights() -> impl Strategy<Value = Vec<u32>> {
    (3usize..=5)
        .prop_flat_map(|n| prop::collection::vec(1u32..=65535, n))
        .prop_filter("largest share within 0.7/(n-1)", |w| {
            let n = w.len() as f64;
            shares_of_weights(w).iter().all(|&s| s <= 0.7 / (n - 1.0))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Three to five always-runnable vCPUs on one pCPU, random Xen weights in the
    /// proportional range (see `credit_weights`): each gets its weight's share within 2
    /// points over 3 s.
    #[test]
    fn credit_shares_of_three_to_five_units_follow_weight_within_two_points(
        weights in credit_weights()
    ) {
        let span = 3 * S;
        let specs: Vec<Spec> = (0..weights.len())
            .map(|i| Spec::hog(i as u32, 0, span).on(&[0]))
            .collect();
        let d = demand(&specs, 1, span);
        let params: Vec<String> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| format!("weight.vm{i}={w}"))
            .collect();
        let params: Vec<&str> = params.iter().map(String::as_str).collect();
        let want = shares_of_weights(&weights);
        let got = shares_between(&events_of(PolicyKind::Credit, &d, 1, &params), &d, 0, span);
        for (g, w) in got.iter().zip(&want) {
            prop_assert!((g - w).abs() <= 0.02, "weights {weights:?}: {got:?} vs {want:?}");
        }
    }
}

/// Outside that range credit1 is not proportional, and the model shows it as credit.c
/// does (see `credit_weights`): nices [0, 3, 6, 9, -3] leave the nice -3 unit (Xen weight
/// 497, 50.4% by weight) well short, and the light units above their share.
#[test]
fn credit_cuts_a_heavy_units_excess_credit_with_five_units_on_one_pcpu() {
    let nices = [0, 3, 6, 9, -3];
    let span = 3 * S;
    let d = demand(&hogs(&nices, span), 1, span);
    let want = expected_by_xen_weight(&nices);
    let got = shares_between(&events_of(PolicyKind::Credit, &d, 1, &[]), &d, 0, span);
    assert!(want[4] - got[4] > 0.08, "{got:?} vs {want:?}");
    assert!(
        got[..4].iter().zip(&want).all(|(g, w)| g > w),
        "{got:?} vs {want:?}"
    );
}

/// The demo's affinity rotation: two hogs pinned to one pCPU each, swapping every 500 ms,
/// beside a free hog. Under every policy each hog runs only where its affinity of the moment
/// allows (checked at every switch-in and at every affinity change), and each keeps about
/// half of a pCPU or more, as on the host.
#[test]
fn every_policy_honours_the_affinity_in_force_at_each_instant() {
    let span = 3 * S;
    let every = 500 * MS;
    let specs = vec![
        Spec::hog(0, 0, span).rotating(&[0, 1], every, span),
        Spec::hog(0, 0, span).rotating(&[1, 0], every, span),
        Spec::hog(1, 0, span),
    ];
    let d = demand(&specs, 2, span);
    let allowed_at = |k: usize, t: u64| -> u32 {
        let spans = &d.threads[k].affinity;
        let i = spans.partition_point(|s| s.at_ns <= t).max(1) - 1;
        spans[i].cpus[0]
    };
    for kind in PolicyKind::ALL {
        let evs = events_of(kind, &d, 2, &[]);
        for (k, t) in d.tracked().enumerate().take(2) {
            let mut on: Option<u32> = None;
            let mut changes = t.affinity.iter().skip(1).map(|s| s.at_ns).peekable();
            for e in &evs {
                let ts = e.ts() - d.start;
                // Just after a change, a thread still on its old pCPU is being moved off:
                // the switch-out must come at that very instant.
                while changes.peek().is_some_and(|&c| c < ts) {
                    let c = changes.next().unwrap();
                    if let Some(cpu) = on {
                        assert_eq!(
                            cpu,
                            allowed_at(k, c),
                            "{}: tid {} still on pCPU {cpu} after its affinity changed at {c}",
                            kind.name(),
                            t.tid
                        );
                    }
                }
                if let Event::SchedSwitch(s) = e {
                    if s.prev_tid == t.tid {
                        on = None;
                    }
                    if s.next_tid == t.tid {
                        assert_eq!(
                            s.cpu,
                            allowed_at(k, ts),
                            "{}: tid {} switched in on pCPU {} at {ts}",
                            kind.name(),
                            t.tid,
                            s.cpu
                        );
                        on = Some(s.cpu);
                    }
                }
            }
        }
        let sh = shares(&evs, &d);
        for s in &sh[..2] {
            assert!(
                *s > 0.45,
                "{}: a rotating hog got {s:.3} of a pCPU ({sh:?})",
                kind.name()
            );
        }
    }
}
