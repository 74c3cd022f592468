//! Turns the event stream into what both exporters draw: per-vCPU state changes, vruntime
//! samples, resume latencies and guest gaps, plus what each pCPU is running.
//!
//! Kept separate from the writers so Perfetto and Chrome JSON show the same derived facts.

use std::collections::{HashMap, HashSet};

use model::trace_file::TraceHeader;
use model::{Comm, Event, VcpuState};

/// A vCPU thread as the exporters label it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuThread {
    pub tid: u32,
    pub pid: u32,
    pub vm: String,
    pub vcpu: Option<u32>,
    pub comm: String,
}

impl VcpuThread {
    pub fn label(&self) -> String {
        match self.vcpu {
            Some(v) => format!("{} vCPU {v}", self.vm),
            None => format!("{} {}", self.vm, self.comm),
        }
    }
}

/// One derived fact, in stream order.
#[derive(Clone, Debug, PartialEq)]
pub enum Mark {
    /// A vCPU thread seen for the first time (before any other mark of it).
    NewVcpu(VcpuThread),
    /// `tid` entered `state` at `ts`.
    State {
        tid: u32,
        ts: u64,
        state: VcpuState,
    },
    Vruntime {
        tid: u32,
        ts: u64,
        vruntime: u64,
    },
    /// Switch-in to guest running again, ns; `migrated` when it came back on another pCPU.
    Resume {
        tid: u32,
        ts: u64,
        ns: u64,
        migrated: bool,
    },
    /// The guest saw itself kept off the CPU over `[start, end]`.
    GuestGap {
        tid: u32,
        start: u64,
        end: u64,
    },
    /// A thread that left a pCPU (`prev`) and the one that took it, for CPU lanes.
    CpuRun {
        cpu: u32,
        ts: u64,
        tid: u32,
        comm: Comm,
    },
}

#[derive(Default)]
struct ThreadState {
    state: Option<VcpuState>,
    prev_cpu: Option<u32>,
    /// The switch-in whose resume latency has not been measured yet.
    pending_resume: Option<(u64, bool)>,
}

/// Folds events into [`Mark`]s for the tracked vCPU threads.
pub struct Timeline {
    vcpus: HashMap<u32, VcpuThread>,
    announced: HashSet<u32>,
    threads: HashMap<u32, ThreadState>,
    /// Last known comm by tid (wakeups and migrations carry only the tid).
    comms: HashMap<u32, Comm>,
}

impl Timeline {
    pub fn new(header: &TraceHeader) -> Self {
        let mut vcpus = HashMap::new();
        for p in &header.processes {
            for t in &p.threads {
                vcpus.insert(
                    t.tid,
                    VcpuThread {
                        tid: t.tid,
                        pid: p.pid,
                        vm: p.vm.clone(),
                        vcpu: t.vcpu,
                        comm: t.comm.clone(),
                    },
                );
            }
        }
        Timeline {
            vcpus,
            announced: HashSet::new(),
            threads: HashMap::new(),
            comms: HashMap::new(),
        }
    }

    /// The last comm seen for `tid` (empty if never seen).
    pub fn comm(&self, tid: u32) -> Comm {
        self.comms.get(&tid).copied().unwrap_or_default()
    }

    fn tracked(&mut self, tid: u32, out: &mut Vec<Mark>) -> bool {
        let Some(v) = self.vcpus.get(&tid) else {
            return false;
        };
        if self.announced.insert(tid) {
            out.push(Mark::NewVcpu(v.clone()));
        }
        true
    }

    fn set_state(&mut self, tid: u32, ts: u64, state: VcpuState, out: &mut Vec<Mark>) {
        let t = self.threads.entry(tid).or_default();
        if t.state != Some(state) {
            t.state = Some(state);
            out.push(Mark::State { tid, ts, state });
        }
    }

    fn resume(&mut self, tid: u32, ts: u64, out: &mut Vec<Mark>) {
        let t = self.threads.entry(tid).or_default();
        if let Some((t_in, migrated)) = t.pending_resume.take() {
            if ts >= t_in {
                out.push(Mark::Resume {
                    tid,
                    ts,
                    ns: ts - t_in,
                    migrated,
                });
            }
        }
    }

