//! `kvmscope export` on synthetic recordings (no root): the Perfetto output decoded with
//! Perfetto's own schema (the `perfetto_protos` the exporter uses) has the sched events on the
//! right CPU tracks, one state/counter track set per vCPU, balanced slices; the Chrome JSON
//! parses and has CPU lanes and vCPU threads.

mod common;
mod trace_file_synth;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use common::kvmscope;
use export::perfetto_protos::trace::Trace;
use export::perfetto_protos::trace_packet::trace_packet::Data;
use export::perfetto_protos::track_event::track_event::Type;
use export::protobuf::Message;
use model::trace_file::TraceWriter;
use model::Event;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvmscope-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

/// The model helper's synthetic demo (guest gaps, or kvm_entry/exit for `vmx`) as a trace
/// whose header lists the vCPU threads, as `record` writes it.
fn recording(path: &Path, vmx: bool) -> Vec<Event> {
    let events = if vmx {
        model::synth::demo_stream_vmx(2.0)
    } else {
        model::synth::demo_stream(2.0)
    };
    let header = trace_file_synth::header_for(&events);
    let mut w = TraceWriter::new(std::fs::File::create(path).unwrap(), &header).unwrap();
    for e in &events {
        w.write(e).unwrap();
    }
    w.finish().unwrap();
    events
}

fn export(input: &Path, format: &str, out: &Path) -> String {
    let o = kvmscope()
        .arg("export")
        .arg(input)
        .args(["--format", format, "-o"])
        .arg(out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "export failed: {err}");
    err
}

fn check_perfetto(vmx: bool) {
    let input = scratch(if vmx { "vmx.trace" } else { "demo.trace" });
    let events = recording(&input, vmx);
    let out = input.with_extension("pftrace");
    let summary = export(&input, "perfetto", &out);
    assert!(summary.contains("ftrace sched events"), "{summary}");
    let trace = Trace::parse_from_bytes(&std::fs::read(&out).unwrap())
        .expect("decodes as a Perfetto Trace");

    // What went in.
    let mut want_switches: BTreeMap<u32, usize> = BTreeMap::new();
    let mut want_wakeups = 0;
    let mut vcpu_tids = BTreeSet::new();
    let mut se_samples: HashMap<u32, usize> = HashMap::new();
    for e in &events {
        match e {
            Event::SchedSwitch(s) => {
                *want_switches.entry(s.cpu).or_default() += 1;
                if s.prev_se.is_some() {
                    *se_samples.entry(s.prev_tid).or_default() += 1;
                }
                if s.next_se.is_some() {
                    *se_samples.entry(s.next_tid).or_default() += 1;
                }
            }
            Event::Wakeup(_) => want_wakeups += 1,
            Event::TaskInfo(t) if t.vcpu.is_some() => {
                vcpu_tids.insert(t.tid);
            }
            _ => {}
        }
    }
    assert!(!vcpu_tids.is_empty());

    // What came out.
    let mut switches: BTreeMap<u32, usize> = BTreeMap::new();
    let mut wakeups = 0;
    let mut last_ts: HashMap<u32, u64> = HashMap::new();
    let mut thread_tracks: HashMap<u64, i32> = HashMap::new();
    let mut counter_tracks: HashMap<u64, String> = HashMap::new();
    let mut counter_values: HashMap<u64, usize> = HashMap::new();
    let mut open: HashMap<u64, i64> = HashMap::new();
    let mut seq_ids = BTreeSet::new();
    for p in &trace.packet {
        match &p.data {
            Some(Data::FtraceEvents(b)) => {
                let cpu = b.cpu.expect("bundle has a cpu");
                for fe in &b.event {
                    let ts = fe.timestamp.expect("ftrace event has a timestamp");
                    // Within one CPU's bundles, time only moves forward.
                    assert!(ts >= *last_ts.get(&cpu).unwrap_or(&0));
                    last_ts.insert(cpu, ts);
                    if fe.has_sched_switch() {
                        let s = fe.sched_switch();
                        assert!(s.next_comm.is_some() && s.prev_comm.is_some());
                        // TASK_REPORT encoding, as the tracepoint itself reports it.
                        assert!((0..=0x80).contains(&s.prev_state()), "{}", s.prev_state());
                        *switches.entry(cpu).or_default() += 1;
                    }
                    if fe.has_sched_waking() {
                        wakeups += 1;
                    }
                }
            }
            Some(Data::TrackDescriptor(td)) => {
                let uuid = td.uuid.expect("track has a uuid");
                if let Some(t) = td.thread.as_ref() {
                    thread_tracks.insert(uuid, t.tid());
                }
                if td.counter.is_some() {
                    counter_tracks.insert(uuid, td.name().to_string());
                }
                seq_ids.insert(p.trusted_packet_sequence_id());
            }
            Some(Data::TrackEvent(te)) => {
                let track = te.track_uuid.expect("track event names its track");
                assert!(p.timestamp.is_some());
                seq_ids.insert(p.trusted_packet_sequence_id());
                match te.type_() {
                    Type::TYPE_SLICE_BEGIN => *open.entry(track).or_default() += 1,
                    Type::TYPE_SLICE_END => *open.entry(track).or_default() -= 1,
                    Type::TYPE_COUNTER => *counter_values.entry(track).or_default() += 1,
                    Type::TYPE_INSTANT => {}
                    other => panic!("unexpected track event type {other:?}"),
                }
            }
            _ => {}
        }
    }
    assert_eq!(switches, want_switches, "sched_switch per CPU track");
    assert_eq!(wakeups, want_wakeups);
    assert_eq!(
        seq_ids.len(),
        1,
        "one trusted sequence for kvmscope's tracks"
    );
    let tracked: BTreeSet<u32> = thread_tracks.values().map(|&t| t as u32).collect();
    assert_eq!(tracked, vcpu_tids, "one state track per vCPU thread");
    assert!(open.values().all(|&n| n == 0), "every slice ends: {open:?}");
    let vruntime_tracks: Vec<&u64> = counter_tracks
        .iter()
        .filter(|(_, n)| n.ends_with("vruntime"))
        .map(|(u, _)| u)
        .collect();
    assert_eq!(vruntime_tracks.len(), vcpu_tids.len());
    let vruntime_values: usize = vruntime_tracks
        .iter()
        .map(|u| counter_values.get(u).copied().unwrap_or(0))
        .sum();
    let want_values: usize = vcpu_tids
        .iter()
        .map(|t| se_samples.get(t).copied().unwrap_or(0))
        .sum();
    assert_eq!(
        vruntime_values, want_values,
        "one vruntime sample per switch carrying se"
    );
    let resume_values: usize = counter_tracks
        .iter()
        .filter(|(_, n)| n.contains("resume latency"))
        .map(|(u, _)| counter_values.get(u).copied().unwrap_or(0))
        .sum();
    assert!(
        resume_values > 0,
        "resume latency counters from {}",
        if vmx { "kvm_entry" } else { "guest gaps" }
    );
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&out);
}

