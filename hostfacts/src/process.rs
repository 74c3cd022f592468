//! What `/proc` says about processes and their threads: which exist, their `stat` and
//! `status` fields, names, command lines, executables, and the descriptors they hold (KVM
//! vCPUs, sockets, memfds). `stat`, `status`, task lists, descriptor links and the socket
//! table are parsed by the `procfs` crate; this module chooses the fields kvmscope needs and
//! turns `procfs`'s errors into the ones its callers tell apart. Directory listings stay on
//! `std::fs` where `procfs` would open and stat every entry (see [`pids`], [`Fds::read`]).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use procfs::process::{FDTarget, Process, Stat, Status};
use procfs::{FromRead, ProcError};

use crate::task_files::{task_path, TaskFileError};

/// Where the kernel lists processes.
pub const PROC_ROOT: &str = "/proc";

/// The `/proc` directory of process `pid`.
fn process_dir(pid: u32) -> PathBuf {
    Path::new(PROC_ROOT).join(pid.to_string())
}

/// The `/proc` path of process `pid`'s `file` (`fd`, `task`, `cmdline`...), for messages
/// that say what could not be read.
pub fn process_path(pid: u32, file: &str) -> PathBuf {
    process_dir(pid).join(file)
}

/// Whether process `pid` exists (or a thread with that id: /proc lists both).
pub fn process_exists(pid: u32) -> bool {
    process_dir(pid).exists()
}

/// Whether thread `tid` of process `pid` exists.
pub fn thread_exists(pid: u32, tid: u32) -> bool {
    process_dir(pid).join("task").join(tid.to_string()).exists()
}

/// Every process id on the host, sorted. Processes that exit during the scan are skipped.
///
/// The names of `/proc`'s entries suffice: `procfs::process::all_processes` opens each
/// process as well, which doubled the cost of `--all-kvm`'s once-a-second rescan.
pub fn pids() -> io::Result<Vec<u32>> {
    let mut pids: Vec<u32> = std::fs::read_dir(PROC_ROOT)?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// Thread ids of process `pid`, sorted. Threads that exit during the scan are skipped.
pub fn thread_ids(pid: u32) -> io::Result<Vec<u32>> {
    let mut tids: Vec<u32> = open(pid)?
        .tasks()
        .map_err(io_error)?
        .flatten()
        .filter_map(|t| u32::try_from(t.tid).ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// `argv` of process `pid` (`/proc/<pid>/cmdline`), empty arguments left out.
///
/// Read as bytes and converted lossily: `procfs`'s `cmdline` fails on an argument that is
/// not UTF-8 (a path, say), which would hide that QEMU from `kvmscope qemu`.
pub fn cmdline(pid: u32) -> io::Result<Vec<String>> {
    let raw = std::fs::read(process_path(pid, "cmdline"))?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect())
}

/// The executable of process `pid`, if it can be read.
pub fn exe(pid: u32) -> Option<PathBuf> {
    open(pid).ok()?.exe().ok()
}

/// When process `pid` started, in clock ticks since boot (0 if it cannot be read): with the
/// pid, it tells a reused pid apart.
pub fn start_ticks(pid: u32) -> u64 {
    Stat::from_file(process_dir(pid).join("stat")).map_or(0, |s| s.starttime)
}

/// A process's CPU time so far, in clock ticks, and who reaps it (`/proc/<pid>/stat`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessCpu {
    pub ppid: u32,
    /// When it started (ticks since boot): with the pid, it tells a reused pid apart.
    pub start_ticks: u64,
    pub comm: String,
    /// Its threads', live and ended (utime + stime).
    pub own_ticks: u64,
    /// The children it reaped, each with the children they reaped (cutime + cstime): the
    /// time of a child that ended between two reads lands here.
    pub reaped_ticks: u64,
}

impl ProcessCpu {
    /// `None` once the process is gone.
    pub fn read(pid: u32) -> Option<ProcessCpu> {
        let s = Stat::from_file(process_dir(pid).join("stat")).ok()?;
        Some(ProcessCpu {
            ppid: u32::try_from(s.ppid).unwrap_or(0),
            start_ticks: s.starttime,
            own_ticks: s.utime + s.stime,
            reaped_ticks: u64::try_from(s.cutime.max(0) + s.cstime.max(0)).unwrap_or(0),
            comm: s.comm,
        })
    }
}

/// The autogroup of process `pid` (`/proc/<pid>/autogroup`'s first word, e.g.
/// `/autogroup-687`; every session is one with `kernel.sched_autogroup_enabled=1`): "" for
/// the root task group (kernel threads, init), `None` once the process is gone or where the
/// kernel has no autogroups.
pub fn autogroup(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(process_dir(pid).join("autogroup")).ok()?;
    Some(match crate::task_group::parse_autogroup(&text) {
        crate::task_group::TaskGroupFacts::Autogroup { name, .. } => name,
        _ => String::new(),
    })
}

/// The fields of `/proc/<pid>/task/<tid>/stat` kvmscope uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadStat {
    pub tid: u32,
    /// Thread name (may contain spaces and parentheses).
    pub comm: String,
    /// One-letter state: R running, S sleeping, D disk sleep, T stopped, t traced, Z zombie...
    pub state: char,
    /// Thread group id, read from `/proc/<pid>/task/<tid>/status` (stat has only the ppid).
    pub tgid: u32,
    pub nice: i32,
    /// CPU the thread last ran on.
    pub processor: u32,
}

