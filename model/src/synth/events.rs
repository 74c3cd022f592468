//! One-line builders for every event kind, so a test states its stream event by event, and
//! the few short streams that several test files share.

use crate::*;

/// `TaskInfo` for a thread of VM `vm` (pid = `pid`), optionally vCPU `vcpu`.
pub fn task_info(ts: u64, tid: u32, pid: u32, vm: &str, vcpu: Option<u32>, nice: i32) -> Event {
    let comm = match vcpu {
        Some(i) => Comm::new(&format!("{vm}-vcpu{i}")),
        None => Comm::new(vm),
    };
    Event::TaskInfo(TaskInfo {
        ts,
        tid,
        pid,
        comm,
        vm: vm.to_string(),
        vcpu,
        nice,
        schedstat: None,
        start: None,
    })
}

/// Scheduler-entity data as a switch carries it.
pub fn se(vruntime: u64, weight: u32, sum_exec_runtime: u64) -> SchedEntity {
    SchedEntity {
        vruntime,
        weight,
        sum_exec_runtime,
        deadline: None,
        vlag: None,
        slice: None,
        run_delay: None,
    }
}

/// Builder for a `sched_switch`. Defaults: prev preempted (state 0), comms `t<tid>`, no se.
#[derive(Clone, Copy, Debug)]
pub struct Switch(pub SchedSwitch);

impl Switch {
    pub fn new(ts: u64, cpu: u32, prev_tid: u32, next_tid: u32) -> Self {
        let name = |t: u32| {
            if t == 0 {
                Comm::new("swapper")
            } else {
                Comm::new(&format!("t{t}"))
            }
        };
        Switch(SchedSwitch {
            ts,
            cpu,
            prev_tid,
            prev_pid: prev_tid,
            prev_comm: name(prev_tid),
            prev_state: 0,
            next_tid,
            next_pid: next_tid,
            next_comm: name(next_tid),
            prev_se: None,
            next_se: None,
        })
    }
    /// prev goes to sleep (voluntary switch, `TASK_INTERRUPTIBLE`).
    pub fn sleeping(mut self) -> Self {
        self.0.prev_state = 1;
        self
    }
    pub fn prev_se(mut self, se: SchedEntity) -> Self {
        self.0.prev_se = Some(se);
        self
    }
    pub fn next_se(mut self, se: SchedEntity) -> Self {
        self.0.next_se = Some(se);
        self
    }
    pub fn prev_comm(mut self, c: &str) -> Self {
        self.0.prev_comm = Comm::new(c);
        self
    }
    pub fn next_comm(mut self, c: &str) -> Self {
        self.0.next_comm = Comm::new(c);
        self
    }
    pub fn build(self) -> Event {
        Event::SchedSwitch(self.0)
    }
}

/// Shorthand: `prev` preempted on `cpu`, `next` switched in, no se data.
pub fn switch(ts: u64, cpu: u32, prev_tid: u32, next_tid: u32) -> Event {
    Switch::new(ts, cpu, prev_tid, next_tid).build()
}

/// Shorthand: `prev` goes to sleep on `cpu`, `next` switched in.
pub fn switch_sleep(ts: u64, cpu: u32, prev_tid: u32, next_tid: u32) -> Event {
    Switch::new(ts, cpu, prev_tid, next_tid).sleeping().build()
}

pub fn wakeup(ts: u64, cpu: u32, tid: u32, target_cpu: u32) -> Event {
    Event::Wakeup(Wakeup {
        ts,
        cpu,
        tid,
        pid: tid,
        target_cpu,
        waker_tid: 0,
    })
}

pub fn migrate(ts: u64, tid: u32, orig_cpu: u32, dest_cpu: u32) -> Event {
    Event::Migrate(Migrate {
        ts,
        cpu: orig_cpu,
        tid,
        pid: tid,
        orig_cpu,
        dest_cpu,
    })
}

pub fn task_exit(ts: u64, cpu: u32, tid: u32) -> Event {
    Event::TaskExit(TaskExit {
        ts,
        cpu,
        tid,
        pid: tid,
    })
}

pub fn kvm_entry(ts: u64, cpu: u32, tid: u32) -> Event {
    Event::KvmEntry(KvmEntry {
        ts,
        cpu,
        tid,
        vcpu_id: 0,
    })
}

pub fn kvm_exit(ts: u64, cpu: u32, tid: u32, isa: ExitIsa, reason: u32) -> Event {
    Event::KvmExit(KvmExit {
        ts,
        cpu,
        tid,
        vcpu_id: 0,
        reason,
        isa,
    })
}

