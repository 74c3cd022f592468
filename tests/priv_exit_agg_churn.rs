//! The kernel's exit aggregates under VM churn (issue #15 goal 7), for real (root, KVM, BPF,
//! bpftool): one `trace --all-kvm --exits both` session watches a long-lived VM while short
//! ones (the bundled `kvmscope vmm`, a process each) start and stop, round after round.
//! After each round the session's `exit_aggs` and `pio_aggs` hold no key of an ended vCPU
//! thread (an untracked thread's keys are deleted, issue #15 goal 7) and still the long VM's
//! (only the ended threads' go), and at the end the
//! kernel's port I/O counts per thread, port and direction, the last counts of the threads
//! that ended among them, equal the streamed `pio` events exactly, as
//! `tests/priv_port_io.rs` checks for one VM. This host's PVM fires `kvm_pio` but no
//! `kvm_exit`, so `exit_aggs` stays empty here; the kernel matrix checks exits.

mod common;
use common::port_io::{aggregated, streamed};
use common::schedstat::{vcpu_tids, KillOnDrop};
use common::*;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Short VMs started and stopped under the one session.
const ROUNDS: usize = 3;
/// vCPUs of each short VM.
const SHORT_VCPUS: usize = 2;
/// A port I/O exit every ~1 ms of guest work: enough to count, little to stream.
const EXIT_EVERY: &str = "100000";
/// Tracking a new VM waits for the session's rescan (once a second) on a loaded host;
/// untracking an ended one for its threads' last switch-outs.
const PATIENCE: Duration = Duration::from_secs(60);

fn start_vmm(vcpus: usize) -> KillOnDrop {
    let child = kvmscope()
        .args(["vmm", "--vms", "1", "--vcpus", &vcpus.to_string()])
        .args(["--workload", "exits", "--exit-every", EXIT_EVERY])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kvmscope vmm");
    KillOnDrop(child)
}

fn vcpus_of(vmm: &KillOnDrop, n: usize) -> BTreeSet<u32> {
    let pid = vmm.0.id();
    let mut tids = Vec::new();
    wait_for(&format!("vmm {pid}'s {n} vCPU threads"), PATIENCE, || {
        tids = vcpu_tids(pid);
        tids.len() == n
    });
    tids.into_iter().collect()
}

/// Sends `SIGINT` (a clean stop: the VMM and `trace` stop on it) and reaps the process.
fn interrupt(p: &mut KillOnDrop) -> std::process::ExitStatus {
    let pid = p.0.id() as i32;
    // SAFETY: kill has no memory-safety preconditions; pid is a child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    p.0.wait().expect("wait for the child")
}

/// The ids of a process's BPF maps named `exit_aggs` and `pio_aggs`, from its descriptors'
/// `fdinfo` (`map_id:`) and bpftool's names.
struct AggMaps {
    exit_aggs: u32,
    pio_aggs: u32,
}

fn bpftool(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool")
        .args(args)
        .arg("-j")
        .output()
        .expect("bpftool (scripts/setup.sh installs it) reads the session's maps");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bpftool -j prints JSON")
}

fn agg_maps(pid: u32) -> Option<AggMaps> {
    let mut ids = BTreeSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .ok()?
        .flatten()
    {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            ids.insert(id);
        }
    }
    let (mut exit_aggs, mut pio_aggs) = (None, None);
    for id in ids {
        let info = bpftool(&["map", "show", "id", &id.to_string()]);
        match info["name"].as_str() {
            Some("exit_aggs") => exit_aggs = Some(id),
            Some("pio_aggs") => pio_aggs = Some(id),
            _ => {}
        }
    }
    Some(AggMaps {
        exit_aggs: exit_aggs?,
        pio_aggs: pio_aggs?,
    })
}

/// The tid of each key in map `id` (every aggregation key starts with its thread's tid).
fn key_tids(id: u32) -> Vec<u32> {
    let dump = bpftool(&["map", "dump", "id", &id.to_string()]);
    dump.as_array()
        .expect("a dump is a list")
        .iter()
        .map(|entry| {
            let bytes: Vec<u8> = entry["key"]
                .as_array()
                .expect("raw key bytes")
                .iter()
                .take(4)
                .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16))
                .collect::<Result<_, _>>()
                .expect("hex key bytes");
            u32::from_le_bytes(bytes.try_into().expect("4 bytes of tid"))
        })
        .collect()
}

