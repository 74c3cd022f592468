//! The tracking flow driven end to end through a scripted [`TrackingHost`]: threads announced
//! and tracked, rescans that find threads come and go, a tid reused by a new VM, affinity
//! changes, a thread the probes refuse, and relabelling, with no root and no real threads.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use model::synth::Switch;
use model::task_state::bits::TASK_DEAD;
use model::{Affinity, Comm, CounterSample, Event, KvmEntry, TaskExit, TaskInfo};
use model::{Unobserved, UnobservedKind};
use probes::targets::{TargetSpec, TrackedThread};

use super::exiting::GRACE;
use super::tracking::Tracking;
use super::tracking_host::{TargetScan, TrackingHost};

/// One thread as the fake host's `/proc` shows it.
struct FakeThread {
    /// What a scan of its process finds.
    found: TrackedThread,
    nice: i32,
    cpus: Vec<u32>,
    run_ns: u64,
    /// Its `stat` state letter.
    state: char,
}

/// A host whose threads, clock and probes the test sets by hand.
#[derive(Default)]
struct FakeHost {
    now: Cell<u64>,
    /// Live threads by tid.
    threads: BTreeMap<u32, FakeThread>,
    /// The probes' `tracked` map.
    tracked: BTreeSet<u32>,
    /// Threads whose `track` fails.
    refused: BTreeSet<u32>,
    /// Live threads a scan does not find: no longer targets.
    not_targets: BTreeSet<u32>,
    /// QEMU processes, and the cpu-index each KVM vCPU id has in them.
    qemu: BTreeSet<u32>,
    cpu_index: BTreeMap<(u32, u32), u32>,
    /// What `note_kvm_entry_ids` was told.
    noted: Vec<(u32, Vec<(u32, u32)>)>,
}

impl FakeHost {
    fn spawn(&mut self, pid: u32, tid: u32, vm: &str, vcpu: Option<u32>) {
        let comm = match vcpu {
            Some(v) => format!("{vm}-vcpu{v}"),
            None => format!("{vm}-io"),
        };
        let found = TrackedThread {
            pid,
            tid,
            comm,
            vm: vm.to_string(),
            vcpu,
        };
        let thread = FakeThread {
            found,
            nice: 5,
            cpus: vec![0, 1],
            run_ns: u64::from(tid) * 1000,
            state: 'R',
        };
        self.threads.insert(tid, thread);
    }

    fn thread(&self, tid: u32) -> TrackedThread {
        self.threads[&tid].found.clone()
    }
}

impl TrackingHost for FakeHost {
    fn now_ns(&self) -> u64 {
        self.now.get()
    }

    fn track(
        &mut self,
        t: &TrackedThread,
        _warnings: &mut Vec<String>,
    ) -> anyhow::Result<Option<CounterSample>> {
        if self.refused.contains(&t.tid) {
            anyhow::bail!("the tracked map is full");
        }
        self.tracked.insert(t.tid);
        Ok(None)
    }

    fn untrack(&mut self, tid: u32) {
        self.tracked.remove(&tid);
    }

    fn nice(&self, _pid: u32, tid: u32) -> Option<i32> {
        self.threads.get(&tid).map(|t| t.nice)
    }

    fn schedstat(&self, _pid: u32, tid: u32) -> Option<model::Schedstat> {
        self.threads.get(&tid).map(|t| model::Schedstat {
            run_ns: t.run_ns,
            wait_ns: 7,
        })
    }

    /// On its last allowed pCPU.
    fn thread_start(&self, _pid: u32, tid: u32) -> Option<model::ThreadStart> {
        let t = self.threads.get(&tid)?;
        Some(model::ThreadStart {
            state: model::TaskState::from_letter(t.state)?,
            cpu: *t.cpus.last()?,
        })
    }

    fn allowed_cpus(&self, tid: u32) -> Option<Vec<u32>> {
        self.threads.get(&tid).map(|t| t.cpus.clone())
    }

