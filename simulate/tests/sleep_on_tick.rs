//! Sleeps that ended on the tick: a recording whose sleepers were woken by their pCPU's tick
//! (a host without high-resolution timers, as the kernel lab's emulated kernels) has its
//! sleeps end on the tick in the replay by default, so two sleepers woken by one tick keep
//! waking together whatever their bursts did in between; `--param sleep_on_tick=false`
//! replays them as recorded; a tick never switches to a charged wakee sooner than its
//! dispatch delay; a slice check picks with the tick's sleepers queued.

use model::demand::Demand;
use model::Event;
use simulate::synthetic::{demand, Spec};
use simulate::{simulate, Params, PolicyKind};

const MS: u64 = 1_000_000;
const US: u64 = 1_000;
/// The Linux policies' default tick without a recorded HZ (250 Hz).
const TICK: u64 = 4 * MS;

fn events_of(kind: PolicyKind, d: &Demand, pcpus: u32, params: &[&str]) -> Vec<Event> {
    simulate(kind, d, pcpus, &Params::parse(params).unwrap())
        .unwrap()
        .0
}

/// For each wakeup of `tid`: its time since the demand's start and the time to its next
/// switch-in.
fn wakeups(evs: &[Event], d: &Demand, tid: u32) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut woke = None;
    for e in evs {
        match e {
            Event::Wakeup(w) if w.tid == tid => woke = Some(w.ts - d.start),
            Event::SchedSwitch(s) if s.next_tid == tid => {
                if let Some(w) = woke.take() {
                    out.push((w, s.ts - d.start - w));
                }
            }
            _ => {}
        }
    }
    out
}

/// Two sleepers recorded on two pCPUs, each woken by its pCPU's tick (both at its start)
/// 50 and 60 us after it, running 400-900 us: what 6.12's interactive vCPUs look like.
fn two_sleepers() -> (Demand, [u32; 2]) {
    let span = 400 * MS;
    let d = demand(
        &[
            Spec::on_tick(0, &[400 * US, 900 * US], TICK, 50 * US, 0, span),
            Spec::on_tick(0, &[700 * US, 500 * US], TICK, 60 * US, 1, span),
        ],
        2,
        span,
    );
    let tids = [d.threads[0].tid, d.threads[1].tid];
    (d, tids)
}

/// Replayed on one pCPU, the sleepers share its tick: each wakes on it, 50 or 60 us after
/// it, and one waits for the other's burst at most ticks. Replayed as recorded
/// (`sleep_on_tick=false`), the one that waited ends its sleep that much later and they
/// drift apart.
#[test]
fn two_sleepers_woken_by_one_tick_keep_waking_together() {
    let (d, tids) = two_sleepers();
    for kind in [PolicyKind::Cfs, PolicyKind::Eevdf, PolicyKind::Credit] {
        let evs = events_of(kind, &d, 1, &[]);
        let on_tick = |w: &[(u64, u64)]| {
            w.iter()
                .skip(1) // the first wakeup is the thread's start, not the end of a sleep
                .filter(|(at, _)| [50 * US, 60 * US].contains(&(at % TICK)))
                .count()
        };
        let waited_a_burst = |evs: &[Event]| {
            tids.iter()
                .flat_map(|&tid| wakeups(evs, &d, tid))
                .filter(|(_, wait)| *wait >= 350 * US)
                .count()
        };
        for tid in tids {
            let w = wakeups(&evs, &d, tid);
            assert!(w.len() > 80, "{kind:?}: {w:?}");
            assert_eq!(on_tick(&w), w.len() - 1, "{kind:?}: off the tick: {w:?}");
        }
        // 100 ticks: at most of them one sleeper waits for the other's burst.
        let waited = waited_a_burst(&evs);
        assert!(waited >= 70, "{kind:?}: {waited}");

        let evs = events_of(kind, &d, 1, &["sleep_on_tick=false"]);
        // The first to run keeps its phase; the other drifts off it, and neither waits.
        let w = wakeups(&evs, &d, tids[1]);
        assert!(on_tick(&w) < w.len() / 2, "{kind:?}: {w:?}");
        let waited = waited_a_burst(&evs);
        assert!(waited < 10, "{kind:?}: {waited}");
    }
}

/// Recorded on one pCPU beside a CPU hog, a sleeper woken by the tick preempts the hog at
/// each wakeup: charged 50 us, no tick (its wakeups come 10 us after one) switches to it
/// sooner.
#[test]
fn a_tick_does_not_switch_to_a_charged_wakee_sooner() {
    let span = 500 * MS;
    let d = demand(
        &[
            Spec::hog(0, 0, span),
            Spec::on_tick(1, &[200 * US, 300 * US], TICK, 10 * US, 0, span),
        ],
        1,
        span,
    );
    let sleepy = d.tracked().nth(1).unwrap().tid;
    for kind in [PolicyKind::Cfs, PolicyKind::Eevdf] {
        let evs = events_of(kind, &d, 1, &["dispatch_preempt=50us"]);
        let w = wakeups(&evs, &d, sleepy);
        assert!(w.len() > 50, "{kind:?}: {w:?}");
        assert!(
            w.iter().all(|(_, wait)| *wait >= 50 * US),
            "{kind:?}: {w:?}"
        );
    }
}

/// The lengths of `tid`'s runs: from each switch to it to the switch away from it.
fn runs(evs: &[Event], tid: u32) -> Vec<u64> {
    let mut out = Vec::new();
    let mut began = None;
    for e in evs {
        if let Event::SchedSwitch(s) = e {
            if s.prev_tid == tid {
                if let Some(b) = began.take() {
                    out.push(s.ts - b);
                }
            }
            if s.next_tid == tid {
                began = Some(s.ts);
            }
        }
    }
    out
}

/// Recorded on one pCPU: two CPU hogs, a nice-10 hog (a slice well under a tick) and a sleeper
/// woken 100 us after each tick. The kernel wakes the tick's sleepers in the tick's
/// interrupt and switches on its way out, so the task its slice check makes way for is
/// picked with the sleeper queued, and the light hog, once picked, runs to the next tick.
/// The replay checks slices after the window in which it wakes the tick's sleepers: no run
/// of the light hog is cut by a sleeper woken right after it was picked. Checked on the
/// tick itself (`tick_phase=false`, the grid from time 0, which is this demand's phase),
/// `cfs` picks the light hog on the tick and the sleeper preempts it 100 us later.
#[test]
fn a_slice_check_picks_with_the_ticks_sleepers_queued() {
    let span = 2_000 * MS;
    let light = Spec::hog(1, 10, span);
    let d = demand(
        &[
            Spec::hog(0, 0, span),
            Spec::hog(0, 0, span),
            light,
            Spec::on_tick(2, &[600 * US], TICK, 100 * US, 0, span),
        ],
        1,
        span,
    );
    let light = d.threads[2].tid;
    // The light hog's runs under 200 us.
    let short = |kind: PolicyKind, params: &[&str]| {
        let r = runs(&events_of(kind, &d, 1, params), light);
        assert!(r.len() > 10, "{kind:?} {params:?}: {r:?}");
        r.iter().filter(|&&run| run < 200 * US).count()
    };
    for kind in [PolicyKind::Cfs, PolicyKind::Eevdf] {
        assert_eq!(short(kind, &[]), 0, "{kind:?}");
    }
    // EEVDF here picks the light hog after the sleeper's burst either way.
    let on_the_tick = short(PolicyKind::Cfs, &["tick_phase=false"]);
    assert!(on_the_tick > 10, "{on_the_tick}");
}
