//! Counters mode (no BPF) end to end, against the kernel's own per-thread figures over the
//! same interval: `report --demo --no-bpf --json` run, wait, switches, migrations and
//! vruntime; the same with BPF taken away by dropping capabilities (counters mode must start
//! by itself, saying so in one line); the dashboard with `--no-bpf` in tmux.
//!
//! The report's figures of a vCPU cover [sampled_at - elapsed_ns, sampled_at]: from its
//! announcement to its closing sample. A sampler thread here reads `/proc/<pid>/task/<tid>/schedstat` and `sched`
//! every 2 ms (CLOCK_MONOTONIC), so the kernel's growth over that interval is bracketed by
//! the readings just before and just after each end (zero before a thread's first reading:
//! its counters start at zero when it is created). vruntime alone may move either way between
//! two readings (EEVDF's placement), so it is held to the bracket widened by the lag clamp.

mod common;
use common::schedstat::{monotonic_ns, vcpu_tids};
use common::tmux::*;
use common::*;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use probes::counters::{ProcSched, SchedStat};

/// How far from its stamp a counters-mode sample's reads may lie: the source stamps each
/// sample at the middle of reads held under 200 us (`MAX_READ_SPREAD_NS` in
/// src/live/counter_source.rs). A reading of this test's that falls within this of an end
/// cannot be ordered against the sample's own reads, so it brackets nothing.
const SAMPLE_READ_MARGIN_NS: u64 = 100_000;

/// One reading of a thread's kernel counters.
#[derive(Clone, Copy, Debug, Default)]
struct Reading {
    /// Before the reads.
    ts: u64,
    /// After the reads.
    read_end: u64,
    run: u64,
    wait: u64,
    switches: u64,
    migrations: u64,
    vruntime: u64,
    /// `se.slice` (EEVDF), ns.
    slice: u64,
}

fn read(pid: u32, tid: u32) -> Option<Reading> {
    let ts = monotonic_ns();
    let s = SchedStat::read(pid, tid).ok()?;
    let p = ProcSched::read(pid, tid).ok()?;
    Some(Reading {
        ts,
        run: s.run_ns,
        wait: s.wait_ns,
        switches: p.nr_voluntary_switches + p.nr_involuntary_switches,
        migrations: p.nr_migrations,
        vruntime: p.vruntime,
        slice: p.slice.unwrap_or(0),
        read_end: monotonic_ns(),
    })
}

/// The last reading whose reads all came before the sample stamped `at` read anything, and
/// the first whose reads all came after it had read everything (before: zero if none;
/// after: `None` if none). See [`SAMPLE_READ_MARGIN_NS`].
fn around(rs: &[Reading], at: u64) -> (Reading, Option<Reading>) {
    let earliest = at.saturating_sub(SAMPLE_READ_MARGIN_NS);
    let latest = at + SAMPLE_READ_MARGIN_NS;
    let before = rs
        .iter()
        .rev()
        .find(|r| r.read_end < earliest)
        .copied()
        .unwrap_or_default();
    (before, rs.iter().find(|r| r.ts > latest).copied())
}

/// Runs `cmd` (a live `report --demo ... --json`), reading the kernel counters of its vCPU
/// threads meanwhile; returns the report, its stderr and the readings per tid.
fn run_sampled(mut cmd: Command) -> (serde_json::Value, String, BTreeMap<u32, Vec<Reading>>) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kvmscope report");
    let pid = child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            // The window between the closing sample and the threads' exit is a few ms: on a
            // loaded host a nice-0 sampler often misses it. A measuring thread may jump the
            // queue (root: the test needs /dev/kvm anyway).
            let _ = vmm::sched::set_nice(hostfacts::gettid(), -10);
            let mut per: BTreeMap<u32, Vec<Reading>> = BTreeMap::new();
            let began = Instant::now();
            while !stop.load(Ordering::Relaxed) && began.elapsed() < Duration::from_secs(60) {
                for tid in vcpu_tids(pid) {
                    if let Some(r) = read(pid, tid) {
                        per.entry(tid).or_default().push(r);
                    }
                }
                thread::sleep(Duration::from_micros(500));
            }
            per
        })
    };
    let out = child.wait_with_output().expect("wait for kvmscope report");
    stop.store(true, Ordering::Relaxed);
    let readings = sampler.join().expect("sampler thread");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "report failed: {stderr}");
    let doc = serde_json::from_slice(&out.stdout).expect("report prints one JSON document");
    (doc, stderr, readings)
}

