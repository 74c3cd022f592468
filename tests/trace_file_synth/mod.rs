//! Synthetic event streams for the trace-file tests: one shaped like the demo (vCPU threads
//! sharing two pCPUs, switches carrying `se` state, exits, gaps) and one of arbitrary values in
//! every field of every event kind. Deterministic from a seed; no root needed.
#![allow(dead_code)]

use model::*;

/// xorshift64*: enough randomness for test data, reproducible from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

struct Task {
    tid: u32,
    pid: u32,
    comm: Comm,
    vm: Option<(String, u32)>,
    se: SchedEntity,
}

/// A stream like `kvmscope record --demo`: two VMs with two vCPUs each plus a few host tasks
/// on two pCPUs, time-ordered, starting with `TaskInfo` for every vCPU thread.
pub fn demo_like(n: usize, seed: u64) -> Vec<Event> {
    let mut rng = Rng::new(seed);
    let mut tasks: Vec<Task> = Vec::new();
    for (vm_idx, pid) in [(0u32, 4100u32), (1, 4200)] {
        for vcpu in 0..2u32 {
            tasks.push(Task {
                tid: pid + 1 + vcpu,
                pid,
                comm: Comm::new(&format!("vm{vm_idx}-vcpu{vcpu}")),
                vm: Some((format!("vm{vm_idx}"), vcpu)),
                se: SchedEntity {
                    vruntime: 1_000_000_000 + rng.below(1_000_000),
                    weight: 1024,
                    sum_exec_runtime: rng.below(1_000_000),
                    deadline: Some(0),
                    vlag: None,
                    slice: Some(2_800_000),
                    run_delay: Some(rng.below(1_000_000)),
                },
            });
        }
    }
    for (tid, name) in [
        (0u32, "swapper/0"),
        (77, "kworker/0:1"),
        (301, "sshd"),
        (512, "cargo"),
    ] {
        tasks.push(Task {
            tid,
            pid: tid,
            comm: Comm::new(name),
            vm: None,
            se: SchedEntity::default(),
        });
    }
    let mut out = Vec::with_capacity(n);
    let mut ts = 5_000_000_000u64;
    for t in tasks.iter().filter(|t| t.vm.is_some()) {
        let (vm, vcpu) = t.vm.clone().unwrap();
        out.push(Event::TaskInfo(TaskInfo {
            ts,
            tid: t.tid,
            pid: t.pid,
            comm: t.comm,
            vm,
            vcpu: Some(vcpu),
            nice: 0,
            schedstat: Some(model::Schedstat {
                run_ns: t.se.sum_exec_runtime,
                wait_ns: t.se.run_delay.unwrap_or(0),
            }),
            start: None,
        }));
    }
    let mut current = [tasks.len() - 4, tasks.len() - 4];
    while out.len() < n {
        ts += 1_000 + rng.below(400_000);
        let cpu = rng.below(2) as usize;
        let roll = rng.below(100);
        let cur = current[cpu];
        if roll < 55 {
            let next = rng.below(tasks.len() as u64) as usize;
            if next == cur || current.contains(&next) {
                continue;
            }
            let ran = 1_000 + rng.below(3_000_000);
            let tracked = |t: &Task| t.vm.is_some();
            if tracked(&tasks[cur]) {
                let w = tasks[cur].se.weight as u64;
                tasks[cur].se.vruntime += ran * 1024 / w;
                tasks[cur].se.sum_exec_runtime += ran - rng.below(ran / 50 + 1);
                tasks[cur].se.deadline = Some(tasks[cur].se.vruntime + 2_800_000);
                tasks[cur].se.run_delay = tasks[cur].se.run_delay.map(|r| r + rng.below(50_000));
            }
            let preempted = rng.chance(60);
            out.push(Event::SchedSwitch(SchedSwitch {
                ts,
                cpu: cpu as u32,
                prev_tid: tasks[cur].tid,
                prev_pid: tasks[cur].pid,
                prev_comm: tasks[cur].comm,
                prev_state: if preempted { 0 } else { 1 },
                next_tid: tasks[next].tid,
                next_pid: tasks[next].pid,
                next_comm: tasks[next].comm,
                prev_se: tracked(&tasks[cur]).then_some(tasks[cur].se),
                next_se: tracked(&tasks[next]).then_some(tasks[next].se),
            }));
            current[cpu] = next;
        } else if roll < 70 {
            let t = &tasks[rng.below(tasks.len() as u64) as usize];
            out.push(Event::Wakeup(Wakeup {
                ts,
                cpu: cpu as u32,
                tid: t.tid,
                pid: t.pid,
                target_cpu: if rng.chance(80) {
                    cpu as u32
                } else {
                    1 - cpu as u32
                },
                waker_tid: tasks[cur].tid,
            }));
        } else if roll < 90 {
            if let Some((_, _)) = &tasks[cur].vm {
                out.push(Event::UserspaceExit(UserspaceExit {
                    ts,
                    cpu: cpu as u32,
                    tid: tasks[cur].tid,
                    reason: 2,
                    errno: 0,
                }));
                out.push(Event::Pio(Pio {
                    ts: ts + 300,
                    cpu: cpu as u32,
                    tid: tasks[cur].tid,
                    rw: 1,
                    port: 0x3f8,
                    size: 1,
                    val: rng.below(4) as u32,
                }));
            }
        } else if roll < 97 {
            if let Some((vm, vcpu)) = &tasks[cur].vm {
                let len = 10_000 + rng.below(2_000_000);
                out.push(Event::GuestGap(GuestGap {
                    start: ts.saturating_sub(len),
                    end: ts,
                    tid: tasks[cur].tid,
                    vm: vm[2..].parse().unwrap(),
                    vcpu: *vcpu,
                }));
            }
        } else if roll < 99 {
            let t = &tasks[rng.below(tasks.len() as u64) as usize];
            out.push(Event::Migrate(Migrate {
                ts,
                cpu: cpu as u32,
                tid: t.tid,
                pid: t.pid,
                orig_cpu: cpu as u32,
                dest_cpu: 1 - cpu as u32,
            }));
        } else {
            out.push(Event::Lost(Lost {
                ts,
                cpu: cpu as u32,
                count: 1 + rng.below(50),
            }));
        }
    }
    out.truncate(n);
    out
}

