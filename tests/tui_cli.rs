//! The dashboard commands refuse bad input with one clear line and a non-zero status, before
//! touching the terminal (these run without a terminal and without privileges).

mod common;
mod trace_file_synth;
use common::*;

use std::process::Output;

fn stderr_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(out.status.code(), Some(1), "exit status; stderr: {err}");
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    assert_eq!(err.lines().count(), 1, "one line of error, got: {err}");
    assert!(err.starts_with("kvmscope: "), "{err}");
    err
}

#[test]
fn replay_of_a_missing_file_names_it() {
    let out = kvmscope()
        .args(["replay", "/nonexistent/kvmscope-trace.kst"])
        .output()
        .unwrap();
    let err = stderr_line(&out);
    assert!(err.contains("/nonexistent/kvmscope-trace.kst"), "{err}");
}

#[test]
fn replay_of_a_file_that_is_not_a_trace_says_so() {
    let path = std::env::temp_dir().join(format!("kvmscope-tui-cli-{}.kst", std::process::id()));
    std::fs::write(&path, b"this is not a kvmscope trace file\n").unwrap();
    let out = kvmscope().arg("replay").arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    let err = stderr_line(&out);
    assert!(
        err.contains(&path.display().to_string()) || err.contains("trace"),
        "{err}"
    );
}

/// A recording of untracked tasks only: the dashboard would wait for vCPUs forever.
#[test]
fn replay_of_a_file_with_no_tracked_thread_says_so() {
    let dir = TempDir::new("replay-untracked");
    let path = dir.path("untracked.trace");
    let file = std::fs::File::create(&path).unwrap();
    let mut writer =
        model::trace_file::TraceWriter::new(file, &trace_file_synth::header()).unwrap();
    for ev in [
        model::synth::switch(1_000, 0, 0, 77),
        model::synth::switch(2_000, 0, 77, 0),
    ] {
        writer.write(&ev).unwrap();
    }
    writer.finish().unwrap();
    let err = stderr_line(&kvmscope().arg("replay").arg(&path).output().unwrap());
    assert!(err.contains("announces no tracked thread"), "{err}");
}

#[test]
fn replay_refuses_a_nonsense_speed() {
    let out = kvmscope()
        .args(["replay", "x.kst", "--speed", "0"])
        .output()
        .unwrap();
    let err = stderr_line(&out);
    assert!(err.contains("--speed"), "{err}");
}

#[test]
fn demo_refuses_a_bad_tick_rate_and_duration() {
    let err = stderr_line(
        &kvmscope()
            .args(["demo", "--tick-hz", "0"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("--tick-hz"), "{err}");
    let err = stderr_line(
        &kvmscope()
            .args(["demo", "--duration", "0"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("--duration"), "{err}");
}

#[test]
fn dashboards_need_a_terminal() {
    // stdout is a pipe here: refuse before starting VMs or probes.
    for args in [&["demo"][..], &["top", "--pid", "1"][..]] {
        let err = stderr_line(&kvmscope().args(args).output().unwrap());
        assert!(err.contains("needs a terminal"), "{args:?}: {err}");
        assert!(
            err.starts_with(&format!("kvmscope: {} draws", args[0])),
            "{err}"
        );
    }
}

#[test]
fn top_and_replay_refuse_rates_out_of_range_before_anything_else() {
    for args in [
        &["top", "--tick-hz", "1000"][..],
        &["top", "--tick-hz", "nan"],
        &["demo", "--tick-hz", "0.1"],
    ] {
        let err = stderr_line(&kvmscope().args(args).output().unwrap());
        assert!(
            err.contains("--tick-hz") && err.contains("0.5 to 100"),
            "{err}"
        );
    }
    for speed in ["nan", "-1", "inf", "fast"] {
        let err = stderr_line(
            &kvmscope()
                .args(["replay", "x.kst", &format!("--speed={speed}")])
                .output()
                .unwrap(),
        );
        assert!(err.contains("--speed") && err.contains("above 0"), "{err}");
    }
}

/// `vmm --workload` takes the workload names themselves (clap lists them), nothing else.
#[test]
fn vmm_refuses_an_unknown_workload_naming_the_known_ones() {
    let err = stderr_line(
        &kvmscope()
            .args(["vmm", "--workload", "spinny"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("--workload"), "{err}");
    for name in ["spin", "exits", "sleepy", "mixed", "triple-fault"] {
        assert!(err.contains(name), "{name} missing from: {err}");
    }
}
