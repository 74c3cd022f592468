//! Each task's group, read the first time the live source sees the task run: either side of a
//! switch the probes report (a tracked thread's, and the untracked task it switched to or
//! from), and read again when its tid shows another task (see [`TaskGroups::note`]). A replay
//! splits other tasks' load by these groups (`model::demand`), as the kernel shares a pCPU
//! among groups first. A task that exited before its group could be read gets a record that
//! says so, counted in [`TaskGroups::unread`]: never left out silently.

use std::collections::HashMap;

use hostfacts::task_group::TaskGroupFacts;
use model::{nice_to_weight, Comm, Event, SchedGroup, TaskGroup};

#[derive(Default)]
pub(super) struct TaskGroups {
    /// The task each tid was last shown as and its standing record, until the tid is reused.
    seen: HashMap<u32, Known>,
    unread: u64,
}

/// A tid as the last switch showed it, and the group its record gave (`None`: unread).
struct Known {
    pid: u32,
    comm: Comm,
    group: Option<SchedGroup>,
}

impl TaskGroups {
    /// Puts a task-group record just before each switch in `out[from..]` that shows a task
    /// whose group is not read yet, stamped with that switch: the batch stays in time order,
    /// so no record reaches the model later than its reorder window (appended at the batch's
    /// end, 30-90 records of a 3 s demo did, each counted and noted as a late event). `read`
    /// reads a task's group (`hostfacts::task_group::task_group` live, a script in tests).
    ///
    /// A tid's record stands until the tid is reused, which the events say exactly and for
    /// free: the task's switch-out as dead (its last), a new thread announced with the tid
    /// (`TaskInfo`), or a switch that shows the tid in another process. The next switch that
    /// shows the tid reads its group again, for a record of its own. A switch that shows it
    /// under another name only may be another task too (its dead switch-out not seen, with
    /// pids as few as 32768), but mostly is the same one after an exec or a rename (a
    /// fifth of a busy host's tasks in a 4 s demo trace): its group is read again and
    /// recorded only when it differs, so a rename costs one read and no record.
    pub(super) fn note(
        &mut self,
        out: &mut Vec<Event>,
        from: usize,
        mut read: impl FnMut(u32) -> Option<TaskGroupFacts>,
    ) {
        // Records to put before the event at each index, found in one pass; most batches
        // show no new task and are left as they are.
        let mut records: Vec<(usize, TaskGroup)> = Vec::new();
        for (i, ev) in out.iter().enumerate().skip(from) {
            match ev {
                Event::TaskInfo(t) => {
                    self.seen.remove(&t.tid);
                }
                Event::SchedSwitch(s) => {
                    for (tid, pid, comm) in [
                        (s.prev_tid, s.prev_pid, s.prev_comm),
                        (s.next_tid, s.next_pid, s.next_comm),
                    ] {
                        // tid 0: a CPU's idle task, in no group.
                        if tid == 0 {
                            continue;
                        }
                        // A thread that ended in a process that lives on is in its process's
                        // group.
                        let mut group_of = || {
                            read(tid)
                                .or_else(|| (pid != tid && pid != 0).then(|| read(pid)).flatten())
                                .map(sched_group)
                        };
                        let group = match self.seen.get_mut(&tid) {
                            Some(k) if k.pid == pid && k.comm == comm => continue,
                            Some(k) if k.pid == pid => {
                                k.comm = comm;
                                match group_of() {
                                    Some(g) if k.group.as_ref() != Some(&g) => {
                                        k.group = Some(g.clone());
                                        Some(g)
                                    }
                                    // The same group, or gone: the record stands.
                                    _ => continue,
                                }
                            }
                            _ => {
                                let group = group_of();
                                if group.is_none() {
                                    self.unread += 1;
                                }
                                let known = Known {
                                    pid,
                                    comm,
                                    group: group.clone(),
                                };
                                self.seen.insert(tid, known);
                                group
                            }
                        };
                        let ts = s.ts;
                        records.push((
                            i,
                            TaskGroup {
                                ts,
                                tid,
                                pid,
                                group,
                            },
                        ));
                    }
                    if s.prev_task_state().is_dead() {
                        self.seen.remove(&s.prev_tid);
                    }
                }
                _ => {}
            }
        }
        if records.is_empty() {
            return;
        }
        let batch = out.split_off(from);
        let mut records = records.into_iter().peekable();
        for (i, ev) in batch.into_iter().enumerate() {
            while let Some((_, record)) = records.next_if(|(at, _)| *at == from + i) {
                out.push(Event::TaskGroup(record));
            }
            out.push(ev);
        }
    }

    /// Tasks that had exited before their group could be read.
    pub(super) fn unread(&self) -> u64 {
        self.unread
    }
}

