//! What this host offers kvmscope: privileges, `/dev/kvm` and its flavour (VT-x, AMD-V or
//! PVM), BTF, tracefs and each tracepoint kvmscope attaches to (present, and whether it can
//! fire here), bpffs, `kernel.bpf_stats_enabled`, the scheduler and kernel.
//!
//! [`host_info`] gives the facts that go into report headers and trace files;
//! [`check_host`] gives the one-line-per-capability verdict behind `kvmscope check`.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use model::HostInfo;

use crate::features::KernelFeatures;
use crate::qemu::io_phrase;
use serde::Serialize;

/// Tracepoints kvmscope attaches to, as (system, event).
pub const USED_TRACEPOINTS: &[(&str, &str)] = &[
    ("sched", "sched_switch"),
    ("sched", "sched_wakeup"),
    ("sched", "sched_waking"),
    ("sched", "sched_migrate_task"),
    ("sched", "sched_process_exit"),
    ("kvm", "kvm_entry"),
    ("kvm", "kvm_exit"),
    ("kvm", "kvm_userspace_exit"),
    ("kvm", "kvm_pio"),
    ("csd", "csd_queue_cpu"),
    ("csd", "csd_function_entry"),
    ("csd", "csd_function_exit"),
];

const BTF_VMLINUX: &str = "/sys/kernel/btf/vmlinux";
const PVM_MODULE: &str = "/sys/module/kvm_pvm";
const TRACEFS_PATHS: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const BPFFS_PATH: &str = "/sys/fs/bpf";

/// `KVM_GET_API_VERSION` = `_IO(KVMIO, 0x00)`, KVMIO = 0xAE.
const KVM_GET_API_VERSION: u64 = 0xAE00;

pub use model::KvmFlavour;

/// The KVM backend of this host. PVM is checked first: it is what serves `/dev/kvm` when
/// loaded, even inside a VM whose CPU flags mention virtualisation.
pub fn kvm_flavour() -> KvmFlavour {
    if !Path::new("/dev/kvm").exists() {
        return KvmFlavour::None;
    }
    if Path::new(PVM_MODULE).exists() {
        return KvmFlavour::Pvm;
    }
    let flags = hostfacts::system::cpu_flags();
    if flags.iter().any(|f| f == "vmx") {
        KvmFlavour::Vmx
    } else if flags.iter().any(|f| f == "svm") {
        KvmFlavour::Svm
    } else {
        KvmFlavour::None
    }
}

/// `uname -r`.
pub fn kernel_release() -> String {
    hostfacts::system::kernel_release()
}

/// Facts about this host for report headers and trace files.
pub fn host_info() -> HostInfo {
    let features = KernelFeatures::host();
    HostInfo {
        hostname: hostfacts::system::hostname(),
        scheduler: features.scheduler().to_string(),
        kernel: kernel_release(),
        csd_tracepoints: features.csd_tracepoints,
        cpus: online_cpus(),
        kvm_flavour: kvm_flavour(),
        clock: "CLOCK_MONOTONIC".to_string(),
        tsc_hz: None,
        hz: hostfacts::system::kernel_hz(),
    }
}

