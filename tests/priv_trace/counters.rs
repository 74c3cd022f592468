//! Counters mode (`--no-bpf`) traced: each vCPU's samples against the kernel's counters,
//! and a host VMM's affinity change after tracking began.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::*;
use super::{host_steal_ns, signal, start_trace, start_vmm, u};

#[test]
fn no_bpf_trace_reports_counters_per_vcpu() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(
        dir.path(),
        "[[vm]]\nname = \"spin3\"\nvcpus = 3\nworkload = \"spin\"\npin = \"0-1\"\n",
    );
    let (vmm, tids) = start_vmm(&scenario, 3);
    let pid = vmm.0.id();
    let steal0 = host_steal_ns();
    let out = kvmscope()
        .args([
            "trace",
            "--no-bpf",
            "--duration",
            "2.5",
            "--format",
            "jsonl",
            "--pid",
        ])
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let steal = host_steal_ns() - steal0;
    drop(vmm);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "trace failed: {stderr}");
    assert!(
        stderr.contains("Missing without BPF"),
        "no word on what is missing: {stderr}"
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["bpf"], false);
    assert_eq!(
        summary["counts"]["sched_switch"],
        Value::Null,
        "switches without BPF?"
    );
    // The bundled VMM's threads run until the closing sample: every sample was taken (the
    // count a vanished thread would raise is in the summary, from the model's health).
    assert_eq!(summary["missed_counter_samples"], 0, "{summary}");
    assert_eq!(summary["track_failures"], 0, "{summary}");
    for &tid in &tids {
        // The first sample is the baseline taken when tracking began; the kernel's totals
        // grow from there.
        let samples: Vec<&Value> = lines
            .iter()
            .filter(|l| l["type"] == "counter_sample" && u(l, "tid") == tid as u64)
            .collect();
        assert!(
            samples.len() >= 3,
            "tid {tid}: {} counter samples in 2.5 s at 1 s",
            samples.len()
        );
        let (first, last) = (samples[0], samples[samples.len() - 1]);
        let grew = |k: &str| u(last, k) - u(first, k);
        let task_clock = grew("task_clock_ns");
        let run = grew("run_ns");
        let switches = grew("voluntary_switches") + grew("involuntary_switches");
        eprintln!(
            "tid {tid}: task-clock {:.3} ms, schedstat run {:.3} ms, {switches} switches, {} \
             migrations",
            task_clock as f64 / 1e6,
            run as f64 / 1e6,
            grew("migrations")
        );
        assert!(switches > 10, "tid {tid}: {last}");
        assert!(run > 100_000_000, "tid {tid} barely ran: {last}");
        // Both count time on CPU between the same two samples, but perf's task-clock also
        // counts steal (this host is a VM), which sum_exec_runtime leaves out: not below it,
        // above it by at most 5% plus the host's steal over the run.
        let over = task_clock as f64 - run as f64;
        assert!(
            over >= -0.05 * run as f64 && over <= 0.05 * run as f64 + steal as f64,
            "tid {tid}: task-clock {task_clock} vs schedstat run {run} (host steal {steal})"
        );
        assert_eq!(u(last, "weight"), 1024);
    }
}

#[test]
fn a_host_vmms_affinity_change_after_tracking_start_is_traced() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(
        dir.path(),
        "[[vm]]\nname = \"pin2\"\nvcpus = 2\nworkload = \"spin\"\npin = \"0-1\"\n",
    );
    let (vmm, tids) = start_vmm(&scenario, 2);
    let pid = vmm.0.id();
    let (mut tracer, lines, reader) =
        start_trace(&["--no-bpf".into(), "--pid".into(), pid.to_string()]);
    let moved = tids[0];
    // Waits for the affinity of `moved` to be reported as `cpus`.
    let await_mask = |cpus: &[u64], within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no affinity {cpus:?} for {moved} within {within:?}"));
            let l: Value = serde_json::from_str(&line).unwrap();
            if l["type"] == "affinity" && u(&l, "tid") == u64::from(moved) {
                let got: Vec<u64> = l["cpus"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_u64().unwrap())
                    .collect();
                assert_eq!(got, cpus, "{l}");
                return;
            }
        }
    };
    // The mask read when tracking began, then the one `taskset -p 2 TID` sets: seen on the
    // next rescan (1 s).
    await_mask(&[0, 1], Duration::from_secs(30));
    vmm::sched::set_affinity(moved, &[1]).unwrap();
    await_mask(&[1], Duration::from_secs(5));
    signal(tracer.0.id(), libc::SIGINT);
    let status = tracer.0.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "tracer exited with {status}");
    drop(vmm);
}
