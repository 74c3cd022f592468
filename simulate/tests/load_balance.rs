//! The fair policies balance pCPUs by load, not only by how many threads wait: a pCPU whose
//! one thread is light (nice 19) takes one of two nice-0 threads queued on the other pCPU,
//! which a pull by count (only past a difference of two) never does.

use model::demand::AffinitySpan;
use model::{Event, Model, ModelConfig};
use simulate::synthetic::{demand, Spec};
use simulate::{build, run, Params, PolicyKind};

const MS: u64 = 1_000_000;

/// CPU share of each tracked thread of `d` (demand order) in a `kind` run with `params`.
fn shares(kind: PolicyKind, params: &[&str]) -> Vec<f64> {
    let span = 2_000 * MS;
    // Both nice-0 hogs start on pCPU 0 (pinned for the first 10 ms), the nice-19 hog on
    // pCPU 1 throughout.
    let start_on_0 = vec![
        AffinitySpan {
            at_ns: 0,
            cpus: vec![0],
        },
        AffinitySpan {
            at_ns: 10 * MS,
            cpus: vec![0, 1],
        },
    ];
    let mut a = Spec::hog(0, 0, span);
    a.affinity = start_on_0.clone();
    let mut b = Spec::hog(0, 0, span);
    b.affinity = start_on_0;
    let light = Spec::hog(1, 19, span).on(&[1]);
    let d = demand(&[a, b, light], 2, span);
    let p = Params::parse(params).unwrap();
    let built = build(kind, &d, 2, &p).unwrap();
    p.check_all_used(&[kind.name()]).unwrap();
    let mut evs: Vec<Event> = Vec::new();
    run(built, &d, 2, &mut |e| evs.push(e.clone()));
    let mut m = Model::new(ModelConfig::report());
    m.ingest_batch(&evs);
    m.finish();
    let snap = m.snapshot();
    d.tracked()
        .map(|t| {
            let v = snap.vcpus.iter().find(|v| v.tid == t.tid).unwrap();
            v.run_ns as f64 / d.span_ns() as f64
        })
        .collect()
}

#[test]
fn a_pcpu_with_only_a_light_thread_takes_a_queued_nice0_thread() {
    for kind in [PolicyKind::Cfs, PolicyKind::Eevdf] {
        let by_load = shares(kind, &[]);
        assert!(
            by_load[0] > 0.9 && by_load[1] > 0.9,
            "{kind:?} by load: {by_load:?}"
        );
        // By count alone (2 against 1) nothing moves: the nice-0 hogs share pCPU 0.
        let by_count = shares(kind, &["balance_load=false"]);
        assert!(
            by_count[0] < 0.6 && by_count[1] < 0.6 && by_count[2] > 0.9,
            "{kind:?} by count: {by_count:?}"
        );
    }
}
