//! Validation against reality: a 20 s demo recording made on this host's kernel (EEVDF on
//! 6.18), replayed through the `eevdf` model, reproduces the CPU share of every vCPU within
//! 5 points. Run-queue wait p50 per vCPU is printed beside the recorded figure (the issue's
//! goal is within a factor of 2; not met yet, see below).
//!
//! The sleepy `interactive` vCPUs used to come out at half their share on a quiet host: the
//! recording sometimes misses a vCPU's switch-in (nothing reported lost), and the demand
//! fold left the sleep before it open, which ended that vCPU's replay early. It now closes
//! the sleep at the next switch-out and takes the run from the task clock (issue #16).
//!
//! The recording is the demo as a new user makes it, affinity rotation included (every
//! 500 ms each vCPU is pinned to the next pCPU). The recording carries each thread's affinity
//! over time (`Affinity` events: read when tracking begins, then each change the VMM's
//! rotation makes), and the replay moves a thread whenever its affinity no longer has its
//! pCPU. Before, the replay gave each thread the set of pCPUs it was seen on: on a quiet host
//! batch/vcpu1 came out 8.5-11.2 points short with the rotation (issue #16).
//!
//! Still open: the simulated run-queue waits of the sleepy vCPUs are short of the recorded
//! ones. With the rotation, interactive/vcpu0-1 waited 1401-1483 us p50 at load 9 and
//! 9110-9372 us at load 15, and 0 us in the eevdf replay both times; on a 3 s recording their
//! wake-to-run p50 was 1343 and 1483 us recorded against 0 under every policy but sedf. So a
//! wakeup in the replay almost always runs at once, on the host it waits about a millisecond
//! or more. The model's lag placement is what runs them at once: on that 3 s recording
//! `--param place_lag=false` gives 2490 and 2523 us (run_to_parity=false changes nothing).
//! Not yet checked: whether on this host (PVM, HZ=250, PREEMPT_NONE by default) a wakeup preempts a
//! vCPU in guest mode only at the next tick (uniform over 4 ms: p50 near 2 ms, fewer when a
//! pCPU is idle), and the background replayed as one stand-in per pCPU where the host has
//! several untracked tasks queueing.

mod common;

use common::{kvmscope, privileged, Privilege, TempDir};

#[test]
fn eevdf_replay_of_a_demo_recording_reproduces_each_vcpu_share() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let dir = TempDir::new("priv-simulate");
    let t = dir.path("demo.trace");
    let rec = kvmscope()
        .args(["record", "--demo", "--duration", "20", "-o"])
        .arg(&t)
        .output()
        .unwrap();
    assert!(
        rec.status.success(),
        "{}",
        String::from_utf8_lossy(&rec.stderr)
    );
    let out = kvmscope()
        .args(["simulate", "--policy", "eevdf", "--json"])
        .arg(&t)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cols = doc["columns"].as_array().unwrap();
    let (rec, sim) = (&cols[0], &cols[1]);
    assert_eq!(rec["name"], "recorded");
    assert_eq!(sim["name"], "eevdf");
    let rv = rec["vcpus"].as_array().unwrap();
    let sv = sim["vcpus"].as_array().unwrap();
    assert_eq!(rv.len(), 6, "the demo has 6 vCPUs: {doc}");
    let mut errors = Vec::new();
    for (r, s) in rv.iter().zip(sv) {
        let (rs, ss) = (
            r["cpu_share"].as_f64().unwrap(),
            s["cpu_share"].as_f64().unwrap(),
        );
        let (rw, sw) = (
            r["wait_p50_us"].as_f64().unwrap(),
            s["wait_p50_us"].as_f64().unwrap(),
        );
        eprintln!(
            "{}: share recorded {:.1}% simulated {:.1}% (error {:.2} points); wait p50 recorded {rw:.0} us simulated {sw:.0} us",
            r["label"],
            rs * 100.0,
            ss * 100.0,
            (rs - ss).abs() * 100.0
        );
        errors.push((r["label"].to_string(), (rs - ss).abs()));
    }
    let worst = errors.iter().map(|e| e.1).fold(0.0, f64::max);
    assert!(worst <= 0.05, "share errors {errors:?}");
}
