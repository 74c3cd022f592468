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
//!    [`note_kvm_entry_ids`] or [`QemuVm::map_from_kvm_entry`] (that tracepoint fires on
//!    VT-x/AMD-V hosts only, not on PVM).
//!
//! Which method mapped a VM is kept in [`QemuVm::method`], and why QMP was not used in
//! [`QemuVm::qmp_error`] (and why `kvm_entry` did not in [`QemuVm::kvm_entry_error`]), so
//! `kvmscope qemu list` can say it.
//!
//! Entry points for other modules (the live source resolves `--qemu [NAME|PID]` with them):
//! - [`discover`]`(qmp: Option<&Path>) -> Result<Vec<QemuVm>, QemuError>`
//! - [`vcpu_threads`]`(selector: Option<&str>, qmp: Option<&Path>)
//!   -> Result<Vec<TrackedThread>, QemuError>`
//! - [`session_threads`]`(selector, qmp, kvm_entry_ids) -> Result<SessionThreads, QemuError>`:
//!   what a live session watches, including whole unmapped VMs to map from `kvm_entry`;
//! - [`is_qemu`]`(pid) -> bool`, [`process_vcpu_threads`]`(pid, qmp)` for `--pid` on QEMU.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::targets::TrackedThread;

/// How long one QMP exchange may take. A QMP server serves one client at a time (libvirt
/// keeps its connection open), so a busy socket accepts but never greets: give up quickly.
const QMP_TIMEOUT: Duration = Duration::from_millis(1500);

/// Where libvirt's QEMU driver keeps per-domain monitor sockets.
const LIBVIRT_QEMU_DIR: &str = "/var/lib/libvirt/qemu";

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
    #[error("QMP socket {path}: {message}")]
    Qmp { path: PathBuf, message: String },
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
        let threads: BTreeSet<u32> = list_tasks(self.pid)
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

/// Every QEMU process using KVM, each mapped as well as possible. `qmp`: a socket to ask
/// first (`--qmp PATH`); it must answer, and it maps the VM whose threads it reports.
///
/// QEMU processes whose descriptors cannot be read (another user's, without root) are
/// skipped when others can be read; if none can, the permission error is returned.
pub fn discover(qmp: Option<&Path>) -> Result<Vec<QemuVm>, QemuError> {
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
    let mut cache = MAPPED.lock().unwrap_or_else(|e| e.into_inner());
    // Forget processes that are gone (their pids may be reused).
    let live: BTreeSet<(u32, u64)> = found.iter().map(|(vm, _)| cache_key(vm.pid)).collect();
    cache.retain(|key, _| live.contains(key));
    for (vm, _) in found.iter_mut() {
        if let Some(known) = cache.get(&cache_key(vm.pid)) {
            if still_valid(known, vm) {
                *vm = known.clone();
            }
        }
    }
    let qmp_known = qmp.is_some_and(|path| {
        found
            .iter()
            .any(|(vm, _)| vm.method == MapMethod::Qmp && vm.qmp_socket.as_deref() == Some(path))
    });
    if let Some(path) = qmp.filter(|_| !qmp_known) {
        let cpus = qmp_query_cpus(path).map_err(|message| QemuError::Qmp {
            path: path.to_path_buf(),
            message,
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
                cache.insert(cache_key(vm.pid), vm.clone());
            }
            vm
        })
        .collect())
}

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
fn rank_of(ids: &BTreeSet<u32>, id: u32) -> Option<u32> {
    ids.contains(&id).then(|| ids.range(..id).count() as u32)
}

