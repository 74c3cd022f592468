//! Validation against reality: a 20 s demo recording made on this host's kernel (EEVDF on
//! 6.18), replayed through the `eevdf` model, reproduces the CPU share of every vCPU within
//! 5 points, and, when no other autogroup took more than [`QUIET`] of the pCPUs' time
//! during the recording, its run-queue wait p50 within a factor of 2 (the goal).
//! Every run prints the figures and "asserted" or "not asserted: why".
//!
//! Why the condition: this host has `CONFIG_SCHED_AUTOGROUP=y` with
//! `kernel.sched_autogroup_enabled=1`, so each session is a task group, and the flat model
//! (no groups; see the last paragraphs) gets the waits of a host where other sessions run
//! wrong. The test measures that instead of hoping: `common::autogroup_load` reads every
//! process's CPU time and autogroup every 100 ms while the recording runs and sums it per
//! autogroup (children that end between reads counted through their reaper; what
//! `/proc/stat` has beyond the groups' sum printed as unattributed, also held to
//! [`QUIET`]). Load in the test's own session (other nextest tests, a busy loop started
//! from the same shell) is not held against it: the kernel shares a group's pCPU time
//! among its tasks as the flat model shares a pCPU.
//! Measured 2026-12-06 18:12-18:22 UTC (others' builds in their own autogroups): other
//! autogroups at 21% of the pCPUs gave waits x5.7 (batch) and x6.6 (interactive) off; at
//! 44%, batch within x1.03 but interactive x9-30; at 60-78% (one with a busy loop in a
//! `setsid` session: 8.5 s of its own group) interactive 270-1000x. The last CI run (clean
//! clone beside the other nextest tests, no other session busy) had every wait within x1.18.
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
//! The replay charges each wakeup that gets a pCPU at once the dispatch delay measured from
//! the recording (the median wake-to-run of recorded wakeups that preempted: 6-7 us here, a
//! figure `simulate` prints); before, a woken vCPU ran the instant it preempted and sleepy
//! vCPUs waited 0 us. Measured 2026-12-06 14:29 UTC (load ~9): waits p50 8585/6357/8454 us
//! (batch), 4653/4030 (interactive), 57672 (lowprio) recorded against 5177/3031/4686, 7/7 and
//! 35914 us in the eevdf replay: batch and lowprio within a factor of 2.1, interactive not.
//! At 14:37 (quieter: the demo got 26/31/26%): 2834/2179/2687, 41/545 and 25821 us recorded
//! against 3228/606/3211, 6/6 and 22020 us (batch/vcpu1 3.6x off).
//!
//! Still open: run-queue wait p50 within a factor of 2 beside other sessions' load (printed,
//! not asserted). The interactive vCPUs'
//! recorded waits here are set by the other load, through a rule the flat model
//! does not have: `CONFIG_SCHED_AUTOGROUP=y` with `kernel.sched_autogroup_enabled=1`, so
//! every session is a task group and the kernel shares each pCPU first among the groups'
//! entities, then among the tasks of a group. The demo's VMM is one group; a woken vCPU
//! preempts a task of another group only if its group's entity wins the pick at the root
//! (`find_matching_se` in `check_preempt_wakeup_fair`), so its own lag credit does not help
//! it there. Measured 2026-12-06 10:45-10:50 UTC with six engineers' builds running, each in
//! its own autogroup (autogroup-724..730, load 12-13): the demo got 6.5/8.2/6.5% (batch),
//! 3.3/3.2% (interactive), 0.9% (lowprio), reproduced exactly, but waits p50 were
//! 26477/14352/24642, 9372/11010 and 149946 us recorded against 5997/3277/6128, 0/0 and
//! 38011 us in the eevdf replay, which has one background stand-in per pCPU in the same
//! flat queue. `--param place_lag=false` (a crude stand-in for "no lag credit against the
//! other groups") gave 8028/7799/9241, 5014/5308 and 77595 us: interactive within 2x, batch
//! not (3.3x). Modelling it needs task groups in the fair policies and a background of as
//! many groups as were runnable, which the recording does not carry (it sees untracked tasks
//! only as the other side of a tracked switch).
//!
//! With balancing by PELT load (#16), 2026-12-06 16:29 UTC, load 6-8 (four engineers' builds):
//! batch 9961/5964/8585 us recorded against 5833/3178/5177 (x1.66-1.88), interactive
//! 5308/4129 against 7/7, lowprio 73925 against 30278 (x2.44); shares within 0.06 points. The
//! rules the issue suspected do not explain the interactive gap: RUN_TO_PARITY is modelled
//! (on a 13:47 recording, load ~9, `--param run_to_parity=false` leaves the interactive
//! waits at 7 us against 5308/3490 recorded), and DELAY_DEQUEUE acts only on a sleep with
//! negative lag, 1.6% of the interactive vCPUs' sleeps in that replay.
//!
//! With task groups (`--param groups=true`, #16; printed on each run beside the flat
//! figures, the background weighing as many sessions as the sampler saw busy), on ten demo
//! recordings of 2026-12-06 18:18-18:58 UTC with 2-5 other sessions busy (22-104% of the
//! pCPUs): the worst vCPU's wait p50 factor went from 220-1375x flat (3.8x at 22%) to
//! 2.1-7.0x (median 3.6x); the interactive vCPUs' simulated waits from 6-7 us to 0.2-2.7 ms
//! against 1.4-9.4 ms recorded. Not within 2x run after run, so not asserted. The likely
//! rest (not measured): the background's demand. The recording sees other sessions' tasks
//! only while they ran, not while they waited, so the open-loop replay gives them less than
//! they asked for; and it does not say which session each stretch was, so the background
//! is one group however many sessions there were.

