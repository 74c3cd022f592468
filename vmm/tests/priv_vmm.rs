//! The VMM against real KVM: guests run, talk to the VMM, record their off-CPU gaps, and
//! the host scheduler's own figures (schedstat, /proc sched) agree.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vmm::{KvmFlavour, Scenario, VmSpec, Workload};

fn run_for(scenario: &Scenario, d: Duration) -> vmm::Summary {
    let running = vmm::start(scenario).expect("start");
    std::thread::sleep(d);
    running.stop().expect("stop")
}

#[test]
fn guest_port_writes_arrive_with_the_expected_values() {
    if !kvm_available() {
        return;
    }
    let mut s = Scenario::uniform(1, 2, Workload::Exits);
    s.set_exit_every(1000);
    s.vms[0].overrides.push(vmm::scenario::VcpuOverride {
        index: 1,
        workload: Some(Workload::Sleepy),
        ..Default::default()
    });
    s.vms[0].burst_us = Some(200);
    s.vms[0].sleep_us = Some(1000);
    let sum = run_for(&s, Duration::from_secs(1));
    let exits = &sum.vcpus[0];
    let sleepy = &sum.vcpus[1];
    eprintln!("exits vCPU: {exits:?}\nsleepy vCPU: {sleepy:?}");

    // The hello (HELLO_MAGIC + vCPU index) was checked by the VMM: a wrong one is a fault,
    // which would have made stop() fail. Every tick carried the unit count, K apart.
    assert!(exits.exits.ticks > 10, "{:?}", exits.exits);
    assert_eq!(exits.exits.bad_values, 0);
    assert_eq!(exits.exits.pio, exits.exits.ticks + 1, "hello + ticks");
    let expected_ticks = exits.work_units / 1000;
    assert!(
        exits.exits.ticks == expected_ticks || exits.exits.ticks + 1 == expected_ticks,
        "{} ticks for {} units",
        exits.exits.ticks,
        exits.work_units
    );
    // Each sleep request blocked the thread: at most one per (burst + sleep).
    assert!(sleepy.exits.sleeps > 50, "{:?}", sleepy.exits);
    assert!(sleepy.exits.sleeps < 1000, "{:?}", sleepy.exits);
    assert_eq!(sleepy.exits.bad_values, 0);
    assert_eq!(sleepy.exits.ticks, 0);
    assert!(sleepy.work_units > 0);
}

#[test]
fn nice_and_pinning_are_applied_to_the_vcpu_threads() {
    if !kvm_available() {
        return;
    }
    let cpus = allowed_cpus();
    let last = *cpus.last().unwrap();
    let mut s = Scenario::uniform(2, 1, Workload::Spin);
    s.apply_pin_spec(&format!("all={}", cpus[0])).unwrap();
    s.apply_pin_spec(&format!("vm1:vcpu0={last}")).unwrap();
    s.apply_nice_spec("vm1=10").unwrap();
    let running = vmm::start(&s).expect("start");
    let v = running.vcpus();
    std::thread::sleep(Duration::from_millis(200));

    // nice 10 weighs 110 in the kernel's table (nice 0 = 1024), scaled by 2^10 on 64-bit.
    assert_eq!(sched_field(v[0].tid, "se.load.weight"), 1024.0 * 1024.0);
    assert_eq!(sched_field(v[1].tid, "se.load.weight"), 110.0 * 1024.0);
    assert_eq!(vmm::sched::get_nice(v[1].tid).unwrap(), 10);
    assert_eq!(vmm::sched::get_affinity(v[0].tid).unwrap(), vec![cpus[0]]);
    assert_eq!(vmm::sched::get_affinity(v[1].tid).unwrap(), vec![last]);
    // The threads carry the names kvmscope finds them by.
    for info in &v {
        let comm = std::fs::read_to_string(format!("/proc/self/task/{}/comm", info.tid)).unwrap();
        assert_eq!(
            comm.trim(),
            format!("vm{}-vcpu{}", info.vm_index, info.vcpu)
        );
    }
    running.stop().expect("stop");
}

#[test]
fn migrate_every_raises_nr_migrations() {
    if !kvm_available() {
        return;
    }
    if allowed_cpus().len() < 2 {
        eprintln!("skipped: migrations need two CPUs");
        return;
    }
    let mut moving = Scenario::uniform(1, 1, Workload::Spin);
    moving.migrate_every_ms = Some(20);
    let still = Scenario::uniform(1, 1, Workload::Spin);
    let mut deltas = Vec::new();
    for s in [&still, &moving] {
        let running = vmm::start(s).expect("start");
        let tid = running.vcpus()[0].tid;
        let before = sched_field(tid, "se.nr_migrations");
        std::thread::sleep(Duration::from_secs(1));
        let after = sched_field(tid, "se.nr_migrations");
        running.stop().expect("stop");
        deltas.push(after - before);
    }
    eprintln!(
        "nr_migrations in 1 s: without rotation {}, rotating every 20 ms {}",
        deltas[0], deltas[1]
    );
    // 50 rotations in 1 s; each moves the thread (the scheduler may add its own).
    assert!(deltas[1] >= 40.0, "{deltas:?}");
    assert!(deltas[1] > deltas[0] + 20.0, "{deltas:?}");
}

