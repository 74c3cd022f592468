//! Per-thread figures read back from a Perfetto or Chrome export, and `report --json` on the
//! same recording, for the test that they agree exactly.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use export::perfetto_protos::trace::Trace;
use export::perfetto_protos::trace_packet::trace_packet::Data;
use export::perfetto_protos::track_event::track_event::Type;
use export::protobuf::Message;
use model::{Latency, VcpuState};

use super::common::kvmscope;

/// What the test compares, per thread (by tid).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    pub run_ns: u64,
    pub wait_ns: u64,
    pub sleep_ns: u64,
    pub switches: u64,
    pub resume_same: (u64, u64),
    pub resume_migrated: (u64, u64),
}

fn states() -> [VcpuState; 5] {
    [
        VcpuState::InGuest,
        VcpuState::Running,
        VcpuState::InVmm,
        VcpuState::Waiting,
        VcpuState::Sleeping,
    ]
}

fn add_state(f: &mut Figures, name: &str, ns: u64) {
    for s in states() {
        if s.name() == name {
            match s {
                VcpuState::Waiting => f.wait_ns += ns,
                VcpuState::Sleeping => f.sleep_ns += ns,
                _ => f.run_ns += ns,
            }
        }
    }
}

fn summary(l: &Latency) -> (u64, u64) {
    let p = l.percentiles();
    (p.count, p.p50)
}

/// `kvmscope report --json FILE`: per tracked thread.
pub fn report(trace: &Path) -> BTreeMap<u32, Figures> {
    let o = kvmscope()
        .arg("report")
        .arg("--json")
        .arg(trace)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let u = |v: &serde_json::Value| v.as_u64().unwrap();
    doc["vcpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let r = &v["resume"];
            (
                u(&v["tid"]) as u32,
                Figures {
                    run_ns: u(&v["run_ns"]),
                    wait_ns: u(&v["wait_ns"]),
                    sleep_ns: u(&v["sleep_ns"]),
                    switches: u(&v["switches"]),
                    resume_same: (u(&r["same_pcpu"]["count"]), u(&r["same_pcpu"]["p50"])),
                    resume_migrated: (u(&r["migrated"]["count"]), u(&r["migrated"]["p50"])),
                },
            )
        })
        .collect()
}

