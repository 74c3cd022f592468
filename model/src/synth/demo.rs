//! The canned demo scenario (two VMs overcommitted on two pCPUs) and its streams.

use super::sim::{stream, Behaviour, SimConfig, SimTask};
use crate::Event;

/// The overcommitted demo scenario: 2 pCPUs, vm0 with 2 spinning vCPUs, vm1 (nice 5) with an
/// exiting and a sleepy vCPU, and an untracked `kworker` waking now and then. PVM-like
/// (guest gaps, no kvm_entry/exit), with migrations costing 5 µs on resume.
pub fn demo_config() -> SimConfig {
    SimConfig {
        cpus: 2,
        slice_ns: 3_000_000,
        start_ts: 1_000_000_000,
        guest_gaps: true,
        entry_exit: false,
        resume_same_ns: 39_000,
        resume_migrated_ns: 44_000,
        to_switch_out_ns: 76_000,
        balance: true,
        rebalance_every_ns: Some(20_000_000),
        vmclear: None,
        tasks: vec![
            SimTask::vcpu(1001, 1000, "vm0", 0, 0, Behaviour::Spin),
            SimTask::vcpu(1002, 1000, "vm0", 1, 0, Behaviour::Spin),
            SimTask::vcpu(
                2001,
                2000,
                "vm1",
                0,
                5,
                Behaviour::Exits { every_ns: 200_000 },
            ),
            SimTask::vcpu(
                2002,
                2000,
                "vm1",
                1,
                5,
                Behaviour::Sleepy {
                    run_ns: 1_000_000,
                    sleep_ns: 4_000_000,
                },
            ),
            demo_kworker(),
        ],
    }
}

/// The demo's untracked `kworker/0:1` (tid 77) on pCPU 0: runs 200 µs every 50 ms.
pub fn demo_kworker() -> SimTask {
    SimTask {
        tid: 77,
        pid: 77,
        vm: "kworker/0:1".to_string(),
        vcpu: None,
        tracked: false,
        nice: 0,
        cpus: vec![0],
        behaviour: Behaviour::Sleepy {
            run_ns: 200_000,
            sleep_ns: 50_000_000,
        },
    }
}

/// `seconds` of the demo scenario as one time-ordered vector.
pub fn demo_stream(seconds: f64) -> Vec<Event> {
    stream(demo_config(), seconds)
}

/// The demo scenario on a VT-x-like host: `kvm_entry`/`kvm_exit` instead of guest gaps.
pub fn demo_stream_vmx(seconds: f64) -> Vec<Event> {
    let mut cfg = demo_config();
    cfg.guest_gaps = false;
    cfg.entry_exit = true;
    stream(cfg, seconds)
}
