//! Targets on the command line resolved to threads: at open (one clear error for a wrong
//! pid or name) and again at each rescan.

use std::collections::BTreeSet;

use probes::targets::{self, TargetSpec, TrackedThread};

/// One process's threads for a rescan: gone processes add nothing; processes that exist
/// but cannot be read right now are kept as they were.
pub(super) fn scan_pid(pid: u32, now: &mut Vec<TrackedThread>, keep: &mut BTreeSet<u32>) {
    match targets::resolve_pid(pid) {
        Ok(Some(t)) => now.extend(t),
        Ok(None) | Err(targets::TargetError::NoSuchProcess(_)) => {}
        Err(targets::TargetError::NoVcpu { .. }) => {}
        Err(_) => {
            keep.insert(pid);
        }
    }
}

/// Whether `kvm:kvm_entry` fires on this host (VT-x/AMD-V; not PVM), so that QEMU vCPU
/// threads can be mapped from the vCPU ids it carries.
pub(super) fn kvm_entry_fires() -> bool {
    probes::host::kvm_flavour().fires_entry_exit()
}

/// The threads to watch when the session opens, and the QEMU VMs left out because they
/// cannot be mapped. `--qemu` without a name watches every QEMU VM, also those that start
/// later: none running yet is not an error but a note on stderr; so is no KVM user at all
/// when the session `wait_for_vms` (the exporter). A name or pid that matches no VM is an
/// error, as is any other target that resolves to nothing.
pub(super) fn resolve_initial(
    spec: &TargetSpec,
    wait_for_vms: bool,
    kvm_entry_ids: bool,
    mappings: &mut probes::qemu::QemuMappings,
) -> anyhow::Result<(Vec<TrackedThread>, Vec<probes::qemu::QemuVm>)> {
    let TargetSpec::Qemu { selector, qmp } = spec else {
        let (threads, note) = threads_or_wait(targets::resolve(spec), wait_for_vms)?;
        if let Some(note) = note {
            eprintln!("kvmscope: {note}");
        }
        return Ok((threads, Vec::new()));
    };
    let selector = selector.as_deref().filter(|s| !s.is_empty());
    let found = mappings.session_threads(selector, qmp.as_deref(), kvm_entry_ids)?;
    if found.threads.is_empty() {
        if found.unmapped.is_empty() {
            eprintln!("kvmscope: no QEMU VM using KVM runs yet: waiting for QEMU VMs to start");
        } else {
            eprintln!(
                "kvmscope: no QEMU VM can be watched yet ({} cannot be mapped): waiting for \
                 QEMU VMs to start",
                found.unmapped.len()
            );
        }
    }
    let mut threads = found.threads;
    threads.sort_by_key(|t| (t.pid, t.vcpu.unwrap_or(u32::MAX), t.tid));
    threads.dedup_by_key(|t| t.tid);
    Ok((threads, found.unmapped))
}

/// A resolved target's threads; with none because no process holds a KVM vCPU yet, and a
/// session that `wait_for_vms`, no threads and the note that says it waits. Any other
/// failure is the error it is.
fn threads_or_wait(
    resolved: Result<Vec<TrackedThread>, targets::TargetError>,
    wait_for_vms: bool,
) -> Result<(Vec<TrackedThread>, Option<&'static str>), targets::TargetError> {
    match resolved {
        Err(targets::TargetError::NoKvmProcess) if wait_for_vms => Ok((
            Vec::new(),
            Some("no process holds a KVM vCPU yet: waiting for VMs to start"),
        )),
        resolved => Ok((resolved?, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exporter (a service that may start before any VM) waits on an empty host; other
    /// sessions, and every other failure, still stop with the error.
    #[test]
    fn only_a_waiting_session_opens_on_a_host_without_vms() {
        let none = || Err(targets::TargetError::NoKvmProcess);
        let (threads, note) = threads_or_wait(none(), true).expect("the exporter waits");
        assert!(threads.is_empty());
        assert_eq!(
            note,
            Some("no process holds a KVM vCPU yet: waiting for VMs to start")
        );
        let err = threads_or_wait(none(), false).expect_err("top refuses an empty host");
        assert!(err
            .to_string()
            .contains("no process on this host holds a KVM vCPU"));
        let err = threads_or_wait(Err(targets::TargetError::NoSuchProcess(7)), true)
            .expect_err("a wrong pid is an error also for the exporter");
        assert!(err.to_string().contains("process 7 does not exist"));
        let (threads, note) = threads_or_wait(Ok(Vec::new()), true).unwrap();
        assert!(threads.is_empty() && note.is_none());
    }
}
