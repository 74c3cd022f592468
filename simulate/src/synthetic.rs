//! Hand-made demand for tests and benchmarks: threads with given weights, pCPUs, bursts and
//! sleeps, without a recording.

use model::demand::{AffinitySpan, Burst, Demand, ThreadDemand, Woke};
use model::{nice_to_weight, Comm, Percentiles};

/// One synthetic vCPU: VM index, nice, allowed pCPUs (empty = all), its affinity over time
/// (empty = `allowed` throughout), and its bursts.
#[derive(Clone, Debug)]
pub struct Spec {
    pub vm: u32,
    pub nice: i32,
    pub allowed: Vec<u32>,
    pub affinity: Vec<AffinitySpan>,
    pub bursts: Vec<Burst>,
}

impl Spec {
    /// Always runnable for `span_ns`.
    pub fn hog(vm: u32, nice: i32, span_ns: u64) -> Spec {
        Spec {
            vm,
            nice,
            allowed: Vec::new(),
            affinity: Vec::new(),
            bursts: vec![Burst {
                run_ns: span_ns,
                sleep_ns: None,
                woke: None,
                open: None,
            }],
        }
    }

    /// Runs `run_ns`, sleeps `sleep_ns`, repeated over `span_ns`.
    pub fn periodic(vm: u32, nice: i32, run_ns: u64, sleep_ns: u64, span_ns: u64) -> Spec {
        let n = (span_ns / (run_ns + sleep_ns).max(1)).max(1) + 1;
        Spec {
            vm,
            nice,
            allowed: Vec::new(),
            affinity: Vec::new(),
            bursts: (0..n)
                .map(|_| Burst {
                    run_ns,
                    sleep_ns: Some(sleep_ns),
                    woke: None,
                    open: None,
                })
                .collect(),
        }
    }

    /// Woken by each tick of `cpu` (every `tick_ns` of the recording's clock, `offset_ns`
    /// after it) over `span_ns`, as on a host whose timers fire only on the tick: runs
    /// `runs_ns[k]` (in turn) and sleeps until the next tick, so its sleeps vary in length
    /// and end at one phase. The demand starts on a tick.
    pub fn on_tick(
        vm: u32,
        runs_ns: &[u64],
        tick_ns: u64,
        offset_ns: u64,
        cpu: u32,
        span_ns: u64,
    ) -> Spec {
        let n = span_ns / tick_ns;
        let bursts = (0..n)
            .map(|k| {
                // The first burst starts at 0, the others at their tick's offset.
                let began = if k == 0 { 0 } else { k * tick_ns + offset_ns };
                let run_ns = runs_ns[k as usize % runs_ns.len()];
                let at_ns = (k + 1) * tick_ns + offset_ns;
                Burst {
                    run_ns,
                    sleep_ns: Some(at_ns - began - run_ns),
                    woke: Some(Woke { at_ns, cpu }),
                    open: None,
                }
            })
            .collect();
        Spec {
            vm,
            nice: 0,
            allowed: Vec::new(),
            affinity: Vec::new(),
            bursts,
        }
    }

    pub fn on(mut self, cpus: &[u32]) -> Spec {
        self.allowed = cpus.to_vec();
        self
    }

    /// Pinned to `cpus[k % cpus.len()]` during the k-th `every_ns` of `span_ns` (the demo's
    /// affinity rotation).
    pub fn rotating(mut self, cpus: &[u32], every_ns: u64, span_ns: u64) -> Spec {
        self.allowed = cpus.to_vec();
        self.affinity = (0..span_ns.div_ceil(every_ns.max(1)))
            .map(|k| AffinitySpan {
                at_ns: k * every_ns,
                cpus: vec![cpus[k as usize % cpus.len()]],
            })
            .collect();
        self
    }
}

/// A demand of `specs` on `pcpus` pCPUs over `span_ns`; tids are 1000 + index, VMs `vm<N>`,
/// every vCPU runnable at time 0, which is 1 s on the recording's clock (a tick boundary at
/// any HZ that divides a second).
pub fn demand(specs: &[Spec], pcpus: u32, span_ns: u64) -> Demand {
    let mut per_vm: Vec<u32> = Vec::new();
    let threads = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let v = s.vm as usize;
            if per_vm.len() <= v {
                per_vm.resize(v + 1, 0);
            }
            let vcpu = per_vm[v];
            per_vm[v] += 1;
            let allowed = if s.allowed.is_empty() {
                (0..pcpus).collect()
            } else {
                s.allowed.clone()
            };
            ThreadDemand {
                tid: 1000 + i as u32,
                pid: 100 + s.vm,
                comm: Comm::new(&format!("vm{}-vcpu{vcpu}", s.vm)),
                vm: format!("vm{}", s.vm),
                vcpu: Some(vcpu),
                nice: s.nice,
                weight: nice_to_weight(s.nice),
                first_cpu: allowed[0],
                allowed,
                affinity: s.affinity.clone(),
                first_wake_ns: 0,
                bursts: s.bursts.clone(),
                background: false,
                group: None,
                group_unread: false,
                wake_to_run: Percentiles::default(),
            }
        })
        .collect();
    Demand {
        start: 1_000_000_000,
        end: 1_000_000_000 + span_ns,
        pcpus,
        threads,
        wakeups: Default::default(),
        lost_events: 0,
        out_of_order: 0,
        group_records: Default::default(),
    }
}
