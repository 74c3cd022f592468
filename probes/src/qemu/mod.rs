//! External QEMU VMs: find the QEMU processes that run guests under KVM and map each vCPU
//! to the host thread that runs it.
//!
//! A QEMU process "uses KVM" when it holds `anon_inode:kvm-vcpu:N` descriptors; their count is
//! its vCPU count. Each vCPU's thread is found, in this order:
//! 1. QMP `query-cpus-fast` (the socket from `--qmp PATH`, from `-qmp unix:PATH` or
//!    `-chardev socket,path=...` + `-mon ...,mode=control` on the command line, or a libvirt
//!    `monitor.sock` this process holds) — the robust mapping;
//! 2. thread names `CPU <n>/KVM` (QEMU's `-name ...,debug-threads=on`);
//! 3. `kvm_entry` vCPU ids observed per thread ([`KvmEntryMapper`] learns them from the event
//!    stream of a live source or of `kvmscope qemu list`), handed in with
//!    [`QemuMappings::note_kvm_entry_ids`] or [`QemuVm::map_from_kvm_entry`] (that tracepoint fires on
//!    VT-x/AMD-V hosts only, not on PVM).
//!
//! Which method mapped a VM is kept in [`QemuVm::method`], and why QMP was not used in
//! [`QemuVm::qmp_error`] (and why `kvm_entry` did not in [`QemuVm::kvm_entry_error`]), so
//! `kvmscope qemu list` can say it.
//!
//! Entry points for other modules, methods of [`QemuMappings`] (the mappings made so far, owned
//! by the caller: a live session keeps one across its rescans, a one-shot command makes one):
//! - `discover(qmp) -> Result<Vec<QemuVm>, QemuError>`;
//! - `vcpu_threads(selector, qmp) -> Result<Vec<TrackedThread>, QemuError>`;
//! - `session_threads(selector, qmp, kvm_entry_ids) -> Result<SessionThreads, QemuError>`:
//!   what a live session watches, including whole unmapped VMs to map from `kvm_entry`;
//! - `process_vcpu_threads(pid, qmp)` for `--pid` on QEMU, `note_kvm_entry_ids(pid, seen)`;
//! - and the free [`is_qemu`]`(pid) -> bool`, [`cpu_index_of`]`(pid, vcpu_id)`.
//!
//! Files: `argv.rs` reads a QEMU command line, `qmp.rs` is a typed QMP client, `process.rs`
//! reads what /proc says about a QEMU process, `entry_mapper.rs` learns vCPUs from
//! `kvm_entry`, `mappings.rs` maps VMs and owns the cache of mappings made.

mod argv;
mod entry_mapper;
mod mappings;
mod process;
mod qmp;

pub use entry_mapper::{EntryMapped, KvmEntryMapper};
pub use mappings::{QemuMappings, SessionThreads};
pub use process::{cpu_index_of, is_qemu};
pub use qmp::{query_cpus, QmpError};

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use crate::targets::TrackedThread;
use process::{rank_of, read_fds, thread_comm};

/// An I/O error as a short lowercase phrase ("permission denied"), for one-line messages.
pub fn io_phrase(err: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match err.kind() {
        PermissionDenied => "permission denied".to_string(),
        NotFound => "not found".to_string(),
        ConnectionRefused => "connection refused".to_string(),
        _ => {
            let text = err.to_string();
            // "Invalid argument (os error 22)" -> "invalid argument"
            let text = text.split(" (os error").next().unwrap_or(&text);
            let mut chars = text.chars();
            chars
                .next()
                .map_or(String::new(), |c| c.to_lowercase().chain(chars).collect())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("cannot read {}: {}", path.display(), io_phrase(err))]
    Proc { path: PathBuf, err: std::io::Error },
    #[error(
        "cannot inspect QEMU process {pid}: {} (run kvmscope as root to see other users' VMs)",
        io_phrase(err)
    )]
    Permission { pid: u32, err: std::io::Error },
    #[error("no QEMU VM named or with pid `{selector}` uses KVM here (running: {running})")]
    NoSuchVm { selector: String, running: String },
    #[error(
        "cannot map the vCPUs of QEMU VM {name} (pid {pid}) to threads: {why}; start QEMU with \
         `-qmp unix:PATH,server=on,wait=off` (then pass --qmp PATH if needed) or \
         `-name NAME,debug-threads=on`"
    )]
    Unmapped { name: String, pid: u32, why: String },
    #[error("QMP socket {}", path.display())]
    Qmp {
        path: PathBuf,
        #[source]
        source: QmpError,
    },
    #[error("QMP socket {path} answers for no QEMU process using KVM (its vCPU threads {tids:?} belong to none)")]
    QmpNoVm { path: PathBuf, tids: Vec<u32> },
}

/// How a VM's vCPUs were mapped to threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MapMethod {
    /// QMP `query-cpus-fast` (or `query-cpus` on QEMU < 2.12).
    Qmp,
    /// Thread names `CPU <n>/KVM` (`debug-threads=on`).
    ThreadNames,
    /// `kvm_entry` vCPU ids observed on each thread by a live source.
    KvmEntry,
    /// Not mapped (yet).
    None,
}

impl MapMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            MapMethod::Qmp => "qmp",
            MapMethod::ThreadNames => "thread_names",
            MapMethod::KvmEntry => "kvm_entry",
            MapMethod::None => "none",
        }
    }
}

