//! The demand fold on small event streams, through the model.

use super::*;
use crate::synth::{switch, switch_sleep, task_exit, task_info, wakeup, Switch};
use crate::{Affinity, SchedEntity};

fn demand(evs: &[Event]) -> Demand {
    fold_events(evs, 0).1
}

/// A burst the observation's end (`at_recording_end`) or the thread's exit cut while it was
/// runnable: open, wanting the CPU for all its `runnable_ns`.
fn open_burst(run_ns: u64, runnable_ns: u64, at_recording_end: bool) -> Burst {
    Burst {
        run_ns,
        sleep_ns: None,
        woke: None,
        open: Some(OpenBurst {
            runnable_ns,
            at_recording_end,
        }),
    }
}

/// A burst, then a sleep of `sleep_ns` the observation's end cut (nothing woke it).
fn asleep_at_end(run_ns: u64, sleep_ns: u64) -> Burst {
    Burst {
        run_ns,
        sleep_ns: Some(sleep_ns),
        woke: None,
        open: None,
    }
}

/// A burst, then a sleep of `sleep_ns` woken at `at_ns` onto `cpu`.
fn slept(run_ns: u64, sleep_ns: u64, at_ns: u64, cpu: u32) -> Burst {
    Burst {
        run_ns,
        sleep_ns: Some(sleep_ns),
        woke: Some(Woke { at_ns, cpu }),
        open: None,
    }
}

fn se(sum_exec_runtime: u64, weight: u32) -> SchedEntity {
    SchedEntity {
        sum_exec_runtime,
        weight,
        ..SchedEntity::default()
    }
}

#[test]
fn preemption_splits_a_burst_and_a_voluntary_switch_ends_it() {
    let evs = vec![
        task_info(0, 10, 1, "vm0", Some(0), 0),
        wakeup(100, 0, 10, 0),
        switch(200, 0, 0, 10),
        // Preempted by an untracked task after 300 ns, back 100 ns later.
        switch(500, 0, 10, 77),
        switch(600, 0, 77, 10),
        // Sleeps by itself after 400 more.
        switch_sleep(1000, 0, 10, 0),
        wakeup(3000, 0, 10, 0),
        switch(3050, 0, 0, 10),
        switch_sleep(3100, 0, 10, 0),
    ];
    let d = demand(&evs);
    let t = d.tracked().next().unwrap();
    assert_eq!(
        t.bursts,
        vec![slept(700, 2000, 3000, 0), asleep_at_end(50, 0)]
    );
    assert_eq!(t.first_wake_ns, 100);
    assert_eq!(t.wake_to_run.count, 2);
    let bg: Vec<_> = d.threads.iter().filter(|t| t.background).collect();
    assert_eq!(bg.len(), 1);
    assert_eq!(bg[0].bursts[0].run_ns, 100);
}

/// A switch-in the recording missed (seen on PVM hosts with nothing lost) must not end
/// the thread's replay: the sleep before it is closed by the switch-out that follows,
/// and the task clock says how long the thread ran in between.
#[test]
fn a_missed_switch_in_closes_the_sleep_and_keeps_the_run() {
    let out = |ts, sum| {
        Switch::new(ts, 0, 10, 0)
            .sleeping()
            .prev_se(se(sum, 1024))
            .build()
    };
    let into = |ts, sum| Switch::new(ts, 0, 0, 10).next_se(se(sum, 1024)).build();
    let evs = vec![
        task_info(0, 10, 1, "vm0", Some(0), 0),
        wakeup(100, 0, 10, 0),
        into(200, 5_000),
        out(500, 5_300),
        // Woken and switched in at about 2_000 and 2_100: neither was recorded. It ran
        // 200 ns of task clock before sleeping again at 2_300.
        out(2_300, 5_500),
        wakeup(4_000, 0, 10, 0),
        into(4_100, 5_500),
        out(4_150, 5_550),
    ];
    let d = demand(&evs);
    let t = d.tracked().next().unwrap();
    assert_eq!(
        t.bursts,
        vec![
            slept(300, 1_600, 2_100, 0),
            slept(200, 1_700, 4_000, 0),
            asleep_at_end(50, 0)
        ]
    );
}

/// A thread asleep when the observation ends (a vCPU halted for good) has that sleep last
/// to the end; one running then has its burst cut, with no sleep, and open: it wanted the
/// CPU from its wakeup to the end (3.9 us), of which it ran 3.8. What tells a vCPU that
/// never slept from one that slept for the rest of the run.
#[test]
fn a_sleep_the_end_cuts_lasts_to_the_end_and_a_running_burst_is_open() {
    let d = demand(&crate::synth::one_halted_one_running());
    let bursts = |tid| &d.threads.iter().find(|t| t.tid == tid).unwrap().bursts;
    assert_eq!(bursts(10), &vec![asleep_at_end(800, 4_000)]);
    assert_eq!(bursts(11), &vec![open_burst(3_800, 3_900, true)]);
    let wanted = |tid| d.threads.iter().find(|t| t.tid == tid).unwrap().wanted_ns();
    assert_eq!((wanted(10), wanted(11)), (800, 3_900));
}