#[test]
fn perfetto_export_decodes_with_perfettos_schema() {
    check_perfetto(false);
}

#[test]
fn perfetto_export_of_a_vmx_host_uses_kvm_entry_for_resume_latency() {
    check_perfetto(true);
}

#[test]
fn chrome_json_has_cpu_lanes_and_vcpu_threads() {
    let input = scratch("chrome.trace");
    let events = recording(&input, false);
    let out = input.with_extension("json");
    export(&input, "chrome-json", &out);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let evs = doc["traceEvents"].as_array().unwrap();
    let names: BTreeSet<String> = evs
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.contains("CPU 0") && names.contains("CPU 1"),
        "{names:?}"
    );
    let vcpus = events
        .iter()
        .filter(|e| matches!(e, Event::TaskInfo(t) if t.vcpu.is_some()))
        .count();
    assert!(
        names
            .iter()
            .filter(|n| n.contains("/vcpu") && !n.contains("gaps"))
            .count()
            == vcpus,
        "{names:?}"
    );
    let slices = evs.iter().filter(|e| e["ph"] == "X").count();
    let counters = evs.iter().filter(|e| e["ph"] == "C").count();
    assert!(
        slices > 100 && counters > 100,
        "{slices} slices, {counters} counters"
    );
    for e in evs.iter().filter(|e| e["ph"] == "X") {
        assert!(e["dur"].as_f64().unwrap() >= 0.0);
    }
    // Refuses to overwrite without --force.
    let o = kvmscope()
        .arg("export")
        .arg(&input)
        .args(["--format", "chrome-json", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&out);
}

