//! `kvmscope simulate` on a live target (issue #16): the target is observed for `--duration`
//! as `record` would record it, and its demand replayed as a recording's is. With `--demo`
//! and with `--pid` of a separately started `kvmscope vmm`, the comparison has every vCPU of
//! the target in every column, its CPU shares add up (no vCPU past one pCPU, no column past
//! the pCPUs, each policy handing out about the CPU the recorded host gave: the replay of
//! the same demand), and the header and the `live` section say what was observed and lost.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use common::schedstat::{vcpu_tids, KillOnDrop};
use common::{json_output, kvmscope, privileged, wait_for, Privilege};

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

/// Checks the comparison of a live target and returns the labels and tids it replayed.
fn check_comparison(doc: &serde_json::Value) -> Vec<(String, u64)> {
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
        doc["span_s"].as_f64().unwrap() > 2.5,
        "observed {} s of a 3 s --duration",
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
    let labels: BTreeSet<String> = check_comparison(&doc)
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
    let tids: BTreeSet<u64> = check_comparison(&doc)
        .into_iter()
        .map(|(_, tid)| tid)
        .collect();
    let expected: BTreeSet<u64> = vcpu_tids(pid).into_iter().map(u64::from).collect();
    drop(vmm);
    assert_eq!(tids, expected);
}