/// Every vCPU's figures against the kernel's growth over the same interval: run and wait
/// within 2% of it, switches and migrations within the bracket of the readings around the
/// interval's ends, vruntime between the readings around its end (the closing sample).
/// `Err` when too few vCPUs were bracketed to judge (the sampler starved on a loaded host
/// while the demo's threads exited right after the close); a figure that disagrees panics.
fn assert_matches_kernel(
    doc: &serde_json::Value,
    readings: &BTreeMap<u32, Vec<Reading>>,
) -> Result<(), String> {
    let vcpus = doc["vcpus"].as_array().expect("vcpus");
    assert!(
        doc["health"]["counter_samples"].as_u64().unwrap_or(0) > 0,
        "no counter samples: {}",
        doc["health"]
    );
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut unbracketed = Vec::new();
    for v in vcpus {
        let tid = v["tid"].as_u64().expect("tid") as u32;
        let Some(rs) = readings.get(&tid) else {
            failures.push(format!("tid {tid}: never read by the sampler"));
            continue;
        };
        let end = v["sampled_at"].as_u64().expect("sampled_at");
        let start = end - v["elapsed_ns"].as_u64().expect("elapsed_ns");
        let (s_before, s_after) = around(rs, start);
        let (e_before, e_after) = around(rs, end);
        let s_after = s_after.expect("a reading after the interval's start");
        let Some(e_after) = e_after else {
            // The thread exited (the demo VMM stops right after the closing sample) before
            // the sampler read it again: its count at the close is not bracketed.
            unbracketed.push(format!(
                "tid {tid}: no reading clear of the closing sample's reads (last {:.1} ms \
                 before it)",
                (end as f64 - rs.last().map_or(0, |r| r.ts) as f64) / 1e6
            ));
            continue;
        };
        let bracket = |f: fn(&Reading) -> u64| {
            (
                f(&e_before).saturating_sub(f(&s_after)),
                f(&e_after).saturating_sub(f(&s_before)),
            )
        };
        let field = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}"));
        let (run, wait) = (field("run_ns"), field("wait_ns"));
        let (switches, migrations, vruntime) =
            (field("switches"), field("migrations"), field("vruntime"));
        let (run_lo, run_hi) = bracket(|r| r.run);
        let (wait_lo, wait_hi) = bracket(|r| r.wait);
        let (sw_lo, sw_hi) = bracket(|r| r.switches);
        let (mig_lo, mig_hi) = bracket(|r| r.migrations);
        // vruntime is not monotonic: EEVDF re-places a woken task at the queue's average
        // minus its lag, which it clamps to max(2 slices, a tick). Between the readings around
        // the closing sample it may have moved by that much either way without running.
        let placement = (2 * e_before.slice.max(e_after.slice)).max(4_000_000);
        let (vr_lo, vr_hi) = (
            e_before
                .vruntime
                .min(e_after.vruntime)
                .saturating_sub(placement),
            e_before.vruntime.max(e_after.vruntime) + placement,
        );
        eprintln!(
            "tid {tid}: report run {:.1} ms wait {:.1} ms switches {switches} migrations \
             {migrations} vruntime {vruntime} | kernel run {:.1}..{:.1} ms wait {:.1}..{:.1} \
             ms switches {sw_lo}..={sw_hi} migrations {mig_lo}..={mig_hi} vruntime \
             {vr_lo}..={vr_hi}",
            run as f64 / 1e6,
            wait as f64 / 1e6,
            run_lo as f64 / 1e6,
            run_hi as f64 / 1e6,
            wait_lo as f64 / 1e6,
            wait_hi as f64 / 1e6,
        );
        let within_2pct = |x: u64, lo: u64, hi: u64| {
            (x as f64) >= lo as f64 * 0.98 && (x as f64) <= hi as f64 * 1.02
        };
        if !within_2pct(run, run_lo, run_hi) {
            failures.push(format!(
                "tid {tid}: run {run} vs schedstat {run_lo}..{run_hi}"
            ));
        }
        if !within_2pct(wait, wait_lo, wait_hi) {
            failures.push(format!(
                "tid {tid}: wait {wait} vs schedstat {wait_lo}..{wait_hi}"
            ));
        }
        if !(sw_lo..=sw_hi).contains(&switches) {
            failures.push(format!(
                "tid {tid}: switches {switches} vs nr_switches delta {sw_lo}..={sw_hi}"
            ));
        }
        if !(mig_lo..=mig_hi).contains(&migrations) {
            failures.push(format!(
                "tid {tid}: migrations {migrations} vs se.nr_migrations delta {mig_lo}..={mig_hi}"
            ));
        }
        if !(vr_lo..=vr_hi).contains(&vruntime) {
            failures.push(format!(
                "tid {tid}: vruntime {vruntime} vs /proc sched {vr_lo}..={vr_hi}"
            ));
        }
        checked += 1;
    }
    eprintln!("{}", unbracketed.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if checked * 2 >= vcpus.len() && checked >= 2 {
        Ok(())
    } else {
        Err(format!(
            "only {checked} of {} vCPUs bracketed by the sampler: {unbracketed:?}",
            vcpus.len()
        ))
    }
}

