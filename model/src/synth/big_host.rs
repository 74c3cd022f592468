//! A big, busy host for the scale goal (issue #15): many 4-vCPU VMs on many pCPUs, mixing
//! spinning, exiting and sleepy vCPUs, a nice-10 VM, and an untracked kworker on pCPU 0.
//! The dashboard benchmark and the 512-vCPU view tests both run it.

use super::demo::{demo_config, demo_kworker};
use super::sim::{Behaviour, SimConfig, SimTask};

/// `vcpus` vCPUs (rounded down to whole 4-vCPU VMs `vm0`, `vm1`, ...) on `pcpus` pCPUs.
/// VM `n` is process `1000 * (n + 1)`, its vCPU `i` thread `1000 * (n + 1) + i + 1`.
pub fn big_host_config(vcpus: u32, pcpus: u32) -> SimConfig {
    let mut tasks = vec![];
    for vm in 0..vcpus / 4 {
        for i in 0..4 {
            let behaviour = match (vm + i) % 3 {
                0 => Behaviour::Spin,
                1 => Behaviour::Exits { every_ns: 300_000 },
                _ => Behaviour::Sleepy {
                    run_ns: 2_000_000,
                    sleep_ns: 3_000_000,
                },
            };
            tasks.push(SimTask {
                tid: 1000 * (vm + 1) + i + 1,
                pid: 1000 * (vm + 1),
                vm: format!("vm{vm}"),
                vcpu: Some(i),
                tracked: true,
                nice: if vm == 3 { 10 } else { 0 },
                cpus: vec![],
                behaviour,
            });
        }
    }
    tasks.push(demo_kworker());
    SimConfig {
        cpus: pcpus,
        tasks,
        ..demo_config()
    }
}