pub fn export(trace: &Path, format: &str, out: &Path) {
    let o = kvmscope()
        .arg("export")
        .arg(trace)
        .args(["--format", format, "--force", "-o"])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Per thread from a Perfetto export: state slices, the switch counter's last value, the
/// resume latency counters' values.
pub fn perfetto(path: &Path) -> BTreeMap<u32, Figures> {
    let trace = Trace::parse_from_bytes(&std::fs::read(path).unwrap()).unwrap();
    // State tracks are thread tracks named "LABEL state"; counters are "LABEL what".
    let mut state_tid: BTreeMap<u64, u32> = BTreeMap::new();
    let mut label_tid: BTreeMap<String, u32> = BTreeMap::new();
    let mut counter: BTreeMap<u64, String> = BTreeMap::new();
    for p in &trace.packet {
        if let Some(Data::TrackDescriptor(td)) = &p.data {
            if let Some(t) = td.thread.as_ref() {
                state_tid.insert(td.uuid(), t.tid() as u32);
                let label = td.name().strip_suffix(" state").unwrap().to_string();
                label_tid.insert(label, t.tid() as u32);
            } else if td.counter.is_some() {
                counter.insert(td.uuid(), td.name().to_string());
            }
        }
    }
    let counter_of = |uuid: u64| -> Option<(u32, &'static str)> {
        let name = counter.get(&uuid)?;
        for what in [
            "switches",
            "resume latency (same pCPU)",
            "resume latency (migrated)",
        ] {
            if let Some(label) = name.strip_suffix(&format!(" {what}")) {
                return Some((label_tid[label], what));
            }
        }
        None
    };
    let mut out: BTreeMap<u32, Figures> = BTreeMap::new();
    let mut lat: BTreeMap<(u32, &str), Latency> = BTreeMap::new();
    let mut open: BTreeMap<u64, (u64, String)> = BTreeMap::new();
    for p in &trace.packet {
        let Some(Data::TrackEvent(te)) = &p.data else {
            continue;
        };
        let (uuid, ts) = (te.track_uuid(), p.timestamp());
        match te.type_() {
            Type::TYPE_SLICE_BEGIN if state_tid.contains_key(&uuid) => {
                open.insert(uuid, (ts, te.name().to_string()));
            }
            Type::TYPE_SLICE_END if state_tid.contains_key(&uuid) => {
                let (start, name) = open.remove(&uuid).expect("an end has its begin");
                let f = out.entry(state_tid[&uuid]).or_default();
                add_state(f, &name, ts - start);
            }
            Type::TYPE_COUNTER => match counter_of(uuid) {
                Some((tid, "switches")) => {
                    let f = out.entry(tid).or_default();
                    f.switches = f.switches.max(te.counter_value() as u64);
                }
                Some((tid, what)) => {
                    lat.entry((tid, what))
                        .or_default()
                        .record(te.counter_value() as u64);
                }
                None => {}
            },
            _ => {}
        }
    }
    assert!(open.is_empty(), "every state slice ends");
    for ((tid, what), l) in lat {
        let f = out.entry(tid).or_default();
        if what.ends_with("(same pCPU)") {
            f.resume_same = summary(&l);
        } else {
            f.resume_migrated = summary(&l);
        }
    }
    out
}

/// Per thread from a Chrome JSON export (µs floats back to ns).
pub fn chrome(path: &Path) -> BTreeMap<u32, Figures> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let evs = doc["traceEvents"].as_array().unwrap();
    let ns = |v: &serde_json::Value| (v.as_f64().unwrap() * 1000.0).round() as u64;
    let mut label_tid: BTreeMap<String, u32> = BTreeMap::new();
    for e in evs {
        if e["ph"] == "M" && e["name"] == "thread_name" && e["pid"] != 0x7fff_0000u32 {
            let tid = e["tid"].as_u64().unwrap() as u32;
            if tid & 0x4000_0000 == 0 {
                label_tid.insert(e["args"]["name"].as_str().unwrap().to_string(), tid);
            }
        }
    }
    let mut out: BTreeMap<u32, Figures> = BTreeMap::new();
    let mut lat: BTreeMap<(u32, String), Latency> = BTreeMap::new();
    for e in evs {
        if e["ph"] == "X" && e["cat"] == "vcpu" {
            let tid = e["tid"].as_u64().unwrap() as u32;
            add_state(
                out.entry(tid).or_default(),
                e["name"].as_str().unwrap(),
                ns(&e["dur"]),
            );
        } else if e["ph"] == "C" {
            let name = e["name"].as_str().unwrap();
            if let Some(label) = name.strip_suffix(" switches") {
                let f = out.entry(label_tid[label]).or_default();
                f.switches = f
                    .switches
                    .max(e["args"]["switches"].as_f64().unwrap() as u64);
            } else if let Some(label) = name.strip_suffix(" resume latency (us)") {
                for key in ["same_pcpu", "migrated"] {
                    if let Some(v) = e["args"].get(key) {
                        lat.entry((label_tid[label], key.to_string()))
                            .or_default()
                            .record(ns(v));
                    }
                }
            }
        }
    }
    for ((tid, key), l) in lat {
        let f = out.entry(tid).or_default();
        if key == "same_pcpu" {
            f.resume_same = summary(&l);
        } else {
            f.resume_migrated = summary(&l);
        }
    }
    out
}

/// Exports `trace` both ways and asserts each thread's figures equal the report's.
pub fn assert_exports_equal_report(trace: &Path) {
    let want = report(trace);
    assert!(!want.is_empty(), "the report has threads");
    let pf = trace.with_extension("pftrace");
    let js = trace.with_extension("json");
    export(trace, "perfetto", &pf);
    export(trace, "chrome-json", &js);
    for (format, got) in [("perfetto", perfetto(&pf)), ("chrome-json", chrome(&js))] {
        for (tid, w) in &want {
            let g = got.get(tid).cloned().unwrap_or_default();
            assert_eq!(&g, w, "{format}: thread {tid}");
        }
    }
    let _ = std::fs::remove_file(&pf);
    let _ = std::fs::remove_file(&js);
}
