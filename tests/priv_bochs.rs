//! VT-x for real: Debian's 6.12 and 6.1 kernels booted under Bochs with an emulated Intel
//! CPU (VMX with EPT and VPID, 2 CPUs), so that they load the real `kvm_intel` of their
//! package. Inside each, `lab/bochs/suite.sh` runs this checkout's kvmscope: `check`, then
//! one `record` of a VM whose two vCPU threads change pCPU every 50 ms, with the kernel's own
//! `csd:*` events in tracefs over the same run as the oracle. The trace file comes back, and
//! `report` and `export` run on it here.
//!
//! Emulated time is not real time (Bochs counts instructions): these tests assert structure
//! and counts, never latencies. The harness is the `lab` crate (lab/README.md); one Bochs at
//! a time (its display listens on TCP 5900), in the serial `priv_` group.
//!
//! In `.ci/run` (budget: 12 minutes for both kernels). On a quiet 2-core host 6.1 took 244 s
//! and 6.12 201 s of wall time, build of the boot image included; on a host at load average
//! 9-13 Bochs runs about 7 times slower, and one kernel alone can pass 15 minutes.
//!
//! `KVMSCOPE_BOCHS_REUSE=1` asserts the last boot's results again without booting (the
//! logs stay in the test's target tmp dir), for working on the assertions.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use common::kvmscope;
use lab::apt::Archive;
use lab::bochs::Bochs;
use lab::kernel::{Kernel, KernelSpec};
use lab::results::{tail, Results};
use model::trace_file::TraceReader;
use model::{CrossCallPhase, Event};
use serde_json::Value;

/// VMX basic exit reason of IN/OUT (`EXIT_REASON_IO_INSTRUCTION`).
const VMX_EXIT_IO_INSTRUCTION: u32 = 30;

#[test]
fn vtx_6_12() {
    run_bochs_kernel("6.12", true);
}

#[test]
fn vtx_6_1() {
    run_bochs_kernel("6.1", false);
}

/// Root (the lab cache lives in /var/cache) and Bochs; missing ones skip, or fail under
/// `KVMSCOPE_REQUIRE_PRIVILEGED=1`.
fn lab_can_run() -> bool {
    let missing = if hostfacts::euid() != 0 {
        Some("not root (the kernel lab caches under /var/cache/kvmscope-lab)".to_string())
    } else if std::process::Command::new("bochs-bin")
        .arg("--help")
        .output()
        .is_err()
    {
        Some("no bochs-bin (bash scripts/setup.sh installs bochs)".to_string())
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) if std::env::var("KVMSCOPE_REQUIRE_PRIVILEGED").as_deref() == Ok("1") => {
            panic!("Bochs lane cannot run: {why} (KVMSCOPE_REQUIRE_PRIVILEGED=1)")
        }
        Some(why) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}

/// The guest's results and where they were kept.
struct Run {
    name: String,
    results: Results,
    console: String,
    work: PathBuf,
}

impl Run {
    fn ctx(&self, what: &str) -> String {
        format!(
            "{}: {what}\nconsole ends:\n{}\n(logs in {})",
            self.name,
            tail(&self.console, 25),
            self.work.display()
        )
    }

    fn ok(&self, step: &str) -> &str {
        self.results
            .ok(step)
            .unwrap_or_else(|e| panic!("{}", self.ctx(&e.to_string())))
    }

    fn json(&self, step: &str) -> Value {
        let text = self.ok(step);
        serde_json::from_str(text).unwrap_or_else(|e| {
            panic!(
                "{}",
                self.ctx(&format!("{step}: not JSON ({e}): {}", tail(text, 5)))
            )
        })
    }
}

