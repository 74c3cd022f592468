//! The `--no-bpf` building blocks against each other: perf software counters of one thread
//! (`probes::counters::ThreadCounters`) versus `/proc/<pid>/task/<tid>/sched` over the same
//! interval. The thread is blocked at both readings, so the interval is exact.

mod common;
use common::*;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use probes::counters::{ProcSched, SchedStat, ThreadCounters};
use probes::targets::ThreadStat;

/// Steal time of the whole host so far (these machines are VMs), ns, from /proc/stat.
fn steal_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    // "cpu user nice system idle iowait irq softirq steal ..." in USER_HZ ticks.
    let steal: u64 = stat.split_whitespace().nth(8).unwrap().parse().unwrap();
    let hz = hostfacts::clock_ticks_per_second();
    steal * 1_000_000_000 / hz
}

/// Waits until `tid` is asleep (blocked on its channel), so its figures stand still.
fn wait_blocked(pid: u32, tid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ThreadStat::read(pid, tid).unwrap().state != 'S' {
        assert!(Instant::now() < deadline, "thread {tid} did not block");
        thread::sleep(Duration::from_millis(2));
    }
    thread::sleep(Duration::from_millis(20));
}

#[test]
fn perf_counters_match_proc_sched() {
    // perf counters of kernel-side events need root or CAP_PERFMON, like the probes.
    if !privileged(Privilege::Bpf) {
        return;
    }
    let pid = std::process::id();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (tid_tx, tid_rx) = mpsc::channel::<u32>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let worker = thread::spawn(move || {
        tid_tx.send(hostfacts::gettid()).unwrap();
        go_rx.recv().unwrap();
        // Spin for 200 ms of CPU time (however long that takes on a busy host), then sleep
        // in short steps: both kinds of switches.
        let mut x = 0u64;
        while hostfacts::thread_cpu_ns() < 200_000_000 {
            for _ in 0..10_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        for _ in 0..20 {
            thread::sleep(Duration::from_millis(1));
        }
        done_tx.send(()).unwrap();
        // Stay alive (blocked) until the test has read the final figures.
        let _ = go_rx.recv();
    });
    let tid = tid_rx.recv().unwrap();
    wait_blocked(pid, tid);

    let mut counters = ThreadCounters::open(tid).unwrap();
    let c0 = counters.read().unwrap();
    let s0 = ProcSched::read(pid, tid).unwrap();
    let st0 = SchedStat::read(pid, tid).unwrap();
    let steal0 = steal_ns();
    go_tx.send(()).unwrap();
    done_rx.recv().unwrap();
    wait_blocked(pid, tid);
    let c1 = counters.read().unwrap();
    let s1 = ProcSched::read(pid, tid).unwrap();
    let st1 = SchedStat::read(pid, tid).unwrap();
    let steal1 = steal_ns();
    drop(go_tx);
    worker.join().unwrap();

    let c = c1.since(&c0);
    let switches = s1.nr_switches - s0.nr_switches;
    let run = s1.sum_exec_runtime - s0.sum_exec_runtime;
    eprintln!(
        "counters: task-clock {:.3} ms, {} switches, {} migrations; /proc: run {:.3} ms, {} \
         switches, {} migrations",
        c.task_clock_ns as f64 / 1e6,
        c.context_switches,
        c.cpu_migrations,
        run as f64 / 1e6,
        switches,
        s1.nr_migrations - s0.nr_migrations
    );
    assert_eq!(
        c.context_switches, switches,
        "context-switches vs nr_switches delta"
    );
    assert!(
        switches >= 20,
        "the worker slept 20 times: {switches} switches"
    );
    assert_eq!(run, st1.run_ns - st0.run_ns, "schedstat and sched agree");
    // perf's task-clock counts wall time on CPU; sum_exec_runtime leaves out steal (these
    // hosts are VMs) and IRQ time. So: not below it, and above it by at most 2% plus the
    // host's steal over the same interval.
    let steal = steal1 - steal0;
    let over = c.task_clock_ns as f64 - run as f64;
    eprintln!("host steal over the interval: {:.3} ms", steal as f64 / 1e6);
    assert!(
        over >= -0.02 * run as f64 && over <= 0.02 * run as f64 + steal as f64,
        "task-clock {} ns vs sum_exec_runtime {run} ns (host steal {steal} ns)",
        c.task_clock_ns
    );
    assert!(
        run > 150_000_000,
        "the worker spun 200 ms of CPU time but ran {run} ns"
    );
}
