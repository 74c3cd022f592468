//! QEMU vCPU threads that neither QMP nor thread names map: watched whole where `kvm_entry`
//! fires, each thread labelled with the vCPU id of its first `kvm_entry`
//! (`probes::qemu::KvmEntryMapper`) and announced again with it.

use std::collections::BTreeSet;

use model::Event;
use probes::qemu::{EntryMapped, KvmEntryMapper, QemuMappings};
use probes::targets::{self, TrackedThread};

use super::{monotonic_ns, task_info, LiveSource};

/// The live side of the third QEMU mapping method: QEMU threads watched with no vCPU index
/// are labelled with the vCPU id of their first `kvm_entry` event.
pub(super) struct QemuEntryMapping {
    /// The probes are loaded and `kvm_entry` fires on this host.
    pub(super) enabled: bool,
    pub(super) mapper: KvmEntryMapper,
    /// The QEMU VMs mapped so far, kept across rescans (QMP is asked once per VM).
    pub(super) mappings: QemuMappings,
    /// Reused by [`LiveSource::relabel_from_kvm_entry`].
    pub(super) mapped: Vec<EntryMapped>,
    /// Processes whose threads were watched unlabelled. Their threads stay tracked while they
    /// exist, also once the VM is mapped and only its vCPU threads are targets: dropping a
    /// thread mid-session would leave its last state open in the model.
    pub(super) pids: BTreeSet<u32>,
    /// Processes whose every vCPU has been mapped (and told to `mappings`).
    pub(super) complete: BTreeSet<u32>,
    /// Unmapped VMs already warned about, by pid.
    pub(super) warned: BTreeSet<u32>,
    /// Unmapped VMs found by the last scan, by pid.
    pub(super) unmapped_last: BTreeSet<u32>,
}

impl QemuEntryMapping {
    pub(super) fn new(enabled: bool, mappings: QemuMappings) -> Self {
        QemuEntryMapping {
            enabled,
            mapper: KvmEntryMapper::default(),
            mappings,
            mapped: Vec::new(),
            pids: BTreeSet::new(),
            complete: BTreeSet::new(),
            warned: BTreeSet::new(),
            unmapped_last: BTreeSet::new(),
        }
    }

    /// Whether a thread that is no longer a target stays tracked (see `pids`).
    pub(super) fn keeps(&self, t: &TrackedThread) -> bool {
        self.pids.contains(&t.pid) && hostfacts::process::thread_exists(t.pid, t.tid)
    }
}

impl LiveSource {
    /// Announce again, with their vCPU index, the threads whose first `kvm_entry` arrived in
    /// the last batch, and tell `probes::qemu` about VMs now mapped in full.
    pub(super) fn relabel_from_kvm_entry(&mut self, out: &mut Vec<Event>) {
        let mut mapped = std::mem::take(&mut self.qemu_entry.mapped);
        self.qemu_entry.mapper.take_mapped(&mut mapped);
        let mut pids = BTreeSet::new();
        for m in mapped.drain(..) {
            // kvm_entry carries KVM's vcpu_id (the APIC ID); views show QEMU's cpu-index.
            if self.relabel(m.tid, probes::qemu::cpu_index_of(m.pid, m.vcpu_id)) {
                pids.insert(m.pid);
            }
        }
        out.append(&mut self.pending);
        self.qemu_entry.mapped = mapped;
        for pid in pids {
            if !self.qemu_entry.complete.contains(&pid)
                && self
                    .qemu_entry
                    .mappings
                    .note_kvm_entry_ids(pid, &self.qemu_entry.mapper.seen_in(pid))
            {
                // Every vCPU is known: the threads left (QEMU's main and I/O threads) never
                // enter a guest, so stop looking at kvm_entry events for them.
                self.qemu_entry.mapper.forget_process(pid);
                self.qemu_entry.complete.insert(pid);
            }
        }
    }

    /// Give tracked thread `tid` its vCPU index and announce it again (the model and the
    /// sinks update the thread). False if `tid` is not tracked.
    pub(super) fn relabel(&mut self, tid: u32, vcpu: u32) -> bool {
        let Some(t) = self.tracked.get_mut(&tid) else {
            return false;
        };
        t.vcpu = Some(vcpu);
        let nice = targets::ThreadStat::read(t.pid, t.tid).map_or(0, |s| s.nice);
        // Already tracked: the model counts from the first TaskInfo's figures.
        let info = task_info(t, monotonic_ns(), nice, None);
        self.pending.push(info);
        true
    }

    /// Say once per VM that a QEMU VM is not watched because its vCPUs cannot be mapped. A VM
    /// found by a rescan may be starting (its QMP monitor not answering yet): it is only
    /// warned about if the next rescan still cannot map it; `at_open`, at once.
    pub(super) fn warn_unmapped(&mut self, unmapped: &[probes::qemu::QemuVm], at_open: bool) {
        let seen_before = std::mem::take(&mut self.qemu_entry.unmapped_last);
        self.qemu_entry.unmapped_last = unmapped.iter().map(|vm| vm.pid).collect();
        for vm in unmapped {
            if (at_open || seen_before.contains(&vm.pid)) && self.qemu_entry.warned.insert(vm.pid) {
                let mut why = vm.unmapped_error().to_string();
                if !self.qemu_entry.enabled {
                    why.push_str(&format!(
                        "; not watched (mapping from kvm_entry vCPU ids needs {})",
                        if self.bpf {
                            "a VT-x/AMD-V host: kvm_entry does not fire here"
                        } else {
                            "the probes (no --no-bpf) on a VT-x/AMD-V host"
                        }
                    ));
                }
                self.warnings.push(why);
            }
        }
    }
}
