//! `kvmscope simulate` on a live target (issue #16): the target is observed for `--duration`
//! as `record` would record it, and its demand replayed as a recording's is. With `--demo`
//! and with `--pid` of a separately started `kvmscope vmm`, the comparison has every vCPU of
//! the target in every column, its CPU shares add up (no vCPU past one pCPU, no column past
//! the pCPUs, each policy handing out about the CPU the recorded host gave: the replay of
//! the same demand), and the header and the `live` section say what was observed and lost.
//! Ctrl-C ends the observation early; what was observed is still replayed.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use common::schedstat::{vcpu_tids, KillOnDrop};
use common::{json_output, kvmscope, privileged, wait_for, Privilege, TempDir};

/// The columns `--policy cfs,credit` gives, the recorded host's first.
const COLUMNS: [&str; 3] = ["recorded", "cfs", "credit"];
/// How far a policy's total CPU share may be from the recorded host's, in pCPUs: the replay
/// serves the same demand, a vCPU that never slept at most the CPU it was given.
const TOTAL_SHARE_SLACK: f64 = 0.10;

/// `kvmscope simulate TARGET --duration 3 --policy cfs,credit --json`.
fn simulate_live(target: &[&str]) -> serde_json::Value {
    json_output(
        kvmscope()
            .arg("simulate")
            .args(target)
            .args(["--duration", "3", "--policy", "cfs,credit", "--json"])
            .stdin(Stdio::null()),
    )
}

/// Each row's (label, tid) of a `demand` or a column's `vcpus`.
fn vcpus(rows: &serde_json::Value) -> Vec<(String, u64)> {
    let row = |v: &serde_json::Value| {
        (
            v["label"].as_str().unwrap().to_string(),
            v["tid"].as_u64().unwrap(),
        )
    };
    rows.as_array().unwrap().iter().map(row).collect()
}

/// Each row's figure `key`.
fn figures(rows: &serde_json::Value, key: &str) -> Vec<f64> {
    let figure = |v: &serde_json::Value| v[key].as_f64().unwrap();
    rows.as_array().unwrap().iter().map(figure).collect()
}

/// Checks the comparison of a live target observed for at least `min_span_s` and returns the
/// labels and tids it replayed.
fn check_comparison(doc: &serde_json::Value, min_span_s: f64) -> Vec<(String, u64)> {
    let source = doc["source"].as_str().unwrap();
    assert!(
        source.starts_with("of a live target observed for"),
        "{source}"
    );
    let live = &doc["live"];
    let (events, lost) = (
        live["events"].as_u64().unwrap(),
        live["lost"].as_u64().unwrap(),
    );
    assert!(events > 0, "{live}");
    assert!(
        source.contains(&format!("{events} events, {lost} lost")),
        "the header does not say what was observed and lost: {source}"
    );
    assert!(
        doc["span_s"].as_f64().unwrap() > min_span_s,
        "observed {} s, expected over {min_span_s} s",
        doc["span_s"]
    );
    let pcpus = doc["pcpus"].as_f64().unwrap();
    let demand = vcpus(&doc["demand"]);
    let fair: f64 = figures(&doc["demand"], "fair_share").iter().sum();
    assert!(
        fair > 0.0 && fair <= pcpus + 1e-9,
        "fair shares sum to {fair}"
    );
    let columns = doc["columns"].as_array().unwrap();
    let names: Vec<&str> = columns
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, COLUMNS);
    let mut totals = Vec::new();
    for col in columns {
        let name = col["name"].as_str().unwrap();
        assert_eq!(
            vcpus(&col["vcpus"]),
            demand,
            "{name}: not every vCPU of the target"
        );
        let shares = figures(&col["vcpus"], "cpu_share");
        for (share, (label, _)) in shares.iter().zip(&demand) {
            assert!(
                (0.0..=1.0 + 1e-9).contains(share),
                "{name}: {label} had {share} pCPUs"
            );
        }
        let total: f64 = shares.iter().sum();
        let by_vm: f64 = figures(&col["vms"], "cpu_share").iter().sum();
        assert!(
            total > 0.0 && total <= pcpus + 1e-9,
            "{name}: vCPUs had {total} of {pcpus} pCPUs"
        );
        assert!(
            (total - by_vm).abs() < 1e-6,
            "{name}: vCPUs {total}, VMs {by_vm}"
        );
        totals.push(total);
    }
    eprintln!(
        "{source}: total CPU share recorded/cfs/credit {:.3}/{:.3}/{:.3} pCPUs, lost {lost}",
        totals[0], totals[1], totals[2]
    );
    for (name, total) in COLUMNS.iter().zip(&totals).skip(1) {
        assert!(
            (total - totals[0]).abs() <= TOTAL_SHARE_SLACK,
            "{name} handed out {total} pCPUs against {} recorded",
            totals[0]
        );
    }
    demand
}

