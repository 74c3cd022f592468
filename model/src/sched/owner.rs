//! Who holds a pCPU: idle, a tracked thread, or any other task (by comm), and the time each
//! kind of owner accumulates.

use super::task::Task;
use super::Model;
use crate::Comm;

/// Distinct comms kept by name; later ones are folded into one bucket.
const MAX_COMMS: usize = 4096;

/// The owner of a pCPU over a stretch of time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Owner {
    #[default]
    Idle,
    /// A tracked thread, by its slot in `Model::tasks`.
    Task(u32),
    /// An untracked task, by its interned comm.
    Other(u32),
    /// A tracked thread that has since been retired (its slot freed for reuse), by its VM:
    /// what references to its slot become, so they never name the slot's next occupant.
    Ended(u32),
    /// A thread of a VM that has since been retired too (its VM index freed for reuse).
    EndedVm,
}

/// Time per owner kind: idle, per VM (tracked threads), per comm (everything else).
#[derive(Clone, Default)]
pub(super) struct OwnerTime {
    pub(super) idle: u64,
    pub(super) vm_ns: Vec<u64>,
    /// Time of tracked threads whose VM has since been retired (its `vm_ns` column folded in).
    pub(super) ended_vms: u64,
    pub(super) comm_ns: Vec<u64>,
}

impl OwnerTime {
    pub(super) fn add(&mut self, owner: Owner, d: u64, tasks: &[Task]) {
        if d == 0 {
            return;
        }
        let (bucket, i) = match owner {
            Owner::Idle => {
                self.idle = self.idle.saturating_add(d);
                return;
            }
            Owner::Other(id) => (&mut self.comm_ns, id as usize),
            Owner::Task(slot) => match tasks.get(slot as usize) {
                Some(t) if !t.vacant => (&mut self.vm_ns, t.vm as usize),
                _ => return,
            },
            Owner::Ended(vm) => (&mut self.vm_ns, vm as usize),
            Owner::EndedVm => {
                self.ended_vms = self.ended_vms.saturating_add(d);
                return;
            }
        };
        if bucket.len() <= i {
            bucket.resize(i + 1, 0);
        }
        bucket[i] = bucket[i].saturating_add(d);
    }

    /// Time taken by untracked tasks.
    pub(super) fn others(&self) -> u64 {
        self.comm_ns.iter().fold(0u64, |a, &b| a.saturating_add(b))
    }

    /// Time taken by tracked threads (retired VMs' included).
    pub(super) fn vcpus(&self) -> u64 {
        self.vm_ns
            .iter()
            .fold(self.ended_vms, |a, &b| a.saturating_add(b))
    }

    pub(super) fn total(&self) -> u64 {
        self.vcpus()
            .saturating_add(self.idle)
            .saturating_add(self.others())
    }

    /// Moves VM `vm`'s column into `ended_vms` (the VM is retired; its index will be reused).
    pub(super) fn retire_vm(&mut self, vm: u32) {
        if let Some(ns) = self.vm_ns.get_mut(vm as usize) {
            self.ended_vms = self.ended_vms.saturating_add(std::mem::take(ns));
        }
    }
}

impl Model {
    pub(super) fn intern_comm(&mut self, comm: Comm) -> u32 {
        if let Some(&id) = self.comm_id.get(&comm) {
            return id;
        }
        if self.comms.len() >= MAX_COMMS {
            // The last slot stands for every comm past the cap.
            return (MAX_COMMS - 1) as u32;
        }
        let id = self.comms.len() as u32;
        let stored = if self.comms.len() == MAX_COMMS - 1 {
            Comm::new("(many others)")
        } else {
            comm
        };
        self.comms.push(stored);
        self.comm_id.insert(comm, id);
        id
    }

    pub(super) fn owner_label(&self, owner: Owner) -> String {
        match owner {
            Owner::Idle => "idle".to_string(),
            Owner::Other(id) => self
                .comms
                .get(id as usize)
                .map_or_else(|| "(other)".into(), |c| c.to_string()),
            Owner::Task(slot) => self
                .tasks
                .get(slot as usize)
                .map_or_else(|| "?".into(), |t| t.label(&self.vms)),
            Owner::Ended(vm) => crate::thread_label(&self.vm_name(vm), None, &"(ended thread)"),
            Owner::EndedVm => "(ended VM)".to_string(),
        }
    }
}
