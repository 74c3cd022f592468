//! Mapping every QEMU VM's vCPUs to threads (QMP, then thread names, then `kvm_entry`), and
//! the mappings made so far, owned by whoever rescans.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::process::*;
use super::qmp::query_cpus;
use super::*;

/// The mappings made so far, by (pid, start time). A QEMU's vCPU threads live as long as its
/// VM, so a live session that keeps one `QemuMappings` across its once-a-second rescans
/// reuses them instead of asking QMP again, and a QMP socket that is busy for a moment does
/// not make a VM look gone. A one-shot caller (`kvmscope qemu list`) uses a fresh one.
#[derive(Debug, Default)]
pub struct QemuMappings {
    known: BTreeMap<(u32, u64), QemuVm>,
}

impl QemuMappings {
    /// Every QEMU process using KVM, each mapped as well as possible. `qmp`: a socket to ask
    /// first (`--qmp PATH`); it must answer, and it maps the VM whose threads it reports.
    ///
    /// QEMU processes whose descriptors cannot be read (another user's, without root) are
    /// skipped when others can be read; if none can, the permission error is returned.
    pub fn discover(&mut self, qmp: Option<&Path>) -> Result<Vec<QemuVm>, QemuError> {
        // Each VM with its QMP socket candidates (command line, then libvirt).
        let mut found: Vec<(QemuVm, Vec<PathBuf>)> = Vec::new();
        let mut denied = None;
        for pid in qemu_pids()? {
            match inspect(pid) {
                Ok(Some(vm)) => found.push(vm),
                Ok(None) => {}
                Err(e @ QemuError::Permission { .. }) => denied = denied.or(Some(e)),
                Err(_) => {} // exited while we looked
            }
        }
        if found.is_empty() {
            if let Some(e) = denied {
                return Err(e);
            }
        }
        let cache = &mut self.known;
        // Forget processes that are gone (their pids may be reused).
        let live: BTreeSet<(u32, u64)> = found.iter().map(|(vm, _)| process_key(vm.pid)).collect();
        cache.retain(|key, _| live.contains(key));
        for (vm, _) in found.iter_mut() {
            if let Some(known) = cache.get(&process_key(vm.pid)) {
                if still_valid(known, vm) {
                    *vm = known.clone();
                }
            }
        }
        let qmp_known = qmp.is_some_and(|path| {
            found.iter().any(|(vm, _)| {
                vm.method == MapMethod::Qmp && vm.qmp_socket.as_deref() == Some(path)
            })
        });
        if let Some(path) = qmp.filter(|_| !qmp_known) {
            let cpus = query_cpus(path).map_err(|source| QemuError::Qmp {
                path: path.to_path_buf(),
                source,
            })?;
            let tids: Vec<u32> = cpus.values().copied().collect();
            let owner = found
                .iter_mut()
                .map(|(vm, _)| vm)
                .find(|vm| owns_all(vm.pid, &tids));
            match owner {
                Some(vm) => apply_qmp(vm, path, &cpus),
                None => {
                    return Err(QemuError::QmpNoVm {
                        path: path.to_path_buf(),
                        tids,
                    })
                }
            }
        }
        Ok(found
            .into_iter()
            .map(|(mut vm, sockets)| {
                if vm.method == MapMethod::None {
                    map_vm(&mut vm, &sockets);
                }
                if vm.is_mapped() {
                    cache.insert(process_key(vm.pid), vm.clone());
                }
                vm
            })
            .collect())
    }

    /// The live source's hook for the third method: `(tid, vcpu_id)` pairs it saw in `kvm_entry`
    /// events of QEMU process `pid`. If they map every vCPU of a VM QMP and thread names could
    /// not, the mapping is remembered and later [`Self::discover`]/[`Self::vcpu_threads`] calls return it
    /// (method `kvm_entry`). Returns true if the VM is mapped afterwards.
    pub fn note_kvm_entry_ids(&mut self, pid: u32, seen: &[(u32, u32)]) -> bool {
        let Ok(Some((mut vm, _))) = inspect(pid) else {
            return false;
        };
        let cache = &mut self.known;
        let key = process_key(pid);
        if let Some(known) = cache.get(&key) {
            if still_valid(known, &vm) {
                return true;
            }
        }
        if !vm.map_from_kvm_entry(seen) {
            return false;
        }
        cache.insert(key, vm);
        true
    }

    /// The vCPU threads of the VMs `selector` picks: `None` or `""` = every VM, else a VM name
    /// or pid. With a selector, the VM must exist and be mapped, or this says why not. Without
    /// one, VMs that cannot be mapped (yet) are left out; no VM at all is an empty list, so a
    /// live session can call this again to pick up VMs that start later.
    pub fn vcpu_threads(
        &mut self,
        selector: Option<&str>,
        qmp: Option<&Path>,
    ) -> Result<Vec<TrackedThread>, QemuError> {
        self.session_threads(selector, qmp, false)
            .map(|s| s.threads)
    }

