//! Starting and stopping the VMs: [`start`] creates them and their vCPU threads, the
//! collector thread drains gap rings and rotates affinities, and [`RunningVmm::stop`] kicks,
//! joins and summarises.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::affinity_rotation::AffinityRotation;
use crate::clock::TscClock;
use crate::*;

const COLLECT_EVERY: Duration = Duration::from_millis(10);

/// A running set of VMs. Dropping it stops them (like [`RunningVmm::stop`], discarding
/// the summary).
pub struct RunningVmm {
    shared: Arc<Shared>,
    vcpu_threads: Vec<Option<JoinHandle<()>>>,
    /// Mutex only to make `RunningVmm` Sync (it is read by `shutdown` alone).
    done: Mutex<Receiver<VcpuOutcome>>,
    collector: Option<JoinHandle<()>>,
    collector_stop: Arc<AtomicBool>,
    vms: Vec<kvm_ioctls::VmFd>,
    started: Instant,
    started_ns: u64,
    flavour: KvmFlavour,
    guest_execution: &'static str,
    scenario: Scenario,
    stopped: bool,
    /// The VMs' names, published for `--pid` watchers while the VMM runs (never read here).
    _vm_names: std::fs::File,
}

/// Creates the scenario's VMs and starts their vCPU threads. When it returns, every vCPU
/// thread exists, has its nice value and affinity applied, and is entering its guest.
pub fn start(scenario: &Scenario) -> Result<RunningVmm, VmmError> {
    start_with(scenario, |_| {})
}

/// Like [`start`], but calls `before_go` once every vCPU thread exists and is ready, before
/// any guest runs: a tracer can start watching the threads (their tids are known) without
/// missing their first exits.
pub fn start_with(
    scenario: &Scenario,
    before_go: impl FnOnce(&[VcpuInfo]),
) -> Result<RunningVmm, VmmError> {
    let plans = scenario.plan()?;
    let kvm = vm::open_kvm()?;
    let flavour = KvmFlavour::detect();
    let allowed = sched::get_affinity(0).map_err(|err| VmmError::Thread {
        thread: "(main)".into(),
        what: "read the CPU affinity",
        err,
        hint: "",
    })?;
    for p in &plans {
        if let Some(pin) = &p.pin {
            if let Some(&cpu) = pin.cpus().iter().find(|c| !allowed.contains(c)) {
                return Err(VmmError::NoSuchCpu {
                    cpu,
                    vcpu: VcpuThread::name(p),
                    allowed: CpuList::new(allowed.clone()).to_string(),
                });
            }
        }
    }
    vcpu::install_kick_handler()?;
    // Before any vCPU thread exists: a watcher that sees one can read its VM's name.
    let vm_names = vm_names::publish(&model::VmNames::new(
        scenario
            .vms
            .iter()
            .enumerate()
            .map(|(v, vm)| (v as u32, vm.name.clone())),
    ))?;
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| VmmError::setup("the host", "read the supported CPUID", e))?;

    // The guests need the TSC rate for their thresholds before they start.
    let clock = TscClock::calibrate(Duration::from_millis(20));
    let ticks = |us: u64| (us as f64 * clock.hz() / 1e6).round() as u64;

    let mut vms = Vec::new();
    let mut slots = Vec::new();
    let mut fds = Vec::new();
    let mut native = Vec::new();
    let vm_count = scenario.vms.len();
    for v in 0..vm_count {
        let vm_plans: Vec<&VcpuPlan> = plans.iter().filter(|p| p.vm_index == v as u32).collect();
        let params: Vec<vm::BlockParams> = vm_plans
            .iter()
            .map(|p| vm::BlockParams {
                threshold_ticks: ticks(scenario.gap_threshold_us),
                exit_every: if p.workload == Workload::Exits {
                    p.exit_every
                } else {
                    0
                },
                burst_ticks: if p.workload == Workload::Sleepy {
                    ticks(p.burst_us).max(1)
                } else {
                    0
                },
                sleep_us: p.sleep_us,
                fault: p.workload == Workload::TripleFault,
            })
            .collect();
        let built = vm::build_vm(
            &kvm,
            &cpuid,
            &vm_label(vm_plans[0]),
            &params,
            !scenario.emulate,
        )?;
        for (p, bv) in vm_plans.iter().zip(built.vcpus) {
            native.push(bv.pvm_native);
            slots.push(VcpuSlot {
                plan: (*p).clone(),
                thread: VcpuThread::name(p),
                tid: AtomicU32::new(0),
                mem: built.mem.clone(),
                block: guest::control_block(p.index),
                tsc_offset: bv.tsc_offset,
                rotate_over: p
                    .pin
                    .as_ref()
                    .map_or_else(|| allowed.clone(), |c| c.cpus().to_vec()),
                sched_start: Mutex::new(None),
            });
            fds.push(bv.fd);
        }
        vms.push(built.fd);
    }
    let guest_execution = match flavour {
        KvmFlavour::Pvm if native.iter().all(|&n| n) => "native",
        KvmFlavour::Pvm => "emulated",
        KvmFlavour::Vmx | KvmFlavour::Svm => "hardware",
        KvmFlavour::Unknown if native.iter().all(|&n| n) => "native",
        KvmFlavour::Unknown => "unknown",
    };

    let n = slots.len();
    let shared = Arc::new(Shared {
        affinity_changes: Mutex::new(AffinityLog::default()),
        pid: std::process::id(),
        stop: AtomicBool::new(false),
        fault: Mutex::new(None),
        kick_list: Mutex::new(vec![None; n]),
        gaps: Mutex::new(GapCollector::new(clock, n)),
        vcpus: slots,
    });

    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let mut go = Vec::new();
    let mut threads = Vec::new();
    for (global, fd) in fds.into_iter().enumerate() {
        let (go_tx, go_rx) = mpsc::channel();
        go.push(go_tx);
        let t = VcpuThread {
            global,
            plan: shared.vcpus[global].plan.clone(),
            fd,
            shared: shared.clone(),
            ready: ready_tx.clone(),
            go: go_rx,
            done: done_tx.clone(),
        };
        let name = shared.vcpus[global].thread.clone();
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || t.run())
            .map_err(|err| VmmError::Thread {
                thread: name,
                what: "spawn the thread",
                err,
                hint: "",
            });
        match handle {
            Ok(h) => threads.push(Some(h)),
            Err(e) => {
                abandon(go, threads);
                return Err(e);
            }
        }
    }
    drop(ready_tx);
    drop(done_tx);

    let mut first_error = None;
    for _ in 0..n {
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(_tid)) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(VmmError::StopTimeout {
                    threads: "(starting)".into(),
                    timeout: Duration::from_secs(10),
                });
                break;
            }
        }
    }
    if let Some(e) = first_error {
        abandon(go, threads);
        return Err(e);
    }
    before_go(&shared.vcpu_infos());
    for g in &go {
        let _ = g.send(true);
    }
    let started = Instant::now();
    let started_ns = clock::monotonic_ns();

    let collector_stop = Arc::new(AtomicBool::new(false));
    let mut running = RunningVmm {
        shared: shared.clone(),
        vcpu_threads: threads,
        done: Mutex::new(done_rx),
        collector: None,
        collector_stop: collector_stop.clone(),
        vms,
        started,
        started_ns,
        flavour,
        guest_execution,
        scenario: scenario.clone(),
        stopped: false,
        _vm_names: vm_names,
    };
    let every = scenario.migrate_every_ms.map(Duration::from_millis);
    // On failure `running` is dropped, which stops the vCPUs already running.
    let collector = std::thread::Builder::new()
        .name("vmm-collector".into())
        .spawn(move || collect_loop(&shared, &collector_stop, every))
        .map_err(|err| VmmError::Thread {
            thread: "vmm-collector".into(),
            what: "spawn the thread",
            err,
            hint: "",
        })?;
    running.collector = Some(collector);
    Ok(running)
}

