//! `kvmscope trace` for real (root, KVM, BPF), split by job: `oracle.rs` holds the traced
//! figures against the kernel's own, `demo.rs` the bundled VMM's exits, switches and gaps
//! (and a crashed guest), `counters.rs` counters mode (`--no-bpf`): its samples and a host
//! VMM's affinity change. Here: the helpers they share (starting a VMM and a tracer, signals,
//! the host's steal time).

mod common;
#[path = "priv_trace/counters.rs"]
mod counters;
#[path = "priv_trace/demo.rs"]
mod demo;
#[path = "priv_trace/oracle.rs"]
mod oracle;

use common::*;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use model::VcpuThreadName;
use probes::targets::list_threads;
use serde_json::Value;

/// libc: std's Child::kill sends only SIGKILL.
pub(crate) fn signal(pid: u32, sig: i32) {
    // SAFETY: plain syscall on integers; the pid is our own child.
    let r = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Kills and reaps a child on every exit path, so no VMM or tracer outlives a failed test.
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return; // already reaped: its pid may belong to someone else now
        }
        // libc: std's Child::kill sends only SIGKILL.
        // SAFETY: plain syscall; the pid is our own unreaped child (SIGCONT first: a
        // stopped VMM must be able to run its exit path).
        unsafe { libc::kill(self.0.id() as i32, libc::SIGCONT) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `kvmscope vmm` with `scenario` and waits until its `n` vCPU threads exist.
pub(crate) fn start_vmm(scenario: &Path, n: usize) -> (Reaped, Vec<u32>) {
    let child = kvmscope()
        .args(["vmm", "--duration", "60", "--json", "--scenario"])
        .arg(scenario)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let child = Reaped(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let tids: Vec<u32> = list_threads(pid)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, comm)| VcpuThreadName::parse(comm).is_some())
            .map(|(tid, _)| tid)
            .collect();
        if tids.len() == n {
            return (child, tids);
        }
        assert!(
            Instant::now() < deadline,
            "the VMM's {n} vCPU threads did not appear"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `kvmscope trace` with `args`, JSON lines collected by a thread. Returns once the
/// tracer printed its first line (the probes are attached by then).
pub(crate) fn start_trace(
    args: &[String],
) -> (Reaped, mpsc::Receiver<String>, thread::JoinHandle<()>) {
    let mut child = kvmscope()
        .arg("trace")
        .args(args)
        .args(["--format", "jsonl"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Reaped(child), rx, reader)
}

pub(crate) fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Steal time of the whole host so far (these machines are VMs), ns, from /proc/stat.
pub(crate) fn host_steal_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu = stat.lines().next().unwrap();
    // "cpu user nice system idle iowait irq softirq steal ..." in USER_HZ ticks.
    let steal: u64 = cpu.split_whitespace().nth(8).unwrap().parse().unwrap();
    let hz = hostfacts::clock_ticks_per_second();
    steal * 1_000_000_000 / hz
}