    fn thread_exists(&self, pid: u32, tid: u32) -> bool {
        self.threads.get(&tid).is_some_and(|t| t.found.pid == pid)
    }

    /// `--pid`: the named processes' threads; anything else: every thread.
    fn scan(&mut self, spec: &TargetSpec, _known: &BTreeSet<u32>, _ids: bool) -> TargetScan {
        let wanted = |pid: u32| match spec {
            TargetSpec::Pids(pids) => pids.contains(&pid),
            _ => true,
        };
        TargetScan {
            found: self
                .threads
                .values()
                .filter(|t| wanted(t.found.pid) && !self.not_targets.contains(&t.found.tid))
                .map(|t| t.found.clone())
                .collect(),
            ..TargetScan::default()
        }
    }

    fn is_qemu(&self, pid: u32) -> bool {
        self.qemu.contains(&pid)
    }

    fn qemu_cpu_index(&self, pid: u32, vcpu_id: u32) -> u32 {
        self.cpu_index[&(pid, vcpu_id)]
    }

    fn note_kvm_entry_ids(&mut self, pid: u32, seen: &[(u32, u32)]) -> bool {
        self.noted.push((pid, seen.to_vec()));
        true
    }
}

/// Process 100 (`vm0`), vCPU threads 101 and 102.
fn vm0_with_two_vcpus() -> FakeHost {
    let mut host = FakeHost::default();
    host.spawn(100, 101, "vm0", Some(0));
    host.spawn(100, 102, "vm0", Some(1));
    host
}

/// [`vm0_with_two_vcpus`], its threads tracked by a first rescan of `spec` at 10.
fn vm0_tracked(spec: &TargetSpec) -> (FakeHost, Tracking) {
    let mut host = vm0_with_two_vcpus();
    let mut tracking = new_tracking();
    rescan(&mut tracking, &mut host, spec, 10);
    (host, tracking)
}

fn new_tracking() -> Tracking {
    Tracking::new(false, true, &[], &mut Vec::new())
}

/// Runs one rescan of `spec` at `ts`, returning the events it made and the warnings it added.
fn rescan(
    tracking: &mut Tracking,
    host: &mut FakeHost,
    spec: &TargetSpec,
    ts: u64,
) -> (Vec<Event>, Vec<String>) {
    host.now.set(ts);
    let mut warnings = Vec::new();
    tracking.rescan(host, spec, &mut warnings);
    let mut out = Vec::new();
    tracking.take_events(&mut out);
    (out, warnings)
}

fn announced(host: &FakeHost, tid: u32, ts: u64) -> Event {
    let t = &host.threads[&tid];
    Event::TaskInfo(TaskInfo {
        ts,
        tid,
        pid: t.found.pid,
        comm: Comm::new(&t.found.comm),
        vm: t.found.vm.clone(),
        vcpu: t.found.vcpu,
        nice: t.nice,
        schedstat: Some(model::Schedstat {
            run_ns: t.run_ns,
            wait_ns: 7,
        }),
        start: host.thread_start(t.found.pid, tid),
    })
}

fn affinity(ts: u64, tid: u32, cpus: &[u32]) -> Event {
    Event::Affinity(Affinity {
        ts,
        tid,
        cpus: cpus.to_vec(),
    })
}

fn exit(tid: u32, pid: u32) -> Event {
    Event::TaskExit(TaskExit {
        ts: 1,
        cpu: 0,
        tid,
        pid,
    })
}

fn dead_switch_out(tid: u32) -> Event {
    let mut s = Switch::new(2, 0, tid, 0).0;
    s.prev_state = TASK_DEAD;
    Event::SchedSwitch(s)
}

