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
    let figures = |doc: &Value| {
        lab::replayed::vcpus(doc, policy)
            .unwrap_or_else(|e| panic!("{}", ctx(&format!("replay: {e}"))))
    };
    let (vcpus, free_vcpus) = (figures(&doc), figures(&as_recorded));
    let own = recorded["vmm"]["vcpus"].as_array().map_or(0, Vec::len);
    assert!(
        own == 6 && vcpus.len() == own,
        "{}",
        ctx(&format!(
            "replay: {} vCPUs recorded and simulated, the VMM ran {own}",
            vcpus.len()
        ))
    );
    let mut rows = Vec::new();
    let mut worst_share = 0.0f64;
    for (v, f) in vcpus.iter().zip(&free_vcpus) {
        assert_eq!(v.label, f.label, "replay: vCPU order");
        let (rs, ss) = (v.recorded_share, v.replayed_share);
        worst_share = worst_share.max(v.share_points());
        let (rw, sw, fw) = (
            v.recorded_wait_p50_us,
            v.replayed_wait_p50_us,
            f.replayed_wait_p50_us,
        );
        rows.push(format!(
            "{} {rs:.1}% recorded, {ss:.1}% {policy} ({:.2} points), wait p50 {rw:.0} us recorded, {sw:.0} us {policy} (x{:.2}), {fw:.0} us with sleeps as recorded (x{:.2})",
            v.label,
            v.share_points(),
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