#[test]
fn gap_rings_agree_with_schedstat() {
    if !kvm_available() {
        return;
    }
    let cpu = *allowed_cpus().last().unwrap();
    let mut s = Scenario::uniform(1, 3, Workload::Spin);
    s.apply_pin_spec(&format!("all={cpu}")).unwrap();
    let sum = run_for(&s, Duration::from_secs(2));
    let total: u64 = sum.vcpus.iter().map(|v| v.work_units).sum();
    for v in &sum.vcpus {
        let share = v.work_units as f64 / total as f64;
        let diff = (v.gap_ns as f64 - v.wait_ns as f64) / v.wait_ns as f64;
        eprintln!(
            "{}: gaps {} total {:.1} ms, schedstat wait {:.1} ms ({:+.2}%), run {:.1} ms, work share {:.3}, lost {}",
            v.thread,
            v.gaps,
            v.gap_ns as f64 / 1e6,
            v.wait_ns as f64 / 1e6,
            diff * 100.0,
            v.run_ns as f64 / 1e6,
            share,
            v.gap_overruns
        );
        assert!(v.gaps > 10, "{v:?}");
        assert_eq!(v.gap_overruns, 0);
        assert!(
            diff.abs() <= 0.10,
            "{}: gap {} ns vs wait {} ns",
            v.thread,
            v.gap_ns,
            v.wait_ns
        );
        assert!(
            (share - 1.0 / 3.0).abs() <= 0.1 / 3.0,
            "{}: share {share}",
            v.thread
        );
    }
}

#[test]
fn guest_code_runs_natively_not_emulated() {
    if !kvm_available() {
        return;
    }
    if KvmFlavour::detect() != KvmFlavour::Pvm {
        eprintln!("skipped: not PVM (hardware KVM always runs guest code natively)");
        return;
    }
    // Units per second of the vCPU's own CPU time, so host load does not matter.
    let rate = |emulate: bool| {
        let mut s = Scenario::uniform(1, 1, Workload::Spin);
        s.emulate = emulate;
        let sum = run_for(&s, Duration::from_secs(1));
        assert_eq!(
            sum.guest_execution,
            if emulate { "emulated" } else { "native" }
        );
        let v = &sum.vcpus[0];
        assert!(v.run_ns > 0);
        v.units_per_cpu_s
    };
    let native = rate(false);
    let emulated = rate(true);
    eprintln!(
        "work units per on-CPU second: native {native:.0}, emulated {emulated:.0}, ratio {:.0}x",
        native / emulated
    );
    assert!(emulated > 0.0);
    assert!(
        native >= 100.0 * emulated,
        "native {native}, emulated {emulated}"
    );
}

#[test]
fn a_triple_faulting_guest_is_reported_and_the_others_stop() {
    if !kvm_available() {
        return;
    }
    let mut s = Scenario::uniform(1, 2, Workload::Spin);
    s.vms.push(VmSpec::new("crasher", 1, Workload::TripleFault));
    let running = vmm::start(&s).expect("start");
    let t = Instant::now();
    while running.failure().is_none() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let msg = running
        .failure()
        .expect("the fault is reported")
        .to_string();
    assert!(msg.contains("vm1 (crasher) vCPU 0"), "{msg}");
    assert!(msg.contains("KVM_EXIT_SHUTDOWN"), "{msg}");
    // The healthy VM's vCPUs were kicked: stop() returns promptly with the same error.
    let t = Instant::now();
    let err = running
        .stop()
        .expect_err("a crashed guest fails the run")
        .to_string();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(err, msg);
}

#[test]
fn gaps_stream_in_monotonic_time_while_running() {
    if !kvm_available() {
        return;
    }
    let mut s = Scenario::uniform(1, 3, Workload::Spin);
    s.apply_pin_spec(&format!("all={}", allowed_cpus()[0]))
        .unwrap();
    let t0 = vmm::clock::monotonic_ns();
    let running = vmm::start(&s).expect("start");
    let tids: Vec<u32> = running.vcpus().iter().map(|v| v.tid).collect();
    let mut gaps = Vec::new();
    // Drained from another thread while the VMM runs: RunningVmm is Sync.
    std::thread::scope(|sc| {
        sc.spawn(|| {
            for _ in 0..10 {
                std::thread::sleep(Duration::from_millis(100));
                running.drain_gaps(&mut gaps);
            }
        });
    });
    let t1 = vmm::clock::monotonic_ns();
    assert!((running.tsc_hz() - 2.6e9).abs() < 3e9);
    assert!(running.failure().is_none());
    running.stop().expect("stop");
    assert!(gaps.len() > 30, "{} gaps", gaps.len());
    for g in &gaps {
        assert!(tids.contains(&g.tid));
        assert!(g.start < g.end);
        // Every gap lies within the time we watched (allowing for the clock fit's error).
        assert!(
            g.start + 1_000_000 >= t0 && g.end <= t1 + 1_000_000,
            "{g:?} not in {t0}..{t1}"
        );
    }
}