#[test]
fn threads_are_announced_tracked_found_by_rescans_and_untracked_when_they_end() {
    let mut host = vm0_with_two_vcpus();
    let spec = TargetSpec::Pids(vec![100]);
    let mut tracking = new_tracking();
    host.now.set(10);
    for tid in [101, 102] {
        let t = host.thread(tid);
        tracking.start(&mut host, t, None, &mut Vec::new()).unwrap();
    }
    let mut out = Vec::new();
    tracking.take_events(&mut out);
    assert_eq!(
        out,
        [
            announced(&host, 101, 10),
            affinity(10, 101, &[0, 1]),
            announced(&host, 102, 10),
            affinity(10, 102, &[0, 1]),
        ]
    );
    assert_eq!(host.tracked, BTreeSet::from([101, 102]));

    // Nothing changed: a rescan says nothing.
    assert_eq!(
        rescan(&mut tracking, &mut host, &spec, 20),
        (vec![], vec![])
    );
    // A vCPU hot-added: announced at the rescan that finds it.
    host.spawn(100, 103, "vm0", Some(2));
    let (out, _) = rescan(&mut tracking, &mut host, &spec, 30);
    assert_eq!(out, [announced(&host, 103, 30), affinity(30, 103, &[0, 1])]);

    // 102 exits: it leaves /proc before its last switch-out, and stays tracked until then.
    let now = Instant::now();
    tracking.retire_exited(&mut host, &[exit(102, 100)], now);
    host.threads.remove(&102);
    assert_eq!(
        rescan(&mut tracking, &mut host, &spec, 40),
        (vec![], vec![])
    );
    assert!(host.tracked.contains(&102) && tracking.is_tracked(102));
    tracking.retire_exited(&mut host, &[dead_switch_out(102)], now);
    assert_eq!(host.tracked, BTreeSet::from([101, 103]));
    assert!(!tracking.is_tracked(102));

    // The VM goes without a word (no exit events seen): the rescan untracks its threads and
    // reports it ended, once.
    host.threads.clear();
    let (out, _) = rescan(&mut tracking, &mut host, &spec, 50);
    assert_eq!(out, [model::synth::vm_ended(50, 100, "vm0")]);
    assert!(host.tracked.is_empty());
    assert_eq!(
        rescan(&mut tracking, &mut host, &spec, 60),
        (vec![], vec![])
    );
    assert!(tracking.take_processes().is_empty());
}

#[test]
fn a_tid_reused_by_a_new_vm_is_announced_with_that_vm_once_the_old_thread_is_retired() {
    let spec = TargetSpec::AllKvm;
    let (mut host, mut tracking) = vm0_tracked(&spec);
    assert_eq!(host.tracked, BTreeSet::from([101, 102]));

    // vm0 ends; 101's exit is seen, its last switch-out is not (yet). vm1 starts at once and
    // gets tid 101 again.
    let t0 = Instant::now();
    tracking.retire_exited(&mut host, &[exit(101, 100), exit(102, 100)], t0);
    tracking.retire_exited(&mut host, &[dead_switch_out(102)], t0);
    host.threads.clear();
    host.spawn(200, 101, "vm1", Some(0));
    // Until the old thread is retired, the tid stays vm0's: the dead switch-out still to come
    // is the old thread's.
    assert_eq!(
        rescan(&mut tracking, &mut host, &spec, 20),
        (vec![], vec![])
    );
    assert!(tracking.is_tracked(101));
    // Its switch-out never comes: retired a grace after its exit, then the next rescan
    // announces the new thread with its new VM, and reports the old VM ended.
    tracking.retire_exited(&mut host, &[], t0 + GRACE);
    assert!(host.tracked.is_empty());
    let (out, _) = rescan(&mut tracking, &mut host, &spec, 30);
    assert_eq!(
        out,
        [
            announced(&host, 101, 30),
            affinity(30, 101, &[0, 1]),
            model::synth::vm_ended(30, 100, "vm0"),
        ]
    );
    let Event::TaskInfo(info) = &out[0] else {
        unreachable!()
    };
    assert_eq!((info.pid, info.vm.as_str()), (200, "vm1"));
    assert_eq!(host.tracked, BTreeSet::from([101]));
}