impl ThreadStat {
    /// Read thread `tid` of process `pid`.
    pub fn read(pid: u32, tid: u32) -> Result<Self, TaskFileError> {
        let path = task_path(pid, tid, "stat");
        let stat = Stat::from_file(&path).map_err(|e| task_error(pid, tid, path, e))?;
        let mut stat = Self::from_stat(&stat);
        let status = task_path(pid, tid, "status");
        stat.tgid = Status::from_file(status)
            .ok()
            .and_then(|s| u32::try_from(s.tgid).ok())
            .unwrap_or(pid);
        Ok(stat)
    }

    /// Parse a `stat` line. `tgid` is set to 0: the line does not carry it.
    pub fn parse(text: &str) -> Option<Self> {
        Stat::from_read(text.as_bytes())
            .ok()
            .map(|s| Self::from_stat(&s))
    }

    fn from_stat(s: &Stat) -> Self {
        ThreadStat {
            tid: s.pid as u32,
            comm: s.comm.clone(),
            state: s.state,
            tgid: 0,
            nice: s.nice as i32,
            processor: s.processor.map_or(0, |p| p as u32),
        }
    }
}

/// What the descriptors of a process say about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fds {
    /// KVM's ids of the vCPUs it holds (`anon_inode:kvm-vcpu:<id>`).
    pub vcpu_ids: BTreeSet<u32>,
    /// Inodes of its sockets.
    pub socket_inodes: BTreeSet<u64>,
    /// Its memfds: (descriptor, name as the link shows it, e.g. `name (deleted)`).
    pub memfds: Vec<(i32, String)>,
}

impl Fds {
    /// Read `/proc/<pid>/fd`. Descriptors closed while it is read are skipped.
    ///
    /// One `readlink` per descriptor, parsed by `procfs`'s `FDTarget`: `Process::fd` also
    /// stats each link, which doubled the cost of `--all-kvm`'s rescans.
    pub fn read(pid: u32) -> io::Result<Self> {
        let mut fds = Fds::default();
        for entry in std::fs::read_dir(process_path(pid, "fd"))?.flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Ok(link) = std::fs::read_link(entry.path()) else {
                continue;
            };
            let Some(target) = link.to_str().and_then(|t| t.parse::<FDTarget>().ok()) else {
                continue;
            };
            match target {
                FDTarget::AnonInode(kind) => {
                    if let Some(id) = vcpu_id_of_anon_inode(&kind) {
                        fds.vcpu_ids.insert(id);
                    }
                }
                FDTarget::Socket(inode) => {
                    fds.socket_inodes.insert(inode);
                }
                FDTarget::MemFD(name) => fds.memfds.push((fd, name)),
                _ => {}
            }
        }
        Ok(fds)
    }
}

/// `kvm-vcpu:3` (an anon inode's kind) → 3.
fn vcpu_id_of_anon_inode(kind: &str) -> Option<u32> {
    kind.strip_prefix("kvm-vcpu:")?.parse().ok()
}

/// Read what descriptor `fd` of process `pid` refers to, from its start (opening
/// `/proc/<pid>/fd/<fd>` opens the file itself).
pub fn read_fd(pid: u32, fd: i32) -> io::Result<String> {
    std::fs::read_to_string(process_dir(pid).join("fd").join(fd.to_string()))
}