fn boot(name: &str) -> Run {
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bochs-{name}"));
    if std::env::var("KVMSCOPE_BOCHS_REUSE").as_deref() == Ok("1") {
        let read = |f: &str| std::fs::read_to_string(work.join(f)).unwrap_or_default();
        return Run {
            name: name.to_string(),
            results: Results::parse(&read("results.log")),
            console: read("console.log"),
            work,
        };
    }
    let spec = KernelSpec::by_name(name).expect("a matrix kernel");
    let archive = Archive::new(&lab::cache_dir());
    let kernel = Kernel::fetch(spec, &archive).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut fs = Bochs::initramfs(&archive, &kernel).unwrap_or_else(|e| panic!("{name}: {e}"));
    fs.executable("/bin/kvmscope", Path::new(env!("CARGO_BIN_EXE_kvmscope")))
        .expect("kvmscope into the initramfs");
    fs.file(
        "/lab/suite.sh",
        include_bytes!("../lab/bochs/suite.sh").to_vec(),
        0o644,
    );
    std::fs::create_dir_all(&work).unwrap();
    let initrd = work.join("initramfs.cpio");
    fs.write(&initrd).unwrap();
    let bochs = Bochs {
        timeout: std::time::Duration::from_secs(1800),
        ..Bochs::default()
    };
    let boot = bochs
        .boot(&kernel.vmlinuz, &initrd, "", &work)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    println!(
        "kernel {name} ({}) under Bochs: wall {:.1} s",
        kernel.release,
        boot.wall.as_secs_f64()
    );
    Run {
        name: format!("{name} ({})", kernel.release),
        results: boot.results,
        console: boot.console,
        work,
    }
}

fn run_bochs_kernel(name: &str, has_csd: bool) {
    if !lab_can_run() {
        return;
    }
    let run = boot(name);
    for s in &run.results.steps {
        println!(
            "  step {}: rc {:?}, {:.1} s emulated",
            s.name,
            s.rc,
            s.ms as f64 / 1000.0
        );
    }
    assert!(run.results.done, "{}", run.ctx("the suite did not finish"));
    run.ok("modules");
    check_step(&run, has_csd);

    let record = run.json("record");
    assert_eq!(
        record["lost"],
        0,
        "{}",
        run.ctx(&format!("record: {record}"))
    );
    let vmm = &record["vmm"];
    assert_eq!(vmm["kvm"], "vmx", "{}", run.ctx("record: the VMM's KVM"));
    assert_eq!(
        vmm["guest_execution"],
        "hardware",
        "{}",
        run.ctx("record: guests not on VT-x")
    );
    let trace = run.work.join("run.trace");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(run.ok("trace").split_whitespace().collect::<String>())
        .unwrap_or_else(|e| panic!("{}", run.ctx(&format!("trace: not base64: {e}"))));
    std::fs::write(&trace, bytes).unwrap();
    let events = read_trace(&trace);
    let vcpus = vmm["vcpus"].as_array().expect("the VMM's vCPUs");
    let report = report_json(&trace);
    let exits = exits_match_the_vmm(&run, &events, vcpus, &report);
    let vmclear = if has_csd {
        vmclears_match_the_kernel(&run, &events, vcpus, &report, &trace)
    } else {
        no_vmclear_attribution_before_6_4(&run, &events, &report)
    };

    // The IF=1 entry: a spinning 2-vCPU VM leaves its guests on host interrupts under Bochs.
    let spin = run.json("spin");
    assert_eq!(spin["guest_execution"], "hardware", "{}", run.ctx("spin"));
    println!("{}:\n  {exits}\n  {vmclear}", run.name);
}