#[test]
fn the_default_demo_runs_every_workload_and_knob() {
    if !kvm_available() {
        return;
    }
    let running = vmm::start(&Scenario::default_demo()).expect("start");
    let v = running.vcpus();
    let before: Vec<f64> = v
        .iter()
        .map(|i| sched_field(i.tid, "se.nr_migrations"))
        .collect();
    std::thread::sleep(Duration::from_millis(1600));
    let after: Vec<f64> = v
        .iter()
        .map(|i| sched_field(i.tid, "se.nr_migrations"))
        .collect();
    let low = v.iter().find(|i| i.vm_name == "lowprio").unwrap();
    assert_eq!(low.nice, 10);
    assert_eq!(sched_field(low.tid, "se.load.weight"), 110.0 * 1024.0);
    let sum = running.stop().expect("stop");
    assert_eq!(sum.vms, 3);
    assert_eq!(sum.vcpus.len(), v.len());
    for s in &sum.vcpus {
        assert!(s.work_units > 0, "{s:?}");
        match s.workload {
            Workload::Sleepy => assert!(s.exits.sleeps > 0, "{s:?}"),
            Workload::Exits => assert!(s.exits.ticks > 0, "{s:?}"),
            _ => {}
        }
    }
    // Affinities rotate every 500 ms: three rotations, each a migration, for every vCPU
    // that was runnable at the time.
    let moved = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| *a - *b >= 2.0)
        .count();
    assert!(moved >= v.len() / 2, "before {before:?} after {after:?}");
}

#[test]
fn the_guest_tsc_is_the_host_tsc() {
    if !kvm_available() {
        return;
    }
    use kvm_bindings::{kvm_msr_entry, Msrs};
    let kvm = vmm::vm::open_kvm().unwrap();
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .unwrap();
    let params = vmm::vm::BlockParams {
        threshold_ticks: 1,
        exit_every: 0,
        burst_ticks: 0,
        sleep_us: 0,
        fault: false,
    };
    let vm = vmm::vm::build_vm(&kvm, &cpuid, "vm0", &[params; 2], true).unwrap();
    for v in &vm.vcpus {
        // Gap timestamps are used as host TSC values: the VMM zeroes the guest's offset
        // (KVM_VCPU_TSC_OFFSET) or measures it.
        if v.tsc_offset != 0 {
            eprintln!(
                "KVM_VCPU_TSC_OFFSET not available; measured offset {}",
                v.tsc_offset
            );
        }
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
            index: 0x10, // IA32_TSC
            ..Default::default()
        }])
        .unwrap();
        let before = vmm::clock::rdtsc();
        assert_eq!(v.fd.get_msrs(&mut msrs).unwrap(), 1);
        let after = vmm::clock::rdtsc();
        let host = msrs.as_slice()[0].data.wrapping_sub(v.tsc_offset as u64);
        // A measured offset is only good to about one ioctl.
        let slack = if v.tsc_offset == 0 { 0 } else { after - before };
        assert!(
            before - slack <= host && host <= after + slack,
            "guest TSC (as host) {host} outside host bracket {before}..{after}"
        );
    }
}

#[test]
fn guests_enter_with_interrupts_enabled() {
    if !kvm_available() {
        return;
    }
    // Emulated VT-x (Bochs) takes no external-interrupt exit from a guest with IF=0, so a
    // spinning vCPU would never give its pCPU back there; IF=1 is harmless here because
    // the VMM has no irqchip and injects nothing.
    let kvm = vmm::vm::open_kvm().expect("open /dev/kvm");
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .expect("supported CPUID");
    let params = vmm::vm::BlockParams {
        threshold_ticks: 1000,
        exit_every: 0,
        burst_ticks: 0,
        sleep_us: 0,
        fault: false,
    };
    let built = vmm::vm::build_vm(&kvm, &cpuid, "if-test", &[params], true).expect("build");
    let regs = built.vcpus[0].fd.get_regs().expect("KVM_GET_REGS");
    assert_eq!(regs.rflags, 0x202, "RFLAGS {:#x}", regs.rflags);
}
