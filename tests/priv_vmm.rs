//! `kvmscope vmm` end to end: the binary runs VMs on real KVM, ends on time, names its
//! threads, prints one JSON document, and fails with one clear line on bad input or a
//! crashing guest.

mod common;
use common::*;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run kvmscope");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The error line the binary printed: exactly one line, starting with `kvmscope:`.
fn one_error_line(code: i32, stderr: &str) -> String {
    assert_ne!(code, 0, "expected failure, stderr: {stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("kvmscope:"))
        .collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    lines[0].to_string()
}

fn scenario_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn a_2x2_spin_run_ends_on_time_with_one_json_document() {
    if !privileged(Privilege::Kvm) {
        return;
    }
    let t = Instant::now();
    let (code, stdout, stderr) = run(kvmscope().args([
        "vmm",
        "--vms",
        "2",
        "--vcpus",
        "2",
        "--workload",
        "spin",
        "--duration",
        "2",
        "--json",
    ]));
    let took = t.elapsed();
    assert_eq!(code, 0, "{stderr}");
    // 2 s of guests, plus start-up (TSC calibration, VM setup) and the kick/join.
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_millis(3500), "{took:?}");

    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    let vcpus = doc["vcpus"].as_array().unwrap();
    assert_eq!(vcpus.len(), 4);
    let d = doc["duration_s"].as_f64().unwrap();
    assert!((d - 2.0).abs() < 0.2, "{d}");
    for v in vcpus {
        assert!(v["tid"].as_u64().unwrap() > 0, "{v}");
        assert!(v["work_units"].as_u64().unwrap() > 0, "{v}");
        // 4 busy vCPUs on 2 pCPUs (or fewer): every one is kept off the CPU at times.
        assert!(v["gaps"].as_u64().unwrap() > 0, "{v}");
        assert!(v["gap_ns"].as_u64().unwrap() > 0, "{v}");
        assert!(v["run_ns"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(v["workload"], "spin");
        assert_eq!(v["exits"]["bad_values"], 0);
        assert!(v["units_per_s"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn vcpu_threads_are_named_and_knobs_applied() {
    if !privileged(Privilege::Kvm) {
        return;
    }
    let child = kvmscope()
        .args([
            "vmm",
            "--vms",
            "2",
            "--vcpus",
            "2",
            "--workload",
            "mixed",
            "--duration",
            "1.5",
            "--pin",
            "all=0",
            "--nice",
            "vm1=5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let pid = child.id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid: u32 = entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .parse()
            .unwrap();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap();
        let comm = comm.trim().to_string();
        if comm.starts_with("vm") && comm.contains("-vcpu") {
            let sched = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/sched")).unwrap();
            let weight = sched
                .lines()
                .find(|l| l.starts_with("se.load.weight"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
                .unwrap();
            let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
            let cpus = status
                .lines()
                .find(|l| l.starts_with("Cpus_allowed_list:"))
                .map(|l| l.split(':').nth(1).unwrap().trim().to_string())
                .unwrap();
            found.push((comm, weight, cpus));
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    found.sort();
    let names: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["vm0-vcpu0", "vm0-vcpu1", "vm1-vcpu0", "vm1-vcpu1"]);
    for (name, weight, cpus) in &found {
        assert_eq!(cpus, "0", "{name}");
        // nice 5 weighs 335 (× 1024 on 64-bit kernels), nice 0 weighs 1024.
        let expected = if name.starts_with("vm1") {
            335 * 1024
        } else {
            1024 * 1024
        };
        assert_eq!(weight, &expected.to_string(), "{name}");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("vm1-vcpu0") && text.contains("sleepy"),
        "{text}"
    );
}

#[test]
fn a_triple_faulting_guest_is_one_clear_error() {
    if !privileged(Privilege::Kvm) {
        return;
    }
    let f = scenario_file(
        "[[vm]]\nname = \"healthy\"\nvcpus = 2\nworkload = \"spin\"\n\
         [[vm]]\nname = \"broken\"\nvcpus = 1\nworkload = \"triple-fault\"\n",
    );
    let t = Instant::now();
    let (code, stdout, stderr) = run(kvmscope()
        .args(["vmm", "--duration", "30", "--scenario"])
        .arg(f.path()));
    // The crash ends the run at once, not at --duration.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let line = one_error_line(code, &stderr);
    assert!(line.contains("vm1 (broken) vCPU 0"), "{line}");
    assert!(line.contains("KVM_EXIT_SHUTDOWN"), "{line}");
    assert!(line.contains("triple-faulted"), "{line}");
    assert!(stdout.is_empty(), "{stdout}");
}

#[test]
fn bad_scenarios_and_flags_name_the_offending_value() {
    // These fail before /dev/kvm is opened: no privilege needed.
    let f = scenario_file("[[vm]]\nname = \"a\"\nvcpus = 2\nworkload = \"jog\"\n");
    let (code, _, stderr) = run(kvmscope().args(["vmm", "--scenario"]).arg(f.path()));
    let line = one_error_line(code, &stderr);
    assert!(line.contains("jog") && line.contains("line 4"), "{line}");
    assert!(line.contains(&f.path().display().to_string()), "{line}");

    let f = scenario_file("[[vm]]\nname = \"a\"\nvcpus = 99\nworkload = \"spin\"\n");
    let (code, _, stderr) = run(kvmscope().args(["vmm", "--scenario"]).arg(f.path()));
    assert!(one_error_line(code, &stderr).contains("vcpus = 99"));

    let (code, _, stderr) = run(kvmscope().args(["vmm", "--scenario", "/nonexistent.toml"]));
    assert!(one_error_line(code, &stderr).contains("/nonexistent.toml"));

    for (args, needle) in [
        (&["--workload", "jog"][..], "'jog'"),
        (&["--pin", "vm0:cpu1=1"][..], "`vm0:cpu1=1`"),
        (&["--pin", "all=x"][..], "`x`"),
        (&["--nice", "vm9=1"][..], "no VM `vm9`"),
        (&["--nice", "vm0=30"][..], "`30`"),
        // VM knobs: Scenario::plan is their one validator, with a scenario file's words.
        (&["--vcpus", "0"][..], "vcpus = 0 is out of range"),
        (
            &["--migrate-every", "0"][..],
            "migrate_every_ms must be at least 1",
        ),
        (
            &["--sleep-us", "5000000"][..],
            "sleep_us = 5000000 is out of range",
        ),
        (
            &["--sleep-us", "0"][..],
            "sleep_us = 0 is out of range (1 to",
        ),
        (
            &["--gap-threshold-us", "0"][..],
            "gap_threshold_us 0 is out of range",
        ),
        (&["--vms", "65"][..], "65 VMs is out of range (1 to 64)"),
        // Durations: the one parser every command's --duration uses.
        (&["--duration=-1"][..], "`-1` is not a duration"),
        (&["--duration", "soon"][..], "`soon` is not a duration"),
    ] {
        let (code, _, stderr) = run(kvmscope().arg("vmm").args(args));
        let line = one_error_line(code, &stderr);
        assert!(line.contains(needle), "{args:?}: {line}");
    }
}

#[test]
fn ctrl_c_stops_the_vmm_and_prints_the_summary() {
    if !privileged(Privilege::Kvm) {
        return;
    }
    let child = kvmscope()
        .args(["vmm", "--vms", "1", "--vcpus", "2", "--workload", "sleepy"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // libc: std's Child::kill sends only SIGKILL.
    // SAFETY: kill on the pid of a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("running until Ctrl-C"), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("vm0-vcpu0") && text.contains("vm0-vcpu1"),
        "{text}"
    );
}
