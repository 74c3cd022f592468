//! What /proc says about a QEMU process (read by [`hostfacts::process`]): whether it is QEMU, its command line, threads and
//! their names, its vCPU and socket descriptors, and libvirt's monitor socket among them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hostfacts::process::{self, Fds};

use super::argv::{qmp_sockets_from_argv, vm_name};
use super::{MapMethod, QemuError, QemuVcpu, QemuVm};

/// Where libvirt's QEMU driver keeps per-domain monitor sockets.
const LIBVIRT_QEMU_DIR: &str = "/var/lib/libvirt/qemu";

/// QEMU's cpu-index of the vCPU that KVM (and `kvm_entry`) knows as `vcpu_id` in process
/// `pid`: its rank among the process's `anon_inode:kvm-vcpu:<vcpu_id>` descriptors. On x86
/// the vcpu_id is the APIC ID, which grows with cpu-index but skips values when a topology's
/// core or thread count is not a power of two (`-smp 6,sockets=2,cores=3` gives 0,1,2,4,5,6).
/// `vcpu_id` itself when the descriptors cannot be read or do not list it.
pub fn cpu_index_of(pid: u32, vcpu_id: u32) -> u32 {
    read_fds(pid)
        .ok()
        .and_then(|f| rank_of(&f.vcpu_ids, vcpu_id))
        .unwrap_or(vcpu_id)
}

/// Position of `id` in the sorted set `ids`.
pub(super) fn rank_of(ids: &BTreeSet<u32>, id: u32) -> Option<u32> {
    ids.contains(&id).then(|| ids.range(..id).count() as u32)
}

/// (pid, start time in clock ticks since boot): tells a reused pid apart.
pub(super) fn process_key(pid: u32) -> (u32, u64) {
    (pid, process::start_ticks(pid))
}

/// Whether `pid`'s executable or `argv[0]` is `qemu-system-*` (or a distribution's `qemu-kvm`).
pub fn is_qemu(pid: u32) -> bool {
    let argv0 = process::cmdline(pid)
        .ok()
        .and_then(|a| a.into_iter().next());
    let exe = process::exe(pid);
    argv0.as_deref().map(Path::new).is_some_and(is_qemu_binary)
        || exe.as_deref().is_some_and(is_qemu_binary)
}

/// Pids of QEMU processes, sorted.
pub(super) fn qemu_pids() -> Result<Vec<u32>, QemuError> {
    let pids = process::pids().map_err(|err| QemuError::Proc {
        path: process::PROC_ROOT.into(),
        err,
    })?;
    Ok(pids.into_iter().filter(|&pid| is_qemu(pid)).collect())
}

fn is_qemu_binary(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    // The exe link of a replaced binary reads "... (deleted)"; the prefix still identifies it.
    name.starts_with("qemu-system-") || name == "qemu-kvm"
}

pub(super) fn read_fds(pid: u32) -> Result<Fds, QemuError> {
    Fds::read(pid).map_err(|err| {
        if err.kind() == std::io::ErrorKind::PermissionDenied {
            QemuError::Permission { pid, err }
        } else {
            QemuError::Proc {
                path: process::process_path(pid, "fd"),
                err,
            }
        }
    })
}

/// The VM a QEMU process runs, unmapped; `None` if it holds no vCPU (TCG, or still starting).
pub(super) fn inspect(pid: u32) -> Result<Option<(QemuVm, Vec<PathBuf>)>, QemuError> {
    let argv = process::cmdline(pid).map_err(|err| QemuError::Proc {
        path: process::process_path(pid, "cmdline"),
        err,
    })?;
    let fds = read_fds(pid)?;
    if fds.vcpu_ids.is_empty() {
        return Ok(None);
    }
    let name = vm_name(&argv).unwrap_or_else(|| format!("qemu-{pid}"));
    let vm = QemuVm {
        pid,
        name,
        vcpu_fds: fds.vcpu_ids.len() as u32,
        method: MapMethod::None,
        qmp_socket: None,
        qmp_error: None,
        kvm_entry_error: None,
        vcpus: (0..fds.vcpu_ids.len() as u32)
            .map(|index| QemuVcpu { index, tid: None })
            .collect(),
    };
    let mut sockets = qmp_sockets_from_argv(&argv);
    for path in libvirt_monitor_sockets(&fds.socket_inodes) {
        if !sockets.contains(&path) {
            sockets.push(path);
        }
    }
    Ok(Some((vm, sockets)))
}