#[test]
fn a_tid_reused_after_an_exit_that_was_lost_moves_to_the_new_vm_at_the_next_rescan() {
    let spec = TargetSpec::AllKvm;
    let (mut host, mut tracking) = vm0_tracked(&spec);
    // 102 ends unseen (its exit lost with a full ring); vm1's new thread gets its tid.
    host.threads.remove(&102);
    host.spawn(200, 102, "vm1", Some(0));
    host.now.set(20);
    // Said, so the live source hands over the old thread's last exit counts before the new
    // thread's announcement.
    assert!(tracking.rescan(&mut host, &spec, &mut Vec::new()));
    let mut out = Vec::new();
    tracking.take_events(&mut out);
    // Announced with its own VM (the model retires the old thread then), still tracked.
    assert_eq!(out, [announced(&host, 102, 20), affinity(20, 102, &[0, 1])]);
    let [Event::TaskInfo(info), _] = &out[..] else {
        unreachable!()
    };
    assert_eq!((info.pid, info.vm.as_str()), (200, "vm1"));
    assert_eq!(host.tracked, BTreeSet::from([101, 102]));
    // vm0 goes on with 101 alone; when it goes, it is reported ended, vm1 is not (no tid
    // reused this time).
    host.threads.remove(&101);
    host.now.set(30);
    assert!(!tracking.rescan(&mut host, &spec, &mut Vec::new()));
    let mut out = Vec::new();
    tracking.take_events(&mut out);
    assert_eq!(out, [model::synth::vm_ended(30, 100, "vm0")]);
}

#[test]
fn an_affinity_change_is_reported_once_at_the_next_rescan() {
    let spec = TargetSpec::Pids(vec![100]);
    let (mut host, mut tracking) = vm0_tracked(&spec);
    // `taskset -p 2 101`.
    host.threads.get_mut(&101).unwrap().cpus = vec![1];
    let (out, _) = rescan(&mut tracking, &mut host, &spec, 20);
    assert_eq!(out, [affinity(20, 101, &[1])]);
    assert_eq!(
        rescan(&mut tracking, &mut host, &spec, 30),
        (vec![], vec![])
    );
    // Changed, then the thread leaves: it is untracked, its mask no longer read.
    host.threads.get_mut(&102).unwrap().cpus = vec![0];
    host.threads.remove(&102);
    assert_eq!(
        rescan(&mut tracking, &mut host, &spec, 40),
        (vec![], vec![])
    );
    assert_eq!(host.tracked, BTreeSet::from([101]));
}

