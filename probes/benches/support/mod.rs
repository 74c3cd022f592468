//! What `benches/bpf_cost.rs` and `examples/bpf_ab.rs` share: the bpftrace baseline, the
//! bundled-VMM workload, and small helpers. Not a bench target itself (a subdirectory
//! without `main.rs`); the example includes it with `#[path]`.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use aya::programs::loaded_programs;

pub const BASELINE: &str = "tracepoint:sched:sched_switch { @[pid] = count(); }";

/// The bpftrace child; killed (by its pid) when dropped, also on panic.
pub struct Bpftrace {
    child: Child,
    prog_ids: Vec<u32>,
}

impl Bpftrace {
    pub fn start() -> Result<Bpftrace, String> {
        let before = program_ids();
        let mut child = Command::new("bpftrace")
            .args(["-e", BASELINE])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run bpftrace: {e} (apt-get install bpftrace)"))?;
        // bpftrace prints "Attaching 1 probe..." once its program is attached.
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if !line.starts_with("Attaching") {
            let _ = child.kill();
            return Err(format!("bpftrace did not attach: {line:?}"));
        }
        // The program may be loaded just after that line: look for it for a while.
        let deadline = Instant::now() + Duration::from_secs(10);
        let prog_ids = loop {
            let new: Vec<u32> = program_ids()
                .into_iter()
                .filter(|id| !before.contains(id))
                .collect();
            if !new.is_empty() {
                break new;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("cannot find bpftrace's program".into());
            }
            thread::sleep(Duration::from_millis(50));
        };
        Ok(Bpftrace { child, prog_ids })
    }

    /// (run_time_ns, run_count) summed over bpftrace's programs.
    pub fn stats(&self) -> (u64, u64) {
        loaded_programs()
            .filter_map(Result::ok)
            .filter(|p| self.prog_ids.contains(&p.id()))
            .fold((0, 0), |(t, n), p| {
                (t + p.run_time().as_nanos() as u64, n + p.run_count())
            })
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        // libc: std's Child::kill sends only SIGKILL; bpftrace prints its counts on SIGINT.
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn program_ids() -> Vec<u32> {
    loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

pub fn all_tids() -> Vec<u32> {
    let mut tids = Vec::new();
    for proc in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(tasks) = std::fs::read_dir(proc.path().join("task")) else {
            continue;
        };
        tids.extend(
            tasks
                .flatten()
                .filter_map(|t| t.file_name().to_str()?.parse::<u32>().ok()),
        );
    }
    tids
}

/// The workload: the bundled VMM with one VM of three `spin` vCPUs on this machine's
/// CPUs. Stopped (and its vCPU threads joined) when dropped.
pub struct Vcpus {
    pub tids: Vec<u32>,
    vmm: Option<vmm::RunningVmm>,
}

impl Vcpus {
    pub fn start(n: u32) -> Result<Vcpus, String> {
        let scenario = vmm::Scenario::uniform(1, n, vmm::Workload::Spin);
        let vmm =
            vmm::start(&scenario).map_err(|e| format!("cannot start the bundled VMM: {e}"))?;
        let tids = vmm.vcpus().iter().map(|v| v.tid).collect();
        Ok(Vcpus {
            tids,
            vmm: Some(vmm),
        })
    }
}

impl Drop for Vcpus {
    fn drop(&mut self) {
        if let Some(vmm) = self.vmm.take() {
            let _ = vmm.stop();
        }
    }
}

pub fn online_cpus() -> Result<Vec<u32>, String> {
    aya::util::online_cpus().map_err(|(p, e)| format!("cannot read {p}: {e}"))
}

/// Median of a non-empty slice (sorts it).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
}

/// A wakeup-heavy workload: two threads pinned to one CPU pass a byte back and forth over
/// a socket pair, so every context switch on that CPU follows a wakeup of one of them. The
/// bundled VMM's `spin` vCPUs are preempted, hardly ever woken: this is the workload that
/// shows what the sched_waking/sched_wakeup programs cost. Stopped (threads joined) when
/// dropped.
pub struct PingPong {
    pub tids: Vec<u32>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// One end of the pair: shut down when dropped, so that threads blocked reading (idle
    /// pairs) see EOF and end.
    shutdown: UnixStream,
    threads: Vec<thread::JoinHandle<()>>,
}

/// Passes the byte back: reads it from `end`, writes it back, until `stop` is set or the
/// other thread has gone. Whichever thread stops first closes its end, and the other, blocked
/// reading, gets EOF and stops too.
fn relay(mut end: UnixStream, serve: bool, stop: &std::sync::atomic::AtomicBool) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let mut b = [0u8; 1];
    if serve && end.write_all(&b).is_err() {
        return;
    }
    while end.read_exact(&mut b).is_ok() && !stop.load(Ordering::Relaxed) {
        if end.write_all(&b).is_err() {
            return;
        }
    }
}

