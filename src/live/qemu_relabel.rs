//! QEMU vCPU threads that neither QMP nor thread names map: watched whole where `kvm_entry`
//! fires, each thread labelled with the vCPU id of its first `kvm_entry`
//! (`probes::qemu::KvmEntryMapper`) and announced again with it.

use std::collections::BTreeSet;

use model::Event;
use probes::qemu::{EntryMapped, KvmEntryMapper};
use probes::targets::TrackedThread;

use super::tracking::Tracking;
use super::tracking_host::TrackingHost;

/// The live side of the third QEMU mapping method: QEMU threads watched with no vCPU index
/// are labelled with the vCPU id of their first `kvm_entry` event.
pub(super) struct QemuEntryMapping {
    /// The probes are loaded and `kvm_entry` fires on this host.
    pub(super) enabled: bool,
    /// The probes are loaded (the warning about an unmapped VM says what is missing).
    probes_loaded: bool,
    pub(super) mapper: KvmEntryMapper,
    /// Reused by [`Tracking::relabel_from_kvm_entry`].
    mapped: Vec<EntryMapped>,
    /// Processes whose threads were watched unlabelled. Their threads stay tracked while they
    /// exist, also once the VM is mapped and only its vCPU threads are targets: dropping a
    /// thread mid-session would leave its last state open in the model.
    pub(super) pids: BTreeSet<u32>,
    /// Processes whose every vCPU has been mapped (and told to the host's QEMU mappings).
    complete: BTreeSet<u32>,
    /// Unmapped VMs already warned about, by pid.
    warned: BTreeSet<u32>,
    /// Unmapped VMs found by the last scan, by pid.
    unmapped_last: BTreeSet<u32>,
}

impl QemuEntryMapping {
    pub(super) fn new(enabled: bool, probes_loaded: bool) -> Self {
        QemuEntryMapping {
            enabled,
            probes_loaded,
            mapper: KvmEntryMapper::default(),
            mapped: Vec::new(),
            pids: BTreeSet::new(),
            complete: BTreeSet::new(),
            warned: BTreeSet::new(),
            unmapped_last: BTreeSet::new(),
        }
    }

    /// Whether a thread that is no longer a target stays tracked while it exists (see
    /// `pids`).
    pub(super) fn keeps(&self, t: &TrackedThread) -> bool {
        self.pids.contains(&t.pid)
    }
}

impl Tracking {
    /// Notes the `kvm_entry` events of `batch`; announces again, with their vCPU index, the
    /// threads whose first `kvm_entry` it holds, into `out`, and tells the host about VMs now
    /// mapped in full.
    pub(super) fn relabel_from_kvm_entry(
        &mut self,
        host: &mut impl TrackingHost,
        batch: &[Event],
        out: &mut Vec<Event>,
    ) {
        self.qemu_entry.mapper.observe(batch);
        if !self.qemu_entry.mapper.has_news() {
            return;
        }
        let mut mapped = std::mem::take(&mut self.qemu_entry.mapped);
        self.qemu_entry.mapper.take_mapped(&mut mapped);
        let mut pids = BTreeSet::new();
        for m in mapped.drain(..) {
            // kvm_entry carries KVM's vcpu_id (the APIC ID); views show QEMU's cpu-index.
            let cpu_index = host.qemu_cpu_index(m.pid, m.vcpu_id);
            if self.relabel(host, m.tid, cpu_index) {
                pids.insert(m.pid);
            }
        }
        self.take_events(out);
        self.qemu_entry.mapped = mapped;
        for pid in pids {
            if !self.qemu_entry.complete.contains(&pid)
                && host.note_kvm_entry_ids(pid, &self.qemu_entry.mapper.seen_in(pid))
            {
                // Every vCPU is known: the threads left (QEMU's main and I/O threads) never
                // enter a guest, so stop looking at kvm_entry events for them.
                self.qemu_entry.mapper.forget_process(pid);
                self.qemu_entry.complete.insert(pid);
            }
        }
    }

    /// Say once per VM that a QEMU VM is not watched because its vCPUs cannot be mapped. A VM
    /// found by a rescan may be starting (its QMP monitor not answering yet): it is only
    /// warned about if the next rescan still cannot map it; `at_open`, at once.
    pub(super) fn warn_unmapped(
        &mut self,
        unmapped: &[probes::qemu::QemuVm],
        at_open: bool,
        warnings: &mut Vec<String>,
    ) {
        let q = &mut self.qemu_entry;
        let seen_before = std::mem::take(&mut q.unmapped_last);
        q.unmapped_last = unmapped.iter().map(|vm| vm.pid).collect();
        for vm in unmapped {
            if (at_open || seen_before.contains(&vm.pid)) && q.warned.insert(vm.pid) {
                let mut why = vm.unmapped_error().to_string();
                if !q.enabled {
                    why.push_str(&format!(
                        "; not watched (mapping from kvm_entry vCPU ids needs {})",
                        if q.probes_loaded {
                            "a VT-x/AMD-V host: kvm_entry does not fire here"
                        } else {
                            "the probes (no --no-bpf) on a VT-x/AMD-V host"
                        }
                    ));
                }
                warnings.push(why);
            }
        }
    }
}
