//! Issue #16 on a matrix kernel: the suite's demo recording (the demo's VMs without affinity
//! rotation), replayed by `simulate --policy POLICY`, against what the emulated kernel did.

use std::path::Path;

use lab::results::Results;
use serde_json::Value;

use super::{json, u};
use crate::common::wait_factor;

/// Seconds of the demo the suite records for `simulate` to replay.
pub const RECORD_SECS: u32 = 10;
/// The most a vCPU's replayed CPU share may differ from the recorded one (issue #16).
const SHARE_POINTS: f64 = 5.0;

/// Every vCPU's CPU share within [`SHARE_POINTS`] of the share recorded on the emulated
/// kernel, and the recording taken as tick-driven (so the replay ends its sleeps on the
/// tick by default). Run-queue wait p50s are reported, beside the replay's with sleeps as
/// recorded, as factors ([`wait_factor`]), not asserted against the x2: the emulated
/// kernel does not hold its own waits within x2 from one run of the same demand to the next
/// (6.1: 2 and 6 of 28 pairs of rounds), so a replay of one run cannot be held to it either.
/// The figures, their measured causes and the command that makes them
/// (`cargo run -p lab --example repeat`): `simulate/VALIDATION.md`.
pub fn replay_step(r: &Results, policy: &str, work: &Path, ctx: &dyn Fn(&str) -> String) -> String {
    let recorded = json(
        r.ok("demo.record")
            .unwrap_or_else(|e| panic!("{}", ctx(&e.to_string()))),
        "record --json",
    );
    let bytes = r
        .base64("demo.kvms")
        .unwrap_or_else(|e| panic!("{}", ctx(&e.to_string())));
    let file = work.join("demo.kvms");
    std::fs::write(&file, &bytes).unwrap();
    let simulate = |params: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvmscope"))
            .args(["simulate", "--policy", policy, "--json"])
            .args(params.iter().flat_map(|p| ["--param", p]))
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            ctx(&format!(
                "simulate --policy {policy} {params:?} {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            ))
        );
        json(&String::from_utf8_lossy(&out.stdout), "simulate --json")
    };
    let doc = simulate(&[]);
    let tick = doc["tick"].as_str().unwrap_or_default();
    assert!(
        tick.contains("those sleeps end on the tick of the pCPU they slept on"),
        "{}",
        ctx(&format!(
            "replay: the emulated kernel's recording not taken as tick-driven: {tick}"
        ))
    );
    let as_recorded = simulate(&["sleep_on_tick=false"]);
    let cols = doc["columns"].as_array().expect("simulate columns");
    let free_vcpus = as_recorded["columns"][1]["vcpus"]
        .as_array()
        .expect("simulated vcpus (sleep_on_tick=false)");
    let (rec, sim) = (&cols[0], &cols[1]);
    assert_eq!(rec["name"], "recorded");
    assert_eq!(sim["name"], policy);
    let (rv, sv) = (
        rec["vcpus"].as_array().expect("recorded vcpus"),
        sim["vcpus"].as_array().expect("simulated vcpus"),
    );
    let own = recorded["vmm"]["vcpus"].as_array().map_or(0, Vec::len);
    assert!(
        own == 6 && rv.len() == own && sv.len() == own,
        "{}",
        ctx(&format!(
            "replay: {} vCPUs recorded, {} simulated, the VMM ran {own}",
            rv.len(),
            sv.len()
        ))
    );
    let mut rows = Vec::new();
    let mut worst_share = 0.0f64;
    for ((r, s), f) in rv.iter().zip(sv).zip(free_vcpus) {
        assert_eq!(r["label"], s["label"], "replay: vCPU order");
        let label = r["label"].as_str().unwrap_or_default();
        let share = |v: &Value| v["cpu_share"].as_f64().expect("cpu_share") * 100.0;
        let (rs, ss) = (share(r), share(s));
        worst_share = worst_share.max((rs - ss).abs());
        let wait = |v: &Value| v["wait_p50_us"].as_f64().expect("wait_p50_us");
        let (rw, sw, fw) = (wait(r), wait(s), wait(f));
        rows.push(format!(
            "{label} {rs:.1}% recorded, {ss:.1}% {policy} ({:.2} points), wait p50 {rw:.0} us recorded, {sw:.0} us {policy} (x{:.2}), {fw:.0} us with sleeps as recorded (x{:.2})",
            (rs - ss).abs(),
            wait_factor(rw, sw),
            wait_factor(rw, fw)
        ));
    }
    let line = format!(
        "simulate --policy {policy} on a {RECORD_SECS} s demo recording ({} events, {} lost, {} KiB): {}",
        u(&recorded, "events"),
        u(&recorded, "lost"),
        bytes.len() / 1024,
        rows.join("; ")
    );
    assert!(
        worst_share <= SHARE_POINTS,
        "{}",
        ctx(&format!(
            "replay: a vCPU's share off by more than {SHARE_POINTS} points: {line}"
        ))
    );
    line
}