/// Tells threads that never ran a guest to end, and joins them.
fn abandon(go: Vec<Sender<bool>>, threads: Vec<Option<JoinHandle<()>>>) {
    for g in &go {
        let _ = g.send(false);
    }
    drop(go);
    for t in threads.into_iter().flatten() {
        let _ = t.join();
    }
}

impl RunningVmm {
    /// The VMM's process id (all vCPU threads belong to it).
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    pub fn vcpus(&self) -> Vec<VcpuInfo> {
        self.shared.vcpu_infos()
    }

    /// Appends the guest gaps recorded since the last call, in CLOCK_MONOTONIC ns.
    pub fn drain_gaps(&self, out: &mut Vec<model::GuestGap>) {
        let mut g = lock(&self.shared.gaps);
        g.collect(&self.shared.vcpus);
        out.extend(g.pending.drain(..));
    }

    /// Appends the affinity changes the rotation made since the last call (CLOCK_MONOTONIC).
    pub fn drain_affinity_changes(&self, out: &mut Vec<model::Affinity>) {
        out.append(&mut lock(&self.shared.affinity_changes).pending);
    }

    /// Affinity changes left out because nobody drained them in time.
    pub fn affinity_changes_dropped(&self) -> u64 {
        lock(&self.shared.affinity_changes).dropped
    }

    /// Gap records lost so far: guest ring overruns plus gaps dropped because nobody drained.
    pub fn gaps_lost(&self) -> u64 {
        let g = lock(&self.shared.gaps);
        g.readers.iter().map(|r| r.overruns).sum::<u64>() + g.pending_dropped
    }

    /// Work units of every vCPU so far, in [`RunningVmm::vcpus`] order.
    pub fn work_units(&self) -> Vec<u64> {
        self.shared.vcpus.iter().map(VcpuSlot::work_units).collect()
    }

    /// The first guest crash, if any (the VMM has then stopped every vCPU).
    pub fn failure(&self) -> Option<VmmError> {
        self.shared.fault_error()
    }

    /// Host TSC ticks per second, from the running clock fit.
    pub fn tsc_hz(&self) -> f64 {
        lock(&self.shared.gaps).clock.hz()
    }