impl PingPong {
    /// Starts both threads on the last CPU (the reader and bpftrace are free to use others).
    pub fn start() -> Result<PingPong, String> {
        let cpu = online_cpus()?.into_iter().max().unwrap_or(0);
        Self::start_on(cpu)
    }

    /// Starts both threads on `cpu`.
    pub fn start_on(cpu: u32) -> Result<PingPong, String> {
        Self::start_named(cpu, None, true)
    }

    /// Starts both threads on `cpu`, named like the bundled VMM's vCPUs of VM `vm`
    /// (`vm<vm>-vcpu0`, `vm<vm>-vcpu1`): `kvmscope record --pid` then tracks them.
    pub fn start_as_vcpus(cpu: u32, vm: u32) -> Result<PingPong, String> {
        Self::start_named(cpu, Some(vm), true)
    }

    /// [`Self::start_as_vcpus`] with no byte to pass: both threads sleep in `read` until
    /// dropped (a baseline of the same threads, idle).
    pub fn start_idle_as_vcpus(cpu: u32, vm: u32) -> Result<PingPong, String> {
        Self::start_named(cpu, Some(vm), false)
    }

    fn start_named(cpu: u32, vm: Option<u32>, busy: bool) -> Result<PingPong, String> {
        let (a, b) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let shutdown = a.try_clone().map_err(|e| format!("socketpair: {e}"))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        for (vcpu, (end, serve)) in [(a, false), (b, busy)].into_iter().enumerate() {
            let (tid_tx, stop) = (tid_tx.clone(), stop.clone());
            let mut builder = thread::Builder::new();
            if let Some(vm) = vm {
                builder = builder.name(format!("vm{vm}-vcpu{vcpu}"));
            }
            let spawned = builder.spawn(move || {
                let tid = vmm::sched::gettid();
                let pinned = vmm::sched::set_affinity(tid, &[cpu]).map_err(|e| e.to_string());
                let ok = pinned.is_ok();
                let _ = tid_tx.send((tid, pinned));
                if ok {
                    relay(end, serve, &stop);
                }
            });
            threads.push(spawned.map_err(|e| format!("cannot start a ping-pong thread: {e}"))?);
        }
        drop(tid_tx);
        let mut tids = Vec::new();
        // One message per thread (each keeps its sender while it runs).
        for (tid, pinned) in tid_rx.iter().take(threads.len()) {
            pinned.map_err(|e| format!("cannot pin the ping-pong threads to CPU {cpu}: {e}"))?;
            tids.push(tid);
        }
        Ok(PingPong {
            tids,
            stop,
            shutdown,
            threads,
        })
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.shutdown.shutdown(std::net::Shutdown::Both);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A storm of switches without wakeups: two threads pinned to one CPU hand it to each other
/// with `sched_yield`, so no wakeup record travels with the switches (what spinning vCPUs
/// preempting each other look like to the probes). Stopped (threads joined) when dropped.
pub struct Yielders {
    pub tids: Vec<u32>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Yielders {
    pub fn start_on(cpu: u32) -> Result<Yielders, String> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (tid_tx, stop) = (tid_tx.clone(), stop.clone());
                thread::spawn(move || {
                    let tid = vmm::sched::gettid();
                    let pinned = vmm::sched::set_affinity(tid, &[cpu]).map_err(|e| e.to_string());
                    let ok = pinned.is_ok();
                    let _ = tid_tx.send((tid, pinned));
                    while ok && !stop.load(Ordering::Relaxed) {
                        thread::yield_now();
                    }
                })
            })
            .collect();
        drop(tid_tx);
        let mut tids = Vec::new();
        for (tid, pinned) in tid_rx.iter().take(threads.len()) {
            pinned.map_err(|e| format!("cannot pin the yielding threads to CPU {cpu}: {e}"))?;
            tids.push(tid);
        }
        Ok(Yielders {
            tids,
            stop,
            threads,
        })
    }
}

impl Drop for Yielders {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
