//! Which threads to watch: turns what the user asked for (`--pid`, `--all-kvm`, `--qemu`, the
//! in-process VMM) into a list of [`TrackedThread`]s, read from `/proc`.
//!
//! vCPU threads are recognised three ways:
//! - the bundled VMM names them `vm<V>-vcpu<C>`;
//! - QEMU's are mapped by [`crate::qemu`] (QMP `query-cpus-fast`, or `CPU n/KVM` names);
//! - any other process: the number of `anon_inode:kvm-vcpu:N` fds says it holds vCPUs, but not
//!   which thread runs which one, so all its threads are watched with no vCPU index.
//!
//! The same functions serve the live source's periodic rescans ([`resolve_pid`] tells a
//! vanished process apart from a failure) and the tests' oracles ([`ThreadStat`]). What
//! `/proc` says is read by the host-facts layer ([`hostfacts::process`]).

use std::io;
use std::path::PathBuf;

use hostfacts::process::{self, Fds};
use hostfacts::TaskFileError;

/// The fields of a thread's `stat` kvmscope uses (read by the host-facts layer).
pub use hostfacts::process::ThreadStat;

/// One thread kvmscope watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedThread {
    /// Process (thread group) id.
    pub pid: u32,
    pub tid: u32,
    /// Thread name as in `/proc/<pid>/task/<tid>/comm`.
    pub comm: String,
    /// VM name: `vm<V>` for the bundled VMM, QEMU's `-name`, else `<comm>-<pid>`.
    pub vm: String,
    /// vCPU index inside the VM when this thread is known to run one.
    pub vcpu: Option<u32>,
}

/// What the user asked to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// These processes, all their vCPU threads.
    Pids(Vec<u32>),
    /// Every process holding a KVM vCPU fd.
    AllKvm,
    /// QEMU VMs: all (`selector` `None` or empty) or the one with this name or pid.
    Qemu {
        selector: Option<String>,
        qmp: Option<PathBuf>,
    },
    /// Threads already known (the in-process VMM reports its own vCPU threads).
    Threads(Vec<TrackedThread>),
}

