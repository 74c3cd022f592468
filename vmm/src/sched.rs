//! The host-side scheduling knobs and oracles for vCPU threads: thread ids, nice values,
//! CPU affinity, and `/proc/<pid>/task/<tid>/schedstat`.

use std::io;

/// The calling thread's kernel thread id.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// Sets the nice value of thread `tid` (on Linux `setpriority(PRIO_PROCESS, tid)` acts on
/// that one thread, which is what sets its scheduler weight).
pub fn set_nice(tid: u32, nice: i32) -> io::Result<()> {
    // SAFETY: plain syscall on integer arguments; the result is checked.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The nice value of thread `tid`.
pub fn get_nice(tid: u32) -> io::Result<i32> {
    // getpriority may legitimately return -1, so errors are told apart through errno.
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: plain syscall on integer arguments.
    let r = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
    let err = io::Error::last_os_error();
    if r == -1 && err.raw_os_error() != Some(0) {
        return Err(err);
    }
    Ok(r)
}

/// Restricts thread `tid` to `cpus`.
pub fn set_affinity(tid: u32, cpus: &[u32]) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c as usize >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: `c` is below CPU_SETSIZE (checked above).
        unsafe { libc::CPU_SET(c as usize, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let r =
        unsafe { libc::sched_setaffinity(tid as libc::pid_t, std::mem::size_of_val(&set), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs thread `tid` (0 = the caller) may run on.
pub fn get_affinity(tid: u32) -> io::Result<Vec<u32>> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let r = unsafe {
        libc::sched_getaffinity(tid as libc::pid_t, std::mem::size_of_val(&set), &mut set)
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .map(|c| c as u32)
        .collect())
}

/// `/proc/<pid>/task/<tid>/schedstat`: time on the CPU, time runnable but waiting on a run
/// queue, and the number of timeslices run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedStat {
    pub run_ns: u64,
    pub wait_ns: u64,
    pub timeslices: u64,
}

impl SchedStat {
    pub fn read(pid: u32, tid: u32) -> io::Result<SchedStat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))?;
        SchedStat::parse(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected schedstat `{}`", text.trim()),
            )
        })
    }

    pub fn parse(text: &str) -> Option<SchedStat> {
        let mut it = text.split_whitespace().map(|f| f.parse::<u64>().ok());
        Some(SchedStat {
            run_ns: it.next()??,
            wait_ns: it.next()??,
            timeslices: it.next()??,
        })
    }

    pub fn since(&self, earlier: &SchedStat) -> SchedStat {
        SchedStat {
            run_ns: self.run_ns.saturating_sub(earlier.run_ns),
            wait_ns: self.wait_ns.saturating_sub(earlier.wait_ns),
            timeslices: self.timeslices.saturating_sub(earlier.timeslices),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_parses() {
        let s = SchedStat::parse("1931000000 512 7\n").unwrap();
        assert_eq!(s.run_ns, 1_931_000_000);
        assert_eq!(s.wait_ns, 512);
        assert_eq!(s.timeslices, 7);
        assert_eq!(SchedStat::parse("1 2"), None);
        // The main thread has certainly run (a fresh test thread's figures may still be 0).
        let pid = std::process::id();
        let main = SchedStat::read(pid, pid).unwrap();
        assert!(main.run_ns > 0);
    }

    #[test]
    fn affinity_and_nice_round_trip_on_this_thread() {
        let tid = gettid();
        let allowed = get_affinity(0).unwrap();
        set_affinity(tid, &allowed[..1]).unwrap();
        assert_eq!(get_affinity(tid).unwrap(), allowed[..1]);
        set_affinity(tid, &allowed).unwrap();
        let before = get_nice(tid).unwrap();
        // Raising nice needs no privilege.
        set_nice(tid, 19).unwrap();
        assert_eq!(get_nice(tid).unwrap(), 19);
        let _ = set_nice(tid, before);
    }
}