/// The live source's hook for the third method: `(tid, vcpu_id)` pairs it saw in `kvm_entry`
/// events of QEMU process `pid`. If they map every vCPU of a VM QMP and thread names could
/// not, the mapping is remembered and later [`discover`]/[`vcpu_threads`] calls return it
/// (method `kvm_entry`). Returns true if the VM is mapped afterwards.
pub fn note_kvm_entry_ids(pid: u32, seen: &[(u32, u32)]) -> bool {
    let Ok(Some((mut vm, _))) = inspect(pid) else {
        return false;
    };
    let mut cache = MAPPED.lock().unwrap_or_else(|e| e.into_inner());
    let key = cache_key(pid);
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

/// The third mapping method, for a live source: learns which watched thread runs which vCPU
/// from the vCPU id every `kvm_entry` event carries, for QEMU VMs that QMP and thread names
/// could not map.
///
/// The source registers each QEMU thread it watches without a vCPU index ([`Self::watch`]),
/// passes every batch of events through [`Self::observe`], and when [`Self::has_news`] says
/// so, collects the threads mapped since with [`Self::take_mapped`] (to announce them again
/// with their index) and hands complete VMs to [`note_kvm_entry_ids`] with
/// [`Self::seen_in`].
///
/// `observe` sees every event of a session: it allocates nothing and does one hash lookup
/// per `kvm_entry` (none at all once nothing is left to map).
#[derive(Debug, Default)]
pub struct KvmEntryMapper {
    /// Watched threads by tid.
    threads: HashMap<u32, WatchedThread>,
    /// Threads whose vCPU id is known, not yet taken by `take_mapped`. Its capacity covers
    /// every watched thread (reserved in `watch`), so `observe` never grows it.
    news: Vec<u32>,
    /// Watched threads whose vCPU id is not known yet: `observe` returns at once at zero.
    waiting: usize,
}

#[derive(Debug, Clone, Copy)]
struct WatchedThread {
    pid: u32,
    vcpu_id: Option<u32>,
}

/// A thread [`KvmEntryMapper`] mapped: thread `tid` of process `pid` runs the vCPU KVM numbers
/// `vcpu_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryMapped {
    pub pid: u32,
    pub tid: u32,
    /// KVM's id of the vCPU (the x86 APIC ID); [`cpu_index_of`] turns it into QEMU's index.
    pub vcpu_id: u32,
}

impl KvmEntryMapper {
    /// Start learning the vCPU of thread `tid` of QEMU process `pid`.
    pub fn watch(&mut self, pid: u32, tid: u32) {
        if self.threads.contains_key(&tid) {
            return;
        }
        self.threads
            .insert(tid, WatchedThread { pid, vcpu_id: None });
        self.waiting += 1;
        self.news
            .reserve(self.threads.len().saturating_sub(self.news.len()));
    }

    /// Stop watching `tid` (it exited or is no longer a target).
    pub fn forget(&mut self, tid: u32) {
        if let Some(t) = self.threads.remove(&tid) {
            if t.vcpu_id.is_none() {
                self.waiting -= 1;
            }
            self.news.retain(|&n| n != tid);
        }
    }

    /// Stop watching every thread of process `pid` (its VM is mapped in full: the threads
    /// left are not vCPU threads, and `observe` should not keep looking for them).
    pub fn forget_process(&mut self, pid: u32) {
        let tids: Vec<u32> = self
            .threads
            .iter()
            .filter(|(_, t)| t.pid == pid)
            .map(|(&tid, _)| tid)
            .collect();
        for tid in tids {
            self.forget(tid);
        }
    }

    /// Whether `tid` is watched.
    pub fn is_watched(&self, tid: u32) -> bool {
        self.threads.contains_key(&tid)
    }

    /// Note the vCPU ids of the `kvm_entry` events in `events`. The first id a thread shows
    /// is kept: a QEMU vCPU thread runs one vCPU for its whole life.
    pub fn observe(&mut self, events: &[model::Event]) {
        if self.waiting == 0 {
            return;
        }
        for event in events {
            let model::Event::KvmEntry(entry) = event else {
                continue;
            };
            let Some(t) = self.threads.get_mut(&entry.tid) else {
                continue;
            };
            if t.vcpu_id.is_none() {
                t.vcpu_id = Some(entry.vcpu_id);
                self.waiting -= 1;
                // Within the capacity reserved by `watch`: no allocation.
                self.news.push(entry.tid);
            }
        }
    }

    /// Whether threads were mapped since the last [`Self::take_mapped`].
    pub fn has_news(&self) -> bool {
        !self.news.is_empty()
    }

    /// The threads mapped since the last call, in the order their first `kvm_entry` came.
    pub fn take_mapped(&mut self, out: &mut Vec<EntryMapped>) {
        for tid in self.news.drain(..) {
            if let Some(&WatchedThread {
                pid,
                vcpu_id: Some(vcpu),
            }) = self.threads.get(&tid)
            {
                out.push(EntryMapped {
                    pid,
                    tid,
                    vcpu_id: vcpu,
                });
            }
        }
    }