/// The group as the kernel weighs it: an autogroup by its nice's weight, a cgroup by its
/// shares; the root group with the weight of nice 0 (its tasks weigh their own).
fn sched_group(facts: TaskGroupFacts) -> SchedGroup {
    match facts {
        TaskGroupFacts::Root => SchedGroup {
            name: String::new(),
            weight: nice_to_weight(0),
        },
        TaskGroupFacts::Autogroup { name, nice } => SchedGroup {
            name,
            weight: nice_to_weight(nice),
        },
        TaskGroupFacts::Cgroup { path, shares } => SchedGroup {
            name: path,
            weight: shares,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::synth::events::switch;

    #[test]
    fn each_task_is_read_once_and_one_gone_is_counted() {
        let mut out = vec![
            switch(10, 0, 100, 200),
            switch(20, 0, 200, 300),
            switch(30, 1, 0, 100),
        ];
        let mut groups = TaskGroups::default();
        let mut reads = Vec::new();
        groups.note(&mut out, 0, |tid| {
            reads.push(tid);
            match tid {
                300 => None,
                100 => Some(TaskGroupFacts::Autogroup {
                    name: "/autogroup-7".into(),
                    nice: 5,
                }),
                _ => Some(TaskGroupFacts::Root),
            }
        });
        assert_eq!(reads, [100, 200, 300]);
        assert_eq!(groups.unread(), 1);
        // Each record just before the switch that first shows its task, so the batch stays
        // in time order (appended at its end, they reached the model late).
        let shown: Vec<_> = out
            .iter()
            .map(|e| match e {
                Event::TaskGroup(g) => (g.ts, Some(g.tid), g.group.clone()),
                Event::SchedSwitch(s) => (s.ts, None, None),
                other => panic!("{other:?}"),
            })
            .collect();
        let autogroup = Some(SchedGroup {
            name: "/autogroup-7".into(),
            weight: nice_to_weight(5),
        });
        let root = Some(SchedGroup {
            name: String::new(),
            weight: 1024,
        });
        assert_eq!(
            shown,
            [
                (10, Some(100), autogroup),
                (10, Some(200), root),
                (10, None, None),
                (20, Some(300), None),
                (20, None, None),
                (30, None, None),
            ]
        );
        assert!(out.windows(2).all(|w| w[0].ts() <= w[1].ts()));
        // A thread gone from a process that lives on: its process's group.
        let mut ended = switch(40, 1, 100, 401);
        if let Event::SchedSwitch(s) = &mut ended {
            s.next_pid = 400;
        }
        out.push(ended);
        groups.note(&mut out, 6, |tid| {
            (tid == 400).then_some(TaskGroupFacts::Root)
        });
        assert!(
            matches!(&out[6], Event::TaskGroup(g) if g.tid == 401 && g.group.is_some()),
            "{out:?}"
        );
        assert!(matches!(&out[7], Event::SchedSwitch(s) if s.ts == 40));
        assert_eq!(groups.unread(), 1);
        // Seen before: no record again.
        let n = out.len();
        groups.note(&mut out, n - 1, |_| panic!("read again"));
        assert_eq!(out.len(), n);
    }

    /// A reused tid is read again, from the switch that first shows the new task: after the
    /// old task's dead switch-out, a new thread announced with it, or a switch that shows it
    /// in another process. The same task shown again is not read; under another name it is,
    /// and recorded only when its group differs (not when the same, nor when it is gone).
    #[test]
    fn a_reused_tid_is_read_again_and_the_same_task_is_not() {
        use model::synth::events::{task_info, Switch};
        let dead = |ts, tid| {
            let mut s = Switch::new(ts, 0, tid, 0);
            s.0.prev_state = model::task_state::bits::TASK_DEAD;
            s.build()
        };
        let in_process = |ts, tid, pid| {
            let mut s = Switch::new(ts, 0, 0, tid);
            s.0.next_pid = pid;
            s.build()
        };
        let renamed = |ts, tid, pid, comm| {
            let mut s = Switch::new(ts, 0, tid, 0).prev_comm(comm);
            s.0.prev_pid = pid;
            s.build()
        };
        let mut out = vec![
            switch(10, 0, 0, 500),
            switch(20, 0, 500, 0),
            // Gone: its last switch-out, as dead.
            dead(30, 500),
            // tid 500 again: another session's task, in another group.
            switch(40, 0, 0, 500),
            switch(50, 0, 500, 0),
            // Shown in another process: another task.
            in_process(60, 500, 900),
            // A new thread announced with the tid.
            task_info(70, 500, 900, "vm1", Some(0), 0),
            in_process(80, 500, 900),
            // Another name (a task of the same process, its dead switch-out not seen): read
            // again, recorded as its group differs.
            renamed(90, 500, 900, "other"),
            // An exec or a rename: read again, the same group, no record.
            renamed(93, 500, 900, "execd"),
            // Another name and gone (tid and process) before the read: the record stands.
            renamed(96, 500, 900, "gone"),
            switch(100, 0, 0, 600),
        ];
        let mut groups = TaskGroups::default();
        let mut reads = Vec::new();
        let mut answers = [1, 2, 3, 4, 5, 5, 0, 0, 6].into_iter();
        groups.note(&mut out, 0, |tid| {
            reads.push(tid);
            let session = answers.next().unwrap();
            (session > 0).then(|| TaskGroupFacts::Autogroup {
                name: format!("/autogroup-{session}"),
                nice: 0,
            })
        });
        assert_eq!(reads, [500, 500, 500, 500, 500, 500, 500, 900, 600]);
        let records: Vec<(u64, String)> = out
            .iter()
            .filter_map(|e| match e {
                Event::TaskGroup(g) => Some((g.ts, g.group.clone().unwrap().name)),
                _ => None,
            })
            .collect();
        assert_eq!(
            records,
            [
                (10, "/autogroup-1".into()),
                (40, "/autogroup-2".into()),
                (60, "/autogroup-3".into()),
                (80, "/autogroup-4".into()),
                (90, "/autogroup-5".into()),
                (100, "/autogroup-6".into()),
            ]
        );
        assert!(out.windows(2).all(|w| w[0].ts() <= w[1].ts()));
        assert_eq!(groups.unread(), 0);
    }
}