fn comm(rng: &mut Rng) -> Comm {
    let mut c = Comm::default();
    let len = rng.below(17) as usize;
    for b in c.0[..len].iter_mut() {
        *b = rng.next() as u8;
    }
    c
}

fn opt<T>(rng: &mut Rng, f: impl FnOnce(&mut Rng) -> T) -> Option<T> {
    if rng.chance(50) {
        Some(f(rng))
    } else {
        None
    }
}

/// Any u64, biased to edge values and small numbers.
fn pick(rng: &mut Rng) -> u64 {
    match rng.below(4) {
        0 => rng.next(),
        1 => rng.below(4),
        2 => u64::MAX - rng.below(2),
        _ => rng.below(1 << 20),
    }
}

/// A u32 field: half the time from a pool of three so "same as before" paths are taken.
fn u32v(rng: &mut Rng) -> u32 {
    if rng.chance(50) {
        rng.below(3) as u32
    } else {
        pick(rng) as u32
    }
}

fn se(rng: &mut Rng) -> model::SchedEntity {
    model::SchedEntity {
        vruntime: pick(rng),
        weight: if rng.chance(50) {
            1024
        } else {
            pick(rng) as u32
        },
        sum_exec_runtime: pick(rng),
        deadline: opt(rng, pick),
        vlag: opt(rng, |r| pick(r) as i64),
        slice: if rng.chance(50) {
            Some(2_800_000)
        } else {
            opt(rng, pick)
        },
        run_delay: opt(rng, pick),
    }
}

