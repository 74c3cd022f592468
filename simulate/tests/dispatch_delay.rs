//! The engine's dispatch delay: a wakeup that finds its pCPU idle, or preempts, has its
//! switch happen the charged time later, never sooner; the recording's figures are the
//! defaults and `--param` overrides them; the recording's HZ is the Linux policies' tick.
//! `--param sleep_on_tick`: a host whose timers fire only on the tick wakes its sleepers on
//! the tick, so the replay ends each sleep on the tick nearest its recorded end; a tick at
//! a charged wakeup's instant does not switch to the wakee sooner than the charge.

use model::{Event, Model, ModelConfig};
use simulate::policy::tick_ns;
use simulate::synthetic::{demand, Spec};
use simulate::{build, run, DispatchDelay, Params, PolicyKind, RecordedDefaults};

const MS: u64 = 1_000_000;
const US: u64 = 1_000;
/// The Linux policies' default tick without a recorded HZ (250 Hz).
const TICK: u64 = 4 * MS;

fn events_of(kind: PolicyKind, d: &model::demand::Demand, pcpus: u32, p: &Params) -> Vec<Event> {
    let built = build(kind, d, pcpus, p).unwrap();
    p.check_all_used(&[kind.name()]).unwrap();
    let mut evs = Vec::new();
    run(built, d, pcpus, &mut |e| evs.push(e.clone()));
    evs
}

fn wakeups(evs: &[Event], tid: u32) -> Vec<u64> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Wakeup(w) if w.tid == tid => Some(w.ts),
            _ => None,
        })
        .collect()
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

/// One thread alone on one pCPU, running `run_ns` then sleeping `sleep_ns` for 400 ms, with
/// `--param sleep_on_tick=true` under `kind`: asserts every sleep ends on a tick and the
/// thread wakes once per tick (each cycle is shorter than a tick and ends on the next one);
/// returns the demand, the thread and the same run's wakeups without sleep_on_tick.
fn assert_one_wakeup_per_tick(
    kind: PolicyKind,
    run_ns: u64,
    sleep_ns: u64,
) -> (model::demand::Demand, Vec<u64>) {
    let span = 400 * MS;
    let d = demand(&[Spec::periodic(0, 0, run_ns, sleep_ns, span)], 1, span);
    let tid = d.tracked().next().unwrap().tid;
    let on_tick = wakeups(
        &events_of(
            kind,
            &d,
            1,
            &Params::parse(&["sleep_on_tick=true"]).unwrap(),
        ),
        tid,
    );
    assert!(on_tick.len() > 50, "{kind:?}: {on_tick:?}");
    let off = on_tick
        .iter()
        .skip(1) // the first wakeup is the thread's start, not the end of a sleep
        .filter(|&&ts| (ts - d.start) % TICK != 0)
        .count();
    assert_eq!(off, 0, "{kind:?}: wakeups off the tick: {on_tick:?}");
    let per_tick = (on_tick.last().unwrap() - on_tick[1]) / (on_tick.len() as u64 - 2);
    assert_eq!(per_tick, TICK, "{kind:?}");
    let free = wakeups(
        &events_of(kind, &d, 1, &Params::parse::<&str>(&[]).unwrap()),
        tid,
    );
    (d, free)
}

#[test]
fn sleeps_end_on_the_tick_nearest_their_recorded_end() {
    for kind in [PolicyKind::Cfs, PolicyKind::Eevdf, PolicyKind::Credit] {
        // A 3.9 ms cycle ends each sleep on the nearest tick: one cycle per tick.
        let (d, free) = assert_one_wakeup_per_tick(kind, 600 * US, 3_300 * US);
        let off = free
            .iter()
            .filter(|&&ts| (ts - d.start) % TICK != 0)
            .count();
        assert!(off > free.len() / 2, "{kind:?}: {free:?}");
    }
}

/// A sleep under half a tick has no tick nearer its end that is still ahead: it ends on the
/// next tick, not at once (off the tick, as if it had not slept).
#[test]
fn a_sleep_under_half_a_tick_ends_on_the_next_tick() {
    for kind in [PolicyKind::Cfs, PolicyKind::Eevdf, PolicyKind::Credit] {
        // Each 0.9 ms cycle runs 0.6 ms after a tick and sleeps to the next one.
        assert_one_wakeup_per_tick(kind, 600 * US, 300 * US);
    }
}

#[test]
fn a_tick_does_not_switch_to_a_charged_wakee_sooner() {
    let (d, sleepy) = hog_and_sleeper(3_700 * US);
    for kind in [PolicyKind::Cfs, PolicyKind::Eevdf] {
        let evs = events_of(
            kind,
            &d,
            1,
            &Params::parse(&["sleep_on_tick=true", "dispatch_preempt=50us"]).unwrap(),
        );
        let waits = wake_to_switch(&evs, sleepy);
        assert!(waits.len() > 50, "{kind:?}: {waits:?}");
        assert!(waits.iter().all(|&w| w >= 50 * US), "{kind:?}: {waits:?}");
    }
}
