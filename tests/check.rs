//! `kvmscope check` tells the truth about this host: exit 0 as root where the live features
//! run, the KVM flavour and which tracepoints cannot fire, and a clear refusal for `nobody`.

mod common;
use common::*;

use std::path::Path;

fn flavour_from_host() -> &'static str {
    if Path::new("/sys/module/kvm_pvm").exists() {
        return "pvm";
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    if flags.split_whitespace().any(|f| f == "vmx") {
        "vmx"
    } else if flags.split_whitespace().any(|f| f == "svm") {
        "svm"
    } else {
        "none"
    }
}

#[test]
fn check_passes_as_root_and_names_the_kvm_flavour() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let out = kvmscope().arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("live tracing: can run here"), "{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no `{name}` line in:\n{text}"))
            .to_string()
    };
    assert!(line("/dev/kvm").starts_with("ok"), "{text}");
    assert!(line("sched:sched_switch").starts_with("ok"), "{text}");
    assert!(line("BTF").starts_with("ok"), "{text}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(line("kernel").contains(release.trim()), "{text}");
    match flavour_from_host() {
        "pvm" => {
            assert!(line("/dev/kvm").contains("PVM"), "{text}");
            for tp in ["kvm:kvm_entry", "kvm:kvm_exit"] {
                let l = line(tp);
                assert!(
                    l.starts_with("limited") && l.contains("cannot fire here"),
                    "{l}"
                );
            }
            assert!(line("kvm:kvm_userspace_exit").starts_with("ok"), "{text}");
        }
        "vmx" => assert!(line("/dev/kvm").contains("VT-x"), "{text}"),
        "svm" => assert!(line("/dev/kvm").contains("AMD-V"), "{text}"),
        _ => {}
    }
}

#[test]
fn check_json_parses_and_agrees_with_the_host() {
    let out = kvmscope().args(["check", "--json"]).output().unwrap();
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("check --json prints one JSON document");
    let live_ok = doc["live_ok"].as_bool().expect("live_ok");
    assert_eq!(out.status.success(), live_ok);
    assert_eq!(live_ok, doc["reasons"].as_array().unwrap().is_empty());
    assert_eq!(doc["host"]["kvm_flavour"], flavour_from_host());
    assert_eq!(doc["host"]["clock"], "CLOCK_MONOTONIC");
    let items = doc["items"].as_array().unwrap();
    for tp in [
        "sched:sched_switch",
        "sched:sched_wakeup",
        "sched:sched_waking",
        "sched:sched_migrate_task",
        "sched:sched_process_exit",
        "kvm:kvm_entry",
        "kvm:kvm_exit",
        "kvm:kvm_userspace_exit",
        "kvm:kvm_pio",
        "csd:csd_queue_cpu",
        "csd:csd_function_entry",
        "csd:csd_function_exit",
    ] {
        assert!(items.iter().any(|i| i["name"] == tp), "no {tp} item");
    }
    // One entry per eBPF program where they could be loaded; this kernel (6.18) has every
    // feature, so each loads and none needs a fallback.
    match doc["programs"].as_array() {
        Some(programs) => {
            assert_eq!(programs.len(), 12, "{}", doc["programs"]);
            for p in programs {
                assert_eq!(p["loads"], true, "{p}");
                assert_eq!(p["detail"], "loads and attaches", "{p}");
            }
        }
        None => assert!(
            doc["programs"].as_str().unwrap().starts_with("not loaded"),
            "{}",
            doc["programs"]
        ),
    }
    let stats = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap();
    let item = items
        .iter()
        .find(|i| i["name"] == "kernel.bpf_stats_enabled")
        .unwrap();
    assert!(item["detail"].as_str().unwrap().starts_with(stats.trim()));
}

#[test]
fn check_as_nobody_refuses_with_the_reason() {
    // Dropping to nobody needs root; the binary must be reachable by nobody.
    if !privileged(Privilege::Bpf) {
        return;
    }
    // A copy in a world-readable directory: the build tree may sit under a private home.
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("kvmscope-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("kvmscope");
    std::fs::copy(env!("CARGO_BIN_EXE_kvmscope"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&bin)
        .arg("check")
        .current_dir(&dir)
        .output()
        .expect("run setpriv");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("live tracing: cannot run here"), "{stdout}");
    let reason = stderr.trim();
    assert_eq!(reason.lines().count(), 1, "one line: {reason}");
    assert!(
        reason.starts_with("kvmscope: live tracing cannot run here: privileges: uid 65534"),
        "{reason}"
    );
    assert!(reason.contains("run as root"), "{reason}");
}
