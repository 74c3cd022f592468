//! The bundled VMM traced: every exit, switch and guest gap it counted, and a guest that
//! crashes ending the trace with one clear line.

use std::process::Stdio;

use serde_json::Value;

use super::common::*;
use super::u;

#[test]
fn demo_trace_sees_every_exit_switch_and_gap() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Three vCPUs on two pCPUs: two spinning, one exiting to the VMM every ~1 ms.
    let scenario = write_scenario(
        dir.path(),
        "[[vm]]\nname = \"mix\"\nvcpus = 3\nworkload = \"spin\"\npin = \"0-1\"\n\
         exit_every = 20000\n\n[[vm.vcpu]]\nindex = 2\nworkload = \"exits\"\n",
    );
    let out = kvmscope()
        .args([
            "trace",
            "--demo",
            "--duration",
            "3",
            "--format",
            "jsonl",
            "--scenario",
        ])
        .arg(&scenario)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "trace failed: {stderr}");
    let (events, summary) = trace_lines_lossless(&out.stdout);
    let vcpus = summary["vmm"]["vcpus"]
        .as_array()
        .expect("no VMM summary")
        .clone();
    assert_eq!(vcpus.len(), 3);

    for v in &vcpus {
        let tid = u(v, "tid");
        let label = format!("{} (tid {tid}, {})", v["thread"], v["workload"]);
        let of_tid = |kind: &str| {
            events
                .iter()
                .filter(move |e| e["type"] == kind && e["tid"].as_u64() == Some(tid))
                .collect::<Vec<_>>()
        };

        // Announced before anything else of it, with its VM and index.
        let first = events
            .iter()
            .position(|e| {
                e["tid"].as_u64() == Some(tid)
                    || e["prev_tid"].as_u64() == Some(tid)
                    || e["next_tid"].as_u64() == Some(tid)
            })
            .unwrap();
        assert_eq!(events[first]["type"], "task_info", "{label}: first event");
        assert_eq!(events[first]["vm"], "mix");
        assert_eq!(events[first]["vcpu"], v["index"]);

        // Switches carry vruntime and weight for every vCPU thread.
        let outs: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "sched_switch" && u(e, "prev_tid") == tid)
            .collect();
        assert!(outs.len() > 10, "{label}: only {} switch-outs", outs.len());
        for e in &outs {
            let se = &e["prev_se"];
            assert!(
                u(se, "vruntime") > 0 && u(se, "weight") == 1024,
                "{label}: {e}"
            );
        }

        // Exits to user space: exactly the VMM's own counters (port I/O, and the EINTR
        // returns its stop kick causes). The VMM lets the guests go only once the tracer
        // watches their threads, so even the first exit is seen.
        let exits = of_tid("userspace_exit");
        let io = exits
            .iter()
            .filter(|e| e["reason"] == 2 && e["errno"] == 0)
            .count() as u64;
        let intr = exits.iter().filter(|e| e["errno"] == -libc::EINTR).count() as u64;
        assert_eq!(io, u(&v["exits"], "pio"), "{label}: port-I/O exits");
        assert_eq!(
            intr,
            u(&v["exits"], "intr"),
            "{label}: interrupted KVM_RUNs"
        );
        if v["workload"] == "exits" {
            assert!(io > 100, "{label}: only {io} exits in 3 s");
        }

        // Guest gaps: present, and all of those the VMM counted bar the few recorded
        // while it was being stopped (after the last drain).
        let gaps = of_tid("guest_gap").len() as u64;
        let vmm_gaps = u(v, "gaps");
        assert!(gaps > 0, "{label}: no guest gaps");
        assert!(
            gaps <= vmm_gaps && vmm_gaps - gaps <= 2,
            "{label}: {gaps} guest_gap events, the VMM counted {vmm_gaps}"
        );
        eprintln!(
            "{label}: {} switch-outs, {io} I/O exits, {intr} EINTR, {gaps} gaps (VMM: {vmm_gaps})",
            outs.len()
        );
    }
}

#[test]
fn a_guest_crash_ends_the_trace_with_a_clear_error() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let out = trace_demo(
        "[[vm]]\nname = \"bad\"\nvcpus = 1\nworkload = \"triple-fault\"\n",
        &["--duration", "5"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a crashed guest must fail the trace: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(
        stderr.contains("the bundled VMM failed: guest fault in vm0 (bad) vCPU 0"),
        "{stderr}"
    );
}
