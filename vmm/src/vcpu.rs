//! One host thread per vCPU, looping on `KVM_RUN` like KVM's own `__vcpu_run` loop, and the
//! kick that gets it out: `immediate_exit` set from a signal handler on the thread itself,
//! so a kick that lands just before `KVM_RUN` still makes it return at once.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Once};
use std::time::Duration;

use kvm_bindings::kvm_run;
use kvm_ioctls::VcpuFd;
use rustix::io::Errno;
use rustix::thread::clock_nanosleep_absolute;
use rustix::time::{clock_gettime, ClockId, Timespec};

use crate::error::VmmError;
use crate::exit::{ExitAction, ExitCounts, ExitFault, ExitHandler};
use crate::scenario::VcpuPlan;
use crate::sched::{self, SchedStat};
use crate::Shared;

/// The real-time signal that kicks vCPU threads: the first one free for applications
/// (glibc's SIGRTMIN already lies past the ones it uses internally).
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

thread_local! {
    /// This thread's `kvm_run` while it runs a vCPU, for the kick handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// libc types: the handler signature vmm-sys-util's `register_signal_handler` takes.
extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only async-signal-safe work: one const-initialised thread-local read and one store.
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: `run` is this thread's mapped kvm_run, set below before the first KVM_RUN
        // and cleared before the VcpuFd (and its mapping) is dropped; a volatile byte store
        // is what the kernel reads on the next KVM_RUN entry.
        unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*run).immediate_exit), 1) };
    }
}

pub(crate) fn install_kick_handler() -> Result<(), VmmError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result =
            vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick).map_err(|e| {
                VmmError::Thread {
                    thread: "(all)".into(),
                    what: "install the vCPU kick signal handler",
                    err: std::io::Error::from_raw_os_error(e.errno()),
                    hint: "",
                }
            });
    });
    result
}

/// Sends the kick signal to a vCPU thread that has not exited yet. libc: a thread is named
/// by its pthread_t, which stays valid until it is joined (a tid for tgkill could already
/// name another thread); neither rustix nor std offers pthread_kill.
pub(crate) fn kick(thread: libc::pthread_t) {
    // SAFETY: callers pass the pthread_t of a thread that has not been joined (the kick list
    // entry is removed under its lock before the thread returns).
    unsafe { libc::pthread_kill(thread, kick_signal()) };
}

/// What a vCPU thread hands back when it ends.
#[derive(Debug)]
pub(crate) struct VcpuOutcome {
    pub global: usize,
    pub counts: ExitCounts,
}

pub(crate) struct VcpuThread {
    pub global: usize,
    pub plan: VcpuPlan,
    pub fd: VcpuFd,
    pub shared: Arc<Shared>,
    /// Reports the tid (or a setup error) before the guest runs.
    pub ready: Sender<Result<u32, VmmError>>,
    /// `true`: run the guest; `false` (or dropped): start was abandoned.
    pub go: Receiver<bool>,
    pub done: Sender<VcpuOutcome>,
}

impl VcpuThread {
    pub fn name(plan: &VcpuPlan) -> String {
        model::VcpuThreadName {
            vm: plan.vm_index,
            vcpu: plan.index,
        }
        .to_string()
    }

    pub fn run(mut self) {
        let tid = sched::gettid();
        let slot = &self.shared.vcpus[self.global];
        slot.tid.store(tid, Ordering::Release);
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        crate::lock(&self.shared.kick_list)[self.global] = Some(me);

        if let Err(e) = self.apply_knobs(tid) {
            let _ = self.ready.send(Err(e));
            self.finish(ExitCounts::default());
            return;
        }
        let _ = self.ready.send(Ok(tid));
        if !matches!(self.go.recv(), Ok(true)) {
            self.finish(ExitCounts::default());
            return;
        }
        if let Ok(s) = SchedStat::read(self.shared.pid, tid) {
            *crate::lock(&slot.sched_start) = Some(s);
        }

        KVM_RUN.with(|c| c.set(self.fd.get_kvm_run()));
        let counts = self.run_loop();
        KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
        self.finish(counts);
    }

    fn apply_knobs(&self, tid: u32) -> Result<(), VmmError> {
        let thread = Self::name(&self.plan);
        if let Some(n) = self.plan.nice {
            sched::set_nice(tid, n).map_err(|err| VmmError::Thread {
                hint: if n < 0 && err.raw_os_error() == Some(libc::EACCES) {
                    " (negative nice needs root or CAP_SYS_NICE)"
                } else {
                    ""
                },
                thread: thread.clone(),
                what: "set the nice value",
                err,
            })?;
        }
        if let Some(pin) = &self.plan.pin {
            sched::set_affinity(tid, pin.cpus()).map_err(|err| VmmError::Thread {
                thread,
                what: "set the CPU affinity",
                err,
                hint: "",
            })?;
        }
        Ok(())
    }

    fn run_loop(&mut self) -> ExitCounts {
        let mut handler = ExitHandler::new(self.plan.index, self.plan.exit_every);
        let stop = &self.shared.stop;
        while !stop.load(Ordering::Acquire) {
            let action = match self.fd.run() {
                Ok(exit) => handler.handle(exit),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    // A kick (or another signal). Re-arm unless we are stopping.
                    handler.counts.intr += 1;
                    self.fd.set_kvm_immediate_exit(0);
                    ExitAction::Continue
                }
                Err(e) => ExitAction::Fault(ExitFault::Unexpected(format!("KVM_RUN failed: {e}"))),
            };
            match action {
                ExitAction::Continue => {}
                ExitAction::Sleep(d) => sleep_unless_stopped(d, stop),
                ExitAction::Fault(mut fault) => {
                    if let ExitFault::InternalError { suberror } = &mut fault {
                        // SAFETY: the exit reason was KVM_EXIT_INTERNAL_ERROR, so the
                        // `internal` member of the union is the one the kernel filled.
                        *suberror =
                            unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                    }
                    self.shared.record_fault(self.global, fault);
                    break;
                }
            }
        }
        handler.counts
    }

    /// Leaves the kick list (so no signal targets a joined thread) and reports the counts.
    fn finish(&self, counts: ExitCounts) {
        crate::lock(&self.shared.kick_list)[self.global] = None;
        let _ = self.done.send(VcpuOutcome {
            global: self.global,
            counts,
        });
    }
}

/// Blocks the thread for `d` (a sleepy guest's request) unless the VMM is stopping; the
/// kick signal interrupts the sleep.
fn sleep_unless_stopped(d: Duration, stop: &std::sync::atomic::AtomicBool) {
    let now = clock_gettime(ClockId::Monotonic);
    let total = now.tv_nsec as u64 + d.as_nanos() as u64;
    let deadline = Timespec {
        tv_sec: now.tv_sec + (total / 1_000_000_000) as i64,
        tv_nsec: (total % 1_000_000_000) as _,
    };
    loop {
        if stop.load(Ordering::Acquire) {
            return;
        }
        if clock_nanosleep_absolute(ClockId::Monotonic, &deadline) != Err(Errno::INTR) {
            return;
        }
    }
}
