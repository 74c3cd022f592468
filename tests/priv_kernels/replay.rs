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
/// recorded, as factors ([`wait_factor`]). The goal is within a factor of 2; it is
/// reported, not asserted, because no (kernel, VM) pair holds it run after run (below).
///
/// The emulated kernels (QEMU TCG, HZ=250, no high-resolution timers) wake sleepers on the
/// tick: 94% of 6.12's recorded wakeups come within 250 us after their pCPU's tick, 64-83%
/// of 6.1's (its two pCPUs tick 2.75 ms apart, and each also wakes some at the other's
/// phase). In the saved CI recordings of 6.12 (`/work/recs/6.12-ci1530.kvms`,
/// `-ci1743.kvms`) both interactive vCPUs share pCPU 1 with one batch vCPU, both are woken
/// by the same tick (6-20 us apart), and one runs its ~0.6 ms burst while the other waits:
/// half of their wakeups wait 35-90 us, half 600-700 us (which one goes first alternates),
/// and the few preemption waits tip the p50 into the long half: 627/631/635/639 us.
/// `simulate` now finds each pCPU's tick phase and ends each sleep that ended on a tick on
/// the tick of the pCPU it slept on (`simulate/src/tick_phase.rs`), which keeps the two
/// woken together: us recorded / eevdf, sleeps as recorded -> on the tick, ci1530 639/39 ->
/// 631 and 639/39 -> 623, ci1743 627/34 -> 606 and 631/34 -> 586 (x16-x18 -> x1.01-x1.08).
/// 6.1, cfs (ci1529, ci1742): batch x1.02-x2.11, interactive x1.06-x1.59 (43-47 us, the
/// charged dispatch delay, against 49-68), lowprio 75497/29753 -> 39322 and 65798/10879 ->
/// 30147 (x2.54 -> x1.92, x6.05 -> x2.18).
///
/// But which vCPUs share a pCPU, and so every wait, moves with the host's load. A fresh
/// matrix run at 18:25 UTC, load 9-13 (`/work/recs/6.1-tw1825.kvms`, `6.12-tw1827.kvms`):
/// the emulated guests ran slower (6.12's interactive vCPUs woke 1310 times in 10 s, not
/// 1960; 6.1's 1118, not 4500-4700), one of 6.12's interactive vCPUs ran on both pCPUs, only 42%
/// of their wakeups waited a burst, and their p50 fell to 139/147 us (the top of the short
/// half) against the replay's 42/42 (x3.3, x3.5); 6.1's interactive 134/252 against 92
/// (x1.46, x2.73), batch 4915-9175 against 7995-8028 (x1.01-x1.63), lowprio 104858 against
/// 51642 (x2.03). A second at 18:37 UTC (`6.1-tw1837.kvms`, `6.12-tw1838.kvms`): 6.12's
/// interactive vCPUs shared pCPU 0 but 46% of their wakeups waited a burst, p50 158/143
/// against 38/38 (x4.19, x3.81); 6.1 within x2.37 (interactive 50/50 against 46). A third
/// at 18:43 UTC (`6.1-tw1843.kvms`, `6.12-tw1845.kvms`): 6.12's interactive vCPUs shared
/// pCPU 0 and recorded 639/635 us, but the replay's balancing put them on different pCPUs
/// (1149 and 1193 of their switch-ins on pCPUs 0 and 1), so neither waited the other's
/// burst: 39/39 (x16); 6.1 within x2.47. A p50 on the edge of two halves that far apart,
/// which half set by placement, is not a figure to assert. The batch and
/// lowprio waits also hang on placement: the kernel keeps its
/// vCPUs where they are (0.1-0.4 migrations/s) while the replay's balancing moves the batch
/// vCPUs 2-5 times a second, so 6.12's batch (x1.12-x3.31) and lowprio (x2.23-x5.20) waits
/// are the balancer's to match, not the tick's.
///
/// What the 6.1 guest's own scheduler state showed (`lab/suite/cfs-sample.sh` at 23:45 UTC:
/// samples asked every 100 ms came ~300 ms apart, and their reads ran as other tasks' load),
/// beside `simulate --param balance_trace=true` on the same recording: every task in the
/// root group (the debug file names no other), so `task_h_load` is each task's own load; each pCPU's root `cfs_rq` load_avg 2400-4500 (median 3350/3300), other
/// tasks' part mostly 700-2600 (median 1080/1380) where the model's background stand-ins
/// carry about 500/800; per pCPU 18 busy balances a second, 36% found an imbalance (mean
/// 485-572), 39% of those moved nothing, 110 tasks moved in 10 s (about 40 of them other
/// tasks': the recording's vCPU migrations are lowprio 48, batch 13, interactive 9), no
/// active balance. The model per pCPU (`balance_per_pcpu=true`) on that recording: 41%
/// imbalanced (mean 490), 51% of those moved nothing, batch vCPUs moved 30 times, lowprio
/// 40. The kernel fixes most imbalances with light tasks (the lowprio vCPU, other tasks'
/// threads), each success resetting its failure count; the model's background stays pinned
/// where the recording saw it, so its failures run on until a batch vCPU fits. Counting a
/// fitting queued stand-in as a successful pull, one stand-in per other task, or the
/// stand-ins' load x2-x5 in the balancer each left the batch vCPUs moving mostly 1-3 times a
/// second and the worst factors mixed. In ci1529 the kernel split the interactive vCPUs
/// across the pCPUs after its first second; the replay per pCPU puts both beside the lone
/// batch vCPU within 2 s and keeps that, balanced by load either way. A second sampled run
/// (00:20 UTC, a quieter host): other tasks' load median 1110 on each pCPU (the model's
/// stand-ins 530/840), 44% of busy balances imbalanced, 42% of those failed; that run's
/// kernel moved its batch vCPUs 29 times in 10 s, the replay per pCPU 31, and `cfs` held
/// it within x1.81 (lowprio 77070 us against 42467).
///
/// Not balancing: the lowprio vCPU's run length (01:00 UTC, `simulate --record` exported as
/// chrome-json beside the recording's). In 6.1-ci1742 the kernel switched lowprio in 144
/// times for 3.49 ms each, nearly always from one interactive vCPU's end to the next
/// interactive wakeup on the tick (its switch-outs: to an interactive vCPU 85, a batch vCPU
/// 39, another task 20); `cfs` 208 times for 2.40 ms (interactive 142, a background
/// stand-in 54, batch 12), 92 of them next to a stand-in's run within a slice. The
/// recording's untracked stretches begin on their pCPU's tick (638 of 1675) or right behind
/// a vCPU woken on it (895), 142 elsewhere; the replay's, whose gaps last as recorded, 75,
/// 649 and 1237. Lowprio runs per switch-in, kernel / cfs / `--param stand_in_on_tick=true`
/// (stand-ins woken on their pCPU's last tick before each recorded stretch), ms: ci1529
/// 3.33/2.40/2.20, ci1742 3.49/2.40/2.75, tw1825 17.86/3.25/3.66, tw1837 3.83/2.38/2.23,
/// tw1843 3.23/1.93/1.74. In tw1843 the replay also switched lowprio out for a batch vCPU
/// at a tick 57 times (the kernel once): its slice checks came on one grid from time 0 for
/// both pCPUs, 2.75 ms off pCPU 1's recorded phase, where the kernel checks the slice in
/// the interrupt whose timers wake the sleepers (`--param tick_phase=true` aligns them).
/// Worst factor (lowprio's), default -> both parameters: ci1529 x1.79 (x1.79) -> x1.83
/// (x1.83), ci1742 x2.65 (x1.55) -> x3.58 (x1.36), tw1825 x2.73 (x1.88) -> x2.73 (x1.75),
/// tw1837 x3.01 (x1.62) -> x3.44 (x1.89), tw1843 x1.96 (x1.91) -> x1.44 (x1.44); 6.12's
/// eevdf worst x3.13/x5.07/x3.63/x4.19/x1.16 -> x1.49/x3.31/x3.78/x4.29/x3.22, every change
/// in the worst being which batch or interactive vCPU shares a pCPU. So both stay off.
/// The recorder's own thread (`kvmscope`, 2.2 s of the 20 pCPU-seconds in ci1742; its ring
/// reads run SCHED_FIFO) shows as untracked background: 481 of its 571 runs ended with a
/// vCPU woken during the run taking the pCPU, 368 of them within 200 us of that wakeup,
/// i.e. preempted at wakeup as a fair-class task is, so treating it as fair background
/// holds for most of its time; its RT sections are short and not told apart.
pub fn replay_step(r: &Results, policy: &str, work: &Path, ctx: &dyn Fn(&str) -> String) -> String {
    use base64::Engine;
    let recorded = json(
        r.ok("demo.record")
            .unwrap_or_else(|e| panic!("{}", ctx(&e.to_string()))),
        "record --json",
    );
    let b64: String = r
        .ok("demo.kvms")
        .unwrap_or_else(|e| panic!("{}", ctx(&e.to_string())))
        .split_whitespace()
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("{}", ctx(&format!("demo recording: not base64: {e}"))));
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
