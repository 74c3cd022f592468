//! Properties that hold for any input: no panic on any event order, time accounting never
//! exceeds elapsed time, pCPU occupancy covers exactly the time the pCPU was observed.

use model::synth::*;
use model::*;
use proptest::prelude::*;

const TIDS: [u32; 6] = [0, 1, 2, 3, 4, 500];

fn any_event() -> impl Strategy<Value = Event> {
    let ts = 0u64..50_000_000;
    let cpu = prop_oneof![8 => 0u32..3, 1 => Just(u32::MAX), 1 => Just(5000u32)];
    let tid = proptest::sample::select(TIDS.to_vec());
    prop_oneof![
        6 => (ts.clone(), cpu.clone(), tid.clone(), tid.clone(), any::<bool>(), any::<bool>(), 0u64..1_000_000_000)
            .prop_map(|(ts, cpu, p, n, sleep, with_se, vr)| {
                let mut s = Switch::new(ts, cpu, p, n);
                if sleep { s = s.sleeping(); }
                if with_se { s = s.prev_se(se(vr, 1024, vr)).next_se(se(vr / 2, 335, vr / 3)); }
                s.build()
            }),
        2 => (ts.clone(), cpu.clone(), tid.clone(), cpu.clone()).prop_map(|(ts, c, t, tc)| wakeup(ts, c, t, tc)),
        1 => (ts.clone(), tid.clone(), cpu.clone(), cpu.clone()).prop_map(|(ts, t, a, b)| migrate(ts, t, a, b)),
        1 => (ts.clone(), cpu.clone(), tid.clone()).prop_map(|(ts, c, t)| kvm_entry(ts, c, t)),
        1 => (ts.clone(), cpu.clone(), tid.clone(), 0u32..100).prop_map(|(ts, c, t, r)| kvm_exit(ts, c, t, ExitIsa::Vmx, r)),
        1 => (ts.clone(), cpu.clone(), tid.clone(), 0u32..50).prop_map(|(ts, c, t, r)| userspace_exit(ts, c, t, r)),
        1 => (ts.clone(), 0u64..5_000_000, tid.clone()).prop_map(|(s, d, t)| guest_gap(s, s.saturating_add(d), t, 0, 0)),
        1 => (ts.clone(), ts.clone(), tid.clone()).prop_map(|(s, e, t)| guest_gap(s, e, t, 0, 0)),
        1 => (ts.clone(), cpu.clone(), 0u64..100).prop_map(|(ts, c, n)| lost(ts, c, n)),
        1 => (ts.clone(), cpu.clone(), tid.clone()).prop_map(|(ts, c, t)| task_exit(ts, c, t)),
        1 => (ts.clone(), tid.clone(), 100u32..103, -20i32..20).prop_map(|(ts, t, pid, nice)| {
            task_info(ts, t, pid, &format!("vm{}", pid - 100), Some(t), nice)
        }),
        1 => (ts.clone(), 100u32..103).prop_map(|(ts, pid)| vm_ended(ts, pid, &format!("vm{}", pid - 100))),
        1 => ts.clone().prop_map(|ts| Event::ObservationEnd(ObservationEnd { ts })),
        1 => (ts.clone(), cpu.clone(), 0u64..3, any::<bool>(), tid.clone()).prop_map(|(ts, c, csd, q, t)| {
            vmclear(ts, c, if q { CrossCallPhase::Queue } else { CrossCallPhase::Exit }, csd, 0, t)
        }),
    ]
}