/// Why targets could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("process {0} does not exist (check the pid with `ps`)")]
    NoSuchProcess(u32),
    #[error("process {pid} ({comm}) holds no KVM vCPU (give the pid of a VMM or QEMU process)")]
    NoVcpu { pid: u32, comm: String },
    #[error("no process on this host holds a KVM vCPU (start a VM first, or use --demo)")]
    NoKvmProcess,
    #[error("no QEMU VM using KVM is running (see `kvmscope qemu list`)")]
    NoQemu,
    #[error("no threads to watch were given")]
    NoThreads,
    #[error("cannot read {}: {source}", path.display())]
    Proc { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Qemu(#[from] crate::qemu::QemuError),
}

/// Resolve a target to the threads to watch, sorted by (pid, vcpu, tid).
///
/// Errors name the first pid that does not exist or holds no vCPU: a user who typed a pid
/// wants to hear about the mistake, not get an empty trace.
pub fn resolve(spec: &TargetSpec) -> Result<Vec<TrackedThread>, TargetError> {
    let mut threads = match spec {
        TargetSpec::Pids(pids) => {
            let mut all = Vec::new();
            for &pid in pids {
                match resolve_pid(pid)? {
                    Some(t) => all.extend(t),
                    None => return Err(TargetError::NoSuchProcess(pid)),
                }
            }
            all
        }
        TargetSpec::AllKvm => {
            let mut all = Vec::new();
            for pid in kvm_processes() {
                // A process that exits between the scan and now is simply not a target.
                if let Ok(Some(t)) = resolve_pid(pid) {
                    all.extend(t);
                }
            }
            if all.is_empty() {
                return Err(TargetError::NoKvmProcess);
            }
            all
        }
        TargetSpec::Qemu { selector, qmp } => {
            let selector = selector.as_deref().filter(|s| !s.is_empty());
            let threads =
                crate::qemu::QemuMappings::default().vcpu_threads(selector, qmp.as_deref())?;
            if threads.is_empty() {
                return Err(TargetError::NoQemu);
            }
            threads
        }
        TargetSpec::Threads(t) => {
            if t.is_empty() {
                return Err(TargetError::NoThreads);
            }
            t.clone()
        }
    };
    threads.sort_by_key(|t| (t.pid, t.vcpu.unwrap_or(u32::MAX), t.tid));
    threads.dedup_by_key(|t| t.tid);
    Ok(threads)
}

/// The threads to watch in process `pid`, or `None` if the process no longer exists.
///
/// Errors when the process exists but holds no vCPU.
pub fn resolve_pid(pid: u32) -> Result<Option<Vec<TrackedThread>>, TargetError> {
    let gone = || !process::process_exists(pid);
    let stat = match ThreadStat::read(pid, pid) {
        Ok(s) => s,
        Err(_) if gone() => return Ok(None),
        Err(e) => return Err(task_error(pid, e)),
    };
    // A tid is visible under /proc/<tid> too, but it is not a process: refuse it as one.
    if stat.tgid != pid {
        return Err(TargetError::NoSuchProcess(pid));
    }
    let vcpu_fds = match vcpu_fd_count(pid) {
        Ok(n) => n,
        Err(_) if gone() => return Ok(None),
        Err(source) => {
            return Err(TargetError::Proc {
                path: process::process_path(pid, "fd"),
                source,
            })
        }
    };
    let threads = match list_threads(pid) {
        Ok(t) => t,
        Err(_) if gone() => return Ok(None),
        Err(e) => return Err(e),
    };

    // The bundled VMM: vCPU threads carry their VM and index in their names, and the VMM
    // publishes its VMs' names.
    let mut vm_names = None;
    let bundled: Vec<TrackedThread> = threads
        .iter()
        .filter_map(|(tid, comm)| {
            let name = model::VcpuThreadName::parse(comm)?;
            let vm_names = vm_names.get_or_insert_with(|| bundled_vm_names(pid));
            Some(TrackedThread {
                pid,
                tid: *tid,
                comm: comm.clone(),
                vm: vm_names.vm_of(name),
                vcpu: Some(name.vcpu),
            })
        })
        .collect();
    if !bundled.is_empty() {
        return Ok(Some(bundled));
    }
    if vcpu_fds == 0 {
        return Err(TargetError::NoVcpu {
            pid,
            comm: stat.comm,
        });
    }
    if crate::qemu::is_qemu(pid) {
        // QEMU knows its own vCPU ↔ thread map; fall back to all threads if it cannot say.
        if let Ok(mapped) = crate::qemu::QemuMappings::default().process_vcpu_threads(pid, None) {
            if !mapped.is_empty() {
                return Ok(Some(mapped));
            }
        }
    }
    let vm = format!("{}-{pid}", stat.comm);
    Ok(Some(
        threads
            .into_iter()
            .map(|(tid, comm)| TrackedThread {
                pid,
                tid,
                comm,
                vm: vm.clone(),
                vcpu: None,
            })
            .collect(),
    ))
}

/// Thread ids and names of process `pid`, sorted by tid. Threads that exit while the
/// directory is read are skipped.
pub fn list_threads(pid: u32) -> Result<Vec<(u32, String)>, TargetError> {
    let tids = process::thread_ids(pid).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            TargetError::NoSuchProcess(pid)
        } else {
            TargetError::Proc {
                path: process::process_path(pid, "task"),
                source,
            }
        }
    })?;
    Ok(tids
        .into_iter()
        .filter_map(|tid| Some((tid, ThreadStat::read(pid, tid).ok()?.comm)))
        .collect())
}

/// How many KVM vCPU descriptors (`anon_inode:kvm-vcpu:N`) process `pid` holds.
pub fn vcpu_fd_count(pid: u32) -> io::Result<u32> {
    Ok(Fds::read(pid)?.vcpu_ids.len() as u32)
}

