//! Exits folded as kernel aggregates give the figures streamed exits give: counts by reason
//! exactly, handling time within its log2 bucket, resume latency exactly (the kernel still
//! sends the first entry after a switch-in and the entry after a userspace exit).

use model::synth::*;
use model::*;

const US: u64 = 1_000;

/// IO_INSTRUCTION (30) twice, EXTERNAL_INTERRUPT (1), then IO_INSTRUCTION and a userspace
/// exit on the other pCPU.
fn streamed() -> Vec<Event> {
    let io = (ExitIsa::Vmx, 30);
    guest_exits_on_two_pcpus([io, io, (ExitIsa::Vmx, 1), io])
}

/// What the kernel sends with exits aggregated: no kvm_exit, only the entries after a
/// switch-in or a userspace exit.
fn aggregated_stream() -> Vec<Event> {
    let keep = [0usize, 1, 2, 8, 9, 10, 12, 13];
    keep.iter().map(|&i| streamed()[i].clone()).collect()
}

fn hist(pairs: &[(u64, u64)]) -> [u64; EXIT_HIST_BUCKETS] {
    let mut h = [0; EXIT_HIST_BUCKETS];
    for &(ns, n) in pairs {
        h[63 - ns.leading_zeros() as usize] += n;
    }
    h
}

fn vcpu(s: &Snapshot) -> &VcpuSnapshot {
    s.vcpus.iter().find(|v| v.tid == 1).expect("tid 1")
}

#[test]
fn aggregates_give_the_streamed_counts_and_resume_latency() {
    let mut direct = Model::default();
    direct.ingest_batch(&streamed());
    direct.finish();
    let want = direct.snapshot();

    let mut m = Model::default();
    // The aggregate arrives before its thread's announcement is out of the reorder buffer.
    m.fold_exit_aggregates(&[ExitAggregate {
        tid: 1,
        isa: ExitIsa::Vmx,
        reason: 30,
        count: 2,
        handling_log2: hist(&[(5 * US, 1), (3 * US, 1)]),
    }]);
    m.ingest_batch(&aggregated_stream());
    m.fold_exit_aggregates(&[
        // The third IO exit's handling time is the userspace exit's (the model's own).
        ExitAggregate {
            tid: 1,
            isa: ExitIsa::Vmx,
            reason: 30,
            count: 1,
            handling_log2: [0; EXIT_HIST_BUCKETS],
        },
        ExitAggregate {
            tid: 1,
            isa: ExitIsa::Vmx,
            reason: 1,
            count: 1,
            handling_log2: [0; EXIT_HIST_BUCKETS],
        },
        // A thread never announced: counted as unknown, not dropped silently.
        ExitAggregate {
            tid: 77,
            isa: ExitIsa::Vmx,
            reason: 1,
            count: 5,
            handling_log2: [0; EXIT_HIST_BUCKETS],
        },
    ]);
    m.finish();
    let got = m.snapshot();

    let (w, g) = (vcpu(&want), vcpu(&got));
    let counts = |v: &VcpuSnapshot| {
        let mut c: Vec<(String, u64)> = v
            .exits
            .iter()
            .map(|e| (e.reason.clone(), e.count))
            .collect();
        c.sort();
        c
    };
    assert_eq!(counts(g), counts(w));
    assert_eq!(g.resume.same_pcpu, w.resume.same_pcpu);
    assert_eq!(g.resume.migrated, w.resume.migrated);
    assert_eq!(g.resume.source, "kvm_entry");
    // Exit to switch-out needs the last exit's time: streamed only.
    assert_eq!(g.resume.to_switch_out.count, 0);
    let io = |v: &VcpuSnapshot| {
        v.exits
            .iter()
            .find(|e| e.reason == "IO_INSTRUCTION")
            .cloned()
            .unwrap()
    };
    assert_eq!(io(g).latency.count, io(w).latency.count);
    // 3 µs and 5 µs fall in [2048, 4096) and [4096, 8192): shown at 3072 and 6144 ns.
    assert_eq!(io(g).latency.max / 1000, 6);
    let user = |v: &VcpuSnapshot| {
        v.exits
            .iter()
            .find(|e| e.reason == "userspace:IO")
            .cloned()
            .unwrap()
    };
    assert_eq!(user(g).latency, user(w).latency);
    assert_eq!(got.health.aggregated_exits, 4);
    assert_eq!(got.health.unknown_tids, 1);
    assert!(got.health.notes.iter().any(|n| n.contains(
        "aggregated in the kernel (4 exits): counts and log2 handling-time \
                             buckets per vCPU and reason"
    )));
}