/// `check --json`: Intel VT-x; every tracepoint kvmscope uses present and usable, except
/// `csd:*` before Linux 6.4, which check says VMCLEAR attribution needs.
fn check_step(run: &Run, has_csd: bool) {
    let check = run.json("check");
    assert_eq!(
        check["host"]["kvm_flavour"],
        "vmx",
        "{}",
        run.ctx("check: /dev/kvm is not Intel VT-x")
    );
    let items = check["items"].as_array().expect("check items");
    let tracepoints: Vec<&Value> = items
        .iter()
        .filter(|i| {
            i["name"]
                .as_str()
                .is_some_and(|n| ["sched:", "kvm:", "csd:"].iter().any(|p| n.starts_with(p)))
        })
        .collect();
    assert_eq!(
        tracepoints.len(),
        12,
        "{}",
        run.ctx(&format!("check: tracepoint items {tracepoints:?}"))
    );
    for i in tracepoints {
        let csd = i["name"].as_str().unwrap().starts_with("csd:");
        if csd && !has_csd {
            assert_eq!(i["status"], "missing", "{}", run.ctx(&i.to_string()));
            assert!(
                i["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("VMCLEAR attribution needs Linux 6.4"),
                "{}",
                run.ctx(&format!("check does not say why: {i}"))
            );
        } else {
            assert_eq!(i["status"], "ok", "{}", run.ctx(&format!("check: {i}")));
        }
    }
}

fn read_trace(path: &Path) -> Vec<Event> {
    let mut r = TraceReader::new(std::fs::File::open(path).unwrap(), "run.trace").unwrap();
    let mut events = Vec::new();
    while r.next_chunk(&mut events).unwrap() {}
    assert!(
        r.stats().problems().is_empty(),
        "trace file: {:?}",
        r.stats().problems()
    );
    events
}

fn report_json(trace: &Path) -> Value {
    let out = kvmscope()
        .arg("report")
        .arg(trace)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "report: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("report --json")
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer {key} in {v}"))
}

fn report_vcpu(report: &Value, tid: u64) -> &Value {
    report["vcpus"]
        .as_array()
        .expect("report vcpus")
        .iter()
        .find(|v| v["tid"] == tid)
        .unwrap_or_else(|| panic!("report: no vCPU thread {tid}"))
}

/// Per vCPU: kvm_entry = kvm_exit, every exit VMX, IO_INSTRUCTION exits = the VMM's own
/// port-I/O count; `report` names every exit reason.
fn exits_match_the_vmm(run: &Run, events: &[Event], vcpus: &[Value], report: &Value) -> String {
    let mut out = Vec::new();
    let mut names = BTreeMap::new();
    for vcpu in vcpus {
        let tid = u(vcpu, "tid") as u32;
        let entries = events
            .iter()
            .filter(|e| matches!(e, Event::KvmEntry(k) if k.tid == tid))
            .count();
        let exits: Vec<&model::KvmExit> = events
            .iter()
            .filter_map(|e| match e {
                Event::KvmExit(x) if x.tid == tid => Some(x),
                _ => None,
            })
            .collect();
        assert!(
            entries > 0 && entries == exits.len(),
            "{}",
            run.ctx(&format!(
                "vCPU thread {tid}: {entries} kvm_entry vs {} kvm_exit",
                exits.len()
            ))
        );
        assert!(
            exits.iter().all(|x| x.isa == model::ExitIsa::Vmx),
            "{}",
            run.ctx("a kvm_exit not marked vmx")
        );
        let io = exits
            .iter()
            .filter(|x| x.reason == VMX_EXIT_IO_INSTRUCTION)
            .count() as u64;
        let pio = u(&vcpu["exits"], "pio");
        assert_eq!(
            io,
            pio,
            "{}",
            run.ctx(&format!(
                "vCPU thread {tid}: IO_INSTRUCTION exits vs the VMM's port-I/O exits"
            ))
        );
        for e in report_vcpu(report, tid as u64)["exits"]
            .as_array()
            .expect("report exits")
        {
            let reason = e["reason"].as_str().unwrap_or_default();
            assert!(
                reason.starts_with(|c: char| c.is_ascii_alphabetic())
                    && !reason.contains("unknown"),
                "{}",
                run.ctx(&format!("report: vCPU {tid}: exit reason not named: {e}"))
            );
            *names.entry(reason.to_string()).or_insert(0u64) += u(e, "count");
        }
        out.push(format!(
            "vcpu {tid}: {entries} kvm_entry = kvm_exit, IO_INSTRUCTION {io} = VMM pio {pio}"
        ));
    }
    assert!(
        names.contains_key("IO_INSTRUCTION"),
        "{}",
        run.ctx(&format!("report: exits seen {names:?}"))
    );
    let names: Vec<String> = names.iter().map(|(n, c)| format!("{n} {c}")).collect();
    format!("{}; exits named: {}", out.join("; "), names.join(", "))
}

/// One VMCLEAR queued: when, on which pCPU, for which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Queued {
    ts: u64,
    cpu: u32,
    target: u32,
}