/// Whether every tid in `tids` (and at least one) is a thread of `pid`.
pub(super) fn owns_all(pid: u32, tids: &[u32]) -> bool {
    let tasks: BTreeSet<u32> = process::thread_ids(pid)
        .unwrap_or_default()
        .into_iter()
        .collect();
    !tids.is_empty() && tids.iter().all(|t| tasks.contains(t))
}

pub(super) fn thread_comm(pid: u32, tid: u32) -> Option<String> {
    Some(process::ThreadStat::read(pid, tid).ok()?.comm)
}

/// `CPU <n>/KVM` threads of `pid`: cpu index → tid.
pub(super) fn threads_by_name(pid: u32) -> BTreeMap<u32, u32> {
    let mut out = BTreeMap::new();
    for tid in process::thread_ids(pid).unwrap_or_default() {
        let Some(comm) = thread_comm(pid, tid) else {
            continue;
        };
        if let Some(index) = vcpu_index_from_comm(&comm) {
            out.insert(index, tid);
        }
    }
    out
}

/// `CPU 3/KVM` → 3. QEMU names vCPU threads `CPU %d/%s` with the accelerator's name.
fn vcpu_index_from_comm(comm: &str) -> Option<u32> {
    comm.strip_prefix("CPU ")?
        .strip_suffix("/KVM")?
        .parse()
        .ok()
}

/// libvirt's `domain-*/monitor.sock` sockets that this process holds open (libvirt passes
/// the listening socket to QEMU as a descriptor, so the command line has no path). The
/// socket inodes of the process are matched against `/proc/net/unix`.
fn libvirt_monitor_sockets(inodes: &BTreeSet<u64>) -> Vec<PathBuf> {
    if inodes.is_empty() || !Path::new(LIBVIRT_QEMU_DIR).is_dir() {
        return Vec::new();
    }
    process::unix_socket_paths()
        .map(|table| monitor_sockets_in(&table, inodes))
        .unwrap_or_default()
}

/// The libvirt monitor sockets among `inodes` in the host's (inode, path) socket table.
fn monitor_sockets_in(table: &[(u64, PathBuf)], inodes: &BTreeSet<u64>) -> Vec<PathBuf> {
    table
        .iter()
        .filter(|(inode, path)| {
            inodes.contains(inode)
                && path.starts_with(LIBVIRT_QEMU_DIR)
                && path.to_str().is_some_and(|p| p.ends_with("/monitor.sock"))
        })
        .map(|(_, path)| path.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirt_monitor_sockets_are_found_by_inode() {
        let table = [
            (
                4711,
                "/var/lib/libvirt/qemu/domain-3-web/monitor.sock".into(),
            ),
            (
                4712,
                "/var/lib/libvirt/qemu/domain-4-db/monitor.sock".into(),
            ),
            (4714, "/run/other.sock".into()),
        ];
        let ours = BTreeSet::from([4711, 4713, 4714]);
        assert_eq!(
            monitor_sockets_in(&table, &ours),
            vec![PathBuf::from(
                "/var/lib/libvirt/qemu/domain-3-web/monitor.sock"
            )]
        );
    }

    #[test]
    fn vcpu_thread_names_parse() {
        assert_eq!(vcpu_index_from_comm("CPU 0/KVM"), Some(0));
        assert_eq!(vcpu_index_from_comm("CPU 12/KVM"), Some(12));
        assert_eq!(vcpu_index_from_comm("CPU 0/TCG"), None);
        assert_eq!(vcpu_index_from_comm("qemu-system-x86"), None);
    }

    #[test]
    fn process_keys_tell_reused_pids_apart() {
        let (pid, start) = process_key(std::process::id());
        assert_eq!(pid, std::process::id());
        assert!(start > 0, "start time read from /proc/self/stat");
        assert_eq!(process_key(std::process::id()), (pid, start));
    }

    #[test]
    fn apic_ids_with_gaps_rank_to_cpu_indices() {
        // -smp 6,sockets=2,cores=3: APIC IDs skip 3.
        let ids = BTreeSet::from([0, 1, 2, 4, 5, 6]);
        let ranks: Vec<Option<u32>> = [0, 2, 4, 6, 3]
            .iter()
            .map(|&id| rank_of(&ids, id))
            .collect();
        assert_eq!(ranks, vec![Some(0), Some(2), Some(3), Some(5), None]);
        // A process without vCPU descriptors (this test): the id is taken as the index.
        assert_eq!(cpu_index_of(std::process::id(), 4), 4);
    }
}
