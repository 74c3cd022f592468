//! `kvmscope qemu list` against real QEMU VMs: vCPUs mapped via QMP (no debug-threads) and via
//! `CPU n/KVM` thread names (no QMP), checked against QEMU's own answer and `/proc`.
//!
//! Every QEMU started here is killed by pid when its guard drops, also when a test fails.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const QEMU: &str = "qemu-system-x86_64";

/// How a test VM offers QMP.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Qmp {
    None,
    /// `-qmp unix:PATH,server=on,wait=off`
    Option,
    /// `-chardev socket,id=ID,path=PATH,... -mon chardev=ID,mode=control`
    ChardevMon,
}

/// A daemonized QEMU this test started, killed by pid on drop.
struct Qemu {
    pid: u32,
    name: String,
    dir: PathBuf,
    qmp: Option<PathBuf>,
}

impl Qemu {
    /// Start a 2-vCPU VM with issue #8's command line plus `-parallel none` (QEMU refuses
    /// `-nographic` with `-daemonize` while any of serial, parallel or monitor is left at
    /// its stdio default); `qmp` adds a QMP socket, `debug_threads` names the vCPU threads.
    /// Returns once both vCPU descriptors exist.
    fn start(tag: &str, qmp: Qmp, debug_threads: bool) -> Qemu {
        Qemu::start_smp(tag, qmp, debug_threads, "2", 2)
    }

    /// [`Qemu::start`] with `-smp SMP`, returning once `vcpus` vCPU descriptors exist.
    fn start_smp(tag: &str, qmp: Qmp, debug_threads: bool, smp: &str, vcpus: usize) -> Qemu {
        let name = format!("kvmscope-test-{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("qemu.pid");
        let sock = dir.join("qmp.sock");
        let mut name_opt = format!("guest={name}");
        if debug_threads {
            name_opt.push_str(",debug-threads=on");
        }
        let mut cmd = Command::new(QEMU);
        cmd.args([
            "-enable-kvm",
            "-smp",
            smp,
            "-m",
            "128",
            "-nographic",
            "-parallel",
            "none",
            "-no-reboot",
        ])
        .args(["-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", dir.join("serial.log").display()))
        .arg("-pidfile")
        .arg(&pidfile)
        .args(["-name", &name_opt]);
        match qmp {
            Qmp::None => {}
            Qmp::Option => {
                cmd.arg("-qmp")
                    .arg(format!("unix:{},server=on,wait=off", sock.display()));
            }
            Qmp::ChardevMon => {
                cmd.arg("-chardev")
                    .arg(format!(
                        "socket,id=qmp0,path={},server=on,wait=off",
                        sock.display()
                    ))
                    .args(["-mon", "chardev=qmp0,mode=control"]);
            }
        }
        cmd.arg("-daemonize");
        let out = cmd.output().expect("run qemu-system-x86_64");
        // Read the pid before asserting, so a half-started QEMU is still killed.
        let pid = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let guard = Qemu {
            pid: pid.unwrap_or(0),
            name,
            dir,
            qmp: (qmp != Qmp::None).then_some(sock),
        };
        assert!(
            out.status.success(),
            "qemu failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(guard.pid > 0, "qemu wrote no pid file");
        let deadline = Instant::now() + Duration::from_secs(10);
        while vcpu_fds(guard.pid) < vcpus {
            assert!(Instant::now() < deadline, "qemu never opened {vcpus} vCPUs");
            std::thread::sleep(Duration::from_millis(50));
        }
        guard
    }

    fn tasks(&self) -> Vec<u32> {
        std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    }
}

impl Qemu {
    /// Kill this QEMU now (by its pid) and wait until it is gone.
    fn kill(&mut self) {
        if self.pid > 0 {
            // libc: the daemonized QEMU is not a Child of ours, so std cannot signal it.
            // SAFETY: kill has no memory-safety preconditions; the pid is the QEMU this
            // guard started (from its own pid file).
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while alive(self.pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.pid = 0;
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Running, not gone or a zombie waiting for its (re)parent to reap it.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

fn vcpu_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|t| t.to_string_lossy().starts_with("anon_inode:kvm-vcpu:"))
                })
                .count()
        })
        .unwrap_or(0)
}

