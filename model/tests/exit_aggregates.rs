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

/// The same guest with a port I/O exit streamed after each IO exit.
fn streamed_with_port_io() -> Vec<Event> {
    let mut out = Vec::new();
    for ev in streamed() {
        let io = match &ev {
            Event::KvmExit(e) if e.reason == 30 => Some((e.ts, e.cpu)),
            _ => None,
        };
        out.push(ev);
        if let Some((ts, cpu)) = io {
            out.push(pio(ts, cpu, 1, 0x3f8, 1));
        }
    }
    out
}

#[test]
fn port_io_aggregates_leave_every_figure_as_the_streamed_port_io_does() {
    let mut direct = Model::default();
    direct.ingest_batch(&streamed_with_port_io());
    direct.finish();
    let mut want = direct.snapshot();

    let mut m = Model::default();
    // Before its thread's announcement, like an exit aggregate.
    m.fold_aggregates(&ExitAggregates {
        exits: Vec::new(),
        port_io: vec![PortIoAggregate {
            tid: 1,
            port: 0x3f8,
            rw: 1,
            count: 2,
        }],
    });
    m.ingest_batch(&streamed());
    m.fold_aggregates(&ExitAggregates {
        exits: Vec::new(),
        port_io: vec![
            PortIoAggregate {
                tid: 1,
                port: 0x3f8,
                rw: 1,
                count: 1,
            },
            // A thread never announced: counted as unknown, not dropped silently.
            PortIoAggregate {
                tid: 77,
                port: 0x80,
                rw: 0,
                count: 4,
            },
        ],
    });
    m.finish();
    let mut got = m.snapshot();

    // What differs: how many events crossed, the aggregated count beside it and the thread
    // that was never announced. Everything else is the same, figure by figure.
    assert_eq!(want.health.events - got.health.events, 3);
    assert_eq!(got.health.aggregated_port_io, 3);
    assert_eq!(got.health.unknown_tids, 1);
    for s in [&mut want, &mut got] {
        s.health = Health::default();
        s.events_per_second = 0.0;
    }
    assert_eq!(
        serde_json::to_value(&got).expect("serialize"),
        serde_json::to_value(&want).expect("serialize")
    );
}
