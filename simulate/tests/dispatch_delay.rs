//! The engine's dispatch delay: a wakeup that finds its pCPU idle, or preempts, has its
//! switch happen the charged time later, never sooner; the recording's figures are the
//! defaults and `--param` overrides them; the recording's HZ is the Linux policies' tick
//! (sleeps that end on the tick: `sleep_on_tick.rs`).

use model::{Event, Model, ModelConfig};
use simulate::policy::tick_ns;
use simulate::synthetic::{demand, Spec};
use simulate::{build, run, DispatchDelay, Params, PolicyKind, RecordedDefaults};

const MS: u64 = 1_000_000;
const US: u64 = 1_000;

fn events_of(kind: PolicyKind, d: &model::demand::Demand, pcpus: u32, p: &Params) -> Vec<Event> {
    let built = build(kind, d, pcpus, p).unwrap();
    p.check_all_used(&[kind.name()]).unwrap();
    let mut evs = Vec::new();
    run(built, d, pcpus, &mut |e| evs.push(e.clone()));
    evs
}

/// For each wakeup of `tid`, the time to its next switch-in.
fn wake_to_switch(evs: &[Event], tid: u32) -> Vec<u64> {
    let mut out = Vec::new();
    let mut woke = None;
    for e in evs {
        match e {
            Event::Wakeup(w) if w.tid == tid => woke = Some(w.ts),
            Event::SchedSwitch(s) if s.next_tid == tid => {
                if let Some(w) = woke.take() {
                    out.push(s.ts - w);
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn a_wakeup_onto_an_idle_pcpu_runs_the_charged_time_later() {
    let span = 200 * MS;
    let d = demand(&[Spec::periodic(0, 0, MS, 4 * MS, span)], 1, span);
    let tid = d.tracked().next().unwrap().tid;
    let free = events_of(PolicyKind::Cfs, &d, 1, &Params::parse::<&str>(&[]).unwrap());
    let waits = wake_to_switch(&free, tid);
    assert!(waits.len() > 30, "{waits:?}");
    assert!(waits.iter().all(|&w| w == 0), "uncharged: {waits:?}");

    let p = Params::parse(&["dispatch_idle=50us"]).unwrap();
    let charged = events_of(PolicyKind::Cfs, &d, 1, &p);
    let waits = wake_to_switch(&charged, tid);
    assert!(waits.len() > 30, "{waits:?}");
    assert!(waits.iter().all(|&w| w == 50 * US), "charged: {waits:?}");
    // The model counts it as run-queue wait.
    let mut m = Model::new(ModelConfig::report());
    m.ingest_batch(&charged);
    m.finish();
    let v = m
        .snapshot()
        .vcpus
        .into_iter()
        .find(|v| v.tid == tid)
        .unwrap();
    assert!(v.wait.p50.abs_diff(50 * US) <= US, "{:?}", v.wait);
}

/// 500 ms of a hog and a thread running 200 us, then sleeping `sleep_ns`, on one pCPU; the
/// sleeper's tid.
fn hog_and_sleeper(sleep_ns: u64) -> (model::demand::Demand, u32) {
    let span = 500 * MS;
    let d = demand(
        &[
            Spec::hog(0, 0, span),
            Spec::periodic(1, 0, 200 * US, sleep_ns, span),
        ],
        1,
        span,
    );
    let sleepy = d.tracked().nth(1).unwrap().tid;
    (d, sleepy)
}

#[test]
fn a_preempting_wakeup_switches_the_charged_time_later_and_never_sooner() {
    let (d, sleepy) = hog_and_sleeper(10 * MS);
    let free = events_of(PolicyKind::Cfs, &d, 1, &Params::parse::<&str>(&[]).unwrap());
    let at_once = wake_to_switch(&free, sleepy)
        .iter()
        .filter(|&&w| w == 0)
        .count();
    assert!(
        at_once > 10,
        "the sleepy thread preempts on wakeup: {at_once}"
    );

    let p = Params::parse(&["dispatch_preempt=30us"]).unwrap();
    let charged = events_of(PolicyKind::Cfs, &d, 1, &p);
    let waits = wake_to_switch(&charged, sleepy);
    assert!(waits.iter().all(|&w| w >= 30 * US), "{waits:?}");
    let exactly = waits.iter().filter(|&&w| w == 30 * US).count();
    assert!(exactly > 10, "{waits:?}");
}

#[test]
fn the_recording_supplies_the_defaults_and_params_override_them() {
    let span = 100 * MS;
    let d = demand(&[Spec::periodic(0, 0, MS, 4 * MS, span)], 1, span);
    let recorded = RecordedDefaults {
        hz: Some(1000),
        dispatch: DispatchDelay {
            idle_ns: 20 * US,
            preempt_ns: 5 * US,
        },
    };
    let p = Params::parse::<&str>(&[]).unwrap().with_recorded(recorded);
    let built = build(PolicyKind::Eevdf, &d, 1, &p).unwrap();
    assert_eq!(built.dispatch_delay(), recorded.dispatch);
    assert_eq!(tick_ns("eevdf", &p, 250).unwrap(), MS);

    let p = Params::parse(&["dispatch_idle=0", "hz=100"])
        .unwrap()
        .with_recorded(recorded);
    let built = build(PolicyKind::Eevdf, &d, 1, &p).unwrap();
    assert_eq!(built.dispatch_delay().idle_ns, 0);
    assert_eq!(built.dispatch_delay().preempt_ns, 5 * US);
    assert_eq!(tick_ns("eevdf", &p, 250).unwrap(), 10 * MS);

    // Without a recorded HZ each policy keeps its source's default.
    let p = Params::parse::<&str>(&[]).unwrap();
    assert_eq!(tick_ns("o1", &p, 1000).unwrap(), MS);
}

#[test]
fn the_recordings_delays_are_charged_with_their_spread() {
    let (mut d, sleepy) = hog_and_sleeper(10 * MS);
    // What the recording's wakeups that preempted waited: 20, 30, ..., 100 us.
    let recorded: Vec<u64> = (2..=10).map(|i| i * 10 * US).collect();
    d.wakeups.preempted = recorded.clone();
    let dispatch = simulate::WakeCost::of(&d).dispatch_delay();
    assert_eq!(dispatch.preempt_ns, 60 * US);
    let p = Params::parse::<&str>(&[])
        .unwrap()
        .with_recorded(RecordedDefaults { hz: None, dispatch });
    let waits = wake_to_switch(&events_of(PolicyKind::Cfs, &d, 1, &p), sleepy);
    let charged: Vec<u64> = waits
        .iter()
        .copied()
        .filter(|w| recorded.contains(w))
        .collect();
    assert!(charged.len() > 30, "{waits:?}");
    // Every recorded delay is charged, none more often than its share allows.
    for r in &recorded {
        let n = charged.iter().filter(|&&w| w == *r).count();
        assert!(
            n * recorded.len() * 2 >= charged.len() / 2,
            "{r}: {n} of {charged:?}"
        );
    }
    // No wakeup switches sooner than the shortest recorded delay.
    assert!(waits.iter().all(|&w| w >= 20 * US), "{waits:?}");
}

/// A decision due while a preempting wakeup's long charged switch is on its way waits for
/// that switch: credit's slice end, past, once asked again each nanosecond until it (35 s
/// of one core for 8 s of demand whose recorded delays reached 59 ms).
#[test]
fn a_long_charged_switch_is_waited_for_not_polled() {
    let (mut d, _) = hog_and_sleeper(10 * MS);
    d.wakeups.preempted = vec![US, US, 50 * MS, 50 * MS, 50 * MS];
    let dispatch = simulate::WakeCost::of(&d).dispatch_delay();
    let p = Params::parse::<&str>(&[])
        .unwrap()
        .with_recorded(RecordedDefaults { hz: None, dispatch });
    for kind in PolicyKind::ALL {
        let built = build(kind, &d, 1, &p).unwrap();
        let stats = run(built, &d, 1, &mut |_| {});
        // 500 ms of demand: a tick or a slice end every ms at most, not one a nanosecond.
        assert!(
            stats.ticks < 20_000,
            "{}: {} decisions",
            kind.name(),
            stats.ticks
        );
    }
}
