//! Port I/O exits aggregated in the kernel (`--exits aggregate`, issue #15), for real (root,
//! KVM, BPF) on this host, where `kvm_pio` fires even when `kvm_exit` does not (PVM): in one
//! `trace --exits both` run the kernel's counts per vCPU thread, port and direction equal the
//! streamed `pio` events exactly, and `--exits aggregate` streams none of them. The kernel
//! matrix (`tests/priv_kernels`) checks the same on the VT-x/AMD-V kernels.

mod common;
use common::*;

use common::port_io::{aggregated, streamed};
use serde_json::Value;

/// Two vCPUs exiting to the VMM (port I/O) every ~20 µs of guest work.
const EXITS: &str = "[[vm]]\nname = \"io\"\nvcpus = 2\nworkload = \"exits\"\nexit_every = 2000\n";

/// `trace --demo` on [`EXITS`] with `--exits mode`: its event lines and its summary.
fn trace(mode: &str) -> (Vec<Value>, Value) {
    let out = trace_demo(
        EXITS,
        &["--duration", "2", "--format", "jsonl", "--exits", mode],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "trace --exits {mode} failed: {stderr}"
    );
    trace_lines_lossless(&out.stdout)
}

#[test]
fn port_io_counted_in_the_kernel_equals_the_streamed_port_io() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let (lines, summary) = trace("both");
    let want = streamed(&lines);
    assert!(!want.is_empty(), "no pio streamed: {summary}");
    assert_eq!(
        aggregated(&summary),
        want,
        "(tid, port, rw) -> count: aggregated vs streamed"
    );

    let (lines, summary) = trace("aggregate");
    assert!(
        streamed(&lines).is_empty(),
        "pio streamed with --exits aggregate"
    );
    let counted: u64 = aggregated(&summary).values().sum();
    assert!(counted > 0, "no port I/O aggregated: {summary}");
    // The exits to the VMM that carried them are still events (they start "in VMM").
    let userspace = lines
        .iter()
        .filter(|e| e["type"] == "userspace_exit")
        .count() as u64;
    assert!(
        userspace >= counted,
        "{userspace} userspace exits streamed for {counted} port I/O exits"
    );
    assert_eq!(summary["aggregated_port_io"], counted, "{summary}");
}
