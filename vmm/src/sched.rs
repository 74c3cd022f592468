//! The host-side scheduling knobs and oracles for vCPU threads: thread ids, nice values,
//! CPU affinity (thread ids and `schedstat` come from the host-facts layer, `hostfacts`).

use std::io;

/// The calling thread's kernel thread id, from the host-facts layer.
pub use hostfacts::gettid;

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

/// A thread's `/proc/<pid>/task/<tid>/schedstat`, from the host-facts layer.
pub use hostfacts::SchedStat;

#[cfg(test)]
mod tests {
    use super::*;

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