/// Runs the report from `cmd()` until the sampler brackets enough vCPUs to judge (at most
/// three runs: a starved sampler is not a wrong figure); `check` sees each run first.
fn report_against_kernel(cmd: impl Fn() -> Command, check: impl Fn(&serde_json::Value, &str)) {
    let mut why = String::new();
    for attempt in 1..=3 {
        let (doc, stderr, readings) = run_sampled(cmd());
        check(&doc, &stderr);
        match assert_matches_kernel(&doc, &readings) {
            Ok(()) => return,
            Err(e) => {
                eprintln!("attempt {attempt}: {e}");
                why = e;
            }
        }
    }
    panic!("three runs without enough bracketed vCPUs: {why}");
}

fn report_args() -> [&'static str; 6] {
    [
        "report",
        "--demo",
        "--duration",
        "3",
        "--json",
        "--sample-every=250ms",
    ]
}

#[test]
fn report_no_bpf_matches_schedstat_and_proc_sched() {
    if !privileged(Privilege::Kvm) {
        return;
    }
    let cmd = || {
        let mut cmd = kvmscope();
        cmd.args(report_args()).arg("--no-bpf");
        cmd
    };
    report_against_kernel(cmd, |doc, stderr| {
        assert!(
            !stderr.contains("cannot load BPF"),
            "--no-bpf is not the automatic fallback: {stderr}"
        );
        assert_eq!(doc["source"]["extra"]["probes"], false, "{}", doc["source"]);
    });
}

#[test]
fn counters_mode_starts_by_itself_without_bpf_capabilities() {
    if !privileged(Privilege::Kvm) {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        panic!("setpriv (util-linux) is needed to drop capabilities");
    }
    let drop = "-bpf,-sys_admin,-perfmon";
    let cmd = || {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--bounding-set", drop, "--inh-caps", drop])
            .arg(env!("CARGO_BIN_EXE_kvmscope"))
            .args(report_args());
        cmd
    };
    report_against_kernel(cmd, |doc, stderr| {
        let notices: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("counters mode"))
            .collect();
        assert_eq!(notices.len(), 1, "one line saying so: {stderr}");
        assert!(notices[0].contains("CAP_BPF"), "{}", notices[0]);
        assert_eq!(doc["source"]["extra"]["probes"], false, "{}", doc["source"]);
    });
}

/// The vruntime chart's braille cells, line by line.
fn chart(screen: &str) -> Vec<String> {
    screen
        .lines()
        .map(|l| l.chars().filter(is_braille).collect())
        .collect()
}

/// `demo --no-bpf` in tmux: vCPU rows and the vruntime chart move at each sample, the lanes
/// and resume-latency panels say they need BPF, `q` exits with status 0.
#[test]
fn dashboard_no_bpf_moves_and_names_what_needs_bpf() {
    if !privileged(Privilege::Kvm) {
        return;
    }
    require_tmux();
    let dir = TempDir::new("priv-counters-tui");
    let rc = dir.path("rc");
    let script = format!(
        "'{}' demo --no-bpf --sample-every 250ms --log-file '{}'; echo $? > '{}'; sleep 60",
        env!("CARGO_BIN_EXE_kvmscope"),
        dir.path("log").display(),
        rc.display()
    );
    let tmux = Tmux::start(
        format!("kvmscope-counters-{}", std::process::id()),
        "tui",
        &script,
    );
    let mut first = String::new();
    wait_for(
        "vCPU rows and vruntime lines",
        Duration::from_secs(30),
        || {
            first = tmux.capture();
            vcpu_rows(&first).len() >= 3
                && chart(&first).iter().map(|l| l.len()).sum::<usize>() > 10
        },
    );
    let mut second = String::new();
    wait_for(
        "the rows and the chart to move",
        Duration::from_secs(5),
        || {
            second = tmux.capture();
            vcpu_rows(&first) != vcpu_rows(&second) && chart(&first) != chart(&second)
        },
    );
    assert!(
        second.contains("pCPU lanes need switch events, which need BPF"),
        "lanes panel should say it needs BPF:\n{second}"
    );
    assert!(
        second.contains("resume latency and its split by placement need"),
        "resume latency panel should say it needs BPF:\n{second}"
    );
    tmux.keys("q");
    wait_for("kvmscope to exit", Duration::from_secs(20), || {
        std::fs::read_to_string(&rc).is_ok_and(|s| !s.trim().is_empty())
    });
    assert_eq!(
        std::fs::read_to_string(&rc).unwrap().trim(),
        "0",
        "demo --no-bpf exit status; log:\n{}",
        std::fs::read_to_string(dir.path("log")).unwrap_or_default()
    );
}