    /// Appends the marks `ev` produces to `out`.
    pub fn push(&mut self, ev: &Event, out: &mut Vec<Mark>) {
        match ev {
            Event::TaskInfo(t) => {
                self.comms.insert(t.tid, t.comm);
                let v = VcpuThread {
                    tid: t.tid,
                    pid: t.pid,
                    vm: t.vm.clone(),
                    vcpu: t.vcpu,
                    comm: t.comm.to_string(),
                };
                // tid reuse or a better name than the header had: announce again.
                if self.vcpus.get(&t.tid) != Some(&v) {
                    self.vcpus.insert(t.tid, v);
                    self.announced.remove(&t.tid);
                }
                self.tracked(t.tid, out);
            }
            Event::SchedSwitch(s) => {
                self.comms.insert(s.prev_tid, s.prev_comm);
                self.comms.insert(s.next_tid, s.next_comm);
                out.push(Mark::CpuRun {
                    cpu: s.cpu,
                    ts: s.ts,
                    tid: s.next_tid,
                    comm: s.next_comm,
                });
                if self.tracked(s.prev_tid, out) {
                    let state = if s.prev_preempted() {
                        VcpuState::Waiting
                    } else {
                        VcpuState::Sleeping
                    };
                    self.set_state(s.prev_tid, s.ts, state, out);
                    if let Some(se) = s.prev_se {
                        out.push(Mark::Vruntime {
                            tid: s.prev_tid,
                            ts: s.ts,
                            vruntime: se.vruntime,
                        });
                    }
                    let t = self.threads.entry(s.prev_tid).or_default();
                    t.pending_resume = None;
                }
                if self.tracked(s.next_tid, out) {
                    self.set_state(s.next_tid, s.ts, VcpuState::Running, out);
                    if let Some(se) = s.next_se {
                        out.push(Mark::Vruntime {
                            tid: s.next_tid,
                            ts: s.ts,
                            vruntime: se.vruntime,
                        });
                    }
                    let t = self.threads.entry(s.next_tid).or_default();
                    let migrated = t.prev_cpu.is_some_and(|c| c != s.cpu);
                    t.prev_cpu = Some(s.cpu);
                    t.pending_resume = Some((s.ts, migrated));
                }
            }
            Event::Wakeup(w) => {
                if self.tracked(w.tid, out)
                    && self.threads.get(&w.tid).and_then(|t| t.state) != Some(VcpuState::Running)
                {
                    self.set_state(w.tid, w.ts, VcpuState::Waiting, out);
                }
            }
            Event::KvmEntry(e) => {
                if self.tracked(e.tid, out) {
                    self.set_state(e.tid, e.ts, VcpuState::InGuest, out);
                    self.resume(e.tid, e.ts, out);
                }
            }
            Event::KvmExit(e) => {
                if self.tracked(e.tid, out) {
                    self.set_state(e.tid, e.ts, VcpuState::Running, out);
                }
            }
            Event::UserspaceExit(e) => {
                if self.tracked(e.tid, out) {
                    self.set_state(e.tid, e.ts, VcpuState::InVmm, out);
                }
            }
            Event::GuestGap(g) => {
                if self.tracked(g.tid, out) {
                    out.push(Mark::GuestGap {
                        tid: g.tid,
                        start: g.start,
                        end: g.end,
                    });
                    // The guest's first instruction after the gap: resume latency when the
                    // switch-in falls inside the gap (hosts without kvm_entry).
                    let pending = self.threads.get(&g.tid).and_then(|t| t.pending_resume);
                    if pending.is_some_and(|(t_in, _)| t_in >= g.start && t_in <= g.end) {
                        self.resume(g.tid, g.end, out);
                    }
                }
            }
            Event::TaskExit(e) => {
                if self.tracked(e.tid, out) {
                    self.set_state(e.tid, e.ts, VcpuState::Unknown, out);
                }
            }
            Event::Migrate(_)
            | Event::CrossCall(_)
            | Event::Pio(_)
            | Event::Lost(_)
            | Event::VmEnded(_)
            | Event::ObservationEnd(_) => {}
        }
    }

    /// The vCPU threads known so far.
    pub fn vcpus(&self) -> impl Iterator<Item = &VcpuThread> {
        self.vcpus.values()
    }
}

/// A readable name for a state, as slices are labelled.
pub fn state_name(s: VcpuState) -> &'static str {
    match s {
        VcpuState::InGuest => "in guest",
        VcpuState::Running => "running (host)",
        VcpuState::InVmm => "in VMM",
        VcpuState::Waiting => "waiting (runnable)",
        VcpuState::Sleeping => "sleeping",
        VcpuState::Unknown => "exited",
    }
}