fn check(s: &Snapshot) {
    for v in &s.vcpus {
        let sum = v.run_ns as u128 + v.wait_ns as u128 + v.sleep_ns as u128;
        assert!(
            sum <= v.elapsed_ns as u128,
            "tid {}: {sum} > {}",
            v.tid,
            v.elapsed_ns
        );
        assert!(v.cpu_share.is_finite() && v.cpu_share <= 1.0 + 1e-9);
        assert!(v.entitled_share.is_finite() && v.entitled_share >= 0.0);
    }
    for p in &s.pcpus {
        let covered: u64 = p.lane.iter().map(|l| l.end - l.start).sum();
        let first = p.lane.first().map_or(s.ts, |l| l.start);
        assert_eq!(
            covered,
            s.ts - first,
            "cpu {}: lane has gaps or overlaps",
            p.cpu
        );
        for w in p.lane.windows(2) {
            assert_eq!(w[0].end, w[1].start, "cpu {}: lane not contiguous", p.cpu);
        }
        for o in [&p.occupancy_1s, &p.occupancy_10s, &p.occupancy_run] {
            let total = o.idle
                + o.vms.iter().map(|x| x.1).sum::<f64>()
                + o.others.iter().map(|x| x.1).sum::<f64>();
            assert!(
                total == 0.0 || (total - 1.0).abs() < 1e-9,
                "cpu {}: occupancy sums to {total}",
                p.cpu
            );
        }
    }
    assert!(s.fairness.is_finite());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_panic_and_invariants_hold_on_random_events(evs in proptest::collection::vec(any_event(), 0..300)) {
        let mut m = Model::default();
        for e in &evs {
            m.ingest(e);
        }
        check(&m.snapshot());
        m.finish();
        for w in [Window::WholeRun, Window::LastSecond, Window::LastTenSeconds] {
            check(&m.snapshot_window(w));
        }
    }

    #[test]
    fn batches_fold_exactly_like_single_events(
        evs in proptest::collection::vec(any_event(), 0..300),
        cut in 1usize..64,
    ) {
        let mut one = Model::default();
        evs.iter().for_each(|e| one.ingest(e));
        one.finish();
        let mut batched = Model::default();
        for chunk in evs.chunks(cut) {
            batched.ingest_batch(chunk);
        }
        batched.finish();
        prop_assert_eq!(
            serde_json::to_string(&one.snapshot()).unwrap(),
            serde_json::to_string(&batched.snapshot()).unwrap()
        );
    }

    #[test]
    fn sorted_random_events_hold_invariants(mut evs in proptest::collection::vec(any_event(), 0..300)) {
        evs.sort_by_key(Event::ts);
        let mut m = Model::default();
        m.ingest_batch(&evs);
        m.finish();
        let s = m.snapshot();
        check(&s);
        prop_assert_eq!(s.health.out_of_order, 0);
    }

    #[test]
    fn demo_streams_in_any_batching_agree(cut in 1usize..5000, seconds in 0.1f64..1.5) {
        let evs = demo_stream(seconds);
        let mut a = Model::default();
        a.ingest_batch(&evs);
        a.finish();
        let mut b = Model::default();
        for chunk in evs.chunks(cut) {
            b.ingest_batch(chunk);
        }
        b.finish();
        let (sa, sb) = (a.snapshot(), b.snapshot());
        check(&sa);
        prop_assert_eq!(serde_json::to_string(&sa).unwrap(), serde_json::to_string(&sb).unwrap());
    }
}

/// Found by CI: a guest gap met in the middle of an in-order batch, while an earlier event
/// of the batch is still inside the reorder window, must be matched against the same model
/// state as when the events arrive one by one.
#[test]
fn a_gap_inside_a_held_run_folds_like_single_events() {
    let evs = [
        Switch::new(8_289_881, 0, 0, 0).build(),
        task_info(10_289_881, 4, 100, "vm0", Some(4), 0),
        guest_gap(0, 0, 4, 0, 0),
        Switch::new(12_289_881, 0, 0, 0).build(),
    ];
    let mut one = Model::default();
    evs.iter().for_each(|e| one.ingest(e));
    one.finish();
    for cut in 1..=evs.len() {
        let mut batched = Model::default();
        evs.chunks(cut).for_each(|c| batched.ingest_batch(c));
        batched.finish();
        assert_eq!(
            serde_json::to_string(&one.snapshot()).unwrap(),
            serde_json::to_string(&batched.snapshot()).unwrap(),
            "cut {cut}"
        );
    }
}