#[test]
fn a_thread_the_probes_refuse_is_said_once_and_tried_again_while_others_go_on() {
    let mut host = FakeHost::default();
    host.spawn(100, 101, "vm0", Some(0));
    host.refused.insert(101);
    let spec = TargetSpec::Pids(vec![100]);
    let mut tracking = new_tracking();

    // At open, a thread the user named that cannot be tracked is the session's error.
    let t = host.thread(101);
    let err = tracking
        .start(&mut host, t, None, &mut Vec::new())
        .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "cannot track thread 101 (vm0-vcpu0): the tracked map is full"
    );
    let mut out = Vec::new();
    tracking.take_events(&mut out);
    assert!(out.is_empty() && !tracking.is_tracked(101));

    // Found by a rescan: one warning line and one thread counted as unobserved (the model's
    // `health.track_failures`), nothing announced for it; the other new thread is tracked as
    // usual.
    host.spawn(100, 102, "vm0", Some(1));
    let (out, warnings) = rescan(&mut tracking, &mut host, &spec, 10);
    let untracked = Event::Unobserved(Unobserved {
        ts: 10,
        what: UnobservedKind::Threads,
        count: 1,
    });
    assert_eq!(
        out,
        [
            untracked,
            announced(&host, 102, 10),
            affinity(10, 102, &[0, 1])
        ]
    );
    assert_eq!(
        warnings,
        [
            "cannot track thread 101 (vm0-vcpu0): the tracked map is full: its events are left \
          out (tried again on each rescan)"
        ]
    );
    // Still refused: not said or counted again.
    assert_eq!(
        rescan(&mut tracking, &mut host, &spec, 20),
        (vec![], vec![])
    );
    // Accepted at last: announced then.
    host.refused.clear();
    let (out, warnings) = rescan(&mut tracking, &mut host, &spec, 30);
    assert_eq!(out, [announced(&host, 101, 30), affinity(30, 101, &[0, 1])]);
    assert!(warnings.is_empty());
    assert_eq!(host.tracked, BTreeSet::from([101, 102]));

    // Tracked, it is no longer a failure: dropped (no longer a target) and refused when it
    // is one again, it is said and counted again.
    host.not_targets.insert(101);
    rescan(&mut tracking, &mut host, &spec, 40);
    assert_eq!(host.tracked, BTreeSet::from([102]));
    host.not_targets.clear();
    host.refused.insert(101);
    let (out, warnings) = rescan(&mut tracking, &mut host, &spec, 50);
    let untracked_at = |ts| {
        Event::Unobserved(Unobserved {
            ts,
            what: UnobservedKind::Threads,
            count: 1,
        })
    };
    assert_eq!(out, [untracked_at(50)]);
    assert_eq!(
        warnings,
        [
            "cannot track thread 101 (vm0-vcpu0): the tracked map is full: its events are left \
          out (tried again on each rescan)"
        ]
    );

    // A failing thread that ends before it is tracked leaves the failures too: the next
    // thread with its tid is said again.
    host.threads.remove(&101);
    assert_eq!(
        rescan(&mut tracking, &mut host, &spec, 60),
        (vec![], vec![])
    );
    host.spawn(100, 101, "vm0", Some(3));
    let (out, warnings) = rescan(&mut tracking, &mut host, &spec, 70);
    assert_eq!(out, [untracked_at(70)]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
}

#[test]
fn a_thread_watched_without_its_vcpu_is_announced_again_once_a_rescan_maps_it() {
    let mut host = FakeHost::default();
    // A QEMU VM whose QMP monitor does not answer yet: its threads are found unlabelled.
    host.spawn(300, 301, "web", None);
    let spec = TargetSpec::Qemu {
        selector: None,
        qmp: None,
    };
    let mut tracking = new_tracking();
    rescan(&mut tracking, &mut host, &spec, 10);
    // QMP answers: the same thread is vCPU 3 now.
    host.threads.get_mut(&301).unwrap().found.vcpu = Some(3);
    let (out, _) = rescan(&mut tracking, &mut host, &spec, 20);
    // Announced again with its index, without schedstat (the first announcement's counts).
    let [Event::TaskInfo(t)] = &out[..] else {
        panic!("one TaskInfo, got {out:?}")
    };
    assert_eq!((t.ts, t.tid, t.vcpu, t.schedstat), (20, 301, Some(3), None));
    assert_eq!(
        rescan(&mut tracking, &mut host, &spec, 30),
        (vec![], vec![])
    );
}

