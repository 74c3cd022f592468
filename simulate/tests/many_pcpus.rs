//! Hosts past 128 pCPUs (#15): every policy simulates a 256-pCPU host with threads pinned,
//! and moved, past pCPU 128; the pCPU count is refused in one line only past the model's
//! bound on CPU numbers, which measures every simulated run.

use model::{Event, Model, ModelConfig};
use simulate::engine::MAX_PCPUS;
use simulate::synthetic::{demand, Spec};
use simulate::{build, run, Params, PolicyKind};

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

/// The pCPUs `tid` was switched in on, lowest first.
fn placements(evs: &[Event], tid: u32) -> Vec<u32> {
    let mut cpus: Vec<u32> = evs
        .iter()
        .filter_map(|e| match e {
            Event::SchedSwitch(s) if s.next_tid == tid => Some(s.cpu),
            _ => None,
        })
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

#[test]
fn every_policy_simulates_256_pcpus_with_threads_pinned_past_128() {
    let span = S;
    let pcpus = 256;
    let specs = vec![
        // Alone on pCPUs the old 128-bit masks could not name (200 would have been 72).
        Spec::hog(0, 0, span).on(&[200]),
        Spec::hog(0, 0, span).on(&[255]),
        Spec::periodic(1, 0, 2 * MS, MS, span).on(&[129]),
        // Moved between a pCPU below 128 and one above every 100 ms.
        Spec::hog(1, 0, span).rotating(&[5, 250], 100 * MS, span),
        // Free to run anywhere.
        Spec::periodic(2, 0, MS, MS, span),
        Spec::hog(2, 5, span),
    ];
    let d = demand(&specs, pcpus, span);
    let tid = |k: usize| d.threads[k].tid;
    for kind in PolicyKind::ALL {
        let p = Params::default();
        let built = build(kind, &d, pcpus, &p).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let mut evs = Vec::new();
        run(built, &d, pcpus, &mut |e| evs.push(e.clone()));
        let name = kind.name();
        assert_eq!(placements(&evs, tid(0)), [200], "{name}");
        assert_eq!(placements(&evs, tid(1)), [255], "{name}");
        assert_eq!(placements(&evs, tid(2)), [129], "{name}");
        assert_eq!(placements(&evs, tid(3)), [5, 250], "{name}");
        assert!(
            placements(&evs, tid(4)).iter().all(|&c| c < pcpus),
            "{name}"
        );
        // Each pinned hog has its pCPU to itself: all of it.
        let mut m = Model::new(ModelConfig::report());
        m.ingest_batch(&evs);
        m.finish();
        let snap = m.snapshot();
        for k in [0, 1] {
            let v = snap.vcpus.iter().find(|v| v.tid == tid(k)).unwrap();
            let share = v.run_ns as f64 / span as f64;
            assert!(
                share > 0.99,
                "{name}: pinned hog {k} ran {share:.3} of its pCPU"
            );
        }
    }
}

#[test]
fn the_pcpu_limit_is_the_models_and_past_it_is_one_line() {
    let span = 10 * MS;
    let d = demand(
        &[Spec::periodic(0, 0, MS, MS, span).on(&[MAX_PCPUS - 1])],
        MAX_PCPUS,
        span,
    );
    assert_eq!(MAX_PCPUS, model::MAX_CPUS);
    for kind in PolicyKind::ALL {
        let built = build(kind, &d, MAX_PCPUS, &Params::default()).unwrap();
        let mut evs = Vec::new();
        run(built, &d, MAX_PCPUS, &mut |e| evs.push(e.clone()));
        assert_eq!(
            placements(&evs, d.threads[0].tid),
            [MAX_PCPUS - 1],
            "{}",
            kind.name()
        );
        // The model that measures the run takes every event of its last pCPU.
        let mut m = Model::new(ModelConfig::report());
        m.ingest_batch(&evs);
        m.finish();
        assert_eq!(m.snapshot().health.malformed, 0, "{}", kind.name());
        let err = build(kind, &d, MAX_PCPUS + 1, &Params::default())
            .err()
            .expect("past the limit is refused")
            .to_string();
        assert_eq!(err, "--pcpus 4097: the simulation needs 1..=4096 pCPUs");
    }
}

/// `--pcpus` above the recording's count with vCPUs pinned to recorded pCPUs (the demo
/// moves each between single pCPUs every 500 ms, after a start free to use both): the
/// added pCPUs run little of them, and the affinity note says so (a user saw the same waits
/// on 4 pCPUs as on 2 and no reason why).
#[test]
fn the_affinity_note_names_simulated_pcpus_the_vcpus_are_kept_off() {
    let span = S;
    let pinned = vec![
        Spec::hog(0, 0, span).rotating(&[0, 1], 100 * MS, span),
        Spec::periodic(1, 0, 2 * MS, MS, span).on(&[1]),
    ];
    let d = demand(&pinned, 2, span);
    let note = simulate::affinity_note(&d, 4);
    assert!(
        note.ends_with(
            "; it keeps every vCPU off simulated pCPUs 2-3 for the whole run, so those run \
             little of them"
        ),
        "{note}"
    );
    let built = build(PolicyKind::Cfs, &d, 4, &Params::default()).unwrap();
    let mut evs = Vec::new();
    run(built, &d, 4, &mut |e| evs.push(e.clone()));
    for k in 0..2 {
        assert!(
            placements(&evs, d.threads[k].tid).iter().all(|&c| c < 2),
            "{note}"
        );
    }
    assert!(!simulate::affinity_note(&d, 2).contains("keeps every vCPU off"));

    // The demo's shape: free to use both recorded pCPUs for its first 100 ms, then pinned.
    let mut demo_like = Spec::hog(0, 0, span).rotating(&[0, 1], 100 * MS, span);
    demo_like.affinity[0].cpus = vec![0, 1];
    let note = simulate::affinity_note(&demand(&[demo_like], 2, span), 4);
    // 100 ms of 1 s free to use them: about 90% off.
    let at_least = note
        .split("off simulated pCPUs 2-3 for at least ")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|p| p.parse::<u32>().ok());
    assert!(at_least.is_some_and(|p| (85..=90).contains(&p)), "{note}");

    let free = vec![
        Spec::hog(0, 0, span),
        Spec::periodic(1, 0, 2 * MS, MS, span),
    ];
    let note = simulate::affinity_note(&demand(&free, 2, span), 4);
    assert!(!note.contains("keeps every vCPU off"), "{note}");
}