    pub fn flavour(&self) -> KvmFlavour {
        self.flavour
    }

    /// `native`, `emulated` (PVM without native execution) or `hardware` (VT-x/AMD-V).
    pub fn guest_execution(&self) -> &'static str {
        self.guest_execution
    }

    /// Kicks every vCPU out of `KVM_RUN`, joins the threads (with [`STOP_TIMEOUT`]) and
    /// summarises the run. A guest that crashed makes this an error naming it.
    pub fn stop(mut self) -> Result<Summary, VmmError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<Summary, VmmError> {
        self.stopped = true;
        // The schedstat files vanish with the threads: read them before the kick.
        let sched_end: Vec<Option<SchedStat>> = self
            .shared
            .vcpus
            .iter()
            .map(|s| SchedStat::read(self.shared.pid, s.tid()).ok())
            .collect();
        let elapsed = self.started.elapsed();
        let ended_ns = clock::monotonic_ns();

        self.shared.stop.store(true, Ordering::Release);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut outcomes: Vec<Option<VcpuOutcome>> =
            (0..self.vcpu_threads.len()).map(|_| None).collect();
        let mut pending = outcomes.len();
        let done = lock(&self.done);
        while pending > 0 && Instant::now() < deadline {
            // Repeated kicks cover a thread that was between its stop check and a sleep.
            self.shared.kick_all();
            if let Ok(o) = done.recv_timeout(COLLECT_EVERY) {
                let g = o.global;
                if outcomes[g].is_none() {
                    pending -= 1;
                }
                outcomes[g] = Some(o);
            }
        }
        drop(done);
        let mut stuck = Vec::new();
        for (g, t) in self.vcpu_threads.iter_mut().enumerate() {
            if outcomes[g].is_some() {
                if let Some(t) = t.take() {
                    let _ = t.join();
                }
            } else {
                // Left running: joining would hang. Its Arc keeps guest memory mapped.
                stuck.push(self.shared.vcpus[g].thread.clone());
            }
        }
        self.collector_stop.store(true, Ordering::Release);
        if let Some(c) = self.collector.take() {
            let _ = c.join();
        }
        let mut gaps = lock(&self.shared.gaps);
        gaps.clock.add(clock::sample_pair());
        gaps.collect(&self.shared.vcpus);
        if let Some(e) = self.shared.fault_error() {
            return Err(e);
        }
        if !stuck.is_empty() {
            return Err(VmmError::StopTimeout {
                threads: stuck.join(", "),
                timeout: STOP_TIMEOUT,
            });
        }
        let secs = elapsed.as_secs_f64();
        let vcpus = self
            .shared
            .vcpus
            .iter()
            .enumerate()
            .map(|(g, s)| {
                let start = *lock(&s.sched_start);
                let sched = match (start, sched_end[g]) {
                    (Some(a), Some(b)) => b.since(&a),
                    _ => SchedStat::default(),
                };
                let r = gaps.readers[g];
                let units = s.work_units();
                VcpuSummary {
                    vm: s.plan.vm_index,
                    vm_name: s.plan.vm_name.clone(),
                    index: s.plan.index,
                    thread: s.thread.clone(),
                    tid: s.tid(),
                    workload: s.plan.workload,
                    nice: s.plan.nice.unwrap_or(0),
                    cpus: s.plan.pin.as_ref().map(|c| c.cpus().to_vec()),
                    work_units: units,
                    units_per_s: if secs > 0.0 { units as f64 / secs } else { 0.0 },
                    units_per_cpu_s: if sched.run_ns > 0 {
                        units as f64 / (sched.run_ns as f64 / 1e9)
                    } else {
                        0.0
                    },
                    exits: outcomes[g].as_ref().map(|o| o.counts).unwrap_or_default(),
                    gaps: r.gaps,
                    gap_ns: gaps.clock.ticks_to_ns(r.gap_ticks),
                    gap_overruns: r.overruns,
                    run_ns: sched.run_ns,
                    wait_ns: sched.wait_ns,
                    timeslices: sched.timeslices,
                }
            })
            .collect();
        Ok(Summary {
            pid: self.shared.pid,
            started_ns: self.started_ns,
            ended_ns,
            duration_s: secs,
            kvm: self.flavour,
            guest_execution: self.guest_execution,
            tsc_hz: gaps.clock.hz(),
            gap_threshold_us: self.scenario.gap_threshold_us,
            migrate_every_ms: self.scenario.migrate_every_ms,
            vms: self.vms.len() as u32,
            vcpus,
        })
    }
}

// Callers drain gaps from other threads while the VMM runs.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<RunningVmm>()
};

impl Drop for RunningVmm {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.shutdown();
        }
    }
}

/// The collector thread: drains gap rings, refines the clock fit, rotates affinities.
fn collect_loop(shared: &Shared, stop: &AtomicBool, migrate_every: Option<Duration>) {
    let mut rotation = migrate_every.map(AffinityRotation::new);
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(COLLECT_EVERY);
        lock(&shared.gaps).collect(&shared.vcpus);
        if let Some(rotation) = &mut rotation {
            rotation.tick(shared);
        }
    }
}