    /// `(tid, vcpu_id)` of every mapped thread of process `pid`, for [`note_kvm_entry_ids`].
    pub fn seen_in(&self, pid: u32) -> Vec<(u32, u32)> {
        let mut seen: Vec<(u32, u32)> = self
            .threads
            .iter()
            .filter(|(_, t)| t.pid == pid)
            .filter_map(|(&tid, t)| t.vcpu_id.map(|id| (tid, id)))
            .collect();
        seen.sort_unstable();
        seen
    }
}

/// Mappings made earlier in this process, by (pid, start time). A QEMU's vCPU threads live
/// as long as its VM, so a live session's once-a-second rescans reuse them instead of asking
/// QMP again, and a QMP socket that is busy for a moment does not make a VM look gone.
static MAPPED: Mutex<BTreeMap<(u32, u64), QemuVm>> = Mutex::new(BTreeMap::new());

/// (pid, start time in clock ticks since boot): tells a reused pid apart.
fn cache_key(pid: u32) -> (u32, u64) {
    let start = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            // Fields after the name start at field 3 (state); starttime is field 22.
            rest.split_whitespace().nth(22 - 3)?.parse().ok()
        })
        .unwrap_or(0);
    (pid, start)
}

/// A cached mapping still holds if the vCPU count is unchanged (no hotplug) and every
/// mapped thread still exists.
fn still_valid(known: &QemuVm, now: &QemuVm) -> bool {
    let tids: Vec<u32> = known.vcpus.iter().filter_map(|v| v.tid).collect();
    known.vcpu_fds == now.vcpu_fds && known.is_mapped() && owns_all(now.pid, &tids)
}

/// The vCPU threads of the VMs `selector` picks: `None` or `""` = every VM, else a VM name
/// or pid. With a selector, the VM must exist and be mapped, or this says why not. Without
/// one, VMs that cannot be mapped (yet) are left out; no VM at all is an empty list, so a
/// live session can call this again to pick up VMs that start later.
pub fn vcpu_threads(
    selector: Option<&str>,
    qmp: Option<&Path>,
) -> Result<Vec<TrackedThread>, QemuError> {
    session_threads(selector, qmp, false).map(|s| s.threads)
}

/// What a live session watches for `--qemu [NAME|PID]`, from [`session_threads`].
#[derive(Clone, Debug, Default)]
pub struct SessionThreads {
    /// Mapped VMs' vCPU threads (with their index) and, for VMs left to the `kvm_entry`
    /// method, all their threads (vCPU index `None` until a [`KvmEntryMapper`] maps them).
    pub threads: Vec<TrackedThread>,
    /// VMs that could not be mapped and are not watched, with the reason in `qmp_error`.
    pub unmapped: Vec<QemuVm>,
}