/// tracefs `csd_queue_cpu ... func=__loaded_vmcs_clear`, by the task that queued it.
fn tracefs_vmclears(dump: &str) -> BTreeMap<u32, Vec<Queued>> {
    let mut by_tid: BTreeMap<u32, Vec<Queued>> = BTreeMap::new();
    for line in dump.lines() {
        if !line.contains("csd_queue_cpu:") || !line.contains("func=__loaded_vmcs_clear") {
            continue;
        }
        // `<comm>-<pid> [<cpu>] <flags> <secs>.<us>: csd_queue_cpu: cpu=<target> ...`
        let (Some(open), Some(close)) = (line.find('['), line.find(']')) else {
            continue;
        };
        let tid = line[..open].trim_end().rsplit('-').next();
        let cpu = line[open + 1..close].trim();
        let ts = line[close + 1..]
            .split_whitespace()
            .find_map(|w| w.strip_suffix(':').filter(|w| w.contains('.')));
        let target = line.split_whitespace().find_map(|w| w.strip_prefix("cpu="));
        let parsed = (|| {
            let (secs, us) = ts?.split_once('.')?;
            Some((
                tid?.parse().ok()?,
                Queued {
                    ts: secs.parse::<u64>().ok()? * 1_000_000_000 + us.parse::<u64>().ok()? * 1000,
                    cpu: cpu.parse().ok()?,
                    target: target?.parse().ok()?,
                },
            ))
        })();
        let (tid, q) = parsed.unwrap_or_else(|| panic!("tracefs line not understood: {line}"));
        by_tid.entry(tid).or_default().push(q);
    }
    by_tid
}

/// The pCPUs a vCPU thread's VMCS had to move to: each vCPU load (a switch-in while inside
/// `KVM_RUN`, or the start of a `KVM_RUN`, seen as its first `kvm_entry`) on another pCPU than
/// the last load, as (the earliest time the load can have happened, new pCPU, old pCPU): the
/// switch-in itself, or for a `KVM_RUN` start the thread's last `kvm_userspace_exit` (KVM loads
/// the vCPU as the ioctl begins, before its first `kvm_entry`; the ioctl itself is not traced).
/// The first load moves the VMCS from wherever the VMM's main thread created the vCPU: unknown
/// here. Also returned: the first `kvm_entry`'s time and pCPU. Before it the thread's own vCPU
/// ioctls (register set-up, the start of the first `KVM_RUN`) may load the VMCS on any pCPU it
/// runs on, and none of them is traced: the caller takes every VMCLEAR queued before that entry
/// as the set-up's.
fn vmcs_moves(events: &[Event], tid: u32) -> (Option<(u64, u32)>, Vec<Queued>) {
    let mut in_run = false;
    let mut back_in_vmm_at = 0;
    let mut first_entry = None;
    let mut last: Option<u32> = None;
    let mut moves = Vec::new();
    let mut load = |ts: u64, cpu: u32, last: &mut Option<u32>| {
        match *last {
            None => {}
            Some(old) if old != cpu => moves.push(Queued {
                ts,
                cpu,
                target: old,
            }),
            Some(_) => {}
        }
        *last = Some(cpu);
    };
    // The trace file keeps each pCPU's ring order, not one global order: a VMCS follows its
    // loads in time, so walk them sorted (a stable sort keeps same-instant events in order).
    let mut in_time: Vec<&Event> = events.iter().collect();
    in_time.sort_by_key(|e| e.ts());
    for e in in_time {
        match e {
            Event::SchedSwitch(s) if s.next_tid == tid && in_run => load(s.ts, s.cpu, &mut last),
            Event::KvmEntry(k) if k.tid == tid && !in_run => {
                in_run = true;
                first_entry.get_or_insert((k.ts, k.cpu));
                load(back_in_vmm_at, k.cpu, &mut last);
            }
            Event::UserspaceExit(x) if x.tid == tid => {
                in_run = false;
                back_in_vmm_at = x.ts;
            }
            _ => {}
        }
    }
    (first_entry, moves)
}