/// Bound Unix sockets on the host (`/proc/net/unix`): (inode, path).
pub fn unix_socket_paths() -> io::Result<Vec<(u64, PathBuf)>> {
    Ok(procfs::net::unix()
        .map_err(io_error)?
        .into_iter()
        .filter_map(|e| Some((e.inode, e.path?)))
        .collect())
}

fn open(pid: u32) -> io::Result<Process> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::NotFound))?;
    Process::new(pid).map_err(io_error)
}

/// `procfs`'s error as the `io::Error` it stands for, so callers keep telling a vanished
/// process (`NotFound`) and a refused one (`PermissionDenied`) apart.
pub fn io_error(e: ProcError) -> io::Error {
    match e {
        ProcError::NotFound(_) => io::ErrorKind::NotFound.into(),
        ProcError::PermissionDenied(_) => io::ErrorKind::PermissionDenied.into(),
        ProcError::Io(e, _) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

fn task_error(pid: u32, tid: u32, path: PathBuf, e: ProcError) -> TaskFileError {
    match io_error(e) {
        e if crate::task_files::is_gone(&e) => TaskFileError::NoSuchThread { pid, tid },
        e if e.kind() == io::ErrorKind::InvalidData => TaskFileError::Format {
            path,
            what: e.to_string(),
        },
        source => TaskFileError::Read { path, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaped_children_count_in_their_parents_cpu_time() {
        let me = std::process::id();
        let before = ProcessCpu::read(me).unwrap();
        assert_eq!(before.ppid, std::os::unix::process::parent_id());
        assert_eq!(before.start_ticks, start_ticks(me));
        // A child that spins for 50 ms of CPU (sh's loop) and is reaped by `status()`.
        let ok = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(ok.success());
        let after = ProcessCpu::read(me).unwrap();
        assert!(
            after.reaped_ticks > before.reaped_ticks,
            "{before:?} then {after:?}"
        );
        // Every process has an autogroup line where the kernel has autogroups ("" only for
        // the root task group).
        if std::path::Path::new("/proc/self/autogroup").exists() {
            assert!(autogroup(me).is_some());
        }
        assert_eq!(autogroup(u32::MAX), None);
    }

    #[test]
    fn stat_names_with_spaces_and_parens_parse() {
        let line = "4242 (CPU 0/KVM) (x) R 1 4242 4242 0 -1 4194560 0 0 0 0 100 20 0 0 \
                    20 5 4 0 12345 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 \
                    0 0 0 0 0";
        let s = ThreadStat::parse(line).unwrap();
        assert_eq!(s.tid, 4242);
        assert_eq!(s.comm, "CPU 0/KVM) (x");
        assert_eq!(s.state, 'R');
        assert_eq!(s.nice, 5);
        assert_eq!(s.processor, 1);
    }

    #[test]
    fn own_threads_and_stat_are_read() {
        let pid = std::process::id();
        assert!(thread_ids(pid).unwrap().contains(&pid));
        let me = ThreadStat::read(pid, pid).unwrap();
        assert_eq!((me.tid, me.tgid), (pid, pid));
        assert!(pids().unwrap().contains(&pid));
        assert!(process_exists(pid) && thread_exists(pid, pid));
        assert!(start_ticks(pid) > 0);
        assert!(!cmdline(pid).unwrap().is_empty());
        assert!(exe(pid).is_some());
    }

    #[test]
    fn a_missing_thread_is_told_apart() {
        // pid_max is at most 4194304, so this pid cannot exist.
        let err = ThreadStat::read(4_194_305, 4_194_305).unwrap_err();
        assert!(matches!(err, TaskFileError::NoSuchThread { .. }), "{err:?}");
        assert_eq!(
            thread_ids(4_194_305).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(!process_exists(4_194_305));
    }

    #[test]
    fn vcpu_anon_inodes_are_recognised() {
        assert_eq!(vcpu_id_of_anon_inode("kvm-vcpu:0"), Some(0));
        assert_eq!(vcpu_id_of_anon_inode("kvm-vcpu:12"), Some(12));
        assert_eq!(vcpu_id_of_anon_inode("kvm-vm"), None);
        let me = Fds::read(std::process::id()).unwrap();
        assert!(me.vcpu_ids.is_empty());
    }
}