fn qemu_available() -> bool {
    if Command::new(QEMU).arg("--version").output().is_ok() {
        return true;
    }
    if std::env::var("KVMSCOPE_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{QEMU} is not installed (KVMSCOPE_REQUIRE_PRIVILEGED=1)");
    }
    eprintln!("skipped: {QEMU} is not installed");
    false
}

/// The test's own oracle: ask QEMU over QMP for cpu-index → thread-id.
fn qmp_threads(sock: &Path) -> BTreeMap<u64, u64> {
    let stream = UnixStream::connect(sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut read_reply = || loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v.get("event").is_none() {
            return v;
        }
    };
    assert!(read_reply().get("QMP").is_some());
    writeln!(w, r#"{{"execute":"qmp_capabilities"}}"#).unwrap();
    assert!(read_reply().get("return").is_some());
    writeln!(w, r#"{{"execute":"query-cpus-fast"}}"#).unwrap();
    let reply = read_reply();
    reply["return"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["cpu-index"].as_u64().unwrap(),
                c["thread-id"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn list_json(extra: &[&str]) -> Vec<serde_json::Value> {
    let out = kvmscope()
        .args(["qemu", "list", "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .expect("qemu list --json prints JSON")
        .as_array()
        .expect("a JSON array of VMs")
        .clone()
}

fn find_vm(vms: &[serde_json::Value], pid: u32) -> serde_json::Value {
    vms.iter()
        .find(|vm| vm["pid"].as_u64() == Some(pid as u64))
        .unwrap_or_else(|| panic!("VM pid {pid} not listed in {vms:?}"))
        .clone()
}

/// index → tid as `qemu list --json` reports them.
fn listed_threads(vm: &serde_json::Value) -> BTreeMap<u64, u64> {
    vm["vcpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["index"].as_u64().unwrap(), v["tid"].as_u64().unwrap()))
        .collect()
}

#[test]
fn qmp_maps_both_vcpus_without_debug_threads() {
    if !privileged(Privilege::Kvm) || !qemu_available() {
        return;
    }
    let qemu = Qemu::start("qmp", Qmp::Option, false);
    let vm = find_vm(&list_json(&[]), qemu.pid);
    assert_eq!(vm["name"], qemu.name.as_str());
    assert_eq!(vm["method"], "qmp", "{vm}");
    assert_eq!(vm["vcpu_count"], 2);
    let listed = listed_threads(&vm);
    let oracle = qmp_threads(qemu.qmp.as_deref().unwrap());
    assert_eq!(listed, oracle, "kvmscope vs QMP's own answer");
    assert_eq!(listed.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    let tasks = qemu.tasks();
    for tid in listed.values() {
        assert!(
            tasks.contains(&(*tid as u32)),
            "tid {tid} is not a thread of {}",
            qemu.pid
        );
        assert_ne!(*tid, qemu.pid as u64, "the main thread is not a vCPU");
    }
    // Without debug-threads every thread has QEMU's generic name: QMP was the only way.
    for tid in listed.values() {
        let comm = std::fs::read_to_string(format!("/proc/{}/task/{tid}/comm", qemu.pid)).unwrap();
        assert!(!comm.starts_with("CPU "), "{comm}");
    }

    // An explicit --qmp maps the same VM the same way.
    let sock = qemu.qmp.as_ref().unwrap().to_str().unwrap().to_string();
    let vm = find_vm(&list_json(&["--qmp", &sock]), qemu.pid);
    assert_eq!(vm["method"], "qmp");
    assert_eq!(listed_threads(&vm), listed);

    // The text table names the VM, its mapping method and both threads.
    let out = kvmscope().args(["qemu", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(&qemu.name))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("qmp"), "{line}");
    for (index, tid) in &listed {
        assert!(line.contains(&format!("{index}:{tid}")), "{line}");
    }
}

#[test]
fn thread_names_map_both_vcpus_without_qmp() {
    if !privileged(Privilege::Kvm) || !qemu_available() {
        return;
    }
    let qemu = Qemu::start("names", Qmp::None, true);
    let vm = find_vm(&list_json(&[]), qemu.pid);
    assert_eq!(vm["name"], qemu.name.as_str());
    assert_eq!(vm["method"], "thread_names", "{vm}");
    assert!(
        vm["qmp_error"]
            .as_str()
            .is_some_and(|e| e.contains("no QMP socket")),
        "says why QMP was not used: {vm}"
    );
    let listed = listed_threads(&vm);
    assert_eq!(listed.len(), 2);
    for (index, tid) in &listed {
        let comm = std::fs::read_to_string(format!("/proc/{}/task/{tid}/comm", qemu.pid)).unwrap();
        assert_eq!(comm.trim_end(), format!("CPU {index}/KVM"));
    }
}

#[test]
fn a_dead_qmp_socket_is_a_clear_error() {
    if !privileged(Privilege::Kvm) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("kvmscope-deadqmp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gone.sock");
    // A socket file whose listener is gone: connecting is refused.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let out = kvmscope()
        .args(["qemu", "list", "--qmp"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connection refused"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn killing_qemu_mid_trace_ends_the_vm_not_the_session() {
    if !privileged(Privilege::Bpf) || !qemu_available() {
        return;
    }
    let mut qemu = Qemu::start("kill", Qmp::Option, false);
    let oracle = qmp_threads(qemu.qmp.as_deref().unwrap());
    let duration = 4.0;
    let mut child = kvmscope()
        .args([
            "trace",
            "--qemu",
            &qemu.name,
            "--format",
            "jsonl",
            "--duration",
        ])
        .arg(duration.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events: Vec<serde_json::Value> = Vec::new();
    // Kill QEMU once the session tracks both vCPU threads.
    let announced = read_until_announced(&mut lines, qemu.pid, &mut events);
    assert_eq!(
        announced, oracle,
        "the session tracks the threads QMP names"
    );
    let pid = qemu.pid as u64;
    let killed_at = Instant::now();
    qemu.kill();
    for line in lines {
        events.push(serde_json::from_str(&line.unwrap()).unwrap());
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ended = events
        .iter()
        .find(|e| e["type"] == "vm_ended" && e["pid"].as_u64() == Some(pid))
        .unwrap_or_else(|| panic!("no vm_ended for pid {pid}"));
    assert_eq!(ended["vm"], qemu.name.as_str());
    // The session went on to its end after the VM was gone, and said so in its summary.
    let summary = events.last().unwrap();
    assert_eq!(summary["type"], "summary", "{summary}");
    assert!(
        summary["duration_s"].as_f64().unwrap() >= duration - 0.1,
        "{summary}"
    );
    assert!(
        killed_at.elapsed() > Duration::from_millis(500),
        "ran on after the kill"
    );
    assert_eq!(summary["counts"]["vm_ended"], 1, "{summary}");
}

#[test]
fn an_unknown_qemu_name_is_a_clear_error() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let out = kvmscope()
        .args(["trace", "--qemu", "no-such-vm-kvmscope", "--duration", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("no QEMU VM named or with pid `no-such-vm-kvmscope`"),
        "{err}"
    );
}

#[test]
fn a_control_monitor_on_a_chardev_is_found_as_qmp() {
    if !privileged(Privilege::Kvm) || !qemu_available() {
        return;
    }
    let qemu = Qemu::start("chardev", Qmp::ChardevMon, false);
    let vm = find_vm(&list_json(&[]), qemu.pid);
    assert_eq!(vm["method"], "qmp", "{vm}");
    assert_eq!(
        vm["qmp_socket"],
        qemu.qmp.as_ref().unwrap().to_str().unwrap()
    );
    assert_eq!(
        listed_threads(&vm),
        qmp_threads(qemu.qmp.as_deref().unwrap())
    );
}

/// Reads a `trace --format jsonl` stream into `events` until both vCPU threads of QEMU `pid`
/// are announced; returns them as vCPU index → tid.
fn read_until_announced(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    pid: u32,
    events: &mut Vec<serde_json::Value>,
) -> BTreeMap<u64, u64> {
    let mut announced = BTreeMap::new();
    while announced.len() < 2 {
        let line = lines
            .next()
            .expect("the session ended before announcing both vCPU threads");
        let e: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if e["type"] == "task_info" && e["pid"].as_u64() == Some(pid as u64) {
            announced.insert(e["vcpu"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
        }
        events.push(e);
    }
    announced
}

/// `/proc/<pid>/task/<tid>/schedstat`: (on-CPU ns, run-queue wait ns).
fn schedstat(pid: u32, tid: u64) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).unwrap();
    let mut f = text.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    (f.next().unwrap(), f.next().unwrap())
}

/// SIGSTOP/SIGCONT the whole QEMU process; a stop waits until every thread has stopped, so
/// schedstat read afterwards is final for the interval.
/// libc: the daemonized QEMU is not a Child of ours, and std sends only SIGKILL anyway.
fn freeze(pid: u32, on: bool) {
    let sig = if on { libc::SIGSTOP } else { libc::SIGCONT };
    // SAFETY: kill has no memory-safety preconditions; pid is a QEMU this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
    if !on {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let all_stopped = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .all(|t| {
                std::fs::read_to_string(t.path().join("stat"))
                    .ok()
                    .and_then(|s| {
                        s.rsplit_once(')')
                            .map(|(_, r)| r.trim_start().starts_with('T'))
                    })
                    .unwrap_or(true)
            });
        if all_stopped {
            return;
        }
        assert!(Instant::now() < deadline, "QEMU threads did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait until process `pid` holds BPF links (its probes are attached).
fn wait_for_bpf_links(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let links = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        std::fs::read_link(e.path())
                            .is_ok_and(|t| t.to_string_lossy().contains("bpf_link"))
                    })
                    .count()
            })
            .unwrap_or(0);
        if links > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the report never attached its probes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn report_vcpus(doc: &serde_json::Value, pid: u32) -> BTreeMap<u64, serde_json::Value> {
    // The report document carries the snapshot's fields at its top level.
    doc["vcpus"]
        .as_array()
        .expect("the report's vcpus")
        .iter()
        .filter(|v| v["pid"].as_u64() == Some(pid as u64))
        .map(|v| (v["tid"].as_u64().unwrap(), v.clone()))
        .collect()
}

#[test]
fn report_on_a_qmp_vm_covers_both_vcpu_threads() {
    if !privileged(Privilege::Bpf) || !qemu_available() {
        return;
    }
    let qemu = Qemu::start("report", Qmp::Option, false);
    let oracle = qmp_threads(qemu.qmp.as_deref().unwrap());
    let doc =
        json_output(kvmscope().args(["report", "--qemu", &qemu.name, "--duration", "3", "--json"]));
    let vcpus = report_vcpus(&doc, qemu.pid);
    assert_eq!(
        vcpus.len(),
        2,
        "both vCPU threads and nothing else: {vcpus:?}"
    );
    for (index, tid) in &oracle {
        let v = &vcpus[tid];
        assert_eq!(v["vm"], qemu.name.as_str());
        assert_eq!(v["vcpu"].as_u64(), Some(*index));
    }
    // vCPU 0 runs the emulated firmware flat out: the report must have seen it run.
    assert!(
        vcpus[&oracle[&0]]["run_ns"].as_u64().unwrap() > 100_000_000,
        "{:?}",
        vcpus[&oracle[&0]]
    );
}

/// vCPU 1 of a VM that runs only its firmware waits for its startup IPI all session: not one
/// switch or wakeup of its own. `report --pid` shows it asleep all along, from the state
/// `/proc` gave when tracking began, not `?` (#16).
///
/// The firmware may still kick the parked vCPU after it settled (QEMU stops every vCPU to
/// change guest memory mappings; a CI run under load saw 19 switches in one session), and a
/// vCPU that switched is not what this test is about: the session is repeated until one
/// sees vCPU 1 without a switch, at most three times.
#[test]
fn report_pid_shows_a_vcpu_asleep_all_session_as_sleeping() {
    if !privileged(Privilege::Bpf) || !qemu_available() {
        return;
    }
    let qemu = Qemu::start("asleep", Qmp::None, true);
    let pid = qemu.pid.to_string();
    let mut kicked = Vec::new();
    for _ in 0..3 {
        wait_until_vcpu_1_settles(&qemu);
        let doc =
            json_output(kvmscope().args(["report", "--pid", &pid, "--duration", "2", "--json"]));
        let vcpus = report_vcpus(&doc, qemu.pid);
        let v1 = vcpus
            .values()
            .find(|v| v["vcpu"] == 1)
            .unwrap_or_else(|| panic!("no vCPU 1 in {vcpus:?}"));
        if v1["switches"] != 0 {
            kicked.push(v1.to_string());
            continue;
        }
        assert_eq!(v1["state"], "sleeping", "{v1}");
        let span_ns = doc["duration_s"].as_f64().unwrap() * 1e9;
        let sleep_ns = v1["sleep_ns"].as_f64().unwrap();
        assert!(
            sleep_ns > 0.99 * span_ns,
            "asleep {sleep_ns} of {span_ns} ns: {v1}"
        );
        return;
    }
    panic!("vCPU 1 was expected to wait for its SIPI, but switched in every session: {kicked:?}");
}

/// Polls until `qemu`'s `CPU 1/KVM` thread has not switched for a second: the firmware
/// has parked it, waiting for its startup IPI.
fn wait_until_vcpu_1_settles(qemu: &Qemu) {
    let pid = qemu.pid;
    let tid = qemu
        .tasks()
        .into_iter()
        .find(|&t| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{t}/comm"))
                .is_ok_and(|c| c.trim() == "CPU 1/KVM")
        })
        .expect("a CPU 1/KVM thread");
    let switches = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
        status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut since) = (switches(), Instant::now());
    while since.elapsed() < Duration::from_secs(1) {
        assert!(Instant::now() < deadline, "vCPU 1 of {pid} never settled");
        std::thread::sleep(Duration::from_millis(50));
        let now = switches();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

#[test]
fn report_run_and_wait_match_schedstat() {
    if !privileged(Privilege::Bpf) || !qemu_available() {
        return;
    }
    // Thread names map this VM even while it is frozen (a stopped QEMU answers no QMP).
    let qemu = Qemu::start("oracle", Qmp::None, true);
    freeze(qemu.pid, true);
    let child = kvmscope()
        .args(["report", "--qemu", &qemu.name, "--duration", "6", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_bpf_links(child.id());
    // Tracking starts right after the probes attach; QEMU is frozen meanwhile, so any
    // margin is safe.
    std::thread::sleep(Duration::from_millis(1000));
    let tids: Vec<u64> = (0..2)
        .map(|i| {
            qemu.tasks()
                .into_iter()
                .find(|t| {
                    std::fs::read_to_string(format!("/proc/{}/task/{t}/comm", qemu.pid))
                        .is_ok_and(|c| c.trim_end() == format!("CPU {i}/KVM"))
                })
                .unwrap() as u64
        })
        .collect();
    let before: Vec<(u64, u64)> = tids.iter().map(|&t| schedstat(qemu.pid, t)).collect();
    freeze(qemu.pid, false);
    std::thread::sleep(Duration::from_millis(2500));
    freeze(qemu.pid, true);
    let after: Vec<(u64, u64)> = tids.iter().map(|&t| schedstat(qemu.pid, t)).collect();
    let out = child.wait_with_output().unwrap();
    freeze(qemu.pid, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let vcpus = report_vcpus(&doc, qemu.pid);
    for (i, tid) in tids.iter().enumerate() {
        let v = vcpus
            .get(tid)
            .unwrap_or_else(|| panic!("vCPU {i} thread {tid} not in the report"));
        let run = after[i].0 - before[i].0;
        let wait = after[i].1 - before[i].1;
        let got_run = v["task_clock_ns"].as_u64().unwrap();
        let got_wait = v["wait_ns"].as_u64().unwrap();
        eprintln!(
            "vCPU {i} (tid {tid}): run {:.3} ms report / {:.3} ms schedstat; wait {:.3} ms (run_delay {:.3} ms) / {:.3} ms; {} switches",
            got_run as f64 / 1e6,
            run as f64 / 1e6,
            got_wait as f64 / 1e6,
            v["run_delay_ns"].as_u64().unwrap_or(0) as f64 / 1e6,
            wait as f64 / 1e6,
            v["switches"]
        );
        // 2% of the kernel's figure, and 0.2 ms for a thread that barely ran or waited
        // (vCPU 1 sleeps until its startup IPI).
        let close =
            |got: u64, want: u64| got.abs_diff(want) as f64 <= want as f64 * 0.02 + 200_000.0;
        assert!(
            close(got_run, run),
            "vCPU {i}: run {got_run} ns vs schedstat {run} ns"
        );
        // Like with like: the kernel's wait counter (sched_info.run_delay), carried in the
        // switch events, is what schedstat reports. QEMU is frozen at both ends, so the
        // first switch-in and the last switch-out bracket every wait of the interval.
        let got_kernel_wait = v["run_delay_ns"]
            .as_u64()
            .expect("run_delay_ns: this kernel has schedstat, so switches carry run_delay");
        assert!(
            close(got_kernel_wait, wait),
            "vCPU {i}: run_delay wait {got_kernel_wait} ns vs schedstat {wait} ns"
        );
        // The tracepoint-timed wait (the timeline's figure) differs per wait interval: the
        // kernel's clock starts at rq_clock, read at the top of __schedule, several µs before
        // the switch-out tracepoint (measured p50 6.4 µs, p95 9.4 µs, rare outliers
        // ~160 µs), and a wakeup's wait starts at the enqueue, which on this host may lag or
        // lead the wakeup tracepoint by an IPI. QEMU's firmware vCPU is preempted thousands of
        // times a second, so over a run it reads up to ~20% below schedstat. Bound: within 2%
        // plus 200 µs per wait interval (each switch-in ends one), the worst offset measured.
        let intervals = v["switches"].as_u64().unwrap();
        let slack = wait as f64 * 0.02 + 200_000.0 + intervals as f64 * 200_000.0;
        assert!(
            (got_wait as f64 - wait as f64).abs() <= slack,
            "vCPU {i}: tracepoint wait {got_wait} ns vs schedstat {wait} ns is more than \
             {intervals} wait intervals' tracepoint offset apart; report health {}",
            doc["health"]
        );
    }
}

#[test]
fn a_vm_started_mid_session_is_picked_up_and_closed_out() {
    if !privileged(Privilege::Bpf) || !qemu_available() {
        return;
    }
    // `--qemu` with no name watches every QEMU VM, those running when the session opens
    // and those that start later (see also `qemu_without_a_name_waits_for_a_vm_...`).
    let early = Qemu::start("early", Qmp::None, true);
    let mut child = kvmscope()
        .args(["trace", "--qemu", "--format", "jsonl", "--duration", "6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_event = || -> Option<serde_json::Value> {
        lines
            .next()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
    };
    let announced = |e: &serde_json::Value, pid: u32| {
        e["type"] == "task_info" && e["pid"].as_u64() == Some(pid as u64)
    };
    let mut early_seen = 0;
    while early_seen < 2 {
        let e = next_event().expect("the session ended before tracking the first VM");
        early_seen += usize::from(announced(&e, early.pid));
    }

    let mut late = Qemu::start("late", Qmp::Option, false);
    let oracle = qmp_threads(late.qmp.as_deref().unwrap());
    let mut late_tids = BTreeMap::new();
    while late_tids.len() < 2 {
        let e = next_event().expect("the session ended without picking up the new VM");
        if announced(&e, late.pid) {
            late_tids.insert(e["vcpu"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
        }
    }
    assert_eq!(
        late_tids, oracle,
        "the new VM's vCPU threads, as QMP names them"
    );
    let late_pid = late.pid as u64;
    late.kill();

    let mut rest = Vec::new();
    while let Some(e) = next_event() {
        rest.push(e);
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ended: Vec<u64> = rest
        .iter()
        .filter(|e| e["type"] == "vm_ended")
        .filter_map(|e| e["pid"].as_u64())
        .collect();
    // The killed VM is closed out during the session; the early one still runs when the
    // session stops, so the stream ends with the end of observation, not with its end.
    assert!(ended.contains(&late_pid), "vm_ended {ended:?}");
    assert!(
        !ended.contains(&(early.pid as u64)),
        "a VM still running is not ended: {ended:?}"
    );
    let kinds: Vec<&str> = rest.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds[kinds.len().saturating_sub(2)..],
        ["observation_end", "summary"],
        "the stream closes with the end of observation, then the summary"
    );
}

#[test]
fn qemu_without_a_name_waits_for_a_vm_that_starts_later() {
    if !privileged(Privilege::Bpf) || !qemu_available() {
        return;
    }
    // Other people's VMs may run on this host: everything below filters by our VM's pid.
    let others_at_start = !list_json(&[]).is_empty();
    let mut child = kvmscope()
        .args(["trace", "--qemu", "--format", "jsonl", "--duration", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The session is open (probes attached) before our VM exists.
    wait_for_bpf_links(child.id());
    let mut late = Qemu::start("waited", Qmp::Option, false);
    let oracle = qmp_threads(late.qmp.as_deref().unwrap());
    let pid = late.pid as u64;

    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events: Vec<serde_json::Value> = Vec::new();
    let announced = read_until_announced(&mut lines, late.pid, &mut events);
    assert_eq!(
        announced, oracle,
        "the VM started after the session is tracked, each vCPU thread with its index"
    );
    // Let its vCPU 0 (the firmware, running flat out) be switched a few times, then end it.
    std::thread::sleep(Duration::from_millis(1500));
    late.kill();
    for line in lines {
        events.push(serde_json::from_str(&line.unwrap()).unwrap());
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    if !others_at_start {
        assert!(
            stderr.contains("waiting for QEMU VMs to start"),
            "says it waits: {stderr}"
        );
    }
    assert!(!stderr.contains("error"), "{stderr}");

    let vcpu0 = oracle[&0];
    let switches = events
        .iter()
        .filter(|e| {
            e["type"] == "sched_switch"
                && (e["prev_tid"].as_u64() == Some(vcpu0) || e["next_tid"].as_u64() == Some(vcpu0))
        })
        .count();
    assert!(switches > 0, "no sched_switch of vCPU 0 thread {vcpu0}");
    let ended = events
        .iter()
        .find(|e| e["type"] == "vm_ended" && e["pid"].as_u64() == Some(pid))
        .unwrap_or_else(|| panic!("no vm_ended for pid {pid}"));
    assert_eq!(ended["vm"], late.name.as_str());
    let summary = events.last().unwrap();
    assert_eq!(summary["type"], "summary", "{summary}");
    eprintln!(
        "VM pid {pid} picked up mid-session: vCPU threads {announced:?}, {switches} switches \
         of vCPU 0"
    );
}

#[test]
fn a_named_vm_that_does_not_run_is_still_an_error_for_every_view() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    for view in ["trace", "report", "record"] {
        let mut cmd = kvmscope();
        cmd.args([view, "--qemu", "no-such-vm-kvmscope", "--duration", "1"]);
        // A path that does not exist: the record must fail on the VM, not on the file.
        let trace = std::env::temp_dir().join(format!("kvmscope-novm-{}.kvt", std::process::id()));
        if view == "record" {
            cmd.arg("-o").arg(&trace);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{view}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{view}: one line: {err}");
        assert!(
            err.contains("no QEMU VM named or with pid `no-such-vm-kvmscope`"),
            "{view}: {err}"
        );
        assert!(!err.contains("waiting"), "{view}: {err}");
        assert!(!trace.exists(), "{view}: a failed record leaves no file");
    }
}

/// This host's KVM is PVM, where `kvm_entry` never fires (see PLATFORM.md).
fn kvm_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

#[test]
fn a_vm_neither_qmp_nor_names_map_says_what_kvm_entry_did() {
    if !privileged(Privilege::Bpf) || !qemu_available() {
        return;
    }
    let qemu = Qemu::start("plain", Qmp::None, false);
    let vm = find_vm(&list_json(&[]), qemu.pid);
    let why = vm["kvm_entry_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if kvm_is_pvm() {
        assert_eq!(vm["method"], "none", "{vm}");
        assert!(why.contains("kvm_entry does not fire on this host"), "{vm}");
    } else {
        // VT-x/AMD-V: mapped from kvm_entry, or told how far it got (vCPU 1 waits for its
        // startup IPI as long as only the firmware runs).
        assert!(
            vm["method"] == "kvm_entry" || why.contains("kvm_entry showed"),
            "{vm}"
        );
    }
    let out = kvmscope().args(["qemu", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&qemu.name), "{text}");
    if kvm_is_pvm() {
        assert!(text.contains("kvm_entry does not fire"), "{text}");
        assert!(text.contains("not mapped"), "{text}");

        // Named, it cannot be watched here: one clear line.
        let out = kvmscope()
            .args(["trace", "--qemu", &qemu.name, "--duration", "1"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains("cannot map the vCPUs of QEMU VM"), "{err}");

        // Among all VMs, it is left out with a warning, and the session runs.
        let out = kvmscope()
            .args(["trace", "--qemu", "--format", "jsonl", "--duration", "1.5"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.lines().any(|l| l.contains("warning")
                && l.contains(&qemu.name)
                && l.contains("not watched")),
            "{err}"
        );
        let ours = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["type"] == "task_info" && e["pid"].as_u64() == Some(qemu.pid as u64))
            .count();
        assert_eq!(ours, 0, "an unmappable VM is not tracked");
    }
}

#[test]
fn kvm_vcpu_ids_with_gaps_rank_to_qemu_cpu_indices() {
    if !privileged(Privilege::Kvm) || !qemu_available() {
        return;
    }
    // 3 cores per socket: the APIC IDs KVM uses as vcpu_ids (and kvm_entry reports) skip 3.
    let qemu = Qemu::start_smp("apic", Qmp::None, true, "6,sockets=2,cores=3", 6);
    let mut ids: Vec<u32> = std::fs::read_dir(format!("/proc/{}/fd", qemu.pid))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            target
                .to_str()?
                .strip_prefix("anon_inode:kvm-vcpu:")?
                .parse()
                .ok()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        vec![0, 1, 2, 4, 5, 6],
        "APIC IDs of -smp 6,sockets=2,cores=3"
    );
    let indices: Vec<u32> = ids
        .iter()
        .map(|&id| probes::qemu::cpu_index_of(qemu.pid, id))
        .collect();
    assert_eq!(indices, vec![0, 1, 2, 3, 4, 5]);
    // The same indices `qemu list` finds by thread name.
    let vm = find_vm(&list_json(&[]), qemu.pid);
    assert_eq!(vm["method"], "thread_names", "{vm}");
    assert_eq!(
        listed_threads(&vm).keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5]
    );
}

#[test]
fn an_unmappable_vm_started_mid_session_is_named_in_the_summary() {
    if !privileged(Privilege::Bpf) || !qemu_available() || !kvm_is_pvm() {
        // Where kvm_entry fires, such a VM is watched whole and mapped from it instead.
        return;
    }
    let child = kvmscope()
        .args(["trace", "--qemu", "--format", "jsonl", "--duration", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_bpf_links(child.id());
    let qemu = Qemu::start("plain-late", Qmp::None, false);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        !events
            .iter()
            .any(|e| e["type"] == "task_info" && e["pid"].as_u64() == Some(qemu.pid as u64)),
        "an unmappable VM is not tracked"
    );
    let summary = events.last().unwrap();
    assert_eq!(summary["type"], "summary");
    let ours: Vec<&str> = summary["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .filter(|w| w.contains(&qemu.name))
        .collect();
    assert_eq!(ours.len(), 1, "warned once: {summary}");
    assert!(ours[0].contains("not watched"), "{}", ours[0]);
    assert!(
        ours[0].contains("debug-threads=on"),
        "says what to do: {}",
        ours[0]
    );
}
