//! What `benches/bpf_cost.rs` and `examples/bpf_ab.rs` share: the bpftrace baseline, the
//! bundled-VMM workload, and small helpers. Not a bench target itself (a subdirectory
//! without `main.rs`); the example includes it with `#[path]`.

use std::io::{BufRead, BufReader};
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

/// Median of a non-empty slice (sorts it).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
}
