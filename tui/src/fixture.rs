//! Deterministic model snapshots for the view tests and the render benchmark.
//!
//! They imitate what the model reports for the demo scenario (VMs competing for pCPUs, with
//! migrations and exits) without needing a kernel, so view snapshots never change between
//! runs. Not used by the dashboard itself.

use model::{
    ExitStats, Health, HostInfo, LaneOwner, LaneSegment, Occupancy, PcpuSnapshot, Percentiles,
    ResumeLatency, Snapshot, VcpuSnapshot, VcpuState, VmSnapshot, VruntimePoint, VruntimeSeries,
    Window,
};

/// Start of the synthetic run, ns (any CLOCK_MONOTONIC-like value).
pub const START_NS: u64 = 1_000_000_000_000;
/// Lane slots are this long, ns.
const SLOT_NS: u64 = 3_000_000;
/// vruntime samples every this many ns.
const SAMPLE_NS: u64 = 50_000_000;
/// History kept in lanes and series, ns (the model promises at least 10 s).
const HISTORY_NS: u64 = 12_000_000_000;

/// One VM of a synthetic scenario.
#[derive(Clone, Debug)]
pub struct VmSpec {
    pub name: &'static str,
    pub pid: u32,
    pub vcpus: u32,
    pub nice: i32,
    /// Fraction of time its vCPUs want the CPU (1 = spin).
    pub demand: f64,
    /// Userspace exits per second per vCPU.
    pub exits_per_second: f64,
}

pub fn host() -> HostInfo {
    HostInfo {
        hostname: "testhost".into(),
        kernel: "6.18.0-test".into(),
        scheduler: "EEVDF".into(),
        cpus: 2,
        kvm_flavour: model::KvmFlavour::Pvm,
        clock: "CLOCK_MONOTONIC".into(),
        tsc_hz: Some(2.596e9),
        csd_tracepoints: None,
    }
}

/// The demo's shape: a batch VM, an interactive VM of sleepy vCPUs and a nice-10 VM.
pub fn demo_vms() -> Vec<VmSpec> {
    vec![
        VmSpec {
            name: "vm0",
            pid: 4100,
            vcpus: 2,
            nice: 0,
            demand: 1.0,
            exits_per_second: 0.0,
        },
        VmSpec {
            name: "vm1",
            pid: 4200,
            vcpus: 2,
            nice: 0,
            demand: 0.3,
            exits_per_second: 850.0,
        },
        VmSpec {
            name: "vm2",
            pid: 4300,
            vcpus: 1,
            nice: 10,
            demand: 1.0,
            exits_per_second: 0.0,
        },
    ]
}

/// `n` vCPUs spread over VMs of four, for the benchmark.
pub fn many_vms(n: u32) -> Vec<VmSpec> {
    const NAMES: [&str; 8] = ["vm0", "vm1", "vm2", "vm3", "vm4", "vm5", "vm6", "vm7"];
    let mut vms = vec![];
    let mut left = n;
    for (i, name) in NAMES.iter().enumerate() {
        if left == 0 {
            break;
        }
        let vcpus = left.min(4);
        left -= vcpus;
        vms.push(VmSpec {
            name,
            pid: 5000 + i as u32 * 100,
            vcpus,
            nice: if i % 3 == 2 { 10 } else { 0 },
            demand: if i % 2 == 1 { 0.4 } else { 1.0 },
            exits_per_second: if i % 2 == 1 { 500.0 } else { 0.0 },
        });
    }
    vms
}

/// The demo picture 12.5 s into the run.
pub fn demo_snapshot() -> Snapshot {
    synthetic(&demo_vms(), 2, START_NS + 12_500_000_000)
}

/// The same, as seen on a host that gives neither guest entry events nor guest gaps.
pub fn no_guest_timing_snapshot() -> Snapshot {
    let mut s = demo_snapshot();
    s.resume = ResumeLatency {
        source: "none".into(),
        ..ResumeLatency::default()
    };
    for v in &mut s.vcpus {
        v.resume = s.resume.clone();
        v.guest_gaps = 0;
        v.guest_gap_ns = 0;
    }
    s.health.notes = vec!["no guest entry/exit events seen on this host".into()];
    s
}