//! With the recording's own task groups (`groups=auto`, the default since trace format 4
//! carries each task's autogroup or cgroup, #16): three recordings of 2026-12-06 22:08-22:10
//! UTC, other autogroups at 66-80% of the pCPUs (others' builds, plus 0-2 `setsid` busy
//! loops), worst vCPU wait p50 factor flat 446/1747/1302x, `groups=true` with
//! `background_shares` = 1024 x busy sessions 9.9/21.4/8.4x, recorded groups 8.1/14.4/25.1x.
//! Batch and lowprio vCPUs came within 1.0-2.1x (recorded groups); the interactive ones
//! not (0.3-1.0 ms simulated against 3-9 ms recorded). With a background group's burst
//! kept going through its preemptions (22:40-22:46 UTC): at 83% others (one busy loop, a
//! QEMU, a build) flat 712x, `groups=true` 3.45x, recorded groups 1.86x (every vCPU
//! within 2x); at 57% (two busy loops in their own sessions) flat 188x, `groups=true` 22.5x,
//! recorded groups 19.2x (interactive/vcpu1 72 us simulated against 1376 us recorded, the
//! rest within 3x); at 26% others (one build) all three 3.57x, set by interactive waits of
//! 7 us simulated against 25 us recorded, which groups do not change. Not within 2x run
//! after run, so the assertion stays on quiet hosts; every run prints the three models'
//! worst factors.

mod common;

use common::autogroup_load::{AutogroupLoad, LoadReport};
use common::{json_output, kvmscope, privileged, wait_factor, Privilege, TempDir};

/// The most CPU time tasks of other autogroups (and time no group accounts for) may take
/// during the recording, each as a share of the pCPUs' time, for the flat model's waits to
/// be held to the recorded ones (see the figures above).
const QUIET: f64 = 0.05;

/// `kvmscope simulate --policy eevdf --json TRACE` with `params`, as JSON.
fn simulate_eevdf(trace: &std::path::Path, params: &[String]) -> serde_json::Value {
    let mut cmd = kvmscope();
    cmd.args(["simulate", "--policy", "eevdf", "--json"])
        .arg(trace);
    for p in params {
        cmd.args(["--param", p]);
    }
    json_output(&mut cmd)
}

/// Each vCPU's (label, recorded and simulated wait p50 in us, their factor) in the `eevdf`
/// column of a `simulate --json` document.
fn waits(doc: &serde_json::Value) -> Vec<(String, f64, f64, f64)> {
    let cols = doc["columns"].as_array().unwrap();
    cols[0]["vcpus"]
        .as_array()
        .unwrap()
        .iter()
        .zip(cols[1]["vcpus"].as_array().unwrap())
        .map(|(r, s)| {
            let (rw, sw) = (
                r["wait_p50_us"].as_f64().unwrap(),
                s["wait_p50_us"].as_f64().unwrap(),
            );
            (r["label"].to_string(), rw, sw, wait_factor(rw, sw))
        })
        .collect()
}

fn worst(waits: &[(String, f64, f64, f64)]) -> f64 {
    waits.iter().map(|w| w.3).fold(1.0, f64::max)
}

