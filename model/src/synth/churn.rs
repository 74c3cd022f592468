//! VMs that start and stop all the time, the kernel handing the same thread ids (and some
//! pids) to each new generation: the stream for the churn test and benchmark (issue #15,
//! goal 7). Generated a generation at a time, so an hour of it costs one generation's memory.

use super::{demo_config, stream, vm_ended, Behaviour, SimTask};
use crate::Event;

/// Generations of two VMs of two vCPUs each (one exiting to userspace, one spinning) on the
/// demo's two pCPUs; each generation lives `generation_ns`, then both VMs end.
pub struct Churn {
    pub generation_ns: u64,
    /// Run time between the exiting vCPUs' userspace exits, ns.
    pub exit_every_ns: u64,
    /// The simulated scheduler's slice, ns (longer: fewer events per hour).
    pub slice_ns: u64,
    /// Generations produced so far.
    pub generations: u32,
    ts: u64,
}

impl Churn {
    pub fn new(generation_ns: u64) -> Self {
        Churn {
            generation_ns,
            exit_every_ns: 1_000_000,
            slice_ns: demo_config().slice_ns,
            generations: 0,
            ts: 1_000_000_000,
        }
    }

    /// The VM name of VM `v` (0 or 1) in generation `g`.
    pub fn vm_name(g: u32, v: u32) -> String {
        format!("g{g}v{v}")
    }

    /// The next generation's events, in time order, ending with its two `VmEnded`.
    pub fn next_generation(&mut self) -> Vec<Event> {
        let g = self.generations;
        let pid = |v: u32| 5000 + (g % 3) * 10 + v;
        let mut tasks = Vec::new();
        for v in 0..2u32 {
            for c in 0..2u32 {
                tasks.push(SimTask {
                    tid: 100 + v * 10 + c,
                    pid: pid(v),
                    vm: Self::vm_name(g, v),
                    vcpu: Some(c),
                    tracked: true,
                    nice: 0,
                    cpus: Vec::new(),
                    behaviour: if c == 0 {
                        Behaviour::Exits {
                            every_ns: self.exit_every_ns,
                        }
                    } else {
                        Behaviour::Spin
                    },
                });
            }
        }
        let mut cfg = demo_config();
        cfg.tasks = tasks;
        cfg.start_ts = self.ts;
        cfg.slice_ns = self.slice_ns;
        cfg.entry_exit = true;
        let mut evs = stream(cfg, self.generation_ns as f64 / 1e9);
        self.ts += self.generation_ns;
        for v in 0..2u32 {
            evs.push(vm_ended(self.ts, pid(v), &Self::vm_name(g, v)));
        }
        self.generations += 1;
        evs
    }
}
