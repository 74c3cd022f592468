//! `kvmscope simulate` on recordings made without root (the model's synthetic demo stream
//! written as a trace file): the side-by-side table and JSON, byte-identical across runs;
//! `--record` output that `report` reads; one clear line and a non-zero exit for bad input.

mod common;
mod trace_file_synth;

use std::path::Path;

use common::{json_output, kvmscope, TempDir};
use model::trace_file::TraceWriter;

fn write_trace(path: &Path, events: &[model::Event]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = TraceWriter::new(file, &trace_file_synth::header()).unwrap();
    for e in events {
        w.write(e).unwrap();
    }
    w.finish().unwrap();
}

/// `SECS` seconds of the synthetic demo written as `t.trace` in a new directory `name`.
fn demo_trace(name: &str, secs: f64) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(name);
    let t = dir.path("t.trace");
    write_trace(&t, &model::synth::demo_stream(secs));
    (dir, t)
}

fn simulate(args: &[&str]) -> std::process::Output {
    kvmscope().arg("simulate").args(args).output().unwrap()
}

#[test]
fn all_policies_side_by_side_and_json_is_byte_identical() {
    let (_dir, t) = demo_trace("sim-table", 3.0);
    let ts = t.to_str().unwrap();
    let out = simulate(&[ts, "--policy", "all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "recorded",
        "cfs",
        "eevdf",
        "o1",
        "on",
        "credit",
        "sedf",
        "open loop",
    ] {
        assert!(text.contains(name), "no {name} in:\n{text}");
    }
    let a = simulate(&[ts, "--json"]);
    let b = simulate(&[ts, "--json"]);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout, "same input, different JSON");
    let doc: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let cols = doc["columns"].as_array().unwrap();
    assert_eq!(cols.len(), 7);
    // Every policy serves the same demand: each vCPU's share matches the recording's within
    // a point where the recording left room (the synthetic demo is not overcommitted on
    // average), and shares never exceed 1.
    for c in cols {
        for v in c["vcpus"].as_array().unwrap() {
            let s = v["cpu_share"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&s), "{c}");
        }
    }
}

