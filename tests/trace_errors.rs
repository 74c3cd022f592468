//! `kvmscope trace` refuses bad input and missing privilege with one clear line and a
//! non-zero exit. None of these need KVM or BPF.

mod common;
use common::*;

use std::process::{Command, Output, Stdio};

fn is_root() -> bool {
    hostfacts::euid() == 0
}

/// Exit status failed, stderr is exactly one line that contains `needle`, no panic.
fn assert_clear_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "unexpected stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Without BPF capabilities a live command starts in counters mode, saying so in one line;
/// a user without /dev/kvm then gets one clear line for that.
#[test]
fn not_root_falls_back_to_counters_mode_then_names_what_is_missing() {
    let bin = env!("CARGO_BIN_EXE_kvmscope");
    let out = if is_root() {
        // Drop to `nobody` like a normal user would be.
        let setpriv = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", bin])
            .args(["trace", "--demo", "--duration", "1"])
            .stdin(Stdio::null())
            .output();
        match setpriv {
            Ok(out) => out,
            Err(e) => panic!("cannot run setpriv (util-linux) to drop root: {e}"),
        }
    } else {
        kvmscope()
            .args(["trace", "--demo", "--duration", "1"])
            .output()
            .unwrap()
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(
        lines.first().is_some_and(|l| l.contains(
            "cannot load BPF without CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): counters mode"
        )),
        "no counters-mode line first: {stderr}"
    );
    // `nobody` has no /dev/kvm on most hosts: then one more line says so, and it fails.
    if !out.status.success() {
        assert_eq!(lines.len(), 2, "not one line after the notice: {stderr}");
        assert!(lines[1].contains("/dev/kvm"), "{stderr}");
    }
}

#[test]
fn a_pid_that_does_not_exist_is_refused_clearly() {
    // pid_max is at most 2^22, so this pid cannot exist. --no-bpf: no root needed to get here.
    let out = kvmscope()
        .args(["trace", "--no-bpf", "--pid", "4194305", "--duration", "1"])
        .output()
        .unwrap();
    assert_clear_error(&out, "process 4194305 does not exist");
}

#[test]
fn a_pid_without_vcpus_is_refused_clearly() {
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let out = kvmscope()
        .args(["trace", "--no-bpf", "--duration", "1", "--pid"])
        .arg(sleeper.id().to_string())
        .output()
        .unwrap();
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert_clear_error(
        &out,
        &format!("process {} (sleep) holds no KVM vCPU", sleeper.id()),
    );
}

#[test]
fn a_bad_duration_is_refused_clearly() {
    let out = kvmscope()
        .args(["trace", "--no-bpf", "--pid", "1", "--duration", "-3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_log_file_that_cannot_be_opened_is_refused_clearly() {
    // --log-file is global: before or after the subcommand, on every command.
    for args in [
        &["--log-file", "/nonexistent-dir/k.log", "check"][..],
        &[
            "trace",
            "--pid",
            "1",
            "--log-file",
            "/nonexistent-dir/k.log",
        ][..],
    ] {
        let out = kvmscope().args(args).output().unwrap();
        assert_clear_error(&out, "cannot open log file /nonexistent-dir/k.log");
    }
}

/// A recording holds events only: `record` refuses to aggregate exits, before starting
/// anything and without touching the output path.
#[test]
fn record_refuses_aggregated_exits_clearly() {
    let out_path = std::env::temp_dir().join(format!("exitagg-{}.kvms", std::process::id()));
    let out = kvmscope()
        .args([
            "record",
            "--demo",
            "--exits",
            "aggregate",
            "--duration",
            "1",
            "-o",
        ])
        .arg(&out_path)
        .output()
        .unwrap();
    assert_clear_error(&out, "record streams every exit");
    assert!(!out_path.exists(), "record created {}", out_path.display());
}