/// The threads a live session watches for the VMs `selector` picks (`None` or `""` = every
/// VM, else a name or pid), as [`vcpu_threads`] does, except for VMs that QMP and thread
/// names cannot map: with `kvm_entry_ids` (the session sees `kvm_entry` events, i.e. a
/// VT-x/AMD-V host with probes loaded) all their threads are watched unlabelled, to be mapped
/// from the vCPU ids their `kvm_entry` events carry; without it they are listed in
/// [`SessionThreads::unmapped`], or an error when the selector names one.
pub fn session_threads(
    selector: Option<&str>,
    qmp: Option<&Path>,
    kvm_entry_ids: bool,
) -> Result<SessionThreads, QemuError> {
    let vms = discover(qmp)?;
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

/// Every thread of an unmapped VM, with no vCPU index: which of them run vCPUs is learnt
/// from `kvm_entry` events.
fn all_threads(vm: &QemuVm) -> impl Iterator<Item = TrackedThread> + '_ {
    list_tasks(vm.pid)
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

/// Whether `pid`'s executable or `argv[0]` is `qemu-system-*` (or a distribution's `qemu-kvm`).
pub fn is_qemu(pid: u32) -> bool {
    let argv0 = read_cmdline(pid).ok().and_then(|a| a.into_iter().next());
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    argv0.as_deref().map(Path::new).is_some_and(is_qemu_binary)
        || exe.as_deref().is_some_and(is_qemu_binary)
}

/// The vCPU threads of one QEMU process (for `--pid` on a QEMU pid), mapped like
/// [`discover`] does; an error if it is not a QEMU process using KVM or cannot be mapped.
pub fn process_vcpu_threads(pid: u32, qmp: Option<&Path>) -> Result<Vec<TrackedThread>, QemuError> {
    let vms = discover(qmp)?;
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

/// Pids of QEMU processes, sorted.
fn qemu_pids() -> Result<Vec<u32>, QemuError> {
    let proc = Path::new("/proc");
    let entries = std::fs::read_dir(proc).map_err(|err| QemuError::Proc {
        path: proc.to_path_buf(),
        err,
    })?;
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter(|&pid| is_qemu(pid))
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

fn is_qemu_binary(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    // The exe link of a replaced binary reads "... (deleted)"; the prefix still identifies it.
    name.starts_with("qemu-system-") || name == "qemu-kvm"
}

fn read_cmdline(pid: u32) -> std::io::Result<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// Threads of a process.
fn list_tasks(pid: u32) -> std::io::Result<Vec<u32>> {
    let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// What the descriptors of a process say: vCPU ids and socket inodes.
#[derive(Default)]
struct Fds {
    vcpu_ids: BTreeSet<u32>,
    socket_inodes: BTreeSet<u64>,
}

fn read_fds(pid: u32) -> Result<Fds, QemuError> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).map_err(|err| {
        if err.kind() == std::io::ErrorKind::PermissionDenied {
            QemuError::Permission { pid, err }
        } else {
            QemuError::Proc {
                path: dir.clone().into(),
                err,
            }
        }
    })?;
    let mut fds = Fds::default();
    for entry in entries.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(id) = target.strip_prefix("anon_inode:kvm-vcpu:") {
            if let Ok(id) = id.parse() {
                fds.vcpu_ids.insert(id);
            }
        } else if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
        {
            if let Ok(inode) = inode.parse() {
                fds.socket_inodes.insert(inode);
            }
        }
    }
    Ok(fds)
}

/// The VM a QEMU process runs, unmapped; `None` if it holds no vCPU (TCG, or still starting).
fn inspect(pid: u32) -> Result<Option<(QemuVm, Vec<PathBuf>)>, QemuError> {
    let argv = read_cmdline(pid).map_err(|err| QemuError::Proc {
        path: format!("/proc/{pid}/cmdline").into(),
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
fn owns_all(pid: u32, tids: &[u32]) -> bool {
    let tasks: BTreeSet<u32> = list_tasks(pid).unwrap_or_default().into_iter().collect();
    !tids.is_empty() && tids.iter().all(|t| tasks.contains(t))
}

/// Map `vm` by the first method that works (QMP over `sockets`, then thread names), noting
/// why QMP did not.
fn map_vm(vm: &mut QemuVm, sockets: &[PathBuf]) {
    let mut errors = Vec::new();
    for path in sockets {
        match qmp_query_cpus(path) {
            Ok(cpus) if owns_all(vm.pid, &cpus.values().copied().collect::<Vec<_>>()) => {
                apply_qmp(vm, path, &cpus);
                return;
            }
            Ok(_) => errors.push(format!(
                "{} reports threads of another process",
                path.display()
            )),
            Err(e) => errors.push(format!("{}: {e}", path.display())),
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

fn thread_comm(pid: u32, tid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_string())
}

/// `CPU <n>/KVM` threads of `pid`: cpu index → tid.
fn threads_by_name(pid: u32) -> BTreeMap<u32, u32> {
    let mut out = BTreeMap::new();
    for tid in list_tasks(pid).unwrap_or_default() {
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

/// The guest name of `-name [guest=]NAME[,process=...][,debug-threads=on]`.
fn vm_name(argv: &[String]) -> Option<String> {
    let value = option_values(argv, "name").into_iter().last()?;
    let mut positional = None;
    for (i, part) in split_qemu_opts(&value).into_iter().enumerate() {
        match part.split_once('=') {
            Some(("guest", v)) => return Some(v.to_string()).filter(|v| !v.is_empty()),
            Some(_) => {}
            None if i == 0 => positional = Some(part),
            None => {}
        }
    }
    positional.filter(|v| !v.is_empty())
}

/// Values of `-opt VALUE`, `--opt VALUE`, `-opt=VALUE` and `--opt=VALUE`, in order.
fn option_values(argv: &[String], opt: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            continue;
        };
        if flag == opt {
            if let Some(v) = args.next() {
                out.push(v.clone());
            }
        } else if let Some(v) = flag.strip_prefix(opt).and_then(|r| r.strip_prefix('=')) {
            out.push(v.to_string());
        }
    }
    out
}

/// Split a QEMU option string on commas; `,,` is a literal comma.
fn split_qemu_opts(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                parts.last_mut().expect("never empty").push(',');
            } else {
                parts.push(String::new());
            }
        } else {
            parts.last_mut().expect("never empty").push(c);
        }
    }
    parts
}

/// QMP sockets named on a QEMU command line: `-qmp unix:PATH[,...]` (and `-qmp-pretty`),
/// `-chardev socket,id=ID,path=PATH` used by `-mon chardev=ID,mode=control`, and the
/// `-mon` shorthand's `-monitor`-free equivalents are not QMP, so HMP sockets are skipped.
fn qmp_sockets_from_argv(argv: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for opt in ["qmp", "qmp-pretty"] {
        for value in option_values(argv, opt) {
            let first = split_qemu_opts(&value)
                .into_iter()
                .next()
                .unwrap_or_default();
            if let Some(path) = first.strip_prefix("unix:") {
                out.push(PathBuf::from(path));
            }
        }
    }
    // chardev id → path, for unix socket chardevs.
    let mut chardevs = HashMap::new();
    for value in option_values(argv, "chardev") {
        let parts = split_qemu_opts(&value);
        if parts.first().map(String::as_str) != Some("socket") {
            continue;
        }
        let kv: HashMap<&str, &str> = parts.iter().filter_map(|p| p.split_once('=')).collect();
        if let (Some(id), Some(path)) = (kv.get("id"), kv.get("path")) {
            chardevs.insert(id.to_string(), PathBuf::from(path));
        }
    }
    for value in option_values(argv, "mon") {
        let parts = split_qemu_opts(&value);
        let kv: HashMap<&str, &str> = parts.iter().filter_map(|p| p.split_once('=')).collect();
        if kv.get("mode") == Some(&"control") {
            if let Some(path) = kv.get("chardev").and_then(|id| chardevs.get(*id)) {
                out.push(path.clone());
            }
        }
    }
    out
}

/// libvirt's `domain-*/monitor.sock` sockets that this process holds open (libvirt passes
/// the listening socket to QEMU as a descriptor, so the command line has no path). The
/// socket inodes of the process are matched against `/proc/net/unix`.
fn libvirt_monitor_sockets(inodes: &BTreeSet<u64>) -> Vec<PathBuf> {
    if inodes.is_empty() || !Path::new(LIBVIRT_QEMU_DIR).is_dir() {
        return Vec::new();
    }
    std::fs::read_to_string("/proc/net/unix")
        .map(|table| monitor_sockets_in(&table, inodes))
        .unwrap_or_default()
}

/// The libvirt monitor sockets among `inodes` in a `/proc/net/unix` table.
fn monitor_sockets_in(table: &str, inodes: &BTreeSet<u64>) -> Vec<PathBuf> {
    // "Num RefCount Protocol Flags Type St Inode Path"
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let inode = cols.get(6)?.parse::<u64>().ok()?;
            let path = cols.get(7)?;
            (inodes.contains(&inode)
                && path.starts_with(LIBVIRT_QEMU_DIR)
                && path.ends_with("/monitor.sock"))
            .then(|| PathBuf::from(path))
        })
        .collect()
}

/// Ask a QMP socket for each vCPU's thread: cpu-index → thread-id. The error is a short
/// lowercase phrase (refused, timed out, not QMP...).
pub fn qmp_query_cpus(path: &Path) -> Result<BTreeMap<u32, u32>, String> {
    let mut qmp = QmpClient::connect(path)?;
    let reply = match qmp.execute("query-cpus-fast") {
        Ok(r) => r,
        // QEMU before 2.12 only has query-cpus (removed in 6.0).
        Err(e) if e.contains("CommandNotFound") => qmp.execute("query-cpus")?,
        Err(e) => return Err(e),
    };
    parse_cpus(&reply)
}

fn parse_cpus(reply: &serde_json::Value) -> Result<BTreeMap<u32, u32>, String> {
    let list = reply
        .as_array()
        .ok_or("query-cpus-fast did not return a list")?;
    let mut out = BTreeMap::new();
    for cpu in list {
        let index = cpu
            .get("cpu-index")
            .or_else(|| cpu.get("CPU"))
            .and_then(|v| v.as_u64());
        let tid = cpu
            .get("thread-id")
            .or_else(|| cpu.get("thread_id"))
            .and_then(|v| v.as_u64());
        match (index, tid) {
            (Some(i), Some(t)) => {
                out.insert(i as u32, t as u32);
            }
            _ => return Err(format!("unexpected cpu entry {cpu}")),
        }
    }
    Ok(out)
}

/// The few QMP exchanges kvmscope needs, line-delimited JSON over a Unix socket.
struct QmpClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    deadline: Instant,
}