fn online_cpus() -> u32 {
    // libc: rustix has no sysconf(_SC_NPROCESSORS_ONLN) (available_parallelism counts the
    // CPUs this thread may use, not the host's).
    // SAFETY: sysconf has no preconditions; it returns -1 on error, handled below.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as u32
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
    }
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Verdict of one line of `kvmscope check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Present and usable.
    Ok,
    /// Present, but it cannot do its job here (a tracepoint that never fires on this host).
    Limited,
    /// Absent or not usable.
    Missing,
    /// Cannot be told (what would show it is not readable).
    Unknown,
    /// A fact, neither good nor bad.
    Info,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Limited => "limited",
            Status::Missing => "missing",
            Status::Unknown => "unknown",
            Status::Info => "info",
        }
    }
}

/// One capability and what this host offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckItem {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// Live tracing cannot run without it.
    pub required: bool,
}

/// Everything `kvmscope check` says.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostCheck {
    pub host: HostInfo,
    pub items: Vec<CheckItem>,
    /// True when the live features (BPF probes on vCPU threads) can run.
    pub live_ok: bool,
    /// Why not, one phrase per missing requirement.
    pub reasons: Vec<String>,
}

/// Check this host for everything kvmscope's live features need.
pub fn check_host() -> HostCheck {
    let host = host_info();
    let mut items = Vec::new();
    let mut push = |name: &str, status: Status, detail: String, required: bool| {
        items.push(CheckItem {
            name: name.to_string(),
            status,
            detail,
            required,
        });
    };

    push("kernel", Status::Info, host.kernel.clone(), false);
    push("scheduler", Status::Info, scheduler_detail(&host), false);
    push("cpus", Status::Info, format!("{} online", host.cpus), false);

    let (status, detail) = privileges();
    push("privileges", status, detail, true);

    let flavour = kvm_flavour();
    let (status, detail) = dev_kvm(flavour);
    push("/dev/kvm", status, detail, true);

    let (status, detail) = match fs::File::open(BTF_VMLINUX) {
        Ok(f) => {
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            (Status::Ok, format!("{BTF_VMLINUX} ({} KiB)", size / 1024))
        }
        Err(e) => (
            Status::Missing,
            format!(
                "{BTF_VMLINUX}: {} (kernel needs CONFIG_DEBUG_INFO_BTF=y)",
                io_phrase(&e)
            ),
        ),
    };
    push("BTF", status, detail, true);

    let mounts = hostfacts::system::mounts();
    let tracefs = find_tracefs(&mounts);
    let (status, detail) = match &tracefs {
        TraceFs::Readable(p) => (Status::Ok, format!("mounted at {}", p.display())),
        TraceFs::Unreadable(p, e) => (
            Status::Missing,
            format!(
                "mounted at {} but not readable: {} (run as root)",
                p.display(),
                io_phrase(e)
            ),
        ),
        TraceFs::NotMounted => (
            Status::Missing,
            "not mounted (mount -t tracefs nodev /sys/kernel/tracing)".to_string(),
        ),
    };
    push("tracefs", status, detail, true);

    let (status, detail) = if mount_type_at(&mounts, Path::new(BPFFS_PATH)) == Some("bpf") {
        (Status::Ok, format!("mounted at {BPFFS_PATH}"))
    } else {
        (
            Status::Info,
            format!("not mounted at {BPFFS_PATH} (not needed; to pin maps: mount -t bpf bpf {BPFFS_PATH})"),
        )
    };
    push("bpffs", status, detail, false);

    for &(system, event) in USED_TRACEPOINTS {
        let (status, detail) = tracepoint(&tracefs, system, event, flavour);
        let required = (system, event) == ("sched", "sched_switch");
        push(&format!("{system}:{event}"), status, detail, required);
    }

    let (status, detail) = match hostfacts::system::bpf_stats_enabled().as_deref() {
        Some("1") => (Status::Info, "1 (BPF run time per program is counted)".to_string()),
        Some(v) => (
            Status::Info,
            format!("{v} (per-program BPF run time not counted; sysctl kernel.bpf_stats_enabled=1 to measure probe cost)"),
        ),
        None => (
            Status::Info,
            format!("unknown (cannot read {})", hostfacts::system::BPF_STATS_ENABLED),
        ),
    };
    push("kernel.bpf_stats_enabled", status, detail, false);

    let reasons = items
        .iter()
        .filter(|i| i.required && matches!(i.status, Status::Missing | Status::Unknown))
        .map(|i| format!("{}: {}", i.name, i.detail))
        .collect::<Vec<_>>();
    HostCheck {
        host,
        live_ok: reasons.is_empty(),
        reasons,
        items,
    }
}

fn scheduler_detail(host: &HostInfo) -> String {
    // Told from BTF (sched_entity.deadline), see crate::features.
    let base = match host.scheduler.as_str() {
        "EEVDF" => "EEVDF (sched_entity has a deadline: vruntime plus deadline, lag and slice)",
        "CFS" => "CFS (sched_entity has no deadline: vruntime only)",
        _ => "unknown (no readable kernel BTF to tell CFS from EEVDF)",
    };
    // A loaded sched_ext scheduler takes over fair tasks; say so rather than imply EEVDF.
    match read_trimmed("/sys/kernel/sched_ext/state").as_deref() {
        Some("enabled") => {
            let ops = read_trimmed("/sys/kernel/sched_ext/root/ops").unwrap_or_default();
            format!("{base}; sched_ext scheduler `{ops}` is loaded and overrides it")
        }
        _ => base.to_string(),
    }
}

/// Whether this process may load and attach the eBPF probes (the rule lives in
/// `hostfacts::privilege`).
pub use hostfacts::privilege::may_load_bpf;

fn privileges() -> (Status, String) {
    let euid = hostfacts::euid();
    let has = |cap| hostfacts::privilege::has_effective(cap);
    let names: Vec<&str> = [
        (caps::Capability::CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (caps::Capability::CAP_PERFMON, "CAP_PERFMON"),
        (caps::Capability::CAP_BPF, "CAP_BPF"),
    ]
    .iter()
    .filter(|(bit, _)| has(*bit))
    .map(|(_, name)| *name)
    .collect();
    let who = if euid == 0 {
        "root".to_string()
    } else {
        format!("uid {euid}")
    };
    let have = if names.is_empty() {
        "none of CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN".to_string()
    } else {
        names.join(" ")
    };
    // Loading and attaching tracing programs needs CAP_BPF plus CAP_PERFMON, or
    // CAP_SYS_ADMIN which implies both; reading tracefs needs root in practice.
    if may_load_bpf() {
        (Status::Ok, format!("{who}; effective capabilities: {have}"))
    } else {
        (
            Status::Missing,
            format!("{who}; effective capabilities: {have} (run as root, or grant CAP_BPF and CAP_PERFMON)"),
        )
    }
}

fn dev_kvm(flavour: KvmFlavour) -> (Status, String) {
    let kvm =
        match fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (
                Status::Missing,
                "no /dev/kvm (load kvm_intel or kvm_amd, or enable virtualisation in the firmware)"
                    .into(),
            ),
            Err(e) => {
                return (
                    Status::Missing,
                    format!(
                        "cannot open /dev/kvm: {} (run as root or join the kvm group); flavour {}",
                        io_phrase(&e),
                        flavour.describe()
                    ),
                )
            }
        };
    // libc: rustix has no KVM ioctls, and its generic `ioctl` patterns drop the syscall's
    // return value, which is the answer here; kvm-ioctls (`Kvm::get_api_version`) is the
    // VMM's dependency, not this crate's.
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int; the fd is a
    // valid open /dev/kvm for the duration of the call.
    let version = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    let api = if version >= 0 {
        format!("API version {version}")
    } else {
        format!("KVM_GET_API_VERSION failed: {}", io::Error::last_os_error())
    };
    let note = match flavour {
        KvmFlavour::Pvm => "; kvm_entry/kvm_exit cannot fire: guest resume latency comes only from guest gap records",
        _ => "",
    };
    let status = if flavour == KvmFlavour::None {
        Status::Limited
    } else {
        Status::Ok
    };
    (status, format!("{}, {api}{note}", flavour.describe()))
}

enum TraceFs {
    Readable(PathBuf),
    Unreadable(PathBuf, io::Error),
    NotMounted,
}

fn find_tracefs(mounts: &str) -> TraceFs {
    for path in TRACEFS_PATHS {
        let path = Path::new(path);
        if mount_type_at(mounts, path) != Some("tracefs") {
            continue;
        }
        return match fs::read_dir(path.join("events")) {
            Ok(_) => TraceFs::Readable(path.to_path_buf()),
            Err(e) => TraceFs::Unreadable(path.to_path_buf(), e),
        };
    }
    TraceFs::NotMounted
}

/// The filesystem type mounted at `path` (the last mount wins, as it hides earlier ones).
fn mount_type_at<'a>(mounts: &'a str, path: &Path) -> Option<&'a str> {
    mounts.lines().rev().find_map(|l| {
        let mut cols = l.split_whitespace();
        let _dev = cols.next()?;
        let at = cols.next()?;
        let kind = cols.next()?;
        (Path::new(at) == path).then_some(kind)
    })
}

fn tracepoint(
    tracefs: &TraceFs,
    system: &str,
    event: &str,
    flavour: KvmFlavour,
) -> (Status, String) {
    let TraceFs::Readable(root) = tracefs else {
        return (
            Status::Unknown,
            "cannot tell: tracefs not readable".to_string(),
        );
    };
    if !root
        .join("events")
        .join(system)
        .join(event)
        .join("id")
        .exists()
    {
        let why = match system {
            "csd" => {
                "absent on this kernel (csd:* arrived in Linux 6.4): VMCLEAR attribution needs Linux 6.4; everything else works"
            }
            "kvm" => "absent (KVM not loaded or built without tracepoints)",
            _ => "absent",
        };
        return (Status::Missing, why.to_string());
    }
    match (system, event) {
        ("kvm", "kvm_entry" | "kvm_exit") if !flavour.fires_entry_exit() => (
            Status::Limited,
            format!(
                "present, but cannot fire here: {} never calls it (views say so instead of showing zeros)",
                if flavour == KvmFlavour::Pvm { "PVM" } else { "this KVM backend" }
            ),
        ),
        ("kvm", "kvm_entry") => (Status::Ok, "present, fires on every guest entry".into()),
        ("kvm", "kvm_exit") => (Status::Ok, "present, fires on every guest exit".into()),
        ("kvm", "kvm_userspace_exit") => (Status::Ok, "present, fires when KVM_RUN returns to the VMM".into()),
        ("kvm", "kvm_pio") => (Status::Ok, "present, fires on port I/O exits".into()),
        ("csd", _) if flavour != KvmFlavour::Vmx => (
            Status::Ok,
            "present, fires on cross-CPU calls (no VMCLEAR IPIs to attribute: not VT-x)".into(),
        ),
        ("csd", _) => (Status::Ok, "present, fires on cross-CPU calls (VMCLEAR IPIs after vCPU migrations)".into()),
        _ => (Status::Ok, "present, fires".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_matched_by_path_and_the_last_one_wins() {
        let mounts = "nodev /sys/kernel/tracing tracefs rw 0 0\n\
                      bpf /sys/fs/bpf bpf rw 0 0\n\
                      tmpfs /sys/fs/bpf tmpfs rw 0 0\n";
        assert_eq!(
            mount_type_at(mounts, Path::new("/sys/kernel/tracing")),
            Some("tracefs")
        );
        assert_eq!(
            mount_type_at(mounts, Path::new("/sys/fs/bpf")),
            Some("tmpfs")
        );
        assert_eq!(mount_type_at(mounts, Path::new("/sys/kernel/debug")), None);
    }

    #[test]
    fn entry_exit_fire_only_on_hardware_kvm() {
        assert!(KvmFlavour::Vmx.fires_entry_exit());
        assert!(KvmFlavour::Svm.fires_entry_exit());
        assert!(!KvmFlavour::Pvm.fires_entry_exit());
    }

    #[test]
    fn host_info_is_filled() {
        let h = host_info();
        assert!(!h.kernel.is_empty());
        assert!(h.cpus >= 1);
        assert_eq!(h.clock, "CLOCK_MONOTONIC");
        assert_ne!(h.kvm_flavour, KvmFlavour::Unknown);
    }
}
