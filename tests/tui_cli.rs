//! The dashboard commands refuse bad input with one clear line and a non-zero status, before
//! touching the terminal (these run without a terminal and without privileges).

mod common;
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
    }
}