#[test]
fn simulate_demo_for_a_duration_compares_every_vcpu() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let doc = simulate_live(&["--demo"]);
    let labels: BTreeSet<String> = check_comparison(&doc, 2.5)
        .into_iter()
        .map(|(label, _)| label)
        .collect();
    let scenario = vmm::Scenario::default_demo();
    let expected: BTreeSet<String> = scenario
        .vms
        .iter()
        .flat_map(|vm| (0..vm.vcpus).map(move |i| format!("{}/vcpu{i}", vm.name)))
        .collect();
    assert_eq!(labels, expected);
    assert!(
        doc["live"]["vmm"].is_object(),
        "no VMM summary: {}",
        doc["live"]
    );
}

#[test]
fn simulate_pid_of_a_running_vmm_compares_every_vcpu() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let vmm = kvmscope()
        .args(["vmm", "--vms", "2", "--vcpus", "2", "--duration", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kvmscope vmm");
    let vmm = KillOnDrop(vmm);
    let pid = vmm.0.id();
    wait_for("4 vCPU threads", Duration::from_secs(20), || {
        vcpu_tids(pid).len() == 4
    });
    let doc = simulate_live(&["--pid", &pid.to_string()]);
    let tids: BTreeSet<u64> = check_comparison(&doc, 2.5)
        .into_iter()
        .map(|(_, tid)| tid)
        .collect();
    let expected: BTreeSet<u64> = vcpu_tids(pid).into_iter().map(u64::from).collect();
    drop(vmm);
    assert_eq!(tids, expected);
}

/// Ctrl-C ends the observation, not the command: the demand observed so far is replayed, the
/// header says for how long, and the temporary recording is removed.
#[test]
fn ctrl_c_replays_what_was_observed_so_far() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let tmp = TempDir::new("priv-simulate-live-int");
    let scratch = tmp.path("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let (stdout, stderr) = (tmp.path("stdout"), tmp.path("stderr"));
    let child = kvmscope()
        .args([
            "simulate",
            "--demo",
            "--duration",
            "600",
            "--policy",
            "cfs,credit",
        ])
        .arg("--json")
        .env("TMPDIR", &scratch)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start kvmscope simulate");
    let mut child = KillOnDrop(child);
    // The session writes its first chunk 2 s in.
    let recording = || {
        std::fs::read_dir(&scratch)
            .into_iter()
            .flatten()
            .flatten()
            .map(|d| d.path().join("live.trace"))
            .find(|t| t.metadata().is_ok_and(|m| m.len() > 4096))
    };
    wait_for(
        "the live recording's first chunk",
        Duration::from_secs(30),
        || recording().is_some(),
    );
    // SAFETY: kill with a pid we spawned and still own (not yet waited for).
    assert_eq!(
        unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let mut status = None;
    wait_for(
        "simulate to replay and exit",
        Duration::from_secs(60),
        || {
            status = child.0.try_wait().unwrap();
            status.is_some()
        },
    );
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert!(status.unwrap().success(), "{err}");
    let out = std::fs::read(&stdout).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out).expect("one JSON document");
    check_comparison(&doc, 1.0);
    assert!(doc["span_s"].as_f64().unwrap() < 600.0, "{}", doc["span_s"]);
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
