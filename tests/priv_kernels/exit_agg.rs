//! Issue #15 goal 2 on a matrix kernel: exits aggregated in the kernel equal the exits
//! streamed in the same run (`trace --exits both`), per vCPU thread, isa and reason, and so do
//! port I/O exits per vCPU thread, port and direction; and the BPF cost per exit of streaming
//! and of aggregating (`kernel.bpf_stats_enabled`).

use std::collections::BTreeMap;

use lab::results::Results;
use serde_json::Value;

use super::common::port_io::{aggregated as port_io_aggregated, streamed as port_io_streamed};
use super::{lines, u};

type Key = (u64, String, u64);

fn summary_of<'a>(events: &'a [Value], step: &str, ctx: &dyn Fn(&str) -> String) -> &'a Value {
    let s = events.last().expect("trace lines");
    assert_eq!(
        s["type"],
        "summary",
        "{}",
        ctx(&format!("{step}: no summary line last"))
    );
    assert_eq!(
        s["lost"],
        0,
        "{}",
        ctx(&format!("{step}: events lost: {s}"))
    );
    s
}

fn aggregated(summary: &Value) -> BTreeMap<Key, u64> {
    let mut out = BTreeMap::new();
    for a in summary["exit_aggregates"].as_array().into_iter().flatten() {
        let key = (
            u(a, "tid"),
            a["isa"].as_str().unwrap_or("").to_string(),
            u(a, "reason"),
        );
        *out.entry(key).or_default() += u(a, "count");
    }
    out
}

/// One program's run time (ns) and runs in a summary's `bpf_stats`.
fn bpf_stat(summary: &Value, event: &str) -> Option<(u64, u64)> {
    summary["bpf_stats"]
        .as_array()?
        .iter()
        .find(|s| s["event"] == event)
        .map(|s| (u(s, "run_time_ns"), u(s, "run_count")))
}

/// kvm_exit + kvm_entry run time per kvm_exit run, ns (the programs' whole cost per exit).
fn ns_per_exit(summary: &Value) -> Option<f64> {
    let (exit_ns, exits) = bpf_stat(summary, "kvm:kvm_exit")?;
    let (entry_ns, _) = bpf_stat(summary, "kvm:kvm_entry")?;
    (exits > 0).then(|| (exit_ns + entry_ns) as f64 / exits as f64)
}

/// kvm_pio run time per run, ns.
fn ns_per_pio(summary: &Value) -> Option<f64> {
    let (ns, runs) = bpf_stat(summary, "kvm:kvm_pio")?;
    (runs > 0).then(|| ns as f64 / runs as f64)
}

pub fn exit_agg_step(r: &Results, ctx: &dyn Fn(&str) -> String) -> String {
    let both = lines(
        r.ok("trace.both")
            .unwrap_or_else(|e| panic!("{}", ctx(&e.to_string()))),
    );
    let summary = summary_of(&both, "trace --exits both", ctx);
    let mut streamed: BTreeMap<Key, u64> = BTreeMap::new();
    for e in both.iter().filter(|e| e["type"] == "kvm_exit") {
        let key = (
            u(e, "tid"),
            e["isa"].as_str().unwrap_or("").to_string(),
            u(e, "reason"),
        );
        *streamed.entry(key).or_default() += 1;
    }
    let agg = aggregated(summary);
    assert!(
        !streamed.is_empty(),
        "{}",
        ctx("trace --exits both: no kvm_exit streamed")
    );
    assert_eq!(
        agg,
        streamed,
        "{}",
        ctx("trace --exits both: aggregated exits (tid, isa, reason) -> count differ from the streamed ones")
    );
    let pio_agg = port_io_aggregated(summary);
    let pio_streamed = port_io_streamed(&both);
    assert!(
        !pio_streamed.is_empty(),
        "{}",
        ctx("trace --exits both: no pio streamed")
    );
    assert_eq!(
        pio_agg,
        pio_streamed,
        "{}",
        ctx("trace --exits both: aggregated port I/O (tid, port, rw) -> count differ from the streamed ones")
    );
    let pio_total: u64 = pio_agg.values().sum();
    let total: u64 = agg.values().sum();
    let vcpus = agg
        .keys()
        .map(|k| k.0)
        .collect::<std::collections::BTreeSet<_>>()
        .len();

    let only = lines(
        r.ok("trace.agg")
            .unwrap_or_else(|e| panic!("{}", ctx(&e.to_string()))),
    );
    let agg_summary = summary_of(&only, "trace --exits aggregate", ctx);
    let agg_only: u64 = aggregated(agg_summary).values().sum();
    let exit_events = only.iter().filter(|e| e["type"] == "kvm_exit").count();
    let entry_events = only.iter().filter(|e| e["type"] == "kvm_entry").count() as u64;
    assert_eq!(
        exit_events,
        0,
        "{}",
        ctx("trace --exits aggregate: kvm_exit events streamed")
    );
    let pio_events = port_io_streamed(&only).values().sum::<u64>();
    let pio_only: u64 = port_io_aggregated(agg_summary).values().sum();
    assert!(
        pio_events == 0 && pio_only > 0,
        "{}",
        ctx(&format!(
            "trace --exits aggregate: {pio_events} pio events streamed, {pio_only} aggregated"
        ))
    );
    assert!(
        agg_only > 0 && entry_events < agg_only,
        "{}",
        ctx(&format!(
            "trace --exits aggregate: {agg_only} exits aggregated, {entry_events} entries streamed"
        ))
    );
    let stream = r.ok("trace").ok().map(lines);
    let stream_ns = stream.as_ref().and_then(|l| l.last()).and_then(ns_per_exit);
    let cost = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{v:.0}"));
    format!(
        "exits both: aggregated = streamed for {} keys over {vcpus} vCPUs ({total} exits), \
         port I/O for {} keys ({pio_total}); aggregate only: {agg_only} exits, {pio_only} \
         port I/O, {entry_events} entries streamed; BPF ns per exit \
         (kvm_exit+kvm_entry): stream {}, aggregate {}, both {}; BPF ns per kvm_pio: stream {}, \
         aggregate {}, both {}",
        agg.len(),
        pio_agg.len(),
        cost(stream_ns),
        cost(ns_per_exit(agg_summary)),
        cost(ns_per_exit(summary)),
        cost(stream.as_ref().and_then(|l| l.last()).and_then(ns_per_pio)),
        cost(ns_per_pio(agg_summary)),
        cost(ns_per_pio(summary))
    )
}