/// A small deterministic hash so slots look random but never change between runs.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn weight_for(nice: i32) -> u32 {
    // The kernel's table at the nice values the fixtures use.
    match nice {
        10 => 110,
        5 => 335,
        -5 => 3121,
        _ => 1024,
    }
}

struct Vcpu<'a> {
    vm: &'a VmSpec,
    index: u32,
    tid: u32,
    home: u32,
}

/// A snapshot of `vms` on `pcpus` pCPUs at `now` (ns); moving `now` scrolls lanes and series.
pub fn synthetic(vms: &[VmSpec], pcpus: u32, now: u64) -> Snapshot {
    let pcpus = pcpus.max(1);
    let mut vcpus = vec![];
    for vm in vms {
        for i in 0..vm.vcpus {
            let n = vcpus.len() as u32;
            vcpus.push(Vcpu {
                vm,
                index: i,
                tid: vm.pid + 1 + i,
                home: n % pcpus,
            });
        }
    }
    let from = now.saturating_sub(HISTORY_NS).max(START_NS);
    let elapsed_s = (now - START_NS) as f64 / 1e9;

    // Lanes: each slot goes to one of the vCPUs homed on the CPU (weighted by demand and
    // weight), now and then to another task or idle; every 40th slot a vCPU from the other
    // CPU migrates in.
    let mut run_ns = vec![0u64; vcpus.len()];
    let mut pcpu_snaps = vec![];
    for cpu in 0..pcpus {
        let homed: Vec<usize> = (0..vcpus.len()).filter(|&i| vcpus[i].home == cpu).collect();
        let mut lane: Vec<LaneSegment> = vec![];
        let first_slot = from / SLOT_NS;
        let last_slot = now / SLOT_NS;
        for slot in first_slot..=last_slot {
            let h = mix(slot ^ ((cpu as u64) << 40));
            let start = (slot * SLOT_NS).max(from);
            let end = ((slot + 1) * SLOT_NS).min(now);
            if start >= end {
                continue;
            }
            let r = (h % 1000) as f64 / 1000.0;
            let owner_index = if h % 40 == 7 && vcpus.len() > homed.len() {
                Some((h as usize / 40) % vcpus.len())
            } else if homed.is_empty() || r < 0.06 {
                None
            } else {
                let total: f64 = homed
                    .iter()
                    .map(|&i| vcpus[i].vm.demand * weight_for(vcpus[i].vm.nice) as f64)
                    .sum();
                let mut pick = r * total;
                let mut chosen = None;
                for &i in &homed {
                    let w = vcpus[i].vm.demand * weight_for(vcpus[i].vm.nice) as f64;
                    if pick < w {
                        chosen = Some(i);
                        break;
                    }
                    pick -= w;
                }
                chosen
            };
            let owner = match owner_index {
                Some(i) => {
                    run_ns[i] += end - start;
                    let v = &vcpus[i];
                    LaneOwner::Vcpu {
                        vm: v.vm.name.into(),
                        vcpu: Some(v.index),
                        tid: v.tid,
                    }
                }
                None if r < 0.03 => LaneOwner::Idle,
                None => LaneOwner::Other {
                    comm: "kworker/0:1".into(),
                },
            };
            let waiting = if matches!(owner, LaneOwner::Vcpu { .. }) {
                (homed.len() as u32)
                    .saturating_sub(1)
                    .min((h >> 20) as u32 % 3)
            } else {
                0
            };
            match lane.last_mut() {
                Some(last)
                    if last.owner == owner && last.waiting == waiting && last.end == start =>
                {
                    last.end = end
                }
                _ => lane.push(LaneSegment {
                    start,
                    end,
                    owner,
                    waiting,
                }),
            }
        }
        let current_tid = match lane.last().map(|s| &s.owner) {
            Some(LaneOwner::Vcpu { tid, .. }) => Some(*tid),
            _ => None,
        };
        let waiting = lane.last().map_or(0, |s| s.waiting);
        let occ = Occupancy {
            idle: 0.03,
            vms: vms
                .iter()
                .map(|v| (v.name.to_string(), 0.9 / vms.len() as f64))
                .collect(),
            others: vec![("kworker/0:1".into(), 0.07)],
        };
        pcpu_snaps.push(PcpuSnapshot {
            cpu,
            current_tid,
            waiting,
            occupancy_1s: occ.clone(),
            occupancy_10s: occ.clone(),
            occupancy_run: occ,
            time: Default::default(),
            lane,
        });
    }

    let window_ns = (now - from).max(1) as f64;
    let running: Vec<Option<u32>> = pcpu_snaps.iter().map(|p| p.current_tid).collect();
    let total_weight: f64 = vcpus.iter().map(|v| weight_for(v.vm.nice) as f64).sum();
    let mut vcpu_snaps = vec![];
    let mut series = vec![];
    for (i, v) in vcpus.iter().enumerate() {
        let weight = weight_for(v.vm.nice);
        let share = run_ns[i] as f64 / window_ns;
        let entitled = (pcpus as f64 * weight as f64 / total_weight).min(1.0);
        let base = 4_000_000_000_000 + (i as u64) * 7_300_000_000;
        // vruntime advances by run time scaled by 1024/weight; a light task's line is steeper.
        let slope = share * 1024.0 / weight as f64;
        let vr_at = |ts: u64| {
            let t = (ts - START_NS) as f64;
            let wobble = (mix(ts / SAMPLE_NS + i as u64) % 3_000_000) as f64;
            base + (t * slope + wobble) as u64
        };
        let state = if running.contains(&Some(v.tid)) {
            VcpuState::InGuest
        } else if v.vm.demand < 1.0 {
            VcpuState::Sleeping
        } else {
            VcpuState::Waiting
        };
        let h = mix(i as u64 + 99);
        let migrations = 3 + h % 40;
        let exits_ps = v.vm.exits_per_second;
        let exits = if exits_ps > 0.0 {
            vec![
                ExitStats {
                    reason: "userspace:IO".into(),
                    count: (exits_ps * elapsed_s) as u64,
                    per_second: exits_ps,
                    latency: Percentiles::default(),
                },
                ExitStats {
                    reason: "userspace:MMIO".into(),
                    count: (exits_ps * 0.01 * elapsed_s) as u64,
                    per_second: exits_ps * 0.01,
                    latency: Percentiles::default(),
                },
            ]
        } else {
            vec![]
        };
        let resume = resume_latency(i as u64);
        vcpu_snaps.push(VcpuSnapshot {
            vm: v.vm.name.into(),
            pid: v.vm.pid,
            vcpu: Some(v.index),
            tid: v.tid,
            comm: format!("{}-vcpu{}", v.vm.name, v.index),
            state: Some(state),
            pcpu: Some(v.home),
            vruntime: vr_at(now),
            lag: (h % 6_000_000) as i64 - 1_000_000,
            weight,
            nice: v.vm.nice,
            run_ns: run_ns[i],
            task_clock_ns: run_ns[i] * 98 / 100,
            run_delay_ns: None,
            wait_ns: (window_ns * (1.0 - share) * v.vm.demand) as u64,
            sleep_ns: (window_ns * (1.0 - v.vm.demand)) as u64,
            cpu_share: share,
            entitled_share: entitled,
            switches: 1000 + h % 500,
            voluntary_switches: if v.vm.demand < 1.0 { 600 } else { 3 },
            involuntary_switches: 400 + h % 100,
            migrations,
            migrations_per_second: migrations as f64 / elapsed_s,
            exits_per_second: exits.iter().map(|e| e.per_second).sum(),
            wait: Percentiles {
                count: 900,
                p50: 1_500_000 + h % 1_000_000,
                p90: 4_000_000 + h % 2_000_000,
                p99: 9_000_000 + (h % 9) * 1_000_000,
                max: 30_000_000,
                mean: 2.1e6,
            },
            resume,
            exits,
            guest_gaps: 800 + h % 100,
            guest_gap_ns: (window_ns * (1.0 - share) * 0.9) as u64,
            pcpu_changes: migrations,
            elapsed_ns: now - START_NS,
            ended: false,
            sampled_at: None,
            latency_buckets: Default::default(),
        });
        let mut points = vec![];
        let mut ts = from.div_ceil(SAMPLE_NS) * SAMPLE_NS;
        while ts <= now {
            points.push(VruntimePoint {
                ts,
                vruntime: vr_at(ts),
            });
            ts += SAMPLE_NS;
        }
        series.push(VruntimeSeries {
            tid: v.tid,
            label: model::thread_label(v.vm.name, Some(v.index), &""),
            points,
        });
    }

    let vm_snaps = vms
        .iter()
        .map(|vm| {
            let mine: Vec<&VcpuSnapshot> = vcpu_snaps.iter().filter(|v| v.vm == vm.name).collect();
            VmSnapshot {
                name: vm.name.into(),
                pid: vm.pid,
                vcpus: vm.vcpus,
                run_ns: mine.iter().map(|v| v.run_ns).sum(),
                wait_ns: mine.iter().map(|v| v.wait_ns).sum(),
                cpu_share: mine.iter().map(|v| v.cpu_share).sum(),
                entitled_share: mine.iter().map(|v| v.entitled_share).sum(),
                fairness: 0.97,
                ended: false,
                exits: Vec::new(),
            }
        })
        .collect();

    let events = (elapsed_s * 42_000.0) as u64;
    Snapshot {
        start: START_NS,
        ts: now,
        events_per_second: 42_000.0,
        vcpus: vcpu_snaps,
        pcpus: pcpu_snaps,
        vms: vm_snaps,
        vruntime: series,
        wait_culprits: vec![],
        resume: resume_latency(100),
        fairness: 0.93,
        health: Health {
            events,
            lost_events: 0,
            out_of_order: 2,
            unknown_tids: 0,
            tid_reuse: 0,
            uncertain_ns: 0,
            notes: vec![
                "no guest entry/exit events seen on this host; resume latency from guest gaps"
                    .into(),
            ],
            ..Health::default()
        },
        window: Window::LastTenSeconds,
    }
}