#[test]
fn a_recorded_simulation_reads_back_like_any_recording() {
    let dir = TempDir::new("sim-record");
    let t = dir.path("t.trace");
    let out_trace = dir.path("credit.trace");
    write_trace(&t, &model::synth::demo_stream(2.0));
    let out = simulate(&[
        t.to_str().unwrap(),
        "--policy",
        "credit",
        "--record",
        out_trace.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep = kvmscope()
        .args(["report", "--json"])
        .arg(&out_trace)
        .output()
        .unwrap();
    assert!(
        rep.status.success(),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&rep.stdout).unwrap();
    let vcpus = doc["vcpus"].as_array().unwrap();
    assert!(!vcpus.is_empty(), "{doc}");
    assert!(vcpus.iter().any(|v| v["run_ns"].as_u64().unwrap() > 0));
    // And it is refused a second time without --force.
    let again = simulate(&[
        t.to_str().unwrap(),
        "--policy",
        "credit",
        "--record",
        out_trace.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
}

fn assert_one_line_error(out: &std::process::Output, needle: &str) {
    assert!(
        !out.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_input_is_one_clear_line_and_a_failure() {
    let (dir, t) = demo_trace("sim-bad", 1.0);
    let ts = t.to_str().unwrap();
    assert_one_line_error(&simulate(&[ts, "--policy", "bfs"]), "unknown policy");
    assert_one_line_error(
        &simulate(&[ts, "--param", "latnecy=3ms"]),
        "not a parameter",
    );
    assert_one_line_error(&simulate(&[ts, "--param", "cfs.latency=fast"]), "duration");
    assert_one_line_error(&simulate(&[ts, "--pcpus", "0"]), "--pcpus");
    assert_one_line_error(&simulate(&[ts, "--pcpus", "4097"]), "needs 1..=4096 pCPUs");
    // Below 0 and past u32 the same range, not the argument parser's "unexpected argument".
    assert_one_line_error(
        &simulate(&[ts, "--pcpus", "-1"]),
        "-1: the simulation needs 1..=4096 pCPUs",
    );
    assert_one_line_error(
        &simulate(&[ts, "--pcpus", "99999999999"]),
        "needs 1..=4096 pCPUs",
    );
    assert_one_line_error(
        &simulate(&[
            ts,
            "--policy",
            "sedf",
            "--param",
            "sedf.slice.vm0=30ms",
            "--param",
            "sedf.period.vm0=20ms",
        ]),
        // In the units it was given, not as 30000000 ns.
        "the slice of vm0 (30ms) is longer than its period (20ms)",
    );
    // Stand-ins wake on the tick only where sleeps end on it: alone, read and ignored.
    assert_one_line_error(
        &simulate(&[
            ts,
            "--policy",
            "cfs",
            "--param",
            "sleep_on_tick=false",
            "--param",
            "stand_in_on_tick=true",
        ]),
        "--param stand_in_on_tick=true needs --param sleep_on_tick=true",
    );
    assert_one_line_error(
        &simulate(&[
            ts,
            "--policy",
            "eevdf",
            "--param",
            "sleep_on_tick=false",
            "--param",
            "tick_phase=true",
        ]),
        "--param tick_phase=true needs --param sleep_on_tick=true",
    );
    // Saying they are off where they are off anyway (as a script does for every recording)
    // is accepted.
    let off = simulate(&[
        ts,
        "--policy",
        "cfs,eevdf",
        "--param",
        "sleep_on_tick=false",
        "--param",
        "stand_in_on_tick=false",
        "--param",
        "tick_phase=false",
    ]);
    assert!(
        off.status.success(),
        "{}",
        String::from_utf8_lossy(&off.stderr)
    );
    let with_ticks = simulate(&[
        ts,
        "--policy",
        "cfs",
        "--param",
        "sleep_on_tick=true",
        "--param",
        "stand_in_on_tick=true",
        "--param",
        "tick_phase=true",
    ]);
    assert!(
        with_ticks.status.success(),
        "{}",
        String::from_utf8_lossy(&with_ticks.stderr)
    );
    // A recording with no tracked threads.
    let empty = dir.path("empty.trace");
    write_trace(
        &empty,
        &[
            model::synth::switch(1_000, 0, 0, 77),
            model::synth::switch(2_000, 0, 77, 0),
        ],
    );
    assert_one_line_error(&simulate(&[empty.to_str().unwrap()]), "no tracked threads");
    assert_one_line_error(&simulate(&["/nonexistent/x.trace"]), "x.trace");
}

/// The demand comes from a FILE or from a live target observed for `--duration`: one of
/// them, and the live one with its duration, else one line that says what to give. Checked
/// before any probe or VM starts, so no privilege is needed to see them.
#[test]
fn a_file_or_a_live_target_with_a_duration_else_one_clear_line() {
    let (_dir, t) = demo_trace("sim-source", 1.0);
    let ts = t.to_str().unwrap();
    assert_one_line_error(
        &simulate(&[]),
        "nothing to simulate: give a trace FILE or a live target",
    );
    for target in [
        &["--demo"][..],
        &["--pid", "1"],
        &["--all-kvm"],
        &["--qemu"],
    ] {
        let mut with_file = vec![ts];
        with_file.extend_from_slice(target);
        with_file.extend_from_slice(&["--duration", "3"]);
        assert_one_line_error(&simulate(&with_file), "not both");
        assert_one_line_error(&simulate(target), "a live target needs --duration N");
    }
    assert_one_line_error(
        &simulate(&[ts, "--duration", "3"]),
        "--duration is for a live target",
    );
    assert_one_line_error(&simulate(&["--demo", "--duration", "0"]), "not a duration");
    // Counters mode has no switches to take a demand from: refused before observing.
    assert_one_line_error(
        &simulate(&["--demo", "--no-bpf", "--duration", "3"]),
        "counters mode (--no-bpf, or no BPF capabilities) has none",
    );
    // A bad policy is refused before the target is observed.
    assert_one_line_error(
        &simulate(&["--demo", "--duration", "3", "--policy", "bfs"]),
        "unknown policy",
    );
}

/// `--help` speaks to users: how the count is parsed is the code's business.
#[test]
fn the_help_says_what_each_option_does_not_how_it_is_parsed() {
    let out = kvmscope().args(["simulate", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--pcpus"), "{help}");
    assert!(help.contains("--duration"), "{help}");
    assert!(!help.contains("argument parser"), "{help}");
}

/// Hosts past 128 pCPUs (#15): `--pcpus` takes any count up to the model's bound, 4096.
#[test]
fn a_host_of_256_pcpus_simulates_under_every_policy() {
    let (_dir, t) = demo_trace("sim-256", 1.0);
    let ts = t.to_str().unwrap();
    let doc = json_output(kvmscope().args(["simulate", ts, "--pcpus", "256", "--json"]));
    assert_eq!(doc["pcpus"], 256, "{doc}");
    assert_eq!(doc["columns"].as_array().unwrap().len(), 7);
}

/// The fair shares are those of the simulated pCPU count, and one note says so (#16): on one
/// pCPU they add up to at most that pCPU, on the recording's two to more.
#[test]
fn fair_shares_follow_the_simulated_pcpus_and_a_note_says_which() {
    let (_dir, t) = demo_trace("sim-fair", 2.0);
    let ts = t.to_str().unwrap();
    let fair_sum = |args: &[&str]| -> (f64, String) {
        let doc = json_output(
            kvmscope()
                .args(["simulate", ts, "--policy", "cfs", "--json"])
                .args(args),
        );
        let sum = doc["demand"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["fair_share"].as_f64().unwrap())
            .sum();
        (sum, doc["fair"].as_str().unwrap().to_string())
    };
    let (on_two, note) = fair_sum(&[]);
    assert!(on_two > 1.0, "the demo wants more than one pCPU: {on_two}");
    assert!(
        note.ends_with("over the 2 simulated pCPUs (as recorded)"),
        "{note}"
    );
    let (on_one, note) = fair_sum(&["--pcpus", "1"]);
    assert!(
        on_one <= 1.0 + 1e-6,
        "fair shares on one pCPU add up to {on_one}"
    );
    assert!(
        note.contains("over the 1 simulated pCPU, not the recording's 2"),
        "{note}"
    );
    let text = simulate(&[ts, "--policy", "cfs", "--pcpus", "1"]);
    let text = String::from_utf8_lossy(&text.stdout);
    let notes: Vec<_> = text
        .lines()
        .filter(|l| l.starts_with("note: fair:"))
        .collect();
    assert_eq!(notes, [format!("note: {note}")], "{text}");
}

/// A vCPU that never slept wanted the CPU from its first wakeup to the end: its burst is
/// open. On the 2-pCPU synthetic demo the three spinning vCPUs (vm0's two and vm1's exiting
/// one, whose exits to the VMM are no sleeps) shared two pCPUs with the sleepy one and the
/// kworker. By default they replay as the CPU they were given, no more under `--pcpus 4`
/// than under the recording's 2, and the note says so and names the parameter that lifts
/// it. With `--param open_bursts=true` every policy but SEDF (which pins two of them to one
/// pCPU) gives each of them more than 95% of a pCPU (96.8-99.9%), and their fair share, from
/// the same demand, says so too.
#[test]
fn vcpus_that_never_slept_get_a_whole_pcpu_when_there_is_one() {
    let (_dir, t) = demo_trace("sim-cpu-bound", 2.0);
    let ts = t.to_str().unwrap();
    let spinning = ["vm0/vcpu0", "vm0/vcpu1", "vm1/vcpu0"];
    let as_given = json_output(kvmscope().args(["simulate", ts, "--pcpus", "4", "--json"]));
    let note = as_given["cpu_bound"].as_str().unwrap();
    assert!(
        note.starts_with(
            "cpu-bound: vm0/vcpu0, vm0/vcpu1, vm1/vcpu0 never slept: each replays as the CPU \
             time it was given"
        ) && note.contains("--param open_bursts=true"),
        "{note}"
    );
    let cols = as_given["columns"].as_array().unwrap();
    let share_in = |col: &serde_json::Value, label: &str| {
        let v = col["vcpus"].as_array().unwrap();
        v.iter().find(|v| v["label"] == label).unwrap()["cpu_share"]
            .as_f64()
            .unwrap()
    };
    for col in &cols[1..] {
        for label in spinning {
            let (got, given) = (share_in(col, label), share_in(&cols[0], label));
            assert!(
                got <= given + 0.005,
                "{}: {label} got {got}, more than the {given} it was given",
                col["name"]
            );
        }
    }

    let doc = json_output(kvmscope().args([
        "simulate",
        ts,
        "--pcpus",
        "4",
        "--param",
        "open_bursts=true",
        "--json",
    ]));
    let note = doc["cpu_bound"].as_str().unwrap();
    assert!(
        note.starts_with(
            "cpu-bound: vm0/vcpu0, vm0/vcpu1, vm1/vcpu0 never slept: each wants the CPU from \
             its first wakeup to the end"
        ),
        "{note}"
    );
    for d in doc["demand"].as_array().unwrap() {
        if spinning.contains(&d["label"].as_str().unwrap()) {
            let fair = d["fair_share"].as_f64().unwrap();
            assert!(fair > 0.99, "fair share of {}: {fair}", d["label"]);
        }
    }
    let cols = doc["columns"].as_array().unwrap();
    assert_eq!(cols.len(), 7, "recorded and six policies");
    for col in &cols[1..] {
        if col["name"] == "sedf" {
            // SEDF keeps each vCPU on pCPU `vcpu_id mod 4` (no migration): vm0's and vm1's
            // vcpu0 share pCPU 0, vm0/vcpu1 shares pCPU 1 with the sleepy vm1/vcpu1. Each
            // of the two pCPUs is kept busy by its spinning vCPUs.
            for (a, b) in [("vm0/vcpu0", "vm1/vcpu0"), ("vm0/vcpu1", "vm1/vcpu1")] {
                let both = share_in(col, a) + share_in(col, b);
                assert!(both > 0.95, "sedf: {a} and {b} got {both} of their pCPU");
            }
            continue;
        }
        for label in spinning {
            let got = share_in(col, label);
            assert!(
                got > 0.95,
                "{}: {label} got {got} of a pCPU with --pcpus 4",
                col["name"]
            );
        }
    }
    let text = simulate(&[
        ts,
        "--policy",
        "cfs",
        "--pcpus",
        "4",
        "--param",
        "open_bursts=true",
    ]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("note: {note}\n")), "{text}");
}

#[test]
fn the_balance_trace_shows_each_balance_and_changes_no_figure() {
    let (_dir, t) = demo_trace("sim-balance-trace", 3.0);
    let ts = t.to_str().unwrap();
    for rule in ["balance_per_pcpu=false", "balance_per_pcpu=true"] {
        let args = |trace: bool| {
            let mut a = vec![ts, "--policy", "cfs,eevdf", "--json", "--param", rule];
            if trace {
                a.extend(["--param", "balance_trace=true"]);
            }
            a
        };
        let (plain, traced) = (simulate(&args(false)), simulate(&args(true)));
        assert!(plain.status.success() && traced.status.success());
        assert!(plain.stderr.is_empty(), "{rule}: a trace without asking");
        let columns = |out: &std::process::Output| {
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            doc["columns"].clone()
        };
        assert_eq!(
            columns(&plain),
            columns(&traced),
            "{rule}: the trace changed the run"
        );
        let stderr = String::from_utf8_lossy(&traced.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        // Each line names its run: both policies' balances, told apart.
        for policy in ["cfs", "eevdf"] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(&format!("balance {policy} "))),
                "{rule}: no {policy} line: {stderr}"
            );
        }
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("balance cfs ") || l.starts_with("balance eevdf ")),
            "{rule}: {stderr}"
        );
        // Each balance names every pCPU's load; the demo stream has 2 pCPUs.
        let balances = lines.iter().filter(|l| !l.contains(" move ")).count();
        assert!(balances > 10, "{rule}: {balances} balances in 3 s");
        assert!(
            lines
                .iter()
                .filter(|l| !l.contains(" move "))
                .all(|l| l.contains("pcpu0 load ") && l.contains("pcpu1 load ")),
            "{rule}: {stderr}"
        );
        // No balance moves more threads than the replay counts migrations.
        let moves = lines.iter().filter(|l| l.contains(" move ")).count() as f64;
        let doc: serde_json::Value = serde_json::from_slice(&traced.stdout).unwrap();
        let migrations: f64 = doc["columns"]
            .as_array()
            .unwrap()
            .iter()
            .skip(1)
            .flat_map(|c| c["vcpus"].as_array().unwrap().clone())
            .map(|v| v["migrations_per_s"].as_f64().unwrap() * doc["span_s"].as_f64().unwrap())
            .sum();
        assert!(
            moves <= migrations + 0.5,
            "{rule}: {moves} moves traced, {migrations} migrations"
        );
    }
}