/// The exact VMCLEAR oracle, per vCPU: what kvmscope attributes (its cross_call events and
/// report's count) = tracefs `csd_queue_cpu func=__loaded_vmcs_clear` from that thread = the
/// VMCS's moves, each queued on the new pCPU for the old one; none attributed elsewhere.
fn vmclears_match_the_kernel(
    run: &Run,
    events: &[Event],
    vcpus: &[Value],
    report: &Value,
    trace: &Path,
) -> String {
    let stats = run.ok("tracefs-stats");
    assert!(
        stats
            .lines()
            .all(|l| l.trim_end().ends_with(": 0") || l.trim_end().ends_with(" 0")),
        "{}",
        run.ctx(&format!("tracefs lost events: {stats}"))
    );
    let oracle = tracefs_vmclears(run.ok("tracefs-csd"));
    let mut ours: BTreeMap<u32, Vec<Queued>> = BTreeMap::new();
    for e in events {
        if let Event::CrossCall(x) = e {
            if x.is_vmclear && x.phase == CrossCallPhase::Queue {
                ours.entry(x.tid).or_default().push(Queued {
                    ts: x.ts,
                    cpu: x.cpu,
                    target: x.target_cpu,
                });
            }
        }
    }
    // The file keeps each pCPU's ring order; the comparisons below go in time order.
    for queued in ours.values_mut() {
        queued.sort_by_key(|q| q.ts);
    }
    let vcpu_tids: Vec<u32> = vcpus.iter().map(|v| u(v, "tid") as u32).collect();
    // Other threads' (the VMM's main thread creates and frees the vCPUs, and may load them
    // for that): shown, not attributed to any vCPU.
    let others: Vec<String> = oracle
        .keys()
        .chain(ours.keys())
        .filter(|t| !vcpu_tids.contains(*t))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|t| {
            format!(
                "thread {t}: {} kvmscope, {} tracefs",
                ours.get(t).map_or(0, Vec::len),
                oracle.get(t).map_or(0, Vec::len)
            )
        })
        .collect();
    let mut out = Vec::new();
    let mut finished = 0;
    for (vcpu, &tid) in vcpus.iter().zip(&vcpu_tids) {
        let mine = ours.get(&tid).cloned().unwrap_or_default();
        let kernel = oracle.get(&tid).cloned().unwrap_or_default();
        // Same calls, same pCPUs, same times. The BPF program and tracefs stamp the same
        // tracepoint at different instructions, and under Bochs an interrupt taken between the
        // two adds emulated time (255 us seen on 6.12); VMCLEARs of one vCPU are tens of ms
        // apart (it migrates every 50 ms), so 1 ms still pairs them one to one.
        assert_eq!(
            mine.len(),
            kernel.len(),
            "{}",
            run.ctx(&format!(
                "vCPU thread {tid}: kvmscope's VMCLEARs vs tracefs csd_queue_cpu"
            ))
        );
        for (m, k) in mine.iter().zip(&kernel) {
            assert!(
                (m.cpu, m.target) == (k.cpu, k.target) && m.ts.abs_diff(k.ts) < 1_000_000,
                "{}",
                run.ctx(&format!(
                    "vCPU thread {tid}: kvmscope {m:?} vs tracefs {k:?}"
                ))
            );
        }
        let r = &report_vcpu(report, tid as u64)["resume"];
        assert_eq!(
            u(r, "vmclear_calls"),
            mine.len() as u64,
            "{}",
            run.ctx(&format!("report: vCPU {tid} vmclear_calls"))
        );
        // The VMCS's own moves after the first entry: one VMCLEAR each, queued on the new pCPU
        // for the old one, no earlier than that load. Before the first entry, the set-up's
        // loads (see `vmcs_moves`): a chain from the creating thread's pCPU that ends on the
        // first entry's.
        let (first_entry, moves) = vmcs_moves(events, tid);
        let (entry_ts, entry_cpu) = first_entry
            .unwrap_or_else(|| panic!("{}", run.ctx(&format!("vCPU {tid}: no kvm_entry"))));
        let initial = mine.partition_point(|m| m.ts < entry_ts);
        let (setup, after_first) = mine.split_at(initial);
        let shown = |q: &[Queued]| {
            format!(
                "{:?}{}",
                &q[..q.len().min(4)],
                if q.len() > 4 { " ..." } else { "" }
            )
        };
        assert_eq!(
            after_first.len(),
            moves.len(),
            "{}",
            run.ctx(&format!(
                "vCPU thread {tid}: {} VMCLEARs after the first entry vs {} VMCS moves: {} vs {}",
                after_first.len(),
                moves.len(),
                shown(after_first),
                shown(&moves)
            ))
        );
        for (m, mv) in after_first.iter().zip(&moves) {
            assert!(
                (m.cpu, m.target) == (mv.cpu, mv.target) && m.ts >= mv.ts,
                "{}",
                run.ctx(&format!(
                    "vCPU thread {tid}: VMCLEAR {m:?} vs the VMCS move {mv:?}"
                ))
            );
        }
        let chained = setup.windows(2).all(|w| w[1].target == w[0].cpu)
            && setup.last().is_none_or(|l| l.cpu == entry_cpu);
        assert!(
            chained,
            "{}",
            run.ctx(&format!(
                "vCPU thread {tid}: set-up VMCLEARs {} do not chain to the first entry on pCPU {entry_cpu}",
                shown(setup)
            ))
        );
        // The latency split: delivery (queue -> entry on the old pCPU) and the clear itself.
        let done = u(&r["vmclear"], "count");
        assert!(
            done > 0 && u(&r["vmclear_delivery"], "count") == done,
            "{}",
            run.ctx(&format!("report: vCPU {tid}: VMCLEAR latency split {r}"))
        );
        assert_eq!(u(&r["vmclear_run"], "count"), done);
        finished += done;
        out.push(format!(
            "vcpu {tid} ({}): {} VMCLEARs = tracefs {} = {} VMCS moves + {initial} in the set-up; {} switch-ins migrated",
            vcpu["thread"].as_str().unwrap_or_default(),
            mine.len(),
            kernel.len(),
            moves.len(),
            u(&r["migrated"], "count"),
        ));
    }
    assert!(
        finished > 0,
        "{}",
        run.ctx("no VMCLEAR under migrate_every_ms = 50")
    );
    // The Perfetto export draws each finished one as a flow.
    let pftrace = trace.with_extension("pftrace");
    let _ = std::fs::remove_file(&pftrace);
    let o = kvmscope()
        .arg("export")
        .arg(trace)
        .args(["--format", "perfetto", "-o"])
        .arg(&pftrace)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "export: {err}");
    assert!(
        err.contains(&format!(" {finished} VMCLEAR IPI flows")),
        "export: {err} (want {finished} flows)"
    );
    out.push(format!(
        "VMCLEARs of other threads: {}",
        if others.is_empty() {
            "none".to_string()
        } else {
            others.join(", ")
        }
    ));
    out.join("\n  ")
}

/// Before Linux 6.4 there are no csd:* events: nothing is attributed, and report says why.
fn no_vmclear_attribution_before_6_4(run: &Run, events: &[Event], report: &Value) -> String {
    assert!(
        !events.iter().any(|e| matches!(e, Event::CrossCall(_))),
        "{}",
        run.ctx("cross_call events without csd:*")
    );
    let notes = report["health"]["notes"].to_string();
    assert!(
        notes.contains("VMCLEAR attribution needs Linux 6.4"),
        "{}",
        run.ctx(&format!("report's notes: {notes}"))
    );
    for v in report["vcpus"].as_array().expect("report vcpus") {
        assert_eq!(u(&v["resume"], "vmclear_calls"), 0);
    }
    "no csd:*: report and check say VMCLEAR attribution needs Linux 6.4".to_string()
}