fn resume_latency(seed: u64) -> ResumeLatency {
    let h = mix(seed) % 4_000;
    let same = Percentiles {
        count: 1_520,
        p50: 39_100 + h,
        p90: 52_000 + h,
        p99: 80_300 + h,
        max: 140_000,
        mean: 42_000.0,
    };
    let migrated = Percentiles {
        count: 212,
        p50: 44_000 + h,
        p90: 60_200 + h,
        p99: 95_100 + h,
        max: 180_200,
        mean: 49_000.0,
    };
    ResumeLatency {
        migration_cost_p50: migrated.p50 as i64 - same.p50 as i64,
        migration_cost_p99: migrated.p99 as i64 - same.p99 as i64,
        same_pcpu: same,
        migrated,
        to_switch_out: Percentiles {
            count: 1_700,
            p50: 76_000,
            p90: 90_000,
            p99: 130_000,
            max: 200_000,
            mean: 78_000.0,
        },
        source: "guest_gap".into(),
        ..ResumeLatency::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_snapshots_are_deterministic_and_scroll() {
        assert_eq!(demo_snapshot(), demo_snapshot());
        let a = synthetic(&demo_vms(), 2, START_NS + 12_000_000_000);
        let b = synthetic(&demo_vms(), 2, START_NS + 13_000_000_000);
        assert_ne!(a.pcpus[0].lane, b.pcpus[0].lane);
        assert!(
            b.vruntime[0].points.last().unwrap().vruntime
                > a.vruntime[0].points.last().unwrap().vruntime
        );
        let lane = &a.pcpus[0].lane;
        assert!(
            lane.windows(2).all(|w| w[0].end <= w[1].start),
            "lane segments ordered"
        );
        assert_eq!(many_vms(16).iter().map(|v| v.vcpus).sum::<u32>(), 16);
    }
}