/// An open burst wants the CPU from the thread's becoming runnable, through preemptions
/// and waits, to the end; a thread woken but never run again before the end wants all of
/// its wait.
#[test]
fn an_open_burst_runs_from_the_wakeup_through_preemptions_and_waits() {
    let evs = vec![
        task_info(0, 10, 1, "vm0", Some(0), 0),
        task_info(0, 11, 1, "vm0", Some(1), 0),
        wakeup(100, 0, 10, 0),
        switch(200, 0, 0, 10),
        // Preempted three times (the last at the end); the burst goes on.
        switch(500, 0, 10, 77),
        switch(600, 0, 77, 10),
        switch(900, 0, 10, 77),
        switch(1_000, 0, 77, 10),
        // vCPU 1 ran and slept, then was woken and waits to the end.
        wakeup(1_100, 1, 11, 1),
        switch(1_200, 1, 0, 11),
        switch_sleep(1_500, 1, 11, 0),
        wakeup(2_000, 1, 11, 1),
        switch(3_000, 0, 10, 77),
    ];
    let d = demand(&evs);
    let bursts = |tid| &d.threads.iter().find(|t| t.tid == tid).unwrap().bursts;
    assert_eq!(bursts(10), &vec![open_burst(2_600, 2_900, true)]);
    assert_eq!(
        bursts(11),
        &vec![slept(300, 500, 2_000, 1), open_burst(0, 1_000, true)]
    );
}

/// The task clock, not the wall time, measures a stint; the kernel's weight replaces
/// nice's; affinity changes are kept in order (a repeat is no change); a thread that
/// exits while running ends its burst at its final switch-out.
#[test]
fn weight_affinity_task_clock_and_exit_come_from_the_transitions() {
    let affinity = |ts, cpus: &[u32]| {
        Event::Affinity(Affinity {
            ts,
            tid: 10,
            cpus: cpus.to_vec(),
        })
    };
    let evs = vec![
        task_info(0, 10, 1, "vm0", Some(0), 0),
        affinity(0, &[0, 1]),
        wakeup(100, 0, 10, 1),
        Switch::new(200, 1, 0, 10).next_se(se(1_000, 335)).build(),
        // 300 ns of wall time, 250 of them on the task clock.
        Switch::new(500, 1, 10, 0)
            .sleeping()
            .prev_se(se(1_250, 335))
            .build(),
        affinity(600, &[0, 1]),
        affinity(700, &[1]),
        wakeup(800, 1, 10, 1),
        Switch::new(900, 1, 0, 10).next_se(se(1_250, 335)).build(),
        task_exit(950, 1, 10),
        Switch::new(1_000, 1, 10, 0)
            .sleeping()
            .prev_se(se(1_300, 335))
            .build(),
        switch(2_000, 1, 0, 77),
    ];
    let d = demand(&evs);
    let t = d.tracked().next().unwrap();
    assert_eq!((t.nice, t.weight), (0, 335));
    assert_eq!(
        t.affinity,
        vec![
            AffinitySpan {
                at_ns: 0,
                cpus: vec![0, 1]
            },
            AffinitySpan {
                at_ns: 700,
                cpus: vec![1]
            }
        ]
    );
    // Its exit cut the last burst while it ran: open, until the exit, not the end.
    assert_eq!(
        t.bursts,
        vec![slept(250, 300, 800, 1), open_burst(100, 200, false)]
    );
    assert_eq!((t.first_cpu, t.allowed.clone()), (1, vec![1]));
    assert_eq!(t.wake_to_run.count, 2);
    assert_eq!(d.end, 2_000);
}

const US: u64 = 1_000;

/// Every closed wakeup is in both the thread's wake-to-run and the demand's wakeups.
fn closed_wakeups(d: &Demand) -> u64 {
    let per_thread: u64 = d.tracked().map(|t| t.wake_to_run.count).sum();
    assert_eq!(per_thread, d.wakeups.count() as u64, "{:?}", d.wakeups);
    per_thread
}