impl std::fmt::Display for MapMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad` so table columns (`{:<12}`) line up.
        f.pad(self.as_str())
    }
}

/// One vCPU of a QEMU VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QemuVcpu {
    /// QEMU's `cpu-index` (the `n` of `CPU n/KVM`).
    pub index: u32,
    /// Host thread running it; `None` while unmapped.
    pub tid: Option<u32>,
}

/// A running QEMU process that uses KVM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QemuVm {
    pub pid: u32,
    /// `-name` (its `guest=` part), else `qemu-<pid>`.
    pub name: String,
    /// Number of `anon_inode:kvm-vcpu:N` descriptors the process holds.
    #[serde(rename = "vcpu_count")]
    pub vcpu_fds: u32,
    pub method: MapMethod,
    /// The QMP socket that answered, or the one tried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qmp_socket: Option<PathBuf>,
    /// Why QMP did not map this VM (no socket found, refused, timed out...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qmp_error: Option<String>,
    /// Why the `kvm_entry` method did not map it either (set by whoever tried it, such as
    /// `kvmscope qemu list`: "kvm_entry does not fire on this host", ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kvm_entry_error: Option<String>,
    /// Sorted by index. Mapped VMs list every vCPU with its tid.
    pub vcpus: Vec<QemuVcpu>,
}

impl QemuVm {
    /// True when every vCPU has a thread.
    pub fn is_mapped(&self) -> bool {
        self.method != MapMethod::None
            && !self.vcpus.is_empty()
            && self.vcpus.iter().all(|v| v.tid.is_some())
    }

    /// Map an unmapped VM from `(tid, vcpu_id)` pairs seen in `kvm_entry` events (the hook
    /// for live sources on VT-x/AMD-V hosts). Pairs whose tid is not a thread of this VM are
    /// ignored. Returns true if the VM is now mapped. A VM already mapped by QMP or thread
    /// names is left alone: those methods are exact, this one relies on KVM's vcpu_id (the x86
    /// APIC ID) growing with QEMU's cpu-index (see [`cpu_index_of`]).
    pub fn map_from_kvm_entry(&mut self, seen: &[(u32, u32)]) -> bool {
        if self.is_mapped() {
            return true;
        }
        let threads: BTreeSet<u32> = hostfacts::process::thread_ids(self.pid)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let vcpu_ids = read_fds(self.pid).map(|f| f.vcpu_ids).unwrap_or_default();
        let mut by_index: BTreeMap<u32, u32> = BTreeMap::new();
        for &(tid, vcpu_id) in seen {
            if threads.contains(&tid) {
                by_index.insert(rank_of(&vcpu_ids, vcpu_id).unwrap_or(vcpu_id), tid);
            }
        }
        if by_index.len() as u32 != self.vcpu_fds {
            return false;
        }
        self.vcpus = by_index
            .into_iter()
            .map(|(index, tid)| QemuVcpu {
                index,
                tid: Some(tid),
            })
            .collect();
        self.method = MapMethod::KvmEntry;
        self.kvm_entry_error = None;
        true
    }

    /// The mapped vCPU threads, as the live source tracks them.
    pub fn threads(&self) -> impl Iterator<Item = TrackedThread> + '_ {
        self.vcpus.iter().filter_map(|v| {
            v.tid.map(|tid| TrackedThread {
                pid: self.pid,
                tid,
                comm: thread_comm(self.pid, tid).unwrap_or_default(),
                vm: self.name.clone(),
                vcpu: Some(v.index),
            })
        })
    }

    /// Why this VM is not mapped, with what to do, as one line.
    pub fn unmapped_error(&self) -> QemuError {
        QemuError::Unmapped {
            name: self.name.clone(),
            pid: self.pid,
            why: unmapped_reason(self),
        }
    }

    /// Whether `selector` (a name or a pid) picks this VM.
    pub fn matches(&self, selector: &str) -> bool {
        self.name == selector || selector.parse::<u32>().is_ok_and(|pid| pid == self.pid)
    }
}

fn unmapped_reason(vm: &QemuVm) -> String {
    match &vm.qmp_error {
        Some(e) => format!("{e}, and its threads are not named `CPU n/KVM`"),
        None => "no QMP socket, and its threads are not named `CPU n/KVM`".to_string(),
    }
}

fn running_list(vms: &[QemuVm]) -> String {
    if vms.is_empty() {
        return "none".to_string();
    }
    vms.iter()
        .map(|vm| format!("{} (pid {})", vm.name, vm.pid))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_entry_ids_map_only_threads_of_the_vm() {
        let me = std::process::id();
        let mut vm = QemuVm {
            pid: me,
            name: "t".into(),
            vcpu_fds: 1,
            method: MapMethod::None,
            qmp_socket: None,
            qmp_error: None,
            kvm_entry_error: None,
            vcpus: vec![QemuVcpu {
                index: 0,
                tid: None,
            }],
        };
        assert!(!vm.map_from_kvm_entry(&[(u32::MAX - 1, 0)]));
        assert_eq!(vm.method, MapMethod::None);
        assert!(vm.map_from_kvm_entry(&[(me, 0)]));
        assert_eq!(vm.method, MapMethod::KvmEntry);
        assert_eq!(
            vm.vcpus,
            vec![QemuVcpu {
                index: 0,
                tid: Some(me)
            }]
        );
    }
}