    /// The threads a live session watches for the VMs `selector` picks (`None` or `""` = every
    /// VM, else a name or pid), as [`Self::vcpu_threads`] does, except for VMs that QMP and thread
    /// names cannot map: with `kvm_entry_ids` (the session sees `kvm_entry` events, i.e. a
    /// VT-x/AMD-V host with probes loaded) all their threads are watched unlabelled, to be mapped
    /// from the vCPU ids their `kvm_entry` events carry; without it they are listed in
    /// [`SessionThreads::unmapped`], or an error when the selector names one.
    pub fn session_threads(
        &mut self,
        selector: Option<&str>,
        qmp: Option<&Path>,
        kvm_entry_ids: bool,
    ) -> Result<SessionThreads, QemuError> {
        let vms = self.discover(qmp)?;
        let selector = selector.filter(|s| !s.is_empty());
        let picked: Vec<&QemuVm> = vms
            .iter()
            .filter(|vm| selector.is_none_or(|sel| vm.matches(sel)))
            .collect();
        if let (Some(sel), true) = (selector, picked.is_empty()) {
            return Err(QemuError::NoSuchVm {
                selector: sel.to_string(),
                running: running_list(&vms),
            });
        }
        let mut out = SessionThreads::default();
        for vm in picked {
            if vm.is_mapped() {
                out.threads.extend(vm.threads());
            } else if kvm_entry_ids {
                out.threads.extend(all_threads(vm));
            } else if selector.is_some() {
                return Err(vm.unmapped_error());
            } else {
                out.unmapped.push(vm.clone());
            }
        }
        Ok(out)
    }

    /// The vCPU threads of one QEMU process (for `--pid` on a QEMU pid), mapped like
    /// [`Self::discover`] does; an error if it is not a QEMU process using KVM or cannot be mapped.
    pub fn process_vcpu_threads(
        &mut self,
        pid: u32,
        qmp: Option<&Path>,
    ) -> Result<Vec<TrackedThread>, QemuError> {
        let vms = self.discover(qmp)?;
        let vm = vms
            .iter()
            .find(|vm| vm.pid == pid)
            .ok_or_else(|| QemuError::NoSuchVm {
                selector: pid.to_string(),
                running: running_list(&vms),
            })?;
        if !vm.is_mapped() {
            return Err(vm.unmapped_error());
        }
        Ok(vm.threads().collect())
    }
}

/// What a live session watches for `--qemu [NAME|PID]`, from [`QemuMappings::session_threads`].
#[derive(Clone, Debug, Default)]
pub struct SessionThreads {
    /// Mapped VMs' vCPU threads (with their index) and, for VMs left to the `kvm_entry`
    /// method, all their threads (vCPU index `None` until a [`KvmEntryMapper`] maps them).
    pub threads: Vec<TrackedThread>,
    /// VMs that could not be mapped and are not watched, with the reason in `qmp_error`.
    pub unmapped: Vec<QemuVm>,
}

/// A cached mapping still holds if the vCPU count is unchanged (no hotplug) and every
/// mapped thread still exists.
fn still_valid(known: &QemuVm, now: &QemuVm) -> bool {
    let tids: Vec<u32> = known.vcpus.iter().filter_map(|v| v.tid).collect();
    known.vcpu_fds == now.vcpu_fds && known.is_mapped() && owns_all(now.pid, &tids)
}

/// Every thread of an unmapped VM, with no vCPU index: which of them run vCPUs is learnt
/// from `kvm_entry` events.
fn all_threads(vm: &QemuVm) -> impl Iterator<Item = TrackedThread> + '_ {
    hostfacts::process::thread_ids(vm.pid)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|tid| {
            Some(TrackedThread {
                pid: vm.pid,
                tid,
                // A thread that exits while we look is simply not watched.
                comm: thread_comm(vm.pid, tid)?,
                vm: vm.name.clone(),
                vcpu: None,
            })
        })
}

/// Map `vm` by the first method that works (QMP over `sockets`, then thread names), noting
/// why QMP did not.
fn map_vm(vm: &mut QemuVm, sockets: &[PathBuf]) {
    let mut errors = Vec::new();
    for path in sockets {
        match query_cpus(path) {
            Ok(cpus) if owns_all(vm.pid, &cpus.values().copied().collect::<Vec<_>>()) => {
                apply_qmp(vm, path, &cpus);
                return;
            }
            Ok(_) => errors.push(format!(
                "{} reports threads of another process",
                path.display()
            )),
            Err(e) => errors.push(format!("{}: {}", path.display(), e.chain())),
        }
    }
    vm.qmp_error = Some(if errors.is_empty() {
        "no QMP socket found on its command line or under /var/lib/libvirt/qemu".to_string()
    } else {
        format!("QMP failed ({})", errors.join("; "))
    });
    if let [only] = sockets {
        vm.qmp_socket = Some(only.clone());
    }
    let named = threads_by_name(vm.pid);
    if !named.is_empty() && named.len() as u32 == vm.vcpu_fds {
        vm.vcpus = named
            .into_iter()
            .map(|(index, tid)| QemuVcpu {
                index,
                tid: Some(tid),
            })
            .collect();
        vm.method = MapMethod::ThreadNames;
    }
}

fn apply_qmp(vm: &mut QemuVm, socket: &Path, cpus: &BTreeMap<u32, u32>) {
    vm.qmp_socket = Some(socket.to_path_buf());
    vm.vcpus = cpus
        .iter()
        .map(|(&index, &tid)| QemuVcpu {
            index,
            tid: Some(tid),
        })
        .collect();
    vm.method = MapMethod::Qmp;
    vm.qmp_error = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_threads_refuse_an_unknown_vm_in_one_line() {
        let mut mappings = QemuMappings::default();
        let err = mappings
            .session_threads(Some("no-such-vm-kvmscope-unit"), None, true)
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("no QEMU VM named or with pid `no-such-vm-kvmscope-unit`"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1);
        // Every VM, none of which needs to be running: never an error for that.
        assert!(mappings.session_threads(None, None, true).is_ok());
    }
}