/// The VM names a bundled VMM publishes (`model::VmNames` in its `VM_NAMES_MEMFD` memfd);
/// none (VMs then go by `vm<V>`) if it publishes none or exited meanwhile. A table that does
/// not parse is logged and ignored: the threads are still watched, by index.
pub fn bundled_vm_names(pid: u32) -> model::VmNames {
    let Ok(fds) = Fds::read(pid) else {
        return model::VmNames::default();
    };
    let tables = fds
        .memfds
        .iter()
        .filter(|(_, name)| name.starts_with(model::VM_NAMES_MEMFD));
    for &(fd, _) in tables {
        match process::read_fd(pid, fd).map(|text| model::VmNames::parse(&text)) {
            Ok(Ok(names)) => return names,
            Ok(Err(e)) => log::warn!("process {pid}'s VM names are ignored: {e}"),
            Err(e) => log::warn!("cannot read process {pid}'s VM names: {e}"),
        }
    }
    model::VmNames::default()
}

/// Every process holding at least one KVM vCPU fd, sorted by pid.
pub fn kvm_processes() -> Vec<u32> {
    process::pids()
        .unwrap_or_default()
        .into_iter()
        .filter(|&pid| vcpu_fd_count(pid).is_ok_and(|n| n > 0))
        .collect()
}

/// A thread's `stat` failure as a target error: a vanished thread is a vanished process.
fn task_error(pid: u32, e: TaskFileError) -> TargetError {
    match e {
        TaskFileError::NoSuchThread { .. } => TargetError::NoSuchProcess(pid),
        TaskFileError::Read { path, source } => TargetError::Proc { path, source },
        TaskFileError::Format { path, what } => TargetError::Proc {
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, what),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundled_vmm_watched_by_pid_keeps_its_scenario_vm_names() {
        // This process plays the VMM: a thread named by the contract, the names published.
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel();
        let vcpu = std::thread::Builder::new()
            .name("vm1-vcpu0".into())
            .spawn(move || {
                ready.send(vmm::sched::gettid()).unwrap();
                let _ = wait.recv();
            })
            .unwrap();
        let tid = started.recv().unwrap();
        let me = std::process::id();
        let unnamed = resolve_pid(me).unwrap().unwrap();
        let vm_of =
            |threads: &[TrackedThread]| threads.iter().find(|t| t.tid == tid).map(|t| t.vm.clone());
        assert_eq!(vm_of(&unnamed).as_deref(), Some("vm1"), "{unnamed:?}");
        let names = model::VmNames::new([(0, "web".into()), (1, "batch".into())]);
        let published = vmm::vm_names::publish(&names).unwrap();
        let named = resolve_pid(me).unwrap().unwrap();
        assert_eq!(vm_of(&named).as_deref(), Some("batch"), "{named:?}");
        assert_eq!(named.iter().find(|t| t.tid == tid).unwrap().vcpu, Some(0));
        drop(published);
        assert_eq!(
            vm_of(&resolve_pid(me).unwrap().unwrap()).as_deref(),
            Some("vm1")
        );
        drop(stop);
        vcpu.join().unwrap();
    }

    #[test]
    fn own_threads_are_listed() {
        let pid = std::process::id();
        let threads = list_threads(pid).unwrap();
        assert!(threads.iter().any(|(tid, _)| *tid == pid));
        let me = ThreadStat::read(pid, pid).unwrap();
        assert_eq!(me.tgid, pid);
    }

    #[test]
    fn a_process_without_vcpus_is_refused_clearly() {
        let pid = std::process::id();
        let err = resolve(&TargetSpec::Pids(vec![pid])).unwrap_err();
        assert!(matches!(err, TargetError::NoVcpu { .. }), "{err}");
        assert!(err.to_string().contains("holds no KVM vCPU"));
    }

    #[test]
    fn a_missing_process_is_refused_clearly() {
        // pid_max is at most 4194304, so this pid cannot exist.
        let err = resolve(&TargetSpec::Pids(vec![4_194_305])).unwrap_err();
        assert!(
            matches!(err, TargetError::NoSuchProcess(4_194_305)),
            "{err}"
        );
        assert_eq!(resolve_pid(4_194_305).unwrap(), None);
    }
}