/// The waits of the other models beside the default's (`groups=auto`, the recording's task
/// groups): flat (`groups=false`) and one background group weighing as many autogroups as
/// were busy, each past [`QUIET`] of the pCPUs' time (`groups=true`). Printed, not asserted:
/// the evidence for modelling other sessions' load.
fn print_other_models(trace: &std::path::Path, load: &LoadReport, auto_worst: f64) {
    let busy = load
        .others
        .iter()
        .filter(|o| load.of_capacity(o.2) > QUIET)
        .count()
        .max(1);
    let per_process = [
        "groups=true".to_string(),
        format!("background_shares={}", 1024 * busy),
    ];
    let flat = worst(&waits(&simulate_eevdf(
        trace,
        &["groups=false".to_string()],
    )));
    let grouped = waits(&simulate_eevdf(trace, &per_process));
    let pairs: Vec<String> = grouped
        .iter()
        .map(|(l, rw, sw, f)| format!("{l} {rw:.0}/{sw:.0} us (x{f:.2})"))
        .collect();
    eprintln!(
        "with task groups ({}): wait p50 recorded/simulated {}",
        per_process.join(" "),
        pairs.join(", ")
    );
    eprintln!(
        "worst wait p50 factor: flat (groups=false) x{flat:.2}, {} x{:.2}, recorded groups (groups=auto) x{auto_worst:.2}; other autogroups {:.1}% of the pCPUs",
        per_process.join(" "),
        worst(&grouped),
        load.of_capacity(load.others_s()) * 100.0
    );
}

#[test]
fn eevdf_replay_of_a_demo_recording_reproduces_each_vcpu_share() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let dir = TempDir::new("priv-simulate");
    let t = dir.path("demo.trace");
    let load = AutogroupLoad::start();
    let rec = kvmscope()
        .args(["record", "--demo", "--duration", "20", "-o"])
        .arg(&t)
        .output()
        .unwrap();
    let load = load.finish();
    assert!(
        rec.status.success(),
        "{}",
        String::from_utf8_lossy(&rec.stderr)
    );
    eprintln!("{load}");
    let doc = simulate_eevdf(&t, &[]);
    let cols = doc["columns"].as_array().unwrap();
    let (rec, sim) = (&cols[0], &cols[1]);
    assert_eq!(rec["name"], "recorded");
    assert_eq!(sim["name"], "eevdf");
    let rv = rec["vcpus"].as_array().unwrap();
    let sv = sim["vcpus"].as_array().unwrap();
    assert_eq!(rv.len(), 6, "the demo has 6 vCPUs: {doc}");
    let mut errors = Vec::new();
    let mut factors = Vec::new();
    for (r, s) in rv.iter().zip(sv) {
        let (rs, ss) = (
            r["cpu_share"].as_f64().unwrap(),
            s["cpu_share"].as_f64().unwrap(),
        );
        let (rw, sw) = (
            r["wait_p50_us"].as_f64().unwrap(),
            s["wait_p50_us"].as_f64().unwrap(),
        );
        let factor = wait_factor(rw, sw);
        eprintln!(
            "{}: share recorded {:.1}% simulated {:.1}% (error {:.2} points); wait p50 recorded {rw:.0} us simulated {sw:.0} us (x{factor:.2})",
            r["label"],
            rs * 100.0,
            ss * 100.0,
            (rs - ss).abs() * 100.0
        );
        errors.push((r["label"].to_string(), (rs - ss).abs()));
        factors.push((r["label"].to_string(), factor));
    }
    let worst = errors.iter().map(|e| e.1).fold(0.0, f64::max);
    assert!(worst <= 0.05, "share errors {errors:?}");
    let others = load.of_capacity(load.others_s());
    let unattributed = load.of_capacity(load.unattributed_s.abs());
    if others <= QUIET && unattributed <= QUIET {
        eprintln!(
            "wait p50 within 2x: asserted (other autogroups and unattributed time each at most {:.0}% of the pCPUs)",
            QUIET * 100.0
        );
        let off: Vec<_> = factors.iter().filter(|f| f.1 > 2.0).collect();
        assert!(
            off.is_empty(),
            "wait p50 beyond a factor of 2 on a host without other autogroups' load: {off:?} ({load})"
        );
    } else {
        eprintln!(
            "wait p50 within 2x: not asserted: other autogroups took {:.1}% of the pCPUs and {:.1}% is unattributed (at most {:.0}% each for the flat model to hold)",
            others * 100.0,
            unattributed * 100.0,
            QUIET * 100.0
        );
    }
    print_other_models(&t, &load, factors.iter().map(|f| f.1).fold(1.0, f64::max));
    // The recording carries this host's HZ, and the replay charges a measured dispatch
    // delay (this host's kernel configuration is readable, so HZ is the configured one).
    let tick = doc["tick"].as_str().unwrap();
    assert!(tick.starts_with("tick: HZ="), "{tick}");
    let charged = doc["wake_cost"]["charged_preempt_us"].as_f64().unwrap();
    let preempted = doc["wake_cost"]["preempt_wakeups"].as_u64().unwrap();
    eprintln!("{tick}; {}", doc["dispatch"].as_str().unwrap());
    assert!(
        preempted > 0 && charged > 0.0,
        "no dispatch delay measured: {}",
        doc["wake_cost"]
    );
}