/// Thread 10 is woken onto idle pCPU 0 twice (30 and 50 µs to run); thread 11 is woken onto
/// pCPU 1 while 12 runs there and preempts it 20 µs later; then once more, and waits 2 ms
/// until 12 sleeps.
#[test]
fn each_wakeup_is_placed_by_how_it_got_its_pcpu() {
    let evs = vec![
        task_info(0, 10, 1, "vm0", Some(0), 0),
        task_info(0, 11, 1, "vm0", Some(1), 0),
        task_info(0, 12, 1, "vm0", Some(2), 0),
        switch(US, 0, 0, 10),
        switch_sleep(100 * US, 0, 10, 0),
        wakeup(1_000 * US, 0, 10, 0),
        switch(1_030 * US, 0, 0, 10),
        switch_sleep(1_100 * US, 0, 10, 0),
        wakeup(2_000 * US, 0, 10, 0),
        switch(2_050 * US, 0, 0, 10),
        switch_sleep(2_060 * US, 0, 10, 0),
        switch(2_100 * US, 1, 0, 11),
        switch_sleep(2_200 * US, 1, 11, 12),
        wakeup(3_000 * US, 1, 11, 1),
        switch(3_020 * US, 1, 12, 11),
        switch_sleep(3_100 * US, 1, 11, 12),
        wakeup(4_000 * US, 1, 11, 1),
        switch_sleep(6_000 * US, 1, 12, 11),
        switch_sleep(6_100 * US, 1, 11, 0),
    ];
    let d = demand(&evs);
    let w = &d.wakeups;
    assert_eq!(w.idle, vec![30 * US, 50 * US]);
    assert_eq!(w.preempted, vec![20 * US]);
    assert_eq!(w.waited, vec![2_000 * US]);
    assert_eq!(closed_wakeups(&d), 4);
}

/// Thread 10 (pid 1, vm0) sleeps on pCPU 0 and is woken at 1 ms; `then` happens at 1.01 ms,
/// and at 1.03 ms tid 10 is switched in.
fn woken_then(then: Event) -> Vec<Event> {
    vec![
        task_info(0, 10, 1, "vm0", Some(0), 0),
        switch(US, 0, 0, 10),
        switch_sleep(100 * US, 0, 10, 0),
        wakeup(1_000 * US, 0, 10, 0),
        then,
        switch(1_030 * US, 0, 0, 10),
    ]
}

/// A woken thread that ends before its switch-in never got a pCPU: nothing is recorded.
#[test]
fn an_exit_cancels_a_wakeup() {
    let d = demand(&woken_then(task_exit(1_010 * US, 0, 10)));
    assert_eq!(d.tracked().count(), 1);
    assert_eq!(closed_wakeups(&d), 0);
}

/// A tid reused by another process's thread ends the woken thread (the model's `Exited`);
/// the new thread's first switch-in closes no wakeup of the old one. A re-announcement of the
/// same thread (another vCPU number, the same process) keeps its wakeup open.
#[test]
fn a_reused_tid_cancels_a_wakeup_and_a_re_announcement_does_not() {
    let d = demand(&woken_then(task_info(1_010 * US, 10, 2, "vm1", Some(0), 0)));
    assert_eq!(d.tracked().count(), 2);
    assert_eq!(closed_wakeups(&d), 0);

    let d = demand(&woken_then(task_info(1_010 * US, 10, 1, "vm0", Some(3), 0)));
    assert_eq!(d.tracked().count(), 1);
    assert_eq!(closed_wakeups(&d), 1);
    assert_eq!(d.wakeups.idle, vec![30 * US]);
}

/// A switch-in the kernel never reported still closes the wakeup, when the model infers it
/// from the task clock: woken at 1 ms, switched out sleeping at 2 ms having run 300 µs.
#[test]
fn an_inferred_switch_in_closes_a_wakeup() {
    let evs = vec![
        task_info(0, 10, 1, "vm0", Some(0), 0),
        Switch::new(US, 0, 0, 10).next_se(se(0, 1024)).build(),
        Switch::new(100 * US, 0, 10, 0)
            .sleeping()
            .prev_se(se(99 * US, 1024))
            .build(),
        wakeup(1_000 * US, 0, 10, 0),
        Switch::new(2_000 * US, 0, 10, 0)
            .sleeping()
            .prev_se(se(399 * US, 1024))
            .build(),
    ];
    let d = demand(&evs);
    assert_eq!(closed_wakeups(&d), 1);
    assert_eq!(d.wakeups.count(), 1);
    let all: Vec<u64> = [&d.wakeups.preempted, &d.wakeups.idle, &d.wakeups.waited]
        .into_iter()
        .flatten()
        .copied()
        .collect();
    assert_eq!(all, vec![700 * US]);
}

fn task_group(tid: u32, name: Option<&str>) -> Event {
    task_group_at(150, tid, name)
}

fn task_group_at(ts: u64, tid: u32, name: Option<&str>) -> Event {
    Event::TaskGroup(crate::TaskGroup {
        ts,
        tid,
        pid: tid,
        group: name.map(|n| crate::SchedGroup {
            name: n.into(),
            weight: 1024,
        }),
    })
}

