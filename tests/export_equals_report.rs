//! The Perfetto and Chrome exports draw the model's transitions, so each thread's time per
//! state, switch count, resume count and resume p50 in them equal `report --json` on the same
//! file exactly: on the synthetic demo (guest gaps, and kvm_entry on a VMX host), and on a
//! stream with reordering, late events, lost events and thread exits.

mod common;
mod export_figures;
mod trace_file_synth;

use std::path::{Path, PathBuf};

use model::synth::{demo_stream, demo_stream_vmx, lost, task_exit, vm_ended};
use model::trace_file::TraceWriter;
use model::Event;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvmscope-export-eq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn record(path: &Path, events: &[Event]) {
    let header = trace_file_synth::header_for(events);
    let mut w = TraceWriter::new(std::fs::File::create(path).unwrap(), &header).unwrap();
    for e in events {
        w.write(e).unwrap();
    }
    w.finish().unwrap();
}

fn check(name: &str, events: &[Event]) {
    let path = scratch(name);
    record(&path, events);
    export_figures::assert_exports_equal_report(&path);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn exports_equal_the_report_on_the_demo_with_guest_gaps() {
    check("demo.trace", &demo_stream(2.0));
}

#[test]
fn exports_equal_the_report_on_a_vmx_host() {
    check("vmx.trace", &demo_stream_vmx(2.0));
}

#[test]
fn exports_equal_the_report_with_reordering_losses_and_exits() {
    let mut evs = demo_stream(2.0);
    // Per-CPU streams interleave out of order: reverse runs of 8 events (a few µs to ms,
    // inside the reorder window).
    for chunk in evs.chunks_mut(8).skip(1) {
        chunk.reverse();
    }
    // One event 200 ms late (past the window: folded in late and counted).
    let late = evs.len() / 2;
    let e = evs.remove(late);
    let at = evs.partition_point(|x| x.ts() <= e.ts() + 200_000_000);
    evs.insert(at, e);
    let infos: Vec<(u32, u32, String)> = evs
        .iter()
        .filter_map(|e| match e {
            Event::TaskInfo(t) if t.vcpu.is_some() => Some((t.tid, t.pid, t.vm.clone())),
            _ => None,
        })
        .collect();
    assert!(infos.len() >= 2);
    let end = evs.iter().map(Event::ts).max().unwrap();
    // Losses on both pCPUs, a vCPU thread exiting, and a whole VM ending before the end.
    for (i, frac) in [(0u32, 0.3), (1, 0.6)] {
        let ts = (end as f64 * frac) as u64;
        let at = evs.partition_point(|x| x.ts() <= ts);
        evs.insert(at, lost(ts, i, 17));
    }
    let (tid, _, _) = &infos[0];
    let ts = end / 2;
    let at = evs.partition_point(|x| x.ts() <= ts);
    evs.insert(at, task_exit(ts, 0, *tid));
    let (_, pid, vm) = infos.last().unwrap();
    let ts = end / 10 * 8;
    let at = evs.partition_point(|x| x.ts() <= ts);
    evs.insert(at, vm_ended(ts, *pid, vm));
    check("odd.trace", &evs);
}
