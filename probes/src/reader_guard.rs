//! Keeping the reader's bpf() calls from costing events.
//!
//! The kernel runs at most one tracepoint program per CPU at a time: a classic tracepoint
//! program (`kvm:*`, `csd:*` here) does not run on a CPU where `bpf_prog_active` is raised,
//! and the skip is not a ring-buffer loss: kernels from 6.7 on count it in the program's
//! `recursion_misses`, older ones count nothing. Every bpf() map lookup or update raises it
//! on the caller's CPU for the length of the call with only migration disabled, so the
//! caller can be preempted there. When the reader (this process, reading the switch rings
//! and the lost counters by lookups) was preempted in such a call by a traced vCPU thread,
//! every kvm_exit, kvm_pio and kvm_userspace_exit that thread made meanwhile was skipped.
//! Seen on Debian sid's 7.2 under QEMU TCG (preemptible kernel, slow map copies): `report
//! --demo` 11 and 14 port-I/O exits short of the VMM in 2 of 3 runs, with `recursion_misses`
//! of kvm_pio 11 and 14 (issue #13).
//!
//! So the reader makes those calls at real-time priority ([`ReaderPriority`]), where no
//! traced (fair-class) thread can preempt it: the drain's reads and also the `tracked` map's
//! get/set when a thread is tracked or untracked, which happen while the other vCPUs run
//! (a VMM starting or stopping its threads), and the exit aggregates' per-thread entry
//! deleted when a thread is untracked. Whatever runs are still skipped become lost events
//! ([`recursion_misses`]), and the warning names the programs.
//!
//! What no priority of the reader prevents: a BTF tracepoint program (`tp_btf`: the `sched:*`
//! and `csd:*` ones here) is skipped only while the same program already runs on that CPU
//! (the kernel's per-program `active` count, which bpf() calls do not touch). Seen on sid
//! under TCG (issue #15, one sid matrix run in ten): one `csd:csd_queue_cpu` run skipped while
//! the bundled VMM was stopping, before the final drain and with none of our bpf() calls
//! under way. The cause was our own record: csd_queue_cpu runs with interrupts on where
//! `smp_call_function_*` queue (TLB shootdowns as the VMM unmaps its guests, KVM's VMCLEAR),
//! and a record that forced the reader's wakeup raised an irq_work whose interrupt woke the
//! reader on an idle CPU through its wake list, a cross-call, nested in the program. Cross-
//! call records now never force a wakeup (`emit_csd` in `ebpf/kvmscope.bpf.c`; the test
//! `priv_cross_calls`). Any other interrupt that lands in the program and queues a cross-call
//! (a wakeup of a task on an idle CPU) still nests: rare (under TCG, with every other record
//! waking the reader, 8 runs in 47 248 against 30 604 in 36 001 before), and harmless, as the
//! program sends nothing for a cross-call queued in an interrupt, which is not the
//! interrupted thread's own; so csd_queue_cpu's skipped runs are not counted as lost
//! (`programs::SKIPS_COST_NOTHING`). Every other program's skipped runs are: whether the
//! skipped run would have sent a record cannot be known afterwards.

use std::io;
use std::os::fd::RawFd;

// libc rather than rustix here: rustix has neither sched_getscheduler/sched_setscheduler nor
// the bpf() syscall.

/// While alive, the calling thread runs `SCHED_FIFO` at priority 1; dropping it restores
/// the thread's policy (its nice value is kept across). A thread already real-time is left
/// alone.
pub(crate) struct ReaderPriority {
    restore: Option<libc::c_int>,
}

impl ReaderPriority {
    /// Fails with the kernel's error (EPERM without CAP_SYS_NICE).
    pub(crate) fn raise() -> io::Result<ReaderPriority> {
        // SAFETY: sched_getscheduler(0) reads the calling thread's policy.
        let policy = unsafe { libc::sched_getscheduler(0) };
        if policy < 0 {
            return Err(io::Error::last_os_error());
        }
        if policy == libc::SCHED_FIFO || policy == libc::SCHED_RR {
            return Ok(ReaderPriority { restore: None });
        }
        set_policy(libc::SCHED_FIFO, 1)?;
        Ok(ReaderPriority {
            restore: Some(policy),
        })
    }
}

impl Drop for ReaderPriority {
    fn drop(&mut self) {
        if let Some(policy) = self.restore {
            // Restoring a fair policy needs no privilege; should it fail, the thread stays
            // real-time at the lowest priority, which a later raise() finds and keeps.
            if let Err(e) = set_policy(policy, 0) {
                log::warn!("cannot restore the reader's scheduling policy: {e}");
            }
        }
    }
}

fn set_policy(policy: libc::c_int, priority: libc::c_int) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: param is a valid sched_param; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `bpf_prog_info.recursion_misses` of the program behind `fd` (BPF_OBJ_GET_INFO_BY_FD; aya
/// does not expose the field). None if the kernel refuses the call.
pub(crate) fn recursion_misses(fd: RawFd) -> Option<u64> {
    use aya_obj::generated::bpf_prog_info;
    /// `union bpf_attr`'s `info` member, for BPF_OBJ_GET_INFO_BY_FD.
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: bpf_prog_info is plain integers: all-zero is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(fd).ok()?,
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: std::ptr::addr_of_mut!(info) as u64,
    };
    // SAFETY: attr is a live attribute of the size passed, whose `info` points to a writable
    // bpf_prog_info of `info_len` bytes; the kernel writes at most that much.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            std::ptr::addr_of_mut!(attr),
            std::mem::size_of::<InfoAttr>(),
        )
    };
    (rc == 0).then_some(info.recursion_misses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_reader_gets_its_policy_back() {
        // SAFETY: reads the calling thread's policy.
        let before = unsafe { libc::sched_getscheduler(0) };
        match ReaderPriority::raise() {
            Ok(guard) => {
                // SAFETY: as above.
                let during = unsafe { libc::sched_getscheduler(0) };
                assert!(during == libc::SCHED_FIFO || during == libc::SCHED_RR);
                drop(guard);
            }
            // Without CAP_SYS_NICE the policy is untouched.
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM)),
        }
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, before);
    }

    #[test]
    fn a_descriptor_that_is_no_program_has_no_miss_count() {
        assert_eq!(recursion_misses(-1), None);
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(recursion_misses(std::os::fd::AsRawFd::as_raw_fd(&f)), None);
    }
}