pub fn userspace_exit(ts: u64, cpu: u32, tid: u32, reason: u32) -> Event {
    Event::UserspaceExit(UserspaceExit {
        ts,
        cpu,
        tid,
        reason,
        errno: 0,
    })
}

/// A port I/O exit: `rw` 0 = in, 1 = out.
pub fn pio(ts: u64, cpu: u32, tid: u32, port: u32, rw: u32) -> Event {
    Event::Pio(Pio {
        ts,
        cpu,
        tid,
        rw,
        port,
        size: 1,
        val: 0,
    })
}

pub fn guest_gap(start: u64, end: u64, tid: u32, vm: u32, vcpu: u32) -> Event {
    Event::GuestGap(GuestGap {
        start,
        end,
        tid,
        vm,
        vcpu,
    })
}

pub fn lost(ts: u64, cpu: u32, count: u64) -> Event {
    Event::Lost(Lost { ts, cpu, count })
}

pub fn unobserved(ts: u64, what: UnobservedKind, count: u64) -> Event {
    Event::Unobserved(Unobserved { ts, what, count })
}

pub fn vm_ended(ts: u64, pid: u32, vm: &str) -> Event {
    Event::VmEnded(VmEnded {
        ts,
        pid,
        vm: vm.to_string(),
    })
}

/// A VMCLEAR cross-call: queued on `cpu` by `tid` for `target_cpu`, or its exit there.
pub fn vmclear(
    ts: u64,
    cpu: u32,
    phase: CrossCallPhase,
    csd: u64,
    target_cpu: u32,
    tid: u32,
) -> Event {
    Event::CrossCall(CrossCall {
        ts,
        cpu,
        phase,
        func: 0xffff_ffff_8100_0000,
        csd,
        target_cpu,
        tid,
        is_vmclear: true,
    })
}

/// One vCPU (tid 1, vCPU 0 of `vm0`, pid 100) with guest entries and exits on two pCPUs:
/// on pCPU 0 from 0 it enters its guest at 20 µs, exits with `exits[0]` at 1 ms, re-enters
/// 5 µs later, exits with `exits[1]` at 2 ms, re-enters 3 µs later, exits with `exits[2]` at
/// 3 ms and is switched out (preempted) 10 µs later; on pCPU 1 from 4 ms it enters at
/// +30 µs, exits with `exits[3]` at 5 ms, exits to user space (`KVM_EXIT_IO`) 1 µs later and
/// enters again at 5.04 ms. Resume latencies: 20 µs on the same pCPU, 30 µs migrated.
pub fn guest_exits_on_two_pcpus(exits: [(ExitIsa, u32); 4]) -> Vec<Event> {
    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;
    let exit = |ts: u64, cpu: u32, i: usize| kvm_exit(ts, cpu, 1, exits[i].0, exits[i].1);
    vec![
        task_info(0, 1, 100, "vm0", Some(0), 0),
        switch(0, 0, 0, 1),
        kvm_entry(20 * US, 0, 1),
        exit(MS, 0, 0),
        kvm_entry(MS + 5 * US, 0, 1),
        exit(2 * MS, 0, 1),
        kvm_entry(2 * MS + 3 * US, 0, 1),
        exit(3 * MS, 0, 2),
        switch(3 * MS + 10 * US, 0, 1, 0),
        switch(4 * MS, 1, 0, 1),
        kvm_entry(4 * MS + 30 * US, 1, 1),
        exit(5 * MS, 1, 3),
        userspace_exit(5 * MS + US, 1, 1, 2),
        kvm_entry(5 * MS + 40 * US, 1, 1),
    ]
}

/// vCPUs 0 and 1 of `vm0` (tids 10 and 11, one pCPU each) over 5 us: vCPU 0 runs 800 ns and
/// then sleeps to the end (halted for good), vCPU 1 runs from 1.2 us to the end. What tells
/// a vCPU that slept for the rest of a recording from one that never slept.
pub fn one_halted_one_running() -> Vec<Event> {
    vec![
        task_info(0, 10, 1, "vm0", Some(0), 0),
        task_info(0, 11, 1, "vm0", Some(1), 0),
        wakeup(100, 0, 10, 0),
        switch(200, 0, 0, 10),
        switch_sleep(1_000, 0, 10, 0),
        wakeup(1_100, 1, 11, 1),
        switch(1_200, 1, 0, 11),
        switch(5_000, 0, 0, 77),
    ]
}
