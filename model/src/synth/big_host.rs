//! A big, busy host for the scale goal (issue #15): many 4-vCPU VMs on many pCPUs, mixing
//! spinning, exiting and sleepy vCPUs, a nice-10 VM, and an untracked kworker on pCPU 0.
//! The dashboard benchmark and the 512-vCPU view tests both run it.

use super::demo::{demo_config, demo_kworker};
use super::sim::{Behaviour, SimConfig, SimTask};

/// The big host made busier by `busier` (>= 1): its scheduler slice, the rebalancing interval,
/// each exiting vCPU's interval between exits and each sleepy vCPU's bursts and sleeps divided
/// by it, so the host switches, exits and wakes about `busier` times as often per second of
/// event time (resume latencies and the kworker stay as they are). The dashboard benchmark
/// picks `busier` to reach a target rate (1 M events/s for issue #15) and reports the rate the
/// stream has.
pub fn busy_big_host_config(vcpus: u32, pcpus: u32, busier: f64) -> SimConfig {
    let busier = busier.max(1.0);
    let scaled = |ns: u64| ((ns as f64 / busier) as u64).max(1);
    let mut cfg = big_host_config(vcpus, pcpus);
    cfg.slice_ns = scaled(cfg.slice_ns);
    cfg.rebalance_every_ns = cfg.rebalance_every_ns.map(scaled);
    for task in cfg.tasks.iter_mut().filter(|t| t.tracked) {
        task.behaviour = match task.behaviour {
            Behaviour::Spin => Behaviour::Spin,
            Behaviour::Exits { every_ns } => Behaviour::Exits {
                every_ns: scaled(every_ns),
            },
            Behaviour::Sleepy { run_ns, sleep_ns } => Behaviour::Sleepy {
                run_ns: scaled(run_ns),
                sleep_ns: scaled(sleep_ns),
            },
        };
    }
    cfg
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::stream;

    #[test]
    fn a_busier_host_has_the_same_threads_and_more_events_per_second() {
        let calm = stream(big_host_config(32, 8), 0.3);
        let busy = stream(busy_big_host_config(32, 8, 2.0), 0.3);
        let tids = |evs: &[crate::Event]| {
            let mut t: Vec<u32> = evs
                .iter()
                .filter_map(|e| match e {
                    crate::Event::TaskInfo(i) => Some(i.tid),
                    _ => None,
                })
                .collect();
            t.sort_unstable();
            t
        };
        assert_eq!(tids(&calm), tids(&busy));
        assert!(
            busy.len() as f64 > 1.5 * calm.len() as f64,
            "busier by 2 gave {} events against {}",
            busy.len(),
            calm.len()
        );
        assert_eq!(
            busy_big_host_config(32, 8, 1.0).slice_ns,
            big_host_config(32, 8).slice_ns,
            "busier by 1 is the big host itself"
        );
    }
}