#[test]
fn perfetto_draws_each_vmclear_ipi_as_a_flow_from_the_vcpu_to_the_old_pcpu() {
    use model::synth::{switch, task_info, vmclear};
    use model::CrossCallPhase::{Entry, Exit, Queue};
    const MS: u64 = 1_000_000;
    const US: u64 = 1_000;
    // vCPU tid 1 moves from pCPU 0 to 1 (VMCLEAR on 0) and back (on 1, entry not seen).
    let events = vec![
        task_info(0, 1, 100, "vm0", Some(0), 0),
        switch(0, 0, 0, 1),
        switch(MS, 0, 1, 0),
        switch(2 * MS, 1, 0, 1),
        vmclear(2 * MS + 5 * US, 1, Queue, 0xa, 0, 1),
        vmclear(2 * MS + 10 * US, 0, Entry, 0xa, 0, 0),
        vmclear(2 * MS + 20 * US, 0, Exit, 0xa, 0, 0),
        switch(3 * MS, 1, 1, 0),
        switch(4 * MS, 0, 0, 1),
        vmclear(4 * MS + 5 * US, 0, Queue, 0xb, 1, 1),
        vmclear(4 * MS + 30 * US, 1, Exit, 0xb, 1, 1),
    ];
    let header = trace_file_synth::header_for(&events);
    let mut w = export::PerfettoWriter::new(Vec::new(), &header).unwrap();
    for e in &events {
        w.push(e).unwrap();
    }
    let (bytes, stats) = w.finish().unwrap();
    assert_eq!(stats.vmclear_flows, 2);
    let trace = Trace::parse_from_bytes(&bytes).expect("decodes as a Perfetto Trace");

    let mut names: HashMap<u64, String> = HashMap::new();
    let mut state_track = None;
    // Flow id -> (track, ts, type) of its start and of its end.
    let mut starts = BTreeMap::new();
    let mut ends = BTreeMap::new();
    for p in &trace.packet {
        match &p.data {
            Some(Data::TrackDescriptor(td)) => {
                if td.thread.as_ref().is_some_and(|t| t.tid() == 1) {
                    state_track = td.uuid;
                }
                names.insert(td.uuid(), td.name().to_string());
            }
            Some(Data::TrackEvent(te)) => {
                let at = (
                    te.track_uuid(),
                    p.timestamp(),
                    te.type_(),
                    te.name().to_string(),
                );
                for f in &te.flow_ids {
                    starts.insert(*f, at.clone());
                }
                for f in &te.terminating_flow_ids {
                    ends.insert(*f, at.clone());
                }
            }
            _ => {}
        }
    }
    let state_track = state_track.expect("vCPU 1's state track");
    let want = [
        (2 * MS + 5 * US, 0, Some(2 * MS + 10 * US)),
        (4 * MS + 5 * US, 1, None),
    ];
    assert_eq!(starts.len(), want.len(), "{starts:?}");
    for ((id, start), (queued, old, entered)) in starts.iter().zip(want) {
        assert_eq!(
            (start.0, start.1, start.2),
            (state_track, queued, Type::TYPE_INSTANT),
            "flow {id} starts on the vCPU's state track when queued"
        );
        assert!(start.3.contains(&format!("to pCPU {old}")), "{start:?}");
        let end = &ends[id];
        assert_eq!(names[&end.0], format!("pCPU {old} VMCLEAR IPIs"), "{end:?}");
        match entered {
            Some(entered) => assert_eq!((end.1, end.2), (entered, Type::TYPE_SLICE_BEGIN)),
            None => assert_eq!(end.2, Type::TYPE_INSTANT, "{end:?}"),
        }
        assert!(end.3.starts_with("__loaded_vmcs_clear"), "{end:?}");
    }
}

#[test]
fn the_same_recording_exports_to_the_same_bytes() {
    // Each run is its own process, so hash maps iterate in a different order each time: what
    // the exporters close at the end (open slices, running CPUs) must be written in a fixed one.
    let input = scratch("same-bytes.trace");
    recording(&input, false);
    for (format, ext) in [("chrome-json", "json"), ("perfetto", "pftrace")] {
        let runs: Vec<Vec<u8>> = (0..4)
            .map(|i| {
                let out = input.with_extension(format!("{i}.{ext}"));
                export(&input, format, &out);
                std::fs::read(&out).unwrap()
            })
            .collect();
        assert!(
            runs.windows(2).all(|w| w[0] == w[1]),
            "{format}: the same recording exported to different bytes"
        );
    }
}