/// Any value in any field: proves the encoding is lossless, not just good on typical data.
/// Fields are drawn from small pools half of the time so the "same as before" paths run too.
pub fn arbitrary(n: usize, seed: u64) -> Vec<Event> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let ts = pick(&mut rng);
        let cpu = if rng.chance(80) {
            rng.below(20) as u32
        } else {
            pick(&mut rng) as u32
        };
        let ev = match rng.below(15) {
            0 => Event::SchedSwitch(SchedSwitch {
                ts,
                cpu,
                prev_tid: u32v(&mut rng),
                prev_pid: u32v(&mut rng),
                prev_comm: comm(&mut rng),
                prev_state: pick(&mut rng),
                next_tid: u32v(&mut rng),
                next_pid: u32v(&mut rng),
                next_comm: comm(&mut rng),
                prev_se: if rng.chance(50) {
                    Some(se(&mut rng))
                } else {
                    None
                },
                next_se: if rng.chance(50) {
                    Some(se(&mut rng))
                } else {
                    None
                },
            }),
            1 => Event::Wakeup(Wakeup {
                ts,
                cpu,
                tid: u32v(&mut rng),
                pid: u32v(&mut rng),
                target_cpu: u32v(&mut rng),
                waker_tid: u32v(&mut rng),
            }),
            2 => Event::Migrate(Migrate {
                ts,
                cpu,
                tid: u32v(&mut rng),
                pid: u32v(&mut rng),
                orig_cpu: u32v(&mut rng),
                dest_cpu: u32v(&mut rng),
            }),
            3 => Event::TaskExit(TaskExit {
                ts,
                cpu,
                tid: u32v(&mut rng),
                pid: u32v(&mut rng),
            }),
            4 => Event::KvmEntry(KvmEntry {
                ts,
                cpu,
                tid: u32v(&mut rng),
                vcpu_id: u32v(&mut rng),
            }),
            5 => Event::KvmExit(KvmExit {
                ts,
                cpu,
                tid: u32v(&mut rng),
                vcpu_id: u32v(&mut rng),
                reason: u32v(&mut rng),
                isa: [ExitIsa::Vmx, ExitIsa::Svm, ExitIsa::Unknown][rng.below(3) as usize],
            }),
            6 => Event::UserspaceExit(UserspaceExit {
                ts,
                cpu,
                tid: u32v(&mut rng),
                reason: u32v(&mut rng),
                errno: u32v(&mut rng) as i32,
            }),
            7 => Event::Pio(Pio {
                ts,
                cpu,
                tid: u32v(&mut rng),
                rw: u32v(&mut rng),
                port: u32v(&mut rng),
                size: u32v(&mut rng),
                val: u32v(&mut rng),
            }),
            8 => Event::CrossCall(CrossCall {
                ts,
                cpu,
                phase: [
                    CrossCallPhase::Queue,
                    CrossCallPhase::Entry,
                    CrossCallPhase::Exit,
                ][rng.below(3) as usize],
                func: pick(&mut rng),
                csd: pick(&mut rng),
                target_cpu: u32v(&mut rng),
                tid: u32v(&mut rng),
                is_vmclear: rng.chance(50),
            }),
            9 => Event::GuestGap(GuestGap {
                start: pick(&mut rng),
                end: ts,
                tid: u32v(&mut rng),
                vm: u32v(&mut rng),
                vcpu: u32v(&mut rng),
            }),
            10 => Event::Lost(Lost {
                ts,
                cpu,
                count: pick(&mut rng),
            }),
            11 => Event::TaskInfo(TaskInfo {
                ts,
                tid: u32v(&mut rng),
                pid: u32v(&mut rng),
                comm: comm(&mut rng),
                vm: ["", "vm0", "qemu-1234", "ünïcode ☃"][rng.below(4) as usize].to_string(),
                vcpu: opt(&mut rng, u32v),
                nice: u32v(&mut rng) as i32,
                schedstat: opt(&mut rng, |r| model::Schedstat {
                    run_ns: pick(r),
                    wait_ns: pick(r),
                }),
                start: opt(&mut rng, |r| model::ThreadStart {
                    state: model::TaskState(pick(r)),
                    cpu: u32v(r),
                }),
            }),
            12 => Event::VmEnded(VmEnded {
                ts,
                pid: u32v(&mut rng),
                vm: "vm1".into(),
            }),
            13 => Event::Unobserved(Unobserved {
                ts,
                what: if rng.below(2) == 0 {
                    UnobservedKind::CounterSamples
                } else {
                    UnobservedKind::Threads
                },
                count: pick(&mut rng),
            }),
            _ => Event::ObservationEnd(ObservationEnd { ts }),
        };
        out.push(ev);
    }
    out
}

/// A header as `record --demo` would write it.
pub fn header() -> model::trace_file::TraceHeader {
    use model::trace_file::*;
    TraceHeader {
        format_version: FORMAT_VERSION,
        host: HostInfo {
            hostname: "testhost".into(),
            kernel: "6.18.0".into(),
            scheduler: "EEVDF".into(),
            cpus: 2,
            kvm_flavour: model::KvmFlavour::Pvm,
            clock: "CLOCK_MONOTONIC".into(),
            tsc_hz: Some(2.596e9),
            csd_tracepoints: None,
            hz: None,
        },
        processes: vec![TrackedProcess {
            pid: 4100,
            vm: "vm0".into(),
            threads: vec![
                TrackedThread {
                    tid: 4101,
                    comm: "vm0-vcpu0".into(),
                    vcpu: Some(0),
                },
                TrackedThread {
                    tid: 4102,
                    comm: "vm0-vcpu1".into(),
                    vcpu: Some(1),
                },
            ],
        }],
        command_line: vec!["kvmscope".into(), "record".into(), "--demo".into()],
        recorder: "kvmscope test".into(),
        started_unix_secs: Some(1_700_000_000),
    }
}

/// Writes `events` as a finished trace with small chunks (so damage tests have many).
pub fn write_trace(events: &[Event], chunk_bytes: usize) -> Vec<u8> {
    use model::trace_file::*;
    let opts = WriterOptions {
        chunk_bytes,
        ..WriterOptions::default()
    };
    let mut w = TraceWriter::with_options(Vec::new(), &header(), opts).unwrap();
    for e in events {
        w.write(e).unwrap();
    }
    w.finish().unwrap().0
}

/// [`header`] with the processes `events` announce (their `TaskInfo`s), as a recorder
/// writes it.
pub fn header_for(events: &[Event]) -> trace_file::TraceHeader {
    let mut map = trace_file::ProcessMap::default();
    for e in events {
        if let Event::TaskInfo(t) = e {
            map.note(t);
        }
    }
    let mut h = header();
    h.processes = map.processes();
    h
}