#[test]
fn qemu_threads_are_labelled_from_their_first_kvm_entry_and_kept_while_they_exist() {
    let mut host = FakeHost::default();
    host.qemu.insert(400);
    host.spawn(400, 401, "db", None);
    host.spawn(400, 402, "db", None);
    // KVM numbers the vCPUs by APIC ID; QEMU's cpu-index of APIC ID 2 is 1.
    host.cpu_index.insert((400, 2), 1);
    let spec = TargetSpec::Qemu {
        selector: None,
        qmp: None,
    };
    let mut tracking = Tracking::new(true, true, &[], &mut Vec::new());
    rescan(&mut tracking, &mut host, &spec, 10);

    host.now.set(20);
    let entry = Event::KvmEntry(KvmEntry {
        ts: 15,
        cpu: 0,
        tid: 401,
        vcpu_id: 2,
    });
    let mut out = Vec::new();
    tracking.relabel_from_kvm_entry(&mut host, &[entry], &mut out);
    let [Event::TaskInfo(t)] = &out[..] else {
        panic!("one TaskInfo, got {out:?}")
    };
    assert_eq!((t.ts, t.tid, t.vcpu), (20, 401, Some(1)));
    assert_eq!(host.noted, [(400, vec![(401, 2)])]);

    // The VM is mapped now: a scan finds only its vCPU thread, but 402 (an I/O thread) stays
    // tracked while it exists, so its last state is not left open in the model.
    host.threads.get_mut(&401).unwrap().found.vcpu = Some(1);
    host.not_targets.insert(402);
    assert_eq!(
        rescan(&mut tracking, &mut host, &spec, 30),
        (vec![], vec![])
    );
    assert!(host.tracked.contains(&402));
    host.threads.remove(&402);
    assert_eq!(
        rescan(&mut tracking, &mut host, &spec, 40),
        (vec![], vec![])
    );
    assert_eq!(host.tracked, BTreeSet::from([401]));
}

/// A vCPU asleep for the whole session (halted: no switch or wakeup of its own) is announced
/// with its `stat` state, and the model shows it sleeping from tracking start instead of `?`,
/// with no lag until a switch tells its vruntime (#16); a thread runnable then and never
/// switched stays `?`, and a note says why, once.
#[test]
fn a_vcpu_asleep_all_session_is_shown_asleep_from_tracking_start() {
    let mut host = vm0_with_two_vcpus();
    host.threads.get_mut(&101).unwrap().state = 'S';
    host.spawn(100, 103, "vm0", Some(2));
    let mut tracking = new_tracking();
    let (events, _) = rescan(&mut tracking, &mut host, &TargetSpec::Pids(vec![100]), 10);
    let start = |tid| {
        events.iter().find_map(|e| match e {
            Event::TaskInfo(t) if t.tid == tid => Some(t.start),
            _ => None,
        })
    };
    let asleep = model::TaskState(model::task_state::bits::TASK_INTERRUPTIBLE);
    assert_eq!(
        start(101),
        Some(Some(model::ThreadStart {
            state: asleep,
            cpu: 1
        }))
    );
    assert_eq!(
        start(102).flatten().map(|s| s.state.is_preempted()),
        Some(true)
    );

    let end = 10 + 2_000_000_000;
    let mut m = model::Model::new(model::ModelConfig::report());
    m.ingest_batch(&events);
    // 103 runs on 101's pCPU with a vruntime of 5 s: the queue's minimum there.
    let se = model::synth::se(5_000_000_000, 1024, 0);
    m.ingest(&Switch::new(20, 1, 0, 103).next_se(se).build());
    m.ingest(&Event::ObservationEnd(model::ObservationEnd { ts: end }));
    m.finish();
    let snap = m.snapshot();
    let row = |tid| snap.vcpus.iter().find(|v| v.tid == tid).unwrap();
    assert_eq!(row(101).state, Some(model::VcpuState::Sleeping));
    assert_eq!(row(101).sleep_ns, end - 10);
    assert_eq!(row(101).pcpu, Some(1));
    assert_eq!(row(101).lag, 0);
    assert_eq!(model::VcpuState::short_name(row(102).state), "?");
    let why: Vec<_> = snap
        .health
        .notes
        .iter()
        .filter(|n| n.contains("state '?'"))
        .collect();
    assert_eq!(why.len(), 1, "{:?}", snap.health.notes);
    assert!(
        why[0].starts_with("1 threads show state '?': runnable when tracking began"),
        "{}",
        why[0]
    );
}