/// The tids of the keys in (`exit_aggs`, `pio_aggs`) whose thread is in `ended`, and the keys
/// in each. Only the test's own ended threads: the `--all-kvm` session also tracks any other
/// VM on the host (another test's, a developer's), whose keys stay while it runs.
fn keys_of_ended(maps: &AggMaps, ended: &BTreeSet<u32>) -> (Vec<u32>, usize, usize) {
    let (exits, pio) = (key_tids(maps.exit_aggs), key_tids(maps.pio_aggs));
    let left = exits
        .iter()
        .chain(pio.iter())
        .filter(|t| ended.contains(t))
        .copied()
        .collect();
    (left, exits.len(), pio.len())
}

#[test]
fn ended_vms_leave_no_aggregate_keys_and_every_port_io_exit_is_counted() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let dir = TempDir::new("exit-agg-churn");
    // `--all-kvm` needs a VM at its start: the long-lived one.
    let long = start_vmm(1);
    let live = vcpus_of(&long, 1);
    let mut session = KillOnDrop(
        kvmscope()
            .args(["trace", "--all-kvm", "--exits", "both", "--format", "jsonl"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path("trace.jsonl")).unwrap())
            .stderr(std::fs::File::create(dir.path("trace.err")).unwrap())
            .spawn()
            .expect("start kvmscope trace"),
    );
    let session_pid = session.0.id();
    let mut maps = None;
    wait_for("the session's aggregation maps", PATIENCE, || {
        maps = agg_maps(session_pid);
        maps.is_some()
    });
    let maps = maps.unwrap();
    wait_for("the long VM's port I/O counted", PATIENCE, || {
        key_tids(maps.pio_aggs).iter().any(|t| live.contains(t))
    });

    let mut ended = BTreeSet::new();
    for round in 1..=ROUNDS {
        let mut short = start_vmm(SHORT_VCPUS);
        let tids = vcpus_of(&short, SHORT_VCPUS);
        wait_for(&format!("round {round}'s VM counted"), PATIENCE, || {
            let counted: BTreeSet<u32> = key_tids(maps.pio_aggs).into_iter().collect();
            tids.is_subset(&counted)
        });
        assert!(
            interrupt(&mut short).success(),
            "round {round}'s vmm failed"
        );
        ended.extend(tids);
        let mut left = (Vec::new(), 0, 0);
        wait_for(
            &format!("the keys of round {round}'s ended VM deleted"),
            PATIENCE,
            || {
                left = keys_of_ended(&maps, &ended);
                left.0.is_empty()
            },
        );
        // Only the ended threads' keys went: the long VM's, counting still, stay.
        let counted = key_tids(maps.pio_aggs);
        assert!(
            counted.iter().any(|t| live.contains(t)),
            "round {round}: the long VM's keys were deleted too: {counted:?}"
        );
        eprintln!(
            "after round {round}: exit_aggs {} keys, pio_aggs {} keys (the long VM's vCPU threads {live:?})",
            left.1, left.2
        );
    }

    let status = interrupt(&mut session);
    let err = std::fs::read_to_string(dir.path("trace.err")).unwrap_or_default();
    assert!(status.success(), "trace failed: {err}");
    let (lines, summary) = trace_lines_lossless(&std::fs::read(dir.path("trace.jsonl")).unwrap());
    let want = streamed(&lines);
    let streamed_tids: BTreeSet<u32> = want.keys().map(|k| k.0 as u32).collect();
    assert!(
        ended.is_subset(&streamed_tids),
        "no pio streamed of some ended vCPU threads: {ended:?} vs {streamed_tids:?}"
    );
    let counted = aggregated(&summary);
    assert_eq!(
        counted, want,
        "(tid, port, rw) -> count: aggregated vs streamed"
    );
    // Every aggregate reached a thread the model knew (none waited for an unknown one).
    assert_eq!(
        summary["aggregated_port_io"],
        counted.values().sum::<u64>(),
        "{summary}"
    );
}
