//! A simulated run says each thread's state from its start, as a live recording does (#16):
//! a vCPU the recording saw asleep all along (no burst to replay) is asleep in every
//! policy's run, not in no state (`?`) with a health note that blames the source.

use model::{Model, ModelConfig, VcpuState};
use simulate::synthetic::{demand, Spec};
use simulate::{simulate, Params, PolicyKind};

const MS: u64 = 1_000_000;

#[test]
fn a_vcpu_with_nothing_to_replay_sleeps_all_run_in_every_policy() {
    let span = 100 * MS;
    let mut halted = Spec::hog(0, 0, span);
    halted.bursts.clear();
    let d = demand(&[Spec::periodic(0, 0, MS, MS, span), halted], 1, span);
    let halted_tid = d.threads[1].tid;
    for kind in PolicyKind::ALL {
        let (events, _) = simulate(kind, &d, 1, &Params::default()).unwrap();
        let mut m = Model::new(ModelConfig::report());
        m.ingest_batch(&events);
        m.finish();
        let snap = m.snapshot();
        let v = snap.vcpus.iter().find(|v| v.tid == halted_tid).unwrap();
        assert_eq!(v.state, Some(VcpuState::Sleeping), "{}", kind.name());
        assert!(v.sleep_ns >= span - MS, "{}: {v:?}", kind.name());
        assert!(
            !snap.health.notes.iter().any(|n| n.contains("state '?'")),
            "{}: {:?}",
            kind.name(),
            snap.health.notes
        );
    }
}