/// With task-group records a pCPU's background splits into one stand-in per group of the
/// task that began each stretch (and one for tasks whose group was not read, one for tasks
/// without a record); a stretch whose group's task was preempted at its end does not end
/// the group's burst; a tracked thread carries its own group.
#[test]
fn task_group_records_split_the_background_by_group() {
    let evs = vec![
        task_info(0, 10, 1, "vm0", Some(0), 0),
        wakeup(100, 0, 10, 0),
        switch(200, 0, 0, 10),
        task_group(10, Some("/autogroup-1")),
        task_group(77, Some("/autogroup-1")),
        task_group(78, Some("/autogroup-2")),
        task_group(79, None),
        switch(300, 0, 10, 77),
        switch_sleep(400, 0, 77, 10),
        switch(500, 0, 10, 78),
        switch(650, 0, 78, 10),
        switch(700, 0, 10, 77),
        switch(720, 0, 77, 10),
        switch(800, 0, 10, 79),
        switch(850, 0, 79, 10),
        switch(900, 0, 10, 80),
        switch(1000, 0, 80, 10),
        // 78 was preempted at 650 (still runnable): its group's burst goes on here.
        switch(1100, 0, 10, 78),
        switch(1130, 0, 78, 10),
    ];
    let d = demand(&evs);
    assert_eq!(d.group_records, GroupRecords { read: 3, unread: 1 });
    let t = d.tracked().next().unwrap();
    assert_eq!(t.group.as_ref().unwrap().name, "/autogroup-1");
    let bg: Vec<_> = d
        .threads
        .iter()
        .filter(|t| t.background)
        .map(|t| {
            let runs: Vec<u64> = t.bursts.iter().map(|b| b.run_ns).collect();
            (
                t.group.as_ref().map(|g| g.name.as_str()),
                t.group_unread,
                runs,
            )
        })
        .collect();
    assert_eq!(
        bg,
        [
            (Some("/autogroup-1"), false, vec![100, 20]),
            (Some("/autogroup-2"), false, vec![180]),
            (None, true, vec![50]),
            (None, false, vec![100]),
        ]
    );
    let first = d.threads.iter().find(|t| t.background).unwrap();
    assert_eq!(first.bursts[0].sleep_ns, Some(300));
    assert_eq!(first.first_wake_ns, 300);
    // Its sleep ended, as far as the recording shows, where its next stretch began.
    assert_eq!(first.bursts[0].woke, Some(Woke { at_ns: 700, cpu: 0 }));
    assert_eq!(first.bursts[1].woke, None);
}

/// A reused tid has a record for each of its tasks, and each task takes its own: an untracked
/// task's stretch the record that covers its start (the newest at or before it), a tracked
/// thread the newest since its announcement. Two sessions' tasks with one tid are two groups'
/// load, and a vCPU thread that reuses an exited one's tid is in its own group.
#[test]
fn a_reused_tid_takes_the_record_of_its_own_task() {
    let mut dead = Switch::new(660, 0, 10, 0);
    dead.0.prev_state = crate::task_state::bits::TASK_DEAD;
    let evs = vec![
        task_info(0, 10, 1, "vm0", Some(0), 0),
        wakeup(100, 0, 10, 0),
        task_group_at(200, 10, Some("/autogroup-1")),
        switch(200, 0, 0, 10),
        task_group_at(300, 77, Some("/autogroup-1")),
        switch(300, 0, 10, 77),
        switch_sleep(400, 0, 77, 10),
        // tid 77 again: another session's task.
        task_group_at(500, 77, Some("/autogroup-2")),
        switch(500, 0, 10, 77),
        switch_sleep(600, 0, 77, 10),
        // The vCPU thread exits; a thread of another VM gets its tid.
        task_exit(650, 0, 10),
        dead.build(),
        task_info(800, 10, 2, "vm1", Some(0), 0),
        wakeup(850, 0, 10, 0),
        task_group_at(900, 10, Some("/autogroup-3")),
        switch(900, 0, 0, 10),
        switch_sleep(1000, 0, 10, 0),
    ];
    let d = demand(&evs);
    assert_eq!(d.group_records, GroupRecords { read: 4, unread: 0 });
    let tracked: Vec<(&str, Option<&str>)> = d
        .tracked()
        .map(|t| (t.vm.as_str(), t.group.as_ref().map(|g| g.name.as_str())))
        .collect();
    assert_eq!(
        tracked,
        [("vm0", Some("/autogroup-1")), ("vm1", Some("/autogroup-3"))]
    );
    let bg: Vec<(Option<&str>, Vec<u64>)> = d
        .threads
        .iter()
        .filter(|t| t.background)
        .map(|t| {
            let runs = t.bursts.iter().map(|b| b.run_ns).collect();
            (t.group.as_ref().map(|g| g.name.as_str()), runs)
        })
        .collect();
    assert_eq!(
        bg,
        [
            (Some("/autogroup-1"), vec![100]),
            (Some("/autogroup-2"), vec![100])
        ]
    );
}
