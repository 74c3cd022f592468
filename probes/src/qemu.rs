//! External QEMU VMs: find the QEMU processes that run guests under KVM and map each vCPU
//! to the host thread that runs it.
//!
//! A QEMU process "uses KVM" when it holds `anon_inode:kvm-vcpu:N` descriptors; their count is
//! its vCPU count. Each vCPU's thread is found, in this order:
//! 1. QMP `query-cpus-fast` (the socket from `--qmp PATH`, from `-qmp unix:PATH` or
//!    `-chardev socket,path=...` + `-mon ...,mode=control` on the command line, or a libvirt
//!    `monitor.sock` this process holds) — the robust mapping;
//! 2. thread names `CPU <n>/KVM` (QEMU's `-name ...,debug-threads=on`);
//! 3. `kvm_entry` vCPU ids observed per thread by a live source, handed in with
//!    [`note_kvm_entry_ids`] (that tracepoint does not fire on PVM hosts).
//!
//! Which method mapped a VM is kept in [`QemuVm::method`], and why QMP was not used in
//! [`QemuVm::qmp_error`], so `kvmscope qemu list` can say it.
//!
//! Entry points for other modules (the live source resolves `--qemu [NAME|PID]` with them):
//! - [`discover`]`(qmp: Option<&Path>) -> Result<Vec<QemuVm>, QemuError>`
//! - [`vcpu_threads`]`(selector: Option<&str>, qmp: Option<&Path>)
//!   -> Result<Vec<TrackedThread>, QemuError>`
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
    /// names is left alone: those methods are exact, this one relies on vcpu_id = cpu-index,
    /// which holds for QEMU's default x86 topologies.
    pub fn map_from_kvm_entry(&mut self, seen: &[(u32, u32)]) -> bool {
        if self.is_mapped() {
            return true;
        }
        let threads: BTreeSet<u32> = list_tasks(self.pid)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut by_index: BTreeMap<u32, u32> = BTreeMap::new();
        for &(tid, vcpu_id) in seen {
            if threads.contains(&tid) {
                by_index.insert(vcpu_id, tid);
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
    let vms = discover(qmp)?;
    match selector.filter(|s| !s.is_empty()) {
        None => Ok(vms
            .iter()
            .filter(|vm| vm.is_mapped())
            .flat_map(QemuVm::threads)
            .collect()),
        Some(sel) => {
            let picked: Vec<&QemuVm> = vms.iter().filter(|vm| vm.matches(sel)).collect();
            if picked.is_empty() {
                return Err(QemuError::NoSuchVm {
                    selector: sel.to_string(),
                    running: running_list(&vms),
                });
            }
            let mut out = Vec::new();
            for vm in picked {
                if !vm.is_mapped() {
                    return Err(QemuError::Unmapped {
                        name: vm.name.clone(),
                        pid: vm.pid,
                        why: unmapped_reason(vm),
                    });
                }
                out.extend(vm.threads());
            }
            Ok(out)
        }
    }
}

/// Whether `pid`'s executable or argv[0] is `qemu-system-*` (or a distribution's `qemu-kvm`).
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
        return Err(QemuError::Unmapped {
            name: vm.name.clone(),
            pid,
            why: unmapped_reason(vm),
        });
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