impl QmpClient {
    fn connect(path: &Path) -> Result<Self, String> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                "connection refused (QEMU gone, or not listening)".to_string()
            }
            std::io::ErrorKind::NotFound => "no such socket".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied (run as root)".to_string(),
            _ => format!("cannot connect: {e}"),
        })?;
        let err = |e: std::io::Error| format!("socket setup: {e}");
        stream.set_read_timeout(Some(QMP_TIMEOUT)).map_err(err)?;
        stream.set_write_timeout(Some(QMP_TIMEOUT)).map_err(err)?;
        let writer = stream.try_clone().map_err(err)?;
        let mut client = QmpClient {
            reader: BufReader::new(stream),
            writer,
            deadline: Instant::now() + QMP_TIMEOUT * 2,
        };
        let greeting = client.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err("not a QMP socket (no greeting; an HMP monitor?)".to_string());
        }
        client.execute("qmp_capabilities")?;
        Ok(client)
    }

    /// Run `command` and return its `return` value; events in between are skipped.
    fn execute(&mut self, command: &str) -> Result<serde_json::Value, String> {
        let request = serde_json::json!({ "execute": command });
        writeln!(self.writer, "{request}").map_err(|e| format!("write {command}: {e}"))?;
        loop {
            let msg = self.read_message()?;
            if let Some(ret) = msg.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = msg.get("error") {
                let class = err.get("class").and_then(|c| c.as_str()).unwrap_or("Error");
                let desc = err.get("desc").and_then(|c| c.as_str()).unwrap_or("");
                return Err(format!("{command} failed: {class}: {desc}"));
            }
            // {"event": ...}: asynchronous, not ours.
        }
    }

    fn read_message(&mut self) -> Result<serde_json::Value, String> {
        if Instant::now() > self.deadline {
            return Err("timed out".to_string());
        }
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("closed by QEMU (another client connected?)".to_string()),
            Ok(_) => serde_json::from_str(&line).map_err(|e| format!("not JSON ({e})")),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(format!(
                    "no answer within {} ms (busy: a QMP socket serves one client at a time)",
                    QMP_TIMEOUT.as_millis()
                ))
            }
            Err(e) => Err(format!("read: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn names_come_from_guest_or_the_plain_value() {
        assert_eq!(
            vm_name(&argv("qemu-system-x86_64 -name guest=web,debug-threads=on")),
            Some("web".into())
        );
        assert_eq!(
            vm_name(&argv("qemu-system-x86_64 -name db")),
            Some("db".into())
        );
        assert_eq!(
            vm_name(&argv("qemu-system-x86_64 --name db,process=qemu-db")),
            Some("db".into())
        );
        assert_eq!(
            vm_name(&argv("qemu-system-x86_64 -name debug-threads=on,guest=x")),
            Some("x".into())
        );
        assert_eq!(
            vm_name(&argv("qemu-system-x86_64 -name a,,b")),
            Some("a,b".into())
        );
        assert_eq!(vm_name(&argv("qemu-system-x86_64 -m 128")), None);
        assert_eq!(vm_name(&argv("qemu-system-x86_64 -name")), None);
    }

    #[test]
    fn qmp_sockets_come_from_qmp_and_control_monitors() {
        let a = argv(
            "qemu-system-x86_64 -qmp unix:/tmp/a.sock,server=on,wait=off \
             -chardev socket,id=hmp,path=/tmp/hmp.sock,server=on \
             -mon chardev=hmp,mode=readline \
             -chardev socket,id=ctl,path=/tmp/ctl.sock,server=on,wait=off \
             -mon chardev=ctl,mode=control -qmp tcp:localhost:4444",
        );
        assert_eq!(
            qmp_sockets_from_argv(&a),
            vec![PathBuf::from("/tmp/a.sock"), PathBuf::from("/tmp/ctl.sock")]
        );
        assert_eq!(
            qmp_sockets_from_argv(&argv("qemu -qmp unix:/x,server,nowait")),
            vec![PathBuf::from("/x")]
        );
    }

    #[test]
    fn libvirt_monitor_sockets_are_found_by_inode() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 4711 /var/lib/libvirt/qemu/domain-3-web/monitor.sock\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 4712 /var/lib/libvirt/qemu/domain-4-db/monitor.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 4713\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 4714 /run/other.sock\n";
        let ours = BTreeSet::from([4711, 4713, 4714]);
        assert_eq!(
            monitor_sockets_in(table, &ours),
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
    fn cpu_lists_parse_both_reply_shapes() {
        let fast = serde_json::json!([
            {"cpu-index": 0, "thread-id": 100, "qom-path": "/machine/unattached/device[0]", "target": "x86_64"},
            {"cpu-index": 1, "thread-id": 101, "qom-path": "/machine/unattached/device[1]", "target": "x86_64"}
        ]);
        assert_eq!(
            parse_cpus(&fast).unwrap(),
            BTreeMap::from([(0, 100), (1, 101)])
        );
        let old = serde_json::json!([{"CPU": 0, "current": true, "thread_id": 7}]);
        assert_eq!(parse_cpus(&old).unwrap(), BTreeMap::from([(0, 7)]));
        assert!(parse_cpus(&serde_json::json!({"x": 1})).is_err());
        assert!(parse_cpus(&serde_json::json!([{"cpu-index": 0}])).is_err());
    }

    #[test]
    fn qmp_client_speaks_the_protocol() {
        let dir = std::env::temp_dir().join(format!("kvmscope-qmp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut w = stream.try_clone().unwrap();
            let mut r = BufReader::new(stream);
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("qmp_capabilities"));
            writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("query-cpus-fast"));
            writeln!(w, r#"{{"event": "RESUME", "data": {{}}}}"#).unwrap();
            writeln!(w, r#"{{"return": [{{"cpu-index": 1, "thread-id": 42}}]}}"#).unwrap();
        });
        assert_eq!(qmp_query_cpus(&path).unwrap(), BTreeMap::from([(1, 42)]));
        server.join().unwrap();

        // A socket that accepts but never greets times out with a clear phrase.
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = qmp_query_cpus(&path).unwrap_err();
        assert!(err.contains("no answer"), "{err}");
        drop(listener);
        let err = qmp_query_cpus(&path).unwrap_err();
        assert!(err.contains("refused"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn cache_keys_tell_reused_pids_apart() {
        let (pid, start) = cache_key(std::process::id());
        assert_eq!(pid, std::process::id());
        assert!(start > 0, "start time read from /proc/self/stat");
        assert_eq!(cache_key(std::process::id()), (pid, start));
    }

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

    /// `kvm_entry` of thread `tid` running vCPU `vcpu_id`.
    fn entry(ts: u64, tid: u32, vcpu_id: u32) -> model::Event {
        model::Event::KvmEntry(model::KvmEntry {
            ts,
            cpu: 0,
            tid,
            vcpu_id,
        })
    }

    #[test]
    fn kvm_entry_mapper_labels_watched_threads_from_their_first_entry() {
        use model::synth;
        let mut mapper = KvmEntryMapper::default();
        // QEMU 100: main thread 100, vCPU threads 101 (vCPU 1) and 102 (vCPU 0).
        for tid in [100, 101, 102] {
            mapper.watch(100, tid);
        }
        mapper.watch(200, 201);
        assert!(!mapper.has_news());
        mapper.observe(&[
            synth::switch(1, 0, 100, 101),
            entry(2, 101, 1),
            synth::kvm_exit(3, 0, 101, model::ExitIsa::Vmx, 30),
            entry(4, 999, 7), // not watched: another VM's thread
            entry(5, 102, 0),
            entry(6, 101, 5), // a thread keeps its first vCPU id
        ]);
        assert!(mapper.has_news());
        let mut mapped = Vec::new();
        mapper.take_mapped(&mut mapped);
        assert_eq!(
            mapped,
            vec![
                EntryMapped {
                    pid: 100,
                    tid: 101,
                    vcpu_id: 1
                },
                EntryMapped {
                    pid: 100,
                    tid: 102,
                    vcpu_id: 0
                },
            ]
        );
        assert!(!mapper.has_news());
        assert_eq!(mapper.seen_in(100), vec![(101, 1), (102, 0)]);
        assert_eq!(mapper.seen_in(200), vec![]);

        // Later batches report only what is new.
        mapper.observe(&[entry(7, 101, 1), entry(8, 201, 0)]);
        mapped.clear();
        mapper.take_mapped(&mut mapped);
        assert_eq!(
            mapped,
            vec![EntryMapped {
                pid: 200,
                tid: 201,
                vcpu_id: 0
            }]
        );
    }

    #[test]
    fn kvm_entry_mapper_forgets_threads_and_never_grows_while_observing() {
        let mut mapper = KvmEntryMapper::default();
        for tid in 1..=64 {
            mapper.watch(1, tid);
        }
        let capacity = mapper.news.capacity();
        assert!(capacity >= 64);
        // A thread that exits before entering the guest is forgotten, also when its entry
        // was seen but not yet taken.
        mapper.observe(&[entry(1, 3, 2)]);
        mapper.forget(3);
        mapper.forget(4);
        assert!(!mapper.has_news());
        assert!(!mapper.is_watched(3));
        let events: Vec<model::Event> = (1..=64).map(|tid| entry(tid as u64, tid, tid)).collect();
        mapper.observe(&events);
        assert_eq!(mapper.news.capacity(), capacity, "observe allocated");
        assert_eq!(mapper.news.len(), 62);
        assert_eq!(mapper.waiting, 0);
        // Nothing left to learn: a batch is not even looked at.
        mapper.observe(&[entry(99, 5, 0)]);
        assert_eq!(mapper.news.len(), 62);
        let mut mapped = Vec::new();
        mapper.take_mapped(&mut mapped);
        assert!(mapped
            .iter()
            .all(|m| m.tid == m.vcpu_id && m.tid != 3 && m.tid != 4));
        assert_eq!(mapper.seen_in(1).len(), 62);
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

    #[test]
    fn kvm_entry_mapper_stops_looking_once_a_vm_is_mapped() {
        let mut mapper = KvmEntryMapper::default();
        // QEMU 10: main thread 10 never enters a guest; 11 and 12 run vCPUs 0 and 1.
        for tid in [10, 11, 12] {
            mapper.watch(10, tid);
        }
        mapper.watch(20, 21);
        mapper.observe(&[entry(1, 11, 0), entry(2, 12, 1)]);
        assert_eq!(mapper.waiting, 2, "10 and 21 still unknown");
        mapper.forget_process(10);
        assert_eq!(mapper.waiting, 1);
        assert!(!mapper.is_watched(10) && !mapper.is_watched(11));
        assert!(mapper.is_watched(21));
        let mut mapped = Vec::new();
        mapper.take_mapped(&mut mapped);
        assert!(
            mapped.is_empty(),
            "forgotten threads are not reported: {mapped:?}"
        );
        mapper.forget_process(20);
        assert_eq!(mapper.waiting, 0);
    }

    #[test]
    fn session_threads_refuse_an_unknown_vm_in_one_line() {
        let err = session_threads(Some("no-such-vm-kvmscope-unit"), None, true).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("no QEMU VM named or with pid `no-such-vm-kvmscope-unit`"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1);
        // Every VM, none of which needs to be running: never an error for that.
        assert!(session_threads(None, None, true).is_ok());
    }
}
