//! EEVDF's wakeup path: the enqueue's `update_curr` reschedules a running entity that has
//! used its request (`update_deadline` in 6.6, `update_curr` in 6.12), whichever entity the
//! pick then takes, rather than leaving it to the next tick.

use model::Event;
use simulate::synthetic::{demand, Spec};
use simulate::{simulate, Params, PolicyKind};

const MS: u64 = 1_000_000;
const US: u64 = 1_000;
/// The Linux policies' default tick without a recorded HZ (250 Hz).
const TICK: u64 = 4 * MS;

/// Two hogs and a nice-19 sleeper on one pCPU: the sleeper's deadline (its slice is 68 times
/// a nice-0 one's in virtual time) is never the earliest, so its wakeups never preempt by
/// themselves; a hog past its deadline when one comes is switched for the other hog there
/// and then. Without the rule hogs change only on the tick.
#[test]
fn a_wakeup_switches_out_a_running_entity_that_has_used_its_slice() {
    let span = 400 * MS;
    let d = demand(
        &[
            Spec::hog(0, 0, span),
            Spec::hog(0, 0, span),
            Spec::periodic(1, 19, 20 * US, 1_300 * US, span),
        ],
        1,
        span,
    );
    let hogs: Vec<u32> = d.tracked().take(2).map(|t| t.tid).collect();
    let (evs, _) = simulate(
        PolicyKind::Eevdf,
        &d,
        1,
        &Params::parse::<&str>(&[]).unwrap(),
    )
    .unwrap();
    let (mut on_tick, mut off_tick) = (0, 0);
    for e in &evs {
        if let Event::SchedSwitch(s) = e {
            if hogs.contains(&s.prev_tid) && hogs.contains(&s.next_tid) {
                if (s.ts - d.start) % TICK == 0 {
                    on_tick += 1;
                } else {
                    off_tick += 1;
                }
            }
        }
    }
    assert!(
        off_tick > 10,
        "hog to hog: {on_tick} on a tick, {off_tick} at wakeups"
    );
    // cfs has no such rule: its hogs change on the tick only.
    let (evs, _) = simulate(PolicyKind::Cfs, &d, 1, &Params::parse::<&str>(&[]).unwrap()).unwrap();
    let off_tick_cfs = evs
        .iter()
        .filter(|e| {
            matches!(e, Event::SchedSwitch(s) if hogs.contains(&s.prev_tid)
                && hogs.contains(&s.next_tid) && (s.ts - d.start) % TICK != 0)
        })
        .count();
    assert_eq!(off_tick_cfs, 0);
}
